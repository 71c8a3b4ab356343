"""Real processes for the end-to-end tests: a portless server, registered agents, sshd.

Everything listens on loopback; every process is started with a fresh data or
state directory and stopped by the fixture that started it.
"""

from __future__ import annotations

import configparser
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

REGION = "us-east-1"
PORTLESS = [sys.executable, "-m", "portless"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def read_until(proc: subprocess.Popen[bytes], pattern: bytes, timeout: float) -> bytes:
    """Read the process's stdout until `pattern` (a regex) appears; return what was read."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while not re.search(pattern, seen):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (proc.poll() is not None and not sel.select(0)):
                raise AssertionError(
                    f"{pattern!r} not seen (exit={proc.poll()}); output so far:\n"
                    + seen.decode(errors="replace"))
            if sel.select(min(remaining, 0.5)):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(
                        f"{pattern!r} not seen before EOF; output:\n" + seen.decode(errors="replace"))
                seen += chunk
    finally:
        sel.close()
    return seen


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any AWS configuration of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(extra)
    return env


@dataclass
class Server:
    """A `portless server` subprocess with its data directory and admin credentials."""

    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    exports: dict[str, str] = field(default_factory=dict)
    log: bytes = b""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra_args: str) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [*PORTLESS, "server", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", str(self.data_dir), *extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env(),
        )
        self.log = read_until(self.proc, rb"listening on \S+", 30)
        for name, value in re.findall(rb"export (AWS_[A-Z_]+)=(\S+)", self.log):
            self.exports[name.decode()] = value.decode().strip("'\"")

    def stop(self) -> None:
        stop(self.proc)

    def credentials(self) -> tuple[str, str]:
        cp = configparser.ConfigParser()
        cp.read(self.data_dir / "credentials")
        return cp["portless"]["aws_access_key_id"], cp["portless"]["aws_secret_access_key"]

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for the AWS CLI and `portless` verbs, from the server's own export lines."""
        config = self.data_dir / "empty-aws-config"
        config.touch()
        env = clean_env(AWS_CONFIG_FILE=str(config))
        env.update(self.exports)
        env.update(extra)
        return env

    def ssm(self) -> Any:
        key, secret = self.credentials()
        return boto3.client("ssm", endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=key, aws_secret_access_key=secret)


@dataclass
class Agent:
    """A registered `portless agent run` subprocess."""

    state_dir: Path
    instance_id: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def register(self, endpoint: str, activation_id: str, code: str) -> None:
        out = subprocess.run(
            [*PORTLESS, "agent", "register", "--endpoint", endpoint, "--id", activation_id,
             "--code", code, "--region", REGION, "--state-dir", str(self.state_dir)],
            capture_output=True, env=clean_env(), timeout=60,
        )
        assert out.returncode == 0, out.stderr.decode() + out.stdout.decode()
        found = re.search(rb"mi-[0-9a-f]{17}", out.stdout + out.stderr)
        assert found, out.stdout.decode() + out.stderr.decode()
        self.instance_id = found.group().decode()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*PORTLESS, "agent", "run", "--state-dir", str(self.state_dir)],
            stdout=subprocess.DEVNULL, stderr=open(self.state_dir / "agent.log", "wb"),  # noqa: SIM115
            env=clean_env(),
        )

    def stop(self) -> None:
        stop(self.proc)

    def log(self) -> str:
        path = self.state_dir / "agent.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_node(server: Server, state_dir: Path, endpoint: str | None = None) -> Agent:
    """Activation → registration → running agent, Online in DescribeInstanceInformation.

    `endpoint` is where the agent dials (the server's own URL unless given).
    """
    ssm = server.ssm()
    act = ssm.create_activation(IamRole="AmazonSSMManagedInstanceCore", RegistrationLimit=5)
    agent = Agent(state_dir)
    agent.register(endpoint or server.url, act["ActivationId"], act["ActivationCode"])
    agent.start()

    def online() -> bool:
        if agent.proc is not None and agent.proc.poll() is not None:
            raise AssertionError("agent exited:\n" + agent.log())
        info = ssm.describe_instance_information(
            Filters=[{"Key": "InstanceIds", "Values": [agent.instance_id]}])
        return any(i["PingStatus"] == "Online" for i in info["InstanceInformationList"])

    wait_for(online, 30, f"{agent.instance_id} to be Online")
    return agent


SSHD_USER = "portless-e2e"


@dataclass
class Sshd:
    """OpenSSH's sshd on a loopback port, with one user allowed in by key."""

    workdir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_key(self) -> Path:
        return self.workdir / "id_ed25519"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ensure_user(SSHD_USER, shell="/bin/sh")
        host_key = self.workdir / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                       check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(self.client_key)], check=True)
        home = Path(f"/home/{SSHD_USER}")
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        auth = ssh_dir / "authorized_keys"
        auth.write_text(Path(str(self.client_key) + ".pub").read_text())
        shutil.chown(ssh_dir, SSHD_USER, SSHD_USER)
        shutil.chown(auth, SSHD_USER, SSHD_USER)
        auth.chmod(0o600)
        Path("/run/sshd").mkdir(exist_ok=True)
        config = self.workdir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"PidFile {self.workdir / 'sshd.pid'}\nAuthorizedKeysFile .ssh/authorized_keys\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "AllowTcpForwarding yes\nSubsystem sftp internal-sftp\n"
            f"AllowUsers {SSHD_USER}\nStrictModes no\nLogLevel ERROR\n")
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_for(listening, 15, "sshd to listen")

    def stop(self) -> None:
        stop(self.proc)

    def ssh_args(self, proxy_command: str) -> list[str]:
        """Options for ssh/scp that reach this sshd only through `proxy_command`."""
        return ["-o", f"ProxyCommand={proxy_command}", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(self.client_key)]


def ensure_user(name: str, shell: str = "/bin/sh") -> None:
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", shell, name], check=True)
    # useradd leaves the password "!" (locked); sshd without PAM refuses locked
    # accounts even for key logins, while "*" means "no password" but not locked.
    subprocess.run(["usermod", "-p", "*", name], check=True)
