"""ReliableStream: exactly-once in-order delivery over a hostile link, and the spec's rules."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portless.protocol.message import (
    Message,
    MessageError,
    MessageType,
    PayloadType,
    decode,
)
from portless.protocol.payloads import Acknowledge, ChannelClosed
from portless.protocol.reliable import (
    INITIAL_RTO,
    MAX_RTO,
    Acked,
    BufferFull,
    ControlReceived,
    Delivered,
    ReliableStream,
    StreamConfig,
    StreamEvent,
    StreamTimedOut,
    Writable,
)

AGENT = MessageType.OUTPUT_STREAM_DATA
CLIENT = MessageType.INPUT_STREAM_DATA


def agent(now: float = 0.0, **kw: object) -> ReliableStream:
    return ReliableStream(StreamConfig(AGENT, **kw), now)  # type: ignore[arg-type]


def client(now: float = 0.0, **kw: object) -> ReliableStream:
    return ReliableStream(StreamConfig(CLIENT, **kw), now)  # type: ignore[arg-type]


def data(seq: int, payload: bytes = b"x", mtype: str = CLIENT, ptype: int = 1) -> Message:
    return Message(mtype, seq, 0, ptype, payload)


def acks_in(frames: list[bytes]) -> list[int]:
    out = []
    for f in frames:
        m = decode(f)
        if m.message_type == MessageType.ACKNOWLEDGE:
            out.append(Acknowledge.from_json(m.payload).sequence_number)
    return out


def data_in(frames: list[bytes]) -> list[int]:
    return [m.sequence_number for m in map(decode, frames)
            if m.message_type in (AGENT, CLIENT)]


def ack_msg(seq: int, mtype: str = AGENT) -> Message:
    return Acknowledge(mtype, "00000000-0000-0000-0000-000000000000", seq).to_message()


def feed(dst: ReliableStream, frames: list[bytes], now: float) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for f in frames:
        events += dst.receive_frame(f, now)
    return events


# ------------------------------------------------------------- header rules


def test_data_and_ack_headers() -> None:
    a, c = agent(), client()
    a.send(PayloadType.HANDSHAKE_REQUEST, b"{}", 0.0)
    a.send(PayloadType.OUTPUT, b"out", 0.0)
    frames = a.frames_to_send()
    m0, m1 = decode(frames[0]), decode(frames[1])
    assert (m0.message_type, m0.sequence_number, m0.flags, m0.payload_type) == (AGENT, 0, 1, 5)
    assert (m1.sequence_number, m1.flags) == (1, 0)
    assert m0.message_id != m1.message_id
    events = feed(c, frames, 0.0)
    assert events == [Delivered(5, b"{}", 0), Delivered(1, b"out", 1)]
    acks = c.frames_to_send()
    for frame, acked in zip(acks, (m0, m1), strict=True):
        ack = decode(frame)
        assert (ack.message_type, ack.sequence_number, ack.flags, ack.payload_type) == (
            "acknowledge", 0, 3, 0)
        body = json.loads(ack.payload)
        assert list(body) == ["AcknowledgedMessageType", "AcknowledgedMessageId",
                              "AcknowledgedMessageSequenceNumber", "IsSequentialMessage"]
        assert body == {"AcknowledgedMessageType": AGENT, "AcknowledgedMessageId": acked.id_str,
                        "AcknowledgedMessageSequenceNumber": acked.sequence_number,
                        "IsSequentialMessage": True}
        assert ack.payload == Acknowledge.for_message(acked).to_json()
    c.send(PayloadType.HANDSHAKE_RESPONSE, b"{}", 0.0)
    m = decode(c.frames_to_send()[0])
    assert (m.message_type, m.sequence_number, m.flags) == (CLIENT, 0, 0)


def test_fast_path_frames_have_no_digest() -> None:
    a = agent(digest=False)
    a.send(1, b"abc", 0.0)
    frame = a.frames_to_send()[0]
    assert frame[80:112] == bytes(32)
    c = client(digest=False)
    assert feed(c, [frame], 0.0) == [Delivered(1, b"abc", 0)]
    assert c.frames_to_send()[0][80:112] == bytes(32)


def test_receive_frame_checks_digest() -> None:
    a, c = agent(), client()
    a.send(1, b"abc", 0.0)
    frame = bytearray(a.frames_to_send()[0])
    frame[-1] ^= 1
    with pytest.raises(MessageError):
        c.receive_frame(bytes(frame), 0.0)
    assert client(digest=False).receive_frame(bytes(frame), 0.0) == [Delivered(1, b"abb", 0)]


def test_send_requires_stream_type() -> None:
    with pytest.raises(ValueError):
        ReliableStream(StreamConfig("acknowledge"), 0.0)
    with pytest.raises(ValueError):
        ReliableStream(StreamConfig(AGENT, window=0), 0.0)


# ----------------------------------------------------------------- receiving


def test_out_of_order_buffered_acked_and_delivered_in_order() -> None:
    c = client(reack_duplicates=True)
    c2 = agent()
    assert c2.receive(data(2, b"c"), 0.0) == []
    assert c2.receive(data(1, b"b"), 0.0) == []
    assert acks_in(c2.frames_to_send()) == [2, 1]
    assert c2.receive(data(0, b"a"), 0.0) == [Delivered(1, b"a", 0), Delivered(1, b"b", 1),
                                              Delivered(1, b"c", 2)]
    assert acks_in(c2.frames_to_send()) == [0]
    assert c2.expected_sequence_number == 3
    del c


def test_duplicates_reacked_or_not() -> None:
    a = agent(reack_duplicates=True)
    a.receive(data(0), 0.0)
    a.frames_to_send()
    assert a.receive(data(0), 0.0) == []
    assert acks_in(a.frames_to_send()) == [0]
    a.receive(data(3), 0.0)
    a.frames_to_send()
    assert a.receive(data(3), 0.0) == []  # duplicate of a buffered one: re-acked, kept once
    assert acks_in(a.frames_to_send()) == [3]
    plugin_like = client(reack_duplicates=False)
    plugin_like.receive(data(0, mtype=AGENT), 0.0)
    plugin_like.frames_to_send()
    assert plugin_like.receive(data(0, mtype=AGENT), 0.0) == []
    assert plugin_like.frames_to_send() == []
    assert plugin_like.receive(data(-5, mtype=AGENT), 0.0) == []


def test_own_type_ignored() -> None:
    a = agent()
    assert a.receive(data(0, mtype=AGENT), 0.0) == []
    assert a.frames_to_send() == []
    assert a.expected_sequence_number == 0


def test_not_ready_withholds() -> None:
    """Client spec §6.2: in-order messages are neither acked nor kept while not ready."""
    a, c = agent(), client()
    c.accepting = False
    a.send(1, b"prompt", 0.0)
    assert feed(c, a.frames_to_send(), 0.0) == []
    assert c.frames_to_send() == []
    a.send(1, b"more", 0.01)
    assert feed(c, a.frames_to_send(), 0.01) == []  # ahead: acked and buffered
    assert acks_in(c.frames_to_send()) == [1]
    assert a.tick(0.1) == [] and a.frames_to_send() == []
    a.tick(0.2)
    resent = a.frames_to_send()
    assert data_in(resent) == [0]
    assert feed(c, resent, 0.2) == []
    c.accepting = True
    a.tick(0.3)
    assert a.frames_to_send() == []  # one resend per RTO
    a.tick(0.4)
    resent = a.frames_to_send()
    assert feed(c, resent, 0.4) == [Delivered(1, b"prompt", 0), Delivered(1, b"more", 1)]
    assert acks_in(c.frames_to_send()) == [0]


def test_reorder_buffer_limits() -> None:
    a = agent(max_reorder=2)
    a.receive(data(1), 0.0)
    a.receive(data(2), 0.0)
    a.receive(data(3), 0.0)
    assert acks_in(a.frames_to_send()) == [1, 2]  # 3 dropped without ack
    assert [e.sequence_number for e in a.receive(data(0), 0.0)
            if isinstance(e, Delivered)] == [0, 1, 2]
    assert [e.sequence_number for e in a.receive(data(3), 0.0)
            if isinstance(e, Delivered)] == [3]
    b = agent(max_reorder_bytes=10)
    b.receive(data(1, b"x" * 6), 0.0)
    b.receive(data(2, b"x" * 6), 0.0)
    assert acks_in(b.frames_to_send()) == [1]


def test_control_messages() -> None:
    a = agent()
    pause = Message(MessageType.PAUSE_PUBLICATION, 0, 3)
    start = Message(MessageType.START_PUBLICATION, 0, 3)
    assert a.receive(pause, 0.0) == [ControlReceived(pause)]
    assert a.paused and not a.writable
    a.send(1, b"q", 0.0)
    assert a.frames_to_send() == []
    assert a.receive(start, 0.0) == [ControlReceived(start), Writable()]
    assert data_in(a.frames_to_send()) == [0]
    cc = ChannelClosed("sid").to_message()
    assert a.receive(cc, 0.0) == [ControlReceived(cc)]
    assert a.closed and a.next_deadline() is None and a.tick(10.0) == []
    other = Message("agent_session_state", 0, 3)
    assert client().receive(other, 0.0) == [ControlReceived(other)]


def test_pause_cancelled_by_incoming_on_agent() -> None:
    """Agent spec §11.3: incoming input_stream_data or acknowledge cancels a pause."""
    a = agent()
    a.pause()
    a.send(1, b"x", 0.0)
    assert a.frames_to_send() == []
    assert a.receive(ack_msg(99), 0.0) == [Writable()]
    assert data_in(a.frames_to_send()) == [0]
    c = client()
    c.pause()
    c.receive(ack_msg(99, CLIENT), 0.0)
    assert c.paused


def test_pause_resume() -> None:
    a = agent()
    a.send(1, b"0", 0.0)
    assert data_in(a.frames_to_send()) == [0]
    a.pause()
    a.send(1, b"1", 0.1)
    a.send(1, b"2", 0.1)
    assert a.frames_to_send() == []
    assert a.tick(5.0) == [] and a.frames_to_send() == []  # no resend while paused
    assert a.next_deadline() is None
    a.resume(5.0)
    assert data_in(a.frames_to_send()) == [1, 2]
    a.tick(5.1)
    assert data_in(a.frames_to_send()) == [0]


# ------------------------------------------------------------------- sending


def test_unknown_and_malformed_acks_ignored() -> None:
    a = agent()
    a.send(1, b"x", 0.0)
    assert a.receive(ack_msg(5), 0.0) == []
    assert a.receive(Message("acknowledge", 0, 3, 0, b"garbage"), 0.0) == []
    assert a.receive(Message("acknowledge", 0, 3, 0, b'{"x":1}'), 0.0) == []
    assert a.unacked == 1
    # Key order and spacing of other producers go through the general parser.
    odd = Message("acknowledge", 0, 3, 0,
                  b'{ "IsSequentialMessage": true, "AcknowledgedMessageSequenceNumber": 0 }')
    assert a.receive(odd, 0.01) == [Acked(0)]
    assert a.receive(ack_msg(0), 0.02) == []  # repeated ack
    assert a.unacked == 0 and a.unacked_bytes == 0


def test_selective_acks() -> None:
    a = agent()
    for i in range(5):
        a.send(1, bytes([i]), 0.0)
    a.frames_to_send()
    assert a.receive(ack_msg(3), 0.05) == [Acked(3)]
    assert a.unacked == 4
    a.tick(1.0)
    assert data_in(a.frames_to_send()) == [0]  # oldest first, acks are not cumulative


def test_rto_evolution() -> None:
    a = agent()
    assert (a.srtt, a.rttvar, a.rto) == (0.1, 0.0, INITIAL_RTO)
    a.send(1, b"x", 0.0)
    a.receive(ack_msg(0), 0.05)
    assert a.rttvar == pytest.approx(0.0125)
    assert a.srtt == pytest.approx(0.09375)
    assert a.rto == pytest.approx(0.09375 + 0.05)
    a.send(1, b"x", 1.0)
    a.receive(ack_msg(1), 1.3)
    assert a.rttvar == pytest.approx(0.0609375)
    assert a.srtt == pytest.approx(0.11953125)
    assert a.rto == pytest.approx(0.11953125 + 4 * 0.0609375)
    a.send(1, b"x", 2.0)
    a.receive(ack_msg(2), 7.0)
    assert a.rto == MAX_RTO
    b = agent()
    for i in range(200):  # identical tiny samples: RTTVAR decays, 10 ms granularity floor
        b.send(1, b"x", float(i))
        b.receive(ack_msg(i), float(i) + 0.001)
    assert b.rto == pytest.approx(b.srtt + 0.01)
    assert b.srtt == pytest.approx(0.001, abs=1e-6)


def test_karn_skips_resent_samples() -> None:
    a = agent()
    a.send(1, b"x", 0.0)
    a.tick(0.2)
    assert data_in(a.frames_to_send()) == [0, 0]
    a.receive(ack_msg(0), 0.21)
    assert (a.srtt, a.rttvar, a.rto) == (0.1, 0.0, INITIAL_RTO)


def test_resend_schedule_and_deadline() -> None:
    a = agent()
    assert a.next_deadline() is None
    a.send(1, b"x", 0.0)
    a.frames_to_send()
    assert a.next_deadline() == pytest.approx(0.2)
    a.tick(0.1)
    assert a.frames_to_send() == []
    a.tick(0.2)
    assert data_in(a.frames_to_send()) == [0]
    assert a.next_deadline() == pytest.approx(0.4)
    a.tick(0.35)
    assert a.frames_to_send() == []
    a.tick(0.4)
    assert data_in(a.frames_to_send()) == [0]
    a.receive(ack_msg(0), 0.5)
    assert a.next_deadline() is None


def test_resend_is_identical_bytes() -> None:
    a = agent()
    a.send(1, b"payload", 0.0)
    first = a.frames_to_send()
    a.tick(0.3)
    assert a.frames_to_send() == first


def test_stream_timed_out() -> None:
    a = agent(max_resends=3)
    a.send(1, b"x", 0.0)
    a.frames_to_send()
    resends = 0
    events: list[StreamEvent] = []
    t = 0.0
    for _ in range(20):
        t += 1.0
        events += a.tick(t)
        resends += len(a.frames_to_send())
    assert resends == 3
    assert events == [StreamTimedOut()]
    assert a.timed_out and a.next_deadline() is None


def test_reconnected_resends_in_order() -> None:
    a, c = agent(), client()
    for i in range(5):
        a.send(1, bytes([i]), 0.0)
    frames = a.frames_to_send()
    feed(c, frames[:2], 0.0)
    feed(a, c.frames_to_send(), 0.01)
    a.send(1, b"late", 0.02)  # undrained: meant for the old socket
    a.reconnected(1.0)
    resent = a.frames_to_send()
    assert data_in(resent) == [2, 3, 4, 5]
    assert a.send(1, b"next", 1.0) == 6
    events = feed(c, resent + a.frames_to_send(), 1.0)
    assert [e.sequence_number for e in events if isinstance(e, Delivered)] == [2, 3, 4, 5, 6]


def test_window_limits_in_flight() -> None:
    a = agent(window=4)
    for i in range(10):
        a.send(1, bytes([i]), 0.0)
    assert data_in(a.frames_to_send()) == [0, 1, 2, 3]
    assert a.in_flight == 4 and a.unacked == 10
    assert a.receive(ack_msg(2), 0.01) == [Acked(2)]
    assert data_in(a.frames_to_send()) == [4]
    a.receive(ack_msg(0), 0.01)
    a.receive(ack_msg(1), 0.01)
    assert data_in(a.frames_to_send()) == [5, 6]
    a.reconfigure(window=None, digest=True, now=0.02)
    assert data_in(a.frames_to_send()) == [7, 8, 9]


def test_fast_path_fills_its_window_with_full_payloads() -> None:
    payload = bytes(512 * 1024)
    a = agent()
    a.reconfigure(window=32, digest=False, now=0.0, max_payload=len(payload))
    sent = 0
    while a.writable:
        a.send(1, payload, 0.0)
        sent += 1
    assert sent >= 32                     # the byte high-water mark does not cut the window
    assert len(data_in(a.frames_to_send())) == 32
    assert a.config.max_unacked_bytes == 2 * 32 * len(payload)
    b = agent()
    b.reconfigure(window=4, digest=False, now=0.0, max_payload=1024)
    assert b.config.max_unacked_bytes == 16 * 2**20   # never below the default


def test_back_pressure_bounded_when_peer_never_acks() -> None:
    a = agent(max_unacked=100, max_unacked_bytes=10_000)
    sent = 0
    while a.writable:
        a.send(1, b"x" * 10, 0.0)
        sent += 1
    assert sent == 50  # high-water mark: half of the hard limit
    with pytest.raises(BufferFull):
        for _ in range(1000):
            a.send(1, b"x" * 10, 0.0)
    assert a.unacked == 100
    frames = a.frames_to_send()
    assert len(frames) == 100
    events: list[StreamEvent] = []
    for i in range(100):
        events += a.receive(ack_msg(i), 0.1)
    assert events.count(Writable()) == 1
    assert events.index(Writable()) == 75  # after the 75th ack: down to the low-water mark (25)
    assert a.writable

    b = agent(max_unacked_bytes=1000)
    b.send(1, b"x" * 5000, 0.0)  # one oversized message into an empty buffer is allowed
    assert not b.writable
    with pytest.raises(BufferFull):
        b.send(1, b"", 0.0)

    w = agent(window=8, max_unacked_bytes=2**20)
    n = 0
    while w.writable:
        w.send(1, b"y" * 1000, 0.0)
        n += 1
    assert n == 16 and w.in_flight == 8


# -------------------------------------------------------- hostile link property


@dataclass
class Side:
    stream: ReliableStream
    expected: list[bytes] = field(default_factory=list)   # what the peer must deliver
    delivered: list[bytes] = field(default_factory=list)  # what this side delivered
    acked: list[int] = field(default_factory=list)
    wire: list[bytes] = field(default_factory=list)       # frames travelling to the peer


sizes = st.one_of(st.integers(0, 64), st.sampled_from([0, 1, 1023, 1024, 65535, 65536]),
                  st.integers(0, 65536))
_send = st.tuples(st.just("send"), st.integers(0, 1), sizes)
_deliver = st.tuples(st.just("deliver"), st.integers(0, 1), st.integers(1, 8))
actions = st.one_of(
    _send, _send, _send, _deliver, _deliver, _deliver,
    st.tuples(st.just("drop"), st.integers(0, 1), st.integers(0, 10)),
    st.tuples(st.just("dup"), st.integers(0, 1), st.integers(0, 10)),
    st.tuples(st.just("swap"), st.integers(0, 1), st.integers(0, 10)),
    st.tuples(st.just("tick"), st.integers(0, 1), st.floats(0.0, 0.5)),
    st.tuples(st.just("ready"), st.integers(0, 1), st.booleans()),
    st.tuples(st.just("pause"), st.integers(0, 1), st.booleans()),
    st.tuples(st.just("reconnect"), st.integers(0, 1), st.integers(0, 0)),
)


def run_link(script: list[tuple[str, int, object]], window: int | None, digest: bool,
             seed: int) -> None:
    rnd = random.Random(seed)
    now = 0.0
    sides = [Side(ReliableStream(StreamConfig(AGENT, window=window, digest=digest), now)),
             Side(ReliableStream(StreamConfig(CLIENT, window=window, digest=digest), now))]

    def collect(i: int, events: list[StreamEvent]) -> None:
        for ev in events:
            if isinstance(ev, Delivered):
                sides[i].delivered.append(ev.payload)
            elif isinstance(ev, Acked):
                sides[i].acked.append(ev.sequence_number)

    def pump() -> None:
        for s in sides:
            s.wire += s.stream.frames_to_send()

    def deliver(i: int, count: int) -> None:
        src, dst = sides[i], sides[1 - i]
        batch, src.wire = src.wire[:count], src.wire[count:]
        for frame in batch:
            collect(1 - i, dst.stream.receive_frame(frame, now))

    for kind, i, arg in script:
        side = sides[i]
        if kind == "send":
            payload = rnd.randbytes(int(arg))  # type: ignore[call-overload]
            side.stream.send(PayloadType.OUTPUT, payload, now)
            side.expected.append(payload)
        elif kind == "deliver":
            deliver(i, int(arg))  # type: ignore[call-overload]
        elif kind in ("drop", "dup", "swap") and side.wire:
            k = int(arg) % len(side.wire)  # type: ignore[call-overload]
            if kind == "drop":
                del side.wire[k]
            elif kind == "dup":
                side.wire.insert(k, side.wire[k])
            elif k + 1 < len(side.wire):
                side.wire[k], side.wire[k + 1] = side.wire[k + 1], side.wire[k]
        elif kind == "tick":
            now += float(arg)  # type: ignore[arg-type]
            for j, s in enumerate(sides):
                collect(j, s.stream.tick(now))
        elif kind == "ready":
            side.stream.accepting = bool(arg)
        elif kind == "pause":
            if arg:
                side.stream.pause()
            else:
                side.stream.resume(now)
        elif kind == "reconnect":
            for s in sides:
                s.wire.clear()
            for s in sides:
                s.stream.reconnected(now)
        pump()

    # Heal the link and let retransmission finish the job.
    for s in sides:
        s.stream.accepting = True
        s.stream.resume(now)
    for _ in range(400):
        pump()
        while sides[0].wire or sides[1].wire:
            deliver(0, len(sides[0].wire))
            deliver(1, len(sides[1].wire))
            pump()
        if all(s.stream.unacked == 0 for s in sides):
            break
        now += MAX_RTO
        for j, s in enumerate(sides):
            collect(j, s.stream.tick(now))
    for i, s in enumerate(sides):
        peer = sides[1 - i]
        assert peer.delivered == s.expected, "in order, exactly once"
        assert s.stream.unacked == 0 and s.stream.unacked_bytes == 0
        assert sorted(s.acked) == list(range(len(s.expected)))
        assert s.stream.next_sequence_number == len(s.expected)
        assert s.stream.in_flight == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, min_size=10, max_size=80), st.none() | st.integers(1, 4), st.booleans(),
       st.integers(0, 2**32))
def test_hostile_link_exactly_once_in_order(script: list[tuple[str, int, object]],
                                            window: int | None, digest: bool, seed: int) -> None:
    run_link(script, window, digest, seed)


@pytest.mark.parametrize("seed", range(12))
def test_hostile_link_long_random_run(seed: int) -> None:
    rnd = random.Random(seed)
    kinds = ["send"] * 5 + ["deliver"] * 4 + ["drop", "dup", "swap", "tick", "ready", "pause",
                                              "reconnect"]
    script: list[tuple[str, int, object]] = []
    for _ in range(500):
        kind = rnd.choice(kinds)
        arg: object = {"send": rnd.choice([0, 1, 10, 1024, 65536]), "deliver": rnd.randint(1, 10),
                       "tick": rnd.random() * 0.3, "ready": rnd.random() < 0.7,
                       "pause": rnd.random() < 0.3}.get(kind, rnd.randint(0, 10))
        script.append((kind, rnd.randint(0, 1), arg))
    run_link(script, [None, 1, 3, 16][seed % 4], seed % 3 == 0, seed)
