"""The agent's RSA-signed SigV4 variant (agent spec §4.2) and the instance key helpers.

A registered managed instance proves its identity on ``RequestManagedInstanceRoleToken`` (and
``UpdateManagedInstancePublicKey``) by signing the ordinary SigV4 string to sign with its RSA
private key (RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32, standard base64) instead of an HMAC;
the access-key slot of the credential carries the instance id. Canonicalisation is shared
with :mod:`portless.aws.sigv4`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from portless.aws.errors import invalid_signature, unrecognized_client
from portless.aws.sigv4 import (
    DEFAULT_MAX_SKEW,
    HeaderInput,
    ParsedAuth,
    SignedRequest,
    authorization_header,
    prepare_client_signature,
    prepare_verification,
)

__all__ = [
    "KEY_BITS",
    "PSS_SALT_LENGTH",
    "generate_instance_key",
    "is_rsa_signed",
    "load_private_key_b64",
    "load_public_key_b64",
    "private_key_b64",
    "public_key_b64",
    "sign_rsa",
    "verify_rsa",
]

KEY_BITS = 2048
PSS_SALT_LENGTH = 32
RSA_SERVICE = "ssm"

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)


# --- keys ------------------------------------------------------------------------------


def generate_instance_key(bits: int = KEY_BITS) -> rsa.RSAPrivateKey:
    """A fresh instance key pair: RSA, public exponent 65537, 2048 bits like the agent's."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def public_key_b64(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """Standard base64 of the DER SubjectPublicKeyInfo (392 characters for 2048 bits), the
    ``PublicKey`` form of RegisterManagedInstance."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def private_key_b64(key: rsa.RSAPrivateKey) -> str:
    """Standard base64 of the PKCS#1 DER RSAPrivateKey, as the agent stores it."""
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return base64.b64encode(der).decode("ascii")


def load_private_key_b64(text: str) -> rsa.RSAPrivateKey:
    """Inverse of :func:`private_key_b64`; ValueError if it is not an RSA private key."""
    der = base64.b64decode(text, validate=True)
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def load_public_key_b64(text: str) -> rsa.RSAPublicKey:
    """Inverse of :func:`public_key_b64`; ValueError if it is not an RSA SPKI public key."""
    der = base64.b64decode(text, validate=True)
    key = serialization.load_der_public_key(der)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


# --- signing ---------------------------------------------------------------------------


def is_rsa_signed(auth: ParsedAuth) -> bool:
    """True if the Authorization header carries an RSA (base64) rather than HMAC (hex) signature."""
    return not auth.signature_is_hex


def sign_rsa(
    method: str,
    url: str,
    headers: HeaderInput,
    body: bytes,
    instance_id: str,
    private_key: rsa.RSAPrivateKey,
    region: str,
    now: datetime,
) -> dict[str, str]:
    """Sign a request the way amazon-ssm-agent does and return the headers to add.

    Returns ``X-Amz-Date``, ``Authorization`` and, added after signing and therefore not
    signed, ``X-Amz-Content-Sha256`` (the body's hex SHA-256), like the stock agent.
    """
    plan = prepare_client_signature(
        method, url, headers, body, now=now, region=region, service=RSA_SERVICE
    )
    raw = private_key.sign(plan.string_to_sign.encode("utf-8"), _PSS, hashes.SHA256())
    signature = base64.b64encode(raw).decode("ascii")
    result = dict(plan.headers_to_add)
    result["Authorization"] = authorization_header(
        instance_id, plan.scope, plan.signed_headers, signature
    )
    result["X-Amz-Content-Sha256"] = hashlib.sha256(body).hexdigest()
    return result


def verify_rsa(
    request: SignedRequest,
    public_key_spki_der_b64: str | Callable[[str], str | None],
    *,
    now: datetime,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
    expected_region: str | None = None,
) -> str:
    """Verify an RSA-signed request and return the instance id it was signed for.

    ``public_key_spki_der_b64`` is the instance's registered key (base64 SPKI DER) or a lookup
    from instance id to that key (None if the instance is unknown, which gives
    UnrecognizedClientException). A bad signature gives InvalidSignatureException.
    """
    prepared = prepare_verification(
        request,
        now=now,
        expected_service=RSA_SERVICE,
        expected_region=expected_region,
        max_skew=max_skew,
    )
    instance_id = prepared.auth.access_key_id
    if isinstance(public_key_spki_der_b64, str):
        key_text: str | None = public_key_spki_der_b64
    else:
        key_text = public_key_spki_der_b64(instance_id)
    if key_text is None:
        raise unrecognized_client()
    try:
        public_key = load_public_key_b64(key_text)
    except (ValueError, binascii.Error):
        raise unrecognized_client() from None
    try:
        signature = base64.b64decode(prepared.auth.signature, validate=True)
    except (ValueError, binascii.Error):
        raise invalid_signature() from None
    try:
        public_key.verify(signature, prepared.string_to_sign.encode("utf-8"), _PSS, hashes.SHA256())
    except InvalidSignature:
        raise invalid_signature() from None
    return instance_id
