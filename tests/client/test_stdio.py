"""OutputPipe against a real pipe: flush() waits for bytes queued after a stale signal."""

from __future__ import annotations

import os
import threading
import time

from portless.client.stdio import OutputPipe


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
    try:
        pipe.write(b"a")
        # Block the loop so the writer thread writes "a" and queues its "now empty" signal
        # before the next write is made: that signal must not make flush() return early.
        time.sleep(0.1)
        big = b"b" * (1 << 20)                # far more than the pipe holds: the thread blocks
        pipe.write(big)
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
