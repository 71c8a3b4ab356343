"""A loopback stand-in for the portless server, as the agent sees it, plus a client end.

`LoopbackServer` is a real aiohttp server on 127.0.0.1: it answers the SSM calls the agent
makes (verifying the anonymous / RSA / SigV4 signatures with portless.aws), issues MGS
tokens, accepts the control- and data-channel WebSockets and lets a test push
`interactive_shell` / `channel_closed`. `ClientEnd` plays the client side of one data
channel with the protocol package's ClientHandshake and ReliableStream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from portless.aws.rsa_signature import verify_rsa
from portless.aws.sigv4 import SignedRequest, verify
from portless.protocol.handshake import ClientHandshake, FastPath, SessionParams
from portless.protocol.message import Message, MessageType, PayloadType, decode
from portless.protocol.payloads import (
    AgentSessionState,
    AgentTaskAcknowledge,
    AgentTaskComplete,
    AgentTaskPayload,
    ChannelClosed,
    InteractiveShell,
    OpenControlChannel,
    OpenDataChannel,
    TerminalSize,
    decode_exit_code,
    decode_flag,
)
from portless.protocol.reliable import Delivered, ReliableStream, StreamConfig

ACTIVATION_ID = "3c6a1d1e-8b59-4d3c-9a51-0d7a3c1f5e21"
ACTIVATION_CODE = "Zq3uVq7kX9eR2pLm8sTb"
REGION = "us-east-1"
STOCK_CLIENT = "1.2.694.0"
DEFAULT_SIZE = TerminalSize(100, 30)


@dataclass
class Call:
    target: str
    body: dict[str, Any]
    headers: dict[str, str]
    chunked: bool


@dataclass
class DataSide:
    """The agent's end of one session's data channel, as the relay sees it."""

    session_id: str
    opens: list[OpenDataChannel] = field(default_factory=list)
    frames: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    ws: web.WebSocketResponse | None = None
    connections: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)

    async def send(self, frame: bytes) -> None:
        ws = self.ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_bytes(frame)

    async def drop(self) -> None:
        """Close the agent's socket as a failing relay would (no channel_closed)."""
        if self.ws is not None:
            await self.ws.close()


class LoopbackServer:
    def __init__(self) -> None:
        self.url = ""
        self.calls: list[Call] = []
        self.public_keys: dict[str, str] = {}
        self.fingerprints: dict[str, str] = {}
        self.secrets: dict[str, str] = {}
        self.tokens: set[str] = set()
        self.errors: list[str] = []
        self.control_opens: list[OpenControlChannel] = []
        self.control_headers: list[dict[str, str]] = []
        self.control_ws: web.WebSocketResponse | None = None
        self.control_connected = asyncio.Event()
        self.completions: dict[str, list[AgentTaskComplete]] = {}
        self.completion_events: dict[str, asyncio.Event] = {}
        self.ack_completions = True
        self.data: dict[str, DataSide] = {}
        self.data_waiters: dict[str, asyncio.Event] = {}
        self.terminated: set[str] = set()
        self.token_lifetime = 3600.0
        self._runner: web.AppRunner | None = None

    # ---------------------------------------------------------------- life

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/", self._ssm)
        app.router.add_post("/v1/control-channel/{id}", self._create_channel)
        app.router.add_post("/v1/data-channel/{id}", self._create_data_channel)
        app.router.add_get("/v1/control-channel/{id}", self._control_ws)
        app.router.add_get("/v1/data-channel/{id}", self._data_ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self.control_ws is not None:
            await self.control_ws.close()
        for side in self.data.values():
            await side.drop()
        if self._runner is not None:
            await self._runner.cleanup()

    # ----------------------------------------------------------- SSM API

    def _verify_sigv4(self, request: web.Request, body: bytes, service: str) -> str:
        signed = SignedRequest(request.method, request.path, request.query_string,
                               list(request.headers.items()), body)
        caller = verify(signed, self.secrets.get, now=datetime.now(UTC),
                        expected_service=service, expected_region=REGION)
        return caller.access_key_id

    @staticmethod
    def _error(code: str, message: str, status: int = 400) -> web.Response:
        return web.json_response({"__type": code, "message": message}, status=status)

    async def _ssm(self, request: web.Request) -> web.Response:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        op = target.removeprefix("AmazonSSM.")
        payload = json.loads(body) if body else {}
        self.calls.append(Call(op, payload, dict(request.headers),
                               request.headers.get("Transfer-Encoding", "") == "chunked"))
        try:
            if op == "RegisterManagedInstance":
                if "Authorization" in request.headers:
                    return self._error("ValidationException", "registration must be anonymous")
                if (payload.get("ActivationId") != ACTIVATION_ID
                        or payload.get("ActivationCode") != ACTIVATION_CODE):
                    return self._error("InvalidActivation", "Activation has expired or is wrong.")
                iid = "mi-" + secrets.token_hex(9)[:17]
                self.public_keys[iid] = payload["PublicKey"]
                self.fingerprints[iid] = payload["Fingerprint"]
                return web.json_response({"InstanceId": iid})
            if op == "RequestManagedInstanceRoleToken":
                signed = SignedRequest(request.method, request.path, request.query_string,
                                       list(request.headers.items()), body)
                iid = verify_rsa(signed, self.public_keys.get, now=datetime.now(UTC),
                                 expected_region=REGION)
                if payload.get("Fingerprint") != self.fingerprints.get(iid):
                    return self._error("MachineFingerprintDoesNotMatch", "fingerprint changed")
                key = "ASIA" + secrets.token_hex(8).upper()
                self.secrets[key] = secrets.token_urlsafe(30)
                return web.json_response({
                    "AccessKeyId": key, "SecretAccessKey": self.secrets[key],
                    "SessionToken": "tok-" + key, "UpdateKeyPair": False,
                    "TokenExpirationDate": time.time() + self.token_lifetime})
            self._verify_sigv4(request, body, "ssm")
            if op == "UpdateInstanceInformation":
                return web.json_response({})
            if op == "ListInstanceAssociations":
                return web.json_response({"Associations": []})
            return self._error("UnknownOperationException", op)
        except Exception as exc:
            code = getattr(exc, "code", "InternalServerError")
            self.errors.append(f"{op}: {exc}")
            return self._error(code, str(exc), getattr(exc, "status", 500))

    async def _create_channel(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            self._verify_sigv4(request, body, "ssmmessages")
        except Exception as exc:
            self.errors.append(f"create channel: {exc}")
            return web.Response(status=403, text=f"<AccessDeniedException>{exc}")
        token = "tok-" + secrets.token_hex(12)
        self.tokens.add(token)
        return web.Response(status=201, content_type="application/xml", text=(
            "<CreateControlChannelResponse><MessageSchemaVersion>1.0</MessageSchemaVersion>"
            f"<TokenValue>{token}</TokenValue></CreateControlChannelResponse>"))

    async def _create_data_channel(self, request: web.Request) -> web.Response:
        if request.match_info["id"] in self.terminated:
            return web.Response(status=400, text="Session is already terminated")
        return await self._create_channel(request)

    # ------------------------------------------------------------ sockets

    async def _accept(self, request: web.Request) -> web.WebSocketResponse:
        self._verify_sigv4(request, b"", "ssmmessages")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        return ws

    async def _control_ws(self, request: web.Request) -> web.StreamResponse:
        try:
            ws = await self._accept(request)
        except Exception as exc:
            self.errors.append(f"control ws: {exc}")
            return web.Response(status=403, text=str(exc))
        self.control_headers.append(dict(request.headers))
        first = await ws.receive()
        if first.type != WSMsgType.TEXT:
            await ws.close()
            return ws
        opened = OpenControlChannel.from_json(first.data)
        assert opened.token in self.tokens
        self.tokens.discard(opened.token)
        self.control_opens.append(opened)
        self.control_ws = ws
        self.control_connected.set()
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue
            m = decode(msg.data)
            if m.message_type == MessageType.AGENT_TASK_COMPLETE:
                done = AgentTaskComplete.from_json(m.payload)
                self.completions.setdefault(done.session_id, []).append(done)
                self.completion_events.setdefault(done.session_id, asyncio.Event()).set()
                if self.ack_completions:
                    await ws.send_bytes(AgentTaskAcknowledge(
                        m.id_str, done.session_id).to_message().encode())
        if self.control_ws is ws:
            self.control_ws = None
            self.control_connected.clear()
        return ws

    async def _data_ws(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["id"]
        try:
            ws = await self._accept(request)
        except Exception as exc:
            self.errors.append(f"data ws: {exc}")
            return web.Response(status=403, text=str(exc))
        side = self.data.setdefault(sid, DataSide(sid))
        first = await ws.receive()
        if first.type != WSMsgType.TEXT:
            await ws.close()
            return ws
        opened = OpenDataChannel.from_json(first.data)
        assert opened.token in self.tokens
        self.tokens.discard(opened.token)
        side.opens.append(opened)
        side.headers.append(dict(request.headers))
        side.ws = ws
        side.connections += 1
        side.connected.set()
        self.data_waiters.setdefault(sid, asyncio.Event()).set()
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                side.frames.put_nowait(msg.data)
        if side.ws is ws:
            side.ws = None
            side.connected.clear()
            side.frames.put_nowait(None)
        return ws

    # -------------------------------------------------------------- tests

    async def send_control(self, msg: Message) -> None:
        await asyncio.wait_for(self.control_connected.wait(), 10)
        assert self.control_ws is not None
        await self.control_ws.send_bytes(msg.encode())

    async def start_session(self, document: dict[str, Any], *, parameters: dict[str, str]
                            | None = None, run_as_user: str = "",
                            client_version: str = STOCK_CLIENT,
                            fast_path: FastPath | None = None,
                            size: TerminalSize | None = DEFAULT_SIZE,
                            handshake: bool = True) -> ClientEnd:
        sid = f"tester-{uuid.uuid4().hex[:17]}"
        task = AgentTaskPayload(sid, document.get("name", "Test-Document"),
                                document["content"], parameters or {}, run_as_user,
                                "arn:aws:iam::123456789012:user/tester")
        waiter = self.data_waiters.setdefault(sid, asyncio.Event())
        await self.send_control(InteractiveShell(task).to_message())
        await asyncio.wait_for(waiter.wait(), 10)
        client = ClientEnd(self.data[sid], client_version=client_version, fast_path=fast_path)
        client.start()
        if handshake:
            await client.wait_handshake()
            if size is not None and client.params is not None \
                    and client.params.session_type != "Port":
                await client.send(PayloadType.SIZE, size.to_json())
        return client

    async def close_session(self, sid: str) -> None:
        self.terminated.add(sid)
        await self.send_control(ChannelClosed(sid, "mi-x").to_message())

    async def completion(self, sid: str, timeout: float = 10) -> AgentTaskComplete:
        event = self.completion_events.setdefault(sid, asyncio.Event())
        await asyncio.wait_for(event.wait(), timeout)
        return self.completions[sid][0]


class ClientEnd:
    """The client half of one data channel (what the plugin or portless client does)."""

    def __init__(self, side: DataSide, *, client_version: str = STOCK_CLIENT,
                 fast_path: FastPath | None = None) -> None:
        self.side = side
        self.stream = ReliableStream(
            StreamConfig(outgoing_type=MessageType.INPUT_STREAM_DATA, reack_duplicates=False),
            time.monotonic())
        self.hs = ClientHandshake(client_version=client_version, accept_fast_path=fast_path)
        self.params: SessionParams | None = None
        self.handshake_done = asyncio.Event()
        self.output = bytearray()
        self.stderr = bytearray()
        self.exit_code: int | None = None
        self.flags: list[int] = []
        self.messages: list[Message] = []
        self.states: list[str] = []
        self.changed = asyncio.Event()
        self.closed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.output_sizes: list[int] = []
        self.on_output: Callable[[bytes], None] | None = None

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._reader()), asyncio.create_task(self._timer())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _flush(self) -> None:
        for frame in self.stream.frames_to_send():
            await self.side.send(frame)

    async def _timer(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            self.stream.tick(time.monotonic())
            await self._flush()

    async def _reader(self) -> None:
        while True:
            frame = await self.side.frames.get()
            if frame is None:
                self.closed.set()
                self.changed.set()
                continue
            self.closed.clear()
            msg = decode(frame)                       # checks the digest unless zeroed
            self.messages.append(msg)
            if msg.message_type == MessageType.AGENT_SESSION_STATE:
                self.states.append(AgentSessionState.from_json(msg.payload).state)
                self.changed.set()
                continue
            for event in self.stream.receive(msg, time.monotonic()):
                if isinstance(event, Delivered):
                    await self._delivered(event)
            await self._flush()
            self.changed.set()

    async def _delivered(self, event: Delivered) -> None:
        ptype, payload = event.payload_type, event.payload
        if ptype == PayloadType.HANDSHAKE_REQUEST:
            await self.send(PayloadType.HANDSHAKE_RESPONSE, self.hs.receive_request(payload))
        elif ptype == PayloadType.HANDSHAKE_COMPLETE:
            self.params = self.hs.receive_complete(payload)
            fast = self.params.fast_path
            if fast is not None:
                self.stream.reconfigure(window=fast.window, digest=fast.digest,
                                        now=time.monotonic())
            self.handshake_done.set()
        elif ptype == PayloadType.OUTPUT:
            self.output += payload
            self.output_sizes.append(len(payload))
            if self.on_output is not None:
                self.on_output(payload)
        elif ptype == PayloadType.STDERR:
            self.stderr += payload
        elif ptype == PayloadType.EXIT_CODE:
            self.exit_code = decode_exit_code(payload)
        elif ptype == PayloadType.FLAG:
            self.flags.append(decode_flag(payload))

    async def send(self, payload_type: int, data: bytes) -> None:
        self.stream.send(payload_type, data, time.monotonic())
        await self._flush()

    async def type(self, text: str | bytes) -> None:
        await self.send(PayloadType.OUTPUT, text.encode() if isinstance(text, str) else text)

    async def wait_handshake(self, timeout: float = 10) -> SessionParams:
        await asyncio.wait_for(self.handshake_done.wait(), timeout)
        assert self.params is not None
        return self.params

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10,
                       what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out waiting for {what}; output ({len(self.output)} bytes) ends "
                    f"{bytes(self.output[-300:])!r}; stderr ends {bytes(self.stderr[-300:])!r}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.2))

    async def expect(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        """Wait until the output (decoded) matches `pattern` after the current mark."""
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            return regex.search(self.output.decode(errors="replace"))

        match: re.Match[str] = await self.wait_for(found, timeout, f"output /{pattern}/")
        return match

    async def wait_closed(self, timeout: float = 10) -> None:
        await self.wait_for(self.closed.is_set, timeout, "the agent to close the channel")
