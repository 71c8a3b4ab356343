"""State survives a restart: administrator, account id, nodes, credentials, session history."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from portless.protocol.message import MessageType
from portless.protocol.payloads import ChannelClosed
from tests.server.fakes import Node, client_connect, out_msg, recv_frame, recv_until
from tests.server.test_relay import wait_connected


async def test_restart_keeps_state(make_server: Any, tmp_path: Path) -> None:
    data = tmp_path / "persist"
    first = make_server(data)
    creds_text = (data / "credentials").read_text()
    account = first.ctx.account_id
    async with aiohttp.ClientSession() as http:
        node = await Node.register(http, first.url, first.ssm())
        first.ssm().add_tags_to_resource(ResourceType="ManagedInstance",
                                         ResourceId=node.instance_id,
                                         Tags=[{"Key": "role", "Value": "db"}])
        await node.update_info()
        control = await node.open_control()
        await wait_connected(first, node.instance_id)
        ssm = first.ssm()
        done = await asyncio.to_thread(ssm.start_session, Target=node.instance_id)
        await recv_until(control, MessageType.INTERACTIVE_SHELL)
        await asyncio.to_thread(ssm.terminate_session, SessionId=done["SessionId"])
        live = await asyncio.to_thread(ssm.start_session, Target=node.instance_id)
        agent = await node.open_data(live["SessionId"])
        client = await client_connect(http, live["StreamUrl"], live["TokenValue"])
        m = out_msg(0, b"hi").encode()
        await agent.send_bytes(m)
        assert await recv_frame(client) == m

        # Stopping the server ends the live session cleanly for the client.
        await asyncio.to_thread(first.stop)
        closed = await recv_until(client, MessageType.CHANNEL_CLOSED)
        assert "shutting down" in ChannelClosed.from_json(closed.payload).output

        second = make_server(data)
        assert (data / "credentials").read_text() == creds_text
        assert second.ctx.account_id == account
        ssm = second.ssm()
        info = ssm.describe_instance_information()["InstanceInformationList"]
        assert [i["InstanceId"] for i in info] == [node.instance_id]
        assert info[0]["PingStatus"] == "ConnectionLost"
        assert info[0]["AgentVersion"] == "3.3.0.0"
        tags = ssm.list_tags_for_resource(ResourceType="ManagedInstance",
                                          ResourceId=node.instance_id)["TagList"]
        assert tags == [{"Key": "role", "Value": "db"}]
        history = ssm.describe_sessions(State="History")["Sessions"]
        assert {s["SessionId"] for s in history} == {done["SessionId"], live["SessionId"]}
        assert ssm.describe_sessions(State="Active")["Sessions"] == []
        # The node's issued credentials are still good, and it comes back Online.
        node.base_url = second.url
        status, _ = await node.update_info()
        assert status == 200
        control2 = await node.open_control()
        await wait_connected(second, node.instance_id)
        await control2.close()
