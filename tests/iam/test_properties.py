"""Property tests: the glob matcher against a regex reference, and robustness of the rest."""

from __future__ import annotations

import contextlib
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as hs

from portless.iam.context import RequestContext
from portless.iam.evaluation import evaluate
from portless.iam.policy import MalformedPolicyDocument, parse_policy
from portless.iam.variables import as_text, parse_template
from portless.iam.wildcards import arn_match, glob_elements, glob_match, wildcard_match

from .helpers import doc, st


def reference_match(pattern: str, text: str) -> bool:
    """fnmatch's translation minus character classes: ``*`` -> ``.*``, ``?`` -> ``.``."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.fullmatch("".join(parts), text, flags=re.DOTALL) is not None


# Small alphabets make matches (and near misses) common.
PATTERNS = hs.text(alphabet="ab*?:/\n", max_size=12)
TEXTS = hs.text(alphabet="ab:/\n*?", max_size=14)


@given(PATTERNS, TEXTS)
@settings(max_examples=1500)
def test_glob_matches_reference(pattern: str, text: str) -> None:
    assert glob_match(glob_elements(pattern), text) == reference_match(pattern, text)


@given(hs.text(max_size=10), hs.text(max_size=10))
def test_glob_matches_reference_any_characters(pattern: str, text: str) -> None:
    assert wildcard_match(pattern, text) == reference_match(pattern, text)


@given(hs.text(alphabet="aB*?", max_size=8), hs.text(alphabet="AbaB", max_size=8))
def test_ignore_case(pattern: str, text: str) -> None:
    assert wildcard_match(pattern, text, ignore_case=True) == reference_match(
        pattern.lower(), text.lower()
    )


FIELD = hs.text(alphabet="abc-01", max_size=5)
RESOURCE = hs.text(alphabet="abc/:-*?", max_size=10)


@given(FIELD, FIELD, FIELD, FIELD, RESOURCE)
def test_arn_matches_itself_and_full_wildcards(
    partition: str, service: str, region: str, account: str, resource: str
) -> None:
    arn = f"arn:{partition}:{service}:{region}:{account}:{resource}"
    literal = [*arn]  # every character literal, even * and ?
    assert arn_match(literal, arn)
    assert arn_match(glob_elements("arn:*:*:*:*:*"), arn)
    assert arn_match(glob_elements("*"), arn)
    assert arn_match(glob_elements(f"arn:{partition}:*"), arn)


@given(FIELD, FIELD, FIELD, RESOURCE, hs.text(alphabet="abc-01*?", max_size=6))
def test_arn_field_wildcards_stay_in_their_field(
    service: str, region: str, account: str, resource: str, region_pattern: str
) -> None:
    """A wildcard in the region field behaves as a glob over the region alone."""
    arn = f"arn:aws:{service}:{region}:{account}:{resource}"
    pattern = [*f"arn:aws:{service}:", *glob_elements(region_pattern), *f":{account}:{resource}"]
    assert arn_match(pattern, arn) == reference_match(region_pattern, region)


@given(FIELD, FIELD)
def test_arn_star_before_a_later_field_does_not_swallow_colons(
    account: str, resource: str
) -> None:
    """``arn:aws:ssm:*:RESOURCE`` has five fields; its ``*`` cannot stand for region:account."""
    arn = f"arn:aws:ssm:us-east-1:{account}:{resource}x"
    assert not arn_match([*"arn:aws:ssm:", *glob_elements("*"), *f":{resource}x"], arn)


@given(hs.text(max_size=30))
def test_templates_without_variables_keep_text(text: str) -> None:
    template = parse_template(text, substitute=True)
    resolved = template.resolve(lambda _key: None)
    if "${" not in text:
        assert resolved is not None and as_text(resolved) == text
    legacy = parse_template(text, substitute=False)
    legacy_resolved = legacy.resolve(lambda _key: None)
    assert legacy_resolved is not None and as_text(legacy_resolved) == text


# --- evaluation never raises -----------------------------------------------------------

EVERY_OPERATOR = {
    "StringEquals": {"aws:username": "${aws:username}"},
    "StringNotEqualsIgnoreCase": {"aws:userid": ["x", "${aws:PrincipalTag/t, 'd'}"]},
    "StringLike": {"ssm:resourceTag/Env": ["d*", "${aws:PrincipalTag/env}"]},
    "NumericLessThanIfExists": {"aws:MultiFactorAuthAge": ["3600", "${aws:PrincipalTag/n}"]},
    "NumericGreaterThanEquals": {"ssm:resourceTag/n": -1.5},
    "DateGreaterThan": {"aws:CurrentTime": ["2020-01-01", "${aws:PrincipalTag/d}"]},
    "DateLessThanIfExists": {"aws:EpochTime": 4102444800},
    "BoolIfExists": {"aws:MultiFactorAuthPresent": "true"},
    "BinaryEquals": {"ssm:resourceTag/b": "QQ=="},
    "NotIpAddress": {"aws:SourceIp": ["10.0.0.0/8", "2001:db8::/32", "${aws:PrincipalTag/c}"]},
    "ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/${aws:username}"},
    "Null": {"aws:SecureTransport": "false"},
    "ForAnyValue:StringLike": {"aws:TagKeys": "a*"},
    "ForAllValues:StringNotEquals": {"aws:TagKeys": "b"},
}
POLICIES = [
    parse_policy(doc(st(condition=EVERY_OPERATOR))),
    parse_policy(doc(st("Deny", not_action="ssm:*", not_resource="arn:aws:ssm:*:*:session/${aws:username}-*"))),
    parse_policy(doc(st(action="ssm:?tart*", resource=["arn:aws:*:*:*:*/${aws:PrincipalTag/n, '*'}", "arn:aws"]))),
]

KEYS = hs.sampled_from(
    [
        "aws:username",
        "aws:userid",
        "AWS:UserName",
        "ssm:resourceTag/Env",
        "ssm:resourceTag/n",
        "ssm:resourceTag/b",
        "aws:MultiFactorAuthAge",
        "aws:MultiFactorAuthPresent",
        "aws:CurrentTime",
        "aws:EpochTime",
        "aws:SourceIp",
        "aws:PrincipalArn",
        "aws:SecureTransport",
        "aws:TagKeys",
        "aws:PrincipalTag/t",
        "aws:PrincipalTag/env",
        "aws:PrincipalTag/n",
        "aws:PrincipalTag/d",
        "aws:PrincipalTag/c",
    ]
)
ODD_STRINGS = hs.one_of(
    hs.text(max_size=20),
    hs.sampled_from(
        ["", "*", "?", "1e999", "NaN", "-0", "9" * 40, "::", "10.0.0.1/33", "2024-13-45",
         "1704067200", "true", "FALSE", "arn:aws:iam::1:user/a", "QQ==", "${aws:username}"]
    ),
)
VALUES: Any = hs.one_of(
    ODD_STRINGS,
    hs.booleans(),
    hs.integers(),
    hs.floats(allow_nan=True, allow_infinity=True),
    hs.lists(ODD_STRINGS, max_size=3),
)


@given(
    action=hs.one_of(hs.text(max_size=20), hs.sampled_from(["ssm:StartSession", "iam:GetUser"])),
    resource=hs.one_of(ODD_STRINGS, hs.just("arn:aws:ssm:us-east-1:1:session/alice-1")),
    keys=hs.dictionaries(KEYS, VALUES, max_size=8),
)
@settings(max_examples=400)
def test_evaluation_never_raises(action: str, resource: str, keys: dict[str, Any]) -> None:
    decision = evaluate(POLICIES, RequestContext(action, resource, keys=keys))
    assert decision.reason in ("allowed", "explicit deny", "implicit deny")
    assert decision.allowed == (decision.reason == "allowed")


JSON = hs.recursive(
    hs.none() | hs.booleans() | hs.integers() | hs.text(max_size=8),
    lambda children: hs.lists(children, max_size=3)
    | hs.dictionaries(
        hs.sampled_from(
            ["Version", "Statement", "Effect", "Action", "Resource", "Condition", "Sid",
             "NotAction", "NotResource", "StringEquals", "aws:username", "x"]
        ),
        children,
        max_size=4,
    ),
    max_leaves=12,
)


@given(JSON)
def test_parse_only_raises_malformed(document: Any) -> None:
    with contextlib.suppress(MalformedPolicyDocument):
        parse_policy(document if isinstance(document, dict) else {"Statement": document})
