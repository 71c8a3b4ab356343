"""The stock AWS CLI (awscli + our session-manager-plugin script) against portless."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pexpect
import pytest

from tests.e2e.harness import Agent, Server, wait_for
from tests.e2e.webserver import http_server

pytestmark = pytest.mark.e2e


def spawn_aws(server: Server, *args: str) -> pexpect.spawn:
    return pexpect.spawn("aws", ["ssm", "start-session", "--endpoint-url", server.url, *args],
                         env=server.env(), timeout=30, dimensions=(40, 120))


def test_shell_session_through_a_pty(server: Server, node: Agent) -> None:
    child = spawn_aws(server, "--target", node.instance_id)
    child.expect(r"Starting session with SessionId: (\S+)")
    session_id = child.match.group(1).decode()
    assert session_id.startswith("admin-")
    child.sendline("id -un; stty size; echo marker-$((40+2))")
    child.expect("marker-42")
    before = child.before.decode()
    assert "ssm-user" in before
    assert "40 120" in before            # the pty got the terminal's real size
    child.sendline("exit")
    child.expect(f"Exiting session with sessionId: {re.escape(session_id)}")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_port_forwarding_serves_20_concurrent_requests(server: Server, node: Agent) -> None:
    with http_server() as port:
        child = spawn_aws(server, "--target", node.instance_id,
                          "--document-name", "AWS-StartPortForwardingSession",
                          "--parameters", f'{{"portNumber":["{port}"],"localPortNumber":["0"]}}')
        child.expect(r"Port (\d+) opened for sessionId")
        local = int(child.match.group(1))
        child.expect("Waiting for connections")

        def fetch(i: int) -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{local}/item/{i}", timeout=30) as r:
                return str(r.read().decode())

        with ThreadPoolExecutor(20) as pool:
            bodies = list(pool.map(fetch, range(20)))
        assert bodies == [f"you asked for /item/{i}" for i in range(20)]
        child.sendintr()
        child.expect(pexpect.EOF)


def test_port_forwarding_to_a_remote_host(server: Server, node: Agent) -> None:
    # 127.0.0.2 stands for a host behind the node: only the agent dials it.
    with http_server("127.0.0.2") as port:
        child = spawn_aws(server, "--target", node.instance_id,
                          "--document-name", "AWS-StartPortForwardingSessionToRemoteHost",
                          "--parameters", f"host=127.0.0.2,portNumber={port},localPortNumber=0")
        child.expect(r"Port (\d+) opened for sessionId")
        local = int(child.match.group(1))
        with urllib.request.urlopen(f"http://127.0.0.1:{local}/remote", timeout=30) as r:
            assert r.read() == b"you asked for /remote"
        child.sendintr()
        child.expect(pexpect.EOF)


def test_terminate_session_ends_the_cli(server: Server, node: Agent) -> None:
    child = spawn_aws(server, "--target", node.instance_id)
    child.expect(r"Starting session with SessionId: (\S+)")
    session_id = child.match.group(1).decode()
    child.sendline("echo ready-$((1+1))")
    child.expect("ready-2")
    out = subprocess.run(["aws", "ssm", "terminate-session", "--session-id", session_id,
                          "--endpoint-url", server.url], capture_output=True, env=server.env())
    assert out.returncode == 0, out.stderr.decode()
    child.expect(f"Exiting session with sessionId: {re.escape(session_id)}")
    child.expect(pexpect.EOF)
    history = wait_for(lambda: server.ssm().describe_sessions(
        State="History", Filters=[{"key": "SessionId", "value": session_id}])["Sessions"],
        10, "the session in History")
    assert history[0]["Status"] == "Terminated"


def test_unknown_target_is_an_aws_error(server: Server) -> None:
    out = subprocess.run(["aws", "ssm", "start-session", "--target", "mi-00000000000000000",
                          "--endpoint-url", server.url], capture_output=True, env=server.env())
    assert out.returncode == 255
    assert b"TargetNotConnected" in out.stderr or b"InvalidInstanceId" in out.stderr
