"""NonInteractiveCommands: the command line run directly, no shell, no pty (agent spec §12.3).

`properties.linux.commands` is split like a shell would split it and executed as the run-as
user. Stock default: stdout and stderr go to one file and are sent as Output once the
process exits. With `separateOutputStream` (or a portless client), stdout streams as
Output, stderr as StdErr (PayloadType 11), then `EXIT_CODE: n` (PayloadType 12).
Input is only scanned for 0x03 (SIGINT) and 0x1c (SIGQUIT).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import signal
import tempfile
from typing import IO

from portless.agent.sessions.base import STOCK_CHUNK, SessionFailed, SessionIO, SessionPlugin
from portless.agent.sessions.document import SessionSpec, as_bool
from portless.agent.sessions.runas import RunAsError, resolve_run_as
from portless.agent.sessions.shell import session_env
from portless.agent.sessions.terminal import exit_status, unignore_child_signals
from portless.aio import with_timeout
from portless.protocol.message import PayloadType
from portless.protocol.payloads import encode_exit_code

log = logging.getLogger(__name__)

_PREFIX_RE = re.compile(r"^[0-9a-zA-Z\r\n_:-]{0,30}$")
KILL_GRACE = 2.0


class CommandsPlugin(SessionPlugin):
    def __init__(self, spec: SessionSpec) -> None:
        self.spec = spec
        props = spec.linux_properties()
        commands = props.get("commands")
        if not isinstance(commands, str) or not commands.strip():
            raise SessionFailed("commands must not be empty for NonInteractiveCommands")
        try:
            self.argv = shlex.split(commands)
        except ValueError as exc:
            raise SessionFailed(f"Unable to parse commands: {exc}") from None
        if not self.argv:
            raise SessionFailed("commands must not be empty for NonInteractiveCommands")
        self.elevated = as_bool(props.get("runAsElevated", False))
        self.separate = as_bool(props.get("separateOutputStream", False))
        self.stdout_prefix = self._prefix(props, "stdOutSeparatorPrefix")
        self.stderr_prefix = self._prefix(props, "stdErrSeparatorPrefix")
        self._proc: asyncio.subprocess.Process | None = None

    @staticmethod
    def _prefix(props: dict[str, object], key: str) -> bytes:
        value = props.get(key, "")
        if value in (None, ""):
            return b""
        if not isinstance(value, str) or not _PREFIX_RE.match(value):
            raise SessionFailed(f"{key} must match {_PREFIX_RE.pattern}")
        return value.encode()

    async def run(self, io: SessionIO) -> None:
        separate = self.separate or io.fast_path
        chunk = max(STOCK_CHUNK, io.max_payload)
        try:
            user = await asyncio.to_thread(
                resolve_run_as, run_as_enabled=self.spec.run_as_enabled,
                run_as_user=self.spec.run_as_user, default_user=self.spec.run_as_default_user,
                elevated=self.elevated)
        except RunAsError as exc:
            await io.send(PayloadType.STDERR, f"Unable to start command: {exc}\n".encode())
            raise SessionFailed(f"Unable to start command: {exc}") from None
        unignore_child_signals()
        kwargs: dict[str, object] = {}
        if not user.is_self:
            kwargs.update(preexec_fn=user.become)
        outfile: IO[bytes] | None = None
        if not separate:
            outfile = tempfile.TemporaryFile()   # noqa: SIM115 - closed in finally
        finished = False
        try:
            try:
                proc = self._proc = await asyncio.create_subprocess_exec(
                    *self.argv, stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE if separate else outfile,
                    stderr=asyncio.subprocess.PIPE if separate else asyncio.subprocess.STDOUT,
                    env=session_env(user), cwd="/", start_new_session=True,
                    close_fds=True, **kwargs)  # type: ignore[arg-type]
            except OSError as exc:
                text = f"Unable to start command: {exc.strerror or exc}: {self.argv[0]}"
                await io.send(PayloadType.STDERR, (text + "\n").encode())
                raise SessionFailed(text) from None
            log.info("session %s: command %s started as %s (pid %d)", self.spec.session_id,
                     self.argv[0], user.name, proc.pid)
            io.set_ready(True)
            if separate:
                assert proc.stdout is not None and proc.stderr is not None
                try:
                    # One reader failing cancels the other.
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._stream(proc.stdout, io, PayloadType.OUTPUT,
                                                       self.stdout_prefix, chunk))
                        group.create_task(self._stream(proc.stderr, io, PayloadType.STDERR,
                                                       self.stderr_prefix, chunk))
                except BaseExceptionGroup as group_error:
                    raise group_error.exceptions[0] from None
                code = exit_status(await proc.wait())
                await io.send(PayloadType.EXIT_CODE, encode_exit_code(code))
            else:
                assert outfile is not None
                await proc.wait()
                outfile.seek(0)
                while data := await asyncio.to_thread(outfile.read, chunk):
                    await io.send(PayloadType.OUTPUT, data)
            finished = True
        finally:
            if not finished:
                await asyncio.shield(self._kill())
            if outfile is not None:
                outfile.close()

    @staticmethod
    async def _stream(reader: asyncio.StreamReader, io: SessionIO, payload_type: int,
                      prefix: bytes, chunk: int) -> None:
        at_line_start = True
        while data := await reader.read(chunk):
            if prefix and at_line_start:
                data = prefix + data
            at_line_start = data.endswith(b"\n")
            await io.send(payload_type, data)

    async def _kill(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            await with_timeout(proc.wait(), KILL_GRACE)
        except TimeoutError:
            self._signal(signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await with_timeout(proc.wait(), 5)

    def _signal(self, sig: int) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def on_input(self, payload_type: int, payload: bytes) -> None:
        if payload_type != PayloadType.OUTPUT:
            return
        if b"\x03" in payload:
            self._signal(signal.SIGINT)
        if b"\x1c" in payload:
            self._signal(signal.SIGQUIT)
