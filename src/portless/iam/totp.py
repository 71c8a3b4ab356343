"""Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP), as virtual MFA devices use.

Authenticator apps default to SHA-1, 6 digits and a 30-second step, which is what IAM's
virtual MFA devices are; the functions take the others for completeness (and for the RFC's
SHA-256/SHA-512 test vectors). Everything is a pure function of the secret and the time.

Replay protection is the caller's: :func:`match_step` says *which* time step a code belongs
to, and the store refuses a step at or before the last one it accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Literal

__all__ = [
    "DEFAULT_DIGITS",
    "DEFAULT_STEP",
    "Algorithm",
    "decode_secret",
    "encode_secret",
    "generate_secret",
    "hotp",
    "match_step",
    "provisioning_uri",
    "time_step",
    "totp",
    "verify",
]

DEFAULT_STEP = 30
DEFAULT_DIGITS = 6
SECRET_BYTES = 40
"""IAM's virtual MFA seeds are 40 random bytes: 64 base32 characters."""

Algorithm = Literal["sha1", "sha256", "sha512"]


def generate_secret(nbytes: int = SECRET_BYTES) -> str:
    """A fresh random seed as unpadded base32 text (what ``Base32StringSeed`` holds)."""
    return encode_secret(secrets.token_bytes(nbytes))


def encode_secret(raw: bytes) -> str:
    """Raw key bytes as unpadded upper-case base32."""
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def decode_secret(text: str) -> bytes:
    """Base32 seed text (any case, spaces and padding optional) to key bytes.

    Raises ValueError if it is not base32.
    """
    cleaned = "".join(text.split()).upper().rstrip("=")
    if not cleaned:
        raise ValueError("empty TOTP secret")
    padded = cleaned + "=" * (-len(cleaned) % 8)
    try:
        return base64.b32decode(padded)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a base32 secret: {exc}") from None


def hotp(
    key: bytes, counter: int, *, digits: int = DEFAULT_DIGITS, algorithm: Algorithm = "sha1"
) -> str:
    """RFC 4226 HOTP value of *counter*, zero-padded to *digits* digits."""
    if counter < 0:
        raise ValueError("HOTP counter must not be negative")
    if not 1 <= digits <= 10:
        raise ValueError("digits must be between 1 and 10")
    mac = hmac.new(key, counter.to_bytes(8, "big"), getattr(hashlib, algorithm)).digest()
    offset = mac[-1] & 0x0F
    binary = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def time_step(unix_time: float, *, step: int = DEFAULT_STEP, t0: int = 0) -> int:
    """The RFC 6238 counter T for a moment: ``floor((time - T0) / step)``."""
    return int((unix_time - t0) // step)


def totp(
    key: bytes,
    unix_time: float,
    *,
    step: int = DEFAULT_STEP,
    digits: int = DEFAULT_DIGITS,
    algorithm: Algorithm = "sha1",
    t0: int = 0,
) -> str:
    """The TOTP code valid at *unix_time*."""
    return hotp(key, time_step(unix_time, step=step, t0=t0), digits=digits, algorithm=algorithm)


def match_step(
    key: bytes,
    code: str,
    unix_time: float,
    *,
    window: int = 1,
    step: int = DEFAULT_STEP,
    digits: int = DEFAULT_DIGITS,
    algorithm: Algorithm = "sha1",
    t0: int = 0,
    after: int | None = None,
) -> int | None:
    """The time step (within ±*window* steps of now) whose code is *code*, or None.

    Steps at or before *after* (the last step already used) are not considered, so a code
    cannot be accepted twice. The comparison is constant-time per candidate.
    """
    if len(code) != digits or not code.isdigit():
        return None
    current = time_step(unix_time, step=step, t0=t0)
    for candidate in _window(current, window):
        if candidate < 0 or (after is not None and candidate <= after):
            continue
        expected = hotp(key, candidate, digits=digits, algorithm=algorithm)
        if hmac.compare_digest(expected.encode(), code.encode()):
            return candidate
    return None


def _window(current: int, window: int) -> Iterable[int]:
    # Prefer the current step, then the nearest neighbours.
    yield current
    for delta in range(1, window + 1):
        yield current - delta
        yield current + delta


def verify(
    key: bytes,
    code: str,
    unix_time: float,
    *,
    window: int = 1,
    step: int = DEFAULT_STEP,
    digits: int = DEFAULT_DIGITS,
    algorithm: Algorithm = "sha1",
    after: int | None = None,
) -> bool:
    """Whether *code* is valid at *unix_time* (±*window* steps, steps after *after* only)."""
    return (
        match_step(
            key,
            code,
            unix_time,
            window=window,
            step=step,
            digits=digits,
            algorithm=algorithm,
            after=after,
        )
        is not None
    )


def provisioning_uri(secret: str, account_name: str, issuer: str = "portless") -> str:
    """The ``otpauth://totp/…`` URI authenticator apps scan (the QR code's content)."""
    from urllib.parse import quote

    label = quote(f"{issuer}:{account_name}", safe=":@")
    return f"otpauth://totp/{label}?secret={secret}&issuer={quote(issuer, safe='')}"
