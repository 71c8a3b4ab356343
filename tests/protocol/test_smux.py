"""Tests for the sans-I/O smux session (client spec §8.5, agent spec §12.4)."""

from __future__ import annotations

import os
import random
import struct

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from portless.protocol.smux import (
    INITIAL_PEER_WINDOW,
    MAX_FRAME_LENGTH,
    V1_SEND_WINDOW,
    SmuxError,
    SmuxEvent,
    SmuxSession,
    StreamClosed,
    StreamData,
    StreamOpened,
    WindowUpdated,
)

# Verified plugin traffic for one HTTP request and a second connection (client spec §8.5).
GOLDEN_BODY = b"GET / HTTP/1.0\r\n\r\n"
GOLDEN = (
    bytes.fromhex("01 00 0000 03000000")
    + bytes.fromhex("01 02 1200 03000000")
    + GOLDEN_BODY
    + bytes.fromhex("01 01 0000 03000000")
    + bytes.fromhex("01 00 0000 05000000")
)


def frame(ver: int, cmd: int, sid: int, data: bytes = b"") -> bytes:
    return struct.pack("<BBHI", ver, cmd, len(data), sid) + data


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


def feed(session: SmuxSession, chunks: list[bytes]) -> list[SmuxEvent]:
    events: list[SmuxEvent] = []
    for c in chunks:
        events.extend(session.receive_data(c))
    return events


def pair(version: int = 1) -> tuple[SmuxSession, SmuxSession]:
    return SmuxSession(is_client=True, version=version), SmuxSession(
        is_client=False, version=version
    )


# ------------------------------------------------------------------ golden bytes


def test_golden_client_output() -> None:
    client = SmuxSession(is_client=True)
    sid = client.open_stream()
    assert sid == 3
    assert client.send(sid, GOLDEN_BODY) == len(GOLDEN_BODY)
    client.close_stream(sid)
    assert client.open_stream() == 5
    assert client.data_to_send() == GOLDEN
    assert client.data_to_send() == b""


def test_golden_server_parse_bytewise() -> None:
    server = SmuxSession(is_client=False)
    events = feed(server, [GOLDEN[i : i + 1] for i in range(len(GOLDEN))])
    assert events == [
        StreamOpened(3),
        StreamData(3, GOLDEN_BODY),
        StreamClosed(3),
        StreamOpened(5),
    ]
    assert server.open_streams == frozenset({3, 5})
    server.close_stream(3)
    assert server.data_to_send() == bytes.fromhex("01 01 0000 03000000")
    assert server.open_streams == frozenset({5})


def test_stream_id_allocation() -> None:
    client, server = pair()
    assert [client.open_stream() for _ in range(3)] == [3, 5, 7]
    assert [server.open_stream() for _ in range(3)] == [2, 4, 6]


def test_send_splits_at_max_frame_size() -> None:
    s = SmuxSession(is_client=True, max_frame_size=1000)
    sid = s.open_stream()
    s.data_to_send()
    payload = os.urandom(2500)
    assert s.send(sid, payload) == 2500
    out = s.data_to_send()
    assert out == (
        frame(1, 2, sid, payload[:1000])
        + frame(1, 2, sid, payload[1000:2000])
        + frame(1, 2, sid, payload[2000:])
    )


def test_nop_is_queued_and_ignored() -> None:
    client, server = pair()
    client.send_nop()
    nop = client.data_to_send()
    assert nop == bytes.fromhex("01 03 0000 00000000")
    assert server.receive_data(nop) == []


def test_accepts_max_length_frame() -> None:
    server = SmuxSession(is_client=False)
    body = os.urandom(MAX_FRAME_LENGTH)
    events = server.receive_data(frame(1, 0, 3) + frame(1, 2, 3, body))
    assert events == [StreamOpened(3), StreamData(3, body)]


def test_partial_frame_buffer_is_bounded() -> None:
    server = SmuxSession(is_client=False)
    body = os.urandom(MAX_FRAME_LENGTH)
    many = frame(1, 0, 3) + frame(1, 2, 3, body) * 40
    # Everything but the last byte in one chunk: only the incomplete frame is kept.
    events = server.receive_data(many[:-1])
    assert len(events) == 40
    assert len(server._rx) == 8 + MAX_FRAME_LENGTH - 1
    assert server.receive_data(many[-1:]) == [StreamData(3, body)]
    assert len(server._rx) == 0


# ------------------------------------------------------------ re-chunked transfer


def run_transfer(
    version: int, payloads: list[list[bytes]], cuts: list[int], max_frame: int
) -> None:
    client = SmuxSession(is_client=True, version=version, max_frame_size=max_frame)
    server = SmuxSession(is_client=False, version=version, max_frame_size=max_frame)
    ids = [client.open_stream() for _ in payloads]
    up = {sid: b"".join(p) for sid, p in zip(ids, payloads, strict=True)}
    down = {sid: up[sid][::-1] + b"!" for sid in ids}
    pending_up = {sid: list(p) for sid, p in zip(ids, payloads, strict=True)}
    got_server: dict[int, bytearray] = {}
    got_client: dict[int, bytearray] = {sid: bytearray() for sid in ids}
    sent_down: dict[int, int] = dict.fromkeys(ids, 0)
    server_closed: set[int] = set()
    client_closed: set[int] = set()

    for _round in range(10_000):
        progress = False
        # Client: send pending pieces (as much as the window allows), close when done.
        for sid in ids:
            q = pending_up[sid]
            while q:
                n = client.send(sid, q[0])
                if n < len(q[0]):
                    q[0] = q[0][n:]
                    break
                q.pop(0)
            if not q and sid not in client_closed:
                client.close_stream(sid)
                client_closed.add(sid)
        wire = client.data_to_send()
        for ev in feed(server, chunked(wire, cuts)):
            progress = True
            if isinstance(ev, StreamOpened):
                got_server[ev.stream_id] = bytearray()
            elif isinstance(ev, StreamData):
                got_server[ev.stream_id] += ev.data
                server.consumed(ev.stream_id, len(ev.data))
            elif isinstance(ev, StreamClosed):
                server_closed.add(ev.stream_id)
        # Server: echo the transformed payload back; FIN once everything went out.
        for sid in list(got_server):
            if sid in server.open_streams and sent_down[sid] < len(down[sid]):
                sent_down[sid] += server.send(sid, down[sid][sent_down[sid] :])
            if sent_down[sid] == len(down[sid]):
                server.close_stream(sid)
        wire = server.data_to_send()
        for ev in feed(client, chunked(wire, cuts)):
            progress = True
            if isinstance(ev, StreamData):
                got_client[ev.stream_id] += ev.data
                client.consumed(ev.stream_id, len(ev.data))
        if not progress and not wire:
            break

    assert {sid: bytes(b) for sid, b in got_server.items()} == up
    assert {sid: bytes(b) for sid, b in got_client.items()} == down
    assert server_closed == set(ids)
    assert client.open_streams == frozenset()
    assert server.open_streams == frozenset()
    assert client.receive_buffered == 0
    assert server.receive_buffered == 0


payload_lists = st.lists(
    st.lists(st.binary(min_size=0, max_size=3000), min_size=0, max_size=5),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(
    version=st.sampled_from([1, 2]),
    payloads=payload_lists,
    cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=40),
    max_frame=st.sampled_from([1, 7, 512, 32768]),
)
def test_rechunked_transfer_many_streams(
    version: int, payloads: list[list[bytes]], cuts: list[int], max_frame: int
) -> None:
    run_transfer(version, payloads, cuts, max_frame)


def test_large_transfer_v2_through_small_chunks() -> None:
    payloads = [[os.urandom(300_000), os.urandom(500_000)] for _ in range(4)]
    run_transfer(2, payloads, list(range(0, 4_000_000, 1024)), 32768)


# ----------------------------------------------------------- v2 flow control


def test_v1_has_no_window_and_sends_no_upd() -> None:
    client, server = pair(1)
    sid = client.open_stream()
    big = bytes(3 * INITIAL_PEER_WINDOW)
    assert client.send_window(sid) == V1_SEND_WINDOW
    assert client.send(sid, big) == len(big)
    events = server.receive_data(client.data_to_send())
    assert sum(len(e.data) for e in events if isinstance(e, StreamData)) == len(big)
    assert server.receive_buffered == len(big)
    server.consumed(sid, len(big))
    assert server.receive_buffered == 0
    assert server.data_to_send() == b""


def test_v2_send_limited_to_initial_window() -> None:
    client, _ = pair(2)
    sid = client.open_stream()
    assert client.send_window(sid) == INITIAL_PEER_WINDOW
    assert client.send(sid, bytes(INITIAL_PEER_WINDOW + 10)) == INITIAL_PEER_WINDOW
    assert client.send_window(sid) == 0
    assert client.send(sid, b"x") == 0


def test_v2_upd_wire_format_and_window_reopen() -> None:
    client, server = pair(2)
    sid = client.open_stream()
    client.send(sid, bytes(INITIAL_PEER_WINDOW))
    events = server.receive_data(client.data_to_send())
    assert sum(len(e.data) for e in events if isinstance(e, StreamData)) == INITIAL_PEER_WINDOW

    # The first consumption is always advertised (so the peer learns the real window).
    server.consumed(sid, 100)
    upd = server.data_to_send()
    assert upd == bytes.fromhex("02 04 0800 03000000") + struct.pack("<II", 100, 262144)
    assert client.receive_data(upd) == [WindowUpdated(sid)]
    assert client.send_window(sid) == 100

    # Further UPDs only after half a window has been consumed since the last one.
    server.consumed(sid, INITIAL_PEER_WINDOW // 2 - 1)
    assert server.data_to_send() == b""
    server.consumed(sid, 1)
    upd = server.data_to_send()
    assert upd[8:] == struct.pack("<II", 100 + INITIAL_PEER_WINDOW // 2, 262144)
    client.receive_data(upd)
    assert client.send_window(sid) == 100 + INITIAL_PEER_WINDOW // 2


def test_v2_slow_stream_stalls_only_itself() -> None:
    client, server = pair(2)
    slow, fast = client.open_stream(), client.open_stream()
    assert feed(server, [client.data_to_send()]) == [StreamOpened(slow), StreamOpened(fast)]
    slow_payload = memoryview(bytes(2 * 1024 * 1024))
    fast_payload = os.urandom(8 * 1024 * 1024)
    fast_view = memoryview(fast_payload)
    slow_off = fast_off = 0
    got_fast = bytearray()
    slow_received = 0
    window_events: set[int] = set()
    for _ in range(10_000):
        slow_off += server.send(slow, slow_payload[slow_off:])
        fast_off += server.send(fast, fast_view[fast_off:])
        wire = server.data_to_send()
        if not wire and fast_off == len(fast_payload):
            break
        for i in range(0, len(wire), 1024):  # conventional 1024-byte data-channel messages
            for ev in client.receive_data(wire[i : i + 1024]):
                assert isinstance(ev, StreamData)
                if ev.stream_id == fast:
                    got_fast += ev.data
                    client.consumed(fast, len(ev.data))
                else:
                    slow_received += len(ev.data)  # never consumed
        for ev in server.receive_data(client.data_to_send()):
            assert isinstance(ev, WindowUpdated)
            window_events.add(ev.stream_id)
    assert bytes(got_fast) == fast_payload
    assert slow_off == slow_received == INITIAL_PEER_WINDOW
    assert server.send_window(slow) == 0
    assert window_events == {fast}
    assert client.receive_buffered == INITIAL_PEER_WINDOW
    # Once the application catches up, the slow stream resumes.
    client.consumed(slow, slow_received)
    server.receive_data(client.data_to_send())
    assert server.send_window(slow) == INITIAL_PEER_WINDOW


def test_v2_upd_acknowledging_unsent_bytes_is_an_error() -> None:
    client, _ = pair(2)
    sid = client.open_stream()
    client.send(sid, b"abc")
    with pytest.raises(SmuxError):
        client.receive_data(frame(2, 4, sid, struct.pack("<II", 4, 262144)))


def test_v2_upd_for_unknown_stream_ignored() -> None:
    client, _ = pair(2)
    assert client.receive_data(frame(2, 4, 99, struct.pack("<II", 0, 1))) == []


@pytest.mark.parametrize("length", [0, 4, 9])
def test_v2_upd_wrong_length(length: int) -> None:
    _, server = pair(2)
    with pytest.raises(SmuxError):
        server.receive_data(frame(2, 4, 3, bytes(length)))


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("version", "bad"),
    [
        (1, frame(2, 0, 3)),  # v2 frame into a v1 session
        (2, frame(1, 0, 3)),  # v1 frame into a v2 session
        (1, frame(0, 3, 0)),
        (1, frame(1, 4, 3, bytes(8))),  # UPD does not exist in v1
        (1, frame(1, 5, 3)),
        (2, frame(2, 5, 3)),
        (1, frame(1, 255, 3)),
    ],
)
def test_protocol_violations(version: int, bad: bytes) -> None:
    session = SmuxSession(is_client=False, version=version)
    with pytest.raises(SmuxError):
        session.receive_data(bad)
    # The session stays failed.
    with pytest.raises(SmuxError):
        session.receive_data(b"")


def test_bad_header_detected_before_body_and_across_chunks() -> None:
    server = SmuxSession(is_client=False)
    bad = frame(9, 2, 3, bytes(1000))
    assert server.receive_data(bad[:5]) == []
    with pytest.raises(SmuxError):
        server.receive_data(bad[5:9])


def test_events_before_violation_in_earlier_chunk_are_kept() -> None:
    server = SmuxSession(is_client=False)
    assert server.receive_data(frame(1, 0, 3)) == [StreamOpened(3)]
    with pytest.raises(SmuxError):
        server.receive_data(frame(1, 7, 3))


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        SmuxSession(is_client=True, version=3)
    with pytest.raises(ValueError):
        SmuxSession(is_client=True, max_frame_size=65536)


# ----------------------------------------------------- unknown ids and lifecycle


def test_unknown_stream_frames_ignored() -> None:
    server = SmuxSession(is_client=False)
    events = server.receive_data(
        frame(1, 2, 7, b"lost")
        + frame(1, 1, 7)
        + frame(1, 3, 0)
        + frame(1, 0, 3)
        + frame(1, 2, 3, b"kept")
    )
    assert events == [StreamOpened(3), StreamData(3, b"kept")]
    assert server.receive_buffered == 4


def test_duplicate_syn_ignored() -> None:
    server = SmuxSession(is_client=False)
    events = server.receive_data(frame(1, 0, 3) + frame(1, 2, 3, b"a") + frame(1, 0, 3))
    assert events == [StreamOpened(3), StreamData(3, b"a")]


def test_local_close_then_peer_fin_releases() -> None:
    client, server = pair()
    sid = client.open_stream()
    server.receive_data(client.data_to_send())
    server.close_stream(sid)
    server.close_stream(sid)  # idempotent
    fin = server.data_to_send()
    assert fin == frame(1, 1, sid)
    assert sid in server.open_streams
    # Half-close: the server still receives what the client sends before its FIN.
    client_events = client.receive_data(fin)
    assert client_events == [StreamClosed(sid)]
    assert client.send(sid, b"late") == 4
    client.close_stream(sid)
    assert client.open_streams == frozenset()  # released at once: peer already sent FIN
    assert server.receive_data(client.data_to_send()) == [
        StreamData(sid, b"late"),
        StreamClosed(sid),
    ]
    assert server.open_streams == frozenset()


def test_peer_fin_then_data_is_discarded_and_duplicate_fin_ignored() -> None:
    server = SmuxSession(is_client=False)
    events = server.receive_data(
        frame(1, 0, 3) + frame(1, 1, 3) + frame(1, 2, 3, b"x") + frame(1, 1, 3)
    )
    assert events == [StreamOpened(3), StreamClosed(3)]
    assert server.open_streams == frozenset({3})


def test_send_on_closed_or_unknown_stream_raises() -> None:
    client = SmuxSession(is_client=True)
    sid = client.open_stream()
    client.close_stream(sid)
    with pytest.raises(ValueError):
        client.send(sid, b"x")
    with pytest.raises(ValueError):
        client.send(99, b"x")
    assert client.send_window(sid) == 0
    client.close_stream(12345)  # unknown: no-op
    assert client.data_to_send() == frame(1, 0, sid) + frame(1, 1, sid)


def test_receive_buffer_accounting_survives_release() -> None:
    server = SmuxSession(is_client=False, max_receive_buffer=10)
    server.receive_data(frame(1, 0, 3) + frame(1, 2, 3, b"0123456789"))
    assert server.receive_paused
    server.close_stream(3)
    server.receive_data(frame(1, 1, 3))
    assert server.open_streams == frozenset()
    assert server.receive_buffered == 10
    server.consumed(3, 4)
    assert not server.receive_paused
    server.consumed(3, 6)
    assert server.receive_buffered == 0
    with pytest.raises(ValueError):
        server.consumed(3, 1)
    with pytest.raises(ValueError):
        server.consumed(3, -1)


# -------------------------------------------------------------- state machine


class SmuxPair(RuleBasedStateMachine):
    """Random interleavings of open/send/close/consume/partial delivery on a v2 pair."""

    streams = Bundle("streams")

    def __init__(self) -> None:
        super().__init__()
        self.sides = [
            SmuxSession(is_client=True, version=2, max_frame_size=300),
            SmuxSession(is_client=False, version=2, max_frame_size=300),
        ]
        self.wire = [bytearray(), bytearray()]  # bytes in flight from side i
        self.sent: list[dict[int, bytearray]] = [{}, {}]
        self.received: list[dict[int, bytearray]] = [{}, {}]
        self.consumed_n: list[dict[int, int]] = [{}, {}]
        self.known: list[set[int]] = [set(), set()]
        self.local_fin: list[set[int]] = [set(), set()]
        self.remote_fin: list[set[int]] = [set(), set()]

    def _flush(self, i: int) -> None:
        self.wire[i] += self.sides[i].data_to_send()

    def _open(self, side: int) -> int:
        sid = self.sides[side].open_stream()
        self.known[side].add(sid)
        self._flush(side)
        return sid

    @initialize(target=streams)
    def open_initial(self) -> MultipleResults[int]:
        return multiple(self._open(0), self._open(1))

    @rule(target=streams, side=st.integers(0, 1))
    def open(self, side: int) -> int:
        return self._open(side)

    @rule(
        sid=streams,
        side=st.integers(0, 1),
        size=st.one_of(st.integers(0, 100), st.integers(100_000, 300_000)),
        seed=st.integers(0, 1 << 16),
    )
    def send(self, sid: int, side: int, size: int, seed: int) -> None:
        s = self.sides[side]
        if sid not in s.open_streams or sid in self.local_fin[side]:
            return
        data = random.Random(seed).randbytes(size)
        window = s.send_window(sid)
        event("send limited by window" if size > window else "send within window")
        n = s.send(sid, data)
        assert n == min(window, len(data))
        self.sent[side].setdefault(sid, bytearray()).extend(data[:n])
        self._flush(side)

    @rule(sid=streams, side=st.integers(0, 1))
    def close(self, sid: int, side: int) -> None:
        if sid in self.sides[side].open_streams:
            self.local_fin[side].add(sid)
        self.sides[side].close_stream(sid)
        self._flush(side)

    @rule(sid=streams, side=st.integers(0, 1), frac=st.floats(0, 1))
    def consume(self, sid: int, side: int, frac: float) -> None:
        have = len(self.received[side].get(sid, b"")) - self.consumed_n[side].get(sid, 0)
        n = int(have * frac)
        self.sides[side].consumed(sid, n)
        self.consumed_n[side][sid] = self.consumed_n[side].get(sid, 0) + n
        self._flush(side)

    @precondition(lambda self: self.wire[0] or self.wire[1])
    @rule(src=st.integers(0, 1), k=st.integers(1, 100_000))
    def deliver(self, src: int, k: int) -> None:
        dst = 1 - src
        chunk = bytes(self.wire[src][:k])
        del self.wire[src][:k]
        for ev in self.sides[dst].receive_data(chunk):
            if isinstance(ev, StreamOpened):
                self.known[dst].add(ev.stream_id)
            elif isinstance(ev, StreamData):
                self.received[dst].setdefault(ev.stream_id, bytearray()).extend(ev.data)
            elif isinstance(ev, StreamClosed):
                self.remote_fin[dst].add(ev.stream_id)
        self._flush(dst)

    @invariant()
    def received_is_prefix_of_sent(self) -> None:
        for dst in (0, 1):
            for sid, got in self.received[dst].items():
                assert self.sent[1 - dst].get(sid, b"").startswith(got)

    @invariant()
    def sender_respects_window(self) -> None:
        for src in (0, 1):
            for sid, data in self.sent[src].items():
                assert len(data) - self.consumed_n[1 - src].get(sid, 0) <= INITIAL_PEER_WINDOW

    @invariant()
    def open_streams_match_model(self) -> None:
        for i in (0, 1):
            expected = self.known[i] - (self.local_fin[i] & self.remote_fin[i])
            assert self.sides[i].open_streams == expected

    def _drain(self) -> None:
        for _ in range(1000):
            if not (self.wire[0] or self.wire[1]):
                return
            for src in (0, 1):
                if self.wire[src]:
                    self.deliver(src, len(self.wire[src]))

    def teardown(self) -> None:
        self._drain()
        for dst in (0, 1):
            for sid, data in self.sent[1 - dst].items():
                assert bytes(self.received[dst].get(sid, b"")) == bytes(data)
        # Liveness: once every delivered byte is consumed, no writable stream stays
        # stalled; unadvertised consumption is always below half a window.
        for side in (0, 1):
            for sid in list(self.received[side]):
                self.consume(sid, side, 1.0)
        self._drain()
        for side in (0, 1):
            s = self.sides[side]
            for sid in s.open_streams - self.local_fin[side]:
                assert s.send_window(sid) > INITIAL_PEER_WINDOW // 2


TestSmuxPair = SmuxPair.TestCase
TestSmuxPair.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
