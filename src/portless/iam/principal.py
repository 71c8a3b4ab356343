"""Who is calling: the authenticated principal as the IAM/STS handlers and the authorizer see it.

:class:`Principal` is the structural minimum (kind, name, ARN, access key, user id) that the
server's own ``Caller`` already satisfies; :class:`Caller` adds what only IAM cares about
(temporary credentials and their MFA facts). :func:`authenticate` verifies a SigV4 request
against the store's keys with no caching at all, so a key deactivated or deleted is refused
on the very next request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from portless.aws.arn import Arn, managed_instance_arn
from portless.aws.errors import AwsError, unrecognized_client
from portless.aws.sigv4 import SignedRequest, parse_authorization, verify
from portless.store import Store
from portless.store.records import IssuedCredential

__all__ = [
    "Caller",
    "CallerKind",
    "Principal",
    "SigningKey",
    "account_of",
    "authenticate",
    "lookup_signing_key",
]

CallerKind = Literal["user", "instance", "anonymous"]


class Principal(Protocol):
    """What the authorizer and the IAM/STS handlers need to know about a caller."""

    @property
    def kind(self) -> str: ...  # "user" | "instance" | "anonymous"

    @property
    def name(self) -> str: ...  # user name, or the node's mi-… id

    @property
    def arn(self) -> str: ...

    @property
    def access_key_id(self) -> str: ...

    @property
    def user_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated principal.

    ``temporary`` is true for ``ASIA…`` credentials (GetSessionToken, node credentials);
    ``mfa_authenticated_at`` is the epoch time the holder proved MFA, None without MFA.
    """

    kind: CallerKind
    name: str
    arn: str
    access_key_id: str = ""
    user_id: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    temporary: bool = False
    mfa_serial: str | None = None
    mfa_authenticated_at: float | None = None

    @property
    def is_user(self) -> bool:
        return self.kind == "user"

    @property
    def is_instance(self) -> bool:
        return self.kind == "instance"

    @property
    def instance_id(self) -> str:
        return self.name if self.kind == "instance" else ""

    @property
    def account(self) -> str:
        return account_of(self.arn)


def account_of(arn: str) -> str:
    """The account field of an ARN ('' if it is not an ARN)."""
    try:
        return Arn.parse(arn).account
    except ValueError:
        return ""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key that may sign requests, with the caller it stands for."""

    secret_access_key: str
    caller: Caller
    credential: IssuedCredential | None = None  # the temporary credential; None for AKIA… keys

    @property
    def expiration(self) -> float:
        return self.credential.expiration if self.credential is not None else float("inf")


async def lookup_signing_key(
    store: Store, access_key_id: str, *, region: str, account_id: str
) -> SigningKey | None:
    """The active key *access_key_id* (long-term or issued), or None.

    Inactive long-term keys, unknown temporary credentials and credentials whose user no
    longer exists all give None. Expired (not yet purged) temporary credentials are returned:
    :func:`authenticate` refuses them with ExpiredTokenException.
    """
    if access_key_id.startswith("ASIA"):
        cred = await store.get_credential(access_key_id, include_expired=True)
        if cred is None:
            return None
        if cred.principal_type == "instance":
            arn = str(managed_instance_arn(region, account_id, cred.principal_id))
            caller = Caller("instance", cred.principal_id, arn, access_key_id, temporary=True)
        else:
            user = await store.get_user(cred.principal_id)
            if user is None or user.created_date > cred.created_date:
                return None  # deleted, or deleted and re-created under the same name
            mfa = await store.get_credential_mfa(access_key_id)
            caller = Caller(
                "user",
                user.name,
                user.arn,
                access_key_id,
                user.user_id,
                dict(user.tags),
                temporary=True,
                mfa_serial=mfa.mfa_serial if mfa else None,
                mfa_authenticated_at=mfa.authenticated_at if mfa else None,
            )
        return SigningKey(cred.secret_access_key, caller, cred)
    found = await store.get_access_key(access_key_id)
    if found is None or found.key.status != "Active":
        return None
    user = await store.get_user(found.key.user_name)
    tags = dict(user.tags) if user is not None else {}
    caller = Caller(
        "user", found.key.user_name, found.key.user_arn, access_key_id, found.key.user_id, tags
    )
    return SigningKey(found.secret_access_key, caller)


async def authenticate(
    store: Store,
    request: SignedRequest,
    *,
    services: str | frozenset[str],
    region: str,
    account_id: str,
    now: datetime | None = None,
) -> Caller:
    """Verify a SigV4-signed request and return its caller (no cache: every call reads the
    store). Raises AwsError with AWS's codes (MissingAuthenticationTokenException,
    IncompleteSignatureException, InvalidSignatureException, UnrecognizedClientException,
    ExpiredTokenException)."""
    moment = now or datetime.now(UTC)
    auth = parse_authorization(request.header_map.get("authorization"))
    key = await lookup_signing_key(store, auth.access_key_id, region=region, account_id=account_id)
    secret = key.secret_access_key if key is not None else None
    verified = verify(
        request,
        lambda _akid: secret,
        now=moment,
        expected_service=set([services]) if isinstance(services, str) else services,
        expected_region=region,
    )
    if key is None:  # pragma: no cover - verify() raised UnrecognizedClient already
        raise unrecognized_client()
    token = verified.security_token
    if key.credential is None:
        if token:
            raise unrecognized_client()
    elif not token or not key.credential.session_token_matches(token):
        raise unrecognized_client()
    if moment.timestamp() >= key.expiration:
        raise AwsError(
            "ExpiredTokenException", "The security token included in the request is expired"
        )
    return key.caller
