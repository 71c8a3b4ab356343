"""SigV4 verification against botocore's real signer, and our signer against botocore's."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from portless.aws import sigv4
from portless.aws.errors import INVALID_SIGNATURE_MESSAGE, AwsError
from portless.aws.sigv4 import SignedRequest

AKID = "AKIAPORTLESSEXAMPLE1"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLE//token+with/odd=chars"
NOW = datetime(2026, 11, 22, 0, 0, 0, tzinfo=UTC)
SSM_HEADERS = {
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": "AmazonSSM.StartSession",
}
BODY = b'{"Target": "mi-0123456789abcdef0"}'


def secrets(key: str) -> str | None:
    return {AKID: SECRET}.get(key)


def wire_host(url: str) -> str:
    """The Host header urllib3 sends for ``url`` (port only when not the default)."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}[parts.scheme]
    host = (parts.hostname or "").lower()
    host = f"[{host}]" if ":" in host else host
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def botocore_sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    token: str | None = None,
    service: str = "ssm",
    region: str = "us-east-1",
    now: datetime = NOW,
    params: dict[str, str] | None = None,
) -> AWSRequest:
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers), params=params)
    with mock.patch("botocore.auth.get_current_datetime", return_value=now.replace(tzinfo=None)):
        SigV4Auth(Credentials(AKID, SECRET, token), service, region).add_auth(request)
    return request


def as_received(request: AWSRequest, *, extra: Mapping[str, str] | None = None) -> SignedRequest:
    """What the server sees when botocore sends ``request``: Host and Content-Length added."""
    prepared = request.prepare()
    headers = dict(prepared.headers.items())
    headers["Host"] = wire_host(prepared.url)
    body = prepared.body if isinstance(prepared.body, bytes) else b""
    if body:
        headers.setdefault("Content-Length", str(len(body)))
    headers.update(extra or {})
    return SignedRequest.from_target(
        method=prepared.method, target=prepared.url, headers=headers, body=body
    )


def replace_header(request: SignedRequest, name: str, value: str | None) -> SignedRequest:
    hmap = request.header_map
    headers = [(n, v) for n in hmap.names() if n != name.lower() for v in hmap.get_all(n)]
    if value is not None:
        headers.append((name, value))
    return SignedRequest(request.method, request.path, request.query, headers, request.body)


def expect_error(code: str, request: SignedRequest, **kwargs: Any) -> AwsError:
    kwargs.setdefault("now", NOW)
    kwargs.setdefault("expected_service", "ssm")
    with pytest.raises(AwsError) as info:
        sigv4.verify(request, secrets, **kwargs)
    assert info.value.code == code, info.value
    assert info.value.status == 400
    return info.value


# --- botocore-signed requests verify ------------------------------------------------------


@pytest.mark.parametrize("token", [None, TOKEN])
@pytest.mark.parametrize(
    "url",
    [
        "https://ssm.us-east-1.amazonaws.com/",
        "https://portless.example.com:8443/",
        "http://127.0.0.1:8080/",
        "https://[::1]:9443/",
    ],
)
def test_botocore_signed_json_call_verifies(url: str, token: str | None) -> None:
    request = as_received(botocore_sign("POST", url, SSM_HEADERS, BODY, token=token))
    caller = sigv4.verify(request, secrets, now=NOW, expected_service="ssm")
    assert caller.access_key_id == AKID
    assert caller.region == "us-east-1"
    assert caller.service == "ssm"
    assert caller.signed_at == NOW
    assert caller.security_token == token
    expected = ["content-type", "host", "x-amz-date", "x-amz-target"]
    if token:
        expected.insert(3, "x-amz-security-token")
    assert list(caller.signed_headers) == expected


def test_go_sdk_signed_header_set_with_content_length() -> None:
    headers = {**SSM_HEADERS, "Content-Length": str(len(BODY))}
    request = as_received(
        botocore_sign("POST", "https://ssm.example.com/", headers, BODY, token=TOKEN)
    )
    caller = sigv4.verify(request, secrets, now=NOW, expected_service={"ssm", "ec2messages"})
    assert caller.signed_headers == (
        "content-length",
        "content-type",
        "host",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-target",
    )


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/v1/control-channel/mi-0123456789abcdef0", "role=subscribe&stream=input"),
        ("/v1/data-channel/user-0a1b2c3d4e5f", "role=publish_subscribe"),
    ],
)
def test_websocket_get_signed_by_botocore(path: str, query: str) -> None:
    url = f"wss://ssmmessages.example.com{path}?{query}"
    signed = botocore_sign("GET", url, {}, b"", token=TOKEN, service="ssmmessages")
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in signed.headers["Authorization"]
    request = as_received(
        signed,
        extra={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"},
    )
    caller = sigv4.verify(request, secrets, now=NOW, expected_service="ssmmessages")
    assert caller.service == "ssmmessages"
    assert caller.security_token == TOKEN
    expect_error("InvalidSignatureException", request, expected_service="ssm")


def test_query_needing_encoding_via_url_and_params() -> None:
    pairs = {"b key": "v/1", "a": "ü ~*+", "é": "", "Z": "="}
    encoded = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs.items())
    url = "https://portless.example.com:8443/v1/a%20path/x~y"
    via_url = botocore_sign("GET", f"{url}?{encoded}", {}, b"", service="ssmmessages")
    via_params = botocore_sign("GET", url, {}, b"", service="ssmmessages", params=pairs)
    assert via_url.headers["Authorization"] == via_params.headers["Authorization"]
    for signed in (via_url, via_params):
        sigv4.verify(as_received(signed), secrets, now=NOW, expected_service="ssmmessages")


def test_aws_documented_get_vanilla_vector() -> None:
    # From AWS's published SigV4 test suite ("get-vanilla").
    request = SignedRequest(
        "GET",
        "/",
        "",
        {
            "Host": "example.amazonaws.com",
            "X-Amz-Date": "20150830T123600Z",
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
            "aws4_request, SignedHeaders=host;x-amz-date, "
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        },
    )
    caller = sigv4.verify(
        request,
        {"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}.get,
        now=datetime(2015, 8, 30, 12, 36, tzinfo=UTC),
        expected_service="service",
    )
    assert caller.access_key_id == "AKIDEXAMPLE"


def test_multidict_headers_with_repeats_and_whitespace() -> None:
    headers: list[tuple[str, str]] = [
        ("Content-Type", "application/x-amz-json-1.1"),
        ("X-Multi", "  first   value "),
        ("x-multi", "second\tvalue"),
    ]
    signed = sigv4.sign_request(
        "POST",
        "https://h.example.com:444/",
        headers,
        BODY,
        AKID,
        SECRET,
        None,
        "eu-west-1",
        "ssm",
        NOW,
    )
    received = CIMultiDict(headers)
    received.update(signed)
    received["Host"] = "h.example.com:444"
    request = SignedRequest("POST", "/", "", received, BODY)
    sigv4.verify(request, secrets, now=NOW)
    assert (
        sigv4.canonical_headers(request.header_map, ["x-multi"])
        == "x-multi:first value,second value\n"
    )
    reordered = CIMultiDict(received)
    reordered.popall("x-multi")
    reordered.add("X-Multi", "second\tvalue")
    reordered.add("X-Multi", "  first   value ")
    expect_error(
        "InvalidSignatureException",
        SignedRequest("POST", "/", "", reordered, BODY),
        expected_service=None,
    )


def test_real_boto3_client_over_http() -> None:
    """boto3 sends an ssm call to a local server; what arrives on the wire verifies."""
    captured: list[SignedRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            path, _sep, query = self.path.partition("?")
            captured.append(SignedRequest("POST", path, query, list(self.headers.items()), body))
            payload = json.dumps({"Sessions": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = boto3.client(
            "ssm",
            region_name="eu-central-1",
            endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
            aws_access_key_id=AKID,
            aws_secret_access_key=SECRET,
            aws_session_token=TOKEN,
        )
        client.describe_sessions(State="Active", MaxResults=10)
    finally:
        server.shutdown()
        server.server_close()
    (request,) = captured
    caller = sigv4.verify(request, secrets, now=datetime.now(UTC), expected_service="ssm")
    assert caller.region == "eu-central-1"
    assert caller.security_token == TOKEN
    tampered = SignedRequest(
        request.method, request.path, request.query, request.headers, request.body + b" "
    )
    with pytest.raises(AwsError) as info:
        sigv4.verify(tampered, secrets, now=datetime.now(UTC))
    assert info.value.code == "InvalidSignatureException"


# --- tampering and policy errors ----------------------------------------------------------


@pytest.fixture
def good() -> SignedRequest:
    return as_received(
        botocore_sign("POST", "https://ssm.example.com:8443/", SSM_HEADERS, BODY, token=TOKEN)
    )


def test_good_request_verifies(good: SignedRequest) -> None:
    assert sigv4.verify(good, secrets, now=NOW, expected_service="ssm").access_key_id == AKID


def test_flipped_body_byte(good: SignedRequest) -> None:
    body = bytearray(good.body)
    body[5] ^= 0x01
    expect_error(
        "InvalidSignatureException", SignedRequest("POST", "/", "", good.headers, bytes(body))
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Amz-Target", "AmazonSSM.TerminateSession"),
        ("Content-Type", "application/x-amz-json-1.0"),
        ("Host", "ssm.example.com"),
        ("X-Amz-Security-Token", TOKEN + "x"),
    ],
)
def test_changed_signed_header(good: SignedRequest, name: str, value: str) -> None:
    err = expect_error("InvalidSignatureException", replace_header(good, name, value))
    assert err.message.startswith("The request signature we calculated does not match")


def test_unsigned_header_may_change(good: SignedRequest) -> None:
    request = replace_header(good, "User-Agent", "something/else")
    request = replace_header(request, "Content-Length", "999")
    sigv4.verify(request, secrets, now=NOW)


def test_flipped_signature(good: SignedRequest) -> None:
    auth = good.header_map.get("Authorization") or ""
    last = auth[-1]
    flipped = auth[:-1] + ("0" if last != "0" else "1")
    expect_error("InvalidSignatureException", replace_header(good, "Authorization", flipped))


def test_changed_timestamp_same_day(good: SignedRequest) -> None:
    err = expect_error(
        "InvalidSignatureException", replace_header(good, "X-Amz-Date", "20261122T000001Z")
    )
    assert err.message == INVALID_SIGNATURE_MESSAGE


def test_timestamp_other_day_mismatches_scope(good: SignedRequest) -> None:
    err = expect_error(
        "InvalidSignatureException",
        replace_header(good, "X-Amz-Date", "20261121T235959Z"),
    )
    assert err.message == (
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
        "HTTP: '20261122' != '20261121', from '20261121T235959Z'."
    )


def test_expired(good: SignedRequest) -> None:
    err = expect_error("InvalidSignatureException", good, now=NOW + timedelta(minutes=10))
    assert err.message == (
        "Signature expired: 20261122T000000Z is now earlier than 20261122T000500Z "
        "(20261122T001000Z - 5 min.)"
    )


def test_not_yet_current(good: SignedRequest) -> None:
    err = expect_error("InvalidSignatureException", good, now=NOW - timedelta(minutes=6))
    assert err.message == (
        "Signature not yet current: 20261122T000000Z is still later than 20261121T235900Z "
        "(20261121T235400Z + 5 min.)"
    )


def test_within_skew_accepted(good: SignedRequest) -> None:
    sigv4.verify(good, secrets, now=NOW + timedelta(minutes=5))
    sigv4.verify(good, secrets, now=NOW - timedelta(minutes=5))


def test_unknown_key(good: SignedRequest) -> None:
    with pytest.raises(AwsError) as info:
        sigv4.verify(good, lambda _key: None, now=NOW)
    assert info.value.code == "UnrecognizedClientException"
    assert info.value.message == "The security token included in the request is invalid."


def test_wrong_service_scope(good: SignedRequest) -> None:
    err = expect_error("InvalidSignatureException", good, expected_service="ssmmessages")
    assert err.message == "Credential should be scoped to correct service: 'ssmmessages'. "


def test_wrong_region(good: SignedRequest) -> None:
    err = expect_error("InvalidSignatureException", good, expected_region="eu-west-1")
    assert "not 'us-east-1'" in err.message


def test_wrong_secret() -> None:
    request = as_received(botocore_sign("POST", "https://ssm.example.com/", SSM_HEADERS, BODY))
    with pytest.raises(AwsError) as info:
        sigv4.verify(request, lambda _key: "not-the-secret", now=NOW)
    assert info.value.code == "InvalidSignatureException"


def test_missing_authorization(good: SignedRequest) -> None:
    err = expect_error(
        "MissingAuthenticationTokenException", replace_header(good, "Authorization", None)
    )
    assert err.message == "Missing Authentication Token"


def test_missing_date(good: SignedRequest) -> None:
    err = expect_error("IncompleteSignatureException", replace_header(good, "X-Amz-Date", None))
    assert "requires existence of either a 'X-Amz-Date' or a 'Date' header" in err.message


def test_bad_date_format(good: SignedRequest) -> None:
    err = expect_error(
        "IncompleteSignatureException", replace_header(good, "X-Amz-Date", "2026-11-22")
    )
    assert "ISO-8601 'basic format'" in err.message


def test_unsigned_security_token_rejected() -> None:
    request = as_received(
        botocore_sign("POST", "https://ssm.example.com/", SSM_HEADERS, BODY),
        extra={"X-Amz-Security-Token": TOKEN},
    )
    err = expect_error("IncompleteSignatureException", request)
    assert "X-Amz-Security-Token" in err.message


def test_host_must_be_signed() -> None:
    headers = {"X-Amz-Date": "20261122T000000Z", "Host": "h"}
    key = sigv4.derive_signing_key(SECRET, "20261122", "us-east-1", "ssm")
    canonical = sigv4.canonical_request(
        "POST", "/", "", headers, ["x-amz-date"], sigv4.EMPTY_SHA256
    )
    scope = "20261122/us-east-1/ssm/aws4_request"
    signature = sigv4.compute_signature(
        key, sigv4.string_to_sign("20261122T000000Z", scope, canonical)
    )
    headers["Authorization"] = sigv4.authorization_header(AKID, scope, ["x-amz-date"], signature)
    err = expect_error("IncompleteSignatureException", SignedRequest("POST", "/", "", headers))
    assert "'Host'" in err.message


def test_signed_header_absent(good: SignedRequest) -> None:
    expect_error("InvalidSignatureException", replace_header(good, "X-Amz-Target", None))


def test_signed_content_sha256_must_match_body() -> None:
    headers = {**SSM_HEADERS, "X-Amz-Content-SHA256": "0" * 64}
    request = as_received(botocore_sign("POST", "https://ssm.example.com/", headers, BODY))
    err = expect_error("XAmzContentSHA256Mismatch", request)
    assert err.status == 400
    headers = {**SSM_HEADERS, "X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()}
    request = as_received(botocore_sign("POST", "https://ssm.example.com/", headers, BODY))
    sigv4.verify(request, secrets, now=NOW)


def test_unsigned_content_sha256_is_ignored(good: SignedRequest) -> None:
    # The agent adds X-Amz-Content-Sha256 after signing; the body hash is what counts.
    sigv4.verify(replace_header(good, "X-Amz-Content-Sha256", "f" * 64), secrets, now=NOW)


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (
            "AWS4-HMAC-SHA256 Credential=a/20261122/us-east-1/ssm/aws4_request, Signature=ab",
            "'SignedHeaders'",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=a/20261122/us-east-1/ssm, SignedHeaders=host, Signature=ab",
            "5 slash",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=a/20261122/us-east-1/ssm/aws5, SignedHeaders=host, Signature=ab",
            "terminator",
        ),
        ("AWS4-HMAC-SHA256 Credential, SignedHeaders=host, Signature=ab", "missing equal-sign"),
        ("AWS4-HMAC-SHA512 Credential=a/20261122/us-east-1/ssm/aws4_request", "algorithm"),
        (
            "AWS4-HMAC-SHA256 Credential=a/2026-11-2/us-east-1/ssm/aws4_request, SignedHeaders=host, Signature=ab",
            "YYYYMMDD",
        ),
    ],
)
def test_malformed_authorization(header: str, fragment: str) -> None:
    with pytest.raises(AwsError) as info:
        sigv4.parse_authorization(header)
    assert info.value.code == "IncompleteSignatureException"
    assert fragment in info.value.message


def test_parse_authorization_fields() -> None:
    parsed = sigv4.parse_authorization(
        "AWS4-HMAC-SHA256 Credential=mi-0123456789abcdef0/20261122/us-east-1/ssm/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=YWJj+/=="
    )
    assert parsed.access_key_id == "mi-0123456789abcdef0"
    assert parsed.scope == "20261122/us-east-1/ssm/aws4_request"
    assert parsed.signed_headers == ("content-type", "host", "x-amz-date", "x-amz-target")
    assert parsed.signature == "YWJj+/=="
    assert not parsed.signature_is_hex


# --- canonicalisation details -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("", "/"),
        ("/", "/"),
        ("/a%20b", "/a%2520b"),
        ("/a//b/./c/../d/", "/a/b/d/"),
        ("/~user/x-y_z.w", "/~user/x-y_z.w"),
        ("/a b", "/a%20b"),
    ],
)
def test_canonical_uri(raw: str, canonical: str) -> None:
    assert sigv4.canonical_uri(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("", ""),
        ("stream=input&role=subscribe", "role=subscribe&stream=input"),
        ("b&a=", "a=&b="),
        ("a=%2f&a=%2F", "a=%2F&a=%2F"),
        ("k=a+b&q=%2B", "k=a%20b&q=%2B"),
        ("a-b=1&a=2", "a=2&a-b=1"),
        ("x=%E2%82%AC&y=%7E", "x=%E2%82%AC&y=~"),
    ],
)
def test_canonical_query_string(raw: str, canonical: str) -> None:
    assert sigv4.canonical_query_string(raw) == canonical


def test_derive_signing_key_known_value() -> None:
    # AWS documentation example (iam, 20150830, us-east-1).
    key = sigv4.derive_signing_key(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830", "us-east-1", "iam"
    )
    assert key.hex() == "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"


# --- our signer equals botocore -----------------------------------------------------------

_HEADER_NAME = st.from_regex(r"x-[a-zA-Z0-9][a-zA-Z0-9-]{0,15}", fullmatch=True).filter(
    lambda n: (
        n.lower()
        not in {"x-amz-date", "x-amz-security-token", "x-amz-content-sha256", "x-amzn-trace-id"}
    )
)
_HEADER_VALUE = st.text(
    alphabet=st.sampled_from([chr(c) for c in range(0x20, 0x7F)] + ["\t"]), max_size=40
)
_SEGMENT = st.one_of(
    st.sampled_from([".", "..", "", "%20", "%2F", "a%25b", "~x", "a b", "ü", "@:;=,$!*'()+&"]),
    st.text(
        alphabet=st.characters(blacklist_characters="/?#%", blacklist_categories=["Cs", "Cc"]),
        max_size=8,
    ),
)
_QUERY_PART = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=8)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes, str | None]:
    host = draw(
        st.sampled_from(
            [
                "ssm.us-east-1.amazonaws.com",
                "Portless.Example.com:8443",
                "127.0.0.1:80",
                "[::1]:443",
            ]
        )
    )
    path = "/" + "/".join(draw(st.lists(_SEGMENT, max_size=5)))
    pairs = draw(st.lists(st.tuples(_QUERY_PART, _QUERY_PART), max_size=4))
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)
    url = f"https://{host}{path}" + (f"?{query}" if query else "")
    names = draw(st.lists(_HEADER_NAME, max_size=5, unique_by=str.lower))
    headers = {name: draw(_HEADER_VALUE) for name in names}
    headers.update(SSM_HEADERS)
    body = draw(st.binary(max_size=64))
    token = draw(st.sampled_from([None, TOKEN]))
    return draw(st.sampled_from(["GET", "POST", "put"])), url, headers, body, token


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1)))
def test_signer_matches_botocore(
    req: tuple[str, str, dict[str, str], bytes, str | None], when: datetime
) -> None:
    method, url, headers, body, token = req
    now = when.replace(microsecond=0, tzinfo=UTC)
    theirs = botocore_sign(method, url, headers, body, token=token, now=now, region="ap-south-1")
    ours = sigv4.sign_request(
        method, url, headers, body, AKID, SECRET, token, "ap-south-1", "ssm", now
    )
    assert ours["Authorization"] == theirs.headers["Authorization"]
    assert ours["X-Amz-Date"] == theirs.headers["X-Amz-Date"]
    assert ours.get("X-Amz-Security-Token") == theirs.headers.get("X-Amz-Security-Token")


@settings(max_examples=200, deadline=None)
@given(requests())
def test_signer_round_trips_through_verify(
    req: tuple[str, str, dict[str, str], bytes, str | None],
) -> None:
    method, url, headers, body, token = req
    added = sigv4.sign_request(
        method, url, headers, body, AKID, SECRET, token, "us-east-1", "ssm", NOW
    )
    received = {**headers, **added, "Host": sigv4.host_from_url(url), "User-Agent": "test"}
    request = SignedRequest.from_target(method, url, received, body)
    caller = sigv4.verify(request, secrets, now=NOW + timedelta(seconds=30), expected_service="ssm")
    assert caller.security_token == token
    if body:
        tampered = SignedRequest(request.method, request.path, request.query, received, body + b"!")
        with pytest.raises(AwsError) as info:
            sigv4.verify(tampered, secrets, now=NOW)
        assert info.value.code == "InvalidSignatureException"


def test_signer_websocket_get_matches_agent_shape() -> None:
    url = "wss://ssmmessages.example.com/v1/control-channel/mi-0123456789abcdef0?role=subscribe&stream=input"
    added = sigv4.sign_request(
        "GET", url, {}, b"", AKID, SECRET, TOKEN, "us-east-1", "ssmmessages", NOW
    )
    assert set(added) == {"X-Amz-Date", "X-Amz-Security-Token", "Authorization"}
    assert (
        "/ssmmessages/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, "
        in added["Authorization"]
    )
    theirs = botocore_sign("GET", url, {}, b"", token=TOKEN, service="ssmmessages")
    assert added["Authorization"] == theirs.headers["Authorization"]


def test_signer_drops_unsignable_headers() -> None:
    headers = {"User-Agent": "Go-http-client/1.1", "Transfer-Encoding": "chunked", **SSM_HEADERS}
    added = sigv4.sign_request(
        "POST", "https://h/", headers, BODY, AKID, SECRET, None, "r", "ssm", NOW
    )
    assert "SignedHeaders=content-type;host;x-amz-date;x-amz-target," in added["Authorization"]
