"""--parameters in every form the seeds and the AWS CLI use."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portless.client.params import ParameterError, parse_parameters, parse_shorthand


@pytest.mark.parametrize(("text", "expected"), [
    # seeds 000/004: ProxyCommand ... --parameters 'portNumber=%p' (ssh substitutes %p)
    ("portNumber=%p", {"portNumber": ["%p"]}),
    ("portNumber=22", {"portNumber": ["22"]}),
    ("portNumber=22,localPortNumber=0", {"portNumber": ["22"], "localPortNumber": ["0"]}),
    # seed 003 after the shell removed the quotes ...
    ("portNumber=[8888],localPortNumber=[8888]",
     {"portNumber": ["8888"], "localPortNumber": ["8888"]}),
    # ... and verbatim, quotes included (no shell in between)
    ('"portNumber"=["8888"],"localPortNumber"=["8888"]',
     {"portNumber": ["8888"], "localPortNumber": ["8888"]}),
    # JSON
    ('{"portNumber":["80"],"localPortNumber":["0"]}',
     {"portNumber": ["80"], "localPortNumber": ["0"]}),
    ('  {"portNumber": "80"}', {"portNumber": ["80"]}),
    ('{"portNumber": [80]}', {"portNumber": ["80"]}),
    ("host=db.internal,portNumber=5432,localPortNumber=15432",
     {"host": ["db.internal"], "portNumber": ["5432"], "localPortNumber": ["15432"]}),
    ('command="echo a,b"', {"command": ["echo a,b"]}),
    ("command=echo a\\,b", {"command": ["echo a,b"]}),
    ("command=ls -la /tmp", {"command": ["ls -la /tmp"]}),
    ("a=b,c,d=e", {"a": ["b", "c"], "d": ["e"]}),
    ("", {}),
])
def test_forms(text: str, expected: dict[str, list[str]]) -> None:
    assert parse_parameters(text) == expected


def test_file_form(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "params.json"
    path.write_text(json.dumps({"portNumber": ["2222"]}))
    assert parse_parameters(f"file://{path}") == {"portNumber": ["2222"]}
    with pytest.raises(ParameterError):
        parse_parameters(f"file://{tmp_path}/missing.json")


@pytest.mark.parametrize("text", ["portNumber", "a=b,a=c", "{not json", "a=[b", '{"a": {"b": 1}}',
                                  "a='unterminated", "a=b,"])
def test_errors(text: str) -> None:
    with pytest.raises(ParameterError):
        parse_parameters(text)


_alphabet = st.sampled_from(list("ab=,[]{}\"' \\-.:/%x1"))


@settings(max_examples=400, deadline=None)
@given(st.text(_alphabet, min_size=1, max_size=16))
def test_matches_awscli_shorthand(text: str) -> None:
    """Differential check against the AWS CLI's own parser on arbitrary input."""
    awscli = pytest.importorskip("awscli.shorthand")
    try:
        expected = awscli.ShorthandParser().parse(text)
    except Exception:
        expected = "error"
    try:
        got = parse_shorthand(text)
    except ParameterError:
        got = "error"
    if expected == "error" and got != "error":
        # Our one extension: quoted keys ("key"=value).  Everything else must agree.
        assert re.search(r"[\"']\s*=", text), (text, got)
        return
    assert got == expected
