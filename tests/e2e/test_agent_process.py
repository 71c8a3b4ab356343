"""The agent dials out and listens on nothing, after real sessions through the real server."""

from __future__ import annotations

import pytest

from tests.e2e.harness import Agent
from tests.procnet import listening_inodes, socket_inodes

pytestmark = pytest.mark.e2e


def test_agent_has_no_listening_socket(node: Agent) -> None:
    assert node.proc is not None
    mine = socket_inodes(node.proc.pid)
    assert mine, "the agent should hold its outbound connections"
    assert not mine & listening_inodes()
