"""`portless agent run` as a real process: it serves sessions and listens on nothing."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from portless.agent.registration import register
from portless.agent.state import StateDir
from tests.agent import documents
from tests.agent.relay import ACTIVATION_CODE, ACTIVATION_ID, REGION, LoopbackServer
from tests.procnet import listening_inodes, socket_inodes


async def test_agent_process_serves_a_shell_and_never_listens(server: LoopbackServer,
                                                              tmp_path: Path) -> None:
    state = tmp_path / "state"
    reg = await register(StateDir(state), endpoint=server.url, activation_id=ACTIVATION_ID,
                         activation_code=ACTIVATION_CODE, region=REGION)
    log = (tmp_path / "agent.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "portless", "agent", "run", "--state-dir", str(state),
        stdout=asyncio.subprocess.DEVNULL, stderr=log)
    try:
        await asyncio.wait_for(server.control_connected.wait(), 20)
        assert server.control_opens[0].token
        client = await server.start_session(documents.shell())
        await client.type("echo from-the-process-$((20+22))\r")
        await client.expect(r"from-the-process-42")

        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "portless", "agent", "run", "--state-dir", str(state),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(second.communicate(), 20)
        assert second.returncode == 1
        assert b"another portless agent is running" in err

        mine = socket_inodes(proc.pid)
        assert mine, "the agent holds its outbound connections"
        assert not mine & listening_inodes()

        await client.type("exit\r")
        done = await server.completion(client.side.session_id)
        assert done.final_status == "Success" and done.instance_id == reg.instance_id
        await client.stop()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 15)
        log.close()
    assert code == 0, (tmp_path / "agent.log").read_text()
