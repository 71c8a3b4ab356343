"""Registration, the RSA-signed credential request, health calls and the CLI around them."""

from __future__ import annotations

import base64
import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from portless.agent.api import AgentApi, http_session
from portless.agent.credentials import CredentialManager, parse_expiration
from portless.agent.main import main
from portless.agent.registration import register
from portless.agent.runtime import Agent
from portless.agent.state import StateDir
from portless.aws.rsa_signature import load_private_key_b64, load_public_key_b64
from tests.agent.relay import ACTIVATION_CODE, ACTIVATION_ID, REGION, LoopbackServer
from tests.waiting import wait_until


async def test_register_stores_a_fresh_key_and_requests_signed_credentials(
        server: LoopbackServer, tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    reg = await register(state, endpoint=server.url, activation_id=ACTIVATION_ID,
                         activation_code=ACTIVATION_CODE, region=REGION)
    call = server.calls[0]
    assert call.target == "RegisterManagedInstance"
    assert "Authorization" not in call.headers and "X-Amz-Date" not in call.headers
    assert call.headers["Content-Type"] == "application/x-amz-json-1.1"
    assert list(call.body) == ["ActivationCode", "ActivationId", "Fingerprint", "PublicKey",
                               "PublicKeyType"]
    assert call.body["PublicKeyType"] == "Rsa"
    assert len(call.body["PublicKey"]) == 392
    public = load_public_key_b64(call.body["PublicKey"])
    assert public.key_size == 2048 and public.public_numbers().e == 65537
    assert uuid.UUID(call.body["Fingerprint"]).version == 4
    assert reg.instance_id in server.public_keys

    # Stored: private key matching the registered public key; 0700 directory, 0600 files.
    key = load_private_key_b64(reg.private_key)
    assert key.public_key().public_numbers() == public.public_numbers()
    assert stat.S_IMODE(os.stat(state.path).st_mode) == 0o700
    for path in state.path.iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert state.load_registration() == reg

    async with http_session() as http:
        api = AgentApi(http, server.url, REGION)
        creds = CredentialManager(api, state, reg)
        api.credentials = creds.current
        got = await creds.refresh()
        token_call = server.calls[-1]
        assert token_call.target == "RequestManagedInstanceRoleToken"
        assert token_call.chunked and "Content-Length" not in token_call.headers
        auth = token_call.headers["Authorization"]
        assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={reg.instance_id}/")
        assert "SignedHeaders=content-type;host;x-amz-date;x-amz-target," in auth
        signature = auth.rsplit("Signature=", 1)[1]
        assert len(base64.b64decode(signature, validate=True)) == 256   # RSA-2048, base64
        assert "X-Amz-Content-Sha256" in token_call.headers
        assert token_call.body == {"Fingerprint": reg.fingerprint}
        assert got.access_key_id in server.secrets
        assert 1700 < creds.next_refresh_in() <= 1800          # half of the hour

        # Every later call is plain SigV4 with the issued credentials (verified by the server).
        await api.update_instance_information({"AgentName": "amazon-ssm-agent",
                                               "InstanceId": reg.instance_id})
        signed = server.calls[-1].headers
        assert "SignedHeaders=content-length;content-type;host;x-amz-date;" \
               "x-amz-security-token;x-amz-target," in signed["Authorization"]
        assert signed["X-Amz-Security-Token"] == f"tok-{got.access_key_id}"
    assert not server.errors


async def test_agent_comes_online(server: LoopbackServer, agent: Agent) -> None:
    # The full report may still be on its way.
    await wait_until(lambda: [c.target for c in server.calls].count(
        "UpdateInstanceInformation") >= 2, timeout=10, what="two UpdateInstanceInformation")
    ops = [c.target for c in server.calls]
    assert ops[:4] == ["RegisterManagedInstance", "RequestManagedInstanceRoleToken",
                       "UpdateInstanceInformation", "UpdateInstanceInformation"]
    minimal = server.calls[2].body
    assert minimal == {"AgentName": "amazon-ssm-agent", "AgentVersion": "3.3.4000.0",
                       "InstanceId": agent.instance_id, "PlatformType": "Linux"}
    full = server.calls[3].body
    assert full["AgentStatus"] == "Active" and full["ComputerName"] and full["IPAddress"]
    assert full["PlatformName"] and full["PlatformType"] == "Linux"
    opened = server.control_opens[0]
    assert opened.agent_version == "3.3.4000.0" and opened.platform_type == "linux"
    headers = server.control_headers[0]
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in headers["Authorization"]
    assert "/ssmmessages/aws4_request" in headers["Authorization"]
    await wait_until(lambda: "ListInstanceAssociations" in [c.target for c in server.calls],
                     what="ListInstanceAssociations")
    assert not server.errors


async def test_control_channel_reconnects_with_a_new_token(server: LoopbackServer,
                                                           agent: Agent) -> None:
    first = server.control_ws
    assert first is not None
    await first.close()
    await wait_until(lambda: len(server.control_opens) == 2
                     and server.control_connected.is_set(), what="a second control channel")
    assert len(server.control_opens) == 2
    assert server.control_opens[0].token != server.control_opens[1].token


async def test_task_complete_is_resent_until_acknowledged(server: LoopbackServer,
                                                          agent: Agent) -> None:
    assert agent.control is not None
    server.ack_completions = False
    acked = await agent.control.task_complete("sess-1", "Failed", "boom")
    assert not acked
    sent = server.completions["sess-1"]
    assert [c.retry_number for c in sent] == [1, 2, 3]
    assert all(c.output == "boom" and c.final_status == "Failed" for c in sent)
    server.ack_completions = True
    assert await agent.control.task_complete("sess-2", "Success")
    assert len(server.completions["sess-2"]) == 1


def test_bad_activation_prints_the_server_error(server_url: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["register", "--endpoint", server_url, "--id", ACTIVATION_ID,
                 "--code", "W" * 20, "--region", REGION, "--state-dir", str(tmp_path / "s")])
    assert code == 1
    err = capsys.readouterr().err
    assert "InvalidActivation" in err and "Activation has expired or is wrong." in err
    assert main(["status", "--state-dir", str(tmp_path / "s")]) == 1


def test_register_cli_status_and_force(server_url: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    args = ["register", "--endpoint", server_url, "--id", ACTIVATION_ID, "--code",
            ACTIVATION_CODE, "--region", REGION, "--state-dir", str(tmp_path / "s")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Managed instance-id: mi-" in out
    instance = out.rsplit("mi-", 1)[1].strip()
    assert main(["status", "--state-dir", str(tmp_path / "s")]) == 0
    status = capsys.readouterr().out
    assert f"mi-{instance}" in status and server_url in status
    assert main(args) == 1
    assert "--force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    data = json.loads((tmp_path / "s" / "registration.json").read_text())
    assert data["instance_id"] != f"mi-{instance}"


def test_unreachable_endpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["register", "--endpoint", "http://127.0.0.1:9", "--id", ACTIVATION_ID,
                 "--code", ACTIVATION_CODE, "--region", REGION,
                 "--state-dir", str(tmp_path / "s")])
    assert code == 1
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err
    assert not (tmp_path / "s" / "registration.json").exists()


def test_parse_expiration() -> None:
    assert parse_expiration(1795318657.9) == 1795318657.9
    assert parse_expiration("2026-11-22T03:37:37Z") == parse_expiration(
        "2026-11-22T03:37:37+00:00")
    with pytest.raises(ValueError):
        parse_expiration(None)
