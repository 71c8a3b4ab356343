"""Session recording at the relay: asciicast v2 for shell sessions, byte counts for ports.

The relay only appends (timestamp, kind, bytes) to an in-memory list; a
background task turns them into asciicast lines and writes them to
`<data-dir>/recordings/<sid>.cast` about once a second and when the session
ends.  Nothing here runs per message except a list append.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_SIZE = (80, 24)
HEADER_WAIT_S = 5.0
"""How long events may wait for the first terminal size before the header is written."""

_MAX_PENDING_EVENTS = 200_000


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
        self._events: list[tuple[float, str, Any]] = []
        self._size: tuple[int, int] | None = None
        self._header_written = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._last_out_seq = -1
        self._last_size_seq = -1
        self._last_in_seq = -1
        self._dropped = 0
        self.closed = False

    # ----------------------------------------------------------- hot path

    def output(self, seq: int, payload: bytes) -> None:
        """Agent → client PayloadType 1/11 bytes (deduplicated by sequence number)."""
        if seq <= self._last_out_seq:
            return
        self._last_out_seq = seq
        self.bytes_out += len(payload)
        if self.shell and self.path is not None:
            if len(self._events) >= _MAX_PENDING_EVENTS:
                self._dropped += 1
                return
            self._events.append((time.monotonic() - self.started, "o", payload))

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
        if not self._header_written:
            return
        self._events.append((time.monotonic() - self.started, "r", f"{cols}x{rows}"))

    # ------------------------------------------------------------ writing

    def _render(self, final: bool) -> str:
        lines: list[str] = []
        if not self._header_written:
            if (self._size is None and not final
                    and time.monotonic() - self.started < HEADER_WAIT_S):
                return ""
            width, height = self._size or DEFAULT_SIZE
            header = {"version": 2, "width": width, "height": height,
                      "timestamp": int(self.started_wall),
                      "title": self.session_id,
                      "env": {"TERM": "xterm-256color", "SHELL": "/bin/sh"}}
            lines.append(json.dumps(header))
            self._header_written = True
        events, self._events = self._events, []
        for t, kind, data in events:
            if kind == "o":
                text = self._decoder.decode(data)
                if not text:
                    continue
                lines.append(json.dumps([round(t, 6), "o", text], ensure_ascii=False))
            else:
                lines.append(json.dumps([round(t, 6), kind, data]))
        if final:
            tail = self._decoder.decode(b"", final=True)
            if tail:
                lines.append(json.dumps([round(time.monotonic() - self.started, 6), "o", tail],
                                        ensure_ascii=False))
        return "".join(line + "\n" for line in lines)

    async def flush(self, *, final: bool = False) -> None:
        if self.path is None or not self.shell:
            return
        if not self._events and self._header_written and not final:
            return
        text = self._render(final)
        if not text:
            return
        path = self.path
        await asyncio.to_thread(_append, path, text)


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


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
        return self.directory / f"{session_id}.cast"

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
