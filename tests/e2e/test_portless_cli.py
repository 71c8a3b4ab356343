"""portless's own verbs against a real server and agent."""

from __future__ import annotations

import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pexpect
import pytest

from tests.e2e.harness import PORTLESS, Agent, Server
from tests.e2e.webserver import http_server

pytestmark = pytest.mark.e2e


def portless(server: Server, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*PORTLESS, *args], capture_output=True, env=server.env(),
                          timeout=timeout)


def test_exec_passes_stdout_stderr_and_exit_code(server: Server, node: Agent) -> None:
    out = portless(server, "exec", node.instance_id, "--", "sh", "-c",
                   "echo to-stdout; echo to-stderr >&2; exit 7")
    assert out.returncode == 7, out.stderr.decode()
    assert out.stdout.decode().strip() == "to-stdout"
    assert "to-stderr" in out.stderr.decode()


def test_shell_exit_code_becomes_ours(server: Server, node: Agent) -> None:
    child = pexpect.spawn(PORTLESS[0], [*PORTLESS[1:], "shell", node.instance_id],
                          env=server.env(), timeout=30, dimensions=(30, 100))
    child.sendline("echo alive-$((2*3))")
    child.expect("alive-6")
    child.sendline("sleep 30")
    child.sendintr()                       # Ctrl-C reaches the remote sleep, not us
    child.sendline("echo after-interrupt-$((3*3))")
    child.expect("after-interrupt-9")
    child.sendline("exit 5")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 5


def test_forward_many_connections(server: Server, node: Agent) -> None:
    with http_server() as port:
        child = pexpect.spawn(PORTLESS[0], [*PORTLESS[1:], "forward", f"0:localhost:{port}",
                                            "--target", node.instance_id],
                              env=server.env(), timeout=30)
        child.expect(r"Port (\d+) opened")
        local = int(child.match.group(1))

        def fetch(i: int) -> bytes:
            with urllib.request.urlopen(f"http://127.0.0.1:{local}/{i}", timeout=30) as r:
                return bytes(r.read())

        with ThreadPoolExecutor(16) as pool:
            assert list(pool.map(fetch, range(48))) == [
                f"you asked for /{i}".encode() for i in range(48)]
        child.sendintr()
        child.expect(pexpect.EOF)


def test_nodes_and_sessions_list(server: Server, node: Agent) -> None:
    out = portless(server, "nodes")
    assert out.returncode == 0, out.stderr.decode()
    assert node.instance_id in out.stdout.decode()
    assert "Online" in out.stdout.decode()
    assert portless(server, "exec", node.instance_id, "--", "true").returncode == 0
    hist = portless(server, "sessions", "--history")
    assert hist.returncode == 0, hist.stderr.decode()
    assert "admin-" in hist.stdout.decode()


def test_ssh_config_prints_the_proxy_block(server: Server) -> None:
    out = portless(server, "ssh-config")
    assert out.returncode == 0
    text = out.stdout.decode()
    assert "Host i-* mi-*" in text
    assert "ProxyCommand" in text and "ssh-proxy %h %p" in text


def test_errors_are_one_clear_line(server: Server) -> None:
    out = portless(server, "shell", "mi-00000000000000000")
    assert out.returncode != 0
    err = out.stderr.decode().strip()
    assert "Traceback" not in err
    assert "TargetNotConnected" in err or "InvalidInstanceId" in err
