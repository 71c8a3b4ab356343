"""A real portless server in a background thread (its own event loop), per test.

Tests talk to it only over the network: boto3 for the SSM API (real SigV4),
aiohttp WebSockets for the channels (see fakes.py).
"""

from __future__ import annotations

import asyncio
import configparser
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from botocore.config import Config

from portless.server.app import RunningServer, start_server
from portless.server.config import ServerConfig

T = TypeVar("T")
REGION = "us-east-1"


@dataclass
class ServerThread:
    config: ServerConfig
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    thread: threading.Thread | None = None
    running: RunningServer | None = None

    def start(self) -> ServerThread:
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="portless-server")
        self.thread.start()
        self.running = self.run(start_server(self.config))
        return self

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.running is not None:
            self.run(self.running.stop())
            self.running = None
        if self.thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.thread = None
            self.loop.close()

    @property
    def url(self) -> str:
        assert self.running is not None
        return self.running.url

    @property
    def port(self) -> int:
        assert self.running is not None
        return self.running.port

    @property
    def ctx(self) -> Any:
        assert self.running is not None
        return self.running.ctx

    def credentials(self) -> tuple[str, str]:
        cp = configparser.ConfigParser()
        cp.read(self.config.data_dir / "credentials")
        return cp["portless"]["aws_access_key_id"], cp["portless"]["aws_secret_access_key"]

    def ssm(self, *, validate: bool = True, key: tuple[str, str] | None = None,
            token: str | None = None) -> Any:
        akid, secret = key or self.credentials()
        cfg = Config(parameter_validation=validate, retries={"max_attempts": 1},
                     read_timeout=30)
        return boto3.client("ssm", endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=akid, aws_secret_access_key=secret,
                            aws_session_token=token, config=cfg)


def server_config(data_dir: Path, **overrides: Any) -> ServerConfig:
    base = ServerConfig(host="127.0.0.1", port=0, data_dir=data_dir, region=REGION,
                        get_messages_hold=0.2, sweep_interval=0.05, start_timeout=3.0,
                        disconnect_grace=5.0, end_grace=1.0, send_timeout=3.0,
                        ping_interval=0.5)
    return replace(base, **overrides)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def make(data_dir: Path | None = None, **overrides: Any) -> ServerThread:
        srv = ServerThread(server_config(data_dir or tmp_path / "data", **overrides)).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def server(make_server: Callable[..., ServerThread]) -> ServerThread:
    return make_server()
