"""Asynchronous, bounded access to the process's standard streams without O_NONBLOCK.

Setting O_NONBLOCK on a terminal or an inherited pipe changes it for every process that
shares the open file (the user's shell included), so these helpers leave the descriptors
blocking: input is read when the loop reports it readable (or from a worker thread for
files and /dev/null, which the loop cannot watch), output is written by a daemon thread
fed through a bounded queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading

from portless.aio import with_timeout


class InputPipe:
    """Reads a blocking file descriptor from the event loop."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._loop = asyncio.get_running_loop()
        self._watchable = True
        self._waiter: asyncio.Future[None] | None = None
        self.eof = False

    def _readable(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self, size: int) -> bytes:
        """Up to `size` bytes; b"" at end of input (or when the descriptor fails)."""
        if self.eof:
            return b""
        if self._watchable:
            waiter = self._loop.create_future()
            self._waiter = waiter
            try:
                self._loop.add_reader(self.fd, self._readable)
            except (PermissionError, OSError, ValueError):
                # Regular files and /dev/null cannot be watched; they never block.
                self._watchable = False
            else:
                try:
                    await waiter
                finally:
                    self._loop.remove_reader(self.fd)
                    self._waiter = None
                try:
                    data = os.read(self.fd, size)
                except BlockingIOError:
                    return await self.read(size)
                except OSError:
                    data = b""
                if not data:
                    self.eof = True
                return data
        try:
            data = await asyncio.to_thread(os.read, self.fd, size)
        except OSError:
            data = b""
        if not data:
            self.eof = True
        return data

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.fd)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.cancel()


class OutputPipe:
    """Writes to a blocking file descriptor from a daemon thread, preserving order.

    `write` never blocks; callers that produce a lot await `drain()`, which returns once
    fewer than `high_water` bytes are queued.  `broken` turns True when the descriptor
    fails (EPIPE: the reader went away); later writes are dropped.
    """

    def __init__(self, fd: int, *, high_water: int = 1 << 20) -> None:
        self.fd = fd
        self.high_water = high_water
        self._loop = asyncio.get_running_loop()
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closed = False
        self.broken = False
        self._space = asyncio.Event()
        self._space.set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._thread = threading.Thread(target=self._run, name=f"output-fd{fd}", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        if not data or self.broken or self._closed:
            return
        with self._cond:
            self._queue.append(bytes(data))
            self._queued += len(data)
            self._empty.clear()
            if self._queued >= self.high_water:
                self._space.clear()
            self._cond.notify()

    async def drain(self) -> None:
        while not self._space.is_set() and not self.broken:
            await self._space.wait()

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything written so far reached the descriptor."""
        with contextlib.suppress(TimeoutError):
            await with_timeout(self._empty.wait(), timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _signal(self) -> None:
        # The count the writer thread saw may be stale by now: `write` may have queued
        # more since, so read the current one.
        with self._cond:
            queued = self._queued
        if queued < self.high_water:
            self._space.set()
        if queued == 0:
            self._empty.set()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                chunk = self._queue.popleft()
            ok = self._write_all(chunk)
            with self._cond:
                if not ok:
                    self.broken = True
                    self._queue.clear()
                    self._queued = 0
                else:
                    self._queued -= len(chunk)
            try:
                self._loop.call_soon_threadsafe(self._signal)
            except RuntimeError:  # loop closed
                return

    def _write_all(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                # Somebody else made the descriptor non-blocking; wait for room.
                import select
                select.select([], [self.fd], [], 1.0)
                continue
            except InterruptedError:
                continue
            except OSError:
                return False
            view = view[n:]
        return True
