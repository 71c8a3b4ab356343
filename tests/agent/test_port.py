"""Port sessions against real local TCP servers: stdin/stdout, basic and mux (smux v1/v2)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from portless.agent.datachannel import FAST_PATH_OFFER
from portless.agent.runtime import Agent
from portless.protocol.handshake import PortMode
from portless.protocol.message import PayloadType
from portless.protocol.payloads import Flag, encode_flag
from portless.protocol.smux import SmuxSession, StreamClosed, StreamData
from tests.agent import documents
from tests.agent.relay import ClientEnd, LoopbackServer


@dataclass
class EchoServer:
    port: int = 0
    banner: bytes = b""
    connections: int = 0
    closed: int = 0
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.banner:
                writer.write(self.banner)
            while data := await reader.read(65536):
                if data == b"BYE\n":
                    break
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.closed += 1
            writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    srv = EchoServer(banner=b"SSH-2.0-Echo\r\n")
    srv.server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    srv.port = srv.server.sockets[0].getsockname()[1]
    yield srv
    srv.server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_stdio_mode_relays_both_ways_and_ends_with_the_connection(
        server: LoopbackServer, agent: Agent, echo: EchoServer) -> None:
    client = await server.start_session(documents.ssh(), parameters={"portNumber": str(echo.port)})
    assert client.params is not None and client.params.port_mode is PortMode.STDIO
    await client.wait_for(lambda: client.output == echo.banner, what="banner")
    payload = os.urandom(200_000)
    for off in range(0, len(payload), 1024):
        await client.type(payload[off:off + 1024])
    await client.wait_for(lambda: len(client.output) >= len(echo.banner) + len(payload),
                          what="echo")
    assert bytes(client.output) == echo.banner + payload
    assert max(client.output_sizes) <= 1024
    await client.type(b"BYE\n")
    done = await server.completion(client.side.session_id)
    assert done.final_status == "Success"
    await client.wait_closed()
    await client.stop()


async def test_refused_port_fails_the_ssh_session(server: LoopbackServer, agent: Agent) -> None:
    client = await server.start_session(documents.ssh(),
                                        parameters={"portNumber": str(closed_port())})
    done = await server.completion(client.side.session_id)
    assert done.final_status == "Failed"
    assert done.output.startswith("Unable to connect to specified port")
    await client.stop()


async def test_basic_mode_redials_after_disconnect_flag(
        server: LoopbackServer, agent: Agent, echo: EchoServer) -> None:
    echo.banner = b""
    client = await server.start_session(documents.port_forwarding(),
                                        parameters={"portNumber": str(echo.port)},
                                        client_version="1.1.0")
    assert client.params is not None and client.params.port_mode is PortMode.BASIC
    await client.type(b"one\n")
    await client.wait_for(lambda: client.output == b"one\n", what="first echo")
    await client.send(PayloadType.FLAG, encode_flag(Flag.DISCONNECT_TO_PORT))
    await client.wait_for(lambda: echo.closed == 1, what="connection closed")
    await client.type(b"two\n")
    await client.wait_for(lambda: client.output == b"one\ntwo\n", what="second echo")
    assert echo.connections == 2
    await client.send(PayloadType.FLAG, encode_flag(Flag.TERMINATE_SESSION))
    done = await server.completion(client.side.session_id)
    assert done.final_status == "Success"
    await client.stop()


@dataclass
class MuxClient:
    """The plugin's side of a multiplexed session: an smux client over the data channel."""

    client: ClientEnd
    smux: SmuxSession
    data: dict[int, bytearray] = field(default_factory=dict)
    fins: set[int] = field(default_factory=set)

    chunk: int = 1024
    task: asyncio.Task[None] | None = None

    @classmethod
    def attach(cls, client: ClientEnd, version: int, chunk: int = 1024) -> MuxClient:
        mux = cls(client, SmuxSession(is_client=True, version=version), chunk=chunk)
        client.on_output = mux.received
        mux.task = asyncio.create_task(mux._window_updates())
        return mux

    async def _window_updates(self) -> None:
        """Send what receiving queued (v2 UPD frames) without waiting for the test."""
        while True:
            await asyncio.sleep(0.005)
            await self.flush(self.chunk)

    async def detach(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def received(self, payload: bytes) -> None:
        for event in self.smux.receive_data(payload):
            if isinstance(event, StreamData):
                self.data.setdefault(event.stream_id, bytearray()).extend(event.data)
                self.smux.consumed(event.stream_id, len(event.data))
            elif isinstance(event, StreamClosed):
                self.fins.add(event.stream_id)
                with contextlib.suppress(ValueError):
                    self.smux.close_stream(event.stream_id)

    async def flush(self, chunk: int) -> None:
        out = self.smux.data_to_send()
        for off in range(0, len(out), chunk):
            await self.client.type(out[off:off + chunk])


async def _run_mux(client: ClientEnd, version: int, streams: int, size: int,
                   chunk: int) -> MuxClient:
    mux = MuxClient.attach(client, version, chunk)
    payloads = {}
    for _ in range(streams):
        sid = mux.smux.open_stream()
        payloads[sid] = os.urandom(size)
    await mux.flush(chunk)
    pending = {sid: memoryview(p) for sid, p in payloads.items()}
    while pending:
        for sid in list(pending):
            view = pending[sid]
            sent = mux.smux.send(sid, view[:65536])
            pending[sid] = view[sent:]
            if not pending[sid]:
                del pending[sid]
        await mux.flush(chunk)
        await asyncio.sleep(0)
    def echoed() -> bool:
        return all(len(mux.data.get(sid, b"")) >= len(p) for sid, p in payloads.items())

    await client.wait_for(echoed, timeout=20, what="echo on every stream")
    for sid, payload in payloads.items():
        assert bytes(mux.data[sid]) == payload
    for sid in payloads:
        mux.smux.close_stream(sid)
    await mux.flush(chunk)
    await client.wait_for(lambda: mux.fins >= set(payloads), what="FIN for every stream")
    await mux.detach()
    return mux


async def test_mux_v1_many_streams_with_a_stock_client(
        server: LoopbackServer, agent: Agent, echo: EchoServer) -> None:
    echo.banner = b""
    client = await server.start_session(documents.port_forwarding(),
                                        parameters={"portNumber": str(echo.port)})
    params = client.params
    assert params is not None and params.port_mode is PortMode.MUX and params.fast_path is None
    await _run_mux(client, version=1, streams=6, size=50_000, chunk=1024)
    assert echo.connections == 6
    assert max(client.output_sizes) <= 1024
    await client.send(PayloadType.FLAG, encode_flag(Flag.TERMINATE_SESSION))
    assert (await server.completion(client.side.session_id)).final_status == "Success"
    await client.stop()


async def test_mux_v2_on_the_fast_path(server: LoopbackServer, agent: Agent,
                                       echo: EchoServer) -> None:
    echo.banner = b""
    client = await server.start_session(documents.port_forwarding(),
                                        parameters={"portNumber": str(echo.port)},
                                        fast_path=FAST_PATH_OFFER)
    params = client.params
    assert params is not None and params.port_mode is PortMode.MUX
    assert params.fast_path is not None and params.fast_path.smux_version == 2
    await _run_mux(client, version=2, streams=4, size=3_000_000, chunk=64 * 1024)
    assert max(client.output_sizes) > 1024
    await client.send(PayloadType.FLAG, encode_flag(Flag.TERMINATE_SESSION))
    assert (await server.completion(client.side.session_id)).final_status == "Success"
    await client.stop()


async def test_mux_refused_port_sends_connect_error_and_fin(server: LoopbackServer,
                                                            agent: Agent) -> None:
    client = await server.start_session(documents.port_forwarding(),
                                        parameters={"portNumber": str(closed_port())})
    mux = MuxClient.attach(client, 1)
    sid = mux.smux.open_stream()
    await mux.flush(1024)
    await client.wait_for(lambda: sid in mux.fins, what="FIN of the refused stream")
    await mux.detach()
    assert client.flags == [Flag.CONNECT_TO_PORT_ERROR]
    await client.send(PayloadType.FLAG, encode_flag(Flag.TERMINATE_SESSION))
    await client.stop()


async def test_remote_host_and_denied_addresses(server: LoopbackServer, agent: Agent,
                                                echo: EchoServer) -> None:
    echo.banner = b""
    client = await server.start_session(documents.port_forwarding(remote=True),
                                        parameters={"portNumber": str(echo.port),
                                                    "host": "127.0.0.1"})
    assert client.params is not None and client.params.port_mode is PortMode.MUX
    await _run_mux(client, version=1, streams=2, size=10_000, chunk=1024)
    await client.send(PayloadType.FLAG, encode_flag(Flag.TERMINATE_SESSION))
    await client.stop()

    client = await server.start_session(documents.port_forwarding(remote=True),
                                        parameters={"portNumber": "80",
                                                    "host": "169.254.169.254"})
    done = await server.completion(client.side.session_id)
    assert done.final_status == "Failed"
    assert done.output == "Forwarding to IP address 169.254.169.254 is forbidden."
    await client.stop()


@pytest.mark.parametrize("host", ["::ffff:169.254.169.254", "::ffff:a9fe:a9fe",
                                  "64:ff9b::a9fe:a9fe", "64:ff9b::169.254.169.253"])
async def test_denied_addresses_cannot_be_reached_through_ipv6_forms(
        server: LoopbackServer, agent: Agent, host: str) -> None:
    client = await server.start_session(documents.port_forwarding(remote=True),
                                        parameters={"portNumber": "80", "host": host})
    done = await server.completion(client.side.session_id)
    assert done.final_status == "Failed"
    assert done.output.startswith("Forwarding to IP address ")
    assert done.output.endswith(" is forbidden.")
    await client.stop()
