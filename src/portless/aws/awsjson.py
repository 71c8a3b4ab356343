"""awsJson1.1 request/response plumbing, independent of the web framework.

Selecting the operation from ``X-Amz-Target``, decoding the body, checking members against
the model's constraints with AWS's exact ValidationException wording, and encoding responses
(timestamps as epoch seconds, blobs as base64) the way botocore and the Go SDK parse them.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Collection, Mapping
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from portless.aws.errors import (
    AwsError,
    Violation,
    serialization_exception,
    unknown_operation,
    validation_error,
)

__all__ = [
    "CONTENT_TYPE",
    "JsonObject",
    "json_dumps",
    "member_target",
    "optional_bool",
    "optional_enum",
    "optional_int",
    "optional_object",
    "optional_str",
    "optional_str_list",
    "parse_body",
    "parse_target",
    "require_enum",
    "require_str",
]

CONTENT_TYPE = "application/x-amz-json-1.1"

JsonObject = dict[str, Any]

_OPERATION = re.compile(r"[A-Za-z][A-Za-z0-9]*")

T = TypeVar("T")


def parse_target(
    header: str | None,
    prefix: str = "AmazonSSM",
    *,
    operations: Collection[str] | None = None,
) -> str:
    """The operation name from ``X-Amz-Target: <prefix>.<Operation>``.

    Raises UnknownOperationException if the header is missing, has another prefix, or (when
    ``operations`` is given) names an operation not in it.
    """
    if header is None:
        raise unknown_operation()
    target = header.strip()
    head, sep, operation = target.rpartition(".")
    if not sep or head != prefix or not _OPERATION.fullmatch(operation):
        raise unknown_operation()
    if operations is not None and operation not in operations:
        raise unknown_operation()
    return operation


def parse_body(body: bytes) -> JsonObject:
    """Decode a JSON request body into a dict; an empty body counts as ``{}``.

    Invalid UTF-8 or JSON, or a top-level value that is not an object, raises
    SerializationException.
    """
    if not body.strip():
        return {}
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise serialization_exception("Invalid JSON in request body") from None
    if not isinstance(value, dict):
        raise serialization_exception("Start of structure or map found where not expected.")
    return value


def member_target(name: str) -> str:
    """The member path AWS puts in validation messages: the name with a lower-case first
    letter (``DocumentName`` → ``documentName``)."""
    return name[:1].lower() + name[1:]


def _wrong_type(name: str, expected: str) -> AwsError:
    return serialization_exception(f"Expected {expected} for member '{name}'")


def _member(d: Mapping[str, Any], name: str, kind: type[T], expected: str) -> T | None:
    """Member ``name`` if it is a *kind*, None if absent/null; otherwise the
    SerializationException AWS gives for a member of the wrong JSON type."""
    value = d.get(name)
    if value is None:
        return None
    # bool is an int subclass, but JSON true/false is not an Integer.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _wrong_type(name, expected)
    return value


def _required(value: T | None, name: str, target: str | None) -> T:
    """*value*, or ``Member must not be null`` when the required member is absent/null."""
    if value is None:
        raise validation_error([(None, target or member_target(name), "Member must not be null")])
    return value


def _range_violations(
    value: object, measure: int, target: str, low: int | None, high: int | None, what: str
) -> list[Violation]:
    """The model's min/max checks of a member's *what* (``length`` or ``value``), which
    is *measure*, in AWS's wording."""
    found: list[Violation] = []
    if low is not None and measure < low:
        found.append((value, target, f"Member must have {what} greater than or equal to {low}"))
    if high is not None and measure > high:
        found.append((value, target, f"Member must have {what} less than or equal to {high}"))
    return found


def _string_violations(
    value: str,
    target: str,
    min_len: int | None,
    max_len: int | None,
    pattern: str | re.Pattern[str] | None,
) -> list[Violation]:
    found = _range_violations(value, len(value), target, min_len, max_len, "length")
    if pattern is not None:
        compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
        if compiled.fullmatch(value) is None:
            found.append(
                (
                    value,
                    target,
                    f"Member must satisfy regular expression pattern: {compiled.pattern}",
                )
            )
    return found


def optional_str(
    d: Mapping[str, Any],
    name: str,
    min_len: int | None = None,
    max_len: int | None = None,
    pattern: str | re.Pattern[str] | None = None,
    *,
    target: str | None = None,
) -> str | None:
    """Member ``name`` as a string, or None if absent/null; constraints as in the model."""
    value = _member(d, name, str, "String")
    if value is None:
        return None
    found = _string_violations(value, target or member_target(name), min_len, max_len, pattern)
    if found:
        raise validation_error(found)
    return value


def require_str(
    d: Mapping[str, Any],
    name: str,
    min_len: int | None = None,
    max_len: int | None = None,
    pattern: str | re.Pattern[str] | None = None,
    *,
    target: str | None = None,
) -> str:
    """Required string member; null/absent gives ``Member must not be null``."""
    return _required(optional_str(d, name, min_len, max_len, pattern, target=target), name, target)


def optional_int(
    d: Mapping[str, Any],
    name: str,
    min_value: int | None = None,
    max_value: int | None = None,
    *,
    target: str | None = None,
) -> int | None:
    """Integer member with an optional range, or None if absent/null."""
    value = _member(d, name, int, "Integer")
    if value is None:
        return None
    found = _range_violations(
        value, value, target or member_target(name), min_value, max_value, "value"
    )
    if found:
        raise validation_error(found)
    return value


def optional_bool(d: Mapping[str, Any], name: str) -> bool | None:
    """Boolean member, or None if absent/null."""
    return _member(d, name, bool, "Boolean")


def optional_enum(
    d: Mapping[str, Any], name: str, allowed: Collection[str], *, target: str | None = None
) -> str | None:
    """String member restricted to ``allowed`` (``Member must satisfy enum value set: [..]``)."""
    value = optional_str(d, name, target=target)
    if value is not None and value not in allowed:
        values = ", ".join(allowed)
        raise validation_error(
            [
                (
                    value,
                    target or member_target(name),
                    f"Member must satisfy enum value set: [{values}]",
                )
            ]
        )
    return value


def require_enum(
    d: Mapping[str, Any], name: str, allowed: Collection[str], *, target: str | None = None
) -> str:
    """Required enum member."""
    return _required(optional_enum(d, name, allowed, target=target), name, target)


def optional_str_list(
    d: Mapping[str, Any],
    name: str,
    *,
    min_items: int | None = None,
    max_items: int | None = None,
    member_min: int | None = None,
    member_max: int | None = None,
    member_pattern: str | re.Pattern[str] | None = None,
    target: str | None = None,
) -> list[str] | None:
    """List-of-strings member with list-length and per-member constraints, or None."""
    items = _member(d, name, list, "List of String")
    if items is None:
        return None
    if not all(isinstance(v, str) for v in items):
        raise _wrong_type(name, "List of String")
    where = target or member_target(name)
    found = _range_violations(items, len(items), where, min_items, max_items, "length")
    for index, item in enumerate(items, start=1):
        found.extend(
            _string_violations(
                item, f"{where}.{index}.member", member_min, member_max, member_pattern
            )
        )
    if found:
        raise validation_error(found)
    return items


def optional_object(d: Mapping[str, Any], name: str) -> JsonObject | None:
    """Structure/map member as a dict, or None if absent/null."""
    return _member(d, name, dict, "Structure")


def _encode_default(value: object) -> object:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_dumps(value: object) -> bytes:
    """Compact UTF-8 JSON for responses: datetimes as epoch seconds (float; naive = UTC),
    bytes as base64, sets as lists."""
    return json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, default=_encode_default
    ).encode("utf-8")
