"""Sessions end to end through the relay, with test peers playing agent and client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError

from portless.protocol.message import MessageType, PayloadType, decode
from portless.protocol.payloads import (
    AgentSessionState,
    AgentTaskAcknowledge,
    ChannelClosed,
    TerminalSize,
    encode_flag,
)
from tests.server.conftest import ServerThread
from tests.server.fakes import (
    Node,
    ack_for,
    client_connect,
    expect_closed,
    in_msg,
    out_msg,
    raw_content,
    recv_frame,
    recv_message,
    recv_until,
)

SID_RE = re.compile(r"^admin-[0-9a-f]{17}$")


@dataclass
class Env:
    server: ServerThread
    http: aiohttp.ClientSession
    node: Node
    control: aiohttp.ClientWebSocketResponse

    async def ssm(self, method: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.server.ssm(), method), **kwargs)

    async def start(self, **kwargs: Any) -> tuple[dict[str, Any], Any]:
        """StartSession; returns the response and the interactive_shell message."""
        out = await self.ssm("start_session", Target=self.node.instance_id, **kwargs)
        shell = await recv_until(self.control, MessageType.INTERACTIVE_SHELL)
        return out, shell

    async def connected_session(self, **kwargs: Any) -> tuple[
            str, aiohttp.ClientWebSocketResponse, aiohttp.ClientWebSocketResponse, str]:
        out, _ = await self.start(**kwargs)
        sid = out["SessionId"]
        agent = await self.node.open_data(sid)
        # The agent's socket is attached once the server reports the session Connected.
        for _ in range(200):
            found = await self.session(sid)
            if found is not None and found["Status"] == "Connected":
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"{sid} never became Connected")
        client = await client_connect(self.http, out["StreamUrl"], out["TokenValue"])
        return sid, agent, client, out["StreamUrl"]

    async def session(self, sid: str, state: str = "Active") -> dict[str, Any] | None:
        out = await self.ssm("describe_sessions", State=state,
                             Filters=[{"key": "SessionId", "value": sid}])
        sessions = out["Sessions"]
        return sessions[0] if sessions else None


@pytest.fixture
async def env(server: ServerThread) -> AsyncIterator[Env]:
    async with aiohttp.ClientSession() as http:
        node = await Node.register(http, server.url, server.ssm())
        control = await node.open_control()
        await wait_connected(server, node.instance_id)
        yield Env(server, http, node, control)
        await control.close()


async def wait_connected(server: ServerThread, instance_id: str) -> None:
    for _ in range(100):
        status = await asyncio.to_thread(server.ssm().get_connection_status, Target=instance_id)
        if status["Status"] == "connected":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("control channel not connected")


async def wait_status(env: Env, sid: str, state: str, status: str) -> dict[str, Any]:
    for _ in range(100):
        found = await env.session(sid, state)
        if found is not None and found["Status"] == status:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{sid} never reached {state}/{status}")


async def test_shell_session_end_to_end(env: Env) -> None:
    out, shell = await env.start(Reason="debugging")
    sid = out["SessionId"]
    assert SID_RE.match(sid)
    assert out["StreamUrl"] == (f"ws://127.0.0.1:{env.server.port}/v1/data-channel/{sid}"
                                "?role=publish_subscribe")
    assert 0 < len(out["TokenValue"]) <= 300

    task = raw_content(shell)
    outer = json.loads(shell.payload)
    assert outer["TaskId"] == sid and outer["SchemaVersion"] == 1
    assert task["SessionId"] == sid
    assert task["DocumentName"] == "SSM-SessionManagerRunShell"
    assert task["Parameters"] == {}
    assert task["SessionOwner"].endswith(":user/admin")
    content = task["DocumentContent"]
    assert content["schemaVersion"] == "1.0" and content["sessionType"] == "Standard_Stream"
    inputs = content["inputs"]
    assert inputs["kmsKeyId"] == "" and inputs["s3BucketName"] == ""
    assert inputs["cloudWatchStreamingEnabled"] is False
    assert isinstance(inputs["runAsEnabled"], bool)
    assert isinstance(inputs["shellProfile"], dict)
    assert inputs["idleSessionTimeout"] == "20"

    active = await env.session(sid)
    assert active is not None and active["Status"] == "Connecting"
    assert active["Reason"] == "debugging" and active["Target"] == env.node.instance_id

    # The agent connects first and its output waits for the client.
    agent = await env.node.open_data(sid)
    prompt = out_msg(0, b"$ ").encode()
    await agent.send_bytes(prompt)
    client = await client_connect(env.http, out["StreamUrl"], out["TokenValue"])
    assert await recv_frame(client) == prompt           # same bytes, no agent_session_state
    ack = ack_for(decode(prompt)).encode()
    await client.send_bytes(ack)
    assert await recv_frame(agent) == ack
    await wait_status(env, sid, "Active", "Connected")

    size = in_msg(0, TerminalSize(120, 40).to_json(), PayloadType.SIZE).encode()
    keys = in_msg(1, b"ls\r").encode()
    await client.send_bytes(size)
    await client.send_bytes(keys)
    assert await recv_frame(agent) == size
    assert await recv_frame(agent) == keys

    big = out_msg(1, bytes(range(256)) * 4096).encode()     # 1 MiB payload
    await agent.send_bytes(big)
    assert await recv_frame(client) == big
    utf8 = out_msg(2, "héllo wörld\r\n".encode()).encode()
    await agent.send_bytes(utf8)
    assert await recv_frame(client) == utf8

    # Normal end: Terminating, close, agent_task_complete on the control channel.
    await agent.send_bytes(AgentSessionState(sid, "Terminating").to_message().encode())
    await agent.close()
    done = await env.node.task_complete(env.control, sid)
    ack_msg = await recv_until(env.control, MessageType.AGENT_TASK_ACKNOWLEDGE)
    assert AgentTaskAcknowledge.from_json(ack_msg.payload).message_id == done.id_str
    closed = await recv_message(client)
    assert closed.message_type == MessageType.CHANNEL_CLOSED
    cc = ChannelClosed.from_json(closed.payload)
    assert cc.session_id == sid and cc.output == ""
    code, _ = await expect_closed(client)
    assert code == 1000
    # A repeated agent_task_complete is acknowledged and changes nothing.
    await env.node.task_complete(env.control, sid)
    await recv_until(env.control, MessageType.AGENT_TASK_ACKNOWLEDGE)

    history = await wait_status(env, sid, "History", "Terminated")
    assert history["EndDate"] >= history["StartDate"]
    assert await env.session(sid, "Active") is None

    status, text = await env.node.data_token(sid)
    assert status != 201 and "Session is already terminated" in text
    with pytest.raises(ClientError) as exc:
        await env.ssm("resume_session", SessionId=sid)
    assert exc.value.response["Error"]["Code"] == "DoesNotExistException"

    cast = env.server.config.data_dir / "recordings" / f"{sid}.cast"
    for _ in range(50):
        if cast.exists() and len(cast.read_text().splitlines()) >= 3:
            break
        await asyncio.sleep(0.05)
    lines = cast.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and (header["width"], header["height"]) == (120, 40)
    events = [json.loads(line) for line in lines[1:]]
    text_out = "".join(e[2] for e in events if e[1] == "o")
    assert text_out.startswith("$ ") and "héllo wörld\r\n" in text_out
    assert all(isinstance(e[0], float | int) for e in events)


async def test_port_session_parameters_are_flattened(env: Env) -> None:
    _out, shell = await env.start(DocumentName="AWS-StartPortForwardingSession",
                                 Parameters={"portNumber": ["8080"]})
    task = raw_content(shell)
    assert task["DocumentName"] == "AWS-StartPortForwardingSession"
    assert task["Parameters"] == {"portNumber": "8080", "localPortNumber": "0"}
    content = task["DocumentContent"]
    assert content["sessionType"] == "Port"
    assert content["properties"]["portNumber"] == "{{ portNumber }}"
    assert content["properties"]["type"] == "LocalPortForwarding"
    _, shell = await env.start(DocumentName="AWS-StartSSHSession",
                               Parameters={"portNumber": ["22"]})
    assert raw_content(shell)["Parameters"] == {"portNumber": "22"}
    for bad in ({"portNumber": ["99999"]}, {"colour": ["blue"]}):
        with pytest.raises(ClientError) as exc:
            await env.ssm("start_session", Target=env.node.instance_id,
                          DocumentName="AWS-StartSSHSession", Parameters=bad)
        assert exc.value.response["Error"]["Code"] == "InvalidParameters"
    with pytest.raises(ClientError) as exc:
        await env.ssm("start_session", Target=env.node.instance_id,
                      DocumentName="AWS-StartPortForwardingSessionToRemoteHost",
                      Parameters={"portNumber": ["80"]})
    assert exc.value.response["Error"]["Code"] == "InvalidParameters"
    _, shell = await env.start(DocumentName="AWS-StartInteractiveCommand",
                               Parameters={"command": ["top -b -n 1"]})
    task = raw_content(shell)
    assert task["Parameters"] == {"command": "top -b -n 1"}
    assert task["DocumentContent"]["sessionType"] == "InteractiveCommands"


async def test_preferences_document_inputs(env: Env) -> None:
    prefs = {"schemaVersion": "1.0", "description": "prefs", "sessionType": "Standard_Stream",
             "inputs": {"s3BucketName": "my-bucket", "s3KeyPrefix": "logs",
                        "s3EncryptionEnabled": True, "cloudWatchLogGroupName": "",
                        "runAsEnabled": "true", "runAsDefaultUser": "ops",
                        "kmsKeyId": "arn:aws:kms:us-east-1:111122223333:key/x",
                        "shellProfile": {"windows": "", "linux": "exec /bin/bash\ncd ~"},
                        "idleSessionTimeout": "20"}}
    await env.ssm("create_document", Name="SSM-SessionManagerRunShell", DocumentType="Session",
                  DocumentFormat="JSON", Content=json.dumps(prefs))
    _, shell = await env.start()
    inputs = raw_content(shell)["DocumentContent"]["inputs"]
    assert inputs["runAsEnabled"] is True and inputs["runAsDefaultUser"] == "ops"
    assert inputs["s3BucketName"] == "" and inputs["kmsKeyId"] == ""
    assert inputs["shellProfile"] == {"windows": "", "linux": "exec /bin/bash\ncd ~"}
    assert inputs["cloudWatchStreamingEnabled"] is False
    # The same preferences apply to port sessions (timeouts are the server's).
    _, shell = await env.start(DocumentName="AWS-StartSSHSession")
    assert raw_content(shell)["DocumentContent"]["inputs"]["idleSessionTimeout"] == "20"


async def test_resume_and_reconnect_lose_nothing(env: Env) -> None:
    sid, agent, client, url = await env.connected_session()
    m0 = out_msg(0, b"one").encode()
    await agent.send_bytes(m0)
    assert await recv_frame(client) == m0

    # The client drops; the agent's output waits for it.
    await client.close()
    await asyncio.sleep(0.1)
    m1, m2 = out_msg(1, b"two").encode(), out_msg(2, b"three").encode()
    await agent.send_bytes(m1)
    await agent.send_bytes(m2)
    resumed = await env.ssm("resume_session", SessionId=sid)
    assert resumed["SessionId"] == sid and resumed["StreamUrl"] == url
    client = await client_connect(env.http, url, resumed["TokenValue"])
    assert await recv_frame(client) == m1
    assert await recv_frame(client) == m2

    # The agent drops; the client's input waits for the agent's new data channel.
    await agent.close()
    await asyncio.sleep(0.1)
    i0, i1 = in_msg(0, b"a").encode(), in_msg(1, b"b").encode()
    await client.send_bytes(i0)
    await client.send_bytes(i1)
    agent = await env.node.open_data(sid, send_state=False)
    assert await recv_frame(agent) == i0
    assert await recv_frame(agent) == i1
    m3 = out_msg(3, b"four").encode()
    await agent.send_bytes(m3)
    assert await recv_frame(client) == m3

    # A used token cannot open the channel again.
    first_token_reused = await client_connect(env.http, url, resumed["TokenValue"])
    code, reason = await expect_closed(first_token_reused)
    assert code == 1008 and "token" in reason
    # …and the live client was not disturbed.
    m4 = out_msg(4, b"five").encode()
    await agent.send_bytes(m4)
    assert await recv_frame(client) == m4


async def test_terminate_session_api(env: Env) -> None:
    sid, agent, client, _ = await env.connected_session()
    out = await env.ssm("terminate_session", SessionId=sid)
    assert out["SessionId"] == sid
    closed = await recv_message(client)
    assert closed.message_type == MessageType.CHANNEL_CLOSED
    assert ChannelClosed.from_json(closed.payload).session_id == sid
    cancel = await recv_until(env.control, MessageType.CHANNEL_CLOSED)
    raw = json.loads(cancel.payload)
    assert raw["SessionId"] == sid and isinstance(raw["CreatedDate"], str)
    assert raw["SchemaVersion"] == 1 and raw["MessageType"] == "channel_closed"
    await wait_status(env, sid, "History", "Terminated")
    with pytest.raises(ClientError) as exc:
        await env.ssm("resume_session", SessionId=sid)
    assert exc.value.response["Error"]["Code"] == "DoesNotExistException"
    assert (await env.ssm("terminate_session", SessionId=sid))["SessionId"] == sid
    await env.node.task_complete(env.control, sid)
    await recv_until(env.control, MessageType.AGENT_TASK_ACKNOWLEDGE)
    assert (await env.session(sid, "History") or {})["Status"] == "Terminated"
    await agent.close()


async def test_terminate_flag_from_client(env: Env) -> None:
    sid, agent, client, _ = await env.connected_session(DocumentName="AWS-StartSSHSession")
    flag = in_msg(3, encode_flag(2), PayloadType.FLAG).encode()
    await client.send_bytes(flag)
    assert await recv_frame(agent) == flag
    cancel = await recv_until(env.control, MessageType.CHANNEL_CLOSED)
    assert json.loads(cancel.payload)["SessionId"] == sid
    closed = await recv_until(client, MessageType.CHANNEL_CLOSED)
    assert ChannelClosed.from_json(closed.payload).session_id == sid
    await wait_status(env, sid, "History", "Terminated")


async def test_failed_session_output_reaches_client(env: Env) -> None:
    sid, agent, client, _ = await env.connected_session(DocumentName="AWS-StartSSHSession")
    await agent.send_bytes(out_msg(0, b"data").encode())
    await recv_frame(client)
    await agent.close()
    await env.node.task_complete(env.control, sid, "Failed",
                                 "Unable to connect to specified port: refused")
    closed = await recv_until(client, MessageType.CHANNEL_CLOSED)
    assert ChannelClosed.from_json(closed.payload).output == \
        "Unable to connect to specified port: refused"
    found = await wait_status(env, sid, "History", "Failed")
    assert "refused" in found.get("Details", "")


async def test_malformed_frame_closes_only_that_channel(env: Env) -> None:
    sid_a, agent_a, client_a, _ = await env.connected_session()
    _sid_b, agent_b, client_b, _ = await env.connected_session()
    good = in_msg(0, b"x").encode()
    for bad in (b"short", good[:-1], b"\x00\x00\x00\x70" + good[4:]):
        await client_a.send_bytes(bad)
        code, reason = await expect_closed(client_a)
        assert code == 1008 and "malformed" in reason
        resumed = await env.ssm("resume_session", SessionId=sid_a)
        client_a = await client_connect(env.http, f"ws://127.0.0.1:{env.server.port}"
                                        f"/v1/data-channel/{sid_a}?role=publish_subscribe",
                                        resumed["TokenValue"])
    await agent_a.send_bytes(b"\x00" * 200)
    code, _ = await expect_closed(agent_a)
    assert code == 1008
    # The other session is untouched.
    await client_b.send_bytes(good)
    assert await recv_frame(agent_b) == good
    m = out_msg(0, b"still here").encode()
    await agent_b.send_bytes(m)
    assert await recv_frame(client_b) == m


async def test_oversized_message_closes_channel(env: Env) -> None:
    sid, agent, client, url = await env.connected_session()
    with contextlib.suppress(ConnectionError):
        await client.send_bytes(in_msg(0, b"x" * (5 * 1024 * 1024)).encode())
    code, _ = await expect_closed(client, timeout=10)
    assert code in (1009, 1006)
    # The session goes on: the client resumes and the agent's output reaches it.
    resumed = await env.ssm("resume_session", SessionId=sid)
    client = await client_connect(env.http, url, resumed["TokenValue"])
    m = out_msg(0, b"agent fine").encode()
    await agent.send_bytes(m)
    assert await recv_frame(client) == m


async def test_agent_reconnect_for_finished_session_is_refused(env: Env) -> None:
    sid, agent, client, _url = await env.connected_session()
    await env.ssm("terminate_session", SessionId=sid)
    status, text = await env.node.data_token(sid)
    assert status == 400 and "Session is already terminated" in text
    await agent.close()
    await client.close()


async def test_idle_timeout(make_server: Any) -> None:
    # A "minute" of 2 s: long enough for a loaded machine to connect both sides first.
    server = make_server(minute_seconds=2.0)
    async with aiohttp.ClientSession() as http:
        node = await Node.register(http, server.url, server.ssm())
        control = await node.open_control()
        await wait_connected(server, node.instance_id)
        env = Env(server, http, node, control)
        prefs = {"schemaVersion": "1.0", "sessionType": "Standard_Stream",
                 "inputs": {"idleSessionTimeout": "1"}}
        await env.ssm("create_document", Name="SSM-SessionManagerRunShell",
                      DocumentType="Session", Content=json.dumps(prefs))
        sid, agent, client, _ = await env.connected_session()
        # Acks are not activity; data is.
        for seq in range(3):
            await asyncio.sleep(0.2)
            await agent.send_bytes(out_msg(seq, b".").encode())
            await recv_frame(client)
        closed = await recv_until(client, MessageType.CHANNEL_CLOSED, timeout=5)
        assert "inactivity" in ChannelClosed.from_json(closed.payload).output
        cancel = await recv_until(control, MessageType.CHANNEL_CLOSED)
        assert json.loads(cancel.payload)["SessionId"] == sid
        await wait_status(env, sid, "History", "Terminated")
        await control.close()


async def test_agent_never_connects(make_server: Any) -> None:
    server = make_server(start_timeout=0.5)
    async with aiohttp.ClientSession() as http:
        node = await Node.register(http, server.url, server.ssm())
        control = await node.open_control()
        await wait_connected(server, node.instance_id)
        env = Env(server, http, node, control)
        out, _ = await env.start()
        client = await client_connect(http, out["StreamUrl"], out["TokenValue"])
        closed = await recv_until(client, MessageType.CHANNEL_CLOSED, timeout=5)
        assert "did not open" in ChannelClosed.from_json(closed.payload).output
        await wait_status(env, out["SessionId"], "History", "Failed")
        await control.close()


async def test_reader_that_stops_is_cut_off(make_server: Any) -> None:
    server = make_server(send_timeout=0.5)
    async with aiohttp.ClientSession() as http:
        node = await Node.register(http, server.url, server.ssm())
        control = await node.open_control()
        await wait_connected(server, node.instance_id)
        env = Env(server, http, node, control)
        sid, agent, _client, _ = await env.connected_session()
        _sid2, agent2, client2, _ = await env.connected_session()
        # The client never reads; the agent keeps sending.
        chunk = b"z" * (1024 * 1024)

        async def flood() -> None:
            for seq in range(64):
                await agent.send_bytes(out_msg(seq, chunk).encode())

        await asyncio.wait_for(flood(), 20)
        # The stalled client is cut off: the server aborted its connection.
        for _ in range(100):
            relay = server.ctx.broker.get(sid)
            if relay is not None and relay.peers[0] is None:
                break
            await asyncio.sleep(0.05)
        relay = server.ctx.broker.get(sid)
        assert relay is not None and relay.peers[0] is None
        # Other sessions go on.
        m = out_msg(0, b"ok").encode()
        await agent2.send_bytes(m)
        assert await recv_frame(client2) == m
        await control.close()


async def test_port_session_byte_counts(env: Env) -> None:
    sid, agent, client, _ = await env.connected_session(DocumentName="AWS-StartSSHSession")
    await client.send_bytes(in_msg(0, b"12345").encode())
    await client.send_bytes(in_msg(0, b"12345").encode())     # a retransmission
    assert len(await recv_frame(agent)) == 125
    await recv_frame(agent)
    await agent.send_bytes(out_msg(0, b"abc").encode())
    await recv_frame(client)
    await agent.close()
    await env.node.task_complete(env.control, sid)
    await recv_until(client, MessageType.CHANNEL_CLOSED)
    await wait_status(env, sid, "History", "Terminated")
    stored = env.server.run(env.server.ctx.store.get_session(sid))
    assert (stored.bytes_in, stored.bytes_out) == (5, 3)
    assert not (env.server.config.data_dir / "recordings" / f"{sid}.cast").exists()


async def test_describe_sessions_filters_and_pages(env: Env) -> None:
    sids = []
    for _ in range(3):
        out, _ = await env.start()
        sids.append(out["SessionId"])
    ssm = env.server.ssm()
    first = await asyncio.to_thread(ssm.describe_sessions, State="Active", MaxResults=2)
    assert len(first["Sessions"]) == 2 and first["NextToken"]
    second = await asyncio.to_thread(ssm.describe_sessions, State="Active", MaxResults=2,
                                     NextToken=first["NextToken"])
    got = [s["SessionId"] for s in first["Sessions"] + second["Sessions"]]
    assert sorted(got) == sorted(sids)
    assert got == sids[::-1]                      # newest first
    assert "NextToken" not in second
    for value in ("admin", env.server.run(env.server.ctx.store.get_user("admin")).arn):
        mine = await asyncio.to_thread(ssm.describe_sessions, State="Active",
                                       Filters=[{"key": "Owner", "value": value}])
        assert len(mine["Sessions"]) == 3
    none = await asyncio.to_thread(ssm.describe_sessions, State="Active",
                                   Filters=[{"key": "Target", "value": "mi-00000000000000000"}])
    assert none["Sessions"] == []
    later = await asyncio.to_thread(ssm.describe_sessions, State="Active",
                                    Filters=[{"key": "InvokedAfter",
                                              "value": "2100-01-01T00:00:00Z"}])
    assert later["Sessions"] == []
    connecting = await asyncio.to_thread(ssm.describe_sessions, State="Active",
                                         Filters=[{"key": "Status", "value": "Connecting"}])
    assert len(connecting["Sessions"]) == 3


async def test_max_session_duration(make_server: Any) -> None:
    # A "minute" of 2 s: long enough for a loaded machine to connect both sides first.
    server = make_server(minute_seconds=2.0)
    async with aiohttp.ClientSession() as http:
        node = await Node.register(http, server.url, server.ssm())
        control = await node.open_control()
        await wait_connected(server, node.instance_id)
        env = Env(server, http, node, control)
        prefs = {"schemaVersion": "1.0", "sessionType": "Standard_Stream",
                 "inputs": {"maxSessionDuration": "1", "idleSessionTimeout": "60"}}
        await env.ssm("create_document", Name="SSM-SessionManagerRunShell",
                      DocumentType="Session", Content=json.dumps(prefs))
        sid, _agent, client, _ = await env.connected_session()
        found = await env.session(sid)
        assert found is not None and found["MaxSessionDuration"] == "1"
        closed = await recv_until(client, MessageType.CHANNEL_CLOSED, timeout=10)
        assert "maximum session duration" in ChannelClosed.from_json(closed.payload).output
        await wait_status(env, sid, "History", "Terminated")
        await control.close()


async def test_expired_token_is_refused(make_server: Any) -> None:
    server = make_server(channel_token_ttl=0.3)
    async with aiohttp.ClientSession() as http:
        node = await Node.register(http, server.url, server.ssm())
        control = await node.open_control()
        await wait_connected(server, node.instance_id)
        env = Env(server, http, node, control)
        out, _ = await env.start()
        await asyncio.sleep(0.5)
        client = await client_connect(http, out["StreamUrl"], out["TokenValue"])
        code, reason = await expect_closed(client)
        assert code == 1008 and "token" in reason
        wrong = await client_connect(http, out["StreamUrl"], "not-a-token")
        code, _ = await expect_closed(wrong)
        assert code == 1008
        await control.close()
