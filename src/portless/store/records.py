"""Plain records returned by the store, the store's errors and small shared helpers.

Records are frozen dataclasses so callers cannot mistake them for live rows;
all timestamps are float epoch seconds (UTC), which is what the SSM API emits.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

# --------------------------------------------------------------------------- errors


class StoreError(Exception):
    """Base class of everything the store raises on purpose."""


class NotFoundError(StoreError):
    """The row an operation needs does not exist."""


class AlreadyExistsError(StoreError):
    """A row with the same unique key exists already."""


class InvalidNextTokenError(StoreError):
    """A pagination token was not produced by the matching list call."""


class DuplicateContentError(StoreError):
    """A new document version has the same content as an existing one."""


class InvalidOperationError(StoreError):
    """The operation is not allowed in the current state (e.g. delete default version)."""


# --------------------------------------------------------------------------- helpers


def sha256_hex(value: str) -> str:
    """Hex SHA-256 of a UTF-8 string: how codes and bearer tokens are stored.

    These values are long random strings, so an unsalted fast hash suffices.
    """
    return hashlib.sha256(value.encode()).hexdigest()


def generate_instance_id() -> str:
    """A managed instance id: ``mi-`` followed by 17 lowercase hex digits."""
    return "mi-" + secrets.token_hex(9)[:17]


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _b32_random(n: int) -> str:
    return "".join(secrets.choice(_B32) for _ in range(n))


def generate_access_key_id(prefix: str = "AKIA") -> str:
    """An AWS-shaped access key id (``AKIA`` long-term, ``ASIA`` temporary): 20 chars."""
    return prefix + _b32_random(20 - len(prefix))


def generate_user_id() -> str:
    """An AWS-shaped IAM user id: ``AIDA`` + 17 chars."""
    return "AIDA" + _b32_random(17)


def generate_secret_access_key() -> str:
    """A 40-character secret access key."""
    return secrets.token_urlsafe(30)[:40]


PingStatus = Literal["Online", "ConnectionLost", "Inactive"]


def ping_status(last_ping_date: float | None, online_since: float) -> PingStatus:
    """The PingStatus the API reports: Online iff the last ping is at or after *online_since*.

    Used both by the API when rendering and by the store's PingStatus filter,
    so the two always agree.
    """
    if last_ping_date is not None and last_ping_date >= online_since:
        return "Online"
    return "ConnectionLost"


# --------------------------------------------------------------------------- paging


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list call; ``next_token`` is None on the last page."""

    items: list[T]
    next_token: str | None = None


# --------------------------------------------------------------------------- activations


class RegistrationOutcome(enum.Enum):
    """Result of trying to consume one registration from an activation."""

    OK = "ok"
    NOT_FOUND = "not_found"
    BAD_CODE = "bad_code"
    EXPIRED = "expired"
    LIMIT_REACHED = "limit_reached"


@dataclass(frozen=True, slots=True)
class Activation:
    activation_id: str
    iam_role: str
    description: str
    default_instance_name: str | None
    registration_limit: int
    registrations_count: int
    expiration_date: float
    created_date: float
    tags: dict[str, str]

    def expired(self, now: float) -> bool:
        return now >= self.expiration_date


@dataclass(frozen=True, slots=True)
class RegistrationResult:
    """Outcome of :meth:`Store.register_instance`; ``instance`` is set only on OK."""

    outcome: RegistrationOutcome
    instance: ManagedInstance | None = None


# --------------------------------------------------------------------------- instances


@dataclass(frozen=True, slots=True)
class ManagedInstance:
    instance_id: str
    activation_id: str | None
    iam_role: str
    name: str | None
    public_key: str | None
    public_key_type: str | None
    public_key_date: float | None
    fingerprint: str | None
    registration_date: float
    region: str | None
    resource_type: str
    agent_name: str | None
    agent_version: str | None
    platform_type: str | None
    platform_name: str | None
    platform_version: str | None
    ip_address: str | None
    computer_name: str | None
    last_ping_date: float | None
    ssm_connection_channel: str | None


# --------------------------------------------------------------------------- credentials

PrincipalType = Literal["instance", "user"]


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """Temporary credentials; ``secret_access_key`` is decrypted.

    ``session_token`` is only set on the record returned when issuing; stored
    records carry only its hash (compare with :meth:`session_token_matches`).
    """

    access_key_id: str
    secret_access_key: str
    session_token_hash: str
    principal_type: PrincipalType
    principal_id: str
    expiration: float
    created_date: float
    session_token: str | None = None

    def session_token_matches(self, token: str) -> bool:
        return secrets.compare_digest(sha256_hex(token), self.session_token_hash)

    def expired(self, now: float) -> bool:
        return now >= self.expiration


# --------------------------------------------------------------------------- sessions

SessionStatus = Literal[
    "Connecting", "Connected", "Disconnected", "Terminating", "Terminated", "Failed"
]
SESSION_STATUSES: tuple[SessionStatus, ...] = (
    "Connecting",
    "Connected",
    "Disconnected",
    "Terminating",
    "Terminated",
    "Failed",
)
TERMINAL_STATUSES: tuple[SessionStatus, ...] = ("Terminated", "Failed")


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    owner_arn: str
    owner_name: str
    target: str
    document_name: str
    reason: str | None
    status: SessionStatus
    start_date: float
    end_date: float | None
    details: str | None
    parameters: dict[str, list[str]]
    run_as_user: str | None
    client_token_hash: str | None
    max_session_duration: int | None
    access_type: str
    s3_output_url: str | None
    cloudwatch_output_url: str | None
    bytes_in: int
    bytes_out: int


# --------------------------------------------------------------------------- channel tokens

TokenKind = Literal["control", "data_agent", "data_client"]


@dataclass(frozen=True, slots=True)
class ChannelToken:
    token_hash: str
    kind: TokenKind
    subject: str
    instance_id: str | None
    expires: float
    used: bool
    created_date: float


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True, slots=True)
class Document:
    name: str
    document_type: str
    document_format: str
    owner: str
    created_date: float
    default_version: int
    latest_version: int
    display_name: str | None
    target_type: str | None
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class DocumentVersion:
    name: str
    version: int
    content: str
    document_format: str
    content_hash: str
    version_name: str | None
    created_date: float


# --------------------------------------------------------------------------- users

AccessKeyStatus = Literal["Active", "Inactive"]


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    name: str
    arn: str
    created_date: float
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class AccessKey:
    access_key_id: str
    user_name: str
    user_id: str
    user_arn: str
    status: AccessKeyStatus
    created_date: float


@dataclass(frozen=True, slots=True)
class AccessKeyWithSecret:
    """An access key with its decrypted secret (for SigV4 verification, or once at creation)."""

    key: AccessKey
    secret_access_key: str


# --------------------------------------------------------------------------- audit

Decision = Literal["allowed", "denied"]
GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    time: float
    actor_arn: str | None
    action: str
    resource: str | None
    decision: Decision
    reason: str | None
    request_id: str | None
    source_ip: str | None
    details: dict[str, object] = field(default_factory=dict)
    prev_hash: str = GENESIS_HASH
    hash: str = ""
