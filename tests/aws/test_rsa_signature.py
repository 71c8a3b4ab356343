"""The agent's RSA-PSS SigV4 variant: sign/verify round trips, tampering, key encodings."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from portless.aws import rsa_signature as rs
from portless.aws.errors import AwsError
from portless.aws.sigv4 import SignedRequest, parse_authorization

NOW = datetime(2026, 11, 22, 3, 37, 37, tzinfo=UTC)
INSTANCE = "mi-0123456789abcdef0"
URL = "https://ssm.portless.example:8443/"
HOST = "ssm.portless.example:8443"
BODY = b'{"Fingerprint":"2f0c6a4e-7a0b-4a65-9d0e-3c5a1f6b7d8e"}'
AGENT_HEADERS = {
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": "AmazonSSM.RequestManagedInstanceRoleToken",
    "User-Agent": "aws-sdk-go/1.51.20 (go1.22; linux; amd64) amazon-ssm-agent/3.3.0.0",
    "Transfer-Encoding": "chunked",
}


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rs.generate_instance_key()


def signed_request(key: rsa.RSAPrivateKey, body: bytes = BODY) -> SignedRequest:
    added = rs.sign_rsa("POST", URL, AGENT_HEADERS, body, INSTANCE, key, "us-east-1", NOW)
    return SignedRequest("POST", "/", "", {**AGENT_HEADERS, **added, "Host": HOST}, body)


def plain_headers(request: SignedRequest) -> dict[str, str]:
    hmap = request.header_map
    return {name: value for name in hmap.names() if (value := hmap.get(name)) is not None}


def test_round_trip(key: rsa.RSAPrivateKey) -> None:
    request = signed_request(key)
    assert rs.verify_rsa(request, rs.public_key_b64(key), now=NOW) == INSTANCE


def test_header_shape_matches_agent(key: rsa.RSAPrivateKey) -> None:
    added = rs.sign_rsa("POST", URL, AGENT_HEADERS, BODY, INSTANCE, key, "us-east-1", NOW)
    assert added["X-Amz-Date"] == "20261122T033737Z"
    assert added["X-Amz-Content-Sha256"] == hashlib.sha256(BODY).hexdigest()
    auth = parse_authorization(added["Authorization"])
    assert auth.access_key_id == INSTANCE
    assert auth.scope == "20261122/us-east-1/ssm/aws4_request"
    assert auth.signed_headers == ("content-type", "host", "x-amz-date", "x-amz-target")
    assert rs.is_rsa_signed(auth)
    assert len(base64.b64decode(auth.signature, validate=True)) == 256


def test_independent_verification_from_spec_steps(key: rsa.RSAPrivateKey) -> None:
    """Rebuild the string to sign by hand (spec §4.2) and check the signature with cryptography."""
    added = rs.sign_rsa("POST", URL, AGENT_HEADERS, BODY, INSTANCE, key, "us-east-1", NOW)
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            "content-type:application/x-amz-json-1.1",
            f"host:{HOST}",
            "x-amz-date:20261122T033737Z",
            "x-amz-target:AmazonSSM.RequestManagedInstanceRoleToken",
            "",
            "content-type;host;x-amz-date;x-amz-target",
            hashlib.sha256(BODY).hexdigest(),
        ]
    )
    to_sign = (
        "AWS4-HMAC-SHA256\n20261122T033737Z\n20261122/us-east-1/ssm/aws4_request\n"
        + hashlib.sha256(canonical.encode()).hexdigest()
    )
    signature = base64.b64decode(added["Authorization"].rsplit("Signature=", 1)[1])
    key.public_key().verify(
        signature,
        to_sign.encode(),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


def test_tampered_body_rejected(key: rsa.RSAPrivateKey) -> None:
    request = signed_request(key)
    tampered = SignedRequest("POST", "/", "", request.headers, BODY.replace(b"2f0c", b"2f0d"))
    with pytest.raises(AwsError) as info:
        rs.verify_rsa(tampered, rs.public_key_b64(key), now=NOW)
    assert info.value.code == "InvalidSignatureException"


def test_tampered_target_rejected(key: rsa.RSAPrivateKey) -> None:
    request = signed_request(key)
    headers = plain_headers(request)
    headers["X-Amz-Target"] = "AmazonSSM.UpdateManagedInstancePublicKey"
    with pytest.raises(AwsError) as info:
        rs.verify_rsa(
            SignedRequest("POST", "/", "", headers, BODY), rs.public_key_b64(key), now=NOW
        )
    assert info.value.code == "InvalidSignatureException"


def test_other_key_rejected(key: rsa.RSAPrivateKey) -> None:
    other = rs.generate_instance_key()
    with pytest.raises(AwsError) as info:
        rs.verify_rsa(signed_request(key), rs.public_key_b64(other), now=NOW)
    assert info.value.code == "InvalidSignatureException"


def test_lookup_and_unknown_instance(key: rsa.RSAPrivateKey) -> None:
    keys = {INSTANCE: rs.public_key_b64(key)}
    assert rs.verify_rsa(signed_request(key), keys.get, now=NOW) == INSTANCE
    with pytest.raises(AwsError) as info:
        no_keys: dict[str, str] = {}
        rs.verify_rsa(signed_request(key), no_keys.get, now=NOW)
    assert info.value.code == "UnrecognizedClientException"


def test_expired(key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(AwsError) as info:
        rs.verify_rsa(signed_request(key), rs.public_key_b64(key), now=NOW + timedelta(minutes=6))
    assert info.value.code == "InvalidSignatureException"
    assert info.value.message.startswith("Signature expired: 20261122T033737Z")


def test_hex_signature_is_not_rsa(key: rsa.RSAPrivateKey) -> None:
    request = signed_request(key)
    headers = plain_headers(request)
    scope_part = headers["authorization"].rsplit("Signature=", 1)[0]
    headers["authorization"] = scope_part + "Signature=" + "ab" * 32
    assert not rs.is_rsa_signed(parse_authorization(headers["authorization"]))
    with pytest.raises(AwsError) as info:
        rs.verify_rsa(
            SignedRequest("POST", "/", "", headers, BODY), rs.public_key_b64(key), now=NOW
        )
    assert info.value.code == "InvalidSignatureException"


def test_key_encodings(key: rsa.RSAPrivateKey) -> None:
    public = rs.public_key_b64(key)
    assert len(public) == 392
    assert public.startswith("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA")
    assert public.endswith("IDAQAB")
    assert rs.public_key_b64(rs.load_public_key_b64(public)) == public
    private = rs.private_key_b64(key)
    der = base64.b64decode(private)
    # PKCS#1 RSAPrivateKey: SEQUENCE { INTEGER 0 (version), INTEGER modulus, ... }, not PKCS#8.
    assert der[0] == 0x30 and der[4:7] == b"\x02\x01\x00" and der[7] == 0x02
    reloaded = rs.load_private_key_b64(private)
    assert rs.public_key_b64(reloaded) == public
    assert reloaded.private_numbers() == key.private_numbers()
    assert key.public_key().public_numbers().e == 65537
    with pytest.raises(ValueError):
        rs.load_public_key_b64(private)
