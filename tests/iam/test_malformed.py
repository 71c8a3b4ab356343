"""Documents IAM refuses: each is a MalformedPolicyDocument whose message names the fault."""

from __future__ import annotations

import json
from typing import Any

import pytest

from portless.aws.errors import AwsError
from portless.iam.policy import (
    MANAGED_POLICY_MAX_CHARS,
    USER_INLINE_POLICY_MAX_CHARS,
    MalformedPolicyDocument,
    parse_policy,
    policy_size,
)

from .helpers import V12, doc, st

OK = st(action="ssm:StartSession")


def _with(**changes: Any) -> dict[str, Any]:
    """A valid single statement with some elements replaced (``None`` removes one)."""
    statement = dict(OK)
    for key, value in changes.items():
        if value is None:
            statement.pop(key, None)
        else:
            statement[key] = value
    return doc(statement)


def _cond(condition: Any) -> dict[str, Any]:
    return _with(Condition=condition)


MALFORMED: list[Any] = [
    # whole document
    pytest.param('{\n  "Version": "2012-10-17",\n  "Statement" [\n', "Syntax errors in policy: invalid JSON at line 3 column 15", id="invalid-json"),
    pytest.param('{"Version": "2012-10-17", "Statement": []', "invalid JSON at line 1 column", id="truncated-json"),
    pytest.param("", "invalid JSON at line 1 column 1", id="empty-text"),
    pytest.param("[]", "the document must be a JSON object", id="not-an-object"),
    pytest.param('"Allow"', "the document must be a JSON object", id="json-string"),
    pytest.param({"Version": V12, "Statement": [OK], "Statment": []}, 'unknown field "Statment"', id="unknown-top-level-key"),
    pytest.param({"version": V12, "Statement": [OK]}, 'unknown field "version"', id="top-level-key-case"),
    pytest.param({"Version": "2012-10-18", "Statement": [OK]}, 'Version must be "2012-10-17" or "2008-10-17", got "2012-10-18"', id="bad-version"),
    pytest.param({"Version": 2012, "Statement": [OK]}, "got 2012", id="version-not-a-string"),
    pytest.param({"Version": V12, "Id": 7, "Statement": [OK]}, "Id must be a string", id="id-not-a-string"),
    pytest.param({"Version": V12}, "missing Statement", id="missing-statement"),
    pytest.param({"Version": V12, "Statement": []}, "Statement must not be empty", id="empty-statement-list"),
    pytest.param({"Version": V12, "Statement": "Allow"}, "Statement must be an object or a list", id="statement-string"),
    pytest.param({"Version": V12, "Statement": [OK, "x"]}, "Statement[1]: must be an object", id="statement-entry-string"),
    pytest.param('{"Version": "2012-10-17", "Version": "2008-10-17", "Statement": []}', 'duplicate key "Version"', id="duplicate-json-key"),
    pytest.param('{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Effect": "Deny", "Action": "*", "Resource": "*"}}', 'duplicate key "Effect"', id="duplicate-effect"),
    pytest.param('{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "arn:aws:ssm:*:*:x/\u2603"}}', "U+2603 at line 1 column", id="character-out-of-range"),
    # Effect
    pytest.param(doc(OK, _with(Effect="allow")["Statement"][0]), 'Statement[1]: Effect must be "Allow" or "Deny", got "allow"', id="effect-lowercase"),
    pytest.param(_with(Effect="Permit"), 'Statement[0]: Effect must be "Allow" or "Deny", got "Permit"', id="effect-unknown"),
    pytest.param(_with(Effect=True), 'Effect must be "Allow" or "Deny", got true', id="effect-bool"),
    pytest.param(_with(Effect=None), "Statement[0]: missing Effect", id="effect-missing"),
    # Statement fields
    pytest.param(_with(Actions=["ssm:StartSession"]), 'Statement[0]: unknown field "Actions"', id="unknown-statement-field"),
    pytest.param(_with(effect="Allow"), 'unknown field "effect"', id="statement-field-case"),
    pytest.param(_with(Principal={"AWS": "*"}), "Statement[0]: Principal is not allowed in an identity-based policy", id="principal"),
    pytest.param(_with(NotPrincipal={"AWS": "*"}), "NotPrincipal is not allowed in an identity-based policy", id="not-principal"),
    pytest.param(_with(Sid="my sid"), 'Sid must contain only letters and digits, got "my sid"', id="sid-with-space"),
    pytest.param(_with(Sid=5), "Sid must contain only letters and digits, got 5", id="sid-number"),
    pytest.param(doc(st(sid="A"), st(sid="A")), 'Statement[1]: Sid "A" is used by another statement', id="duplicate-sid"),
    # Action
    pytest.param(_with(NotAction="ssm:StartSession"), "Statement[0]: has both Action and NotAction", id="action-and-notaction"),
    pytest.param(_with(Action=None), "Statement[0]: must contain Action or NotAction", id="action-missing"),
    pytest.param(_with(Action="StartSession"), 'Statement[0]: Action "StartSession" must be "*" or "service:action"', id="action-no-service-prefix"),
    pytest.param(_with(Action=":StartSession"), 'Action ":StartSession" must be', id="action-empty-prefix"),
    pytest.param(_with(Action="ssm:"), 'Action "ssm:" must be', id="action-empty-name"),
    pytest.param(_with(Action="ssm:Start Session"), 'Action "ssm:Start Session" must be', id="action-space"),
    pytest.param(_with(Action=["ssm:StartSession", "ssm:a:b"]), 'Action "ssm:a:b" must be', id="action-two-colons"),
    pytest.param(_with(Action=[]), "Statement[0]: Action must not be empty", id="action-empty-list"),
    pytest.param(_with(Action=["ssm:StartSession", 7]), "Action entries must be strings, got 7", id="action-entry-number"),
    pytest.param(_with(Action={"ssm": "StartSession"}), "Action must be a string or a list of strings", id="action-object"),
    pytest.param(doc(st(action=None, not_action="StartSession")), 'NotAction "StartSession" must be', id="notaction-no-prefix"),
    # Resource
    pytest.param(_with(NotResource="*"), "Statement[0]: has both Resource and NotResource", id="resource-and-notresource"),
    pytest.param(_with(Resource=None), "Statement[0]: must contain Resource or NotResource", id="resource-missing"),
    pytest.param(_with(Resource="instance/i-123"), 'Resource "instance/i-123" must be "*" or an ARN', id="resource-not-arn"),
    pytest.param(_with(Resource=[]), "Resource must not be empty", id="resource-empty-list"),
    pytest.param(_with(Resource=None, NotResource="mi-123"), 'NotResource "mi-123" must be "*" or an ARN', id="notresource-not-arn"),
    # Condition
    pytest.param(_cond(["StringEquals"]), "Statement[0]: Condition must be an object", id="condition-list"),
    pytest.param(_cond({"StringEqualz": {"aws:username": "a"}}), 'Statement[0]: unknown condition operator "StringEqualz"', id="unknown-operator"),
    pytest.param(_cond({"ForSomeValues:StringEquals": {"aws:TagKeys": "a"}}), 'unknown condition operator "ForSomeValues:StringEquals"', id="unknown-set-operator"),
    pytest.param(_cond({"NullIfExists": {"aws:username": "true"}}), 'unknown condition operator "NullIfExists"', id="null-if-exists"),
    pytest.param(_cond({"StringEqualsIfExistsIfExists": {"aws:username": "a"}}), "unknown condition operator", id="double-if-exists"),
    pytest.param(_cond({"StringEquals": "aws:username"}), "Condition StringEquals must be a non-empty object", id="operator-block-string"),
    pytest.param(_cond({"StringEquals": {}}), "Condition StringEquals must be a non-empty object", id="operator-block-empty"),
    pytest.param(_cond({"StringEquals": {"username": "a"}}), 'condition key "username" must have a service prefix', id="key-without-prefix"),
    pytest.param(_cond({"StringEquals": {"aws:username": []}}), 'Condition StringEquals "aws:username" must have at least one value', id="values-empty"),
    pytest.param(_cond({"StringEquals": {"aws:username": None}}), "values must be strings, numbers or booleans, got null", id="value-null"),
    pytest.param(_cond({"StringEquals": {"aws:username": [["a"]]}}), 'values must be strings, numbers or booleans, got ["a"]', id="value-nested-list"),
    pytest.param(_cond({"StringEquals": {"aws:username": {"a": 1}}}), "values must be strings, numbers or booleans", id="value-object"),
    pytest.param(_cond({"NumericLessThan": {"aws:MultiFactorAuthAge": "an hour"}}), 'Condition NumericLessThan "aws:MultiFactorAuthAge": value "an hour" is not a number', id="numeric-value"),
    pytest.param(_cond({"DateLessThan": {"aws:CurrentTime": "next tuesday"}}), 'value "next tuesday" is not an ISO 8601 date or epoch time', id="date-value"),
    pytest.param(_cond({"Bool": {"aws:SecureTransport": "yes"}}), 'value "yes" must be "true" or "false"', id="bool-value"),
    pytest.param(_cond({"Null": {"aws:username": "maybe"}}), 'value "maybe" must be "true" or "false"', id="null-value"),
    pytest.param(_cond({"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}}), 'value "10.0.0.0/33" is not an IP address or CIDR block', id="ip-prefix-too-long"),
    pytest.param(_cond({"NotIpAddress": {"aws:SourceIp": "corp-network"}}), "is not an IP address or CIDR block", id="ip-value"),
    pytest.param(_cond({"BinaryEquals": {"ssm:resourceTag/x": "not base64!"}}), "is not base64", id="binary-value"),
    pytest.param(_cond({"ForAllValues:NumericLessThanIfExists": {"aws:MultiFactorAuthAge": "x"}}), 'ForAllValues:NumericLessThanIfExists "aws:MultiFactorAuthAge": value "x" is not a number', id="prefixed-operator-value-checked"),
]


@pytest.mark.parametrize(("document", "message"), MALFORMED)
def test_malformed_documents(document: Any, message: str) -> None:
    with pytest.raises(MalformedPolicyDocument) as info:
        parse_policy(document)
    assert message in info.value.message
    assert info.value.code == "MalformedPolicyDocument"
    assert info.value.status == 400
    assert isinstance(info.value, AwsError)


def test_size_limit_counts_non_whitespace_only() -> None:
    big = doc(st(action=[f"ssm:Action{i:04d}" for i in range(400)]))
    text = json.dumps(big, indent=8)
    assert policy_size(text) > MANAGED_POLICY_MAX_CHARS
    with pytest.raises(MalformedPolicyDocument, match="Cannot exceed quota for PolicySize: 6144"):
        parse_policy(text, max_chars=MANAGED_POLICY_MAX_CHARS)
    parse_policy(text, max_chars=None)


def test_whitespace_does_not_count_toward_size() -> None:
    small = doc(st(action=[f"ssm:A{i}" for i in range(50)]))
    compact = json.dumps(small, separators=(",", ":"))
    padded = json.dumps(small, indent=40)
    assert len(padded) > USER_INLINE_POLICY_MAX_CHARS >= policy_size(padded) == len(compact)
    parse_policy(padded, max_chars=USER_INLINE_POLICY_MAX_CHARS)


def test_size_limit_applies_to_objects_too() -> None:
    big = doc(st(action=[f"ssm:Action{i:04d}" for i in range(200)]))
    with pytest.raises(MalformedPolicyDocument, match="PolicySize: 2048"):
        parse_policy(big, max_chars=USER_INLINE_POLICY_MAX_CHARS)


def test_variables_in_typed_values_are_checked_at_evaluation_not_parse() -> None:
    parse_policy(_cond({"NumericLessThan": {"aws:MultiFactorAuthAge": "${aws:PrincipalTag/maxAge}"}}))
    parse_policy(_cond({"IpAddress": {"aws:SourceIp": "${aws:PrincipalTag/cidr, '10.0.0.0/8'}"}}))


def test_2008_variables_are_text_so_typed_values_are_checked() -> None:
    with pytest.raises(MalformedPolicyDocument, match="is not a number"):
        parse_policy(
            doc(st(condition={"NumericLessThan": {"aws:MultiFactorAuthAge": "${aws:x}"}}), version="2008-10-17")
        )


def test_valid_variants_parse() -> None:
    single = parse_policy({"Statement": {"Effect": "Deny", "NotAction": "iam:*", "NotResource": "*"}})
    assert single.version is None and not single.substitutes_variables
    assert len(single.statements) == 1 and single.statements[0].not_action
    assert single.statements[0].not_resource
    full = parse_policy(
        json.dumps(
            {
                "Version": V12,
                "Id": "portless-test",
                "Statement": [
                    {"Sid": "", "Effect": "Allow", "Action": "*", "Resource": "*"},
                    {"Sid": "", "Effect": "Allow", "Action": "*", "Resource": "*"},
                    {"Sid": "Abc123", "Effect": "Allow", "Action": "ssm:*", "Resource": "*", "Condition": {}},
                ],
            }
        ),
        name="n",
        arn="arn:aws:iam::123456789012:policy/n",
    )
    assert full.id == "portless-test" and full.substitutes_variables
    assert [s.sid for s in full.statements] == [None, None, "Abc123"]
    assert full.label == "n"
    assert "portless-test" in full.text
