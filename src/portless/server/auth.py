"""Who is calling: SigV4 verification of API, MGS and WebSocket requests.

Two kinds of signing keys exist: users' long-term access keys (``AKIA…``) and
the temporary credentials the server issued to nodes (``ASIA…`` + session
token).  Both are looked up in the store, then the signature is checked by
:func:`portless.aws.sigv4.verify` with the service the endpoint expects.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from aiohttp import web

from portless.aws.arn import managed_instance_arn
from portless.aws.errors import AwsError, unrecognized_client
from portless.aws.sigv4 import SignedRequest, parse_authorization, verify
from portless.store import Store
from portless.store.records import sha256_hex

CallerKind = Literal["user", "instance", "anonymous"]

_CACHE_TTL = 30.0
_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated principal (or the anonymous RegisterManagedInstance caller)."""

    kind: CallerKind
    name: str
    arn: str
    access_key_id: str = ""
    user_id: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_user(self) -> bool:
        return self.kind == "user"

    @property
    def is_instance(self) -> bool:
        return self.kind == "instance"

    @property
    def instance_id(self) -> str:
        return self.name if self.kind == "instance" else ""


ANONYMOUS = Caller("anonymous", "anonymous", "anonymous")


@dataclass(frozen=True, slots=True)
class _Key:
    secret: str
    caller: Caller
    token_hash: str | None      # None for long-term keys
    expires: float              # credential expiry (inf for access keys)
    fetched: float


def signed_request(request: web.Request, body: bytes) -> SignedRequest:
    return SignedRequest.from_target(request.method, request.raw_path, request.headers, body)


class Authenticator:
    """Verifies SigV4 signatures against the store's keys (with a short cache)."""

    def __init__(self, store: Store, region: str, account_id: str) -> None:
        self.store = store
        self.region = region
        self.account_id = account_id
        self._cache: dict[str, _Key] = {}

    def forget(self, access_key_id: str) -> None:
        self._cache.pop(access_key_id, None)

    async def _lookup(self, access_key_id: str) -> _Key | None:
        now = time.time()
        hit = self._cache.get(access_key_id)
        if hit is not None and now - hit.fetched < _CACHE_TTL and now < hit.expires:
            return hit
        key: _Key | None = None
        if access_key_id.startswith("ASIA"):
            cred = await self.store.get_credential(access_key_id)
            if cred is not None:
                if cred.principal_type == "instance":
                    arn = str(managed_instance_arn(self.region, self.account_id,
                                                   cred.principal_id))
                    caller = Caller("instance", cred.principal_id, arn, access_key_id)
                else:
                    user = await self.store.get_user(cred.principal_id)
                    if user is None:
                        return None
                    caller = Caller("user", user.name, user.arn, access_key_id, user.user_id,
                                    dict(user.tags))
                key = _Key(cred.secret_access_key, caller, cred.session_token_hash,
                           cred.expiration, now)
        else:
            ak = await self.store.get_access_key(access_key_id)
            if ak is not None and ak.key.status == "Active":
                user = await self.store.get_user(ak.key.user_name)
                tags = dict(user.tags) if user is not None else {}
                caller = Caller("user", ak.key.user_name, ak.key.user_arn, access_key_id,
                                ak.key.user_id, tags)
                key = _Key(ak.secret_access_key, caller, None, float("inf"), now)
        if key is None:
            self._cache.pop(access_key_id, None)
            return None
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[access_key_id] = key
        return key

    async def authenticate(self, request: SignedRequest, services: frozenset[str]) -> Caller:
        """Verify `request` (signed for one of `services`) and return the caller.

        Raises AwsError with AWS's codes (MissingAuthenticationTokenException,
        IncompleteSignatureException, InvalidSignatureException,
        UnrecognizedClientException).
        """
        auth = parse_authorization(request.header_map.get("authorization"))
        key = await self._lookup(auth.access_key_id)
        secret = key.secret if key is not None else None
        verified = verify(request, lambda _akid: secret, now=datetime.now(UTC),
                          expected_service=services)
        assert key is not None  # verify() raised UnrecognizedClient otherwise
        token = verified.security_token
        if key.token_hash is None:
            if token:
                raise unrecognized_client()
        elif not token or not secrets.compare_digest(sha256_hex(token), key.token_hash):
            raise unrecognized_client()
        if time.time() >= key.expires:
            raise AwsError("ExpiredTokenException",
                           "The security token included in the request is expired", 400)
        return key.caller
