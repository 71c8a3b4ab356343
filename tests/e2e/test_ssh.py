"""OpenSSH through portless: ProxyCommand with our ssh-proxy verb and with the seeds' AWS CLI line."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import SSHD_USER, Agent, Server, Sshd, free_port, wait_for

pytestmark = pytest.mark.e2e


def run_ssh(sshd: Sshd, server: Server, node: Agent, proxy: str, *cmd: str,
            timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["ssh", *sshd.ssh_args(proxy), "-p", str(sshd.port), f"{SSHD_USER}@{node.instance_id}", *cmd],
        capture_output=True, env=server.env(), timeout=timeout,
    )


def test_ssh_runs_a_command_through_portless_ssh_proxy(server: Server, node: Agent, sshd: Sshd) -> None:
    out = run_ssh(sshd, server, node, "portless ssh-proxy %h %p", "echo hello-$((6*7)); whoami")
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().split() == ["hello-42", SSHD_USER]


def test_seed_proxycommand_line_with_the_aws_cli(server: Server, node: Agent, sshd: Sshd) -> None:
    # Seeds 000 and 004, word for word, with --endpoint-url added.
    proxy = ('sh -c "aws ssm start-session --target %h --document-name AWS-StartSSHSession '
             f"--parameters 'portNumber=%p' --endpoint-url {server.url}\"")
    out = run_ssh(sshd, server, node, proxy, "uname -s; exit 3")
    assert out.returncode == 3, out.stderr.decode()
    assert out.stdout.decode().strip() == "Linux"


def test_scp_of_50_mb_arrives_intact(server: Server, node: Agent, sshd: Sshd, workdir: Path) -> None:
    src = workdir / "blob.bin"
    src.write_bytes(os.urandom(50 * 1024 * 1024))
    remote = f"/tmp/portless-e2e-{os.getpid()}.bin"
    out = subprocess.run(
        ["scp", "-q", *sshd.ssh_args("portless ssh-proxy %h %p"), "-P", str(sshd.port), str(src),
         f"{SSHD_USER}@{node.instance_id}:{remote}"],
        capture_output=True, env=server.env(), timeout=300,
    )
    try:
        assert out.returncode == 0, out.stderr.decode()
        assert hashlib.sha256(Path(remote).read_bytes()).hexdigest() == \
            hashlib.sha256(src.read_bytes()).hexdigest()
    finally:
        Path(remote).unlink(missing_ok=True)


def test_ssh_local_forward_through_portless(server: Server, node: Agent, sshd: Sshd) -> None:
    # A TCP service on the node; ssh -L reaches it through the SSH session that
    # itself runs over portless.
    target = socket.create_server(("127.0.0.1", 0))
    target_port = target.getsockname()[1]
    local_port = free_port()
    proc = subprocess.Popen(
        ["ssh", *sshd.ssh_args("portless ssh-proxy %h %p"), "-p", str(sshd.port), "-N",
         "-o", "ExitOnForwardFailure=yes", "-L", f"{local_port}:127.0.0.1:{target_port}",
         f"{SSHD_USER}@{node.instance_id}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=server.env(),
    )
    try:
        def connect() -> socket.socket | None:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                return socket.create_connection(("127.0.0.1", local_port), timeout=5)
            except OSError:
                return None

        client = wait_for(connect, 60, "ssh -L to listen")
        peer, _ = target.accept()
        client.sendall(b"ping through two tunnels")
        assert peer.recv(100) == b"ping through two tunnels"
        peer.sendall(b"pong")
        assert client.recv(100) == b"pong"
        client.close()
        peer.close()
    finally:
        proc.terminate()
        proc.wait(10)
        target.close()
