"""ARN parsing, formatting and builders."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portless.aws import arn


@pytest.mark.parametrize(
    "text",
    [
        "arn:aws:ssm:us-east-1:123456789012:managed-instance/mi-0123456789abcdef0",
        "arn:aws:ec2:eu-west-1:123456789012:instance/i-0123456789abcdef0",
        "arn:aws:ssm:us-east-1:123456789012:session/alice-0a1b2c3d4e5f67890",
        "arn:aws:ssm:us-east-1::document/AWS-StartSSHSession",
        "arn:aws:iam::123456789012:user/division/alice",
        "arn:aws-cn:logs:cn-north-1:123456789012:log-group:my:group:*",
    ],
)
def test_round_trip(text: str) -> None:
    parsed = arn.Arn.parse(text)
    assert str(parsed) == text
    assert parsed.format() == text


def test_fields_and_resource_split() -> None:
    parsed = arn.Arn.parse(
        "arn:aws:ssm:us-east-1:123456789012:managed-instance/mi-0123456789abcdef0"
    )
    assert parsed == arn.Arn(
        "aws", "ssm", "us-east-1", "123456789012", "managed-instance/mi-0123456789abcdef0"
    )
    assert parsed.resource_type == "managed-instance"
    assert parsed.resource_id == "mi-0123456789abcdef0"
    logs = arn.Arn.parse("arn:aws:logs:us-east-1:1:log-group:a/b")
    assert (logs.resource_type, logs.resource_id) == ("log-group", "a/b")
    assert arn.Arn.parse("arn:aws:s3:::bucket").resource_id == "bucket"


@pytest.mark.parametrize(
    "bad", ["", "arn:aws:ssm", "urn:aws:ssm:r:a:x", "arn::ssm:r:a:x", "arn:aws:ssm:r:a:"]
)
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        arn.Arn.parse(bad)


def test_builders() -> None:
    acct, region = "123456789012", "eu-central-1"
    assert str(arn.managed_instance_arn(region, acct, "mi-0123456789abcdef0")) == (
        "arn:aws:ssm:eu-central-1:123456789012:managed-instance/mi-0123456789abcdef0"
    )
    assert (
        str(arn.ec2_instance_arn(region, acct, "i-0abc"))
        == "arn:aws:ec2:eu-central-1:123456789012:instance/i-0abc"
    )
    assert str(arn.instance_arn(region, acct, "mi-1")).startswith("arn:aws:ssm:")
    assert str(arn.instance_arn(region, acct, "i-1")).startswith("arn:aws:ec2:")
    assert (
        str(arn.session_arn(region, acct, "bob-123"))
        == "arn:aws:ssm:eu-central-1:123456789012:session/bob-123"
    )
    assert (
        str(arn.document_arn(region, acct, "My-Doc"))
        == "arn:aws:ssm:eu-central-1:123456789012:document/My-Doc"
    )
    assert str(arn.aws_document_arn(region, "AWS-StartPortForwardingSession")) == (
        "arn:aws:ssm:eu-central-1::document/AWS-StartPortForwardingSession"
    )
    assert str(arn.document_arn(region, None, "SSM-SessionManagerRunShell")) == (
        "arn:aws:ssm:eu-central-1::document/SSM-SessionManagerRunShell"
    )
    assert str(arn.iam_user_arn(acct, "alice")) == "arn:aws:iam::123456789012:user/alice"
    assert (
        str(arn.iam_user_arn(acct, "alice", path="/ops/"))
        == "arn:aws:iam::123456789012:user/ops/alice"
    )
    assert str(arn.iam_role_arn(acct, "SSMRole")) == "arn:aws:iam::123456789012:role/SSMRole"
    assert str(arn.session_arn("cn-north-1", acct, "s", partition="aws-cn")).startswith(
        "arn:aws-cn:ssm:"
    )
    with pytest.raises(ValueError):
        arn.iam_user_arn(acct, "alice", path="ops")


_FIELD = st.text(
    alphabet=st.characters(blacklist_characters=":", blacklist_categories=["Cs"]), max_size=12
)


@given(
    _FIELD.filter(bool),
    _FIELD.filter(bool),
    _FIELD,
    _FIELD,
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=30),
)
def test_round_trip_property(
    partition: str, service: str, region: str, account: str, resource: str
) -> None:
    value = arn.Arn(partition, service, region, account, resource)
    assert arn.Arn.parse(str(value)) == value
