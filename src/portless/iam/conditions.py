"""The Condition element: operators, their values, and how a block is decided.

Each operator is a *base* comparison (``StringLike``, ``NumericLessThan`` ...) optionally
prefixed by a set operator (``ForAnyValue:``/``ForAllValues:``) and suffixed by
``IfExists``. Negated operators (``StringNotEquals``, ``NotIpAddress`` ...) are the plain
negation of their positive twin over the whole value list, which gives IAM's rules:

* several operators, and several keys under one operator: AND;
* several values for one key: OR, and NOR for a negated operator;
* a key missing from the request: false, except true for negated operators, for
  ``...IfExists`` and for ``ForAllValues:``; ``ForAnyValue:`` on a missing or empty key
  is false; ``Null`` tests presence itself.

Values that can be checked without the request (numbers, dates, IPs, booleans, base64)
are checked when the policy is parsed, so a typo is a MalformedPolicyDocument rather than
a statement that silently never matches. Comparisons at evaluation never raise: a value
that does not parse simply does not match.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import operator as op_
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from portless.iam.context import RequestContext
from portless.iam.variables import Literal, Template, Text, as_glob, as_text
from portless.iam.wildcards import arn_match, glob_match

__all__ = [
    "BASE_OPERATORS",
    "ConditionClause",
    "Operator",
    "clause_holds",
    "conditions_hold",
    "parse_date",
    "parse_number",
    "parse_operator",
    "validate_value",
]

Resolved = tuple[Text | Literal, ...]
Compare = Callable[[str, Resolved], bool]


# --- value parsing ------------------------------------------------------------------------

_EPOCH = re.compile(r"^-?\d+(\.\d+)?$")


def parse_number(text: str) -> Decimal | None:
    """A finite decimal, or ``None`` if *text* is not a number."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def parse_date(text: str) -> datetime | None:
    """ISO 8601 (date or date-time, ``Z`` or offset; naive means UTC) or epoch seconds."""
    text = text.strip()
    try:
        if _EPOCH.match(text):
            return datetime.fromtimestamp(float(text), UTC)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _parse_bool(text: str) -> bool | None:
    lowered = text.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    return None


def _parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def _parse_binary(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


# --- comparisons: (context value, resolved policy value) -> bool, never raising -----------


def _string_equals(ctx: str, pol: Resolved) -> bool:
    return ctx == as_text(pol)


def _string_equals_ic(ctx: str, pol: Resolved) -> bool:
    return ctx.casefold() == as_text(pol).casefold()


def _string_like(ctx: str, pol: Resolved) -> bool:
    return glob_match(as_glob(pol), ctx)


def _arn_like(ctx: str, pol: Resolved) -> bool:
    return arn_match(as_glob(pol), ctx)


def _numeric(test: Callable[[Decimal, Decimal], bool]) -> Compare:
    def compare(ctx: str, pol: Resolved) -> bool:
        left, right = parse_number(ctx), parse_number(as_text(pol))
        return left is not None and right is not None and test(left, right)

    return compare


def _date(test: Callable[[datetime, datetime], bool]) -> Compare:
    def compare(ctx: str, pol: Resolved) -> bool:
        left, right = parse_date(ctx), parse_date(as_text(pol))
        return left is not None and right is not None and test(left, right)

    return compare


def _bool(ctx: str, pol: Resolved) -> bool:
    left, right = _parse_bool(ctx), _parse_bool(as_text(pol))
    return left is not None and left == right


def _binary(ctx: str, pol: Resolved) -> bool:
    left, right = _parse_binary(ctx), _parse_binary(as_text(pol))
    return left is not None and left == right


def _ip(ctx: str, pol: Resolved) -> bool:
    network = _parse_network(as_text(pol))
    try:
        address = ipaddress.ip_address(ctx.strip())
    except ValueError:
        return False
    return network is not None and address.version == network.version and address in network


# --- the operator table -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BaseOperator:
    """A comparison: its canonical name, how it compares, whether it is negated."""

    name: str
    compare: Compare
    negated: bool
    kind: str  # value type checked at parse time: string, number, date, bool, ip, binary, arn


def _table() -> dict[str, BaseOperator]:
    entries = [
        ("StringEquals", _string_equals, False, "string"),
        ("StringNotEquals", _string_equals, True, "string"),
        ("StringEqualsIgnoreCase", _string_equals_ic, False, "string"),
        ("StringNotEqualsIgnoreCase", _string_equals_ic, True, "string"),
        ("StringLike", _string_like, False, "string"),
        ("StringNotLike", _string_like, True, "string"),
        ("NumericEquals", _numeric(op_.eq), False, "number"),
        ("NumericNotEquals", _numeric(op_.eq), True, "number"),
        ("NumericLessThan", _numeric(op_.lt), False, "number"),
        ("NumericLessThanEquals", _numeric(op_.le), False, "number"),
        ("NumericGreaterThan", _numeric(op_.gt), False, "number"),
        ("NumericGreaterThanEquals", _numeric(op_.ge), False, "number"),
        ("DateEquals", _date(op_.eq), False, "date"),
        ("DateNotEquals", _date(op_.eq), True, "date"),
        ("DateLessThan", _date(op_.lt), False, "date"),
        ("DateLessThanEquals", _date(op_.le), False, "date"),
        ("DateGreaterThan", _date(op_.gt), False, "date"),
        ("DateGreaterThanEquals", _date(op_.ge), False, "date"),
        ("Bool", _bool, False, "bool"),
        ("BinaryEquals", _binary, False, "binary"),
        ("IpAddress", _ip, False, "ip"),
        ("NotIpAddress", _ip, True, "ip"),
        ("ArnEquals", _arn_like, False, "arn"),
        ("ArnLike", _arn_like, False, "arn"),
        ("ArnNotEquals", _arn_like, True, "arn"),
        ("ArnNotLike", _arn_like, True, "arn"),
        ("Null", _bool, False, "bool"),  # decided specially in clause_holds
    ]
    return {name.lower(): BaseOperator(name, cmp, neg, kind) for name, cmp, neg, kind in entries}


BASE_OPERATORS: dict[str, BaseOperator] = _table()
"""Every base operator, keyed by its lower-cased name."""

_SET_OPERATORS = {"foranyvalue": "ForAnyValue", "forallvalues": "ForAllValues"}
_IF_EXISTS = "ifexists"


@dataclass(frozen=True, slots=True)
class Operator:
    """A full condition operator such as ``ForAllValues:StringLikeIfExists``."""

    written: str
    base: BaseOperator
    set_operator: str | None  # "ForAnyValue" | "ForAllValues" | None
    if_exists: bool

    @property
    def name(self) -> str:
        """The canonical spelling."""
        prefix = f"{self.set_operator}:" if self.set_operator else ""
        return f"{prefix}{self.base.name}{'IfExists' if self.if_exists else ''}"


def parse_operator(written: str) -> Operator | None:
    """Recognise an operator name (case-insensitively); ``None`` if it is not one."""
    set_operator: str | None = None
    rest = written
    if ":" in written:
        prefix, _, rest = written.partition(":")
        set_operator = _SET_OPERATORS.get(prefix.lower())
        if set_operator is None:
            return None
    lowered = rest.lower()
    if_exists = False
    base = BASE_OPERATORS.get(lowered)
    if base is None and lowered.endswith(_IF_EXISTS):
        base = BASE_OPERATORS.get(lowered[: -len(_IF_EXISTS)])
        if_exists = True
    if base is None:
        return None
    if base.name == "Null" and (if_exists or set_operator):
        return None
    return Operator(written, base, set_operator, if_exists)


def validate_value(operator: Operator, value: str) -> str | None:
    """Why *value* cannot be used with *operator* (for a parse error), or ``None`` if fine."""
    kind = operator.base.kind
    if kind == "number" and parse_number(value) is None:
        return "is not a number"
    if kind == "date" and parse_date(value) is None:
        return "is not an ISO 8601 date or epoch time"
    if kind == "bool" and _parse_bool(value) is None:
        return 'must be "true" or "false"'
    if kind == "ip" and _parse_network(value) is None:
        return "is not an IP address or CIDR block"
    if kind == "binary" and _parse_binary(value) is None:
        return "is not base64"
    return None


# --- deciding a condition block -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConditionClause:
    """One ``operator -> key -> values`` entry; a statement's clauses are ANDed."""

    operator: Operator
    key: str
    values: tuple[Template, ...]


def clause_holds(clause: ConditionClause, ctx: RequestContext) -> bool:
    """Decide one clause against the request (see the module docstring for the rules)."""
    op = clause.operator
    present = ctx.values(clause.key)
    resolved = [r for r in (t.resolve(ctx.single) for t in clause.values) if r is not None]

    if op.base.name == "Null":
        is_null = not present
        return any(_parse_bool(as_text(r)) is is_null for r in resolved)

    if not present:
        if op.if_exists or op.set_operator == "ForAllValues":
            return True
        if op.set_operator == "ForAnyValue":
            return False
        return op.base.negated

    compare = op.base.compare

    def holds_for(value: str) -> bool:
        hit = any(compare(value, r) for r in resolved)
        return not hit if op.base.negated else hit

    if op.set_operator == "ForAllValues":
        return all(holds_for(v) for v in present)
    if op.set_operator == "ForAnyValue":
        return any(holds_for(v) for v in present)
    # No set operator: the key's values are pooled, then the operator (maybe negated) applies.
    hit = any(compare(v, r) for v in present for r in resolved)
    return not hit if op.base.negated else hit


def conditions_hold(clauses: tuple[ConditionClause, ...], ctx: RequestContext) -> bool:
    """All clauses hold (an empty Condition always holds)."""
    return all(clause_holds(clause, ctx) for clause in clauses)
