"""RFC 6238 TOTP (and the RFC 4226 HOTP it is built on) against the RFCs' published vectors."""

from __future__ import annotations

import pytest

from portless.iam import totp

SHA1_SEED = b"12345678901234567890"
SHA256_SEED = b"12345678901234567890123456789012"
SHA512_SEED = b"1234567890123456789012345678901234567890123456789012345678901234"

# RFC 6238 Appendix B: (time, SHA-1, SHA-256, SHA-512), 8 digits, 30-second steps.
RFC6238 = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]

# RFC 4226 Appendix D: HOTP values for counters 0..9, 6 digits.
RFC4226 = [
    "755224", "287082", "359152", "969429", "338314",
    "254676", "287922", "162583", "399871", "520489",
]  # fmt: skip


@pytest.mark.parametrize(("moment", "sha1", "sha256", "sha512"), RFC6238)
def test_rfc6238_vectors(moment: int, sha1: str, sha256: str, sha512: str) -> None:
    assert totp.totp(SHA1_SEED, moment, digits=8) == sha1
    assert totp.totp(SHA256_SEED, moment, digits=8, algorithm="sha256") == sha256
    assert totp.totp(SHA512_SEED, moment, digits=8, algorithm="sha512") == sha512


def test_rfc4226_vectors() -> None:
    assert [totp.hotp(SHA1_SEED, c) for c in range(10)] == RFC4226


def test_time_step() -> None:
    assert totp.time_step(59) == 1
    assert totp.time_step(60) == 2
    assert totp.time_step(1111111109) == 0x023523EC


def test_six_digit_code_is_the_tail_of_the_eight_digit_one() -> None:
    assert totp.totp(SHA1_SEED, 59) == "287082"


def test_match_step_window_and_replay() -> None:
    now = 1_700_000_000.0
    step = totp.time_step(now)
    code = totp.hotp(SHA1_SEED, step)
    assert totp.match_step(SHA1_SEED, code, now) == step
    # One step of drift either way is tolerated, two are not.
    assert totp.match_step(SHA1_SEED, totp.hotp(SHA1_SEED, step - 1), now) == step - 1
    assert totp.match_step(SHA1_SEED, totp.hotp(SHA1_SEED, step + 1), now) == step + 1
    assert totp.match_step(SHA1_SEED, totp.hotp(SHA1_SEED, step + 2), now) is None
    assert totp.match_step(SHA1_SEED, totp.hotp(SHA1_SEED, step - 2), now) is None
    # A step at or before the last one used is refused (a replayed code).
    assert totp.match_step(SHA1_SEED, code, now, after=step) is None
    assert totp.match_step(SHA1_SEED, code, now, after=step - 1) == step
    assert totp.verify(SHA1_SEED, code, now)
    assert not totp.verify(SHA1_SEED, code, now, after=step)


@pytest.mark.parametrize("bad", ["", "12345", "1234567", "abcdef", "12 456"])
def test_malformed_codes_never_match(bad: str) -> None:
    assert totp.match_step(SHA1_SEED, bad, 1_700_000_000.0) is None


def test_secret_encoding_round_trip() -> None:
    seed = totp.generate_secret()
    assert len(seed) == 64
    assert set(seed) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    raw = totp.decode_secret(seed)
    assert len(raw) == totp.SECRET_BYTES
    assert totp.encode_secret(raw) == seed
    # Authenticator apps accept lower case, spaces and padding.
    spaced = " ".join(seed[i : i + 4] for i in range(0, len(seed), 4)).lower()
    assert totp.decode_secret(spaced) == raw
    assert totp.decode_secret("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ") == SHA1_SEED
    with pytest.raises(ValueError):
        totp.decode_secret("not base32!")
    with pytest.raises(ValueError):
        totp.decode_secret("")


def test_provisioning_uri() -> None:
    uri = totp.provisioning_uri("JBSWY3DPEHPK3PXP", "alice@portless")
    assert uri.startswith("otpauth://totp/portless:alice@portless?secret=JBSWY3DPEHPK3PXP")
