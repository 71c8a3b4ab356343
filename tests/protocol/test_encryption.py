"""Tests for KMS session encryption (client spec §7.7, agent spec §12.9)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from portless.protocol.encryption import (
    DATA_KEY_SIZE,
    EncryptionError,
    SessionCipher,
    challenge_request,
    challenge_response,
    encrypted_payload_types,
    make_challenge,
    verify_challenge,
)
from portless.protocol.message import PayloadType

KEY = bytes(range(DATA_KEY_SIZE))


def ends(key: bytes = KEY) -> tuple[SessionCipher, SessionCipher]:
    return SessionCipher(key, is_client=True), SessionCipher(key, is_client=False)


@settings(max_examples=50, deadline=None)
@given(key=st.binary(min_size=64, max_size=64), plaintext=st.binary(max_size=5000))
def test_round_trip_both_directions(key: bytes, plaintext: bytes) -> None:
    client, agent = ends(key)
    assert agent.decrypt(client.encrypt(plaintext)) == plaintext
    assert client.decrypt(agent.encrypt(plaintext)) == plaintext


def test_key_halves_match_spec() -> None:
    client, agent = ends()
    nonce = bytes(12)
    # Client encrypts with K[32:64]; agent encrypts with K[0:32].
    from_client = client.encrypt(b"hello")
    assert AESGCM(KEY[32:]).decrypt(from_client[:12], from_client[12:], None) == b"hello"
    from_agent = agent.encrypt(b"world")
    assert AESGCM(KEY[:32]).decrypt(from_agent[:12], from_agent[12:], None) == b"world"
    # A foreign implementation's output with the right half and layout is accepted.
    assert agent.decrypt(nonce + AESGCM(KEY[32:]).encrypt(nonce, b"x", None)) == b"x"
    assert client.decrypt(nonce + AESGCM(KEY[:32]).encrypt(nonce, b"y", None)) == b"y"


def test_a_side_cannot_read_its_own_output() -> None:
    client, agent = ends()
    with pytest.raises(EncryptionError):
        client.decrypt(client.encrypt(b"loop"))
    with pytest.raises(EncryptionError):
        agent.decrypt(agent.encrypt(b"loop"))


def test_layout_and_overhead() -> None:
    client, agent = ends()
    for cipher in (client, agent):
        for size in (0, 1, 1024):
            out = cipher.encrypt(os.urandom(size))
            assert len(out) == size + 28
    a, b = client.encrypt(b"same"), client.encrypt(b"same")
    assert a[:12] != b[:12]
    assert a != b


def test_agent_nonce_is_incrementing_counter() -> None:
    _, agent = ends()
    nonces = [int.from_bytes(agent.encrypt(b"m")[:12], "little") for _ in range(5)]
    assert [(n - nonces[0]) % (1 << 96) for n in nonces] == [0, 1, 2, 3, 4]


def test_agent_nonce_counter_wraps_across_words() -> None:
    _, agent = ends()
    agent._counter = (1 << 96) - 1
    first, second = agent.encrypt(b"a")[:12], agent.encrypt(b"b")[:12]
    assert first == b"\xff" * 12
    assert second == bytes(12)


def test_wrong_key_rejected() -> None:
    client, _ = ends()
    _, other_agent = ends(os.urandom(64))
    with pytest.raises(EncryptionError):
        other_agent.decrypt(client.encrypt(b"secret"))


@settings(max_examples=50, deadline=None)
@given(plaintext=st.binary(max_size=200), data=st.data())
def test_any_single_bit_flip_rejected(plaintext: bytes, data: st.DataObject) -> None:
    client, agent = ends()
    sealed = bytearray(client.encrypt(plaintext))
    bit = data.draw(st.integers(0, len(sealed) * 8 - 1))
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(EncryptionError):
        agent.decrypt(bytes(sealed))


@pytest.mark.parametrize("size", [0, 11, 12, 27])
def test_short_input_rejected(size: int) -> None:
    _, agent = ends()
    with pytest.raises(EncryptionError):
        agent.decrypt(bytes(size))


def test_truncated_ciphertext_rejected() -> None:
    client, agent = ends()
    sealed = client.encrypt(b"0123456789")
    with pytest.raises(EncryptionError):
        agent.decrypt(sealed[:-1])


@pytest.mark.parametrize("size", [0, 32, 63, 65])
def test_bad_key_size(size: int) -> None:
    with pytest.raises(EncryptionError):
        SessionCipher(bytes(size), is_client=True)


def test_challenge_dance() -> None:
    client, agent = ends()
    challenge, request = challenge_request(agent)
    assert len(challenge) == 64
    assert len(request) == 64 + 28
    response = challenge_response(client, request)
    assert response != request
    verify_challenge(agent, challenge, response)


def test_challenge_with_mismatched_keys_fails() -> None:
    client, _ = ends()
    _, agent = ends(os.urandom(64))
    _, request = challenge_request(agent)
    with pytest.raises(EncryptionError):
        challenge_response(client, request)


def test_challenge_echo_or_wrong_plaintext_fails() -> None:
    client, agent = ends()
    challenge, request = challenge_request(agent)
    # Echoing the request back is encrypted under the agent's own key: rejected.
    with pytest.raises(EncryptionError):
        verify_challenge(agent, challenge, request)
    # A valid client encryption of something else: rejected.
    with pytest.raises(EncryptionError):
        verify_challenge(agent, challenge, client.encrypt(make_challenge()))


def test_challenge_roles_enforced() -> None:
    client, agent = ends()
    with pytest.raises(ValueError):
        challenge_request(client)
    with pytest.raises(ValueError):
        challenge_response(agent, b"")


def test_make_challenge_is_random() -> None:
    a, b = make_challenge(), make_challenge()
    assert len(a) == len(b) == 64
    assert a != b


def test_encrypted_payload_types() -> None:
    assert encrypted_payload_types(sender_is_client=True) == {PayloadType.OUTPUT}
    assert encrypted_payload_types(sender_is_client=False) == {
        PayloadType.OUTPUT,
        PayloadType.STDERR,
        PayloadType.EXIT_CODE,
    }
    assert encrypted_payload_types(sender_is_client=False) == {1, 11, 12}
