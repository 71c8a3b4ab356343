"""Session-wide real processes: one server, one registered agent, one sshd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Agent, Server, Sshd, free_port, start_node


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("server"), free_port())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def node(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    agent = start_node(server, tmp_path_factory.mktemp("agent"))
    yield agent
    agent.stop()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    daemon = Sshd(tmp_path_factory.mktemp("sshd"), free_port())
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
