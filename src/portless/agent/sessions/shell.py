"""Standard_Stream and InteractiveCommands: `sh` (or `sh -c COMMANDS`) in a pty (agent spec §12.1-12.2).

The shell runs as the run-as user in a new session with the pty as its controlling
terminal, so the line discipline turns a client's 0x03 into SIGINT. Input is not accepted
(not acked) until the pty exists; the first Size message sets the initial size before the
shell starts; output goes out in chunks of at most 1024 bytes to stock clients (larger on
the portless fast path) without splitting a UTF-8 sequence. A portless client also gets the
shell's exit code as an ExitCode message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from portless.agent.sessions.base import STOCK_CHUNK, SessionFailed, SessionIO, SessionPlugin
from portless.agent.sessions.document import SessionSpec, as_bool
from portless.agent.sessions.runas import RunAsError, RunAsUser, resolve_run_as
from portless.agent.sessions.terminal import PtyProcess
from portless.aio import wait_event, with_timeout
from portless.protocol.message import PayloadType
from portless.protocol.payloads import PayloadError, TerminalSize, encode_exit_code

log = logging.getLogger(__name__)

SHELL = "/bin/sh"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INITIAL_SIZE_WAIT = 0.5
"""How long to wait for the client's first Size message before starting the shell."""
INPUT_HIGH_WATER = 64 * 1024
"""Typed input buffered for the pty beyond which further input is not accepted yet."""
EXIT_DRAIN_IDLE = 0.2
"""After the shell exits, output still arriving within this gap is sent before ending."""


def split_utf8(data: bytes) -> tuple[bytes, bytes]:
    """Split off an incomplete UTF-8 sequence at the end of `data`: (complete, rest)."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        byte = data[n - back]
        if byte & 0xC0 == 0x80:          # continuation byte: keep looking for the lead
            continue
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            if need > back:
                return data[: n - back], data[n - back:]
        break
    return data, b""


SAFE_ENV = ("PATH", "LANG", "TZ")
"""The agent's variables a session as another user inherits (plus every `LC_*`)."""


def session_env(user: RunAsUser) -> dict[str, str]:
    """The environment of a shell or command session.

    As the agent's own user: the agent's environment plus what the stock agent sets. As
    another user: only an allowlist of the agent's variables (PATH, LANG, LC_*, TZ) plus
    TERM, HOME, USER, LOGNAME and SHELL, so that nothing else of root's environment
    (proxy credentials, AWS_* keys, ...) leaks to the run-as user.
    """
    if user.is_self:
        env = dict(os.environ)
    else:
        env = {k: v for k, v in os.environ.items() if k in SAFE_ENV or k.startswith("LC_")}
        env["USER"] = env["LOGNAME"] = user.name
        env["SHELL"] = user.shell
    env["TERM"] = "xterm-256color"
    env.setdefault("LANG", "C.UTF-8")
    env.setdefault("PATH", DEFAULT_PATH)
    env["HOME"] = user.home
    return env


class ShellPlugin(SessionPlugin):
    """A shell (commands=None) or `sh -c commands` in a pty."""

    def __init__(self, spec: SessionSpec, *, commands: str | None = None) -> None:
        self.spec = spec
        self.commands = commands
        self._pty: PtyProcess | None = None
        self._io: SessionIO | None = None
        self._input = bytearray()
        self._input_ready = asyncio.Event()
        self._sized = asyncio.Event()
        self._size: TerminalSize | None = None

    @classmethod
    def for_spec(cls, spec: SessionSpec) -> ShellPlugin:
        if spec.session_type == "InteractiveCommands":
            commands = spec.linux_properties().get("commands")
            if not isinstance(commands, str) or not commands.strip():
                raise SessionFailed("commands must not be empty for InteractiveCommands")
            return cls(spec, commands=commands)
        return cls(spec)

    def _elevated(self) -> bool:
        return self.commands is not None and as_bool(
            self.spec.linux_properties().get("runAsElevated", False))

    async def run(self, io: SessionIO) -> None:
        self._io = io
        try:
            user = await asyncio.to_thread(
                resolve_run_as, run_as_enabled=self.spec.run_as_enabled,
                run_as_user=self.spec.run_as_user, default_user=self.spec.run_as_default_user,
                elevated=self._elevated())
        except RunAsError as exc:
            raise SessionFailed(f"Unable to start command: {exc}") from None
        pty = self._pty = PtyProcess()
        finished = False
        try:
            pty.resize(80, 24)
            io.set_ready(True)           # from now on input (and the Size message) is taken
            await wait_event(self._sized, INITIAL_SIZE_WAIT)
            argv = [SHELL] if self.commands is None else [SHELL, "-c", self.commands]
            try:
                await pty.spawn(argv, user, session_env(user))
            except OSError as exc:
                raise SessionFailed(f"Unable to start command: {exc}") from None
            log.info("session %s: %s started as %s (pid %d)", self.spec.session_id,
                     "shell" if self.commands is None else "commands", user.name, pty.pid)
            profile = self.spec.shell_profile if self.commands is None else ""
            if profile.strip():
                self._type(profile.encode() + b"\n")
            writer = asyncio.create_task(self._write_input(pty))
            try:
                code = await self._pump_output(pty, io)
            finally:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await writer
            if io.fast_path:
                await io.send(PayloadType.EXIT_CODE, encode_exit_code(code))
            finished = True
        finally:
            if not finished:
                await asyncio.shield(pty.terminate())
            pty.close()

    async def _pump_output(self, pty: PtyProcess, io: SessionIO) -> int:
        """Send output until the shell has exited and its output is drained; return its code."""
        # Stock: reads of 1024 bytes, so a message is at most 1024 + the ≤ 3 bytes of an
        # incomplete UTF-8 sequence carried over (agent spec §11.4). Fast path: reads leave
        # room for the carry, so no message exceeds the agreed max_payload.
        chunk = max(1, io.max_payload - 3) if io.fast_path else STOCK_CHUNK
        carry = b""
        exited = asyncio.create_task(pty.wait())
        try:
            while True:
                read = asyncio.ensure_future(pty.read(chunk))
                if not exited.done():
                    await asyncio.wait({read, exited}, return_when=asyncio.FIRST_COMPLETED)
                    if not read.done():
                        # The shell exited: whatever output is left comes promptly or never
                        # (a background job may still hold the terminal open).
                        with contextlib.suppress(TimeoutError):
                            await with_timeout(asyncio.shield(read), EXIT_DRAIN_IDLE)
                else:
                    with contextlib.suppress(TimeoutError):
                        await with_timeout(asyncio.shield(read), EXIT_DRAIN_IDLE)
                if not read.done():
                    read.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await read
                    break
                data = read.result()
                if not data:
                    break
                out, carry = split_utf8(carry + data)
                if out:
                    await io.send(PayloadType.OUTPUT, out)
            if carry:
                await io.send(PayloadType.OUTPUT, carry)
            return await exited
        finally:
            if not exited.done():
                exited.cancel()

    def _type(self, data: bytes) -> None:
        self._input += data
        self._input_ready.set()
        if len(self._input) >= INPUT_HIGH_WATER and self._io is not None:
            self._io.set_ready(False)

    async def _write_input(self, pty: PtyProcess) -> None:
        while True:
            await self._input_ready.wait()
            self._input_ready.clear()
            while self._input:
                data = bytes(self._input)
                self._input.clear()
                await pty.write(data)
            if self._io is not None:
                self._io.set_ready(True)

    def on_input(self, payload_type: int, payload: bytes) -> None:
        if payload_type == PayloadType.OUTPUT:
            self._type(payload)
        elif payload_type == PayloadType.SIZE:
            try:
                size = TerminalSize.from_json(payload)
            except PayloadError:
                log.warning("session %s: bad Size payload %r", self.spec.session_id, payload[:80])
                return
            if self._pty is not None:
                self._pty.resize(size.cols, size.rows)
            self._sized.set()
