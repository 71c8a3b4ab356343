"""Authenticated encryption of secrets at rest (AES-256-GCM).

Secret access keys must be recoverable (SigV4 verification needs them) but must
never sit in the database in plaintext: a stolen database dump alone should not
let anyone sign requests. The key lives in a file in the data directory,
outside the database.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
_PREFIX = "v1:"


class SecretBoxError(Exception):
    """A ciphertext could not be decrypted (wrong key, wrong context or tampered)."""


class SecretBox:
    """Encrypts short strings with AES-GCM; the *context* is bound as associated data.

    Binding a context (e.g. the access key id) means a ciphertext copied onto
    another row does not decrypt there.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"SecretBox key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def generate(cls) -> SecretBox:
        """A box with a fresh random key (tests, ephemeral servers)."""
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SecretBox:
        """Load the key from *path*, creating it (mode 0600, 32 random bytes) if missing.

        Creation uses O_EXCL, so two processes racing at first start agree on
        one key.
        """
        p = Path(path)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = p.read_bytes()
            if len(key) != KEY_BYTES:
                raise ValueError(
                    f"key file {p} holds {len(key)} bytes, expected {KEY_BYTES}"
                ) from None
            return cls(key)
        key = os.urandom(KEY_BYTES)
        try:
            view = memoryview(key)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        return cls(key)

    def encrypt(self, plaintext: str, *, context: str) -> str:
        """Encrypt *plaintext*; the result is ASCII text suitable for a TEXT column."""
        nonce = os.urandom(NONCE_BYTES)
        ct = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return _PREFIX + base64.urlsafe_b64encode(nonce + ct).decode("ascii")

    def decrypt(self, token: str, *, context: str) -> str:
        """Decrypt a value made by :meth:`encrypt` with the same *context*."""
        if not token.startswith(_PREFIX):
            raise SecretBoxError("unknown ciphertext format")
        try:
            raw = base64.urlsafe_b64decode(token[len(_PREFIX) :].encode("ascii"))
            pt = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
        except (InvalidTag, ValueError) as exc:
            raise SecretBoxError("ciphertext does not decrypt") from exc
        return pt.decode()
