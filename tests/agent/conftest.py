"""Fixtures: a loopback server and an in-process agent registered with it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from portless.agent.control import ControlTiming
from portless.agent.datachannel import DataChannelTiming
from portless.agent.registration import register
from portless.agent.runtime import Agent, AgentTiming
from portless.agent.state import StateDir
from tests.agent.relay import ACTIVATION_CODE, ACTIVATION_ID, REGION, LoopbackServer


@pytest.fixture
async def server() -> AsyncIterator[LoopbackServer]:
    srv = LoopbackServer()
    await srv.start()
    yield srv
    await srv.stop()


def fast_timing() -> AgentTiming:
    return AgentTiming(
        associations_first=0.2,
        control=ControlTiming(first_delay=(0.05, 0.1), break_pause=0.1,
                              complete_interval=0.3),
        data=DataChannelTiming(first_delay=(0.02, 0.05), handshake_timeout=5.0))


@pytest.fixture
async def agent(server: LoopbackServer, tmp_path: Path) -> AsyncIterator[Agent]:
    state = StateDir(tmp_path / "state")
    reg = await register(state, endpoint=server.url, activation_id=ACTIVATION_ID,
                         activation_code=ACTIVATION_CODE, region=REGION)
    agent = Agent(state, reg, timing=fast_timing())
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.wait_for(server.control_connected.wait(), 10)
    yield agent
    stop.set()
    await asyncio.wait_for(task, 15)


@pytest.fixture
def server_url() -> Iterator[str]:
    """A LoopbackServer on its own thread and loop, for tests that call the sync CLI."""
    loop = asyncio.new_event_loop()
    srv = LoopbackServer()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(srv.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    yield srv.url
    asyncio.run_coroutine_threadsafe(srv.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
