"""ReliableChannel: the asyncio driver of a ReliableStream, against an in-memory socket.

The peer is a plain ReliableStream in the other role, so every frame the channel writes is
decoded and acknowledged exactly as a real peer would.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

import pytest

from portless.channel import ReliableChannel
from portless.protocol.message import Message, MessageType, PayloadType, decode, encode
from portless.protocol.reliable import (
    INITIAL_RTO,
    Delivered,
    ReliableStream,
    StreamConfig,
    StreamEvent,
)
from tests.waiting import wait_until

CLIENT = MessageType.INPUT_STREAM_DATA
AGENT = MessageType.OUTPUT_STREAM_DATA


class FakeSocket:
    """A FrameSocket whose incoming frames are queued by the test and whose sends are kept."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.sent: list[bytes] = []
        self.open = asyncio.Event()
        self.open.set()
        self.fail = False

    async def receive(self) -> bytes | None:
        return await self.incoming.get()

    async def send_many(self, frames: list[bytes]) -> None:
        await self.open.wait()
        if self.fail:
            raise ConnectionError("gone")
        self.sent.extend(frames)

    def data(self) -> list[tuple[int, bytes]]:
        """(sequence number, payload) of the stream data frames sent so far."""
        out = []
        for frame in self.sent:
            msg = decode(frame, verify_digest=False)
            if msg.message_type in (CLIENT, AGENT):
                out.append((msg.sequence_number, msg.payload))
        return out


class Harness:
    """One channel (client role unless told) plus what its callbacks saw."""

    def __init__(self, *, outgoing: str = CLIENT, on_lost: Callable[[], Awaitable[bool]]
                 | None = None, max_queued_bytes: int | None = None,
                 verify_digest: bool = True, **config: object) -> None:
        self.stream = ReliableStream(StreamConfig(outgoing, **config),  # type: ignore[arg-type]
                                     time.monotonic())
        self.delivered: list[bytes] = []
        self.timeouts = 0
        self.errors: list[tuple[str, Exception]] = []
        self.lost = 0
        self.on_lost = on_lost
        self.channel = ReliableChannel(
            self.stream, on_events=self.on_events, on_lost=self._lost,
            on_timeout=self._timeout, on_error=self._error, verify_digest=verify_digest,
            max_queued_bytes=max_queued_bytes, name="test")

    def on_events(self, events: list[StreamEvent]) -> Awaitable[None] | None:
        for event in events:
            if isinstance(event, Delivered):
                self.delivered.append(event.payload)
        return None

    async def _lost(self) -> bool:
        self.lost += 1
        return await self.on_lost() if self.on_lost is not None else False

    def _timeout(self) -> None:
        self.timeouts += 1

    def _error(self, what: str, exc: Exception) -> None:
        self.errors.append((what, exc))


def peer_of(outgoing: str = CLIENT, *, digest: bool = True) -> ReliableStream:
    other = AGENT if outgoing == CLIENT else CLIENT
    return ReliableStream(StreamConfig(other, digest=digest), time.monotonic())


def relay(peer: ReliableStream, sock: FakeSocket, start: int = 0) -> tuple[list[bytes], int]:
    """Feed the peer the frames `sock` sent from index `start`; queue its replies back."""
    delivered = []
    for frame in sock.sent[start:]:
        for event in peer.receive_frame(frame, time.monotonic()):
            if isinstance(event, Delivered):
                delivered.append(event.payload)
    for frame in peer.frames_to_send():
        sock.incoming.put_nowait(frame)
    return delivered, len(sock.sent)



async def test_sends_in_order_and_the_peers_acks_complete_it() -> None:
    h, sock, peer = Harness(), FakeSocket(), peer_of()
    h.channel.attach(sock)
    h.channel.start()
    try:
        for i in range(20):
            assert await h.channel.send(PayloadType.OUTPUT, b"m%d" % i)
        assert await h.channel.wait_sent(2.0)
        got, _ = relay(peer, sock)
        assert got == [b"m%d" % i for i in range(20)]
        assert await h.channel.wait_acked(2.0)
        assert h.stream.unacked == 0
    finally:
        await h.channel.stop()


async def test_incoming_data_is_acked_before_the_role_sees_it_and_delivered_in_order() -> None:
    h, sock, peer = Harness(), FakeSocket(), peer_of()
    order: list[str] = []

    async def slow(events: list[StreamEvent]) -> None:
        # The ack of this message is already queued for the socket.
        order.append(f"acks queued: {len(h.channel._queue) + len(sock.sent)}")
        await asyncio.sleep(0.005)               # a slow role: the reader must await it
        h.on_events(events)

    h.channel._on_events = slow
    h.channel.attach(sock)
    h.channel.start()
    try:
        for i in range(5):
            peer.send(PayloadType.OUTPUT, b"in%d" % i, time.monotonic())
        for frame in peer.frames_to_send():
            sock.incoming.put_nowait(frame)
        await wait_until(lambda: len(h.delivered) == 5)
        assert h.delivered == [b"in%d" % i for i in range(5)]
        assert all(not entry.endswith(": 0") for entry in order)
        await h.channel.wait_sent(2.0)
        relay(peer, sock)
        assert peer.unacked == 0
    finally:
        await h.channel.stop()


async def test_stream_back_pressure_blocks_senders_until_acks_and_end_releases_them() -> None:
    h, sock, peer = Harness(window=2, high_water=2), FakeSocket(), peer_of()
    h.channel.attach(sock)
    h.channel.start()
    try:
        assert await h.channel.send(PayloadType.OUTPUT, b"a")
        assert await h.channel.send(PayloadType.OUTPUT, b"b")
        third = asyncio.create_task(h.channel.send(PayloadType.OUTPUT, b"c"))
        await wait_until(lambda: not h.channel._room.is_set())  # third waits for room
        assert not third.done()                  # two unacked: not writable
        await h.channel.wait_sent(1.0)
        relay(peer, sock)                        # the peer acks a and b
        assert await asyncio.wait_for(third, 2.0) is True

        fourth = asyncio.create_task(h.channel.send(PayloadType.OUTPUT, b"d"))
        fifth = asyncio.create_task(h.channel.send(PayloadType.OUTPUT, b"e"))
        # d is sent (c and d unacked), e waits for room.
        await wait_until(lambda: h.stream.unacked == 2 and not h.channel._room.is_set())
        h.channel.end()
        results = await asyncio.wait_for(asyncio.gather(fourth, fifth), 2.0)
        assert False in results                  # the one still waiting is refused
        assert not await h.channel.send(PayloadType.OUTPUT, b"f")
    finally:
        await h.channel.stop()


async def test_socket_queue_bound_makes_senders_wait_for_the_writer() -> None:
    h, sock = Harness(max_queued_bytes=4000), FakeSocket()
    sock.open.clear()                            # the socket takes nothing for now
    h.channel.attach(sock)
    h.channel.start()
    try:
        assert await h.channel.send(PayloadType.OUTPUT, bytes(3000))  # taken by the writer
        await wait_until(lambda: not h.channel._queue)
        assert await h.channel.send(PayloadType.OUTPUT, bytes(3000))
        assert await h.channel.send(PayloadType.OUTPUT, bytes(3000))  # over the bound now
        blocked = asyncio.create_task(h.channel.send(PayloadType.OUTPUT, bytes(10)))
        await wait_until(lambda: not h.channel._room.is_set())  # blocked waits for room
        assert not blocked.done()
        sock.open.set()
        assert await asyncio.wait_for(blocked, 2.0) is True
        assert await h.channel.wait_sent(2.0)
        assert [len(p) for _, p in sock.data()] == [3000, 3000, 3000, 10]
    finally:
        await h.channel.stop()


async def test_reconnect_resends_unacked_with_the_same_sequence_numbers() -> None:
    second = FakeSocket()
    harness: list[Harness] = []

    async def reconnect() -> bool:
        harness[0].channel.attach(second)
        return True

    h, first, peer = Harness(on_lost=reconnect), FakeSocket(), peer_of()
    harness.append(h)
    h.channel.attach(first)
    h.channel.start()
    try:
        for i in range(3):
            await h.channel.send(PayloadType.OUTPUT, b"p%d" % i)
        await h.channel.wait_sent(1.0)
        got = [event.payload for frame in first.sent
               for event in peer.receive_frame(frame, time.monotonic())
               if isinstance(event, Delivered)]
        peer.frames_to_send()                    # p0..p2 arrived, but their acks are lost
        first.incoming.put_nowait(None)          # and the connection drops
        await wait_until(lambda: h.lost == 1)
        await h.channel.send(PayloadType.OUTPUT, b"p3")
        await h.channel.wait_sent(1.0)
        assert [seq for seq, _ in second.data()] == [0, 1, 2, 3]
        more, _ = relay(peer, second)            # duplicates are re-acked, p3 is new
        assert got + more == [b"p0", b"p1", b"p2", b"p3"]
        assert await h.channel.wait_acked(2.0)
    finally:
        await h.channel.stop()


async def test_frames_are_dropped_and_not_resent_while_detached() -> None:
    h, sock = Harness(), FakeSocket()
    h.channel.attach(sock)
    h.channel.detach()
    h.channel.start()
    try:
        assert h.channel.send_nowait(PayloadType.OUTPUT, b"x")
        await wait_until(lambda: h.channel._timer_target == math.inf)  # the timer sleeps
        # Time passing IS the scenario: beyond the initial RTO nothing may be resent.
        await asyncio.sleep(INITIAL_RTO * 1.5)
        assert sock.sent == []
        assert h.stream.unacked == 1             # kept for the next attach
        assert not await h.channel.wait_acked(1.0)
    finally:
        await h.channel.stop()


async def test_timer_resends_and_reports_when_the_peer_stops_acknowledging() -> None:
    h, sock = Harness(max_resends=2), FakeSocket()
    h.channel.attach(sock)
    h.channel.start()
    try:
        await h.channel.send(PayloadType.OUTPUT, b"lost")
        await wait_until(lambda: h.timeouts == 1, timeout=10.0)
        assert [seq for seq, _ in sock.data()] == [0, 0, 0]   # sent, then resent twice
    finally:
        await h.channel.stop()


async def test_the_timer_wakes_for_a_deadline_earlier_than_it_sleeps_for() -> None:
    h, sock = Harness(), FakeSocket()
    h.channel.attach(sock)
    h.channel.start()
    try:
        await wait_until(lambda: h.channel._timer_target == math.inf)  # sleeps with no deadline
        start = time.monotonic()
        await h.channel.send(PayloadType.OUTPUT, b"y")
        await wait_until(lambda: len(sock.data()) == 2, timeout=2.0)
        assert time.monotonic() - start < 1.0    # resent after about one RTO
    finally:
        await h.channel.stop()


async def test_malformed_and_bad_digest_frames_are_dropped_and_reading_goes_on() -> None:
    h, sock, peer = Harness(), FakeSocket(), peer_of()
    h.channel.attach(sock)
    h.channel.start()
    try:
        sock.incoming.put_nowait(b"short")
        bad = bytearray(encode(Message(AGENT, 0, 0, PayloadType.OUTPUT, b"bad")))
        bad[-1] ^= 1                             # payload no longer matches the digest
        sock.incoming.put_nowait(bytes(bad))
        peer.send(PayloadType.OUTPUT, b"good", time.monotonic())
        for frame in peer.frames_to_send():
            sock.incoming.put_nowait(frame)
        await wait_until(lambda: h.delivered == [b"good"])
        assert h.errors == []
    finally:
        await h.channel.stop()


async def test_digests_are_not_checked_when_the_role_does_not_check_them() -> None:
    h, sock = Harness(outgoing=AGENT, verify_digest=False), FakeSocket()
    h.channel.attach(sock)
    h.channel.start()
    try:
        bad = bytearray(encode(Message(CLIENT, 0, 0, PayloadType.OUTPUT, b"taken")))
        bad[-1] ^= 1
        sock.incoming.put_nowait(bytes(bad))
        await wait_until(lambda: h.delivered == [b"takeo"])
    finally:
        await h.channel.stop()


async def test_a_failing_handler_is_reported_and_a_lost_socket_without_reconnect_ends_reading(
) -> None:
    h, sock, peer = Harness(), FakeSocket(), peer_of()

    def broken(events: list[StreamEvent]) -> None:
        raise RuntimeError("handler bug")

    h.channel._on_events = broken
    h.channel.attach(sock)
    h.channel.start()
    try:
        peer.send(PayloadType.OUTPUT, b"boom", time.monotonic())
        for frame in peer.frames_to_send():
            sock.incoming.put_nowait(frame)
        await wait_until(lambda: bool(h.errors))
        assert h.errors[0][0] == "reader"
        assert str(h.errors[0][1]) == "handler bug"
    finally:
        await h.channel.stop()

    h2, sock2 = Harness(), FakeSocket()
    h2.channel.attach(sock2)
    h2.channel.start()
    try:
        sock2.incoming.put_nowait(None)
        await wait_until(lambda: h2.lost == 1)
        assert h2.channel.socket is None
    finally:
        await h2.channel.stop()


async def test_send_failures_are_survived_and_stop_cancels_every_task() -> None:
    h, sock = Harness(), FakeSocket()
    sock.fail = True
    h.channel.attach(sock)
    h.channel.start()
    await h.channel.send(PayloadType.OUTPUT, b"z")
    assert await h.channel.wait_sent(1.0)
    tasks = list(h.channel._tasks)
    await h.channel.stop()
    assert all(task.done() for task in tasks)
    assert h.errors == []


@pytest.mark.parametrize("outgoing", [CLIENT, AGENT])
async def test_a_large_transfer_in_both_roles_arrives_whole(outgoing: str) -> None:
    h, sock, peer = Harness(outgoing=outgoing, window=4), FakeSocket(), peer_of(outgoing, digest=False)
    h.channel.attach(sock)
    h.channel.reconfigure(window=8, digest=False, max_payload=4096)
    h.channel.start()
    received: list[bytes] = []
    done = asyncio.Event()

    async def pump_peer() -> None:
        start = 0
        while not done.is_set():
            got, start = relay(peer, sock, start)
            received.extend(got)
            await asyncio.sleep(0.001)           # the peer's pump: relays until told to stop

    pumper = asyncio.create_task(pump_peer())
    try:
        chunks = [bytes([i % 256]) * 4096 for i in range(300)]
        for chunk in chunks:
            assert await h.channel.send(PayloadType.OUTPUT, chunk)
        assert await h.channel.wait_acked(10.0)
        await wait_until(lambda: len(received) == len(chunks))
        assert received == chunks
    finally:
        done.set()
        await pumper
        await h.channel.stop()
