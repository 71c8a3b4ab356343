"""The session-manager-plugin argv contract (client spec §2.2, §2.3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from portless.client import plugin
from portless.client.plugin import ENV_RESPONSE, PluginArgError, parse_argv
from portless.protocol.versions import PORTLESS_CLIENT_VERSION

RESPONSE = {"SessionId": "sess-0123456789abcdef0", "TokenValue": "tok-abc",
            "StreamUrl": "ws://127.0.0.1:18081/v1/data-channel/sess-0123456789abcdef0"
                         "?role=publish_subscribe"}
REQUEST = {"Target": "i-0123456789abcdef0", "DocumentName": "AWS-StartPortForwardingSession",
           "Parameters": {"portNumber": ["80"], "localPortNumber": ["0"]}}


def argv(first: str, profile: str = "", endpoint: str = "http://127.0.0.1:18080") -> list[str]:
    return ["session-manager-plugin", first, "us-east-1", "StartSession", profile,
            json.dumps(REQUEST), endpoint]


def test_json_in_argv() -> None:
    args = parse_argv(argv(json.dumps(RESPONSE)), {})
    assert (args.session_id, args.token, args.stream_url) == (
        RESPONSE["SessionId"], RESPONSE["TokenValue"], RESPONSE["StreamUrl"])
    assert args.region == "us-east-1" and args.operation == "StartSession"
    assert args.profile == "" and args.target == "i-0123456789abcdef0"
    assert args.endpoint_url == "http://127.0.0.1:18080"


def test_env_var_form_is_read_and_unset() -> None:
    env = {ENV_RESPONSE: json.dumps(RESPONSE), "OTHER": "x"}
    args = parse_argv(argv(ENV_RESPONSE, profile="dev"), env)
    assert args.token == "tok-abc" and args.profile == "dev"
    assert ENV_RESPONSE not in env and env["OTHER"] == "x"


def test_env_var_real_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_RESPONSE, json.dumps(RESPONSE))
    parse_argv(argv(ENV_RESPONSE))
    assert ENV_RESPONSE not in os.environ


def test_case_insensitive_keys_and_endpoint_scheme() -> None:
    lower = {k.lower(): v for k, v in RESPONSE.items()}
    args = parse_argv(argv(json.dumps(lower), endpoint="ssm.us-east-1.amazonaws.com"), {})
    assert args.session_id == RESPONSE["SessionId"]
    assert args.endpoint_url == "https://ssm.us-east-1.amazonaws.com"
    assert parse_argv(argv(json.dumps(RESPONSE), endpoint=""), {}).endpoint_url is None


def test_legacy_four_arguments() -> None:
    args = parse_argv(["session-manager-plugin", json.dumps(RESPONSE), "us-east-1",
                       "StartSession"], {})
    assert args.legacy and args.target == "" and args.endpoint_url is None


@pytest.mark.parametrize("bad", [
    argv("{not json"),
    argv(json.dumps({"SessionId": "s", "TokenValue": "t"})),
    argv(json.dumps({**RESPONSE, "StreamUrl": None})),
    argv(ENV_RESPONSE),  # env var missing
    ["session-manager-plugin", json.dumps(RESPONSE), "us-east-1", "StartSession", "",
     json.dumps({"Target": 5})],
])
def test_bad_input(bad: list[str]) -> None:
    with pytest.raises(PluginArgError):
        parse_argv(bad, {})


def test_argc_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert plugin.main(["session-manager-plugin"]) == 0
    assert "installed successfully" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert plugin.main(["session-manager-plugin", "--version"]) == 0
    out = capsys.readouterr().out
    assert out == PORTLESS_CLIENT_VERSION + "\n"


def test_version_makes_awscli_use_env_var() -> None:
    """The AWS CLI's own check: our version must be > 1.2.497.0."""
    sm = pytest.importorskip("awscli.customizations.sessionmanager")
    req = sm.VersionRequirement(min_version="1.2.497.0")
    assert req.meets_requirement(PORTLESS_CLIENT_VERSION + "\n")


def test_unknown_and_invalid_operation(capsys: pytest.CaptureFixture[str]) -> None:
    assert plugin.main(["session-manager-plugin", "foo"]) == 0
    assert "Unknown operation foo" in capsys.readouterr().out
    bad = argv(json.dumps(RESPONSE))
    bad[3] = "StopSession"
    assert plugin.main(bad) == 0
    assert "Invalid Operation" in capsys.readouterr().out


def test_console_script_version() -> None:
    """The installed entry point answers like the plugin (what `aws` runs via PATH)."""
    out = subprocess.run([sys.executable, "-c",
                          "import sys; from portless.client.plugin import main; sys.exit(main())",
                          "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == PORTLESS_CLIENT_VERSION
