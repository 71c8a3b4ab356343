"""OutputPipe against a real pipe: flush() waits for bytes queued after a stale signal."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from portless.client.stdio import OutputPipe


class SignalSpy:
    """Stands in for the pipe's loop: notes when the writer thread queued a signal."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queued = threading.Event()

    def call_soon_threadsafe(self, callback: Any, *args: Any) -> asyncio.Handle:
        handle = self.loop.call_soon_threadsafe(callback, *args)
        self.queued.set()
        return handle


async def test_flush_waits_for_data_written_after_the_thread_signalled_empty() -> None:
    rfd, wfd = os.pipe()
    received = bytearray()
    start_reading = threading.Event()

    def reader() -> None:
        start_reading.wait()
        while data := os.read(rfd, 65536):
            received.extend(data)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    pipe = OutputPipe(wfd)
    spy = SignalSpy(pipe._loop)
    pipe._loop = spy  # type: ignore[assignment]
    try:
        pipe.write(b"a")
        # Block the loop until the writer thread wrote "a" and queued its "now empty" signal
        # before the next write is made: that signal must not make flush() return early.
        assert spy.queued.wait(5), "the writer thread never signalled"
        big = b"b" * (1 << 20)                # far more than the pipe holds: the thread blocks
        pipe.write(big)
        # The reader staying away for a while IS the scenario: flush() must wait for it.
        threading.Timer(0.3, start_reading.set).start()
        t0 = time.monotonic()
        await pipe.flush(timeout=10)
        assert time.monotonic() - t0 >= 0.25
        assert pipe._queued == 0
    finally:
        start_reading.set()
        pipe.close()
        os.close(wfd)
        thread.join(5)
        os.close(rfd)
    assert bytes(received) == b"a" + big
