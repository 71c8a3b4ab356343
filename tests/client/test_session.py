"""Sessions end to end against the in-process fake server/agent (tests/client/fakeserver.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from portless.client.api import BotoSessionApi
from portless.client.config import ClientOptions, Resolved
from portless.client.datachannel import CLIENT_ID, SessionInfo
from portless.client.session import MODES, RunMode, Stdio, run_session
from portless.protocol.message import MessageType, PayloadType
from portless.protocol.payloads import Flag, encode_exit_code, encode_flag
from portless.protocol.smux import SmuxSession, StreamClosed, StreamData, StreamOpened
from portless.protocol.versions import PORTLESS_CLIENT_VERSION
from tests.waiting import wait_until

from .fakeserver import FakeAgent, FakeServer, Received

pytestmark = pytest.mark.timeout(30)



class Collector:
    """Reads one end of a pipe in a thread; tests await text appearing in it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = bytearray()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.data += chunk

    async def wait_for(self, needle: bytes, timeout: float = 5.0) -> None:
        await wait_until(lambda: needle in self.data, timeout)

    def text(self) -> str:
        return self.data.decode(errors="replace")


class Client:
    """A client session running in this loop with pipes for its standard streams."""

    def __init__(self, server: FakeServer, agent: FakeAgent, mode: str | RunMode) -> None:
        self.mode = MODES[mode] if isinstance(mode, str) else mode
        self.stdin_r, self.stdin_w = os.pipe()
        out_r, self.out_w = os.pipe()
        err_r, self.err_w = os.pipe()
        self.out = Collector(out_r)
        self.err = Collector(err_r)
        resp = server.start_response(agent)
        self.info = SessionInfo(resp["SessionId"], resp["TokenValue"], resp["StreamUrl"],
                                "mi-0123456789abcdef0")
        resolved = Resolved(ClientOptions(endpoint_url=server.base_url, region="us-east-1"))
        self.api = BotoSessionApi(resolved.ssm)
        self.task: asyncio.Task[int] | None = None

    def start(self, **kw: Any) -> None:
        stdio = Stdio(self.mode, stdin=self.stdin_r, stdout=self.out_w, stderr=self.err_w)
        self.task = asyncio.create_task(run_session(self.info, self.api, False, self.mode,
                                                    stdio=stdio, **kw))

    def type(self, data: bytes) -> None:
        os.write(self.stdin_w, data)

    async def feed(self, data: bytes) -> None:
        """Write more than a pipe holds, from a thread (the client runs in this loop)."""
        def write_all() -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(self.stdin_w, view):]
        await asyncio.to_thread(write_all)

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.stdin_w)

    async def result(self, timeout: float = 10.0) -> int:
        assert self.task is not None
        return await asyncio.wait_for(self.task, timeout)

    def cleanup(self) -> None:
        for fd in (self.stdin_r, self.stdin_w, self.out_w, self.err_w):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
async def server(aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeServer]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    srv = FakeServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
def clients() -> Any:
    made: list[Client] = []

    def make(server: FakeServer, agent: FakeAgent, mode: str | RunMode = "shell") -> Client:
        c = Client(server, agent, mode)
        made.append(c)
        return c

    yield make
    for c in made:
        if c.task is not None and not c.task.done():
            c.task.cancel()
        c.cleanup()


# ------------------------------------------------------------------------ shell


async def test_shell_fast_path_output_stderr_exit_code(server: FakeServer, clients: Any) -> None:
    agent = server.new_session("Standard_Stream")
    c = clients(server, agent, "shell")
    c.start()
    await asyncio.wait_for(agent.ready.wait(), 5)
    assert agent.params is not None and agent.params.fast_path is not None
    size = await agent.next_input()
    assert size == Received(PayloadType.SIZE, b'{"cols":300,"rows":100}')
    c.type(b"echo hi\n")
    assert await agent.input_until(lambda d: d.endswith(b"\n")) == b"echo hi\n"
    agent.send(PayloadType.OUTPUT, b"hi\r\n")
    agent.send(PayloadType.STDERR, b"warning\n")
    agent.send(PayloadType.EXIT_CODE, encode_exit_code(3))
    await c.out.wait_for(b"hi\r\n")
    await agent.wait_acked()
    await agent.close_channel()
    assert await c.result() == 3
    await c.out.wait_for(b"Exiting session")
    await c.err.wait_for(b"warning\n")
    out = c.out.text()
    assert out.startswith(f"\nStarting session with SessionId: {c.info.session_id}\n")
    assert out.endswith(f"\n\nExiting session with sessionId: {c.info.session_id}.\n\n")
    assert "EXIT_CODE" not in out and "warning" not in out
    # The opening frame: our ClientId and version, the StartSession token.
    opening = agent.opens[0]
    assert opening.client_id == CLIENT_ID and opening.client_version == PORTLESS_CLIENT_VERSION
    assert opening.token == c.info.token


async def test_stock_agent_everything_to_stdout_plugin_exits_zero(server: FakeServer,
                                                                    clients: Any) -> None:
    agent = server.new_session("NonInteractiveCommands", agent_version="3.3.40.0",
                               offer_fast_path=None)
    c = clients(server, agent, "plugin")
    c.start()
    await asyncio.wait_for(agent.ready.wait(), 5)
    assert agent.params is not None and agent.params.fast_path is None
    await agent.next_input()  # size
    agent.send(PayloadType.OUTPUT, b"out\n")
    agent.send(PayloadType.STDERR, b"err\n")
    agent.send(PayloadType.EXIT_CODE, encode_exit_code(3))
    await c.out.wait_for(b"EXIT_CODE: 3")
    await agent.close_channel("done by test")
    assert await c.result() == 0
    await c.out.wait_for(b"done by test")
    assert "out\nerr\nEXIT_CODE: 3" in c.out.text()
    assert f"\n\nSessionId: {c.info.session_id} : done by test\n\n" in c.out.text()
    # Stock digests were on: every frame the client sent carries a real SHA-256.
    assert all(m.payload_digest != bytes(32) for m in agent.frames_in)


async def test_stdin_lone_newline_becomes_cr_and_control_signal(server: FakeServer,
                                                                clients: Any) -> None:
    agent = server.new_session("Standard_Stream")
    c = clients(server, agent, "shell")
    c.start()
    await asyncio.wait_for(agent.ready.wait(), 5)
    await agent.next_input()  # size
    c.type(b"\n")
    assert await agent.input_until(lambda d: len(d) >= 1) == b"\r"
    os.kill(os.getpid(), signal.SIGINT)
    assert await agent.input_until(lambda d: len(d) >= 1) == b"\x03"
    await agent.close_channel()
    assert await c.result() == 0


async def test_terminal_raw_mode_resize_and_restore(server: FakeServer, clients: Any) -> None:
    """On a terminal: raw mode (Ctrl-C is a byte, Enter is CR), SIGWINCH resizes, restored."""
    import fcntl
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    before = termios.tcgetattr(slave)
    agent = server.new_session("Standard_Stream")
    c = clients(server, agent, "shell")
    os.close(c.stdin_r)
    c.stdin_r = slave  # stdin is the terminal; stdout stays a pipe (so 300x100)
    try:
        c.start()
        await asyncio.wait_for(agent.ready.wait(), 5)
        assert (await agent.next_input()).payload == b'{"cols":300,"rows":100}'
        raw = termios.tcgetattr(slave)
        assert not raw[3] & (termios.ICANON | termios.ECHO | termios.ISIG)
        os.write(master, b"\x03\x1a\r")
        assert await agent.input_until(lambda d: len(d) >= 3) == b"\x03\x1a\r"
        await agent.close_channel()
        assert await c.result() == 0
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)


async def test_resize_from_stdout_terminal(server: FakeServer, clients: Any) -> None:
    import fcntl
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    agent = server.new_session("Standard_Stream")
    c = clients(server, agent, "shell")
    c.out_w = slave  # stdout is the terminal
    try:
        c.start()
        await asyncio.wait_for(agent.ready.wait(), 5)
        assert (await agent.next_input()).payload == b'{"cols":120,"rows":40}'
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
        os.kill(os.getpid(), signal.SIGWINCH)
        assert (await agent.next_input()).payload == b'{"cols":132,"rows":50}'
        await agent.close_channel()
        assert await c.result() == 0
    finally:
        os.close(master)


async def test_shell_stdin_eof_sends_eot_and_waits(server: FakeServer, clients: Any) -> None:
    agent = server.new_session("Standard_Stream")
    c = clients(server, agent, "shell")
    c.start()
    await asyncio.wait_for(agent.ready.wait(), 5)
    await agent.next_input()
    c.type(b"exit 7\n")
    c.close_stdin()
    data = await agent.input_until(lambda d: d.endswith(b"\x04"))
    assert data == b"exit 7\n\x04"
    agent.send(PayloadType.EXIT_CODE, encode_exit_code(7))
    await agent.wait_acked()
    await agent.close_channel()
    assert await c.result() == 7


async def test_plugin_stdin_eof_exits(server: FakeServer, clients: Any) -> None:
    agent = server.new_session("Standard_Stream", offer_fast_path=None)
    c = clients(server, agent, "plugin")
    c.start()
    await asyncio.wait_for(agent.ready.wait(), 5)
    c.close_stdin()
    assert await c.result() == 0
    await c.out.wait_for(b"Cannot perform start session: EOF\n")


async def test_exec_quiet_and_separate_streams(server: FakeServer, clients: Any) -> None:
    agent = server.new_session("NonInteractiveCommands", offer_fast_path=None)
    c = clients(server, agent, "exec")
    c.start()
    await asyncio.wait_for(agent.ready.wait(), 5)
    agent.send(PayloadType.OUTPUT, b"result\n")
    agent.send(PayloadType.STDERR, b"oops\n")
    agent.send(PayloadType.EXIT_CODE, encode_exit_code(42))
    await agent.wait_acked()
    await agent.close_channel()
    assert await c.result() == 42
    await c.err.wait_for(b"oops\n")
    assert c.out.text() == "result\n"


async def test_no_handshake_first_output_makes_a_shell(server: FakeServer,
                                                       clients: Any) -> None:
    agent = server.new_session("Standard_Stream", handshake=False)
    c = clients(server, agent, "start-session")
    c.start()
    await asyncio.wait_for(agent.connected.wait(), 5)
    agent.send(PayloadType.OUTPUT, b"sh-4.2$ ")
    await c.out.wait_for(b"sh-4.2$ ")
    size = await agent.next_input()
    assert size.payload_type == PayloadType.SIZE
    await agent.close_channel()
    assert await c.result() == 0


async def test_output_before_ready_is_withheld(server: FakeServer, clients: Any) -> None:
    """Basic port mode: nothing is acked until a local client connects (client spec §6.2)."""
    props = {"portNumber": "80", "type": "LocalPortForwarding", "localPortNumber": "0"}
    agent = server.new_session("Port", props, agent_version="3.0.100.0", offer_fast_path=None)
    c = clients(server, agent, "forward")
    c.start()
    await asyncio.wait_for(agent.ready.wait(), 5)
    banner = agent.send(PayloadType.OUTPUT, b"banner\r\n")
    await c.out.wait_for(b"opened for sessionId")
    await wait_until(lambda: agent.stream._unacked[banner].resends >= 2)  # several resends
    assert agent.stream.unacked == 1
    port = int(c.out.text().split("Port ", 1)[1].split(" ", 1)[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.readexactly(8), 5) == b"banner\r\n"
    await agent.wait_acked()
    writer.write(b"ping")
    assert await agent.input_until(lambda d: d == b"ping") == b"ping"
    writer.close()
    flag = await agent.next_input()
    assert flag == Received(PayloadType.FLAG, encode_flag(Flag.DISCONNECT_TO_PORT))
    assert "Connection accepted for session" in c.out.text()
    await agent.close_channel()
    assert await c.result() == 0


async def test_kms_encrypted_session(server: FakeServer, clients: Any,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """KMSEncryption: data key from (our fake) KMS, challenge, then AES-GCM payloads."""
    from portless.client.api import kms_data_key_provider

    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", server.base_url)
    agent = server.new_session("Standard_Stream", offer_fast_path=None,
                               kms_keys=server.kms_keys)
    c = clients(server, agent, "shell")
    resolved = Resolved(ClientOptions(region="us-east-1"))
    c.start(data_key_provider=kms_data_key_provider(resolved.kms, c.info.session_id,
                                                    c.info.target))
    await asyncio.wait_for(agent.ready.wait(), 10)
    assert server.kms_calls == [{"KeyId": "alias/test", "NumberOfBytes": 64,
                                 "EncryptionContext": {"aws:ssm:SessionId": c.info.session_id,
                                                       "aws:ssm:TargetId": c.info.target}}]
    await c.out.wait_for(b"This session is encrypted using AWS KMS.\n")
    size = await agent.next_input()
    assert size.payload == b'{"cols":300,"rows":100}'  # Size is never encrypted
    c.type(b"secret")
    assert await agent.input_until(lambda d: d == b"secret") == b"secret"
    wire = [m for m in agent.frames_in if m.payload_type == PayloadType.OUTPUT]
    assert wire and b"secret" not in wire[-1].payload and len(wire[-1].payload) == 6 + 28
    agent.send(PayloadType.OUTPUT, b"classified\r\n")
    await c.out.wait_for(b"classified\r\n")
    await agent.close_channel()
    assert await c.result() == 0


# -------------------------------------------------------------------- reconnect


async def test_reconnect_resumes_with_new_token(server: FakeServer, clients: Any) -> None:
    agent = server.new_session("Standard_Stream")
    c = clients(server, agent, "shell")
    c.start()
    await asyncio.wait_for(agent.ready.wait(), 5)
    await agent.next_input()
    c.type(b"one")
    assert await agent.input_until(lambda d: d == b"one") == b"one"
    await agent.drop_connection()
    # Typed while disconnected: delivered after the resume.
    c.type(b"two")
    assert await agent.input_until(lambda d: d == b"two", timeout=10) == b"two"
    assert [op for op, _ in server.calls].count("ResumeSession") == 1
    assert len(agent.opens) == 2
    first, second = agent.opens
    assert first.client_id == second.client_id == CLIENT_ID
    assert first.token != second.token and first.request_id != second.request_id
    agent.send(PayloadType.OUTPUT, b"after\n")
    await c.out.wait_for(b"after\n")
    await agent.close_channel()
    assert await c.result() == 0


async def test_resume_without_token_times_out(server: FakeServer, clients: Any) -> None:
    agent = server.new_session("Standard_Stream", offer_fast_path=None)
    c = clients(server, agent, "plugin")
    c.start()
    await asyncio.wait_for(agent.ready.wait(), 5)
    server.resume_tokens = False
    await agent.drop_connection()
    assert await c.result() == 0
    await c.out.wait_for(f"Session: {c.info.session_id} timed out.\n".encode())


async def test_bad_token_reports_failure(server: FakeServer, clients: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import portless.client.datachannel as dc

    monkeypatch.setattr(dc, "RETRY_COUNT", 1)
    agent = server.new_session("Standard_Stream")
    c = clients(server, agent, "shell")
    # The server refuses the token; ResumeSession fails too (unknown session).
    c.info.token = "tok-wrong"
    c.info.session_id = "alice-00000000000000000"
    c.start()
    assert await c.result() == 1
    await c.out.wait_for(b"Cannot perform start session: connection to the session")
    assert [op for op, _ in server.calls] == ["ResumeSession", "ResumeSession"]


async def test_unreachable_stream_url(server: FakeServer, clients: Any,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import portless.client.datachannel as dc

    monkeypatch.setattr(dc, "RETRY_COUNT", 1)
    agent = server.new_session("Standard_Stream")
    c = clients(server, agent, "exec")
    c.info.stream_url = "ws://127.0.0.1:9/v1/data-channel/x"
    c.start()
    assert await c.result() == 1
    await c.err.wait_for(b"portless: Cannot perform start session:")
    assert c.out.data == b""


async def test_a_dial_that_times_out_after_connecting_closes_its_websocket(
        server: FakeServer, clients: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The WebSocket opens but OpenDataChannel cannot be sent in time (the peer does not
    read a huge token): each attempt's socket is closed before the next one is dialled."""
    import base64
    import hashlib

    import portless.client.datachannel as dc

    monkeypatch.setattr(dc, "RETRY_COUNT", 1)
    monkeypatch.setattr(dc, "DIAL_TIMEOUT", 0.5)
    monkeypatch.setattr(dc, "RETRY_INITIAL", (1.0, 1.0))  # room between the two attempts
    spans: list[list[float]] = []

    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(
            key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        span = [time.monotonic(), 0.0]
        spans.append(span)
        # Not reading for longer than the dial timeout IS the scenario: the client's send
        # blocks until its dial times out.
        await asyncio.sleep(dc.DIAL_TIMEOUT + 0.2)
        with contextlib.suppress(ConnectionError):
            while await reader.read(1 << 20):
                pass
        span[1] = time.monotonic()
        writer.close()

    srv = await asyncio.start_server(stalled, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        agent = server.new_session("Standard_Stream")
        c = clients(server, agent, "exec")
        c.info.stream_url = f"ws://127.0.0.1:{port}/stalled"
        c.info.token = "x" * (64 << 20)
        c.start()
        assert await c.result(20) == 1
        await c.err.wait_for(b"timed out connecting to the data channel")
        await wait_until(lambda: len(spans) >= 2 and all(end for _, end in spans), 10)
        assert spans[0][1] < spans[1][0], spans   # the first closed before the second began
    finally:
        srv.close()


# ------------------------------------------------------------------------ ports


class SmuxEchoAgent:
    """The agent's side of mux forwarding: every stream echoes what it receives."""

    def __init__(self, agent: FakeAgent, version: int, *, fail_streams: bool = False) -> None:
        self.agent = agent
        self.smux = SmuxSession(is_client=False, version=version)
        self.fail = fail_streams
        self.opened: list[int] = []
        self.finished: list[int] = []
        agent.on_data = self.on_data

    def _flush(self) -> None:
        data = self.smux.data_to_send()
        step = 1024 if self.agent.params is None or self.agent.params.fast_path is None \
            else self.agent.params.fast_path.max_payload
        for off in range(0, len(data), step):
            self.agent.send(PayloadType.OUTPUT, data[off:off + step])

    def on_data(self, item: Received) -> None:
        if item.payload_type != PayloadType.OUTPUT:
            self.agent.inbox.put_nowait(item)
            return
        for ev in self.smux.receive_data(item.payload):
            if isinstance(ev, StreamOpened):
                self.opened.append(ev.stream_id)
                if self.fail:
                    self.agent.send(PayloadType.FLAG,
                                    encode_flag(Flag.CONNECT_TO_PORT_ERROR))
                    self.smux.close_stream(ev.stream_id)
            elif isinstance(ev, StreamData):
                sent = self.smux.send(ev.stream_id, ev.data)
                assert sent == len(ev.data)
                self.smux.consumed(ev.stream_id, len(ev.data))
            elif isinstance(ev, StreamClosed):
                self.finished.append(ev.stream_id)
                self.smux.close_stream(ev.stream_id)
        self._flush()


@pytest.mark.parametrize("fast", [True, False], ids=["fast-smux-v2", "stock-smux-v1"])
async def test_mux_twenty_concurrent_connections(server: FakeServer, clients: Any,
                                                 fast: bool) -> None:
    props = {"portNumber": "8080", "type": "LocalPortForwarding", "localPortNumber": "0"}
    kw: dict[str, Any] = {} if fast else {"offer_fast_path": None,
                                          "agent_version": "3.3.40.0"}
    agent = server.new_session("Port", props, **kw)
    echo = SmuxEchoAgent(agent, version=2 if fast else 1)
    c = clients(server, agent, "forward")
    c.start()
    await c.out.wait_for(b"Waiting for connections...\n")
    assert agent.params is not None and (agent.params.fast_path is not None) == fast
    port = int(c.out.text().split("Port ", 1)[1].split(" ", 1)[0])
    size = 200_000 if fast else 20_000

    async def one(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = bytes([i]) * size
        writer.write(payload)
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(size), 20)
        assert got == payload
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(one(i) for i in range(20)))
    assert len(echo.opened) == 20
    assert all(sid % 2 == 1 and sid >= 3 for sid in echo.opened)
    await wait_until(lambda: len(echo.finished) >= 20)
    assert "\nConnection accepted for session [" in c.out.text()
    # Ctrl-C: TerminateSession flag, the plugin's texts, exit 0.
    os.kill(os.getpid(), signal.SIGINT)
    assert await c.result() == 0
    await c.out.wait_for(b"Exiting session")
    assert "Terminate signal received, exiting.\n" in c.out.text()
    flags = [m for m in agent.frames_in if m.payload_type == PayloadType.FLAG]
    assert flags and flags[-1].payload == struct.pack(">I", 2)


async def test_mux_connect_error(server: FakeServer, clients: Any) -> None:
    props = {"portNumber": "1", "type": "LocalPortForwarding", "localPortNumber": "0"}
    agent = server.new_session("Port", props)
    SmuxEchoAgent(agent, version=2, fail_streams=True)
    c = clients(server, agent, "forward")
    c.start()
    await c.out.wait_for(b"Waiting for connections...\n")
    port = int(c.out.text().split("Port ", 1)[1].split(" ", 1)[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the FIN
    writer.close()
    await c.out.wait_for(b"Connection to destination port failed, check SSM Agent logs.")
    await agent.close_channel()
    assert await c.result() == 0


async def test_mux_unix_socket(server: FakeServer, clients: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "fwd.sock")
    props = {"portNumber": "80", "type": "LocalPortForwarding", "localConnectionType": "unix",
             "localUnixSocket": path}
    agent = server.new_session("Port", props)
    SmuxEchoAgent(agent, version=2)
    c = clients(server, agent, "forward")
    c.start()
    await c.out.wait_for(f"Unix socket {path} opened".encode())
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b"hello")
    assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
    writer.close()
    await agent.close_channel()
    assert await c.result() == 0
    assert not os.path.exists(path)


@pytest.mark.parametrize("mode", ["ssh-proxy", "plugin"])
async def test_stdio_port_mode(server: FakeServer, clients: Any, mode: str) -> None:
    agent = server.new_session("Port", {"portNumber": "22"})
    c = clients(server, agent, mode)
    c.start()
    await asyncio.wait_for(agent.ready.wait(), 5)
    agent.send(PayloadType.OUTPUT, b"SSH-2.0-OpenSSH_9.2\r\n")
    await c.out.wait_for(b"SSH-2.0-OpenSSH_9.2\r\n")
    big = os.urandom(300_000)
    feeding = asyncio.create_task(c.feed(big))
    assert await agent.input_until(lambda d: len(d) >= len(big)) == big
    await feeding
    c.close_stdin()
    assert await c.result() == 0
    if mode == "ssh-proxy":
        # Nothing but the SSH bytes on stdout; the session is ended with the flag.
        assert c.out.data == b"SSH-2.0-OpenSSH_9.2\r\n"
        flag = await agent.next_input()
        assert flag == Received(PayloadType.FLAG, encode_flag(Flag.TERMINATE_SESSION))
    else:
        assert c.out.text().startswith("\nStarting session with SessionId: ")


async def test_stream_message_types(server: FakeServer, clients: Any) -> None:
    """Everything the client sends on the stream is input_stream_data, numbered from 0."""
    agent = server.new_session("Standard_Stream")
    c = clients(server, agent, "shell")
    c.start()
    await asyncio.wait_for(agent.ready.wait(), 5)
    await agent.next_input()
    c.type(b"x")
    await agent.input_until(lambda d: d == b"x")
    await agent.close_channel()
    await c.result()
    data = [m for m in agent.frames_in if m.message_type == MessageType.INPUT_STREAM_DATA]
    assert [m.sequence_number for m in data] == [0, 1, 2]
    assert [m.payload_type for m in data] == [6, 3, 1]
    assert all(m.flags == 0 for m in data)
