"""Session recording at the relay: asciicast v2 for shell sessions, byte counts for ports.

The relay only appends (timestamp, kind, bytes) to an in-memory buffer; the
buffer is handed to a worker thread, which decodes it, turns it into asciicast
lines and appends them to `<data-dir>/recordings/<sid>.cast`: about once a
second, as soon as `FLUSH_BYTES` of output are buffered, and when the session
ends.  Nothing here runs per message except a list append and a few counters;
decoding and JSON encoding never run on the event loop.

Memory is bounded per recorder: output waiting to be written (buffered or
handed to the writer) never exceeds `MAX_BACKLOG_BYTES`.  Only if the disk
writer falls that far behind is output dropped; the drop is counted, logged
when the recording ends, and marked in the cast with asciicast "m" (marker)
events.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_SIZE = (80, 24)
HEADER_WAIT_S = 5.0
"""How long events may wait for the first terminal size before the header is written."""

FLUSH_BYTES = 4 * 1024 * 1024
"""Buffered output that is handed to the writer at once rather than at the next tick."""

MAX_BACKLOG_BYTES = 32 * 1024 * 1024
"""Output not yet written (buffered or queued for the writer) beyond which output is dropped."""

_UNSAFE_NAME = frozenset("/\\\0")

Event = tuple[float, str, Any]


@dataclass
class _Batch:
    """Events handed to the writer, in order; the first batch carries the header."""

    events: list[Event]
    nbytes: int
    header: dict[str, Any] | None = None
    final: bool = False
    end_t: float = 0.0
    notes: list[str] = field(default_factory=list)


class Recorder:
    """One session's recording.  `output`/`resize` are called on the hot path."""

    def __init__(self, path: Path | None, session_id: str, *, shell: bool,
                 started_wall: float | None = None) -> None:
        self.path = path
        self.session_id = session_id
        self.shell = shell
        self.started_wall = time.time() if started_wall is None else started_wall
        self.started = time.monotonic()
        self.bytes_in = 0        # client → agent stream payload bytes
        self.bytes_out = 0       # agent → client stream payload bytes
        self._last_out_seq = -1
        self._last_size_seq = -1
        self._last_in_seq = -1
        self.closed = False
        # Event-loop side: the buffer and what has been handed to the writer.
        self._events: list[Event] = []
        self._buffered = 0               # output bytes in _events
        self._enqueued = 0               # output bytes ever handed to the writer
        self._size: tuple[int, int] | None = None
        self._header_scheduled = False
        self._dropped = 0                # output frames dropped
        self._dropped_bytes = 0
        self._gap_bytes = 0              # dropped since output was last accepted
        self._peak = 0
        self._writers: set[asyncio.Task[None]] = set()
        # Writer side (worker threads, serialised by _write_lock).
        self._queue: collections.deque[_Batch] = collections.deque()
        self._write_lock = threading.Lock()
        self._written = 0                # output bytes written (or given up on)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._write_failed = False

    # ------------------------------------------------------------ metrics

    @property
    def backlog_bytes(self) -> int:
        """Output bytes received but not yet written to disk."""
        return self._enqueued - self._written + self._buffered

    @property
    def peak_backlog_bytes(self) -> int:
        """The most output this recorder has held in memory at once."""
        return self._peak

    @property
    def dropped_frames(self) -> int:
        return self._dropped

    @property
    def dropped_bytes(self) -> int:
        return self._dropped_bytes

    # ----------------------------------------------------------- hot path

    def output(self, seq: int, payload: bytes) -> None:
        """Agent → client PayloadType 1/11 bytes (deduplicated by sequence number)."""
        if seq <= self._last_out_seq:
            return
        self._last_out_seq = seq
        self.bytes_out += len(payload)
        if not self.shell or self.path is None or self.closed or not payload:
            return
        n = len(payload)
        backlog = self.backlog_bytes
        if backlog + n > MAX_BACKLOG_BYTES:
            self._dropped += 1
            self._dropped_bytes += n
            self._gap_bytes += n
            return
        now = time.monotonic() - self.started
        if self._gap_bytes:
            self._events.append((now, "m", _gap_note(self._gap_bytes)))
            self._gap_bytes = 0
        self._events.append((now, "o", payload))
        self._buffered += n
        if backlog + n > self._peak:
            self._peak = backlog + n
        if self._buffered >= FLUSH_BYTES:
            self._kick()

    def count_output(self, seq: int, nbytes: int) -> None:
        """Agent → client stream bytes of a session that is not recorded as a cast."""
        if seq > self._last_out_seq:
            self._last_out_seq = seq
            self.bytes_out += nbytes

    def count_input(self, seq: int, nbytes: int) -> None:
        """Client → agent PayloadType 1 bytes."""
        if seq > self._last_in_seq:
            self._last_in_seq = seq
            self.bytes_in += nbytes

    def resize(self, seq: int, cols: int, rows: int) -> None:
        if seq <= self._last_size_seq:
            return
        self._last_size_seq = seq
        if not self.shell or self.path is None:
            return
        self._size = (cols, rows)
        if not self._header_scheduled:
            return  # the header, when it is written, carries the size
        self._events.append((time.monotonic() - self.started, "r", f"{cols}x{rows}"))

    # ------------------------------------------------------------ writing

    def _enqueue(self, *, final: bool = False) -> None:
        """Hand the buffered events to the writer (event-loop side)."""
        header: dict[str, Any] | None = None
        if not self._header_scheduled:
            width, height = self._size or DEFAULT_SIZE
            header = {"version": 2, "width": width, "height": height,
                      "timestamp": int(self.started_wall),
                      "title": self.session_id,
                      "env": {"TERM": "xterm-256color", "SHELL": "/bin/sh"}}
            self._header_scheduled = True
        batch = _Batch(self._events, self._buffered, header, final,
                       time.monotonic() - self.started)
        if final:
            if self._gap_bytes:
                batch.events.append((batch.end_t, "m", _gap_note(self._gap_bytes)))
                self._gap_bytes = 0
            if self._dropped:
                batch.notes.append(f"portless: {self._dropped_bytes} bytes of output "
                                   f"({self._dropped} frames) were not recorded")
        self._events = []
        self._buffered = 0
        self._enqueued += batch.nbytes
        self._queue.append(batch)

    def _kick(self) -> None:
        """Start writing the buffer now, from a worker thread (called on the hot path)."""
        self._enqueue()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the next flush() writes it
        task = loop.create_task(asyncio.to_thread(self._write_queued))
        self._writers.add(task)
        task.add_done_callback(self._writer_done)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        self._writers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not write the recording of %s", self.session_id,
                      exc_info=task.exception())

    def _write_queued(self) -> None:
        """Write every queued batch, in order (worker thread).

        The lock serialises writers, so a periodic flush, an early flush and
        finish() never interleave or reorder lines.
        """
        path = self.path
        assert path is not None
        with self._write_lock:
            while self._queue:
                batch = self._queue.popleft()
                try:
                    text = self._render(batch)
                    if text and not self._write_failed:
                        _append(path, text)
                except OSError:
                    if not self._write_failed:
                        log.exception("could not write the recording of %s", self.session_id)
                    self._write_failed = True
                finally:
                    self._written += batch.nbytes

    def _render(self, batch: _Batch) -> str:
        lines: list[str] = []
        if batch.header is not None:
            lines.append(json.dumps(batch.header))
        last = 0.0
        for t, kind, data in batch.events:
            last = t
            if kind == "o":
                text = self._decoder.decode(data)
                if text:
                    lines.append(json.dumps([round(t, 6), "o", text], ensure_ascii=False))
            else:
                lines.append(json.dumps([round(t, 6), kind, data], ensure_ascii=False))
        if batch.final:
            end = round(max(batch.end_t, last), 6)
            tail = self._decoder.decode(b"", final=True)
            if tail:
                lines.append(json.dumps([end, "o", tail], ensure_ascii=False))
            for note in batch.notes:
                lines.append(json.dumps([end, "m", note], ensure_ascii=False))
        return "".join(line + "\n" for line in lines)

    async def flush(self, *, final: bool = False) -> None:
        if self.path is None or not self.shell:
            return
        if (not self._header_scheduled and not final and self._size is None
                and self._buffered < FLUSH_BYTES
                and time.monotonic() - self.started < HEADER_WAIT_S):
            return  # wait a little for the terminal size
        if self._events or final or not self._header_scheduled:
            self._enqueue(final=final)
        elif not self._queue:
            return
        # Shielded: a cancelled caller must not leave a half-finished write behind
        # (the thread goes on regardless; the lock keeps later writes after it).
        await asyncio.shield(asyncio.to_thread(self._write_queued))
        if final and self._dropped:
            log.warning("recording of %s is missing %d bytes of output (%d frames): "
                        "the disk writer fell behind", self.session_id,
                        self._dropped_bytes, self._dropped)


def _gap_note(nbytes: int) -> str:
    return f"portless: {nbytes} bytes of output dropped here (recording fell behind)"


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def _file_name(session_id: str) -> str:
    """`<sid>.cast`; session ids are `[A-Za-z0-9_+=,.@-]`, but never let one leave the directory."""
    name = "".join("_" if c in _UNSAFE_NAME or not c.isprintable() else c
                   for c in session_id)
    return f"{name[:200] or '_'}.cast"


class RecordingManager:
    """Creates recorders and flushes them periodically, off the relay's hot path."""

    def __init__(self, directory: Path, *, interval: float = 1.0) -> None:
        self.directory = directory
        self.interval = interval
        self._active: dict[str, Recorder] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="recording-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for rec in list(self._active.values()):
            await self.finish(rec)

    def path_for(self, session_id: str) -> Path:
        return self.directory / _file_name(session_id)

    def open(self, session_id: str, *, shell: bool) -> Recorder:
        rec = self._active.get(session_id)
        if rec is not None:
            return rec
        rec = Recorder(self.path_for(session_id) if shell else None, session_id, shell=shell)
        self._active[session_id] = rec
        return rec

    async def finish(self, rec: Recorder) -> None:
        if rec.closed:
            return
        rec.closed = True
        self._active.pop(rec.session_id, None)
        try:
            await rec.flush(final=True)
        except OSError:
            log.exception("could not write the recording of %s", rec.session_id)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for rec in list(self._active.values()):
                try:
                    await rec.flush()
                except OSError:
                    log.exception("could not write the recording of %s", rec.session_id)
