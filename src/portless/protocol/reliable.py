"""The reliable ordered stream of a data channel, sans-I/O, for both client and agent.

Each direction numbers its stream messages from 0, the receiver acknowledges every message
it accepts, and the sender keeps each message until acknowledged, resending the oldest one
when its retransmission timeout expires (client spec §6, agent spec §11.3-§11.4).  The
class is fed decoded messages and the current time and hands back events and encoded
frames; the caller owns sockets and timers.
"""

from __future__ import annotations

import os
import re
from collections import deque
from dataclasses import dataclass
from typing import Final

from portless.protocol.message import (
    FLAG_SYN,
    FLAGS_SINGLE_SHOT,
    Message,
    MessageType,
    PayloadType,
    decode,
    encode,
)
from portless.protocol.payloads import Acknowledge, PayloadError

INITIAL_SRTT: Final = 0.1
INITIAL_RTTVAR: Final = 0.0
INITIAL_RTO: Final = 0.2
RTT_GAIN: Final = 0.125
RTTVAR_GAIN: Final = 0.25
CLOCK_GRANULARITY: Final = 0.01
MAX_RTO: Final = 1.0

# The exact form both Go peers and we produce (client spec §5.2); others take the slow path.
_CANONICAL_ACK: Final = re.compile(
    rb'\{"AcknowledgedMessageType":"[a-z_]*","AcknowledgedMessageId":"[0-9a-f-]*",'
    rb'"AcknowledgedMessageSequenceNumber":(-?[0-9]{1,19}),"IsSequentialMessage":true\}')
_DATA_TYPES: Final = frozenset({MessageType.INPUT_STREAM_DATA, MessageType.OUTPUT_STREAM_DATA})


class BufferFull(Exception):
    """`send` would exceed the hard limits on unacknowledged messages or bytes."""


@dataclass(slots=True)
class StreamConfig:
    """Tuning of one `ReliableStream`; the defaults are the stock behaviour."""

    outgoing_type: str
    """`input_stream_data` on the client, `output_stream_data` on the agent."""
    max_unacked: int = 10000
    max_unacked_bytes: int = 16 * 2**20
    window: int | None = None
    """Fast path: at most this many messages sent and unacknowledged; None sends at once."""
    max_reorder: int = 10000
    max_reorder_bytes: int = 16 * 2**20
    digest: bool = True
    """Compute the SHA-256 on send and verify it in `receive_frame` (off on the fast path)."""
    reack_duplicates: bool = True
    max_resends: int = 3000
    tick_interval: float = 0.1
    high_water: int | None = None
    """Buffered messages at which `writable` turns False; None: 2*window or max_unacked/2."""
    high_water_bytes: int | None = None
    """Buffered bytes at which `writable` turns False; None: max_unacked_bytes/2."""


# ----------------------------------------------------------------------- events


@dataclass(slots=True)
class Delivered:
    """An incoming stream message, handed over strictly in order and exactly once."""

    payload_type: int
    payload: bytes
    sequence_number: int


@dataclass(slots=True)
class Acked:
    """The peer acknowledged one of our stream messages."""

    sequence_number: int


@dataclass(slots=True)
class ControlReceived:
    """A message that is neither stream data nor an acknowledgement (channel_closed, ...)."""

    message: Message


@dataclass(slots=True)
class StreamTimedOut:
    """One message was resent `max_resends` times without an acknowledgement."""


@dataclass(slots=True)
class Writable:
    """Back-pressure cleared: the caller may read from its source again."""


StreamEvent = Delivered | Acked | ControlReceived | StreamTimedOut | Writable


class _Pending:
    """One unacknowledged outgoing message: its encoded frame and timers."""

    __slots__ = ("frame", "in_flight", "last_sent", "resends", "resent", "size")

    def __init__(self, frame: bytes, size: int) -> None:
        self.frame = frame
        self.size = size
        self.last_sent = 0.0
        self.in_flight = False
        self.resent = False
        self.resends = 0


class ReliableStream:
    """Sequencing, acknowledgement, reordering and retransmission for one data channel.

    Feed it every decoded message of the channel (`receive`), the passage of time (`tick`,
    at `next_deadline`) and connection changes (`reconnected`, `pause`, `resume`); send
    payloads with `send`; write out whatever `frames_to_send` returns, in order.
    """

    def __init__(self, config: StreamConfig, now: float) -> None:
        if config.outgoing_type not in _DATA_TYPES:
            raise ValueError(f"outgoing_type must be a stream data type: {config.outgoing_type}")
        if config.window is not None and config.window < 1:
            raise ValueError("window must be at least 1")
        self.config = config
        self._outgoing = config.outgoing_type
        self._incoming = (MessageType.INPUT_STREAM_DATA
                          if config.outgoing_type == MessageType.OUTPUT_STREAM_DATA
                          else MessageType.OUTPUT_STREAM_DATA)
        # Only the agent marks its first stream message SYN (agent spec §9.1).
        self._syn_first = config.outgoing_type == MessageType.OUTPUT_STREAM_DATA
        self._agent_role = self._syn_first

        self.accepting = True
        """When False, in-order messages are neither acknowledged nor delivered."""
        self.paused = False
        self.closed = False
        """Set on channel_closed: nothing is resent any more."""
        self.timed_out = False

        self.srtt = INITIAL_SRTT
        self.rttvar = INITIAL_RTTVAR
        self.rto = INITIAL_RTO

        # Sending side.
        self._next_seq = 0
        self._unacked: dict[int, _Pending] = {}
        self._unacked_bytes = 0
        self._order: deque[int] = deque()      # unacked seqs, oldest first (lazy removal)
        self._queue: deque[int] = deque()      # numbered but not yet sent (lazy removal)
        self._in_flight = 0
        self._blocked = False
        self._last_tick = now

        # Receiving side.
        self._expected = 0
        self._reorder: dict[int, Message] = {}
        self._reorder_bytes = 0

        self._out: list[bytes] = []
        self._configure_marks()

    # ------------------------------------------------------------------ config

    def _configure_marks(self) -> None:
        cfg = self.config
        if cfg.high_water is not None:
            high = cfg.high_water
        elif cfg.window is not None:
            high = 2 * cfg.window
        else:
            high = cfg.max_unacked // 2
        self._high = max(1, min(high, cfg.max_unacked))
        self._low = self._high // 2
        hb = cfg.high_water_bytes if cfg.high_water_bytes is not None else cfg.max_unacked_bytes // 2
        self._high_bytes = max(1, min(hb, cfg.max_unacked_bytes))
        self._low_bytes = self._high_bytes // 2

    def reconfigure(self, *, window: int | None, digest: bool, now: float,
                    max_payload: int | None = None) -> None:
        """Switch pacing and digests after the handshake agreed on the fast path.

        With `max_payload` (the fast path's message size) the byte limits grow so that a
        whole window of full messages fits below the byte high-water mark; memory stays
        bounded at 2 * window * max_payload (or the configured limit if larger).
        """
        if window is not None and window < 1:
            raise ValueError("window must be at least 1")
        self.config.window = window
        self.config.digest = digest
        if window is not None and max_payload is not None and max_payload > 0:
            cfg = self.config
            cfg.max_unacked_bytes = max(cfg.max_unacked_bytes, 2 * window * max_payload)
        self._configure_marks()
        self._pump(now)

    # ----------------------------------------------------------------- sending

    @property
    def next_sequence_number(self) -> int:
        return self._next_seq

    @property
    def expected_sequence_number(self) -> int:
        return self._expected

    @property
    def unacked(self) -> int:
        """Messages kept for retransmission (in flight plus queued)."""
        return len(self._unacked)

    @property
    def unacked_bytes(self) -> int:
        return self._unacked_bytes

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def writable(self) -> bool:
        """False while the caller should stop reading its source (back-pressure or pause)."""
        return not self._blocked and not self.paused

    def send(self, payload_type: int, payload: bytes, now: float) -> int:
        """Number, encode and (window and pause permitting) send one stream message."""
        size = len(payload)
        if self._unacked and (len(self._unacked) >= self.config.max_unacked
                              or self._unacked_bytes + size > self.config.max_unacked_bytes):
            raise BufferFull(f"{len(self._unacked)} messages / {self._unacked_bytes} bytes "
                             "unacknowledged")
        seq = self._next_seq
        self._next_seq = seq + 1
        msg = Message(self._outgoing, seq, FLAG_SYN if seq == 0 and self._syn_first else 0,
                      payload_type, payload, os.urandom(16))
        pending = _Pending(encode(msg, digest=self.config.digest), size)
        self._unacked[seq] = pending
        self._unacked_bytes += size
        self._order.append(seq)
        window = self.config.window
        if self._queue or self.paused or (window is not None and self._in_flight >= window):
            self._queue.append(seq)
        else:
            pending.in_flight = True
            pending.last_sent = now
            self._in_flight += 1
            self._out.append(pending.frame)
        if not self._blocked and (len(self._unacked) >= self._high
                                  or self._unacked_bytes >= self._high_bytes):
            self._blocked = True
        return seq

    def _pump(self, now: float) -> None:
        """Send queued messages while the window has room and publication is not paused."""
        if self.paused:
            return
        queue, unacked, window = self._queue, self._unacked, self.config.window
        while queue and (window is None or self._in_flight < window):
            pending = unacked.get(queue.popleft())
            if pending is None:     # acknowledged while queued (a late ack after reconnect)
                continue
            pending.in_flight = True
            pending.last_sent = now
            self._in_flight += 1
            self._out.append(pending.frame)

    def _oldest(self) -> _Pending | None:
        order, unacked = self._order, self._unacked
        while order:
            pending = unacked.get(order[0])
            if pending is not None:
                return pending
            order.popleft()
        return None

    # --------------------------------------------------------------- receiving

    def receive_frame(self, frame: bytes, now: float) -> list[StreamEvent]:
        """Decode one binary frame (checking the digest unless disabled) and `receive` it.

        Raises `MessageError` for a malformed frame; the plugin drops such frames silently.
        """
        return self.receive(decode(frame, verify_digest=self.config.digest), now)

    def receive(self, msg: Message, now: float) -> list[StreamEvent]:
        """Process one incoming message of the channel and return what happened."""
        mtype = msg.message_type
        if mtype == self._incoming:
            if self.paused and self._agent_role:
                # The stock agent lets any incoming data or ack cancel a pause (agent §11.3).
                return self._resume_events(now) + self._receive_data(msg)
            return self._receive_data(msg)
        if mtype == MessageType.ACKNOWLEDGE:
            if self.paused and self._agent_role:
                return self._resume_events(now) + self._receive_ack(msg, now)
            return self._receive_ack(msg, now)
        if mtype == self._outgoing:
            return []  # our own type echoed back: the plugin and the agent ignore it
        events: list[StreamEvent] = [ControlReceived(msg)]
        if mtype == MessageType.PAUSE_PUBLICATION:
            self.pause()
        elif mtype == MessageType.START_PUBLICATION:
            events += self._resume_events(now)
        elif mtype == MessageType.CHANNEL_CLOSED:
            self.closed = True
        return events

    def _resume_events(self, now: float) -> list[StreamEvent]:
        was_writable = self.writable
        self.resume(now)
        return [Writable()] if not was_writable and self.writable else []

    def _ack(self, msg: Message) -> None:
        # Same bytes as payloads.Acknowledge.to_json, formatted directly: this is per message.
        h = msg.message_id.hex()
        body = (f'{{"AcknowledgedMessageType":"{self._incoming}","AcknowledgedMessageId":'
                f'"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",'
                f'"AcknowledgedMessageSequenceNumber":{msg.sequence_number},'
                f'"IsSequentialMessage":true}}').encode()
        frame = encode(Message(MessageType.ACKNOWLEDGE, 0, FLAGS_SINGLE_SHOT, PayloadType.NONE,
                               body, os.urandom(16)), digest=self.config.digest)
        self._out.append(frame)

    def _receive_data(self, msg: Message) -> list[StreamEvent]:
        seq = msg.sequence_number
        expected = self._expected
        if seq == expected:
            if not self.accepting:
                return []  # "not ready": no ack, not kept; the peer resends (client §6.2)
            self._ack(msg)
            events: list[StreamEvent] = [Delivered(msg.payload_type, msg.payload, seq)]
            expected += 1
            reorder = self._reorder
            while reorder:
                nxt = reorder.pop(expected, None)
                if nxt is None:
                    break
                self._reorder_bytes -= len(nxt.payload)
                events.append(Delivered(nxt.payload_type, nxt.payload, expected))
                expected += 1
            self._expected = expected
            return events
        if seq > expected:
            if seq in self._reorder:
                if self.config.reack_duplicates:
                    self._ack(msg)
            elif (len(self._reorder) < self.config.max_reorder
                  and self._reorder_bytes + len(msg.payload) <= self.config.max_reorder_bytes):
                self._reorder[seq] = msg
                self._reorder_bytes += len(msg.payload)
                self._ack(msg)
            # else: buffer full, drop without ack so that the peer resends it later
            return []
        if self.config.reack_duplicates:
            self._ack(msg)
        return []

    def _receive_ack(self, msg: Message, now: float) -> list[StreamEvent]:
        match = _CANONICAL_ACK.fullmatch(msg.payload)
        if match is not None:
            seq = int(match[1])
        else:
            try:
                seq = Acknowledge.from_json(msg.payload).sequence_number
            except PayloadError:
                return []
        pending = self._unacked.pop(seq, None)
        if pending is None:
            return []  # unknown or repeated ack: ignored
        self._unacked_bytes -= pending.size
        if pending.in_flight:
            pending.in_flight = False
            self._in_flight -= 1
            if not pending.resent:  # Karn: an ack of a resent message is ambiguous
                self._update_rtt(now - pending.last_sent)
        events: list[StreamEvent] = [Acked(seq)]
        if self._queue:
            self._pump(now)
        if (self._blocked and len(self._unacked) <= self._low
                and self._unacked_bytes <= self._low_bytes):
            self._blocked = False
            if not self.paused:
                events.append(Writable())
        return events

    def _update_rtt(self, sample: float) -> None:
        sample = max(sample, 0.0)
        self.rttvar = (1 - RTTVAR_GAIN) * self.rttvar + RTTVAR_GAIN * abs(self.srtt - sample)
        self.srtt = (1 - RTT_GAIN) * self.srtt + RTT_GAIN * sample
        self.rto = min(self.srtt + max(CLOCK_GRANULARITY, 4 * self.rttvar), MAX_RTO)

    # -------------------------------------------------------------------- time

    def tick(self, now: float) -> list[StreamEvent]:
        """Resend the oldest unacknowledged message if its RTO expired (once per RTO).

        Returns `[StreamTimedOut()]` once, when that message was already resent
        `max_resends` times; resending then stops.
        """
        self._last_tick = now
        if self.paused or self.closed or self.timed_out:
            return []
        head = self._oldest()
        if head is None or not head.in_flight or now - head.last_sent < self.rto:
            return []
        if head.resends >= self.config.max_resends:
            self.timed_out = True
            return [StreamTimedOut()]
        head.resends += 1
        head.resent = True
        head.last_sent = now  # agent semantics: next resend one RTO later (agent §11.4)
        self._out.append(head.frame)
        return []

    def next_deadline(self) -> float | None:
        """When `tick` should next be called; None when nothing awaits an ack."""
        if self.paused or self.closed or self.timed_out:
            return None
        head = self._oldest()
        if head is None or not head.in_flight:
            return None
        return max(head.last_sent + self.rto, self._last_tick + self.config.tick_interval)

    # --------------------------------------------------------- connection life

    def reconnected(self, now: float) -> None:
        """A new socket replaced the old one: resend every unacked message, in order.

        Frames not yet drained were meant for the old socket and are discarded; lost acks
        are recovered because the peer resends and we re-ack duplicates.
        """
        self._out = []
        self._queue.clear()
        self._in_flight = 0
        for seq in self._order:
            pending = self._unacked.get(seq)
            if pending is not None:
                pending.in_flight = False
                pending.resent = True
                self._queue.append(seq)
        self._order = deque(self._queue)
        self._pump(now)

    def pause(self) -> None:
        """pause_publication: stop sending and resending; new messages are queued."""
        self.paused = True

    def resume(self, now: float) -> None:
        """start_publication: send what was queued while paused."""
        self.paused = False
        self._pump(now)

    # ------------------------------------------------------------------ output

    def frames_to_send(self) -> list[bytes]:
        """Drain the encoded frames (data, acks, resends) in the order they must go out."""
        out = self._out
        self._out = []
        return out
