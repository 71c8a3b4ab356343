"""An in-process stand-in for the portless server and an agent behind it.

One aiohttp app on loopback serves the SSM JSON API (StartSession, ResumeSession,
TerminateSession, DescribeSessions, DescribeInstanceInformation; signatures are not
checked) and the data-channel WebSocket.  Each session's far end is a `FakeAgent` built
from the protocol classes (AgentHandshake + ReliableStream in the agent role) whose state
survives reconnects, as a real agent's does.  Tests drive the agent side directly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from portless.protocol.encryption import SessionCipher, challenge_request, verify_challenge
from portless.protocol.handshake import AgentHandshake, FastPath, SessionParams
from portless.protocol.message import Message, MessageError, MessageType, PayloadType, decode
from portless.protocol.payloads import ChannelClosed, OpenDataChannel
from portless.protocol.reliable import (
    ControlReceived,
    Delivered,
    ReliableStream,
    StreamConfig,
)
from portless.protocol.versions import PORTLESS_AGENT_VERSION

AGENT_FAST_PATH = FastPath(max_payload=64 * 1024, window=32, digest=False, smux_version=2)


@dataclass
class Received:
    payload_type: int
    payload: bytes


class FakeAgent:
    """The agent end of one session: handshake, reliable stream, an inbox of client input."""

    def __init__(self, session_id: str, session_type: str, properties: Any = None, *,
                 agent_version: str = PORTLESS_AGENT_VERSION,
                 offer_fast_path: FastPath | None = AGENT_FAST_PATH,
                 handshake: bool = True,
                 kms_keys: dict[bytes, bytes] | None = None) -> None:
        self.session_id = session_id
        self.loop = asyncio.get_running_loop()
        self.stream = ReliableStream(StreamConfig(outgoing_type=MessageType.OUTPUT_STREAM_DATA),
                                     self.loop.time())
        self.do_handshake = handshake
        self.handshake = AgentHandshake(session_type=session_type, properties=properties,
                                        agent_version=agent_version,
                                        offer_fast_path=offer_fast_path, now=self.loop.time())
        self.params: SessionParams | None = None
        self.ready = asyncio.Event()
        """Set once the handshake completed (or at once without a handshake)."""
        self.inbox: asyncio.Queue[Received] = asyncio.Queue()
        self.opens: list[OpenDataChannel] = []
        self.ws: web.WebSocketResponse | None = None
        self.connected = asyncio.Event()
        self.started = False
        self.acks_sent = 0
        self.frames_in: list[Message] = []
        self.on_data: Callable[[Received], Awaitable[None] | None] | None = None
        self._outq: asyncio.Queue[bytes] = asyncio.Queue()
        self.kms_keys = kms_keys
        """With a dict (ciphertext blob -> data key) the agent asks for KMS encryption."""
        self.cipher: SessionCipher | None = None
        self._challenge: bytes | None = None

    # ------------------------------------------------------------- transport
    def flush(self) -> None:
        frames = self.stream.frames_to_send()
        if self.ws is None or self.ws.closed:
            return
        for frame in frames:
            self._outq.put_nowait(frame)

    async def _writer(self, ws: web.WebSocketResponse) -> None:
        while True:
            frame = await self._outq.get()
            with contextlib.suppress(Exception):
                await ws.send_bytes(frame)

    async def attach(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._outq = asyncio.Queue()
        writer = asyncio.create_task(self._writer(ws))
        self.connected.set()
        self.stream.reconnected(self.loop.time())
        if not self.started:
            self.started = True
            if self.do_handshake:
                request = self.handshake.request()
                if self.kms_keys is not None:
                    obj = json.loads(request)
                    obj["RequestedClientActions"].append({
                        "ActionType": "KMSEncryption",
                        "ActionParameters": {"KMSKeyId": "alias/test", "Challenge": "x"}})
                    request = json.dumps(obj).encode()
                self.stream.send(PayloadType.HANDSHAKE_REQUEST, request, self.loop.time())
            else:
                self.ready.set()
        self.flush()
        timer = asyncio.create_task(self._ticker())
        try:
            async for wsmsg in ws:
                if wsmsg.type == WSMsgType.BINARY:
                    await self._on_frame(wsmsg.data)
        finally:
            timer.cancel()
            writer.cancel()
            if self.ws is ws:
                self.ws = None
                self.connected.clear()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            self.stream.tick(self.loop.time())
            self.flush()

    async def _on_frame(self, frame: bytes) -> None:
        try:
            msg = decode(frame, verify_digest=True)
        except MessageError:
            return
        self.frames_in.append(msg)
        before = len(self.stream._out)
        events = self.stream.receive(msg, self.loop.time())
        self.acks_sent += len(self.stream._out) - before
        self.flush()  # acks first
        for ev in events:
            if isinstance(ev, Delivered):
                if ev.payload_type == PayloadType.HANDSHAKE_RESPONSE and self.params is None:
                    self.params = self.handshake.receive_response(ev.payload, self.loop.time())
                    fast = self.params.fast_path
                    if fast is not None:
                        self.stream.reconfigure(window=fast.window, digest=fast.digest,
                                                now=self.loop.time())
                    self.flush()
                    if self.kms_keys is not None:
                        self._start_challenge(ev.payload)
                        continue
                    self.send(PayloadType.HANDSHAKE_COMPLETE, self.handshake.complete(
                        self.loop.time(), ""))
                    self.ready.set()
                    continue
                if ev.payload_type == PayloadType.ENC_CHALLENGE_RESPONSE and self.cipher:
                    answer = base64.b64decode(json.loads(ev.payload)["Challenge"])
                    assert self._challenge is not None
                    verify_challenge(self.cipher, self._challenge, answer)
                    self.send(PayloadType.HANDSHAKE_COMPLETE, self.handshake.complete(
                        self.loop.time(), "This session is encrypted using AWS KMS."))
                    self.ready.set()
                    continue
                payload = ev.payload
                if self.cipher is not None and ev.payload_type == PayloadType.OUTPUT:
                    payload = self.cipher.decrypt(payload)
                item = Received(ev.payload_type, payload)
                if self.on_data is not None:
                    result = self.on_data(item)
                    if result is not None:
                        await result
                else:
                    self.inbox.put_nowait(item)
            elif isinstance(ev, ControlReceived):
                pass

    def _start_challenge(self, response: bytes) -> None:
        assert self.kms_keys is not None
        for action in json.loads(response)["ProcessedClientActions"]:
            if action["ActionType"] == "KMSEncryption":
                blob = base64.b64decode(action["ActionResult"]["KMSCipherTextKey"])
                self.cipher = SessionCipher(self.kms_keys[blob], is_client=False)
        assert self.cipher is not None, "client did not do KMSEncryption"
        self._challenge, request = challenge_request(self.cipher)
        self.send(PayloadType.ENC_CHALLENGE_REQUEST, json.dumps(
            {"Challenge": base64.b64encode(request).decode()}).encode())

    # --------------------------------------------------------------- driving
    def send(self, payload_type: int, payload: bytes) -> int:
        if self.cipher is not None and payload_type in (
                PayloadType.OUTPUT, PayloadType.STDERR, PayloadType.EXIT_CODE):
            payload = self.cipher.encrypt(payload)
        seq = self.stream.send(payload_type, payload, self.loop.time())
        self.flush()
        return seq

    async def next_input(self, timeout: float = 5.0) -> Received:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def input_until(self, predicate: Callable[[bytes], bool], timeout: float = 5.0
                          ) -> bytes:
        """Concatenated PayloadType-1 input until `predicate(data)` holds."""
        data = b""
        async with asyncio.timeout(timeout):
            while not predicate(data):
                item = await self.inbox.get()
                if item.payload_type == PayloadType.OUTPUT:
                    data += item.payload
        return data

    async def close_channel(self, output: str = "") -> None:
        """channel_closed, after everything queued before it."""
        if self.ws is not None and not self.ws.closed:
            msg = ChannelClosed(session_id=self.session_id, destination_id="mi-0", output=output)
            self._outq.put_nowait(msg.to_message().encode())

    async def drop_connection(self) -> None:
        """Close the WebSocket without channel_closed (the client must resume)."""
        ws = self.ws
        if ws is not None:
            await ws.close()

    async def wait_acked(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.stream.unacked:
                await asyncio.sleep(0.01)


@dataclass
class FakeServer:
    """Holds sessions by id and token; `app()` builds the aiohttp application."""

    base_url: str = ""
    agents: dict[str, FakeAgent] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    start_handler: Callable[[dict[str, Any]], FakeAgent | dict[str, Any]] | None = None
    resume_tokens: bool = True
    nodes: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    kms_keys: dict[bytes, bytes] = field(default_factory=dict)
    kms_calls: list[dict[str, Any]] = field(default_factory=list)

    def new_session(self, session_type: str, properties: Any = None, **kw: Any) -> FakeAgent:
        sid = f"alice-{uuid.uuid4().hex[:17]}"
        agent = FakeAgent(sid, session_type, properties, **kw)
        self.agents[sid] = agent
        return agent

    def issue_token(self, sid: str) -> str:
        token = f"tok-{uuid.uuid4().hex}"
        self.tokens[token] = sid
        return token

    def stream_url(self, sid: str) -> str:
        return f"{self.base_url.replace('http', 'ws', 1)}/v1/data-channel/{sid}?role=publish_subscribe"

    def start_response(self, agent: FakeAgent) -> dict[str, Any]:
        return {"SessionId": agent.session_id, "TokenValue": self.issue_token(agent.session_id),
                "StreamUrl": self.stream_url(agent.session_id)}

    # ------------------------------------------------------------------ HTTP
    async def api(self, request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "")
        op = target.split(".", 1)[-1]
        body = await request.json() if request.can_read_body else {}
        self.calls.append((op, body))

        def ok(obj: dict[str, Any]) -> web.Response:
            return web.Response(text=json.dumps(obj), content_type="application/x-amz-json-1.1")

        def err(code: str, message: str, status: int = 400) -> web.Response:
            return web.Response(status=status, text=json.dumps({"__type": code,
                                                                "message": message}),
                                content_type="application/x-amz-json-1.1")

        if op == "GenerateDataKey":  # KMS (TrentService)
            self.kms_calls.append(body)
            key, blob = os.urandom(body["NumberOfBytes"]), os.urandom(48)
            self.kms_keys[blob] = key
            return ok({"KeyId": body["KeyId"], "Plaintext": base64.b64encode(key).decode(),
                       "CiphertextBlob": base64.b64encode(blob).decode()})
        if op == "StartSession":
            if self.start_handler is None:
                return err("TargetNotConnected", f"{body.get('Target')} is not connected.")
            result = self.start_handler(body)
            if isinstance(result, FakeAgent):
                return ok(self.start_response(result))
            return err(result["code"], result["message"])
        if op == "ResumeSession":
            sid = body.get("SessionId", "")
            if sid not in self.agents:
                return err("DoesNotExistException", f"Session {sid} does not exist")
            token = self.issue_token(sid) if self.resume_tokens else ""
            return ok({"SessionId": sid, "TokenValue": token, "StreamUrl": self.stream_url(sid)})
        if op == "TerminateSession":
            sid = body.get("SessionId", "")
            agent = self.agents.get(sid)
            if agent is not None:
                await agent.close_channel()
            return ok({"SessionId": sid})
        if op == "DescribeInstanceInformation":
            return ok({"InstanceInformationList": self.nodes})
        if op == "DescribeSessions":
            return ok({"Sessions": [s for s in self.sessions
                                    if (s.get("Status") == "Terminated") ==
                                    (body.get("State") == "History")]})
        return err("UnknownOperationException", f"Unknown operation {op}")

    async def data_channel(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        first = await ws.receive()
        if first.type != WSMsgType.TEXT:
            await ws.close()
            return ws
        opening = OpenDataChannel.from_json(first.data)
        sid = self.tokens.get(opening.token)
        if sid is None or sid != request.match_info["sid"]:
            await ws.close(code=4001, message=b"bad token")
            return ws
        agent = self.agents[sid]
        agent.opens.append(opening)
        await agent.attach(ws)
        return ws

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self.api)
        app.router.add_get("/v1/data-channel/{sid}", self.data_channel)
        return app

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app(), handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for agent in self.agents.values():
            if agent.ws is not None:
                with contextlib.suppress(Exception):
                    await agent.ws.close()
        if self.runner is not None:
            await self.runner.cleanup()


class ThreadedServer:
    """A FakeServer on its own loop in a thread, for code that runs its own event loop."""

    def __init__(self) -> None:
        import threading

        self.server = FakeServer()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.call(self.server.start())

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            return fn()
        return self.call(wrapper())

    def spawn(self, coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self.loop.is_running():
            self.loop.close()
