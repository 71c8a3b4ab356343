"""Data-channel life: reconnect with the same sequence numbers, pause, handshake timeout."""

from __future__ import annotations

import asyncio
import time

from portless.agent.datachannel import (
    FAST_PATH_OFFER,
    HANDSHAKE_TIMEOUT_TEXT,
    DataChannel,
    DataChannelTiming,
)
from portless.agent.runtime import Agent
from portless.agent.sessions.document import resolve_task
from portless.protocol.message import Message, MessageType
from portless.protocol.payloads import AgentTaskPayload, InteractiveShell
from tests.agent import documents
from tests.agent.relay import LoopbackServer


async def test_reconnect_keeps_sequence_numbers_and_loses_nothing(
        server: LoopbackServer, agent: Agent) -> None:
    client = await server.start_session(documents.shell())
    await client.type("echo before-$((1+1))\r")
    await client.expect(r"before-2")
    seqs_before = [m.sequence_number for m in client.messages
                   if m.message_type == MessageType.OUTPUT_STREAM_DATA]

    await client.side.drop()
    await client.type("echo during-$((2+2))\r")          # sent while the agent is away
    await client.wait_for(lambda: client.side.connections == 2, what="agent reconnect")
    await client.expect(r"during-4")
    await client.type("echo after-$((3+3))\r")
    await client.expect(r"after-6")

    assert len(client.side.opens) == 2
    assert client.side.opens[0].token != client.side.opens[1].token
    assert client.states.count("Connected") == 1       # not repeated on reconnect
    seqs = sorted({m.sequence_number for m in client.messages
                   if m.message_type == MessageType.OUTPUT_STREAM_DATA})
    assert seqs == list(range(len(seqs))) and len(seqs) > len(set(seqs_before))
    await client.type("exit\r")
    assert (await server.completion(client.side.session_id)).final_status == "Success"
    await client.stop()


async def test_terminated_session_stops_reconnecting(server: LoopbackServer,
                                                     agent: Agent) -> None:
    client = await server.start_session(documents.shell())
    sid = client.side.session_id
    server.terminated.add(sid)
    started = time.monotonic()
    await client.side.drop()
    done = await server.completion(sid)
    assert done.final_status == "Failed"
    assert "Session is already terminated" in done.output
    assert time.monotonic() - started < 3
    await client.stop()


async def test_pause_and_start_publication(server: LoopbackServer, agent: Agent) -> None:
    client = await server.start_session(documents.shell(), fast_path=FAST_PATH_OFFER)
    await client.type("sleep 0.3; echo later-$((1+1))\r")
    await client.wait_for(lambda: b"echo later" in client.output, what="echo of the command")
    # Any ack or input cancels a pause (agent spec §11.3): pause only once all is acked.
    channel = agent.sessions[client.side.session_id]
    await client.wait_for(lambda: channel.stream.unacked == 0, what="output acked")
    await client.side.send(Message(MessageType.PAUSE_PUBLICATION, payload=b"{}").encode())
    await asyncio.sleep(1.0)
    assert b"later-2" not in client.output
    await client.side.send(Message(MessageType.START_PUBLICATION, payload=b"{}").encode())
    await client.expect(r"later-2")
    await client.type("exit\r")
    await server.completion(client.side.session_id)
    await client.stop()


async def test_handshake_timeout_fails_the_session(server: LoopbackServer,
                                                   agent: Agent) -> None:
    assert agent.api is not None
    spec = resolve_task(AgentTaskPayload("lonely-0123456789abcdef", "SSM-SessionManagerRunShell",
                                         documents.shell()["content"]))
    channel = DataChannel(agent.api, agent.instance_id, spec,
                          timing=DataChannelTiming(handshake_timeout=0.5))
    result = await asyncio.wait_for(channel.run(), 10)
    assert result.status == "Failed"
    assert result.output == HANDSHAKE_TIMEOUT_TEXT
    side = server.data[spec.session_id]
    assert side.opens and side.opens[0].client_instance_id == agent.instance_id


async def test_malformed_task_is_reported_failed(server: LoopbackServer, agent: Agent) -> None:
    doc = documents.shell()
    doc["content"]["schemaVersion"] = "2.2"
    task = AgentTaskPayload("bad-0123456789abcdef0", "X", doc["content"])
    await server.send_control(InteractiveShell(task).to_message())
    done = await server.completion(task.session_id)
    assert done.final_status == "Failed"
    assert "schema version" in done.output
    assert task.session_id not in server.data
