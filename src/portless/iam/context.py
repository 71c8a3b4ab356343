"""The request context: what is being done, to what, by whom, and the condition keys.

IAM decides on an action, a resource and a bag of condition keys. Keys are compared without
regard to case (``aws:UserName`` is ``aws:username``), values are strings, and a few keys
hold several values. :class:`RequestContext` normalises whatever the caller supplies (bools,
numbers, datetimes, lists) into that shape once, so evaluation only ever sees strings.

A key that is absent is different from a key that is false: AWS leaves
``aws:MultiFactorAuthPresent`` out entirely for long-term access keys, which is why
``"Bool": {"aws:MultiFactorAuthPresent": "false"}`` does not catch them. The builder keeps
that distinction: pass ``None`` to leave a key out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = [
    "ContextValue",
    "RequestContext",
    "format_time",
]

ContextValue = str | bool | int | float | datetime | list[str] | tuple[str, ...] | frozenset[str]
"""What a caller may put in :attr:`RequestContext.keys`; lists are multi-valued keys."""

Normalized = str | tuple[str, ...]


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, as AWS renders ``aws:CurrentTime``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def _normalize(value: object) -> Normalized:
    if isinstance(value, list | tuple | Set):
        return tuple(_scalar(v) for v in value)
    return _scalar(value)


@dataclass(frozen=True)
class RequestContext:
    """One request to authorize.

    ``action`` is ``service:Operation`` (``ssm:StartSession``); ``resource`` is the ARN acted
    on, or ``*`` for operations that have no resource; ``keys`` are the condition keys.
    ``principal_arn`` also appears as ``aws:PrincipalArn`` unless ``keys`` sets it.
    """

    action: str
    resource: str
    principal_arn: str | None = None
    keys: Mapping[str, ContextValue] = field(default_factory=dict, hash=False)
    _index: dict[str, Normalized] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, Normalized] = {}
        if self.principal_arn is not None:
            index["aws:principalarn"] = self.principal_arn
        for key, value in self.keys.items():
            index[str(key).lower()] = _normalize(value)
        object.__setattr__(self, "_index", index)

    def get(self, key: str) -> Normalized | None:
        """The value of *key* (any case): a string, a tuple for multi-valued keys, or ``None``."""
        return self._index.get(key.lower())

    def values(self, key: str) -> tuple[str, ...]:
        """The values of *key* as a tuple; empty when the key is absent."""
        value = self._index.get(key.lower())
        if value is None:
            return ()
        return value if isinstance(value, tuple) else (value,)

    def single(self, key: str) -> str | None:
        """The value of a single-valued key, for policy variables; ``None`` otherwise."""
        value = self._index.get(key.lower())
        return value if isinstance(value, str) else None

    @classmethod
    def build(
        cls,
        action: str,
        resource: str = "*",
        *,
        principal_arn: str | None = None,
        username: str | None = None,
        userid: str | None = None,
        account: str | None = None,
        source_ip: str | None = None,
        now: datetime | None = None,
        secure_transport: bool | None = None,
        mfa_present: bool | None = None,
        mfa_age_seconds: int | None = None,
        principal_tags: Mapping[str, str] | None = None,
        requested_region: str | None = None,
        resource_tags: Mapping[str, str] | None = None,
        session_document_access_check: bool | None = None,
        extra: Mapping[str, ContextValue] | None = None,
    ) -> RequestContext:
        """Assemble the keys portless supplies; ``None`` leaves a key out of the request.

        ``now`` fills ``aws:CurrentTime`` and ``aws:EpochTime``; ``resource_tags`` are the
        target node's tags, published as both ``ssm:resourceTag/K`` and
        ``aws:ResourceTag/K``; ``principal_tags`` the caller's tags (``aws:PrincipalTag/K``).
        """
        keys: dict[str, ContextValue] = {}

        def put(key: str, value: ContextValue | None) -> None:
            if value is not None:
                keys[key] = value

        put("aws:username", username)
        put("aws:userid", userid)
        put("aws:PrincipalAccount", account)
        put("aws:SourceIp", source_ip)
        if now is not None:
            put("aws:CurrentTime", format_time(now))
            moment = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
            put("aws:EpochTime", str(int(moment.timestamp())))
        put("aws:SecureTransport", secure_transport)
        put("aws:MultiFactorAuthPresent", mfa_present)
        put("aws:MultiFactorAuthAge", mfa_age_seconds)
        put("aws:RequestedRegion", requested_region)
        put("ssm:SessionDocumentAccessCheck", session_document_access_check)
        for tag, value in (principal_tags or {}).items():
            keys[f"aws:PrincipalTag/{tag}"] = value
        for tag, value in (resource_tags or {}).items():
            keys[f"ssm:resourceTag/{tag}"] = value
            keys[f"aws:ResourceTag/{tag}"] = value
        if extra:
            keys.update(extra)
        return cls(action=action, resource=resource, principal_arn=principal_arn, keys=keys)
