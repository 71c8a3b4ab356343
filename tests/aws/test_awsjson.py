"""awsJson1.1 helpers: target parsing, body decoding, validators, response encoding."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from portless.aws import awsjson
from portless.aws.errors import AwsError


def code_of(excinfo: pytest.ExceptionInfo[AwsError]) -> str:
    return excinfo.value.code


def test_parse_target() -> None:
    assert awsjson.parse_target("AmazonSSM.StartSession") == "StartSession"
    assert awsjson.parse_target(
        "EC2WindowsMessageDeliveryService.GetMessages", "EC2WindowsMessageDeliveryService"
    ) == ("GetMessages")
    assert (
        awsjson.parse_target("AmazonSSM.StartSession", operations={"StartSession"})
        == "StartSession"
    )


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "AmazonSSM",
        "AmazonSSM.",
        "TrentService.Decrypt",
        "AmazonSSM.Start-Session",
        "X.AmazonSSM.StartSession",
    ],
)
def test_parse_target_unknown(header: str | None) -> None:
    with pytest.raises(AwsError) as info:
        awsjson.parse_target(header)
    assert info.value.code == "UnknownOperationException"


def test_parse_target_not_in_operations() -> None:
    with pytest.raises(AwsError) as info:
        awsjson.parse_target("AmazonSSM.DeleteEverything", operations={"StartSession"})
    assert info.value.code == "UnknownOperationException"


def test_parse_body() -> None:
    assert awsjson.parse_body(b"") == {}
    assert awsjson.parse_body(b"  ") == {}
    assert awsjson.parse_body(b'{"Target":"mi-1"}') == {"Target": "mi-1"}
    for bad in (b"{", b"[]", b'"x"', b"\xff\xfe", b"null"):
        with pytest.raises(AwsError) as info:
            awsjson.parse_body(bad)
        assert info.value.code == "SerializationException"


def test_require_str() -> None:
    d = {"Target": "mi-0123456789abcdef0", "Reason": "x" * 401}
    assert awsjson.require_str(d, "Target", 1, 400) == "mi-0123456789abcdef0"
    with pytest.raises(AwsError) as info:
        awsjson.require_str(d, "Reason", 1, 400)
    assert info.value.code == "ValidationException"
    assert info.value.message == (
        f"1 validation error detected: Value '{'x' * 401}' at 'reason' failed to satisfy "
        "constraint: Member must have length less than or equal to 400"
    )
    with pytest.raises(AwsError) as info:
        awsjson.require_str({}, "DocumentName", 1, 128)
    assert info.value.message == (
        "1 validation error detected: Value null at 'documentName' failed to satisfy "
        "constraint: Member must not be null"
    )
    with pytest.raises(AwsError) as info:
        awsjson.require_str({"Target": 5}, "Target")
    assert info.value.code == "SerializationException"


def test_pattern_and_combined_violations() -> None:
    with pytest.raises(AwsError) as info:
        awsjson.require_str({"SessionId": ""}, "SessionId", 1, 96, r"^[A-Za-z0-9-]+$")
    assert info.value.message == (
        "2 validation errors detected: Value '' at 'sessionId' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1; Value '' at 'sessionId' failed to "
        "satisfy constraint: Member must satisfy regular expression pattern: ^[A-Za-z0-9-]+$"
    )
    assert awsjson.optional_str({}, "Reason", 1, 256) is None
    assert awsjson.optional_str({"Reason": None}, "Reason") is None


def test_optional_int() -> None:
    assert awsjson.optional_int({"MaxResults": 10}, "MaxResults", 1, 200) == 10
    assert awsjson.optional_int({}, "MaxResults", 1, 200) is None
    with pytest.raises(AwsError) as info:
        awsjson.optional_int({"MaxResults": 201}, "MaxResults", 1, 200)
    assert info.value.message.endswith("Member must have value less than or equal to 200")
    assert "Value '201' at 'maxResults'" in info.value.message
    with pytest.raises(AwsError) as info:
        awsjson.optional_int({"MaxResults": 0}, "MaxResults", 1, 200)
    assert info.value.message.endswith("Member must have value greater than or equal to 1")
    for bad in (True, "5", 1.5):
        with pytest.raises(AwsError) as info:
            awsjson.optional_int({"MaxResults": bad}, "MaxResults")
        assert info.value.code == "SerializationException"


def test_bool_enum_list_object() -> None:
    assert awsjson.optional_bool({"F": False}, "F") is False
    with pytest.raises(AwsError):
        awsjson.optional_bool({"F": "false"}, "F")
    assert awsjson.optional_enum({"State": "Active"}, "State", ["Active", "History"]) == "Active"
    with pytest.raises(AwsError) as info:
        awsjson.require_enum({"State": "Gone"}, "State", ["Active", "History"])
    assert info.value.message.endswith("Member must satisfy enum value set: [Active, History]")
    with pytest.raises(AwsError) as info:
        awsjson.require_enum({}, "State", ["Active"])
    assert "Member must not be null" in info.value.message
    assert awsjson.optional_str_list({"Ids": ["a"]}, "Ids", max_items=2) == ["a"]
    with pytest.raises(AwsError) as info:
        awsjson.optional_str_list({"Ids": ["a", "bb", "c"]}, "Ids", max_items=2, member_max=1)
    assert info.value.message.startswith(
        "2 validation errors detected: Value '[a, bb, c]' at 'ids'"
    )
    assert "Value 'bb' at 'ids.2.member'" in info.value.message
    with pytest.raises(AwsError):
        awsjson.optional_str_list({"Ids": [1]}, "Ids")
    assert awsjson.optional_object({"Parameters": {"a": ["b"]}}, "Parameters") == {"a": ["b"]}
    with pytest.raises(AwsError):
        awsjson.optional_object({"Parameters": []}, "Parameters")


def test_json_dumps() -> None:
    when = datetime(2026, 11, 22, 3, 37, 37, 500000, tzinfo=UTC)
    out = awsjson.json_dumps(
        {"StartDate": when, "Naive": when.replace(tzinfo=None), "Blob": b"\x00\x01", "S": "é"}
    )
    decoded = json.loads(out)
    assert decoded["StartDate"] == when.timestamp() == 1795318657.5
    assert decoded["Naive"] == when.timestamp()
    assert decoded["Blob"] == "AAE="
    assert decoded["S"] == "é"
    assert b" " not in out
    with pytest.raises(TypeError):
        awsjson.json_dumps({"x": object()})


def test_botocore_parses_timestamps() -> None:
    from botocore.parsers import JSONParser
    from botocore.session import get_session

    model = get_session().get_service_model("ssm").operation_model("DescribeSessions")
    body = awsjson.json_dumps(
        {"Sessions": [{"SessionId": "s-1", "StartDate": datetime(2026, 11, 22, tzinfo=UTC)}]}
    )
    parsed = JSONParser().parse(
        {"status_code": 200, "headers": {}, "body": body}, model.output_shape
    )
    assert parsed["Sessions"][0]["StartDate"] == datetime(2026, 11, 22, tzinfo=UTC)
