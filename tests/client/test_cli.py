"""The `portless` verbs: argument handling, tables, errors, and whole runs through main()."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from portless.client import cli, plugin
from portless.client.cli import (
    UsageError,
    build_parser,
    exec_request,
    forward_request,
    parse_forward_spec,
    ssh_config_text,
    start_session_request,
)
from portless.client.config import ClientOptions
from portless.client.tables import render_nodes, render_sessions
from portless.protocol.message import PayloadType
from portless.protocol.payloads import encode_exit_code

from .fakeserver import FakeAgent, ThreadedServer

# ------------------------------------------------------------------ parsing


def test_start_session_arguments_like_aws() -> None:
    args = build_parser().parse_args([
        "start-session", "--target", "i-1f10adafc1a128691a", "--document-name",
        "AWS-StartPortForwardingSession", "--parameters",
        '"portNumber"=["8888"],"localPortNumber"=["8888"]', "--endpoint-url",
        "http://127.0.0.1:8080", "--profile", "portless", "--region", "us-east-1"])
    assert start_session_request(args) == {
        "Target": "i-1f10adafc1a128691a", "DocumentName": "AWS-StartPortForwardingSession",
        "Parameters": {"portNumber": ["8888"], "localPortNumber": ["8888"]}}
    assert cli.options_from(args) == ClientOptions(
        endpoint_url="http://127.0.0.1:8080", profile="portless", region="us-east-1")


def test_global_options_before_or_after_the_verb() -> None:
    before = build_parser().parse_args(["--profile", "a", "nodes"])
    after = build_parser().parse_args(["nodes", "--profile", "b", "--no-verify-ssl"])
    assert cli.options_from(before).profile == "a"
    assert cli.options_from(after) == ClientOptions(profile="b", verify_ssl=False)


@pytest.mark.parametrize(("spec", "expected"), [
    ("localhost:8888", (0, "localhost", 8888)),
    ("9000:localhost:80", (9000, "localhost", 80)),
    ("db.internal:5432", (0, "db.internal", 5432)),
    ("15432:10.0.0.7:5432", (15432, "10.0.0.7", 5432)),
    ("[::1]:80", (0, "::1", 80)),
    ("8080:[fd00::5]:443", (8080, "fd00::5", 443)),
])
def test_forward_spec(spec: str, expected: tuple[int, str, int]) -> None:
    assert parse_forward_spec(spec) == expected


@pytest.mark.parametrize("spec", ["8888", "localhost", "a:b:c:d", "x:99999", "70000:h:1",
                                  "h:0", ":80"])
def test_forward_spec_errors(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_forward_spec(spec)


def test_forward_documents() -> None:
    assert forward_request("mi-1", "localhost:8888") == {
        "Target": "mi-1", "DocumentName": "AWS-StartPortForwardingSession",
        "Parameters": {"portNumber": ["8888"], "localPortNumber": ["0"]}}
    assert forward_request("mi-1", "5432:db:5432") == {
        "Target": "mi-1", "DocumentName": "AWS-StartPortForwardingSessionToRemoteHost",
        "Parameters": {"host": ["db"], "portNumber": ["5432"], "localPortNumber": ["5432"]}}


def test_exec_request() -> None:
    args = build_parser().parse_args(["exec", "mi-1", "--", "ls", "-la", "/tmp"])
    assert exec_request(args.target, args.command) == {
        "Target": "mi-1", "DocumentName": "AWS-StartNonInteractiveCommand",
        "Parameters": {"command": ["ls -la /tmp"]}}
    quoted = exec_request("mi-1", ["--", "sh", "-c", "echo a b; exit 3"])
    assert quoted["Parameters"] == {"command": ["sh -c 'echo a b; exit 3'"]}
    assert exec_request("mi-1", ["--", "ls -la /tmp"])["Parameters"] == {
        "command": ["ls -la /tmp"]}
    with pytest.raises(UsageError):
        exec_request("mi-1", ["--"])


def test_ssh_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ssh-config"]) == 0
    assert capsys.readouterr().out == (
        "# SSH over Session Manager, through portless\n"
        "Host i-* mi-*\n"
        "  ProxyCommand portless ssh-proxy %h %p\n")
    text = ssh_config_text(ClientOptions(profile="prod team", endpoint_url="https://p:8443"))
    assert "  ProxyCommand portless --profile 'prod team' --endpoint-url https://p:8443 " \
           "ssh-proxy %h %p\n" in text


# ------------------------------------------------------------------- tables


def test_nodes_table() -> None:
    text = render_nodes([
        {"InstanceId": "mi-0123456789abcdef0", "ComputerName": "web-1.internal",
         "PingStatus": "Online", "PlatformName": "Debian GNU/Linux", "PlatformVersion": "12",
         "IPAddress": "10.0.0.5", "AgentVersion": "3.3.4000.0"},
        {"InstanceId": "i-0182d91e85d69cf00", "Name": "db", "ComputerName": "ip-10-0-0-9",
         "PingStatus": "ConnectionLost", "PlatformType": "Linux"},
    ])
    assert text == (
        "ID                    NAME            PING            PLATFORM             IP        AGENT\n"
        "mi-0123456789abcdef0  web-1.internal  Online          Debian GNU/Linux 12  10.0.0.5  3.3.4000.0\n"
        "i-0182d91e85d69cf00   db              ConnectionLost  Linux                -         -\n")


def test_sessions_table() -> None:
    start = datetime(2024, 9, 4, 5, 12, 49, tzinfo=UTC)
    rows = [{"SessionId": "alice-0a1b2c3d4e5f67890", "Target": "mi-1", "Status": "Connected",
             "Owner": "arn:aws:iam::123456789012:user/alice", "StartDate": start,
             "DocumentName": "SSM-SessionManagerRunShell"}]
    active = render_sessions(rows).splitlines()
    assert active[0].split() == ["SESSION", "TARGET", "STATUS", "OWNER", "DOCUMENT", "STARTED"]
    assert active[1].split()[:5] == ["alice-0a1b2c3d4e5f67890", "mi-1", "Connected", "alice",
                                     "SSM-SessionManagerRunShell"]
    history = render_sessions(rows, history=True).splitlines()
    assert history[0].split()[-1] == "ENDED" and history[1].endswith("-")


# ------------------------------------------------------- against a server


@pytest.fixture
def threaded(aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedServer]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    ts = ThreadedServer()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", ts.server.base_url)
    try:
        yield ts
    finally:
        ts.close()


def test_api_error_is_one_line(threaded: ThreadedServer,
                               capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["start-session", "--target", "mi-0123456789abcdef0"])
    err = capsys.readouterr().err
    assert status == 255
    assert err == "portless: TargetNotConnected: mi-0123456789abcdef0 is not connected.\n"


def test_no_credentials(threaded: ThreadedServer, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert cli.main(["nodes"]) == 255
    err = capsys.readouterr().err
    assert err.startswith("portless: Unable to locate credentials") and err.count("\n") == 1


def test_unreachable_endpoint(aws_env: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert cli.main(["sessions", "--region", "us-east-1",
                     "--endpoint-url", "http://127.0.0.1:9"]) == 255
    err = capsys.readouterr().err
    assert err.startswith("portless: Could not connect to the endpoint URL")
    assert err.count("\n") == 1


def test_bad_parameters(threaded: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["start-session", "--target", "mi-1", "--parameters", "{bad"]) == 255
    assert capsys.readouterr().err.startswith("portless: Error parsing parameter")


def test_nodes_sessions_terminate(threaded: ThreadedServer,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    srv = threaded.server
    srv.nodes = [{"InstanceId": "mi-0123456789abcdef0", "ComputerName": "web-1",
                  "PingStatus": "Online", "PlatformType": "Linux", "IPAddress": "10.0.0.5",
                  "AgentVersion": "3.3.4000.0", "LastPingDateTime": 1700000000.0}]
    srv.sessions = [
        {"SessionId": "alice-1", "Target": "mi-1", "Status": "Connected", "StartDate": 1.7e9},
        {"SessionId": "alice-0", "Target": "mi-1", "Status": "Terminated", "StartDate": 1.6e9,
         "EndDate": 1.6e9 + 60},
    ]
    assert cli.main(["nodes"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ID", "NAME", "PING", "PLATFORM", "IP", "AGENT"]
    assert out[1].split() == ["mi-0123456789abcdef0", "web-1", "Online", "Linux", "10.0.0.5",
                              "3.3.4000.0"]
    assert cli.main(["sessions"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith("alice-1")
    assert cli.main(["sessions", "--history"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith("alice-0")
    assert cli.main(["terminate", "alice-1"]) == 0
    assert capsys.readouterr().out == "alice-1\n"
    assert ("TerminateSession", {"SessionId": "alice-1"}) in srv.calls


def _scripted_agent(ts: ThreadedServer, session_type: str, script: Any,
                    **kw: Any) -> list[FakeAgent]:
    made: list[FakeAgent] = []

    def start(body: dict[str, Any]) -> FakeAgent:
        agent = ts.server.new_session(session_type, **kw)
        agent.request = body  # type: ignore[attr-defined]
        made.append(agent)
        ts.spawn(script(agent))
        return agent

    ts.server.start_handler = start
    return made


def test_exec_end_to_end(threaded: ThreadedServer, capfd: pytest.CaptureFixture[str]) -> None:
    async def script(agent: FakeAgent) -> None:
        await agent.ready.wait()
        agent.send(PayloadType.OUTPUT, b"hello from the node\n")
        agent.send(PayloadType.STDERR, b"a warning\n")
        agent.send(PayloadType.EXIT_CODE, encode_exit_code(5))
        await agent.wait_acked()
        await agent.close_channel()

    made = _scripted_agent(threaded, "NonInteractiveCommands", script)
    status = cli.main(["exec", "mi-0123456789abcdef0", "--", "echo", "hello"])
    out, err = capfd.readouterr()
    assert status == 5
    assert out == "hello from the node\n"
    assert err == "a warning\n"
    assert made[0].request == {  # type: ignore[attr-defined]
        "Target": "mi-0123456789abcdef0", "DocumentName": "AWS-StartNonInteractiveCommand",
        "Parameters": {"command": ["echo hello"]}}


def test_plugin_end_to_end_env_var(threaded: ThreadedServer, monkeypatch: pytest.MonkeyPatch,
                                   capfd: pytest.CaptureFixture[str]) -> None:
    """What `aws ssm start-session` does: StartSession itself, then the plugin's argv."""
    async def script(agent: FakeAgent) -> None:
        await agent.ready.wait()
        agent.send(PayloadType.OUTPUT, b"$ ")
        agent.send(PayloadType.EXIT_CODE, encode_exit_code(9))
        await agent.wait_acked()
        await agent.close_channel()

    _scripted_agent(threaded, "Standard_Stream", script)
    import botocore.session

    client = botocore.session.Session().create_client("ssm")
    request = {"Target": "mi-0123456789abcdef0"}
    resp = client.start_session(**request)
    monkeypatch.setenv(plugin.ENV_RESPONSE, json.dumps(
        {k: resp[k] for k in ("SessionId", "TokenValue", "StreamUrl")}))
    # The plugin reads fd 0: give it a pipe that stays open for the whole session.
    saved, (r, w) = os.dup(0), os.pipe()
    os.dup2(r, 0)
    try:
        status = plugin.main(["session-manager-plugin", plugin.ENV_RESPONSE, "us-east-1",
                              "StartSession", "", json.dumps(request), threaded.server.base_url])
    finally:
        os.dup2(saved, 0)
        for fd in (saved, r, w):
            os.close(fd)
    out, _ = capfd.readouterr()
    assert plugin.ENV_RESPONSE not in os.environ
    assert status == 0  # the plugin's exit status does not carry the remote one
    sid = resp["SessionId"]
    assert out == (f"\nStarting session with SessionId: {sid}\n$ "
                   f"\n\nExiting session with sessionId: {sid}.\n\n")


def test_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["forward", "nonsense", "--target", "mi-1", "--region", "us-east-1"]) == 2
    assert capsys.readouterr().err == "portless: expected [LOCAL:]HOST:PORT, got 'nonsense'\n"
    assert cli.main(["bogus-verb"]) == 2
