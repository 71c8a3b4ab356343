"""Identity-based policy documents in IAM's JSON grammar: parsing and validation.

:func:`parse_policy` turns a document (JSON text or an already-decoded object) into an
immutable :class:`Policy`, or raises :class:`MalformedPolicyDocument` with a message that
names the statement and element at fault. Validation follows IAM's grammar for identity
policies: ``Version`` (``2012-10-17`` or ``2008-10-17``; absent means the old grammar, in
which ``${...}`` is not substituted), ``Id``, and ``Statement`` as one object or a list of
them, each with ``Sid``, ``Effect``, exactly one of ``Action``/``NotAction``, exactly one of
``Resource``/``NotResource`` and an optional ``Condition``. ``Principal`` belongs to
resource policies and is refused here.

Size is measured as IAM does, ignoring whitespace; the limits differ by where a document is
attached, so callers pass the one that applies (the constants below).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from portless.aws.errors import AwsError
from portless.iam.conditions import ConditionClause, Operator, parse_operator, validate_value
from portless.iam.variables import Template, parse_template
from portless.iam.wildcards import Element, glob_elements

__all__ = [
    "GROUP_INLINE_POLICY_MAX_CHARS",
    "MANAGED_POLICY_MAX_CHARS",
    "ROLE_INLINE_POLICY_MAX_CHARS",
    "USER_INLINE_POLICY_MAX_CHARS",
    "VERSION_2008",
    "VERSION_2012",
    "MalformedPolicyDocument",
    "Policy",
    "Statement",
    "parse_policy",
    "policy_size",
]

VERSION_2012 = "2012-10-17"
VERSION_2008 = "2008-10-17"

MANAGED_POLICY_MAX_CHARS = 6144
"""A customer managed policy document (per version)."""
USER_INLINE_POLICY_MAX_CHARS = 2048
"""All inline policies of one user together."""
GROUP_INLINE_POLICY_MAX_CHARS = 5120
"""All inline policies of one group together."""
ROLE_INLINE_POLICY_MAX_CHARS = 10240
"""All inline policies of one role together; also :func:`parse_policy`'s default ceiling."""

Effect = Literal["Allow", "Deny"]

_TOP_LEVEL = ("Version", "Id", "Statement")
_STATEMENT_KEYS = (
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
)
_SID = re.compile(r"^[A-Za-z0-9]*$")
_ACTION = re.compile(r"^[A-Za-z0-9*?-]+:[A-Za-z0-9_.*?-]+$")


class MalformedPolicyDocument(AwsError):
    """The document breaks IAM's policy grammar; IAM answers this with HTTP 400."""

    def __init__(self, message: str) -> None:
        super().__init__("MalformedPolicyDocument", message, 400)


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement. ``actions``/``resources`` hold NotAction/NotResource when negated."""

    index: int
    sid: str | None
    effect: Effect
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[Template, ...]
    not_resource: bool
    conditions: tuple[ConditionClause, ...]
    action_patterns: tuple[tuple[Element, ...], ...]  # lower-cased globs of ``actions``


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed policy. ``name``/``arn`` identify it in decisions; ``text`` is the document."""

    version: str | None
    id: str | None
    statements: tuple[Statement, ...]
    text: str
    name: str = ""
    arn: str | None = None

    @property
    def substitutes_variables(self) -> bool:
        """Policy variables are only substituted in ``2012-10-17`` documents."""
        return self.version == VERSION_2012

    @property
    def label(self) -> str:
        """A name for log lines and decisions: the name, else the ARN, else ``(unnamed)``."""
        return self.name or self.arn or "(unnamed)"


def policy_size(text: str) -> int:
    """Characters that count against IAM's size limits: everything except whitespace."""
    return sum(1 for ch in text if not ch.isspace())


def _allowed_char(ch: str) -> bool:
    return ch in "\t\n\r" or "\u0020" <= ch <= "\u00ff"


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MalformedPolicyDocument(f'Syntax errors in policy: duplicate key "{key}"')
        out[key] = value
    return out


def _check_characters(text: str) -> None:
    for offset, ch in enumerate(text):
        if not _allowed_char(ch):
            line = text.count("\n", 0, offset) + 1
            column = offset - (text.rfind("\n", 0, offset) + 1) + 1
            raise MalformedPolicyDocument(
                f"Policy document contains a character that is not allowed: U+{ord(ch):04X} "
                f"at line {line} column {column} (only tab, newline, carriage return and "
                "U+0020 to U+00FF are)"
            )


def _decode(text: str) -> Any:
    _check_characters(text)
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise MalformedPolicyDocument(
            f"Syntax errors in policy: invalid JSON at line {exc.lineno} column {exc.colno}: "
            f"{exc.msg}"
        ) from None
    except RecursionError:
        raise MalformedPolicyDocument("Syntax errors in policy: nesting too deep") from None


def _show(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _string_list(where: str, element: str, value: Any) -> list[str]:
    """A string or a non-empty list of strings, as IAM allows for Action, Resource ..."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise MalformedPolicyDocument(
            f"{where}: {element} must be a string or a list of strings, got {_show(value)}"
        )
    if not items:
        raise MalformedPolicyDocument(f"{where}: {element} must not be empty")
    for item in items:
        if not isinstance(item, str):
            raise MalformedPolicyDocument(
                f"{where}: {element} entries must be strings, got {_show(item)}"
            )
    return items


def _exactly_one(where: str, raw: Mapping[str, Any], a: str, b: str) -> tuple[str, bool]:
    if a in raw and b in raw:
        raise MalformedPolicyDocument(f"{where}: has both {a} and {b}; use exactly one")
    if a not in raw and b not in raw:
        raise MalformedPolicyDocument(f"{where}: must contain {a} or {b}")
    return (b, True) if b in raw else (a, False)


def _condition_value(where: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    raise MalformedPolicyDocument(
        f"{where} values must be strings, numbers or booleans, got {_show(value)}"
    )


def _parse_condition(where: str, raw: Any, substitute: bool) -> tuple[ConditionClause, ...]:
    if not isinstance(raw, dict):
        raise MalformedPolicyDocument(f"{where}: Condition must be an object, got {_show(raw)}")
    clauses: list[ConditionClause] = []
    for op_name, block in raw.items():
        operator: Operator | None = parse_operator(op_name)
        if operator is None:
            raise MalformedPolicyDocument(f'{where}: unknown condition operator "{op_name}"')
        if not isinstance(block, dict) or not block:
            raise MalformedPolicyDocument(
                f"{where}: Condition {op_name} must be a non-empty object of condition keys, "
                f"got {_show(block)}"
            )
        for key, raw_values in block.items():
            here = f'{where}: Condition {op_name} "{key}"'
            if ":" not in key or key.startswith(":") or key.endswith(":"):
                raise MalformedPolicyDocument(
                    f'{where}: Condition {op_name}: condition key "{key}" must have a service '
                    'prefix, such as "aws:username"'
                )
            items = raw_values if isinstance(raw_values, list) else [raw_values]
            if not items:
                raise MalformedPolicyDocument(f"{here} must have at least one value")
            templates: list[Template] = []
            for item in items:
                text = _condition_value(here, item)
                template = parse_template(text, substitute=substitute)
                static = template.static_text()
                if static is not None:
                    problem = validate_value(operator, static)
                    if problem:
                        raise MalformedPolicyDocument(f'{here}: value "{static}" {problem}')
                templates.append(template)
            clauses.append(ConditionClause(operator, key, tuple(templates)))
    return tuple(clauses)


def _parse_statement(index: int, raw: Any, substitute: bool, seen_sids: set[str]) -> Statement:
    where = f"Statement[{index}]"
    if not isinstance(raw, dict):
        raise MalformedPolicyDocument(f"{where}: must be an object, got {_show(raw)}")
    for key in raw:
        if key not in _STATEMENT_KEYS:
            raise MalformedPolicyDocument(
                f'{where}: unknown field "{key}"; expected one of {", ".join(_STATEMENT_KEYS)}'
            )
    for key in ("Principal", "NotPrincipal"):
        if key in raw:
            raise MalformedPolicyDocument(
                f"{where}: {key} is not allowed in an identity-based policy"
            )

    sid = raw.get("Sid")
    if sid is not None:
        if not isinstance(sid, str) or not _SID.match(sid):
            raise MalformedPolicyDocument(
                f"{where}: Sid must contain only letters and digits, got {_show(sid)}"
            )
        if sid and sid in seen_sids:
            raise MalformedPolicyDocument(
                f'{where}: Sid "{sid}" is used by another statement; Sids must be unique'
            )
        seen_sids.add(sid)

    if "Effect" not in raw:
        raise MalformedPolicyDocument(f'{where}: missing Effect ("Allow" or "Deny")')
    effect = raw["Effect"]
    if effect not in ("Allow", "Deny"):
        raise MalformedPolicyDocument(
            f'{where}: Effect must be "Allow" or "Deny", got {_show(effect)}'
        )

    action_key, not_action = _exactly_one(where, raw, "Action", "NotAction")
    actions = _string_list(where, action_key, raw[action_key])
    for action in actions:
        if action != "*" and not _ACTION.match(action):
            raise MalformedPolicyDocument(
                f'{where}: {action_key} "{action}" must be "*" or "service:action" '
                '(for example "ssm:StartSession")'
            )

    resource_key, not_resource = _exactly_one(where, raw, "Resource", "NotResource")
    resources = _string_list(where, resource_key, raw[resource_key])
    for resource in resources:
        if resource != "*" and not resource.startswith("arn:"):
            raise MalformedPolicyDocument(
                f'{where}: {resource_key} "{resource}" must be "*" or an ARN '
                "(arn:partition:service:region:account:resource)"
            )

    conditions: tuple[ConditionClause, ...] = ()
    if "Condition" in raw:
        conditions = _parse_condition(where, raw["Condition"], substitute)

    return Statement(
        index=index,
        sid=sid or None,
        effect=effect,
        actions=tuple(actions),
        not_action=not_action,
        resources=tuple(parse_template(r, substitute=substitute) for r in resources),
        not_resource=not_resource,
        conditions=conditions,
        action_patterns=tuple(tuple(glob_elements(a.lower())) for a in actions),
    )


def parse_policy(
    document: str | Mapping[str, Any],
    *,
    name: str = "",
    arn: str | None = None,
    max_chars: int | None = ROLE_INLINE_POLICY_MAX_CHARS,
) -> Policy:
    """Parse and validate an identity-based policy; raise MalformedPolicyDocument if bad.

    *document* is JSON text or its decoded form. *max_chars* is the size limit (whitespace
    not counted; ``None`` for none); pass :data:`MANAGED_POLICY_MAX_CHARS` for managed
    policies. *name*/*arn* label the policy in evaluation decisions.
    """
    if isinstance(document, str):
        text = document
        raw = _decode(text)
    else:
        try:
            text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise MalformedPolicyDocument(f"Syntax errors in policy: {exc}") from None
        _check_characters(text)
        raw = json.loads(text)  # a plain, independent copy of what the caller handed in

    if max_chars is not None:
        size = policy_size(text)
        if size > max_chars:
            raise MalformedPolicyDocument(
                f"Cannot exceed quota for PolicySize: {max_chars} "
                f"(the document has {size} characters, not counting whitespace)"
            )

    if not isinstance(raw, dict):
        raise MalformedPolicyDocument(
            f"Syntax errors in policy: the document must be a JSON object, got {_show(raw)}"
        )
    for key in raw:
        if key not in _TOP_LEVEL:
            raise MalformedPolicyDocument(
                f'Syntax errors in policy: unknown field "{key}"; expected Version, Id, Statement'
            )

    version = raw.get("Version")
    if version is not None and version not in (VERSION_2012, VERSION_2008):
        raise MalformedPolicyDocument(
            f'The policy failed legacy parsing: Version must be "{VERSION_2012}" or '
            f'"{VERSION_2008}", got {_show(version)}'
        )
    policy_id = raw.get("Id")
    if policy_id is not None and not isinstance(policy_id, str):
        raise MalformedPolicyDocument(
            f"Syntax errors in policy: Id must be a string, got {_show(policy_id)}"
        )

    if "Statement" not in raw:
        raise MalformedPolicyDocument("Syntax errors in policy: missing Statement")
    raw_statements = raw["Statement"]
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list):
        raise MalformedPolicyDocument(
            "Syntax errors in policy: Statement must be an object or a list of objects, "
            f"got {_show(raw_statements)}"
        )
    if not raw_statements:
        raise MalformedPolicyDocument("Syntax errors in policy: Statement must not be empty")

    substitute = version == VERSION_2012
    seen: set[str] = set()
    statements = tuple(
        _parse_statement(i, s, substitute, seen) for i, s in enumerate(raw_statements)
    )
    return Policy(
        version=version,
        id=policy_id,
        statements=statements,
        text=text,
        name=name,
        arn=arn,
    )
