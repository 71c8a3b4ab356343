"""The evaluation table: policies + request -> allowed/denied and why.

Every row is one request decided against one or more policy documents. The condition rows
use a single ``Allow * on *`` statement guarded by one condition, so "allowed" means the
condition held and "implicit deny" means it did not. The remaining rows cover actions,
resources, variables, NotAction/NotResource and how decisions combine across statements
and policies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from portless.iam.context import ContextValue, RequestContext
from portless.iam.evaluation import evaluate
from portless.iam.policy import parse_policy

from .helpers import ACCOUNT, ALICE_ARN, DOCUMENT, NODE, OTHER_NODE, V08, doc, req, st

ALLOWED = "allowed"
IMPLICIT = "implicit deny"
EXPLICIT = "explicit deny"


@dataclass(frozen=True)
class Case:
    """One row: the documents, the request, and the expected outcome."""

    policies: list[Any]
    ctx: RequestContext
    allowed: bool
    reason: str
    by: tuple[int, int] | None = None  # (policy index, statement index) that decided
    sid: str | None = field(default=None)


# --- condition operators -------------------------------------------------------------------
# (id, operator, key, policy values, context keys, condition holds?)

T0 = "2024-01-01T00:00:00Z"  # 1704067200
E0 = "1704067200"
TAGS = "aws:TagKeys"
JUNE_2024 = datetime(2024, 6, 1, tzinfo=UTC)

CONDITION_ROWS: list[tuple[str, str, str, Any, dict[str, ContextValue], bool]] = [
    # String
    ("StringEquals-match", "StringEquals", "aws:username", "alice", {"aws:username": "alice"}, True),
    ("StringEquals-case-sensitive", "StringEquals", "aws:username", "Alice", {"aws:username": "alice"}, False),
    ("StringEquals-missing-key", "StringEquals", "aws:username", "alice", {}, False),
    ("StringEquals-values-OR", "StringEquals", "aws:username", ["bob", "alice"], {"aws:username": "alice"}, True),
    ("StringEquals-no-wildcards", "StringEquals", "aws:username", "al*", {"aws:username": "alice"}, False),
    ("StringEquals-star-is-literal", "StringEquals", "aws:username", "al*", {"aws:username": "al*"}, True),
    ("StringNotEquals-differs", "StringNotEquals", "aws:username", "bob", {"aws:username": "alice"}, True),
    ("StringNotEquals-same", "StringNotEquals", "aws:username", "alice", {"aws:username": "alice"}, False),
    ("StringNotEquals-NOR-one-hit", "StringNotEquals", "aws:username", ["bob", "alice"], {"aws:username": "alice"}, False),
    ("StringNotEquals-NOR-no-hit", "StringNotEquals", "aws:username", ["bob", "carol"], {"aws:username": "alice"}, True),
    ("StringNotEquals-missing-key", "StringNotEquals", "aws:username", "alice", {}, True),
    ("StringEqualsIgnoreCase-match", "StringEqualsIgnoreCase", "aws:username", "ALICE", {"aws:username": "alice"}, True),
    ("StringEqualsIgnoreCase-differs", "StringEqualsIgnoreCase", "aws:username", "bob", {"aws:username": "alice"}, False),
    ("StringEqualsIgnoreCase-missing", "StringEqualsIgnoreCase", "aws:username", "alice", {}, False),
    ("StringNotEqualsIgnoreCase-same", "StringNotEqualsIgnoreCase", "aws:username", "ALICE", {"aws:username": "alice"}, False),
    ("StringNotEqualsIgnoreCase-differs", "StringNotEqualsIgnoreCase", "aws:username", "bob", {"aws:username": "alice"}, True),
    ("StringLike-star", "StringLike", "aws:username", "al*", {"aws:username": "alice"}, True),
    ("StringLike-qmark", "StringLike", "aws:username", "a?ice", {"aws:username": "alice"}, True),
    ("StringLike-case-sensitive", "StringLike", "aws:username", "A*", {"aws:username": "alice"}, False),
    ("StringLike-star-missing-key", "StringLike", "aws:username", "*", {}, False),
    ("StringLike-no-match", "StringLike", "aws:username", "b*", {"aws:username": "alice"}, False),
    ("StringLike-values-OR", "StringLike", "aws:username", ["x*", "al*"], {"aws:username": "alice"}, True),
    ("StringNotLike-no-match", "StringNotLike", "aws:username", "b*", {"aws:username": "alice"}, True),
    ("StringNotLike-match", "StringNotLike", "aws:username", "a*", {"aws:username": "alice"}, False),
    ("StringNotLike-missing-key", "StringNotLike", "aws:username", "a*", {}, True),
    ("StringEqualsIfExists-missing", "StringEqualsIfExists", "aws:username", "alice", {}, True),
    ("StringEqualsIfExists-match", "StringEqualsIfExists", "aws:username", "alice", {"aws:username": "alice"}, True),
    ("StringEqualsIfExists-mismatch", "StringEqualsIfExists", "aws:username", "alice", {"aws:username": "bob"}, False),
    ("StringNotEqualsIfExists-missing", "StringNotEqualsIfExists", "aws:username", "alice", {}, True),
    ("StringNotLikeIfExists-match", "StringNotLikeIfExists", "aws:username", "a*", {"aws:username": "alice"}, False),
    ("StringLikeIfExists-missing", "StringLikeIfExists", "aws:username", "zz*", {}, True),
    ("String-json-number-value", "StringEquals", "ssm:resourceTag/Tier", 42, {"ssm:resourceTag/Tier": "42"}, True),
    ("String-json-bool-value", "StringEquals", "ssm:resourceTag/Public", True, {"ssm:resourceTag/Public": "true"}, True),
    ("String-key-case-insensitive", "StringEquals", "AWS:UserName", "alice", {"aws:username": "alice"}, True),
    ("String-tag-key-case-insensitive", "StringEquals", "ssm:resourcetag/ENV", "dev", {"ssm:resourceTag/Env": "dev"}, True),
    ("String-operator-name-case", "stringequals", "aws:username", "alice", {"aws:username": "alice"}, True),
    ("StringLike-escaped-star-literal", "StringLike", "aws:username", "a${*}", {"aws:username": "a*"}, True),
    ("StringLike-escaped-star-not-wild", "StringLike", "aws:username", "a${*}", {"aws:username": "ab"}, False),
    ("StringEquals-escaped-dollar", "StringEquals", "aws:username", "${$}x", {"aws:username": "$x"}, True),
    ("StringLike-escaped-qmark", "StringLike", "aws:username", "a${?}", {"aws:username": "a?"}, True),
    # Numeric
    ("NumericEquals-same", "NumericEquals", "aws:MultiFactorAuthAge", "10", {"aws:MultiFactorAuthAge": "10"}, True),
    ("NumericEquals-decimal-equal", "NumericEquals", "aws:MultiFactorAuthAge", "10", {"aws:MultiFactorAuthAge": "10.0"}, True),
    ("NumericEquals-differs", "NumericEquals", "aws:MultiFactorAuthAge", "10", {"aws:MultiFactorAuthAge": "11"}, False),
    ("NumericNotEquals-differs", "NumericNotEquals", "aws:MultiFactorAuthAge", "10", {"aws:MultiFactorAuthAge": "11"}, True),
    ("NumericNotEquals-same", "NumericNotEquals", "aws:MultiFactorAuthAge", "10", {"aws:MultiFactorAuthAge": "10"}, False),
    ("NumericNotEquals-missing", "NumericNotEquals", "aws:MultiFactorAuthAge", "10", {}, True),
    ("NumericLessThan-below", "NumericLessThan", "aws:MultiFactorAuthAge", "3600", {"aws:MultiFactorAuthAge": "100"}, True),
    ("NumericLessThan-equal-edge", "NumericLessThan", "aws:MultiFactorAuthAge", "3600", {"aws:MultiFactorAuthAge": "3600"}, False),
    ("NumericLessThanEquals-equal-edge", "NumericLessThanEquals", "aws:MultiFactorAuthAge", "3600", {"aws:MultiFactorAuthAge": "3600"}, True),
    ("NumericLessThanEquals-above", "NumericLessThanEquals", "aws:MultiFactorAuthAge", "3600", {"aws:MultiFactorAuthAge": "3601"}, False),
    ("NumericGreaterThan-above", "NumericGreaterThan", "aws:MultiFactorAuthAge", "10", {"aws:MultiFactorAuthAge": "11"}, True),
    ("NumericGreaterThan-equal-edge", "NumericGreaterThan", "aws:MultiFactorAuthAge", "10", {"aws:MultiFactorAuthAge": "10"}, False),
    ("NumericGreaterThanEquals-equal", "NumericGreaterThanEquals", "aws:MultiFactorAuthAge", "10", {"aws:MultiFactorAuthAge": "10"}, True),
    ("NumericGreaterThanEquals-below", "NumericGreaterThanEquals", "aws:MultiFactorAuthAge", "10", {"aws:MultiFactorAuthAge": "9"}, False),
    ("Numeric-json-number-value", "NumericLessThan", "aws:MultiFactorAuthAge", 3600, {"aws:MultiFactorAuthAge": 120}, True),
    ("Numeric-context-not-a-number", "NumericLessThan", "aws:MultiFactorAuthAge", "3600", {"aws:MultiFactorAuthAge": "abc"}, False),
    ("NumericLessThan-missing", "NumericLessThan", "aws:MultiFactorAuthAge", "3600", {}, False),
    ("NumericLessThanIfExists-missing", "NumericLessThanIfExists", "aws:MultiFactorAuthAge", "3600", {}, True),
    ("NumericLessThan-negative-decimal", "NumericLessThan", "ssm:resourceTag/n", "-1.5", {"ssm:resourceTag/n": "-2"}, True),
    ("NumericLessThan-values-OR", "NumericLessThan", "aws:MultiFactorAuthAge", ["1", "100"], {"aws:MultiFactorAuthAge": "50"}, True),
    # Date
    ("DateGreaterThan-after", "DateGreaterThan", "aws:CurrentTime", "2020-01-01T00:00:00Z", {"aws:CurrentTime": T0}, True),
    ("DateLessThan-after", "DateLessThan", "aws:CurrentTime", "2020-01-01T00:00:00Z", {"aws:CurrentTime": T0}, False),
    ("DateEquals-iso-vs-epoch-context", "DateEquals", "aws:EpochTime", T0, {"aws:EpochTime": E0}, True),
    ("DateEquals-epoch-vs-iso-context", "DateEquals", "aws:CurrentTime", E0, {"aws:CurrentTime": T0}, True),
    ("DateEquals-json-number-epoch", "DateEquals", "aws:CurrentTime", 1704067200, {"aws:CurrentTime": T0}, True),
    ("DateNotEquals-same", "DateNotEquals", "aws:CurrentTime", T0, {"aws:CurrentTime": T0}, False),
    ("DateNotEquals-differs", "DateNotEquals", "aws:CurrentTime", "2023-06-01T00:00:00Z", {"aws:CurrentTime": T0}, True),
    ("DateLessThanEquals-equal-edge", "DateLessThanEquals", "aws:CurrentTime", T0, {"aws:CurrentTime": T0}, True),
    ("DateLessThan-equal-edge", "DateLessThan", "aws:CurrentTime", T0, {"aws:CurrentTime": T0}, False),
    ("DateGreaterThanEquals-equal-edge", "DateGreaterThanEquals", "aws:CurrentTime", T0, {"aws:CurrentTime": T0}, True),
    ("DateGreaterThan-equal-edge", "DateGreaterThan", "aws:CurrentTime", T0, {"aws:CurrentTime": T0}, False),
    ("DateLessThan-date-only", "DateLessThan", "aws:CurrentTime", "2024-01-02", {"aws:CurrentTime": "2024-01-01T12:00:00Z"}, True),
    ("DateLessThan-offset", "DateLessThan", "aws:CurrentTime", "2024-01-01T03:00:00+02:00", {"aws:CurrentTime": T0}, True),
    ("DateGreaterThan-offset", "DateGreaterThan", "aws:CurrentTime", "2024-01-01T03:00:00+02:00", {"aws:CurrentTime": T0}, False),
    ("DateLessThan-fractional-seconds", "DateLessThan", "aws:CurrentTime", "2024-01-01T00:00:00.500Z", {"aws:CurrentTime": T0}, True),
    ("DateLessThan-missing", "DateLessThan", "aws:CurrentTime", T0, {}, False),
    ("DateLessThanIfExists-missing", "DateLessThanIfExists", "aws:CurrentTime", T0, {}, True),
    ("Date-context-garbage", "DateLessThan", "aws:CurrentTime", T0, {"aws:CurrentTime": "yesterday"}, False),
    # Bool
    ("Bool-true-true", "Bool", "aws:SecureTransport", "true", {"aws:SecureTransport": "true"}, True),
    ("Bool-true-false", "Bool", "aws:SecureTransport", "true", {"aws:SecureTransport": "false"}, False),
    ("Bool-json-true", "Bool", "aws:SecureTransport", True, {"aws:SecureTransport": True}, True),
    ("Bool-false-false", "Bool", "aws:SecureTransport", "false", {"aws:SecureTransport": "false"}, True),
    ("Bool-value-case", "Bool", "aws:SecureTransport", "TRUE", {"aws:SecureTransport": "true"}, True),
    ("Bool-missing", "Bool", "aws:SecureTransport", "true", {}, False),
    ("Bool-false-missing-mfa-gotcha", "Bool", "aws:MultiFactorAuthPresent", "false", {}, False),
    ("BoolIfExists-false-missing-mfa", "BoolIfExists", "aws:MultiFactorAuthPresent", "false", {}, True),
    ("Bool-context-not-boolean", "Bool", "aws:SecureTransport", "true", {"aws:SecureTransport": "yes"}, False),
    # Binary
    ("BinaryEquals-same", "BinaryEquals", "ssm:resourceTag/blob", "QmluYXJ5", {"ssm:resourceTag/blob": "QmluYXJ5"}, True),
    ("BinaryEquals-differs", "BinaryEquals", "ssm:resourceTag/blob", "QmluYXJ5", {"ssm:resourceTag/blob": "T3RoZXI="}, False),
    # IP addresses
    ("IpAddress-v4-in-cidr", "IpAddress", "aws:SourceIp", "203.0.113.0/24", {"aws:SourceIp": "203.0.113.7"}, True),
    ("IpAddress-v4-outside-cidr", "IpAddress", "aws:SourceIp", "203.0.113.0/24", {"aws:SourceIp": "203.0.114.7"}, False),
    ("IpAddress-single-address", "IpAddress", "aws:SourceIp", "203.0.113.7", {"aws:SourceIp": "203.0.113.7"}, True),
    ("IpAddress-single-address-other", "IpAddress", "aws:SourceIp", "203.0.113.7", {"aws:SourceIp": "203.0.113.8"}, False),
    ("IpAddress-v6-in-cidr", "IpAddress", "aws:SourceIp", "2001:db8::/32", {"aws:SourceIp": "2001:db8:1::5"}, True),
    ("IpAddress-v6-outside-cidr", "IpAddress", "aws:SourceIp", "2001:db8::/32", {"aws:SourceIp": "2001:db9::1"}, False),
    ("IpAddress-v4-cidr-v6-source", "IpAddress", "aws:SourceIp", "0.0.0.0/0", {"aws:SourceIp": "2001:db8::1"}, False),
    ("IpAddress-any-v4", "IpAddress", "aws:SourceIp", "0.0.0.0/0", {"aws:SourceIp": "198.51.100.1"}, True),
    ("IpAddress-host-bits-set", "IpAddress", "aws:SourceIp", "10.1.2.3/8", {"aws:SourceIp": "10.200.0.1"}, True),
    ("NotIpAddress-outside", "NotIpAddress", "aws:SourceIp", "10.0.0.0/8", {"aws:SourceIp": "203.0.113.7"}, True),
    ("NotIpAddress-inside", "NotIpAddress", "aws:SourceIp", "10.0.0.0/8", {"aws:SourceIp": "10.1.2.3"}, False),
    ("NotIpAddress-missing", "NotIpAddress", "aws:SourceIp", "10.0.0.0/8", {}, True),
    ("IpAddress-missing", "IpAddress", "aws:SourceIp", "10.0.0.0/8", {}, False),
    ("IpAddress-values-OR", "IpAddress", "aws:SourceIp", ["10.0.0.0/8", "192.168.0.0/16"], {"aws:SourceIp": "192.168.1.1"}, True),
    ("NotIpAddress-values-NOR", "NotIpAddress", "aws:SourceIp", ["10.0.0.0/8", "192.168.0.0/16"], {"aws:SourceIp": "192.168.1.1"}, False),
    ("IpAddress-context-garbage", "IpAddress", "aws:SourceIp", "0.0.0.0/0", {"aws:SourceIp": "localhost"}, False),
    ("IpAddressIfExists-missing", "IpAddressIfExists", "aws:SourceIp", "10.0.0.0/8", {}, True),
    ("IpAddress-v6-single", "IpAddress", "aws:SourceIp", "::1", {"aws:SourceIp": "::1"}, True),
    # ARNs
    ("ArnEquals-exact", "ArnEquals", "aws:PrincipalArn", ALICE_ARN, {"aws:PrincipalArn": ALICE_ARN}, True),
    ("ArnLike-path-wildcard", "ArnLike", "aws:PrincipalArn", f"arn:aws:iam::{ACCOUNT}:user/*", {"aws:PrincipalArn": ALICE_ARN}, True),
    ("ArnLike-other-account", "ArnLike", "aws:PrincipalArn", "arn:aws:iam::999999999999:user/*", {"aws:PrincipalArn": ALICE_ARN}, False),
    ("ArnLike-account-wildcard", "ArnLike", "aws:PrincipalArn", "arn:aws:iam::*:user/alice", {"aws:PrincipalArn": ALICE_ARN}, True),
    ("ArnLike-star-does-not-span-fields", "ArnLike", "aws:PrincipalArn", "arn:aws:iam:*:user/alice", {"aws:PrincipalArn": ALICE_ARN}, False),
    ("ArnNotLike-other", "ArnNotLike", "aws:PrincipalArn", "arn:aws:iam::*:user/bob", {"aws:PrincipalArn": ALICE_ARN}, True),
    ("ArnNotLike-same", "ArnNotLike", "aws:PrincipalArn", "arn:aws:iam::*:user/alice", {"aws:PrincipalArn": ALICE_ARN}, False),
    ("ArnNotEquals-missing", "ArnNotEquals", "aws:SourceArn", ALICE_ARN, {}, True),
    ("ArnEquals-accepts-wildcards", "ArnEquals", "aws:PrincipalArn", f"arn:aws:iam::{ACCOUNT}:user/a?ice", {"aws:PrincipalArn": ALICE_ARN}, True),
    ("ArnLike-context-not-an-arn", "ArnLike", "aws:PrincipalArn", "arn:*:*:*:*:*", {"aws:PrincipalArn": "alice"}, False),
    ("ArnLike-case-sensitive", "ArnLike", "aws:PrincipalArn", f"arn:aws:iam::{ACCOUNT}:user/Alice", {"aws:PrincipalArn": ALICE_ARN}, False),
    # Null
    ("Null-true-missing", "Null", "aws:MultiFactorAuthAge", "true", {}, True),
    ("Null-true-present", "Null", "aws:MultiFactorAuthAge", "true", {"aws:MultiFactorAuthAge": "5"}, False),
    ("Null-false-present", "Null", "aws:MultiFactorAuthAge", "false", {"aws:MultiFactorAuthAge": "5"}, True),
    ("Null-false-missing", "Null", "aws:MultiFactorAuthAge", "false", {}, False),
    ("Null-json-true-missing", "Null", "aws:MultiFactorAuthAge", True, {}, True),
    ("Null-both-values", "Null", "aws:MultiFactorAuthAge", ["true", "false"], {"aws:MultiFactorAuthAge": "5"}, True),
    ("Null-true-empty-list", "Null", TAGS, "true", {TAGS: []}, True),
    # Set operators
    ("ForAnyValue-one-matches", "ForAnyValue:StringEquals", TAGS, "team", {TAGS: ["team", "env"]}, True),
    ("ForAnyValue-none-match", "ForAnyValue:StringEquals", TAGS, "team", {TAGS: ["env"]}, False),
    ("ForAnyValue-missing-key", "ForAnyValue:StringEquals", TAGS, "team", {}, False),
    ("ForAnyValue-empty-list", "ForAnyValue:StringEquals", TAGS, "team", {TAGS: []}, False),
    ("ForAllValues-subset", "ForAllValues:StringEquals", TAGS, ["team", "env"], {TAGS: ["team"]}, True),
    ("ForAllValues-not-subset", "ForAllValues:StringEquals", TAGS, ["team", "env"], {TAGS: ["team", "owner"]}, False),
    ("ForAllValues-missing-key", "ForAllValues:StringEquals", TAGS, "team", {}, True),
    ("ForAllValues-empty-list", "ForAllValues:StringEquals", TAGS, "team", {TAGS: []}, True),
    ("ForAllValues-StringLike", "ForAllValues:StringLike", TAGS, "Created*", {TAGS: ["CreatedBy", "CreatedAt"]}, True),
    ("ForAnyValue-StringNotEquals-some-differ", "ForAnyValue:StringNotEquals", TAGS, "team", {TAGS: ["team", "env"]}, True),
    ("ForAnyValue-StringNotEquals-all-same", "ForAnyValue:StringNotEquals", TAGS, "team", {TAGS: ["team"]}, False),
    ("ForAllValues-StringNotEquals-none-banned", "ForAllValues:StringNotEquals", TAGS, "secret", {TAGS: ["team", "env"]}, True),
    ("ForAllValues-StringNotEquals-one-banned", "ForAllValues:StringNotEquals", TAGS, "secret", {TAGS: ["team", "secret"]}, False),
    ("ForAllValues-StringNotEquals-missing", "ForAllValues:StringNotEquals", TAGS, "secret", {}, True),
    ("ForAnyValue-single-valued-key", "ForAnyValue:StringEquals", "aws:username", "alice", {"aws:username": "alice"}, True),
    ("ForAnyValue-IfExists-missing", "ForAnyValue:StringEqualsIfExists", TAGS, "team", {}, True),
    ("ForAllValues-scalar-context", "ForAllValues:StringEquals", "aws:username", ["alice", "bob"], {"aws:username": "alice"}, True),
    ("plain-operator-on-multivalued-any", "StringEquals", TAGS, "env", {TAGS: ["team", "env"]}, True),
    ("plain-negated-on-multivalued", "StringNotEquals", TAGS, "env", {TAGS: ["team", "env"]}, False),
    ("ForAnyValue-set-prefix-case", "foranyvalue:StringEquals", TAGS, "team", {TAGS: ["team"]}, True),
]


def _condition_case(
    op: str, key: str, values: Any, keys: dict[str, ContextValue], holds: bool
) -> Case:
    policy = doc(st(condition={op: {key: values}}))
    return Case(
        [policy],
        req(keys=keys),
        holds,
        ALLOWED if holds else IMPLICIT,
        (0, 0) if holds else None,
    )


def _allow(resource: Any = "*", action: Any = "*", **kw: Any) -> dict[str, Any]:
    return doc(st(action=action, resource=resource, **kw))


SESSION = f"arn:aws:ssm:us-east-1:{ACCOUNT}:session/alice-0123456789abcdef0"
SESSION_PATTERN = "arn:aws:ssm:*:*:session/${aws:username}-*"

OTHER_ROWS: list[Any] = [
    # --- more than one key / operator ---------------------------------------------------
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"aws:username": "alice", "aws:RequestedRegion": "us-east-1"}})],
            req(keys={"aws:username": "alice", "aws:RequestedRegion": "us-east-1"}),
            True, ALLOWED, (0, 0),
        ),
        id="two-keys-one-operator-both-hold",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"aws:username": "alice", "aws:RequestedRegion": "us-east-1"}})],
            req(keys={"aws:username": "alice", "aws:RequestedRegion": "eu-west-1"}),
            False, IMPLICIT,
        ),
        id="two-keys-one-operator-AND-one-fails",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"aws:username": "alice"}, "Bool": {"aws:SecureTransport": "true"}})],
            req(keys={"aws:username": "alice", "aws:SecureTransport": True}),
            True, ALLOWED, (0, 0),
        ),
        id="two-operators-both-hold",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"aws:username": "alice"}, "Bool": {"aws:SecureTransport": "true"}})],
            req(keys={"aws:username": "alice", "aws:SecureTransport": False}),
            False, IMPLICIT,
        ),
        id="two-operators-AND-one-fails",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"aws:username": ["bob", "alice"], "aws:RequestedRegion": "us-east-1"}})],
            req(keys={"aws:username": "alice", "aws:RequestedRegion": "us-east-1"}),
            True, ALLOWED, (0, 0),
        ),
        id="values-OR-inside-keys-AND",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"aws:username": ["bob", "carol"], "aws:RequestedRegion": "us-east-1"}})],
            req(keys={"aws:username": "alice", "aws:RequestedRegion": "us-east-1"}),
            False, IMPLICIT,
        ),
        id="values-OR-none-match",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"ssm:resourceTag/Env": "dev"}})],
            RequestContext.build("ssm:StartSession", NODE, resource_tags={"Env": "dev"}),
            True, ALLOWED, (0, 0),
        ),
        id="node-tag-matches",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"ssm:resourceTag/Env": "dev"}})],
            RequestContext.build("ssm:StartSession", NODE, resource_tags={"Env": "prod"}),
            False, IMPLICIT,
        ),
        id="node-tag-differs",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"ssm:resourceTag/Env": "dev"}})],
            RequestContext.build("ssm:StartSession", NODE),
            False, IMPLICIT,
        ),
        id="node-untagged",
    ),
    # --- policy variables in conditions -------------------------------------------------
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"ssm:resourceTag/Owner": "${aws:username}"}})],
            RequestContext.build("ssm:StartSession", NODE, username="alice", resource_tags={"Owner": "alice"}),
            True, ALLOWED, (0, 0),
        ),
        id="var-username-owner-tag-match",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"ssm:resourceTag/Owner": "${aws:username}"}})],
            RequestContext.build("ssm:StartSession", NODE, username="alice", resource_tags={"Owner": "bob"}),
            False, IMPLICIT,
        ),
        id="var-username-owner-tag-mismatch",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"ssm:resourceTag/Team": "${aws:PrincipalTag/team}"}})],
            RequestContext.build("ssm:StartSession", NODE, principal_tags={"team": "ops"}, resource_tags={"Team": "ops"}),
            True, ALLOWED, (0, 0),
        ),
        id="var-principal-tag-match",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"ssm:resourceTag/Team": "${aws:PrincipalTag/team}"}})],
            RequestContext.build("ssm:StartSession", NODE, resource_tags={"Team": "ops"}),
            False, IMPLICIT,
        ),
        id="var-unresolvable-matches-nothing",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"ssm:resourceTag/Team": "${aws:PrincipalTag/team, 'none'}"}})],
            RequestContext.build("ssm:StartSession", NODE, resource_tags={"Team": "none"}),
            True, ALLOWED, (0, 0),
        ),
        id="var-default-used-when-missing",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"ssm:resourceTag/Team": "${aws:PrincipalTag/team, 'none'}"}})],
            RequestContext.build("ssm:StartSession", NODE, principal_tags={"team": "ops"}, resource_tags={"Team": "none"}),
            False, IMPLICIT,
        ),
        id="var-default-ignored-when-present",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"ssm:resourceTag/Owner": "${AWS:UserName}"}})],
            RequestContext.build("ssm:StartSession", NODE, username="alice", resource_tags={"Owner": "alice"}),
            True, ALLOWED, (0, 0),
        ),
        id="var-name-case-insensitive",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"ssm:resourceTag/Owner": "${aws:userid}"}})],
            RequestContext.build("ssm:StartSession", NODE, userid="AIDAEXAMPLE", resource_tags={"Owner": "AIDAEXAMPLE"}),
            True, ALLOWED, (0, 0),
        ),
        id="var-userid",
    ),
    pytest.param(
        Case(
            [_allow(condition={"IpAddress": {"aws:SourceIp": "${aws:PrincipalTag/cidr}"}})],
            RequestContext.build("ssm:StartSession", NODE, source_ip="10.9.8.7", principal_tags={"cidr": "10.0.0.0/8"}),
            True, ALLOWED, (0, 0),
        ),
        id="var-cidr-from-tag",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"ssm:resourceTag/AllowedFrom": "${aws:SourceIp}"}})],
            RequestContext.build("ssm:StartSession", NODE, source_ip="10.9.8.7", resource_tags={"AllowedFrom": "10.9.8.7"}),
            True, ALLOWED, (0, 0),
        ),
        id="var-source-ip",
    ),
    pytest.param(
        Case(
            [_allow(condition={"DateLessThanEquals": {"ssm:resourceTag/NotBefore": "${aws:CurrentTime}"}})],
            req(keys={"aws:CurrentTime": T0, "ssm:resourceTag/NotBefore": "2023-12-31T00:00:00Z"}),
            True, ALLOWED, (0, 0),
        ),
        id="var-current-time",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringLike": {"ssm:resourceTag/Owner": "${aws:PrincipalTag/who}"}})],
            RequestContext.build("ssm:StartSession", NODE, principal_tags={"who": "*"}, resource_tags={"Owner": "bob"}),
            False, IMPLICIT,
        ),
        id="var-value-star-is-literal",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"ssm:resourceTag/Owner": "${aws:TagKeys}"}})],
            req(keys={"aws:TagKeys": ["alice"], "ssm:resourceTag/Owner": "alice"}),
            False, IMPLICIT,
        ),
        id="var-multivalued-key-unresolvable",
    ),
    pytest.param(
        Case(
            [doc(st(condition={"StringEquals": {"aws:username": "${aws:username}"}}), version=V08)],
            req(keys={"aws:username": "alice"}),
            False, IMPLICIT,
        ),
        id="var-2008-condition-not-substituted",
    ),
    # --- actions ------------------------------------------------------------------------
    pytest.param(Case([_allow(action="SSM:startsession")], req(), True, ALLOWED, (0, 0)), id="action-case-insensitive"),
    pytest.param(Case([_allow(action="ssm:Start*")], req(), True, ALLOWED, (0, 0)), id="action-trailing-star"),
    pytest.param(Case([_allow(action="ssm:*Session")], req("ssm:TerminateSession", SESSION), True, ALLOWED, (0, 0)), id="action-leading-star"),
    pytest.param(Case([_allow(action="ssm:?tartSession")], req(), True, ALLOWED, (0, 0)), id="action-qmark"),
    pytest.param(Case([_allow(action="ssm:?Session")], req(), False, IMPLICIT), id="action-qmark-exactly-one"),
    pytest.param(Case([_allow(action="ssm:Describe*")], req(), False, IMPLICIT), id="action-wildcard-no-match"),
    pytest.param(Case([_allow(action="*")], req("iam:CreateUser", "*"), True, ALLOWED, (0, 0)), id="action-star-everything"),
    pytest.param(Case([_allow(action="ec2:*")], req(), False, IMPLICIT), id="action-other-service"),
    pytest.param(Case([_allow(action="ssm*:*")], req("ssmmessages:OpenDataChannel", "*"), True, ALLOWED, (0, 0)), id="action-service-wildcard"),
    pytest.param(Case([_allow(action=["ec2:DescribeInstances", "ssm:StartSession"])], req(), True, ALLOWED, (0, 0)), id="action-list"),
    pytest.param(Case([_allow(action="ssm:StartSessio")], req(), False, IMPLICIT), id="action-prefix-not-enough"),
    pytest.param(Case([doc(st(not_action="ssm:TerminateSession"))], req(), True, ALLOWED, (0, 0)), id="notaction-other-action-allowed"),
    pytest.param(Case([doc(st(not_action="ssm:StartSession"))], req(), False, IMPLICIT), id="notaction-listed-action-excluded"),
    pytest.param(Case([doc(st(not_action="ssm:start*"))], req(), False, IMPLICIT), id="notaction-wildcard-case-insensitive"),
    pytest.param(
        Case([doc(st(), st("Deny", not_action="iam:*"))], req(), False, EXPLICIT, (0, 1)),
        id="deny-notaction-denies-everything-else",
    ),
    pytest.param(
        Case([doc(st(), st("Deny", not_action="iam:*"))], req("iam:GetUser", "*"), True, ALLOWED, (0, 0)),
        id="deny-notaction-spares-listed",
    ),
    # --- resources ----------------------------------------------------------------------
    pytest.param(Case([_allow(NODE)], req(), True, ALLOWED, (0, 0)), id="resource-exact"),
    pytest.param(Case([_allow(NODE.replace("mi-0123", "MI-0123"))], req(), False, IMPLICIT), id="resource-case-sensitive"),
    pytest.param(Case([_allow("arn:aws:ssm:*:*:managed-instance/*")], req(), True, ALLOWED, (0, 0)), id="resource-wildcard-fields"),
    pytest.param(Case([_allow(f"arn:aws:ssm:us-east-1:{ACCOUNT}:managed-instance/mi-0123456789abcdef?")], req(), True, ALLOWED, (0, 0)), id="resource-qmark"),
    pytest.param(Case([_allow("arn:aws:ssm:*")], req(), True, ALLOWED, (0, 0)), id="resource-trailing-star-crosses-colons"),
    pytest.param(Case([_allow("arn:aws:ssm:us-*")], req(), True, ALLOWED, (0, 0)), id="resource-trailing-partial-field"),
    pytest.param(Case([_allow("arn:aws:ssm:eu-*")], req(), False, IMPLICIT), id="resource-trailing-partial-field-miss"),
    pytest.param(Case([_allow(f"arn:aws:*:us-east-1:{ACCOUNT}:managed-instance/*")], req(), True, ALLOWED, (0, 0)), id="resource-service-wildcard"),
    pytest.param(Case([_allow("arn:aws:ssm:*:managed-instance/*")], req(), False, IMPLICIT), id="resource-star-does-not-skip-fields"),
    pytest.param(Case([_allow("arn:aws:ssm:us-east-?:*:managed-instance/*")], req(), True, ALLOWED, (0, 0)), id="resource-qmark-in-region"),
    pytest.param(Case([_allow("arn:aws:ssm:us-east-1:*:managed-instance/mi-*")], req(resource=OTHER_NODE), True, ALLOWED, (0, 0)), id="resource-prefix-other-node"),
    pytest.param(Case([_allow(OTHER_NODE)], req(), False, IMPLICIT), id="resource-other-node"),
    pytest.param(Case([_allow("*")], req("ssm:DescribeInstanceInformation", "*"), True, ALLOWED, (0, 0)), id="resource-star-request-star"),
    pytest.param(Case([_allow("arn:aws:ssm:*:*:*")], req("ssm:DescribeInstanceInformation", "*"), False, IMPLICIT), id="resource-arn-pattern-vs-star"),
    pytest.param(Case([_allow([OTHER_NODE, NODE])], req(), True, ALLOWED, (0, 0)), id="resource-list-any"),
    pytest.param(Case([_allow("arn:aws:ssm:*:*:document/*")], req(resource=DOCUMENT), True, ALLOWED, (0, 0)), id="resource-document-empty-account"),
    pytest.param(Case([_allow("arn:aws:ssm:*:?*:document/*")], req(resource=DOCUMENT), False, IMPLICIT), id="resource-qmark-needs-a-character"),
    pytest.param(Case([doc(st(not_resource="arn:aws:ssm:*:*:document/*"))], req(), True, ALLOWED, (0, 0)), id="notresource-outside"),
    pytest.param(Case([doc(st(not_resource="arn:aws:ssm:*:*:document/*"))], req(resource=DOCUMENT), False, IMPLICIT), id="notresource-inside"),
    pytest.param(
        Case([doc(st(), st("Deny", not_resource=[NODE]))], req(resource=OTHER_NODE), False, EXPLICIT, (0, 1)),
        id="deny-notresource-everything-but-one",
    ),
    pytest.param(
        Case([doc(st(), st("Deny", not_resource=[NODE]))], req(), True, ALLOWED, (0, 0)),
        id="deny-notresource-spares-listed",
    ),
    # --- policy variables in resources --------------------------------------------------
    pytest.param(
        Case([_allow(SESSION_PATTERN, "ssm:TerminateSession")], RequestContext.build("ssm:TerminateSession", SESSION, username="alice"), True, ALLOWED, (0, 0)),
        id="resource-var-own-session",
    ),
    pytest.param(
        Case([_allow(SESSION_PATTERN, "ssm:TerminateSession")], RequestContext.build("ssm:TerminateSession", SESSION, username="bob"), False, IMPLICIT),
        id="resource-var-someone-elses-session",
    ),
    pytest.param(
        Case([_allow(SESSION_PATTERN, "ssm:TerminateSession")], RequestContext.build("ssm:TerminateSession", SESSION), False, IMPLICIT),
        id="resource-var-unresolvable",
    ),
    pytest.param(
        Case(
            [_allow("arn:aws:ssm:*:*:session/${aws:username, 'anonymous'}-*", "ssm:TerminateSession")],
            RequestContext.build("ssm:TerminateSession", f"arn:aws:ssm:us-east-1:{ACCOUNT}:session/anonymous-1"),
            True, ALLOWED, (0, 0),
        ),
        id="resource-var-default",
    ),
    pytest.param(
        Case(
            [_allow("arn:aws:ssm:*:*:managed-instance/${aws:PrincipalTag/node}")],
            RequestContext.build("ssm:StartSession", NODE, principal_tags={"node": "mi-0123456789abcdef0"}),
            True, ALLOWED, (0, 0),
        ),
        id="resource-var-principal-tag",
    ),
    pytest.param(
        Case(
            [_allow("arn:aws:ssm:*:*:managed-instance/${aws:PrincipalTag/node}")],
            RequestContext.build("ssm:StartSession", NODE, principal_tags={"node": "mi-*"}),
            False, IMPLICIT,
        ),
        id="resource-var-value-not-a-wildcard",
    ),
    pytest.param(
        Case(
            [doc(st(action="ssm:TerminateSession", resource=SESSION_PATTERN), version=V08)],
            RequestContext.build("ssm:TerminateSession", SESSION, username="alice"),
            False, IMPLICIT,
        ),
        id="resource-var-2008-not-substituted",
    ),
    pytest.param(
        Case(
            [doc(st(action="ssm:TerminateSession", resource=SESSION_PATTERN), version=V08)],
            RequestContext.build("ssm:TerminateSession", f"arn:aws:ssm:us-east-1:{ACCOUNT}:session/${{aws:username}}-1", username="alice"),
            True, ALLOWED, (0, 0),
        ),
        id="resource-var-2008-literal-text",
    ),
    pytest.param(
        Case(
            [doc(st(action="ssm:TerminateSession", resource=SESSION_PATTERN), version=None)],
            RequestContext.build("ssm:TerminateSession", SESSION, username="alice"),
            False, IMPLICIT,
        ),
        id="resource-var-no-version-not-substituted",
    ),
    pytest.param(
        Case([_allow("arn:aws:ssm:*:*:document/a${*}")], req(resource="arn:aws:ssm:us-east-1::document/a*"), True, ALLOWED, (0, 0)),
        id="resource-escaped-star-literal",
    ),
    pytest.param(
        Case([_allow("arn:aws:ssm:*:*:document/a${*}")], req(resource="arn:aws:ssm:us-east-1::document/ab"), False, IMPLICIT),
        id="resource-escaped-star-not-wild",
    ),
    pytest.param(
        Case([_allow("arn:aws:ssm:*:*:document/a${?}")], req(resource="arn:aws:ssm:us-east-1::document/ab"), False, IMPLICIT),
        id="resource-escaped-qmark-not-wild",
    ),
    # --- combining statements and policies -----------------------------------------------
    pytest.param(Case([], req(), False, IMPLICIT), id="no-policies"),
    pytest.param(Case([doc(st("Deny", action="ec2:*"))], req(), False, IMPLICIT), id="only-unrelated-deny"),
    pytest.param(
        Case([doc(st(), st("Deny", action="ssm:StartSession", sid="NoShells"))], req(), False, EXPLICIT, (0, 1), "NoShells"),
        id="deny-beats-allow-same-policy",
    ),
    pytest.param(
        Case([_allow(), doc(st("Deny", action="ssm:*"))], req(), False, EXPLICIT, (1, 0)),
        id="deny-beats-allow-across-policies",
    ),
    pytest.param(
        Case([doc(st("Deny", action="ssm:*")), _allow()], req(), False, EXPLICIT, (0, 0)),
        id="deny-first-policy-order-irrelevant",
    ),
    pytest.param(
        Case([doc(st(), st("Deny", condition={"StringEquals": {"aws:username": "mallory"}}))], req(keys={"aws:username": "alice"}), True, ALLOWED, (0, 0)),
        id="deny-condition-not-met",
    ),
    pytest.param(
        Case(
            [doc(st(sid="All"), st("Deny", condition={"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}}, sid="NeedMFA"))],
            RequestContext.build("ssm:StartSession", NODE),
            False, EXPLICIT, (0, 1), "NeedMFA",
        ),
        id="deny-without-mfa-long-term-key",
    ),
    pytest.param(
        Case(
            [doc(st(sid="All"), st("Deny", condition={"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}}, sid="NeedMFA"))],
            RequestContext.build("ssm:StartSession", NODE, mfa_present=True, mfa_age_seconds=30),
            True, ALLOWED, (0, 0), "All",
        ),
        id="deny-without-mfa-satisfied",
    ),
    pytest.param(
        Case(
            [doc(st(sid="All"), st("Deny", condition={"Bool": {"aws:MultiFactorAuthPresent": "false"}}, sid="NeedMFA"))],
            RequestContext.build("ssm:StartSession", NODE),
            True, ALLOWED, (0, 0), "All",
        ),
        id="deny-bool-false-misses-long-term-key",
    ),
    pytest.param(
        Case(
            [_allow(), doc(st("Deny", condition={"NotIpAddress": {"aws:SourceIp": ["192.0.2.0/24", "2001:db8::/32"]}}))],
            RequestContext.build("ssm:StartSession", NODE, source_ip="203.0.113.9"),
            False, EXPLICIT, (1, 0),
        ),
        id="deny-outside-corporate-network",
    ),
    pytest.param(
        Case(
            [_allow(), doc(st("Deny", condition={"NotIpAddress": {"aws:SourceIp": ["192.0.2.0/24", "2001:db8::/32"]}}))],
            RequestContext.build("ssm:StartSession", NODE, source_ip="2001:db8::42"),
            True, ALLOWED, (0, 0),
        ),
        id="deny-inside-corporate-network-v6",
    ),
    pytest.param(
        Case(
            [_allow(condition={"DateGreaterThan": {"aws:CurrentTime": "2023-01-01T00:00:00Z"}, "DateLessThan": {"aws:CurrentTime": "2025-01-01T00:00:00Z"}})],
            RequestContext.build("ssm:StartSession", NODE, now=JUNE_2024),
            True, ALLOWED, (0, 0),
        ),
        id="time-window-inside",
    ),
    pytest.param(
        Case(
            [_allow(condition={"DateGreaterThan": {"aws:EpochTime": "2023-01-01T00:00:00Z"}, "DateLessThan": {"aws:EpochTime": "2024-01-01T00:00:00Z"}})],
            RequestContext.build("ssm:StartSession", NODE, now=JUNE_2024),
            False, IMPLICIT,
        ),
        id="time-window-after-epoch-key",
    ),
    pytest.param(
        Case([{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "ssm:StartSession", "Resource": "*"}}], req(), True, ALLOWED, (0, 0)),
        id="statement-single-object",
    ),
    pytest.param(
        Case([_allow(action="ec2:*"), _allow(action="ssm:*"), _allow()], req(), True, ALLOWED, (1, 0)),
        id="first-applicable-allow-reported",
    ),
    pytest.param(
        Case([doc(st(action="ec2:*"), st(action="ssm:*", sid="Ssm"))], req(), True, ALLOWED, (0, 1), "Ssm"),
        id="allow-reports-statement-index-and-sid",
    ),
    pytest.param(
        Case(
            [_allow(), doc(st("Deny", condition={"StringNotEquals": {"ssm:resourceTag/Env": "dev"}}))],
            RequestContext.build("ssm:StartSession", NODE, resource_tags={"Env": "prod"}),
            False, EXPLICIT, (1, 0),
        ),
        id="deny-non-dev-nodes",
    ),
    pytest.param(
        Case(
            [_allow(), doc(st("Deny", condition={"StringNotEquals": {"ssm:resourceTag/Env": "dev"}}))],
            RequestContext.build("ssm:StartSession", NODE),
            False, EXPLICIT, (1, 0),
        ),
        id="deny-non-dev-nodes-untagged-also-denied",
    ),
    pytest.param(
        Case(
            [_allow(condition={"Bool": {"ssm:SessionDocumentAccessCheck": "true"}})],
            RequestContext.build("ssm:StartSession", NODE, session_document_access_check=True),
            True, ALLOWED, (0, 0),
        ),
        id="session-document-access-check",
    ),
    pytest.param(
        Case(
            [_allow(condition={"StringEquals": {"aws:PrincipalArn": ALICE_ARN}})],
            req(principal_arn=ALICE_ARN),
            True, ALLOWED, (0, 0),
        ),
        id="principal-arn-from-field",
    ),
]

CASES = [
    pytest.param(_condition_case(op, key, values, keys, holds), id=f"cond-{case_id}")
    for case_id, op, key, values, keys, holds in CONDITION_ROWS
] + OTHER_ROWS


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 150
    assert len({p.id for p in CASES}) == len(CASES), "row ids must be unique"


@pytest.mark.parametrize("case", CASES)
def test_evaluation(case: Case) -> None:
    policies = [parse_policy(d, name=f"p{i}", arn=f"arn:aws:iam::{ACCOUNT}:policy/p{i}") for i, d in enumerate(case.policies)]
    decision = evaluate(policies, case.ctx)
    assert (decision.allowed, decision.reason) == (case.allowed, case.reason)
    if case.reason == IMPLICIT:
        assert decision.statement_index is None and decision.policy_name is None
    if case.by is not None:
        p_index, s_index = case.by
        assert decision.policy_name == f"p{p_index}"
        assert decision.policy_arn == f"arn:aws:iam::{ACCOUNT}:policy/p{p_index}"
        assert decision.statement_index == s_index
    if case.sid is not None:
        assert decision.sid == case.sid
