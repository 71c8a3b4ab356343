"""KMS session encryption of data-channel payloads (client spec §7.7, agent spec §12.9).

Both ends share one 64-byte KMS data key; each direction uses its own half with
AES-256-GCM, and an encrypted payload is nonce(12) || ciphertext || tag(16), no AAD.
"""

from __future__ import annotations

import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from portless.protocol.message import PayloadType

DATA_KEY_SIZE = 64
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
CHALLENGE_SIZE = 64

_NONCE_MODULUS = 1 << (8 * NONCE_SIZE)

_CLIENT_TO_AGENT = frozenset({int(PayloadType.OUTPUT)})
_AGENT_TO_CLIENT = frozenset(
    {int(PayloadType.OUTPUT), int(PayloadType.STDERR), int(PayloadType.EXIT_CODE)}
)


class EncryptionError(Exception):
    """A payload could not be decrypted (short, forged, wrong key) or the key is unusable."""


def encrypted_payload_types(*, sender_is_client: bool) -> frozenset[int]:
    """PayloadTypes whose payloads are encrypted once encryption is on, per sending side."""
    return _CLIENT_TO_AGENT if sender_is_client else _AGENT_TO_CLIENT


def make_challenge() -> bytes:
    """Fresh 64 random bytes for an EncChallengeRequest."""
    return os.urandom(CHALLENGE_SIZE)


class SessionCipher:
    """The AES-256-GCM pair of one end: encrypts with its own key half, decrypts with the peer's.

    The client draws a random nonce per message (as the plugin does); the agent uses a
    96-bit counter with a random start (agent spec §12.9), which can never repeat within
    a session.  The receiver takes the nonce from the message, so either is interoperable.
    """

    __slots__ = ("_counter", "_decryptor", "_encryptor", "_is_client")

    def __init__(self, data_key: bytes, *, is_client: bool) -> None:
        if len(data_key) != DATA_KEY_SIZE:
            raise EncryptionError(f"data key must be {DATA_KEY_SIZE} bytes, got {len(data_key)}")
        first, second = bytes(data_key[:KEY_SIZE]), bytes(data_key[KEY_SIZE:])
        self._is_client = is_client
        if is_client:
            self._decryptor, self._encryptor = AESGCM(first), AESGCM(second)
        else:
            self._encryptor, self._decryptor = AESGCM(first), AESGCM(second)
        self._counter = int.from_bytes(os.urandom(NONCE_SIZE), "little")

    @property
    def is_client(self) -> bool:
        return self._is_client

    def _next_nonce(self) -> bytes:
        if self._is_client:
            return os.urandom(NONCE_SIZE)
        # Little-endian 96-bit counter, i.e. three little-endian 32-bit words with carry.
        nonce = self._counter.to_bytes(NONCE_SIZE, "little")
        self._counter = (self._counter + 1) % _NONCE_MODULUS
        return nonce

    def encrypt(self, plaintext: bytes) -> bytes:
        """Return nonce || ciphertext || tag for `plaintext` under this end's encryption key."""
        nonce = self._next_nonce()
        return nonce + self._encryptor.encrypt(nonce, plaintext, None)

    def decrypt(self, data: bytes) -> bytes:
        """Open a payload the peer encrypted; raises EncryptionError if short or not authentic."""
        if len(data) < OVERHEAD:
            raise EncryptionError(f"encrypted payload too short ({len(data)} bytes)")
        view = memoryview(data)
        try:
            return self._decryptor.decrypt(bytes(view[:NONCE_SIZE]), bytes(view[NONCE_SIZE:]), None)
        except InvalidTag:
            raise EncryptionError("payload failed authentication") from None


def challenge_request(agent: SessionCipher) -> tuple[bytes, bytes]:
    """Agent side: return (challenge plaintext to remember, EncChallengeRequest bytes)."""
    if agent.is_client:
        raise ValueError("the agent issues the challenge")
    challenge = make_challenge()
    return challenge, agent.encrypt(challenge)


def challenge_response(client: SessionCipher, request: bytes) -> bytes:
    """Client side: decrypt the agent's challenge and re-encrypt it with the client key."""
    if not client.is_client:
        raise ValueError("the client answers the challenge")
    return client.encrypt(client.decrypt(request))


def verify_challenge(agent: SessionCipher, challenge: bytes, response: bytes) -> None:
    """Agent side: raise EncryptionError unless `response` decrypts to `challenge`."""
    if not hmac.compare_digest(agent.decrypt(response), challenge):
        raise EncryptionError("challenge response does not match")
