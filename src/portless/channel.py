"""The asyncio driver of a data channel's ReliableStream, shared by the agent and the client.

`portless.protocol.reliable.ReliableStream` is sans-I/O: it numbers, acknowledges and
resends, but owns no socket and no clock.  `ReliableChannel` is its one thin I/O shell:
a reader task feeds incoming frames to the stream and hands the events to the role, a
writer task puts outgoing frames on the socket in order, a timer task resends at the
stream's deadlines, senders wait while the stream is backed up, and a replacement socket
(`attach`) keeps the sequence numbers, the stream resending whatever is unacknowledged.
How to reconnect and what the delivered data means stay with the role (agent or client).

The reader never waits for the writer, so a peer that is slow to read cannot stop us from
reading its acknowledgements.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Protocol

from portless.aio import wait_event
from portless.protocol.message import MessageError, decode
from portless.protocol.reliable import BufferFull, ReliableStream, StreamEvent

log = logging.getLogger(__name__)


class FrameSocket(Protocol):
    """One connection of a data channel, as the channel drives it."""

    async def receive(self) -> bytes | None:
        """The next binary (or text, as UTF-8) frame; None once the connection is gone."""

    async def send_many(self, frames: list[bytes]) -> None:
        """Send `frames` in order; raises if the connection failed."""


EventHandler = Callable[[list[StreamEvent]], Awaitable[None] | None]
"""Takes the events of one incoming frame; an awaitable it returns is awaited before the
next frame is read (the back-pressure for incoming data)."""


class ReliableChannel:
    """Runs one ReliableStream over a replaceable FrameSocket with three asyncio tasks.

    The role supplies callbacks: `on_events` for what the stream delivers, `on_lost` to
    reconnect (it calls `attach` and returns True, or returns False to stop reading),
    `on_timeout` when the peer stopped acknowledging, `on_error` when a task crashed.
    """

    def __init__(self, stream: ReliableStream, *, on_events: EventHandler,
                 on_lost: Callable[[], Awaitable[bool]], on_timeout: Callable[[], None],
                 on_error: Callable[[str, Exception], None], verify_digest: bool,
                 max_queued_bytes: int | None = None, name: str = "data channel") -> None:
        self.stream = stream
        self.name = name
        self._on_events = on_events
        self._on_lost = on_lost
        self._on_timeout = on_timeout
        self._on_error = on_error
        self._verify_digest = verify_digest
        """Check incoming digests while the stream uses them (the plugin does, agents do not)."""
        self._max_queued = max_queued_bytes
        """Encoded bytes waiting for the socket at which `send` waits; None: no such bound."""
        self._loop = asyncio.get_running_loop()
        self._sock: FrameSocket | None = None
        self._ended = False
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        self._writer_wake = asyncio.Event()
        self._sent = asyncio.Event()
        self._sent.set()
        self._room = asyncio.Event()
        self._room.set()
        self._acked = asyncio.Event()
        self._timer_wake = asyncio.Event()
        self._timer_target: float | None = None
        """The deadline the sleeping timer waits for (inf: none); None while it runs."""
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ state

    @property
    def socket(self) -> FrameSocket | None:
        """The connection frames go to now; None between a loss and the next `attach`."""
        return self._sock

    @property
    def ended(self) -> bool:
        return self._ended

    def attach(self, sock: FrameSocket) -> None:
        """Use `sock` from now on; everything unacknowledged is sent again on it, in order.

        Frames still queued were meant for the old connection and are discarded.
        """
        self._sock = sock
        self._queue = []
        self._queued_bytes = 0
        self.stream.reconnected(self._loop.time())
        self.flush()
        self._room.set()
        self._poke_timer()

    def detach(self) -> None:
        """The connection is gone: frames are dropped and nothing is resent until `attach`."""
        self._sock = None
        self._acked.set()

    def end(self) -> None:
        """Refuse further `send`s and wake those waiting; the tasks keep running (to drain)."""
        self._ended = True
        self._room.set()

    def start(self) -> None:
        """Start the reader, writer and timer tasks (after the first `attach`)."""
        self._tasks = [
            asyncio.create_task(self._guard("reader", self._read_loop), name=f"{self.name} reader"),
            asyncio.create_task(self._guard("writer", self._write_loop), name=f"{self.name} writer"),
            asyncio.create_task(self._guard("timer", self._timer_loop), name=f"{self.name} timer"),
        ]

    async def stop(self) -> None:
        """Cancel the tasks and wait until they are gone."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _guard(self, what: str, run: Callable[[], Awaitable[None]]) -> None:
        try:
            await run()
        except Exception as exc:
            self._on_error(what, exc)

    # ---------------------------------------------------------------- sending

    async def send(self, payload_type: int, payload: bytes) -> bool:
        """Send one stream message, waiting while the stream (or socket queue) is full.

        Returns False, sending nothing, once the channel has `end`ed.
        """
        stream, limit, room = self.stream, self._max_queued, self._room
        while True:
            if self._ended:
                return False
            if stream.writable and (limit is None or self._queued_bytes < limit):
                try:
                    stream.send(payload_type, payload, self._loop.time())
                except BufferFull:
                    pass
                else:
                    break
            room.clear()
            await room.wait()
        self.flush()
        self._poke_timer()
        return True

    def send_nowait(self, payload_type: int, payload: bytes) -> bool:
        """Send a small control message without waiting; False if the stream had no room."""
        try:
            self.stream.send(payload_type, payload, self._loop.time())
        except BufferFull:
            return False
        self.flush()
        self._poke_timer()
        return True

    def reconfigure(self, *, window: int | None, digest: bool, max_payload: int | None) -> None:
        """Switch the stream to the pacing and digests the handshake agreed on."""
        self.stream.reconfigure(window=window, digest=digest, now=self._loop.time(),
                                max_payload=max_payload)
        self.flush()
        if self.stream.writable:
            self._room.set()
        self._poke_timer()

    def flush(self) -> None:
        """Queue whatever the stream produced (data, acks, resends) for the writer."""
        frames = self.stream.frames_to_send()
        if not frames:
            return
        size = 0
        for frame in frames:
            size += len(frame)
        if self._queue:
            self._queue += frames
        else:
            self._queue = frames
        self._queued_bytes += size
        self._sent.clear()
        self._writer_wake.set()

    async def wait_acked(self, timeout: float) -> bool:
        """Wait at most `timeout` s until the peer acknowledged everything we sent.

        Returns early, False, when the connection is lost; True once nothing is unacked.
        """
        deadline = self._loop.time() + timeout
        while self.stream.unacked and self._sock is not None:
            self._acked.clear()
            if not await wait_event(self._acked, deadline - self._loop.time()):
                break
        return not self.stream.unacked

    async def wait_sent(self, timeout: float) -> bool:
        """Wait at most `timeout` s until every queued frame was handed to the socket."""
        self.flush()
        return await wait_event(self._sent, timeout)

    async def _write_loop(self) -> None:
        wake, limit = self._writer_wake, self._max_queued
        while True:
            frames = self._queue
            if not frames:
                self._sent.set()
                wake.clear()
                await wake.wait()
                continue
            self._queue = []
            if limit is not None and self._queued_bytes >= limit:
                self._room.set()
            self._queued_bytes = 0
            sock = self._sock
            if sock is None:
                continue        # meant for a lost connection: resent after `attach`
            try:
                await sock.send_many(frames)
            except Exception as exc:
                # The reader notices the dead socket and reconnects; unacked data is resent.
                log.debug("%s: send failed: %s", self.name, exc)

    # ------------------------------------------------------------------ timer

    def _poke_timer(self) -> None:
        """Wake the sleeping timer if the stream's next deadline is now earlier."""
        target = self._timer_target
        if target is not None:
            deadline = self.stream.next_deadline()
            if deadline is not None and deadline < target:
                self._timer_wake.set()

    async def _timer_loop(self) -> None:
        loop, stream, wake = self._loop, self.stream, self._timer_wake
        while True:
            # Nothing is resent while there is no connection: `attach` resends it all.
            deadline = stream.next_deadline() if self._sock is not None else None
            if deadline is None or deadline > loop.time():
                wake.clear()
                self._timer_target = math.inf if deadline is None else deadline
                try:
                    await wait_event(wake, None if deadline is None else deadline - loop.time())
                finally:
                    self._timer_target = None
                continue
            events = stream.tick(loop.time())
            self.flush()
            if events:              # only ever StreamTimedOut
                self._on_timeout()

    # ---------------------------------------------------------------- reading

    async def _read_loop(self) -> None:
        on_events = self._on_events
        while True:
            sock = self._sock
            if sock is None:
                return
            frame = await sock.receive()
            if frame is None:
                self.detach()
                if not await self._on_lost():
                    return
                continue
            events = self._receive(frame)
            if events:
                pending = on_events(events)
                if pending is not None:
                    await pending

    def _receive(self, frame: bytes) -> list[StreamEvent]:
        """Feed one frame to the stream; its acks are queued before the role sees the events."""
        stream = self.stream
        try:
            # Like the plugin and the agent: PayloadLength and PayloadType are not checked.
            msg = decode(frame, verify_digest=self._verify_digest and stream.config.digest,
                         strict=False)
        except MessageError as exc:
            log.debug("%s: dropped a malformed frame: %s", self.name, exc)
            return []
        events = stream.receive(msg, self._loop.time())
        self.flush()
        if stream.writable:
            self._room.set()
        if not stream.unacked:
            self._acked.set()
        self._poke_timer()
        return events
