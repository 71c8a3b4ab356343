"""The relay's asciicast recorder: bounded memory, work off the event loop, lines in order."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from portless.server import recording
from portless.server.recording import MAX_BACKLOG_BYTES, Recorder, RecordingManager
from tests.waiting import wait_until

CHUNK = 512 * 1024
_ALPHABET = bytes(range(0x20, 0x7F))


def chunk(i: int, size: int = CHUNK) -> bytes:
    """Printable bytes, different for every chunk so order mistakes show."""
    head = f"\r\n<{i:06d}>".encode()
    body = _ALPHABET[i % len(_ALPHABET):] + _ALPHABET[:i % len(_ALPHABET)]
    return (head + body * (size // len(body) + 1))[:size]


def read_cast(path: Path) -> tuple[dict[str, Any], list[list[Any]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2
    events = [json.loads(line) for line in lines[1:]]
    times = [e[0] for e in events]
    assert times == sorted(times), "timestamps go backwards"
    assert all(isinstance(e, list) and len(e) == 3 and e[1] in ("o", "r", "m")
               for e in events)
    return header, events


def text_of(events: list[list[Any]]) -> str:
    return "".join(e[2] for e in events if e[1] == "o")



async def test_fifty_megabytes_recorded_with_bounded_memory(tmp_path: Path) -> None:
    manager = RecordingManager(tmp_path, interval=0.2)
    manager.start()
    rec = manager.open("admin-0123456789abcdef0", shell=True)
    rec.resize(0, 132, 43)
    sent: list[bytes] = []
    for i in range(100):  # 50 MiB, at about 100 MB/s
        data = chunk(i)
        sent.append(data)
        rec.output(i, data)
        await asyncio.sleep(0.005)  # the pace of the scenario: a steady producer, not a burst
    await manager.finish(rec)
    await manager.stop()

    assert rec.dropped_bytes == 0 and rec.dropped_frames == 0
    assert rec.backlog_bytes == 0
    assert 0 < rec.peak_backlog_bytes <= MAX_BACKLOG_BYTES
    assert rec.peak_backlog_bytes < sum(map(len, sent)) // 2
    header, events = read_cast(tmp_path / "admin-0123456789abcdef0.cast")
    assert (header["width"], header["height"]) == (132, 43)
    assert text_of(events) == b"".join(sent).decode()
    assert not [e for e in events if e[1] == "m"]


async def test_rendering_runs_off_the_event_loop(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    threads: set[int] = set()
    render = Recorder._render

    def spy(self: Recorder, batch: Any) -> str:
        threads.add(threading.get_ident())
        return render(self, batch)

    monkeypatch.setattr(Recorder, "_render", spy)
    rec = Recorder(tmp_path / "s.cast", "s", shell=True)
    rec.resize(0, 80, 24)
    for i in range(20):  # crosses FLUSH_BYTES several times: early flushes
        rec.output(i, chunk(i))
        await asyncio.sleep(0)
    await rec.flush(final=True)
    assert threads and threading.get_ident() not in threads
    _, events = read_cast(tmp_path / "s.cast")
    assert text_of(events) == b"".join(chunk(i) for i in range(20)).decode()


async def test_stalled_writer_drops_and_marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(recording, "FLUSH_BYTES", 4 * CHUNK)
    monkeypatch.setattr(recording, "MAX_BACKLOG_BYTES", 16 * CHUNK)
    gate = threading.Event()
    append = recording._append

    def slow_append(path: Path, text: str) -> None:
        gate.wait(10)
        append(path, text)

    monkeypatch.setattr(recording, "_append", slow_append)
    rec = Recorder(tmp_path / "s.cast", "s", shell=True)
    rec.resize(0, 80, 24)
    for i in range(40):  # the disk is stuck: only 16 chunks fit
        rec.output(i, chunk(i))
        await asyncio.sleep(0)
    assert rec.backlog_bytes <= 16 * CHUNK and rec.peak_backlog_bytes <= 16 * CHUNK
    assert rec.dropped_frames == 24 and rec.dropped_bytes == 24 * CHUNK
    gate.set()
    # The writer catches up; output is recorded again.
    await wait_until(lambda: rec.backlog_bytes == 0)
    rec.output(40, chunk(40))
    with caplog.at_level(logging.WARNING, logger="portless.server.recording"):
        await rec.flush(final=True)
    assert any("missing" in r.getMessage() and str(24 * CHUNK) in r.getMessage()
               for r in caplog.records)

    _, events = read_cast(tmp_path / "s.cast")
    kept = [*range(16), 40]
    assert text_of(events) == b"".join(chunk(i) for i in kept).decode()
    markers = [e[2] for e in events if e[1] == "m"]
    assert len(markers) == 2
    assert f"{24 * CHUNK} bytes of output dropped" in markers[0]
    assert f"{24 * CHUNK} bytes of output (24 frames) were not recorded" in markers[1]
    # The gap marker sits where the output was lost: after chunk 15, before chunk 40.
    kinds = [(e[1], e[2][:9]) for e in events if e[1] == "m" or e[2].startswith("\r\n<")]
    where = kinds.index(("m", markers[0][:9]))
    assert kinds[where - 1][1] == "\r\n<000015" and kinds[where + 1][1] == "\r\n<000040"


async def test_concurrent_flush_and_finish_keep_lines_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    append = recording._append
    calls = 0

    def uneven_append(path: Path, text: str) -> None:
        nonlocal calls
        calls += 1
        # A deliberately uneven disk (in the writer thread): a later writer would overtake
        # an earlier one if the lock did not keep them in order.
        time.sleep(0.01 if calls % 2 else 0.001)
        append(path, text)

    monkeypatch.setattr(recording, "_append", uneven_append)
    manager = RecordingManager(tmp_path, interval=0.001)
    manager.start()
    rec = manager.open("s", shell=True)
    rec.resize(0, 80, 24)
    sent: list[bytes] = []
    seq = 0

    def feed(n: int) -> None:
        nonlocal seq
        for _ in range(n):
            data = f"line {seq}\r\n".encode()
            sent.append(data)
            rec.output(seq, data)
            seq += 1

    for _round in range(10):
        tasks = []
        for _ in range(3):  # each flush hands over a batch and starts a writer thread
            feed(5)
            tasks.append(asyncio.create_task(rec.flush()))
            await wait_until(lambda: rec._buffered == 0, interval=0.001)  # its batch is handed over
        await asyncio.gather(*tasks)
    feed(5)
    first = asyncio.create_task(rec.flush())
    await wait_until(lambda: rec._buffered == 0, interval=0.001)
    feed(5)
    await asyncio.gather(first, manager.finish(rec), rec.flush())
    await manager.stop()
    _, events = read_cast(tmp_path / "s.cast")
    assert text_of(events) == b"".join(sent).decode()


async def test_header_waits_for_the_size_then_defaults(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "s.cast", "s", shell=True)
    rec.output(0, "héllo".encode()[:2])  # a split UTF-8 character
    await rec.flush()
    assert not (tmp_path / "s.cast").exists()  # still waiting for the terminal size
    rec.output(1, "héllo".encode()[2:])
    rec.resize(0, 100, 30)
    await rec.flush()
    rec.resize(1, 90, 20)
    await rec.flush(final=True)
    header, events = read_cast(tmp_path / "s.cast")
    assert (header["width"], header["height"]) == (100, 30)
    assert text_of(events) == "héllo"
    assert ["r", "90x20"] in [e[1:] for e in events]


def test_file_names_stay_in_the_directory(tmp_path: Path) -> None:
    manager = RecordingManager(tmp_path)
    assert manager.path_for("john.doe@example.com-0123456789abcdef0").name == \
        "john.doe@example.com-0123456789abcdef0.cast"
    assert manager.path_for("../x").parent == tmp_path
