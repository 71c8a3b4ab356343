"""The SSM calls a running session makes (ResumeSession, TerminateSession), off the loop.

botocore is synchronous, so calls run in a worker thread; the client is created lazily
because building it costs tens of milliseconds and most sessions never need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, Protocol


class SessionApi(Protocol):
    async def resume(self, session_id: str) -> str | None:
        """ResumeSession; returns the new TokenValue (None/empty: the session is over)."""

    async def terminate(self, session_id: str) -> None:
        """TerminateSession."""


class BotoSessionApi:
    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._factory = client_factory
        self._client: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return self._client

    def prepare(self) -> None:
        """Build the client in the background so a later call is quick."""
        threading.Thread(target=self._safe_get, daemon=True).start()

    def _safe_get(self) -> None:
        with contextlib.suppress(Exception):  # reported again when actually needed
            self._get()

    async def resume(self, session_id: str) -> str | None:
        def call() -> str | None:
            resp = self._get().resume_session(SessionId=session_id)
            token = resp.get("TokenValue")
            return str(token) if token else None
        return await asyncio.to_thread(call)

    async def terminate(self, session_id: str) -> None:
        await asyncio.to_thread(lambda: self._get().terminate_session(SessionId=session_id))


class NoApi:
    """For tests and for callers without an API endpoint: resume always fails."""

    async def resume(self, session_id: str) -> str | None:
        raise RuntimeError("no API endpoint to resume the session")

    async def terminate(self, session_id: str) -> None:
        return None


LEGACY_KMS_ERROR = ("Installed version of CLI does not support Session Manager encryption "
                    "feature. Please upgrade to the latest version of your CLI (e.g., AWS CLI).")


def kms_data_key_provider(make_client: Callable[[], Any], session_id: str, target: str,
                          *, legacy: bool = False) -> Callable[[str], tuple[bytes, bytes]]:
    """GenerateDataKey for the KMSEncryption handshake action (client spec §7.7).

    `make_client` builds a botocore `kms` client (its endpoint follows the usual
    configuration, so AWS_ENDPOINT_URL_KMS can point it at a local KMS).
    """
    def provide(key_id: str) -> tuple[bytes, bytes]:
        if legacy:
            raise RuntimeError(LEGACY_KMS_ERROR)
        resp = make_client().generate_data_key(
            KeyId=key_id, NumberOfBytes=64,
            EncryptionContext={"aws:ssm:SessionId": session_id, "aws:ssm:TargetId": target})
        return bytes(resp["Plaintext"]), bytes(resp["CiphertextBlob"])
    return provide
