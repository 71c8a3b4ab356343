"""The binary message codec against the spec's byte tables and malformed input."""

from __future__ import annotations

import contextlib
import hashlib
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portless.protocol.message import (
    EMPTY_DIGEST,
    FRAME_OVERHEAD,
    NO_DIGEST,
    BadCreatedDate,
    BadHeaderLength,
    BadMessageType,
    DigestMismatch,
    LengthMismatch,
    Message,
    MessageError,
    MessageType,
    PayloadType,
    ShortFrame,
    UnknownPayloadType,
    decode,
    encode,
    peek_header,
)
from portless.protocol.payloads import Acknowledge

# client spec §4.2
CLIENT_EXAMPLE = bytes.fromhex(
    "00000074 696e7075745f73747265616d5f64617461 2020202020202020202020202020 20"
    "00000001 0000018bcfe5687b 0000000000000007 0000000000000000"
    "8899aabbccddeeff 0011223344554677"
    "1d887ce0f8672e4914d9000e801cd74ecd805dd9366c0bc42dc16adc0197dc2f"
    "00000001 00000003 6c730d".replace(" ", ""))

# agent spec §9
AGENT_EXAMPLE = bytes.fromhex("""
00 00 00 74 69 6e 70 75 74 5f 73 74 72 65 61 6d
5f 64 61 74 61 20 20 20 20 20 20 20 20 20 20 20
20 20 20 20 00 00 00 01 00 00 01 8b cf e5 68 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01
88 99 aa bb cc dd ee ff 00 11 22 33 44 55 66 77
e9 fe 7e 88 e8 9d 53 23 79 96 04 02 db 8f 94 58
19 4d ae 77 2a a5 fd a5 a1 28 06 c2 22 15 f0 ff
00 00 00 01 00 00 00 03 6c 73 0a""".replace(" ", "").replace("\n", ""))


def be(data: bytes, offset: int, size: int) -> int:
    return int.from_bytes(data[offset:offset + size], "big")


def test_client_example_fields_at_their_offsets() -> None:
    f = CLIENT_EXAMPLE
    assert len(f) == 123
    assert be(f, 0, 4) == 116
    assert f[4:36] == b"input_stream_data".ljust(32, b" ")
    assert be(f, 36, 4) == 1
    assert be(f, 40, 8) == 1700000000123
    assert be(f, 48, 8) == 7
    assert be(f, 56, 8) == 0
    assert f[64:72] == bytes.fromhex("8899aabbccddeeff")
    assert f[72:80] == bytes.fromhex("0011223344554677")
    assert f[80:112] == hashlib.sha256(b"ls\r").digest()
    assert be(f, 112, 4) == 1
    assert be(f, 116, 4) == 3
    assert f[120:] == b"ls\r"


def test_client_example_encode_and_decode() -> None:
    uid = uuid.UUID("00112233-4455-4677-8899-aabbccddeeff")
    msg = Message(MessageType.INPUT_STREAM_DATA, 7, 0, PayloadType.OUTPUT, b"ls\r",
                  uid.bytes, 1700000000123)
    assert encode(msg) == CLIENT_EXAMPLE
    got = decode(CLIENT_EXAMPLE)
    assert got.message_type == "input_stream_data"
    assert got.sequence_number == 7
    assert got.flags == 0
    assert got.payload_type == 1
    assert got.payload == b"ls\r"
    assert got.created_date == 1700000000123
    assert got.schema_version == 1
    assert got.uuid == uid
    assert got.id_str == "00112233-4455-4677-8899-aabbccddeeff"
    assert got.payload_digest == CLIENT_EXAMPLE[80:112]
    assert peek_header(CLIENT_EXAMPLE) == ("input_stream_data", 7, 1)


def test_agent_example_encode_and_decode() -> None:
    f = AGENT_EXAMPLE
    assert len(f) == 123
    uid = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    msg = Message(MessageType.INPUT_STREAM_DATA, 0, 1, PayloadType.OUTPUT, b"ls\n",
                  uid.bytes, 1700000000000)
    assert encode(msg) == f
    got = decode(f)
    assert (got.sequence_number, got.flags, got.payload, got.created_date) == (0, 1, b"ls\n",
                                                                               1700000000000)
    assert got.message_id == uid.bytes
    assert f[80:112] == hashlib.sha256(b"ls\n").digest()


def test_ack_quotes_unswapped_id() -> None:
    """The wire swaps the halves; the ack's JSON names the id in canonical order."""
    acked = decode(CLIENT_EXAMPLE)
    ack = Acknowledge.for_message(acked)
    assert ack.to_json() == (
        b'{"AcknowledgedMessageType":"input_stream_data",'
        b'"AcknowledgedMessageId":"00112233-4455-4677-8899-aabbccddeeff",'
        b'"AcknowledgedMessageSequenceNumber":7,"IsSequentialMessage":true}')
    frame = encode(ack.to_message())
    assert be(frame, 48, 8) == 0 and be(frame, 56, 8) == 3 and be(frame, 112, 4) == 0
    assert frame[4:36].rstrip(b" ") == b"acknowledge"


def test_empty_payload_digest_and_fast_path_digest() -> None:
    msg = Message(MessageType.OUTPUT_STREAM_DATA, 1, 0, 1, b"")
    assert encode(msg)[80:112] == EMPTY_DIGEST
    assert EMPTY_DIGEST.hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    fast = encode(Message(MessageType.OUTPUT_STREAM_DATA, 1, 0, 1, b"abc"), digest=False)
    assert fast[80:112] == NO_DIGEST
    assert decode(fast).payload == b"abc"  # a zero digest means "not computed"


def test_nul_padded_type_accepted() -> None:
    frame = bytearray(CLIENT_EXAMPLE)
    frame[4:36] = b"input_stream_data".ljust(32, b"\x00")
    assert decode(bytes(frame)).message_type == "input_stream_data"


# -------------------------------------------------------------- malformations


def patched(offset: int, fmt: str, value: int) -> bytes:
    frame = bytearray(CLIENT_EXAMPLE)
    struct.pack_into(fmt, frame, offset, value)
    return bytes(frame)


@pytest.mark.parametrize("size", [0, 1, 50, 115, 116, 117, 118, 119])
def test_short_frames(size: int) -> None:
    # 116-119 bytes would panic the plugin's reader (client spec §4.4 item 2).
    with pytest.raises(ShortFrame):
        decode(CLIENT_EXAMPLE[:size])
    with pytest.raises(ShortFrame):
        peek_header(CLIENT_EXAMPLE[:size])


@pytest.mark.parametrize("hlen", [0, 115, 117, 120, 2**32 - 1])
def test_header_length_not_116(hlen: int) -> None:
    with pytest.raises(BadHeaderLength):
        decode(patched(0, ">I", hlen))
    with pytest.raises(BadHeaderLength):
        peek_header(patched(0, ">I", hlen))


@pytest.mark.parametrize("plen", [0, 2, 4, 1000])
def test_length_mismatch(plen: int) -> None:
    with pytest.raises(LengthMismatch):
        decode(patched(116, ">I", plen))
    with pytest.raises(LengthMismatch):
        peek_header(patched(116, ">I", plen))
    # Not strict: the plugin slices by HeaderLength and ignores PayloadLength.
    assert decode(patched(116, ">I", plen), strict=False).payload == b"ls\r"


def test_length_mismatch_extra_bytes() -> None:
    with pytest.raises(LengthMismatch):
        decode(CLIENT_EXAMPLE + b"x")


def test_digest_mismatch() -> None:
    frame = CLIENT_EXAMPLE[:-1] + b"\n"
    with pytest.raises(DigestMismatch):
        decode(frame)
    assert decode(frame, verify_digest=False).payload == b"ls\n"


@pytest.mark.parametrize("ptype", [13, 100, 2**32 - 1])
def test_unknown_payload_type(ptype: int) -> None:
    with pytest.raises(UnknownPayloadType):
        decode(patched(112, ">I", ptype))
    assert decode(patched(112, ">I", ptype), strict=False).payload_type == ptype


@pytest.mark.parametrize("raw", [b" " * 32, b"\x00" * 32, b"\x00" + b" " * 30 + b"\x00"])
def test_empty_type(raw: bytes) -> None:
    frame = bytearray(CLIENT_EXAMPLE)
    frame[4:36] = raw
    with pytest.raises(BadMessageType):
        decode(bytes(frame))
    with pytest.raises(BadMessageType):
        peek_header(bytes(frame))


def test_non_ascii_type() -> None:
    frame = bytearray(CLIENT_EXAMPLE)
    frame[4] = 0xFF
    with pytest.raises(BadMessageType):
        decode(bytes(frame))


def test_zero_created_date() -> None:
    with pytest.raises(BadCreatedDate):
        decode(patched(40, ">Q", 0))
    with pytest.raises(BadCreatedDate):
        peek_header(patched(40, ">Q", 0))


def test_encode_rejects_bad_type() -> None:
    with pytest.raises(BadMessageType):
        encode(Message(""))
    with pytest.raises(BadMessageType):
        encode(Message("x" * 33))


def test_errors_are_value_errors() -> None:
    for cls in (ShortFrame, BadHeaderLength, LengthMismatch, DigestMismatch,
                UnknownPayloadType, BadMessageType, BadCreatedDate):
        assert issubclass(cls, MessageError)
        assert issubclass(cls, ValueError)


# ----------------------------------------------------------------- properties

type_chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
message_types = st.text(type_chars, min_size=1, max_size=32)
messages = st.builds(
    Message,
    message_type=message_types,
    sequence_number=st.integers(-(2**63), 2**63 - 1),
    flags=st.integers(0, 2**64 - 1),
    payload_type=st.sampled_from([int(p) for p in PayloadType]),
    payload=st.binary(max_size=2048),
    message_id=st.binary(min_size=16, max_size=16),
    created_date=st.integers(1, 2**64 - 1),
    schema_version=st.integers(0, 2**32 - 1),
)


@settings(max_examples=300)
@given(messages, st.booleans())
def test_round_trip(msg: Message, digest: bool) -> None:
    frame = encode(msg, digest=digest)
    assert len(frame) == FRAME_OVERHEAD + len(msg.payload)
    got = decode(frame)
    for name in ("message_type", "sequence_number", "flags", "payload_type", "payload",
                 "message_id", "created_date", "schema_version"):
        assert getattr(got, name) == getattr(msg, name)
    assert peek_header(frame) == (msg.message_type, msg.sequence_number, msg.payload_type)


@settings(max_examples=500)
@given(st.binary(max_size=400), st.booleans(), st.booleans())
def test_arbitrary_bytes(data: bytes, verify: bool, strict: bool) -> None:
    try:
        got = decode(data, verify_digest=verify, strict=strict)
    except MessageError:
        return
    assert isinstance(got, Message)


@settings(max_examples=500)
@given(messages, st.data())
def test_mutated_frames(msg: Message, data: st.DataObject) -> None:
    frame = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    for candidate in (bytes(frame), bytes(frame[:cut])):
        for kwargs in ({}, {"strict": False, "verify_digest": False}):
            with contextlib.suppress(MessageError):
                decode(candidate, **kwargs)
            with contextlib.suppress(MessageError):
                peek_header(candidate)
