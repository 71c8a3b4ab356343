"""Handshake state machines: both ends agree, for every pairing of portless and stock ends."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest

from portless.protocol.handshake import (
    AgentHandshake,
    ClientHandshake,
    FastPath,
    HandshakeFailed,
    PortMode,
    SessionParams,
    agent_port_mode,
    client_port_mode,
    port_type,
)
from portless.protocol.payloads import ActionType, HandshakeResponse, SessionType
from portless.protocol.versions import (
    MUX_AGENT,
    MUX_CLIENT,
    PORTLESS_AGENT_VERSION,
    PORTLESS_CLIENT_VERSION,
    SMUX_KEEPALIVE_OFF_AGENT,
    SMUX_KEEPALIVE_OFF_CLIENT,
    TERMINATE_FLAG_AGENT,
    agent_newer_than,
    compare_versions,
    is_four_part,
)

AGENT_OFFER = FastPath(max_payload=65536, window=64, digest=False, smux_version=2)
CLIENT_ACCEPT = FastPath(max_payload=262144, window=32, digest=False, smux_version=1)

# ------------------------------------------------------------------- versions


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("1.1.70", "1.1.70.0", 0),
    ("1.2.0.0", "1.1.70", 1),
    ("1.1.69.9", "1.1.70", -1),
    ("3.0.196.0", "3.0.196.1", -1),
    ("10.0", "9.9.9.9", 1),
    ("", "0", -1),
    ("", "", 0),
    ("x.1", "0.0.0.1", -1),
    ("1..2", "", 0),
    ("3.3.40.0", "3.3.40", 0),
    ("٣.1", "1.0", -1),  # non-ASCII digits are invalid
])
def test_compare_versions(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


def test_four_part_and_thresholds() -> None:
    assert is_four_part("3.3.40.0") and not is_four_part("3.3.40") and not is_four_part("")
    assert not is_four_part("1.2.3.4.5") and not is_four_part("a.b.c.d")
    assert not agent_newer_than("3.3.40", MUX_AGENT)  # plugin: other forms are "older"
    assert agent_newer_than("3.0.196.1", MUX_AGENT) and not agent_newer_than(MUX_AGENT, MUX_AGENT)
    assert is_four_part(PORTLESS_AGENT_VERSION)
    for threshold in (TERMINATE_FLAG_AGENT, MUX_AGENT, SMUX_KEEPALIVE_OFF_AGENT):
        assert agent_newer_than(PORTLESS_AGENT_VERSION, threshold)
    for threshold in (MUX_CLIENT, SMUX_KEEPALIVE_OFF_CLIENT):
        assert compare_versions(PORTLESS_CLIENT_VERSION, threshold) > 0


# ---------------------------------------------------------------- port modes

LPF = "LocalPortForwarding"
PORT_PROPERTIES: list[Any] = [
    {"portNumber": "22"},
    {"portNumber": "80", "type": LPF, "localPortNumber": "0"},
    {"portNumber": "80", "type": LPF, "localPortNumber": "0", "host": "db.internal"},
    {"portNumber": "80", "type": LPF, "localConnectionType": "unix",
     "localUnixSocket": "/tmp/s"},
    {"portNumber": 80, "type": LPF},            # number elsewhere: type still decodes
    {"portNumber": "80", "Type": LPF},          # Go matches keys case-insensitively
    {"type": LPF, "TYPE": "other"},             # the last matching key wins
    {"TYPE": "other", "type": LPF},
    {"type": "localportforwarding"},            # values are case-sensitive
    {"type": 1},
    {"type": None},
    {"type": ""},
    None,
    [],
    "LocalPortForwarding",
]


def expected_port_type(props: Any) -> str:
    if not isinstance(props, dict):
        return ""
    values = [v for k, v in props.items() if k.lower() == "type" and isinstance(v, str)]
    return values[-1] if values else ""


def test_port_type_reading() -> None:
    for props in PORT_PROPERTIES:
        assert port_type(props) == expected_port_type(props)


@pytest.mark.parametrize(("agent_version", "mode"), [
    ("3.0.196.1", PortMode.MUX), ("3.3.40.0", PortMode.MUX), ("3.0.196.0", PortMode.BASIC),
    ("3.0.100.0", PortMode.BASIC), ("3.3.40", PortMode.BASIC), ("", PortMode.BASIC),
])
def test_client_port_mode(agent_version: str, mode: PortMode) -> None:
    assert client_port_mode({"type": LPF}, agent_version) is mode
    assert client_port_mode({"portNumber": "22"}, agent_version) is PortMode.STDIO


@pytest.mark.parametrize(("client_version", "mode"), [
    ("1.1.70", PortMode.MUX), ("1.1.70.0", PortMode.MUX), ("1.2.694.0", PortMode.MUX),
    ("1.1.69", PortMode.BASIC), ("", PortMode.BASIC), ("1.1", PortMode.BASIC),
])
def test_agent_port_mode(client_version: str, mode: PortMode) -> None:
    assert agent_port_mode({"type": LPF}, client_version) is mode
    assert agent_port_mode(None, client_version) is PortMode.STDIO


# -------------------------------------------------------------------- matrix

AGENT_VERSIONS = [PORTLESS_AGENT_VERSION, "3.3.40.0", "3.1.1511.0", "3.1.1511.1", "3.0.196.0",
                  "3.0.196.1", "3.0.100.0", "2.3.722.0", "3.3.40", "", "not.a.version"]
CLIENT_VERSIONS = [PORTLESS_CLIENT_VERSION, "1.2.0.0", "1.2.331.0", "1.2.331.1", "1.1.70",
                   "1.1.69", "", "1.1.70.0"]
SESSIONS: list[tuple[str, Any]] = (
    [(t, None) for t in (SessionType.STANDARD_STREAM, SessionType.INTERACTIVE_COMMANDS,
                         SessionType.NON_INTERACTIVE_COMMANDS)]
    + [(SessionType.PORT, p) for p in PORT_PROPERTIES])


def run(agent: AgentHandshake, client: ClientHandshake,
        message: str = "") -> tuple[SessionParams, SessionParams]:
    response = client.receive_request(agent.request())
    agent_params = agent.receive_response(response, 1.0)
    client_params = client.receive_complete(agent.complete(1.5, message))
    return agent_params, client_params


def oracle_mode(session_type: str, props: Any, agent_version: str,
                client_version: str) -> PortMode | None:
    """Written from client spec §8.2 / agent spec §12.4 independently of the module."""
    if session_type != "Port":
        return None
    if expected_port_type(props) != LPF:
        return PortMode.STDIO
    parts = agent_version.split(".")
    agent_ok = (len(parts) == 4 and all(p.isdigit() for p in parts)
                and tuple(map(int, parts)) > (3, 0, 196, 0))
    cparts = client_version.split(".")
    client_ok = (all(p.isdigit() for p in cparts) and client_version != ""
                 and tuple(map(int, cparts)) + (0,) * (4 - len(cparts)) >= (1, 1, 70, 0))
    return PortMode.MUX if agent_ok and client_ok else PortMode.BASIC


def test_matrix_both_ends_agree() -> None:
    combos = itertools.product(AGENT_VERSIONS, [AGENT_OFFER, None], CLIENT_VERSIONS,
                               [CLIENT_ACCEPT, None], SESSIONS)
    count = 0
    seen: set[object] = set()
    for agent_version, offer, client_version, accept, (stype, props) in combos:
        agent = AgentHandshake(session_type=stype, properties=props, agent_version=agent_version,
                               offer_fast_path=offer, now=0.0)
        client = ClientHandshake(client_version=client_version, accept_fast_path=accept)
        a, c = run(agent, client, "hello")
        assert a == c
        assert a.session_type == stype
        assert a.agent_version == agent_version and a.client_version == client_version
        assert a.customer_message == "hello"
        assert a.port_mode is oracle_mode(stype, props, agent_version, client_version)
        if offer is not None and accept is not None:
            assert a.fast_path == FastPath(65536, 32, False, 1)
        else:
            assert a.fast_path is None
        if a.port_mode is PortMode.MUX:
            keep = not (agent_newer_than(agent_version, SMUX_KEEPALIVE_OFF_AGENT)
                        and compare_versions(client_version, SMUX_KEEPALIVE_OFF_CLIENT) > 0)
            assert a.smux_keepalive is keep
        else:
            assert a.smux_keepalive is False
        seen.add(a.port_mode)
        seen.add(a.fast_path is None)
        seen.add(("keepalive", a.smux_keepalive))
        count += 1
    assert seen == {None, PortMode.STDIO, PortMode.BASIC, PortMode.MUX, True, False,
                    ("keepalive", True), ("keepalive", False)}
    assert count == len(AGENT_VERSIONS) * 2 * len(CLIENT_VERSIONS) * 2 * len(SESSIONS)


def test_portless_pair() -> None:
    agent = AgentHandshake(session_type="Port", properties={"portNumber": "80", "type": LPF},
                           agent_version=PORTLESS_AGENT_VERSION, offer_fast_path=AGENT_OFFER,
                           now=0.0)
    client = ClientHandshake(client_version=PORTLESS_CLIENT_VERSION,
                             accept_fast_path=CLIENT_ACCEPT)
    a, c = run(agent, client)
    assert a == c
    assert a.port_mode is PortMode.MUX and a.smux_keepalive is False
    assert a.fast_path == FastPath(65536, 32, False, 1)


# ------------------------------------------------------------ wire details


def test_agent_request_exact() -> None:
    agent = AgentHandshake(session_type="Port", properties={"portNumber": "22"},
                           agent_version="3.3.0.0", offer_fast_path=None, now=0.0)
    assert agent.request() == (
        b'{"AgentVersion":"3.3.0.0","RequestedClientActions":[{"ActionType":"SessionType",'
        b'"ActionParameters":{"SessionType":"Port","Properties":{"portNumber":"22"}}}]}')
    shell = AgentHandshake(session_type="Standard_Stream", properties={"ignored": 1},
                           agent_version="3.3.0.0", offer_fast_path=None, now=0.0)
    assert json.loads(shell.request())["RequestedClientActions"][0]["ActionParameters"] == {
        "SessionType": "Standard_Stream", "Properties": None}


def test_fast_path_action_exact() -> None:
    agent = AgentHandshake(session_type="Standard_Stream", properties=None,
                           agent_version=PORTLESS_AGENT_VERSION, offer_fast_path=AGENT_OFFER,
                           now=0.0)
    actions = json.loads(agent.request())["RequestedClientActions"]
    assert json.dumps(actions[1], separators=(",", ":")) == (
        '{"ActionType":"PortlessFastPath","ActionParameters":{"Version":1,"MaxPayload":65536,'
        '"Window":64,"Digest":false,"Smux":2}}')
    client = ClientHandshake(client_version=PORTLESS_CLIENT_VERSION,
                             accept_fast_path=FastPath(1 << 20, 128, True, 2))
    response = json.loads(client.receive_request(agent.request()))
    assert response["ProcessedClientActions"][1] == {
        "ActionType": "PortlessFastPath", "ActionStatus": 1,
        "ActionResult": {"Version": 1, "MaxPayload": 65536, "Window": 64, "Digest": True,
                         "Smux": 2},
        "Error": ""}
    assert response["Errors"] is None


def test_client_response_exact_like_plugin() -> None:
    client = ClientHandshake(client_version="1.2.0.0", accept_fast_path=None)
    request = (b'{"AgentVersion":"3.3.40.0","RequestedClientActions":[{"ActionType":'
               b'"SessionType","ActionParameters":{"SessionType":"Standard_Stream",'
               b'"Properties":null}}]}')
    assert client.receive_request(request) == (
        b'{"ClientVersion":"1.2.0.0","ProcessedClientActions":[{"ActionType":"SessionType",'
        b'"ActionStatus":1,"ActionResult":null,"Error":""}],"Errors":null}')


@pytest.mark.parametrize("accept", [None, CLIENT_ACCEPT])
def test_unknown_action_answered_like_plugin(accept: FastPath | None) -> None:
    request = json.dumps({"AgentVersion": "3.3.40.0", "RequestedClientActions": [
        {"ActionType": "SessionType", "ActionParameters": {"SessionType": "Port",
                                                           "Properties": {"portNumber": "22"}}},
        {"ActionType": "Teleport", "ActionParameters": {}}]}).encode()
    client = ClientHandshake(client_version="1.2.0.0", accept_fast_path=accept)
    response = json.loads(client.receive_request(request))
    assert response["ProcessedClientActions"][1] == {
        "ActionType": "Teleport", "ActionStatus": 0, "ActionResult": 3,
        "Error": "Unsupported action Teleport"}
    assert response["Errors"] == ["Unsupported action Teleport"]


def test_stock_plugin_answer_turns_fast_path_off() -> None:
    agent = AgentHandshake(session_type="Port", properties={"portNumber": "22"},
                           agent_version=PORTLESS_AGENT_VERSION, offer_fast_path=AGENT_OFFER,
                           now=0.0)
    stock = ClientHandshake(client_version="1.2.0.0", accept_fast_path=None)
    response = stock.receive_request(agent.request())
    entry = json.loads(response)["ProcessedClientActions"][1]
    assert entry == {"ActionType": ActionType.PORTLESS_FAST_PATH, "ActionStatus": 0,
                     "ActionResult": 3, "Error": "Unsupported action PortlessFastPath"}
    params = agent.receive_response(response, 0.1)
    assert params.fast_path is None and params.port_mode is PortMode.STDIO


def test_unknown_session_type_fails() -> None:
    agent = AgentHandshake(session_type="Bogus", properties=None,
                           agent_version="3.3.40.0", offer_fast_path=None, now=0.0)
    client = ClientHandshake(client_version="1.2.0.0", accept_fast_path=None)
    response = client.receive_request(agent.request())
    body = json.loads(response)
    assert body["ProcessedClientActions"] == [{
        "ActionType": "SessionType", "ActionStatus": 2, "ActionResult": None,
        "Error": "Failed to process action SessionType: Unknown session type Bogus"}]
    assert body["Errors"] == ["Unknown session type Bogus"]
    with pytest.raises(HandshakeFailed, match="Unknown session type Bogus"):
        agent.receive_response(response, 0.1)
    with pytest.raises(HandshakeFailed, match="unable to determine SessionType"):
        client.receive_complete(b'{"HandshakeTimeToComplete":1,"CustomerMessage":""}')


def test_session_type_parameter_errors() -> None:
    bad_params: list[Any] = [[], {"SessionType": 5}, "Port"]
    for params in bad_params:
        request = json.dumps({"AgentVersion": "3.3.40.0", "RequestedClientActions": [
            {"ActionType": "SessionType", "ActionParameters": params}]}).encode()
        client = ClientHandshake(client_version="1.2.0.0", accept_fast_path=None)
        entry = json.loads(client.receive_request(request))["ProcessedClientActions"][0]
        assert entry["ActionStatus"] == 2
        assert entry["Error"].startswith("Failed to process action SessionType: ")


def test_agent_rejects_any_failed_stock_action() -> None:
    agent = AgentHandshake(session_type="Port", properties={"portNumber": "22"},
                           agent_version="3.3.40.0", offer_fast_path=AGENT_OFFER, now=0.0)
    for status in (0, 2, 3):
        response = json.dumps({"ClientVersion": "1.2.0.0", "ProcessedClientActions": [
            {"ActionType": "SessionType", "ActionStatus": status, "ActionResult": None,
             "Error": ""}], "Errors": None}).encode()
        with pytest.raises(HandshakeFailed):
            agent.receive_response(response, 0.1)
    for bad in (b"", b"{", b'{"ProcessedClientActions":[{"ActionStatus":"1"}]}'):
        with pytest.raises(HandshakeFailed):
            agent.receive_response(bad, 0.1)


def fast_response(result: Any, status: int = 1) -> bytes:
    return json.dumps({"ClientVersion": PORTLESS_CLIENT_VERSION, "ProcessedClientActions": [
        {"ActionType": "SessionType", "ActionStatus": 1, "ActionResult": None, "Error": ""},
        {"ActionType": "PortlessFastPath", "ActionStatus": status, "ActionResult": result,
         "Error": ""}], "Errors": None}).encode()


def test_agent_judges_fast_path_result() -> None:
    def agent() -> AgentHandshake:
        return AgentHandshake(session_type="Standard_Stream", properties=None,
                              agent_version=PORTLESS_AGENT_VERSION,
                              offer_fast_path=AGENT_OFFER, now=0.0)
    ok = FastPath(4096, 8, True, 1).to_params()
    assert agent().receive_response(fast_response(ok), 0.1).fast_path == FastPath(4096, 8, True, 1)
    # A failed extension only switches the fast path off.
    assert agent().receive_response(fast_response(None, 2), 0.1).fast_path is None
    assert agent().receive_response(fast_response(3, 0), 0.1).fast_path is None
    for bad in (FastPath(1 << 30, 8, False, 1).to_params(),  # beyond the offer
                FastPath(4096, 65, False, 1).to_params(),
                FastPath(4096, 8, False, 3).to_params(),
                {"Version": 1, "MaxPayload": 0, "Window": 8, "Digest": False, "Smux": 1},
                {"Version": 1, "MaxPayload": "1", "Window": 8, "Digest": False, "Smux": 1},
                None, 3):
        with pytest.raises(HandshakeFailed):
            agent().receive_response(fast_response(bad), 0.1)
    # The agent offered digests; a result that drops them would mean disagreement.
    digest_agent = AgentHandshake(session_type="Standard_Stream", properties=None,
                                  agent_version=PORTLESS_AGENT_VERSION,
                                  offer_fast_path=FastPath(4096, 8, True, 1), now=0.0)
    with pytest.raises(HandshakeFailed):
        digest_agent.receive_response(fast_response(FastPath(4096, 8, False, 1).to_params()),
                                      0.1)


def test_client_judges_fast_path_offer() -> None:
    future: list[Any] = [{"Version": 2, "MaxPayload": 65536, "Window": 64, "Digest": False,
                          "Smux": 2}]
    for params in future:
        request = json.dumps({"AgentVersion": PORTLESS_AGENT_VERSION, "RequestedClientActions": [
            {"ActionType": "PortlessFastPath", "ActionParameters": params}]}).encode()
        client = ClientHandshake(client_version=PORTLESS_CLIENT_VERSION,
                                 accept_fast_path=CLIENT_ACCEPT)
        entry = json.loads(client.receive_request(request))["ProcessedClientActions"][0]
        assert entry["ActionStatus"] == 1 and entry["ActionResult"]["Version"] == 1
    invalid: list[Any] = [
        {"Version": 0, "MaxPayload": 1, "Window": 1, "Digest": False, "Smux": 1},
        {"Version": 1, "MaxPayload": 1, "Window": 0, "Digest": False, "Smux": 1},
        {"Version": 1, "MaxPayload": 1, "Window": 1, "Digest": 0, "Smux": 1},
        None, []]
    for params in invalid:
        request = json.dumps({"AgentVersion": PORTLESS_AGENT_VERSION, "RequestedClientActions": [
            {"ActionType": "PortlessFastPath", "ActionParameters": params}]}).encode()
        client = ClientHandshake(client_version=PORTLESS_CLIENT_VERSION,
                                 accept_fast_path=CLIENT_ACCEPT)
        entry = json.loads(client.receive_request(request))["ProcessedClientActions"][0]
        assert entry["ActionStatus"] == 2 and client.fast_path is None


def test_handshake_complete_integer_nanoseconds() -> None:
    agent = AgentHandshake(session_type="Port", properties={"portNumber": "22"},
                           agent_version="3.3.40.0", offer_fast_path=None, now=10.0)
    client = ClientHandshake(client_version="1.2.0.0", accept_fast_path=None)
    agent.receive_response(client.receive_request(agent.request()), 10.0005)
    body = agent.complete(10.000694581)
    value = json.loads(body)["HandshakeTimeToComplete"]
    assert type(value) is int and value == 694581
    assert body == b'{"HandshakeTimeToComplete":694581,"CustomerMessage":""}'


def test_complete_requires_response() -> None:
    agent = AgentHandshake(session_type="Port", properties=None, agent_version="3.3.40.0",
                           offer_fast_path=None, now=0.0)
    with pytest.raises(RuntimeError):
        agent.complete(1.0)


def test_timeout() -> None:
    agent = AgentHandshake(session_type="Port", properties={"portNumber": "22"},
                           agent_version="3.3.40.0", offer_fast_path=None, now=100.0)
    assert not agent.timed_out(114.9)
    assert agent.timed_out(115.1)
    short = AgentHandshake(session_type="Port", properties=None, agent_version="3.3.40.0",
                           offer_fast_path=None, now=0.0, timeout=1.0)
    client = ClientHandshake(client_version="1.2.0.0", accept_fast_path=None)
    short.receive_response(client.receive_request(short.request()), 0.5)
    assert not short.timed_out(100.0)


def test_bad_json_fails_on_the_client() -> None:
    client = ClientHandshake(client_version="1.2.0.0", accept_fast_path=None)
    for bad in (b"", b"[", b'{"AgentVersion":3}', b'{"RequestedClientActions":[1]}'):
        with pytest.raises(HandshakeFailed):
            client.receive_request(bad)
    client.receive_request(b'{"AgentVersion":"3.3.40.0","RequestedClientActions":[{"ActionType":'
                           b'"SessionType","ActionParameters":{"SessionType":"Port"}}]}')
    for bad in (b'{"HandshakeTimeToComplete":1.5,"CustomerMessage":""}',
                b'{"HandshakeTimeToComplete":"1"}', b"null"):
        with pytest.raises(HandshakeFailed):
            client.receive_complete(bad)
    params = client.receive_complete(b'{"HandshakeTimeToComplete":1,"CustomerMessage":"hi"}')
    assert params.session_type == "Port" and params.port_mode is PortMode.STDIO
    assert params.customer_message == "hi" and params.agent_version == "3.3.40.0"


# ------------------------------------------------------------------------ KMS


def kms_request(params: Any) -> bytes:
    return json.dumps({"AgentVersion": "3.3.40.0", "RequestedClientActions": [
        {"ActionType": "SessionType", "ActionParameters": {"SessionType": "Standard_Stream",
                                                           "Properties": None}},
        {"ActionType": "KMSEncryption", "ActionParameters": params}]}).encode()


def test_kms_without_provider_fails() -> None:
    client = ClientHandshake(client_version=PORTLESS_CLIENT_VERSION, accept_fast_path=None)
    response = HandshakeResponse.from_json(
        client.receive_request(kms_request({"KMSKeyId": "alias/x", "Challenge": "Yw=="})))
    kms = response.actions[1]
    assert kms.status == 2 and kms.error.startswith("Failed to process action KMSEncryption: ")
    assert response.errors is not None and len(response.errors) == 1
    assert client.data_key is None


def test_kms_with_provider() -> None:
    calls: list[str] = []
    key = bytes(range(64))

    def provider(key_id: str) -> tuple[bytes, bytes]:
        calls.append(key_id)
        return key, b"\x01\x02blob"

    client = ClientHandshake(client_version=PORTLESS_CLIENT_VERSION, accept_fast_path=None,
                             data_key_provider=provider)
    body = json.loads(client.receive_request(kms_request({"KMSKeyId": "alias/x",
                                                          "Challenge": "Yw=="})))
    assert body["ProcessedClientActions"][1] == {
        "ActionType": "KMSEncryption", "ActionStatus": 1,
        "ActionResult": {"KMSCipherTextKey": base64.b64encode(b"\x01\x02blob").decode(),
                         "KMSCipherTextHash": None},
        "Error": ""}
    assert body["Errors"] is None
    assert calls == ["alias/x"] and client.data_key == key and client.kms_key_id == "alias/x"


@pytest.mark.parametrize("case", ["short-key", "raises", "no-key-id", "bad-params"])
def test_kms_provider_failures(case: str) -> None:
    def provider(key_id: str) -> tuple[bytes, bytes]:
        if case == "raises":
            raise RuntimeError("AccessDenied")
        return b"k" * 32, b"blob"

    params: Any = {"KMSKeyId": "k"}
    if case == "no-key-id":
        params = {"Challenge": "x"}
    elif case == "bad-params":
        params = "k"
    client = ClientHandshake(client_version=PORTLESS_CLIENT_VERSION, accept_fast_path=None,
                             data_key_provider=provider)
    entry = json.loads(client.receive_request(kms_request(params)))["ProcessedClientActions"][1]
    assert entry["ActionStatus"] == 2 and client.data_key is None
