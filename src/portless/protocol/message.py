"""The binary message of the Session Manager data and control channels.

One layout serves both halves (the plugin calls it ClientMessage, the agent
AgentMessage): a 120-byte header followed by the payload.  Layout and quirks are
in shared/spec/ssm-client-protocol.md §4 and ssm-agent-protocol.md §9.
"""

from __future__ import annotations

import hashlib
import struct
import time
import uuid
from dataclasses import dataclass, field
from enum import IntEnum

HEADER_LENGTH = 116
"""Value of the HeaderLength field: the offset of PayloadLength, not the header size."""

FRAME_OVERHEAD = 120
"""Bytes before the payload: HeaderLength + the 4-byte PayloadLength field."""

MESSAGE_TYPE_SIZE = 32
SCHEMA_VERSION = 1

EMPTY_DIGEST = hashlib.sha256(b"").digest()
NO_DIGEST = bytes(32)
"""Digest field used on the portless fast path, where neither end computes it."""

# HeaderLength, MessageType, SchemaVersion, CreatedDate, SequenceNumber, Flags,
# MessageId (halves swapped), PayloadDigest, PayloadType, PayloadLength.
_HEADER = struct.Struct(">I32sIQqQ16s32sII")
assert _HEADER.size == FRAME_OVERHEAD


class MessageType:
    """MessageType strings seen on the data and control channels."""

    INPUT_STREAM_DATA = "input_stream_data"
    OUTPUT_STREAM_DATA = "output_stream_data"
    ACKNOWLEDGE = "acknowledge"
    CHANNEL_CLOSED = "channel_closed"
    START_PUBLICATION = "start_publication"
    PAUSE_PUBLICATION = "pause_publication"
    AGENT_SESSION_STATE = "agent_session_state"
    INTERACTIVE_SHELL = "interactive_shell"
    AGENT_TASK_COMPLETE = "agent_task_complete"
    AGENT_TASK_ACKNOWLEDGE = "agent_task_acknowledge"
    AGENT_JOB = "agent_job"
    AGENT_JOB_ACK = "agent_job_ack"
    AGENT_JOB_REPLY = "agent_job_reply"
    AGENT_JOB_REPLY_ACK = "agent_job_reply_ack"
    AGENT_TELEMETRY = "agent_telemetry"
    AGENT_UPDATE_RESULT = "agent_update_result"


class PayloadType(IntEnum):
    """PayloadType values (client spec §4.3); 0 is used by acks and control messages."""

    NONE = 0
    OUTPUT = 1
    ERROR = 2
    SIZE = 3
    PARAMETER = 4
    HANDSHAKE_REQUEST = 5
    HANDSHAKE_RESPONSE = 6
    HANDSHAKE_COMPLETE = 7
    ENC_CHALLENGE_REQUEST = 8
    ENC_CHALLENGE_RESPONSE = 9
    FLAG = 10
    STDERR = 11
    EXIT_CODE = 12


_KNOWN_PAYLOAD_TYPES = frozenset(int(p) for p in PayloadType)

FLAG_SYN = 1
FLAG_FIN = 2
FLAGS_SINGLE_SHOT = FLAG_SYN | FLAG_FIN
"""Flags of acknowledge, channel_closed and other unsequenced messages."""


class MessageError(ValueError):
    """A frame that is not a valid message; the only exception `decode` raises."""


class ShortFrame(MessageError):
    pass


class BadHeaderLength(MessageError):
    pass


class LengthMismatch(MessageError):
    pass


class DigestMismatch(MessageError):
    pass


class UnknownPayloadType(MessageError):
    pass


class BadMessageType(MessageError):
    pass


STOCK_CHUNK = 1024
"""Payload bytes per stream message between stock peers (agent spec §11.4)."""


class BadCreatedDate(MessageError):
    pass


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class Message:
    """One decoded (or to-be-encoded) message.

    `message_id` holds the canonical 16 UUID bytes (un-swapped); `payload_digest`
    is what was on the wire when decoded, and is recomputed by `encode`.
    """

    message_type: str
    sequence_number: int = 0
    flags: int = 0
    payload_type: int = PayloadType.NONE
    payload: bytes = b""
    message_id: bytes = field(default_factory=lambda: uuid.uuid4().bytes)
    created_date: int = field(default_factory=now_ms)
    schema_version: int = SCHEMA_VERSION
    payload_digest: bytes = b""

    @property
    def uuid(self) -> uuid.UUID:
        return uuid.UUID(bytes=self.message_id)

    @property
    def id_str(self) -> str:
        """The MessageId in canonical lowercase hyphenated form, as acks quote it."""
        return str(uuid.UUID(bytes=self.message_id))

    def encode(self, *, digest: bool = True) -> bytes:
        return encode(self, digest=digest)


def encode(msg: Message, *, digest: bool = True) -> bytes:
    """Serialize `msg`; with `digest=False` the digest field is zero (portless fast path)."""
    mtype = msg.message_type.encode("utf-8")
    if not mtype or len(mtype) > MESSAGE_TYPE_SIZE:
        raise BadMessageType(f"MessageType must be 1..32 bytes, got {len(mtype)}")
    payload = msg.payload
    dig = (hashlib.sha256(payload).digest() if payload else EMPTY_DIGEST) if digest else NO_DIGEST
    header = _HEADER.pack(
        HEADER_LENGTH,
        mtype.ljust(MESSAGE_TYPE_SIZE, b" "),
        msg.schema_version,
        msg.created_date,
        msg.sequence_number,
        msg.flags,
        msg.message_id[8:16] + msg.message_id[0:8],
        dig,
        msg.payload_type,
        len(payload),
    )
    return header + payload


def _message_type(raw: bytes) -> str:
    """The MessageType field as text: NUL and space padding removed, ASCII and not empty."""
    try:
        mtype = raw.strip(b"\x00").decode("ascii").strip()
    except UnicodeDecodeError:
        raise BadMessageType("MessageType is not ASCII") from None
    if not mtype:
        raise BadMessageType("MessageType is empty")
    return mtype


def decode(frame: bytes | bytearray | memoryview, *, verify_digest: bool = True,
           strict: bool = True) -> Message:
    """Parse one frame, checking what the plugin checks (client spec §4.4) and more.

    `strict` additionally demands PayloadLength == len(frame) - 120 and a known
    PayloadType.  `verify_digest=False` skips the SHA-256 check (portless fast
    path, and the agent's behaviour).  Raises only `MessageError` subclasses.
    """
    data = bytes(frame)
    if len(data) < FRAME_OVERHEAD:
        raise ShortFrame(f"frame of {len(data)} bytes is shorter than the 120-byte header")
    (hlen, raw_type, schema, created, seq, flags, raw_id, dig, ptype,
     plen) = _HEADER.unpack_from(data)
    if hlen != HEADER_LENGTH:
        # The plugin slices the payload at HeaderLength+4; any other value either
        # corrupts the payload or panics its reader, so refuse it outright.
        raise BadHeaderLength(f"HeaderLength is {hlen}, expected {HEADER_LENGTH}")
    mtype = _message_type(raw_type)
    if created == 0:
        raise BadCreatedDate("CreatedDate is zero")
    payload = data[FRAME_OVERHEAD:]
    if strict:
        if plen != len(payload):
            raise LengthMismatch(
                f"PayloadLength says {plen} bytes but the frame carries {len(payload)}")
        if ptype not in _KNOWN_PAYLOAD_TYPES:
            raise UnknownPayloadType(f"unknown PayloadType {ptype}")
    if verify_digest and payload and dig != NO_DIGEST and hashlib.sha256(payload).digest() != dig:
        raise DigestMismatch("PayloadDigest does not match the payload")
    return Message(
        message_type=mtype,
        sequence_number=seq,
        flags=flags,
        payload_type=ptype,
        payload=payload,
        message_id=raw_id[8:16] + raw_id[0:8],
        created_date=created,
        schema_version=schema,
        payload_digest=dig,
    )


def peek_header(frame: bytes | bytearray | memoryview) -> tuple[str, int, int]:
    """(MessageType, SequenceNumber, PayloadType) without copying the payload; for the relay."""
    if len(frame) < FRAME_OVERHEAD:
        raise ShortFrame(f"frame of {len(frame)} bytes is shorter than the 120-byte header")
    (hlen, raw_type, _s, created, seq, _f, _i, _d, ptype, plen) = _HEADER.unpack_from(frame)
    if hlen != HEADER_LENGTH:
        raise BadHeaderLength(f"HeaderLength is {hlen}, expected {HEADER_LENGTH}")
    if plen != len(frame) - FRAME_OVERHEAD:
        raise LengthMismatch(
            f"PayloadLength says {plen} bytes but the frame carries {len(frame) - FRAME_OVERHEAD}")
    if created == 0:
        raise BadCreatedDate("CreatedDate is zero")
    mtype = _message_type(raw_type)
    return mtype, seq, ptype
