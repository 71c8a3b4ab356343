"""`portless server` / `portless admin` command lines, TLS, and the real process."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from portless.server.admin import main as admin_main
from portless.server.main import main as server_main
from portless.server.tls import ensure_auto_tls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refuses_plain_http_off_loopback(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rc = server_main(["--listen", "0.0.0.0:0", "--data-dir", str(tmp_path)])
    assert rc == 2
    assert "refusing to serve plain HTTP" in capsys.readouterr().err
    assert server_main(["--listen", "nonsense", "--data-dir", str(tmp_path)]) == 2


def test_auto_tls(make_server: Any, tmp_path: Path) -> None:
    data = tmp_path / "tls"
    files = ensure_auto_tls(data, "127.0.0.1")
    assert files.ca is not None and files.ca.exists()
    assert oct(files.key.stat().st_mode & 0o777) == "0o600"
    again = ensure_auto_tls(data, "127.0.0.1")
    assert again.cert.read_bytes() == files.cert.read_bytes()   # reused, not re-made
    server = make_server(data, tls=files)
    assert server.url.startswith("https://")
    key, secret = server.credentials()
    ssm = boto3.client("ssm", endpoint_url=server.url, region_name="us-east-1",
                       aws_access_key_id=key, aws_secret_access_key=secret,
                       verify=str(files.ca))
    assert ssm.describe_sessions(State="Active")["Sessions"] == []
    ctx = ssl.create_default_context(cafile=str(files.ca))
    with socket.create_connection(("127.0.0.1", server.port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_server_process(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "proc"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen([sys.executable, "-m", "portless", "server", "--listen",
                             f"127.0.0.1:{port}", "--data-dir", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.decode())
            if "listening on" in lines[-1]:
                break
        text = "".join(lines)
        assert f"portless server listening on http://127.0.0.1:{port}" in text
        exports = dict(re.findall(r"export (AWS_[A-Z_]+)=(\S+)", text))
        assert exports == {"AWS_SHARED_CREDENTIALS_FILE": str(data.resolve() / "credentials"),
                           "AWS_PROFILE": "portless", "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        out = subprocess.run(["aws", "ssm", "describe-sessions", "--state", "History"],
                             env={**env, **exports}, capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr.decode()
        assert b'"Sessions": []' in out.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
    assert rc == 0


def test_admin_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert admin_main(["credentials", "--data-dir", str(tmp_path)]) == 1
    (tmp_path / "credentials").write_text("[portless]\n")
    assert admin_main(["credentials", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "credentials")
