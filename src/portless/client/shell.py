"""Standard_Stream sessions (also InteractiveCommands and NonInteractiveCommands).

Client spec §8.1, with one deliberate difference: on a terminal we use raw mode (as ssh
does) instead of the plugin's cbreak, so Ctrl-C, Ctrl-\\ and Ctrl-Z are plain bytes that
reach the remote process and Enter arrives as CR.  When stdin is not a terminal the
plugin's rules apply: a lone "\\n" is sent as "\\r", and SIGINT/SIGQUIT/SIGTSTP are turned
into 0x03/0x1c/0x1a.  The terminal is restored on every way out.

With a portless agent (or for `exec`) stderr (PayloadType 11) goes to our stderr and the
exit code (12) becomes our exit status; otherwise, like the plugin, everything received
goes to stdout.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from portless.client.signals import add_signal_handlers, remove_signal_handlers
from portless.protocol.message import PayloadType
from portless.protocol.payloads import PayloadError, TerminalSize, decode_exit_code

if TYPE_CHECKING:
    from portless.client.datachannel import DataChannel
    from portless.client.session import Stdio

DEFAULT_SIZE = (300, 100)
"""cols x rows sent when stdout is not a terminal (client spec §8.1)."""

CONTROL_BYTES: dict[int, bytes] = {
    signal.SIGINT: b"\x03", signal.SIGQUIT: b"\x1c", signal.SIGTSTP: b"\x1a"}
EOT = b"\x04"


class RawTerminal:
    """Raw mode on a terminal, restored exactly once (also at interpreter exit)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: list[Any] | None = None

    @property
    def active(self) -> bool:
        return self._saved is not None

    def enter(self) -> bool:
        import termios
        import tty

        if not os.isatty(self.fd):
            return False
        try:
            self._saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd, termios.TCSADRAIN)
        except (termios.error, OSError):
            self._saved = None
            return False
        atexit.register(self.restore)
        return True

    def restore(self) -> None:
        import termios

        saved, self._saved = self._saved, None
        if saved is None:
            return
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)
        with contextlib.suppress(Exception):
            atexit.unregister(self.restore)


def terminal_size(fd: int) -> tuple[int, int]:
    """(cols, rows) of the terminal on `fd`, else the plugin's 300x100."""
    try:
        if os.isatty(fd):
            size = os.get_terminal_size(fd)
            if size.columns > 0 and size.lines > 0:
                return size.columns, size.lines
    except OSError:
        pass
    return DEFAULT_SIZE


class ShellHandler:
    def __init__(self, channel: DataChannel, stdio: Stdio) -> None:
        self.ch = channel
        self.stdio = stdio
        self.mode = stdio.mode
        self.exit_status: int | None = None
        self.terminal = RawTerminal(stdio.stdin_fd)
        self._size: tuple[int, int] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._signals: list[int] = []
        self._interrupts = 0
        self._abort_task: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def routing(self) -> bool:
        return self.ch.fast or self.mode.route_streams

    async def start(self) -> None:
        if self.mode.read_stdin and os.isatty(self.stdio.stdin_fd):
            # Texts printed so far were meant for a cooked terminal (CR added to LF).
            await self.stdio.out.flush(timeout=1.0)
            self.terminal.enter()
        self._send_size()
        self._install_signals()
        if self.mode.read_stdin:
            self._pump = asyncio.create_task(self._read_stdin(), name="shell-stdin")
        self.ch.set_ready(True)

    # ------------------------------------------------------------------ output

    async def on_data(self, payload_type: int, payload: bytes) -> None:
        out = self.stdio.out
        if payload_type == PayloadType.OUTPUT:
            out.write(payload)
        elif payload_type == PayloadType.STDERR and self.routing:
            self.stdio.err.write(payload)
            await self.stdio.err.drain()
            return
        elif payload_type == PayloadType.EXIT_CODE and self.routing:
            with contextlib.suppress(PayloadError):
                self.exit_status = decode_exit_code(payload) & 0xFF
            return
        elif self.ch.fast:
            return  # flags and the like are not for the terminal
        else:
            out.write(payload)  # the plugin writes whatever it receives
        await out.drain()
        if out.broken and not self.ch.done:
            self.ch.finish(self.exit_status or 0)

    # ------------------------------------------------------------------- input

    async def _read_stdin(self) -> None:
        raw = self.terminal.active
        inp = self.stdio.inp
        while not self.ch.done:
            data = await inp.read(self.ch.max_payload)
            if not data:
                await self._stdin_eof()
                return
            if not raw and data == b"\n":
                data = b"\r"
            await self.ch.send(PayloadType.OUTPUT, data)
            if self.ch.pacing:
                await asyncio.sleep(self.ch.pacing)

    async def _stdin_eof(self) -> None:
        how = self.mode.stdin_eof
        if how == "exit":
            # The plugin stops at once (client spec §8.1); we let queued input go out first.
            await self.ch.wait_sent(1.0)
            if self.mode.eof_text:
                self.stdio.warn("Cannot perform start session: EOF\n")
            self.ch.finish(self.exit_status or 0)
        elif how == "eot":
            # ^D at the start of a line ends the remote shell, which then closes the session.
            await self.ch.send(PayloadType.OUTPUT, EOT)

    # ---------------------------------------------------------------- signals

    def _install_signals(self) -> None:
        handlers: dict[int, Callable[[], object]] = {signal.SIGWINCH: self._send_size}
        for sig in CONTROL_BYTES:
            handlers[sig] = functools.partial(self._control_signal, sig)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            handlers[sig] = functools.partial(self.ch.finish, 128 + sig)
        self._signals += add_signal_handlers(handlers)

    def _control_signal(self, sig: int) -> None:
        if not self.mode.read_stdin and sig == signal.SIGINT:
            # `exec`: the command may not read input; a second Ctrl-C ends the session.
            self._interrupts += 1
            if self._interrupts > 1:
                self._abort_task = asyncio.ensure_future(self._abort())
                return
        self.ch.send_nowait(PayloadType.OUTPUT, CONTROL_BYTES[sig])

    async def _abort(self) -> None:
        await self.ch.terminate()
        self.ch.finish(130)

    def _send_size(self) -> None:
        size = terminal_size(self.stdio.stdout_fd)
        if size != self._size:
            self._size = size
            self.ch.send_nowait(PayloadType.SIZE, TerminalSize(*size).to_json())

    # ------------------------------------------------------------------ close

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        remove_signal_handlers(self._signals)
        if self._pump is not None:
            self._pump.cancel()
        await self.stdio.out.flush(timeout=5.0)
        await self.stdio.err.flush(timeout=1.0)
        self.terminal.restore()
