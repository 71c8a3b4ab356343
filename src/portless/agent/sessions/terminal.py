"""A process in a pseudo-terminal: new session, controlling tty, run as another user.

The child is started by asyncio's subprocess machinery with the pty slave as
stdin/stdout/stderr, through util-linux `setsid --ctty` so it leads a new session whose
controlling terminal is the pty. Switching to the run-as user (and, without `setsid`,
taking the controlling terminal) happens in a `preexec_fn`: Python code run between fork
and exec, which is NOT guaranteed safe in a threaded process (a lock another thread held at
fork time stays locked in the child). The steps are bare system calls to keep that risk small.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import shutil
import signal
import struct
import termios
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from portless.agent.sessions.runas import RunAsUser
from portless.aio import with_timeout

_SETSID = shutil.which("setsid") or ""


def _acquire_ctty() -> None:          # pragma: no cover - runs in the child
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


_CHILD_DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN,
                          signal.SIGTTOU, signal.SIGHUP)


def _ignore(signum: int, frame: object) -> None:          # pragma: no cover - signal handler
    """Stands in for SIG_IGN in the agent itself; children get SIG_DFL across exec."""


def unignore_child_signals() -> None:
    """Make sure session processes start with default dispositions for job-control signals.

    An ignored signal stays ignored across exec, so an agent started from a context that
    ignores SIGINT/SIGQUIT (a background job of a non-interactive shell, for one) would
    hand shells a Ctrl-C that does nothing. A handler, unlike SIG_IGN, resets on exec.
    Must run in the main thread (it does: the event loop's).
    """
    for sig in _CHILD_DEFAULT_SIGNALS:
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(sig) == signal.SIG_IGN:
                signal.signal(sig, _ignore)


def exit_status(returncode: int) -> int:
    """A subprocess returncode as a shell reports it: 128+N for a death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def session_processes(sid: int) -> list[int]:
    """Pids of every process whose session id is `sid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 3 and fields[3] == str(sid):
            found.append(int(entry.name))
    return found


def kill_session(sid: int, sig: int) -> None:
    """Signal every process of session `sid` (the shell and anything it left behind)."""
    for pid in session_processes(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


class PtyProcess:
    """Master side of a pty plus the process running on its slave side."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        os.set_blocking(self.master, False)
        self.proc: asyncio.subprocess.Process | None = None
        self._closed = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def resize(self, cols: int, rows: int) -> None:
        if self._closed or cols <= 0 or rows <= 0:
            return
        # struct winsize: rows, cols, xpixel, ypixel (unsigned short each).
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.master, termios.TIOCSWINSZ,
                        struct.pack("HHHH", min(rows, 0xFFFF), min(cols, 0xFFFF), 0, 0))

    def size(self) -> tuple[int, int]:
        """(cols, rows) as the kernel has them."""
        rows, cols, _, _ = struct.unpack(
            "HHHH", fcntl.ioctl(self.master, termios.TIOCGWINSZ, bytes(8)))
        return cols, rows

    async def spawn(self, argv: Sequence[str], user: RunAsUser, env: Mapping[str, str],
                    cwd: str = "/") -> None:
        """Start `argv` on the slave as `user`, leading a new session with the pty as ctty."""
        unignore_child_signals()
        steps: list[Callable[[], None]] = []
        kwargs: dict[str, object] = {}
        if _SETSID:
            args = [_SETSID, "--ctty", *argv]
        else:
            args = list(argv)
            kwargs.update(start_new_session=True)
            steps.append(_acquire_ctty)
        if not user.is_self:
            steps.append(user.become)
        if steps:
            kwargs.update(preexec_fn=lambda: [step() for step in steps])
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *args, stdin=self._slave, stdout=self._slave, stderr=self._slave,
                env=dict(env), cwd=cwd, close_fds=True, **kwargs)  # type: ignore[arg-type]
        finally:
            os.close(self._slave)
            self._slave = -1

    async def read(self, n: int) -> bytes:
        """Up to `n` bytes of output; b"" once the slave side is closed by everyone (EIO)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                return os.read(self.master, n)
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return b""
                raise
            fut: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self.master, _wake, fut)
            try:
                await fut
            finally:
                loop.remove_reader(self.master)

    async def write(self, data: bytes) -> None:
        """Write all of `data` to the terminal (as if typed)."""
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.master, view)
                view = view[written:]
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return
                raise
            fut: asyncio.Future[None] = loop.create_future()
            loop.add_writer(self.master, _wake, fut)
            try:
                await fut
            finally:
                loop.remove_writer(self.master)

    async def wait(self) -> int:
        """The process's exit status as a shell reports it (128+N for signal N)."""
        assert self.proc is not None
        return exit_status(await self.proc.wait())

    async def terminate(self, grace: float = 1.0) -> None:
        """Hang up the session: SIGHUP to all its processes, SIGKILL after `grace` seconds."""
        if self.proc is None:
            return
        sid = self.proc.pid
        if self.proc.returncode is None:
            kill_session(sid, signal.SIGHUP)
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGHUP)
            try:
                await with_timeout(asyncio.shield(self.proc.wait()), grace)
            except TimeoutError:
                kill_session(sid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                with contextlib.suppress(TimeoutError):
                    await with_timeout(self.proc.wait(), 5)
        kill_session(sid, signal.SIGKILL)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            asyncio.get_running_loop().remove_reader(self.master)
        with contextlib.suppress(OSError):
            os.close(self.master)
        if self._slave >= 0:
            with contextlib.suppress(OSError):
                os.close(self._slave)
            self._slave = -1
