"""Throughput of the message codec and of two ReliableStreams talking in memory.

Run: python bench/bench_protocol.py.  Each figure is payload MB/s (10**6 bytes) over a
~1.5 s run; the peer figure (SHA-256 + one memcpy of the same bytes) is printed beside
them so that ratios survive a change of machine.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from portless.protocol.message import Message, MessageType, decode, encode
from portless.protocol.reliable import Delivered, ReliableStream, StreamConfig

DURATION = 1.5


def measure(step: Callable[[], int]) -> float:
    """Call `step` (returns payload bytes moved) until DURATION passed; MB/s."""
    moved = 0
    start = time.perf_counter()
    deadline = start + DURATION
    while True:
        moved += step()
        now = time.perf_counter()
        if now >= deadline:
            return moved / (now - start) / 1e6


def codec(size: int, digest: bool) -> float:
    payload = os.urandom(size)
    msg = Message(MessageType.OUTPUT_STREAM_DATA, 5, 0, 1, payload)

    def step() -> int:
        for _ in range(64):
            decode(encode(msg, digest=digest), verify_digest=digest)
        return 64 * size
    return measure(step)


def peer(size: int) -> float:
    payload = os.urandom(size)
    buf = bytearray(size)

    def step() -> int:
        for _ in range(64):
            hashlib.sha256(payload).digest()
            buf[:] = payload
        return 64 * size
    return measure(step)


def peer_memcpy(size: int) -> float:
    payload = os.urandom(size)
    buf = bytearray(size)

    def step() -> int:
        for _ in range(64):
            buf[:] = payload
        return 64 * size
    return measure(step)


def streams(size: int, window: int | None, digest: bool) -> float:
    """Agent -> client, each frame decoded by the receiver and every ack fed back."""
    clock = [0.0]
    agent = ReliableStream(StreamConfig(MessageType.OUTPUT_STREAM_DATA, window=window,
                                        digest=digest), clock[0])
    client = ReliableStream(StreamConfig(MessageType.INPUT_STREAM_DATA, window=window,
                                         digest=digest), clock[0])
    payload = os.urandom(size)
    batch = 2 * window if window else 64
    received = [0]

    def step() -> int:
        clock[0] += 0.0001
        now = clock[0]
        sent = 0
        while agent.writable and sent < batch:
            agent.send(1, payload, now)
            sent += 1
        for frame in agent.frames_to_send():
            for ev in client.receive_frame(frame, now):
                if isinstance(ev, Delivered):
                    received[0] += len(ev.payload)
        for frame in client.frames_to_send():
            agent.receive_frame(frame, now)
        return sent * size
    rate = measure(step)
    assert agent.unacked < batch * 2
    return rate


def main() -> None:
    print(f"python {sys.version.split()[0]}, {DURATION:.1f} s per figure, payload MB/s")
    rows: list[tuple[str, float]] = []
    for size in (1024, 65536):
        for digest in (True, False):
            label = f"codec encode+decode {size // 1024:>2} KiB, digest {'on ' if digest else 'off'}"
            rows.append((label, codec(size, digest)))
    rows.append(("streams stock (1 KiB, no window, digest on)", streams(1024, None, True)))
    rows.append(("streams fast path (64 KiB, window 64, digest off)", streams(65536, 64, False)))
    rows.append(("streams 64 KiB, window 64, digest on", streams(65536, 64, True)))
    sha_1k, sha_64k = peer(1024), peer(65536)
    rows.append(("peer: sha256 + memcpy 1 KiB", sha_1k))
    rows.append(("peer: sha256 + memcpy 64 KiB", sha_64k))
    rows.append(("peer: memcpy only 64 KiB", peer_memcpy(65536)))
    width = max(len(label) for label, _ in rows)
    for label, rate in rows:
        print(f"{label:<{width}}  {rate:9.1f} MB/s")
    fast = rows[5][1]
    print(f"ratio fast path / (sha256+memcpy 64 KiB) = {fast / sha_64k:.2f}")
    print(f"ratio stock streams / (sha256+memcpy 1 KiB) = {rows[4][1] / sha_1k:.2f}")


if __name__ == "__main__":
    main()
