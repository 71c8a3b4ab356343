"""The agent dials out and listens on nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.harness import Agent

pytestmark = pytest.mark.e2e


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def listening_inodes() -> set[str]:
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":          # TCP_LISTEN
                found.add(fields[9])
    return found


def test_agent_has_no_listening_socket(node: Agent) -> None:
    assert node.proc is not None
    mine = socket_inodes(node.proc.pid)
    assert mine, "the agent should hold its outbound connections"
    assert not mine & listening_inodes()
