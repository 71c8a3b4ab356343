"""Review fixes: only a node gets (and uses) its channel tokens, dead control channels are
dropped, the token and credential tables are purged, errors after the WebSocket upgrade
close with 1011 and requests signed for another region are refused."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from sqlalchemy import func, select, text

from portless.aws.rsa_signature import sign_rsa
from portless.protocol.message import MessageType
from portless.protocol.payloads import OpenControlChannel
from portless.store import schema
from tests.server.conftest import ServerThread
from tests.server.fakes import (
    JSON11,
    Node,
    client_connect,
    expect_closed,
    ping_status,
    recv_until,
    token_from_xml,
)
from tests.waiting import wait_until

CHANNEL_BODY = {"MessageSchemaVersion": "1.0", "RequestId": "r", "ClientId": ""}




def as_admin(server: ServerThread, http: aiohttp.ClientSession, node: Node) -> Node:
    """A peer signing with the administrator's long-term key (AdministratorAccess)."""
    akid, secret = server.credentials()
    return Node(http, server.url, node.instance_id, node.key, node.fingerprint,
                access_key=akid, secret=secret, token="")


async def denials(server: ServerThread, action: str) -> list[Any]:
    server.run(server.ctx.authorizer.flush())
    events = server.run(server.ctx.store.list_audit_events(limit=1000))
    return [e for e in events if e.action == action and e.decision == "denied"]


# ------------------------------------------------------------------ 1. posing as a node


async def test_a_user_cannot_pose_as_a_node(server: ServerThread) -> None:
    async with aiohttp.ClientSession() as http:
        node = await Node.register(http, server.url, server.ssm())
        control = await node.open_control()
        await wait_until(lambda: _online(server, node.instance_id))
        admin = as_admin(server, http, node)

        status, body = await admin.mgs_post(f"/v1/control-channel/{node.instance_id}",
                                            CHANNEL_BODY)
        assert status == 400 and "<AccessDeniedException>" in body, body
        assert await denials(server, "ssmmessages:CreateControlChannel")

        out = await asyncio.to_thread(server.ssm().start_session, Target=node.instance_id)
        sid = out["SessionId"]
        await recv_until(control, MessageType.INTERACTIVE_SHELL)
        status, body = await admin.data_token(sid)
        assert status == 400 and "<AccessDeniedException>" in body, body
        assert await denials(server, "ssmmessages:CreateDataChannel")
        # Another node is refused too; the session's own node is not.
        other = await Node.register(http, server.url, server.ssm())
        status, body = await other.data_token(sid)
        assert status == 400 and "<AccessDeniedException>" in body, body
        status, body = await node.data_token(sid)
        assert status == 201, body

        # A token the node obtained is not accepted on a WebSocket signed by the admin.
        status, body = await node.mgs_post(f"/v1/control-channel/{node.instance_id}",
                                           CHANNEL_BODY)
        assert status == 201
        ws = await admin.ws_connect(
            f"/v1/control-channel/{node.instance_id}?role=subscribe&stream=input")
        await ws.send_str(OpenControlChannel(token_from_xml(body), "3.3.0.0").to_json())
        code, reason = await expect_closed(ws)
        assert code == 1008 and "node" in reason
        assert await denials(server, "ssmmessages:OpenControlChannel")
        # The first control channel is still the live one.
        assert not control.closed
        await control.close()


async def _online(server: ServerThread, instance_id: str) -> bool:
    return await ping_status(server, instance_id) == "Online"


# ------------------------------------------------------------------ 2. dead control channels


IDLE_TIMEOUT = 0.6


async def test_silent_control_channel_is_dropped(make_server: Any) -> None:
    server = make_server(control_idle_timeout=IDLE_TIMEOUT)
    async with aiohttp.ClientSession() as http:
        live = await Node.register(http, server.url, server.ssm())
        dead = await Node.register(http, server.url, server.ssm())
        # The live node pings (every 0.2 s) and answers pings; the dead one does neither.
        status, body = await live.mgs_post(f"/v1/control-channel/{live.instance_id}",
                                           CHANNEL_BODY)
        assert status == 201
        path = "/v1/control-channel/{}?role=subscribe&stream=input"
        url = (server.url + path.format(live.instance_id)).replace("http", "ws", 1)
        live_ws = await http.ws_connect(url, headers=live._sign("GET", url, {}, b"",
                                                                 "ssmmessages"),
                                        autoping=True, heartbeat=0.2)
        await live_ws.send_str(OpenControlChannel(token_from_xml(body), "3.3.0.0").to_json())
        status, body = await dead.mgs_post(f"/v1/control-channel/{dead.instance_id}",
                                           CHANNEL_BODY)
        assert status == 201
        url = (server.url + path.format(dead.instance_id)).replace("http", "ws", 1)
        dead_ws = await http.ws_connect(url, headers=dead._sign("GET", url, {}, b"",
                                                                 "ssmmessages"),
                                        autoping=False)
        await dead_ws.send_str(OpenControlChannel(token_from_xml(body), "3.3.0.0").to_json())
        await wait_until(lambda: _online(server, dead.instance_id))
        await wait_until(lambda: _online(server, live.instance_id))

        async def lost() -> bool:
            return await ping_status(server, dead.instance_id) == "ConnectionLost"

        await wait_until(lost, timeout=5.0)
        # Another idle timeout later (time itself is the scenario), the pinging node is
        # still Online.
        await asyncio.sleep(IDLE_TIMEOUT)
        assert await ping_status(server, live.instance_id) == "Online"

        async def forgotten() -> bool:
            return server.ctx.control.connections.get(dead.instance_id) is None

        await wait_until(forgotten)
        await live_ws.close()
        await dead_ws.close()


# ------------------------------------------------------------------ 3. purging


async def _count_tokens(server: ServerThread) -> int:
    async def count() -> int:
        async with server.ctx.store.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(
                schema.channel_tokens)) or 0)
    return server.run(count())


async def test_used_tokens_and_expired_credentials_are_purged(make_server: Any) -> None:
    server = make_server(purge_interval=0.1)
    store = server.ctx.store
    async with aiohttp.ClientSession() as http:
        node = await Node.register(http, server.url, server.ssm())
        expired = server.run(store.issue_credential(principal_type="instance",
                                                    principal_id=node.instance_id, ttl=-1))
        control = await node.open_control()     # issues and spends a control token
        await wait_until(lambda: _online(server, node.instance_id))

        async def purged() -> bool:
            gone = server.run(store.get_credential(expired.access_key_id,
                                                   include_expired=True)) is None
            return gone and await _count_tokens(server) == 0

        await wait_until(purged)
        # The node's live credentials are kept.
        status, _ = await node.update_info()
        assert status == 200
        await control.close()


# ------------------------------------------------------------------ 4. errors after upgrade


async def test_error_after_upgrade_closes_with_1011(server: ServerThread) -> None:
    async def break_tokens() -> None:
        async with server.ctx.store.engine.begin() as conn:
            await conn.execute(text("DROP TABLE channel_tokens"))

    server.run(break_tokens())
    async with aiohttp.ClientSession() as http:
        url = f"ws://127.0.0.1:{server.port}/v1/data-channel/admin-0123456789abcdef0"
        ws = await client_connect(http, url, "some-token")
        code, _ = await expect_closed(ws)
        assert code == 1011


# ------------------------------------------------------------------ 5. region


async def test_requests_signed_for_another_region_are_refused(server: ServerThread) -> None:
    akid, secret = server.credentials()
    ssm = boto3.client("ssm", endpoint_url=server.url, region_name="eu-west-1",
                       aws_access_key_id=akid, aws_secret_access_key=secret,
                       config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as exc:
        await asyncio.to_thread(ssm.describe_instance_information)
    assert exc.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert "region" in exc.value.response["Error"]["Message"]

    async with aiohttp.ClientSession() as http:
        node = await Node.register(http, server.url, server.ssm())
        payload = json.dumps({"Fingerprint": node.fingerprint}).encode()
        headers = {"Content-Type": JSON11,
                   "X-Amz-Target": "AmazonSSM.RequestManagedInstanceRoleToken"}
        headers.update(sign_rsa("POST", server.url + "/", headers, payload, node.instance_id,
                                node.key, "eu-west-1", datetime.now(UTC)))
        async with http.post(server.url + "/", data=payload, headers=headers) as resp:
            out = await resp.json(content_type=None)
        assert resp.status == 400 and out["__type"] == "InvalidSignatureException", out
        await node.refresh_credentials()    # signed for the server's region: fine


