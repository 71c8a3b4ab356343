"""Sessions survive a network blip: either side's link is reset mid-session, nothing is lost.

A proxy between one side and the server resets every TCP connection it carries while a
remote command is printing.  The client comes back with ResumeSession, the agent with a
new data channel; the sequence numbers go on, so every line arrives once, in order,
and the command's exit code still reaches the caller.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cutproxy import CutProxy, cut_proxy
from tests.e2e.harness import PORTLESS, SSHD_USER, Agent, Server, Sshd, read_until, start_node

pytestmark = pytest.mark.e2e

LINES = 60
COUNTER = (f"i=1; while [ $i -le {LINES} ]; do echo line $i; i=$((i+1)); sleep 0.04; done; "
           "exit 3")


def finish(proc: subprocess.Popen[bytes], seen: bytes) -> tuple[bytes, int]:
    """Reads stdout to EOF with stdin still open (communicate() would close it)."""
    assert proc.stdout is not None
    while chunk := proc.stdout.read1(65536):
        seen += chunk
    return seen, proc.wait(60)


def numbered_lines(output: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"^line (\d+)\r?$", output, re.MULTILINE)]


def run_through_blip(command: list[str], env: dict[str, str], proxy: CutProxy) -> tuple[bytes, int]:
    """Starts `command`, waits for line 15, resets the proxied links, returns all output."""
    # stdin is a pipe left open: the plugin, like AWS's, ends the session on stdin EOF.
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    try:
        seen = read_until(proc, rb"line 15\r?\n", 60)
        assert proxy.cut() >= 1, "the session's links did not go through the proxy"
        return finish(proc, seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def client_proxy(server: Server) -> Iterator[CutProxy]:
    with cut_proxy(server.port) as proxy:
        yield proxy


def test_client_link_reset_with_portless_exec(server: Server, node: Agent,
                                              client_proxy: CutProxy) -> None:
    output, code = run_through_blip(
        [*PORTLESS, "exec", "--endpoint-url", client_proxy.url, node.instance_id, "--",
         "sh", "-c", COUNTER],
        server.env(), client_proxy)
    assert numbered_lines(output) == list(range(1, LINES + 1)), output.decode(errors="replace")
    assert code == 3
    assert client_proxy.accepted >= 2       # it came back through the same endpoint


def test_client_link_reset_with_the_aws_cli(server: Server, node: Agent,
                                            client_proxy: CutProxy) -> None:
    output, code = run_through_blip(
        ["aws", "ssm", "start-session", "--endpoint-url", client_proxy.url,
         "--target", node.instance_id, "--document-name", "AWS-StartNonInteractiveCommand",
         "--parameters", json.dumps({"command": [f"sh -c '{COUNTER}'"]})],
        server.env(), client_proxy)
    assert numbered_lines(output) == list(range(1, LINES + 1)), output.decode(errors="replace")
    assert b"Exiting session with sessionId" in output
    assert code == 0                         # the stock plugin has no exit codes


@pytest.mark.parametrize("proxy_command", [
    "portless ssh-proxy --endpoint-url {url} %h %p",
    # Seeds 000 and 004's line, with --endpoint-url added.
    'sh -c "aws ssm start-session --target %h --document-name AWS-StartSSHSession '
    "--parameters 'portNumber=%p' --endpoint-url {url}\"",
])
def test_ssh_over_a_link_that_resets(server: Server, node: Agent, sshd: Sshd,
                                     client_proxy: CutProxy, proxy_command: str) -> None:
    # The ssh connection inside the session outlives the session's WebSocket.
    output, code = run_through_blip(
        ["ssh", *sshd.ssh_args(proxy_command.format(url=client_proxy.url)),
         "-p", str(sshd.port), f"{SSHD_USER}@{node.instance_id}", COUNTER],
        server.env(), client_proxy)
    assert numbered_lines(output) == list(range(1, LINES + 1)), output.decode(errors="replace")
    assert code == 3


def test_agent_link_reset(server: Server, tmp_path: Path) -> None:
    with cut_proxy(server.port) as agent_proxy:
        far_node = start_node(server, tmp_path / "agent", endpoint=agent_proxy.url)
        try:
            output, code = run_through_blip(
                [*PORTLESS, "exec", far_node.instance_id, "--", "sh", "-c", COUNTER],
                server.env(), agent_proxy)
        finally:
            far_node.stop()
    assert numbered_lines(output) == list(range(1, LINES + 1)), \
        output.decode(errors="replace") + far_node.log()
    assert code == 3
