"""Client spec Appendix A replayed through the handshakes and two ReliableStreams.

"S" is the server end (agent role, output_stream_data), "C" the client (plugin role).
Every frame that crosses the simulated socket is logged and compared with the table.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from portless.protocol.handshake import (
    AgentHandshake,
    ClientHandshake,
    FastPath,
    PortMode,
    SessionParams,
)
from portless.protocol.message import Message, MessageType, PayloadType, decode, encode
from portless.protocol.payloads import (
    Acknowledge,
    ChannelClosed,
    Flag,
    HandshakeRequest,
    HandshakeResponse,
    OpenDataChannel,
    TerminalSize,
    encode_exit_code,
    encode_flag,
)
from portless.protocol.reliable import (
    Acked,
    ControlReceived,
    Delivered,
    ReliableStream,
    StreamConfig,
    StreamEvent,
)
from portless.protocol.versions import PORTLESS_AGENT_VERSION, PORTLESS_CLIENT_VERSION

OUT = MessageType.OUTPUT_STREAM_DATA
IN = MessageType.INPUT_STREAM_DATA
ACK = MessageType.ACKNOWLEDGE


@dataclass
class Row:
    direction: str
    message_type: str
    seq: int
    flags: int
    payload_type: int
    payload: bytes
    acked: int | None = None  # for acks: the acknowledged sequence number


class Session:
    """Both ends plus a socket that logs what crosses it."""

    def __init__(self, *, session_type: str, properties: object, agent_version: str,
                 client_version: str, fast: bool = False) -> None:
        self.now = 0.0
        self.log: list[Row] = []
        self.server = ReliableStream(StreamConfig(OUT, reack_duplicates=True), self.now)
        # The plugin does not re-ack duplicates (client spec §6.2).
        self.client = ReliableStream(StreamConfig(IN, reack_duplicates=False), self.now)
        self.server_events: list[StreamEvent] = []
        self.client_events: list[StreamEvent] = []
        self.agent_hs = AgentHandshake(
            session_type=session_type, properties=properties, agent_version=agent_version,
            offer_fast_path=FastPath(65536, 64, False, 2) if fast else None, now=self.now)
        self.client_hs = ClientHandshake(
            client_version=client_version,
            accept_fast_path=FastPath(65536, 64, False, 2) if fast else None)
        self.agent_params: SessionParams | None = None
        self.client_params: SessionParams | None = None

    def text(self, direction: str, text: str) -> None:
        self.log.append(Row(direction, "(text)", -1, -1, -1, text.encode()))

    def _carry(self, direction: str, frames: list[bytes], dst: ReliableStream,
               sink: list[StreamEvent]) -> list[StreamEvent]:
        got: list[StreamEvent] = []
        for frame in frames:
            m = decode(frame)
            acked = (Acknowledge.from_json(m.payload).sequence_number
                     if m.message_type == ACK else None)
            self.log.append(Row(direction, m.message_type, m.sequence_number, m.flags,
                                m.payload_type, m.payload, acked))
            got += dst.receive_frame(frame, self.now)
        sink += got
        return got

    def s2c(self) -> list[StreamEvent]:
        return self._carry("S→C", self.server.frames_to_send(), self.client, self.client_events)

    def c2s(self) -> list[StreamEvent]:
        return self._carry("C→S", self.client.frames_to_send(), self.server, self.server_events)

    def handshake(self) -> None:
        self.text("C→S", OpenDataChannel("tok", client_version=self.client_hs.client_version)
                  .to_json())
        self.server.send(PayloadType.HANDSHAKE_REQUEST, self.agent_hs.request(), self.now)
        (req,) = self.s2c()
        assert isinstance(req, Delivered) and req.payload_type == PayloadType.HANDSHAKE_REQUEST
        # The plugin acks first, then answers (client spec §6.2): the stream already queued
        # the ack, so the response follows it on the wire.
        self.client.send(PayloadType.HANDSHAKE_RESPONSE,
                         self.client_hs.receive_request(req.payload), self.now)
        (resp,) = [e for e in self.c2s() if isinstance(e, Delivered)]
        self.agent_params = self.agent_hs.receive_response(resp.payload, self.now)
        self.now += 0.001
        self.s2c()  # the ack of the response goes out before HandshakeComplete (§6.4)
        self.server.send(PayloadType.HANDSHAKE_COMPLETE, self.agent_hs.complete(self.now),
                         self.now)
        events = self.s2c()
        (done,) = [e for e in events if isinstance(e, Delivered)]
        self.client_params = self.client_hs.receive_complete(done.payload)
        assert self.agent_params == self.client_params
        self.c2s()
        self.now += 0.001

    def settle(self) -> None:
        """Exchange frames until quiet, advancing time and ticking for retransmissions."""
        for _ in range(50):
            self.s2c()
            self.c2s()
            if self.server.unacked == 0 and self.client.unacked == 0:
                return
            self.now += 0.1
            self.server.tick(self.now)
            self.client.tick(self.now)
        raise AssertionError("streams did not settle")


def summary(rows: list[Row]) -> list[tuple[str, str, int, int, int]]:
    return [(r.direction, r.message_type, r.seq, r.flags, r.payload_type) for r in rows]


def check_ack(row: Row, direction: str, acked_seq: int) -> None:
    assert (row.direction, row.message_type, row.seq, row.flags, row.payload_type) == (
        direction, ACK, 0, 3, 0)
    assert row.acked == acked_seq


def delivered(events: list[StreamEvent]) -> list[Delivered]:
    return [e for e in events if isinstance(e, Delivered)]


def test_shell_session_sequence() -> None:
    s = Session(session_type="Standard_Stream", properties=None, agent_version="3.3.40.0",
                client_version="1.2.0.0")
    s.handshake()
    log = s.log
    # Rows 1-7 of the table, exactly and with nothing in between.
    assert log[0].message_type == "(text)"
    assert json.loads(log[0].payload)["TokenValue"] == "tok"
    assert summary(log[1:2]) == [("S→C", OUT, 0, 1, 5)]
    check_ack(log[2], "C→S", 0)
    assert summary(log[3:4]) == [("C→S", IN, 0, 0, 6)]
    response = HandshakeResponse.from_json(log[3].payload)
    assert [(a.action_type, a.status) for a in response.actions] == [("SessionType", 1)]
    check_ack(log[4], "S→C", 0)
    assert summary(log[5:6]) == [("S→C", OUT, 1, 0, 7)]
    check_ack(log[6], "C→S", 1)
    assert len(log) == 7
    assert HandshakeRequest.from_json(log[1].payload).agent_version == "3.3.40.0"
    assert s.client_params is not None and s.client_params.port_mode is None

    # Row 8: the client's handler starts and reports its size; it is not ready yet for output.
    s.client.accepting = False
    s.client.send(PayloadType.SIZE, TerminalSize(300, 100).to_json(), s.now)
    # Row 9: the prompt, sent too early: not acked, retransmitted, then acked.
    s.server.send(PayloadType.OUTPUT, b"$ ", s.now)
    s.c2s()
    assert delivered(s.s2c()) == []
    s.client.accepting = True
    deadline = s.server.next_deadline()
    assert deadline is not None
    s.now = deadline
    s.server.tick(s.now)
    assert [e.payload for e in delivered(s.s2c())] == [b"$ "]
    s.c2s()
    # Row 10 and 11: keystrokes, then output, stderr and the exit code.
    s.client.send(PayloadType.OUTPUT, b"ab\n", s.now)
    s.c2s()
    s.server.send(PayloadType.OUTPUT, b"ab\r\n", s.now)
    s.server.send(PayloadType.STDERR, b"oops", s.now)
    s.server.send(PayloadType.EXIT_CODE, encode_exit_code(0), s.now)
    s.settle()
    # Row 12: channel_closed, outside the stream.
    closed = ChannelClosed("sid", "i-1").to_message()
    events = s.client.receive_frame(encode(closed), s.now)
    s.log.append(Row("S→C", closed.message_type, 0, closed.flags, 0, closed.payload))
    assert events == [ControlReceived(decode(encode(closed)))]
    assert s.client.closed

    rest = log[7:]
    table = [
        ("C→S", IN, 1, 0, 3),        # 8
        ("S→C", OUT, 2, 0, 1),       # 9 (first send, not acked)
        ("S→C", OUT, 2, 0, 1),       # 9 (retransmission)
        ("C→S", ACK, 0, 3, 0),       # 9 ack
        ("C→S", IN, 2, 0, 1),        # 10
        ("S→C", OUT, 3, 0, 1),       # 11
        ("S→C", OUT, 4, 0, 11),
        ("S→C", OUT, 5, 0, 12),
        ("S→C", "channel_closed", 0, 3, 0),  # 12
    ]
    it = iter(summary(rest))
    for expected in table:
        assert any(row == expected for row in it), f"missing {expected}"
    # Between the first send of seq 2 and its retransmission the client sent no ack for it.
    first, again = [i for i, r in enumerate(rest) if r.direction == "S→C" and r.seq == 2
                    and r.message_type == OUT]
    assert not any(r.acked == 2 and r.direction == "C→S" for r in rest[first:again])
    assert rest[first].payload == rest[again].payload
    # Every stream message was acknowledged exactly once (the plugin does not re-ack).
    c_acks = sorted(r.acked for r in log if r.direction == "C→S" and r.acked is not None)
    s_acks = sorted(r.acked for r in log if r.direction == "S→C" and r.acked is not None)
    assert c_acks == list(range(6))
    assert s_acks == list(range(3))
    payloads = [e.payload for e in delivered(s.client_events)]
    assert payloads[-3:] == [b"ab\r\n", b"oops", b"EXIT_CODE: 0"]
    assert [e.payload_type for e in delivered(s.server_events)] == [6, 3, 1]


def smux(cmd: int, sid: int, data: bytes = b"") -> bytes:
    return struct.pack("<BBHI", 1, cmd, len(data), sid) + data


def test_smux_frame_bytes_match_spec() -> None:
    assert smux(0, 3) == bytes.fromhex("0100000003000000")
    assert smux(2, 3, b"x" * 18)[:8] == bytes.fromhex("0102120003000000")
    assert smux(1, 3) == bytes.fromhex("0101000003000000")


def port_session(agent_version: str, client_version: str = "1.2.0.0",
                 fast: bool = False) -> Session:
    s = Session(session_type="Port",
                properties={"portNumber": "80", "type": "LocalPortForwarding",
                            "localPortNumber": "0"},
                agent_version=agent_version, client_version=client_version, fast=fast)
    s.handshake()
    # After the handshake: server seq 0/1 and client seq 0 used.
    assert s.server.next_sequence_number == 2 and s.client.next_sequence_number == 1
    return s


def test_mux_port_forwarding() -> None:
    s = port_session("3.3.40.0")
    assert s.agent_params is not None and s.agent_params.port_mode is PortMode.MUX
    request = b"GET / HTTP/1.1\r\n\r\n"
    assert len(request) == 18
    stream = [smux(0, 3), smux(2, 3, request), smux(1, 3), smux(0, 5), smux(1, 5)]
    for frame in stream:
        s.client.send(PayloadType.OUTPUT, frame, s.now)
    s.client.send(PayloadType.FLAG, encode_flag(Flag.TERMINATE_SESSION), s.now)
    s.settle()
    data = [r for r in s.log[7:] if r.direction == "C→S" and r.message_type == IN]
    assert [(r.seq, r.flags, r.payload_type) for r in data] == [
        (1, 0, 1), (2, 0, 1), (3, 0, 1), (4, 0, 1), (5, 0, 1), (6, 0, 10)]
    assert data[-1].payload == b"\x00\x00\x00\x02"
    got = delivered(s.server_events)[1:]  # after the HandshakeResponse
    assert b"".join(e.payload for e in got if e.payload_type == 1) == b"".join(stream)


def test_mux_frames_split_across_messages() -> None:
    """smux frames do not align with messages (client spec §8.5); the byte stream survives."""
    s = port_session(PORTLESS_AGENT_VERSION, PORTLESS_CLIENT_VERSION)
    blob = b"".join([smux(0, 3), smux(2, 3, b"y" * 3000), smux(1, 3)])
    for i in range(0, len(blob), 1024):
        s.client.send(PayloadType.OUTPUT, blob[i:i + 1024], s.now)
    s.settle()
    got = delivered(s.server_events)[1:]
    assert b"".join(e.payload for e in got) == blob
    assert [e.sequence_number for e in got] == [1, 2, 3]


def test_basic_port_forwarding() -> None:
    s = port_session("3.0.100.0")
    assert s.agent_params is not None and s.agent_params.port_mode is PortMode.BASIC
    assert s.client_params is not None and s.client_params.port_mode is PortMode.BASIC
    s.client.send(PayloadType.OUTPUT, b"GET / HTTP/1.1\r\n\r\n", s.now)
    s.server.send(PayloadType.OUTPUT, b"HTTP/1.1 200 OK\r\n\r\n", s.now)
    s.client.send(PayloadType.FLAG, encode_flag(Flag.DISCONNECT_TO_PORT), s.now)
    s.client.send(PayloadType.OUTPUT, b"second connection", s.now)
    s.client.send(PayloadType.FLAG, encode_flag(Flag.TERMINATE_SESSION), s.now)
    s.settle()
    data = [r for r in s.log[7:] if r.direction == "C→S" and r.message_type == IN]
    assert [(r.seq, r.payload_type, r.payload) for r in data] == [
        (1, 1, b"GET / HTTP/1.1\r\n\r\n"), (2, 10, b"\x00\x00\x00\x01"),
        (3, 1, b"second connection"), (4, 10, b"\x00\x00\x00\x02")]
    out = [r for r in s.log[7:] if r.direction == "S→C" and r.message_type == OUT]
    assert [(r.seq, r.flags, r.payload_type) for r in out] == [(2, 0, 1)]


def test_portless_pair_switches_to_fast_path() -> None:
    """Same table with an extra action; after the handshake both streams drop digests."""
    s = port_session(PORTLESS_AGENT_VERSION, PORTLESS_CLIENT_VERSION, fast=True)
    params = s.agent_params
    assert params is not None and params.fast_path == FastPath(65536, 64, False, 2)
    assert [a.action_type for a in HandshakeRequest.from_json(s.log[1].payload).actions] == [
        "SessionType", "PortlessFastPath"]
    for stream in (s.server, s.client):
        stream.reconfigure(window=params.fast_path.window, digest=params.fast_path.digest,
                           now=s.now)
    blob = bytes(range(256)) * 256
    for _ in range(100):
        s.server.send(PayloadType.OUTPUT, blob, s.now)
    assert s.server.in_flight == 64
    s.s2c()
    fast_rows = [r for r in s.log if r.direction == "S→C" and r.seq >= 2]
    assert len(fast_rows) == 64
    s.c2s()
    assert s.server.in_flight == 36
    for f in s.server.frames_to_send() + s.client.frames_to_send():
        assert f[80:112] == bytes(32)  # neither data nor acks carry a digest now
    s.server.reconnected(s.now)  # the frames just drained were lost with the old socket
    s.settle()
    assert sum(isinstance(e, Acked) for e in s.client_events) == 1  # only the response ack
    assert len([e for e in delivered(s.client_events) if e.payload == blob]) == 100


def test_stray_messages_ignored_like_the_plugin() -> None:
    """input_stream_data sent to the client is ignored; unknown types are only reported."""
    s = port_session("3.3.40.0")
    stray = Message(IN, 1, 0, 1, b"x")
    assert s.client.receive(stray, s.now) == []
    odd = Message("agent_session_state", 0, 3, 0, b"{}")
    assert s.client.receive(odd, s.now) == [ControlReceived(odd)]
    assert s.client.frames_to_send() == []
