"""Session credentials from RequestManagedInstanceRoleToken (agent spec §4).

The request is signed with the instance's RSA key; the answer holds ordinary temporary
credentials that sign every other call. They are refreshed at half their lifetime; failures
back off as the stock agent does (AccessDenied / fingerprint mismatch: 25-30 minutes; other
service errors: 2^n s + 20 % + 10-20 s; network: 2^n s + 20 %; at most 30 minutes). A
response asking for `UpdateKeyPair` rotates the instance key.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from portless.agent.api import AgentApi, Credentials, NetworkError
from portless.agent.state import Registration, StateDir
from portless.aws.errors import AwsError
from portless.aws.rsa_signature import (
    generate_instance_key,
    load_private_key_b64,
    private_key_b64,
    public_key_b64,
)

log = logging.getLogger(__name__)

LONG_BACKOFF_CODES = frozenset({"AccessDeniedException", "MachineFingerprintDoesNotMatch"})
MAX_BACKOFF = 30 * 60.0


class NoCredentials(Exception):
    """No valid credentials yet (or they expired and could not be refreshed)."""


def parse_expiration(value: Any) -> float:
    """TokenExpirationDate: epoch seconds (number) or ISO-8601 text."""
    if isinstance(value, bool):
        raise ValueError("TokenExpirationDate is a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    raise ValueError("TokenExpirationDate is missing")


def parse_token_response(obj: dict[str, Any]) -> tuple[Credentials, bool]:
    """(credentials, UpdateKeyPair) from the response; ValueError if a field is missing."""
    fields = {}
    for name in ("AccessKeyId", "SecretAccessKey", "SessionToken"):
        value = obj.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} is missing from the token response")
        fields[name] = value
    expiration = parse_expiration(obj.get("TokenExpirationDate"))
    return (Credentials(fields["AccessKeyId"], fields["SecretAccessKey"], fields["SessionToken"],
                        expiration), bool(obj.get("UpdateKeyPair", False)))


def backoff_delay(error: Exception, failures: int) -> float:
    """Seconds before the next token request after `failures` consecutive failures."""
    n = min(failures, 16)
    if isinstance(error, AwsError) and error.code in LONG_BACKOFF_CODES:
        return random.uniform(25 * 60, 30 * 60)
    base = 2.0**n
    delay = base + random.uniform(0, 0.2 * base)
    if isinstance(error, AwsError):
        delay += random.uniform(10, 20)
    return min(delay, MAX_BACKOFF)


class CredentialManager:
    """Holds the current credentials and keeps them fresh."""

    def __init__(self, api: AgentApi, state: StateDir, registration: Registration, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.state = state
        self.registration = registration
        self.clock = clock
        self._key = load_private_key_b64(registration.private_key)
        self._creds: Credentials | None = None
        self._retrieved_at = 0.0
        self.ready = asyncio.Event()
        self.last_error: Exception | None = None

    def current(self) -> Credentials:
        creds = self._creds
        if creds is None:
            raise NoCredentials("no credentials yet")
        return creds

    async def refresh(self) -> Credentials:
        """One token request; raises AwsError, NetworkError or ValueError."""
        reg = self.registration
        obj = await self.api.request_role_token(reg.instance_id, self._key, reg.fingerprint)
        creds, rotate = parse_token_response(obj)
        self._creds = creds
        self._retrieved_at = self.clock()
        self.ready.set()
        log.info("credentials refreshed (%s, valid for %.0f s)", creds.access_key_id,
                 creds.expiration - self._retrieved_at)
        if rotate:
            await self.rotate_key()
        return creds

    def next_refresh_in(self) -> float:
        """Seconds until half the lifetime of the current credentials has passed."""
        creds = self._creds
        if creds is None:
            return 0.0
        half = self._retrieved_at + (creds.expiration - self._retrieved_at) / 2
        return max(0.0, half - self.clock())

    async def run(self) -> None:
        """Refresh forever: immediately, then at each half-life; back off on failures."""
        failures = 0
        while True:
            await asyncio.sleep(self.next_refresh_in())
            try:
                await self.refresh()
                failures = 0
                self.last_error = None
            except Exception as exc:          # AwsError, NetworkError, bad response, ...
                self.last_error = exc
                delay = backoff_delay(exc, failures)
                failures += 1
                log.warning("credential request failed (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)

    async def rotate_key(self) -> None:
        """UpdateManagedInstancePublicKey signed with the old key, then store the new key."""
        new_key = generate_instance_key()
        reg = self.registration
        try:
            await self.api.update_public_key(reg.instance_id, self._key, public_key_b64(new_key))
        except (AwsError, NetworkError) as exc:
            log.warning("key rotation failed, keeping the current key: %s", exc)
            return
        reg.private_key = private_key_b64(new_key)
        reg.private_key_created = datetime.now(UTC).isoformat()
        self.state.save_registration(reg)
        self._key = new_key
        log.info("instance key rotated")
