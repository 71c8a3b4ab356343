"""JSON payloads byte-exact against the spec's examples, with their JSON types pinned."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portless.protocol.message import FLAGS_SINGLE_SHOT, MessageType, decode, encode
from portless.protocol.payloads import (
    Acknowledge,
    ActionStatus,
    ActionType,
    AgentSessionState,
    AgentTaskAcknowledge,
    AgentTaskComplete,
    ChannelClosed,
    EncChallenge,
    Flag,
    HandshakeComplete,
    HandshakeRequest,
    HandshakeResponse,
    OpenControlChannel,
    OpenDataChannel,
    PayloadError,
    ProcessedAction,
    RequestedAction,
    TerminalSize,
    decode_exit_code,
    decode_flag,
    encode_exit_code,
    encode_flag,
)

ACK = (b'{"AcknowledgedMessageType":"output_stream_data","AcknowledgedMessageId":'
       b'"7a1209fb-828d-4349-bc88-cf4e9ef3dd7e","AcknowledgedMessageSequenceNumber":1,'
       b'"IsSequentialMessage":true}')


def test_ack_exact() -> None:
    ack = Acknowledge("output_stream_data", "7a1209fb-828d-4349-bc88-cf4e9ef3dd7e", 1)
    assert ack.to_json() == ACK
    assert Acknowledge.from_json(ACK) == ack
    frame = encode(ack.to_message())
    msg = decode(frame)
    assert (msg.message_type, msg.sequence_number, msg.flags, msg.payload_type) == (
        MessageType.ACKNOWLEDGE, 0, FLAGS_SINGLE_SHOT, 0)


def test_ack_case_insensitive_keys_and_wrong_types() -> None:
    assert Acknowledge.from_json(b'{"acknowledgedmessagesequencenumber":5}').sequence_number == 5
    for bad in (b'{"AcknowledgedMessageSequenceNumber":"1"}',
                b'{"AcknowledgedMessageSequenceNumber":1.5}',
                b'{"AcknowledgedMessageSequenceNumber":true}',
                b'{}', b'[]', b'not json', b'\xff'):
        with pytest.raises(PayloadError):
            Acknowledge.from_json(bad)


def test_handshake_response_exact() -> None:
    resp = HandshakeResponse("1.2.0.0", [ProcessedAction("SessionType", ActionStatus.SUCCESS)])
    expected = (b'{"ClientVersion":"1.2.0.0","ProcessedClientActions":[{"ActionType":"SessionType",'
                b'"ActionStatus":1,"ActionResult":null,"Error":""}],"Errors":null}')
    assert resp.to_json() == expected
    back = HandshakeResponse.from_json(expected)
    assert back.client_version == "1.2.0.0"
    assert back.actions[0].status == 1 and back.errors is None
    assert type(json.loads(resp.to_json())["ProcessedClientActions"][0]["ActionStatus"]) is int


def test_handshake_request_exact() -> None:
    text = (b'{"AgentVersion":"3.3.0.0","RequestedClientActions":[{"ActionType":"SessionType",'
            b'"ActionParameters":{"SessionType":"Port","Properties":{"portNumber":"22"}}}]}')
    req = HandshakeRequest("3.3.0.0", [RequestedAction(
        "SessionType", {"SessionType": "Port", "Properties": {"portNumber": "22"}})])
    assert req.to_json() == text
    assert HandshakeRequest.from_json(text) == req
    kms = HandshakeRequest("3.3.40.0", [RequestedAction(
        ActionType.KMS_ENCRYPTION, {"KMSKeyId": "k", "Challenge": "Yw=="})])
    assert kms.to_json() == (b'{"AgentVersion":"3.3.40.0","RequestedClientActions":[{"ActionType":'
                             b'"KMSEncryption","ActionParameters":{"KMSKeyId":"k",'
                             b'"Challenge":"Yw=="}}]}')


def test_handshake_complete_integer() -> None:
    assert HandshakeComplete(694581, "").to_json() == (
        b'{"HandshakeTimeToComplete":694581,"CustomerMessage":""}')
    assert HandshakeComplete(1234567, "This session is encrypted using AWS KMS.").to_json() == (
        b'{"HandshakeTimeToComplete":1234567,'
        b'"CustomerMessage":"This session is encrypted using AWS KMS."}')
    with pytest.raises(PayloadError):
        HandshakeComplete.from_json(b'{"HandshakeTimeToComplete":1.5,"CustomerMessage":""}')
    with pytest.raises(PayloadError):
        HandshakeComplete.from_json(b'{"HandshakeTimeToComplete":"1","CustomerMessage":""}')
    with pytest.raises(PayloadError):
        HandshakeComplete.from_json(b'{"HandshakeTimeToComplete":1,"CustomerMessage":5}')


def test_handshake_wrong_types() -> None:
    for bad in (b'{"ClientVersion":1}',
                b'{"ProcessedClientActions":[{"ActionStatus":"1"}]}',
                b'{"ProcessedClientActions":[1]}',
                b'{"ProcessedClientActions":{}}',
                b'{"Errors":[1]}'):
        with pytest.raises(PayloadError):
            HandshakeResponse.from_json(bad)
    for bad in (b'{"AgentVersion":3}', b'{"RequestedClientActions":["x"]}',
                b'{"RequestedClientActions":[{"ActionType":1}]}'):
        with pytest.raises(PayloadError):
            HandshakeRequest.from_json(bad)


def test_channel_closed_types_and_order() -> None:
    cc = ChannelClosed("sess-1", "mi-0123", "", "6f8e6b1a-0000-4000-8000-000000000000",
                       "2026-11-22T03:40:30.000Z")
    assert cc.to_json() == (
        b'{"MessageType":"channel_closed","MessageId":"6f8e6b1a-0000-4000-8000-000000000000",'
        b'"DestinationId":"mi-0123","SessionId":"sess-1","SchemaVersion":1,'
        b'"CreatedDate":"2026-11-22T03:40:30.000Z","Output":""}')
    obj = json.loads(cc.to_json())
    assert isinstance(obj["CreatedDate"], str) and type(obj["SchemaVersion"]) is int
    assert ChannelClosed.from_json(cc.to_json()) == cc
    msg = decode(encode(cc.to_message()))
    assert (msg.message_type, msg.sequence_number, msg.flags, msg.payload_type) == (
        "channel_closed", 0, 3, 0)
    with pytest.raises(PayloadError):
        ChannelClosed.from_json(b'{"SessionId":1}')
    with pytest.raises(PayloadError):
        ChannelClosed.from_json(b'{"SchemaVersion":"1"}')


def test_terminal_size() -> None:
    assert TerminalSize(300, 100).to_json() == b'{"cols":300,"rows":100}'
    assert TerminalSize.from_json(b'{"cols":300,"rows":100}') == TerminalSize(300, 100)
    for bad in (b'{"cols":-1,"rows":1}', b'{"cols":1}', b'{"cols":"1","rows":1}',
                b'{"cols":1.0,"rows":1}', b'{"cols":4294967296,"rows":1}'):
        with pytest.raises(PayloadError):
            TerminalSize.from_json(bad)


def test_flags_and_exit_codes() -> None:
    assert encode_flag(Flag.TERMINATE_SESSION) == b"\x00\x00\x00\x02"
    assert encode_flag(Flag.DISCONNECT_TO_PORT) == b"\x00\x00\x00\x01"
    assert decode_flag(b"\x00\x00\x00\x03") == Flag.CONNECT_TO_PORT_ERROR
    for bad in (b"", b"\x00\x00\x02", b"\x00" * 5):
        with pytest.raises(PayloadError):
            decode_flag(bad)
    assert encode_exit_code(3) == b"EXIT_CODE: 3"
    assert decode_exit_code(b"EXIT_CODE: 3") == 3
    assert decode_exit_code(b"EXIT_CODE: -1\n") == -1
    for bad in (b"exit 3", b"EXIT_CODE: x"):
        with pytest.raises(PayloadError):
            decode_exit_code(bad)


def test_agent_session_state() -> None:
    s = AgentSessionState("sid", "Connected")
    assert s.to_json() == b'{"SchemaVersion":1,"SessionState":"Connected","SessionId":"sid"}'
    assert AgentSessionState.from_json(s.to_json()) == s
    msg = decode(encode(s.to_message()))
    assert (msg.message_type, msg.flags, msg.sequence_number) == ("agent_session_state", 3, 0)


def test_open_data_channel_forms() -> None:
    client = OpenDataChannel("tok-abc", "fa09208d-841d-4bdf-aed5-24becc51b4a0",
                             "4580bd7f-4f95-44ca-8301-bab8c58becf3", client_version="1.2.0.0")
    assert client.to_json() == (
        '{"MessageSchemaVersion":"1.0","RequestId":"fa09208d-841d-4bdf-aed5-24becc51b4a0",'
        '"TokenValue":"tok-abc","ClientId":"4580bd7f-4f95-44ca-8301-bab8c58becf3",'
        '"ClientVersion":"1.2.0.0"}')
    assert OpenDataChannel.from_json(client.to_json()) == client
    agent = OpenDataChannel("t", "r", "", client_instance_id="mi-1")
    assert agent.to_json() == ('{"MessageSchemaVersion":"1.0","RequestId":"r","TokenValue":"t",'
                               '"ClientInstanceId":"mi-1","ClientId":""}')
    assert OpenDataChannel.from_json(agent.to_json()) == agent
    with pytest.raises(PayloadError):
        OpenDataChannel.from_json('{"RequestId":"r"}')


def test_open_control_channel() -> None:
    occ = OpenControlChannel("tok", "3.3.0.0", "linux", "rid")
    assert occ.to_json() == ('{"Cookie":null,"MessageSchemaVersion":"1.0","RequestId":"rid",'
                             '"TokenValue":"tok","AgentVersion":"3.3.0.0","PlatformType":"linux"}')
    assert OpenControlChannel.from_json(occ.to_json()) == occ


def test_task_complete_and_ack() -> None:
    done = AgentTaskComplete("sid", "mi-1")
    assert done.to_json() == (
        b'{"SchemaVersion":1,"TaskId":"sid","Topic":"agent_task_complete",'
        b'"FinalTaskStatus":"Success","IsRoutingFailure":false,"AwsAccountId":"",'
        b'"InstanceId":"mi-1","Output":"","S3Bucket":"","S3UrlSuffix":"","CwlGroup":"",'
        b'"CwlStream":"","RetryNumber":1}')
    assert AgentTaskComplete.from_json(done.to_json()) == done
    ack = AgentTaskAcknowledge("m", "sid")
    assert ack.to_json() == (b'{"SchemaVersion":1,"MessageId":"m","TaskId":"sid",'
                             b'"Topic":"agent_task_complete"}')
    assert AgentTaskAcknowledge.from_json(ack.to_json()) == ack


def test_enc_challenge() -> None:
    assert EncChallenge("YWJj").to_json() == b'{"Challenge":"YWJj"}'
    assert EncChallenge.from_json(b'{"Challenge":"YWJj"}') == EncChallenge("YWJj")
    with pytest.raises(PayloadError):
        EncChallenge.from_json(b'{"Challenge":1}')


@settings(max_examples=200)
@given(st.text(max_size=40), st.uuids(), st.integers(-(2**63), 2**63 - 1))
def test_ack_round_trip(mtype: str, uid: object, seq: int) -> None:
    ack = Acknowledge(mtype, str(uid), seq)
    assert Acknowledge.from_json(ack.to_json()) == ack


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=10)


@settings(max_examples=200)
@given(st.text(max_size=20), st.lists(st.tuples(st.text(min_size=1, max_size=20), json_values),
                                      max_size=4))
def test_handshake_request_round_trip(version: str, actions: list[tuple[str, object]]) -> None:
    req = HandshakeRequest(version, [RequestedAction(t, p) for t, p in actions])
    assert HandshakeRequest.from_json(req.to_json()) == req


@settings(max_examples=200)
@given(st.text(max_size=20),
       st.lists(st.tuples(st.text(max_size=20), st.integers(0, 3), json_values,
                          st.text(max_size=20)), max_size=4),
       st.none() | st.lists(st.text(max_size=10), max_size=3))
def test_handshake_response_round_trip(version: str, actions: list[tuple[str, int, object, str]],
                                       errors: list[str] | None) -> None:
    resp = HandshakeResponse(version, [ProcessedAction(*a) for a in actions], errors)
    assert HandshakeResponse.from_json(resp.to_json()) == resp


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_payload_error_only(data: bytes) -> None:
    for cls in (Acknowledge, ChannelClosed, HandshakeRequest, HandshakeResponse,
                HandshakeComplete, EncChallenge, TerminalSize, AgentSessionState):
        with contextlib.suppress(PayloadError):
            cls.from_json(data)


def test_deeply_nested_json_is_a_payload_error() -> None:
    with pytest.raises(PayloadError):
        HandshakeRequest.from_json(b"[" * 100000)
