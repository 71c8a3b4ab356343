"""Running one started session: the mode a verb asks for, the handler the session type needs.

A mode says how a caller wants the session to look from outside: where the plugin's
texts go, what stdin EOF means, whether the remote exit code becomes our exit status.
The session type (from the handshake) picks the handler: shell.py for the three shell
types, port.py for Port sessions in stdin/stdout, basic or mux mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from portless import eventloop
from portless.client.datachannel import DataChannel, Handler, SessionInfo
from portless.client.stdio import InputPipe, OutputPipe
from portless.protocol.handshake import PortMode, SessionParams
from portless.protocol.payloads import SessionType

if TYPE_CHECKING:
    from portless.client.api import SessionApi
    from portless.protocol.handshake import DataKeyProvider

__all__ = ["MODES", "RunMode", "SessionInfo", "Stdio", "run_mode", "run_session"]


@dataclass(frozen=True, slots=True)
class RunMode:
    name: str
    messages: Literal["stdout", "quiet"]
    """Where the plugin's informational texts go; "quiet" keeps stdout for data only."""
    remote_exit_status: bool
    """The remote exit code (PayloadType 12) becomes our exit status (not for the plugin)."""
    route_streams: bool
    """Stderr (11) to stderr and exit code (12) parsed even with a stock agent."""
    stdin_eof: Literal["exit", "eot", "ignore"]
    """Shell sessions: exit at once (the plugin), send EOT (^D) and wait, or keep waiting."""
    read_stdin: bool = True
    eof_text: bool = False
    """Print the plugin's "Cannot perform start session: EOF" on stdin EOF."""
    port_eof_flag: bool = False
    """stdin/stdout port mode: send the TerminateSession flag on stdin EOF."""
    handle_signals: bool = True
    """Install handlers for Ctrl-C & co. in stdin/stdout port mode (the plugin does not)."""
    failure_status: int = 1


MODES: dict[str, RunMode] = {
    "plugin": RunMode("plugin", "stdout", remote_exit_status=False, route_streams=False,
                      stdin_eof="exit", eof_text=True, handle_signals=False, failure_status=0),
    "start-session": RunMode("start-session", "stdout", remote_exit_status=True,
                             route_streams=False, stdin_eof="exit", eof_text=True),
    "shell": RunMode("shell", "stdout", remote_exit_status=True, route_streams=False,
                     stdin_eof="eot"),
    "exec": RunMode("exec", "quiet", remote_exit_status=True, route_streams=True,
                    stdin_eof="ignore", read_stdin=False),
    "forward": RunMode("forward", "stdout", remote_exit_status=False, route_streams=False,
                       stdin_eof="exit"),
    "ssh-proxy": RunMode("ssh-proxy", "quiet", remote_exit_status=False, route_streams=False,
                         stdin_eof="exit", port_eof_flag=True),
}


class Stdio:
    """The process's standard streams, shared by the handler and the texts (one order)."""

    def __init__(self, mode: RunMode, *, stdin: int = 0, stdout: int = 1,
                 stderr: int = 2) -> None:
        self.mode = mode
        self.out = OutputPipe(stdout)
        self.err = OutputPipe(stderr, high_water=1 << 18)
        self._stdin_fd = stdin
        self._inp: InputPipe | None = None

    @property
    def stdin_fd(self) -> int:
        return self._stdin_fd

    @property
    def stdout_fd(self) -> int:
        return self.out.fd

    @property
    def inp(self) -> InputPipe:
        if self._inp is None:
            self._inp = InputPipe(self._stdin_fd)
        return self._inp

    def say(self, text: str) -> None:
        if self.mode.messages == "stdout":
            self.out.write(text.encode())

    def warn(self, text: str) -> None:
        if self.mode.messages == "stdout":
            self.out.write(text.encode())
        else:
            text = text.strip("\n")
            if text:
                self.err.write(f"portless: {text}\n".encode())

    async def close(self) -> None:
        if self._inp is not None:
            self._inp.close()
        await self.out.flush(timeout=5.0)
        await self.err.flush(timeout=2.0)
        self.out.close()
        self.err.close()


def make_handler(channel: DataChannel, params: SessionParams | None, stdio: Stdio) -> Handler:
    from portless.client.shell import ShellHandler

    if params is None or params.session_type != SessionType.PORT:
        return ShellHandler(channel, stdio)
    from portless.client import port

    if params.port_mode is PortMode.MUX:
        return port.MuxPortHandler(channel, params, stdio)
    if params.port_mode is PortMode.BASIC:
        return port.BasicPortHandler(channel, params, stdio)
    return port.StdioPortHandler(channel, params, stdio)


async def run_session(info: SessionInfo, api: SessionApi, ssl: ssl_module.SSLContext | bool,
                      mode: RunMode, *, data_key_provider: DataKeyProvider | None = None,
                      stdio: Stdio | None = None,
                      handler_factory: Callable[[DataChannel, SessionParams | None], Handler]
                      | None = None) -> int:
    """Run a started session to its end; returns the exit status for `mode`."""
    stdio = stdio or Stdio(mode)
    if mode.messages == "stdout":
        stdio.say(f"\nStarting session with SessionId: {info.session_id}\n")

    def factory(ch: DataChannel, params: SessionParams | None) -> Handler:
        return make_handler(ch, params, stdio)

    channel = DataChannel(info, api, ssl, handler_factory or factory, say=stdio.say,
                          warn=stdio.warn, data_key_provider=data_key_provider,
                          exit_on_failure=mode.failure_status)
    try:
        status = await channel.run()
    finally:
        await stdio.close()
    if mode.remote_exit_status or status == mode.failure_status:
        return status
    return 0


def run_mode(info: SessionInfo, api: SessionApi, ssl: ssl_module.SSLContext | bool,
             mode: str | RunMode, *, data_key_provider: DataKeyProvider | None = None) -> int:
    """Synchronous entry for the CLI and the plugin."""
    run = MODES[mode] if isinstance(mode, str) else mode
    with asyncio.Runner(loop_factory=eventloop.new_event_loop) as runner:
        try:
            return runner.run(run_session(info, api, ssl, run,
                                          data_key_provider=data_key_provider))
        except KeyboardInterrupt:
            return 0 if run.failure_status == 0 else 130
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
