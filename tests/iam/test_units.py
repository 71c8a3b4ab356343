"""Unit tests for the pieces: templates, the request context, operators, managed policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from portless.iam.conditions import parse_date, parse_operator
from portless.iam.context import RequestContext, format_time
from portless.iam.evaluation import Decision, evaluate
from portless.iam.managed import (
    ADMINISTRATOR_ACCESS,
    AMAZON_SSM_FULL_ACCESS,
    AMAZON_SSM_READ_ONLY_ACCESS,
    AWS_MANAGED_POLICIES,
    get_managed_policy,
)
from portless.iam.policy import MANAGED_POLICY_MAX_CHARS, parse_policy, policy_size
from portless.iam.variables import Literal, Text, Variable, parse_template

from .helpers import DOCUMENT, NODE


@pytest.mark.parametrize(
    ("source", "pieces"),
    [
        ("plain", (Text("plain"),)),
        ("", ()),
        ("a/${aws:username}-*", (Text("a/"), Variable("aws:username", None), Text("-*"))),
        ("${ aws:PrincipalTag/team , 'none' }", (Variable("aws:PrincipalTag/team", "none"),)),
        ("${aws:x, 'it''s'}", (Variable("aws:x", "it's"),)),
        ("${aws:x, 'a}b'}", (Variable("aws:x", "a}b"),)),
        ("${aws:x,''}", (Variable("aws:x", ""),)),
        ("x${*}y${?}z${$}", (Text("x"), Literal("*"), Text("y"), Literal("?"), Text("z"), Literal("$"))),
        ("${unclosed", (Text("${unclosed"),)),
        ("${}", (Text("${}"),)),
        ("$x{y}", (Text("$x{y}"),)),
    ],
)
def test_template_parsing(source: str, pieces: tuple[object, ...]) -> None:
    assert parse_template(source, substitute=True).pieces == pieces


def test_template_resolution() -> None:
    template = parse_template("${aws:username}/${aws:PrincipalTag/t, 'd'}", substitute=True)
    values = {"aws:username": "alice"}
    resolved = template.resolve(values.get)
    assert resolved == (Literal("alice"), Text("/"), Literal("d"))
    assert template.resolve({}.get) is None
    assert parse_template("${aws:username}", substitute=False).pieces == (Text("${aws:username}"),)


def test_substitution_is_one_round() -> None:
    template = parse_template("${aws:x, '${aws:username}'}", substitute=True)
    assert template.resolve({"aws:username": "alice"}.get) == (Literal("${aws:username}"),)


def test_context_normalises_values() -> None:
    moment = datetime(2024, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))
    ctx = RequestContext(
        "ssm:StartSession",
        NODE,
        principal_arn="arn:aws:iam::1:user/a",
        keys={"AWS:SecureTransport": True, "aws:n": 5, "aws:f": 2.0, "aws:t": moment, "aws:TagKeys": ["a", "b"]},
    )
    assert ctx.get("aws:securetransport") == "true"
    assert ctx.get("aws:N") == "5"
    assert ctx.get("aws:f") == "2"
    assert ctx.get("aws:t") == "2024-01-01T00:00:00Z"
    assert ctx.values("aws:TagKeys") == ("a", "b")
    assert ctx.single("aws:TagKeys") is None
    assert ctx.get("aws:PrincipalArn") == "arn:aws:iam::1:user/a"
    assert ctx.values("aws:missing") == ()


def test_context_builder_keys() -> None:
    ctx = RequestContext.build(
        "ssm:StartSession",
        NODE,
        principal_arn="arn:aws:iam::123456789012:user/alice",
        username="alice",
        userid="AIDAX",
        account="123456789012",
        source_ip="192.0.2.1",
        now=datetime(2024, 1, 1, tzinfo=UTC),
        secure_transport=True,
        mfa_present=True,
        mfa_age_seconds=42,
        principal_tags={"SSMSessionRunAs": "deploy"},
        requested_region="us-east-1",
        resource_tags={"Env": "dev"},
        session_document_access_check=False,
        extra={"ssm:SessionDocumentAccessCheck": "true"},
    )
    assert ctx.single("aws:username") == "alice"
    assert ctx.single("aws:userid") == "AIDAX"
    assert ctx.single("aws:PrincipalAccount") == "123456789012"
    assert ctx.single("aws:SourceIp") == "192.0.2.1"
    assert ctx.single("aws:CurrentTime") == "2024-01-01T00:00:00Z"
    assert ctx.single("aws:EpochTime") == "1704067200"
    assert ctx.single("aws:SecureTransport") == "true"
    assert ctx.single("aws:MultiFactorAuthPresent") == "true"
    assert ctx.single("aws:MultiFactorAuthAge") == "42"
    assert ctx.single("aws:PrincipalTag/SSMSessionRunAs") == "deploy"
    assert ctx.single("aws:RequestedRegion") == "us-east-1"
    assert ctx.single("ssm:resourceTag/Env") == "dev"
    assert ctx.single("aws:ResourceTag/Env") == "dev"
    assert ctx.single("ssm:SessionDocumentAccessCheck") == "true"  # extra wins
    bare = RequestContext.build("ssm:StartSession")
    assert bare.resource == "*"
    assert bare.get("aws:MultiFactorAuthPresent") is None  # long-term keys: key absent


def test_format_time_naive_is_utc() -> None:
    assert format_time(datetime(2024, 5, 6, 7, 8, 9)) == "2024-05-06T07:08:09Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T00:00:00Z", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T02:00:00+02:00", datetime(2024, 1, 1, tzinfo=UTC)),
        ("1704067200", datetime(2024, 1, 1, tzinfo=UTC)),
        ("1704067200.5", datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)),
        ("tomorrow", None),
        ("99999999999999999999", None),
    ],
)
def test_parse_date(text: str, expected: datetime | None) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("StringEquals", "StringEquals"),
        ("stringlikeifexists", "StringLikeIfExists"),
        ("ForAllValues:StringNotEquals", "ForAllValues:StringNotEquals"),
        ("FORANYVALUE:ArnLikeIfExists", "ForAnyValue:ArnLikeIfExists"),
        ("Null", "Null"),
        ("ForAnyValue:Null", None),
        ("StringEqual", None),
        ("IfExists", None),
        ("ForAllValues:", None),
    ],
)
def test_parse_operator(written: str, canonical: str | None) -> None:
    op = parse_operator(written)
    assert (op.name if op else None) == canonical


def test_decision_describe() -> None:
    assert Decision(False, "implicit deny").describe() == "implicit deny"
    assert (
        Decision(False, "explicit deny", "Guard", None, 2, None).describe()
        == "explicit deny by policy Guard Statement[2]"
    )


def test_managed_policies_parse_and_fit() -> None:
    assert set(AWS_MANAGED_POLICIES) == {
        "AmazonSSMManagedInstanceCore",
        "AmazonSSMFullAccess",
        "AmazonSSMReadOnlyAccess",
        "AdministratorAccess",
    }
    for managed in AWS_MANAGED_POLICIES.values():
        policy = managed.policy()
        assert policy.name == managed.name
        assert policy.arn == f"arn:aws:iam::aws:policy/{managed.name}"
        assert policy_size(managed.text) <= MANAGED_POLICY_MAX_CHARS
        assert parse_policy(managed.text).statements == policy.statements
        assert get_managed_policy(managed.name) is managed
        assert get_managed_policy(managed.arn) is managed
    assert get_managed_policy("arn:aws:iam::aws:policy/service-role/AdministratorAccess") is None
    assert get_managed_policy("Nope") is None


@pytest.mark.parametrize(
    ("action", "resource", "full", "read_only", "admin"),
    [
        ("ssm:StartSession", NODE, True, False, True),
        ("ssm:TerminateSession", "arn:aws:ssm:us-east-1:1:session/bob-1", True, False, True),
        ("ssm:DescribeSessions", "*", True, True, True),
        ("ssm:DescribeInstanceInformation", "*", True, True, True),
        ("ssm:GetConnectionStatus", NODE, True, True, True),
        ("ssm:GetDocument", DOCUMENT, True, True, True),
        ("ssm:ListDocuments", "*", True, True, True),
        ("ssm:UpdateDocument", DOCUMENT, True, False, True),
        ("ssm:DeleteDocument", DOCUMENT, True, False, True),
        ("ssmmessages:OpenDataChannel", "*", True, False, True),
        ("ec2:DescribeInstances", "*", True, False, True),
        ("iam:CreateUser", "*", False, False, True),
        ("sts:GetSessionToken", "*", False, False, True),
    ],
)
def test_people_policies(action: str, resource: str, full: bool, read_only: bool, admin: bool) -> None:
    ctx = RequestContext.build(action, resource)
    assert evaluate([AMAZON_SSM_FULL_ACCESS.policy()], ctx).allowed is full
    assert evaluate([AMAZON_SSM_READ_ONLY_ACCESS.policy()], ctx).allowed is read_only
    assert evaluate([ADMINISTRATOR_ACCESS.policy()], ctx).allowed is admin
