"""AWS error shapes: JSON ``__type``/``message``, query-protocol XML, validation wording."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from botocore.parsers import JSONParser

from portless.aws import errors
from portless.aws.errors import AwsError


def test_json_shape() -> None:
    err = AwsError("TargetNotConnected", "i-0123456789abcdef0 is not connected.")
    assert err.status == 400
    assert json.loads(err.to_json()) == {
        "__type": "TargetNotConnected",
        "message": "i-0123456789abcdef0 is not connected.",
    }


def test_botocore_parses_json_error() -> None:
    """botocore reads the code from ``__type`` and the message from ``message``."""
    err = errors.throttling()
    parsed = JSONParser().parse(
        {"status_code": err.status, "headers": {"x-amzn-requestid": "r-1"}, "body": err.to_json()},
        None,
    )
    assert parsed["Error"] == {"Code": "ThrottlingException", "Message": "Rate exceeded"}
    assert parsed["ResponseMetadata"]["RequestId"] == "r-1"


@pytest.mark.parametrize(
    ("factory", "code", "status", "message"),
    [
        (
            errors.unrecognized_client,
            "UnrecognizedClientException",
            400,
            "The security token included in the request is invalid.",
        ),
        (
            errors.invalid_signature,
            "InvalidSignatureException",
            400,
            errors.INVALID_SIGNATURE_MESSAGE,
        ),
        (
            errors.missing_authentication_token,
            "MissingAuthenticationTokenException",
            400,
            "Missing Authentication Token",
        ),
        (errors.internal_server_error, "InternalServerError", 500, None),
        (errors.throttling, "ThrottlingException", 400, "Rate exceeded"),
        (errors.unknown_operation, "UnknownOperationException", 400, None),
        (errors.serialization_exception, "SerializationException", 400, None),
    ],
)
def test_factories(factory: object, code: str, status: int, message: str | None) -> None:
    assert callable(factory)
    err = factory()
    assert isinstance(err, AwsError)
    assert (err.code, err.status) == (code, status)
    if message is not None:
        assert err.message == message


def test_invalid_signature_text() -> None:
    assert errors.INVALID_SIGNATURE_MESSAGE == (
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service documentation "
        "for details."
    )


def test_other_factories() -> None:
    assert errors.incomplete_signature("x").code == "IncompleteSignatureException"
    assert errors.validation_exception("bad").code == "ValidationException"
    denied = errors.access_denied(
        "arn:aws:iam::123456789012:user/alice",
        "ssm:StartSession",
        "arn:aws:ec2:us-east-1:123456789012:instance/i-1",
        "because no identity-based policy allows the ssm:StartSession action",
    )
    assert denied.code == "AccessDeniedException"
    assert denied.message == (
        "User: arn:aws:iam::123456789012:user/alice is not authorized to perform: ssm:StartSession "
        "on resource: arn:aws:ec2:us-east-1:123456789012:instance/i-1 because no identity-based "
        "policy allows the ssm:StartSession action"
    )


def test_explicit_status_and_server_fault() -> None:
    assert AwsError("ServiceUnavailable", "x").status == 500
    assert AwsError("Whatever", "x", status=403).status == 403


def test_xml_shape() -> None:
    err = AwsError("NoSuchEntity", "The user with name <bob> & co cannot be found.")
    doc = err.to_xml("req-123")
    root = ET.fromstring(doc)
    assert root.tag == "ErrorResponse"
    assert root.findtext("Error/Type") == "Sender"
    assert root.findtext("Error/Code") == "NoSuchEntity"
    assert root.findtext("Error/Message") == "The user with name <bob> & co cannot be found."
    assert root.findtext("RequestId") == "req-123"
    assert errors.internal_server_error().to_xml("r").count(b"<Type>Receiver</Type>") == 1
    namespaced = ET.fromstring(err.to_xml("r", xmlns="https://iam.amazonaws.com/doc/2010-05-08/"))
    assert namespaced.tag == "{https://iam.amazonaws.com/doc/2010-05-08/}ErrorResponse"


def test_botocore_parses_query_xml_error() -> None:
    from botocore.parsers import QueryParser

    err = AwsError("AccessDenied", "nope")
    parsed = QueryParser().parse(
        {"status_code": 403, "headers": {}, "body": err.to_xml("rid")}, None
    )
    assert parsed["Error"]["Code"] == "AccessDenied"
    assert parsed["Error"]["Message"] == "nope"
    assert parsed["ResponseMetadata"]["RequestId"] == "rid"


def test_constraint_violation_message() -> None:
    err = errors.constraint_violation(
        "x", "target", "Member must have length less than or equal to 400"
    )
    assert err.code == "ValidationException"
    assert err.message == (
        "1 validation error detected: Value 'x' at 'target' failed to satisfy constraint: "
        "Member must have length less than or equal to 400"
    )


def test_multiple_violations_and_values() -> None:
    err = errors.validation_error(
        [
            (None, "target", "Member must not be null"),
            (["a", "b"], "instanceIds", "Member must have length less than or equal to 1"),
            (True, "flag", "c"),
        ]
    )
    assert err.message == (
        "3 validation errors detected: Value null at 'target' failed to satisfy constraint: "
        "Member must not be null; Value '[a, b]' at 'instanceIds' failed to satisfy constraint: "
        "Member must have length less than or equal to 1; Value 'true' at 'flag' failed to "
        "satisfy constraint: c"
    )
    with pytest.raises(ValueError):
        errors.validation_error([])
