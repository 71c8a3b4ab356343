"""The client end of a session's data channel (client spec §3, §6, §7).

Dials the StreamUrl verbatim, opens the channel with the token, runs the reliable
stream in the client role and the client half of the handshake, then hands the
session's bytes to a handler chosen by the session type (shell.py, port.py).  On a
lost WebSocket it resumes the session (ResumeSession, new token, same StreamUrl and
ClientId); `channel_closed` ends it with the plugin's exit text.

The reader, writer and resend timer are the shared ReliableChannel's (the handler is fed
in order and may await, which is the back-pressure for output); this module adds the
client's side: dialing, ResumeSession, the handshake, encryption and a pinger.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import ssl as ssl_module
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from portless.aio import with_timeout
from portless.channel import ReliableChannel
from portless.loopback import is_loopback
from portless.protocol.handshake import ClientHandshake, FastPath, HandshakeFailed, SessionParams
from portless.protocol.message import STOCK_CHUNK, Message, MessageType, PayloadType
from portless.protocol.payloads import ChannelClosed, OpenDataChannel, PayloadError
from portless.protocol.reliable import (
    ControlReceived,
    Delivered,
    ReliableStream,
    StreamConfig,
    StreamEvent,
)
from portless.protocol.versions import PORTLESS_CLIENT_VERSION

if TYPE_CHECKING:
    import aiohttp

    from portless.client.api import SessionApi
    from portless.protocol.encryption import SessionCipher
    from portless.protocol.handshake import DataKeyProvider

log = logging.getLogger(__name__)

CLIENT_ID = str(uuid.uuid4())
"""ClientId of this process: chosen once, the same across reconnects (client spec §3.3)."""

STOCK_PACING = 0.001
"""The plugin's pause after each message sent; kept with stock peers."""

ACCEPT_FAST_PATH = FastPath(max_payload=512 * 1024, window=64, digest=False, smux_version=2)
"""What we accept when a portless agent offers the fast path (the smaller values win)."""

MAX_WS_MESSAGE = 4 * 2**20 + 64 * 1024
"""The largest WebSocket message we take: a 4 MiB payload (the fast path's ceiling) plus
the frame header and margin; anything bigger is a protocol error, not a memory hazard."""
PING_INTERVAL = 300.0
DIAL_TIMEOUT = 45.0
OUT_HIGH_WATER = 1 << 20
"""Encoded bytes queued for the socket above which senders wait."""

RETRY_INITIAL = (0.1, 0.2)
RETRY_MAX_DELAY = 5.0
RETRY_COUNT = 5


@dataclass(slots=True)
class SessionInfo:
    """The StartSession response plus the target it was for."""

    session_id: str
    token: str
    stream_url: str
    target: str = ""


class Handler(Protocol):
    """What a session type plugs into the channel (shell.py, port.py)."""

    exit_status: int | None

    async def start(self) -> None:
        """Install the handler; call `channel.set_ready(True)` once data can be taken."""

    async def on_data(self, payload_type: int, payload: bytes) -> None:
        """In-order stream data from the peer (awaiting here slows the peer down)."""

    async def close(self) -> None:
        """Flush output, restore the terminal, close local sockets (idempotent)."""


HandlerFactory = Callable[["DataChannel", SessionParams | None], Handler]


def retry_delays() -> list[float]:
    """The plugin's policy: 100-199 ms, doubling, back to the start above 5 s; 5 retries."""
    initial = random.uniform(*RETRY_INITIAL)
    delays, delay = [], initial
    for _ in range(RETRY_COUNT):
        delays.append(delay)
        delay *= 2
        if delay > RETRY_MAX_DELAY:
            delay = initial
    return delays


class DataChannel:
    def __init__(
        self,
        info: SessionInfo,
        api: SessionApi,
        ssl: ssl_module.SSLContext | bool,
        handler_factory: HandlerFactory,
        *,
        say: Callable[[str], None],
        warn: Callable[[str], None] | None = None,
        accept_fast_path: FastPath | None = ACCEPT_FAST_PATH,
        data_key_provider: DataKeyProvider | None = None,
        exit_on_failure: int = 1,
    ) -> None:
        self.info = info
        self.api = api
        self.ssl = ssl
        self.factory = handler_factory
        self.say = say
        """Informational texts of the plugin (start, exit, ports)."""
        self.warn = warn or say
        """Problems and server-supplied texts the user must see even in quiet modes."""
        self.exit_on_failure = exit_on_failure
        self.loop = asyncio.get_running_loop()
        self.stream = ReliableStream(
            StreamConfig(outgoing_type=MessageType.INPUT_STREAM_DATA), self.loop.time())
        self.handshake = ClientHandshake(client_version=PORTLESS_CLIENT_VERSION,
                                         accept_fast_path=accept_fast_path,
                                         data_key_provider=data_key_provider)
        self.params: SessionParams | None = None
        self.fast_path: FastPath | None = None
        self.handler: Handler | None = None
        self.cipher: SessionCipher | None = None
        self._handshake_seen = False
        self._token = info.token
        self._done: asyncio.Future[int] = self.loop.create_future()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._http: aiohttp.ClientSession | None = None
        self.channel = ReliableChannel(
            self.stream, on_events=self._on_events, on_lost=self._reconnect,
            on_timeout=self._timed_out, on_error=self._task_failed, verify_digest=True,
            max_queued_bytes=OUT_HIGH_WATER, name=f"session {info.session_id}")
        self._tasks: list[asyncio.Task[Any]] = []
        self._bg: set[asyncio.Future[Any]] = set()

    # ---------------------------------------------------------------- for handlers

    @property
    def fast(self) -> bool:
        return self.fast_path is not None

    @property
    def max_payload(self) -> int:
        """Bytes per message: 1 KiB with stock peers, the agreed size on the fast path."""
        return self.fast_path.max_payload if self.fast_path else STOCK_CHUNK

    @property
    def pacing(self) -> float:
        return 0.0 if self.fast_path else STOCK_PACING

    @property
    def done(self) -> bool:
        return self._done.done()

    def set_ready(self, ready: bool) -> None:
        """The plugin's "not ready": while False, in-order data is neither acked nor taken."""
        self.stream.accepting = ready

    async def send(self, payload_type: int, payload: bytes) -> None:
        """Queue one stream message, waiting while the stream or the socket is backed up."""
        if self._done.done():
            return
        if self.cipher is not None and payload_type == PayloadType.OUTPUT:
            payload = self.cipher.encrypt(payload)
        await self.channel.send(payload_type, payload)

    def send_nowait(self, payload_type: int, payload: bytes) -> None:
        """Queue a small control message (size, flag) without waiting for room."""
        if self.cipher is not None and payload_type == PayloadType.OUTPUT:
            payload = self.cipher.encrypt(payload)
        self.channel.send_nowait(payload_type, payload)

    async def wait_sent(self, timeout: float) -> None:
        """Wait (bounded) until every queued frame was handed to the socket."""
        await self.channel.wait_sent(timeout)

    def finish(self, status: int) -> None:
        if not self._done.done():
            self._done.set_result(status)
            self.channel.end()

    async def terminate(self) -> None:
        """TerminateSession through the API (errors ignored)."""
        try:
            await self.api.terminate(self.info.session_id)
        except Exception as exc:
            log.debug("TerminateSession failed: %s", exc)

    def _background(self, coro: Any) -> None:
        """Run a fire-and-forget coroutine, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg_done)

    def _bg_done(self, task: asyncio.Future[Any]) -> None:
        self._bg.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("background task failed: %s", task.exception())

    # ----------------------------------------------------------------------- run

    async def run(self) -> int:
        import aiohttp

        host = urlsplit(self.info.stream_url).hostname or ""
        self._http = aiohttp.ClientSession(trust_env=not is_loopback(host))
        try:
            try:
                await self._connect_initial()
            except _ConnectFailed as exc:
                self.warn(f"Cannot perform start session: {exc}\n")
                return self.exit_on_failure
            self.channel.start()
            self._tasks = [asyncio.create_task(self._pinger(), name="datachannel-pinger")]
            return await self._done
        finally:
            await self._shutdown()

    def _task_failed(self, what: str, exc: Exception) -> None:
        if not self._done.done():
            log.debug("%s failed", what, exc_info=exc)
            self.warn(f"Cannot perform start session: {exc}\n")
            self.finish(self.exit_on_failure)

    def _timed_out(self) -> None:
        # The plugin asks the service to end the session; channel_closed follows.
        self._background(self.terminate())

    async def _shutdown(self) -> None:
        if self.handler is not None:
            with contextlib.suppress(Exception):
                await self.handler.close()
        # Let anything the handler queued last (a flag, final input) reach the socket.
        if self._ws is not None and not self._ws.closed:
            await self.channel.wait_sent(1.0)
        await self.channel.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._ws is not None:
            await _close_ws(self._ws)
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.close()

    # ------------------------------------------------------------------ connect

    async def _dial(self, token: str) -> aiohttp.ClientWebSocketResponse:
        """Connect and send OpenDataChannel within DIAL_TIMEOUT; a half-opened socket is
        closed again when the rest fails (nothing leaks per retry)."""
        import aiohttp

        assert self._http is not None
        kwargs: dict[str, Any] = {"ssl": self.ssl, "max_msg_size": MAX_WS_MESSAGE,
                                  "autoping": True, "autoclose": True, "compress": 0,
                                  "heartbeat": None}
        if hasattr(aiohttp, "ClientWSTimeout"):
            kwargs["timeout"] = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0)
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            async with asyncio.timeout(DIAL_TIMEOUT):
                ws = await self._http.ws_connect(self.info.stream_url, **kwargs)
                opening = OpenDataChannel(token=token, client_id=CLIENT_ID,
                                          client_version=PORTLESS_CLIENT_VERSION)
                await ws.send_str(opening.to_json())
            return ws
        except BaseException as exc:
            if ws is not None:
                if isinstance(exc, asyncio.CancelledError):
                    self._background(_close_ws(ws))
                else:
                    await _close_ws(ws)
            raise

    def _attach(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self.channel.attach(_WsFrames(ws))
        self._background(ws.ping(b"keepalive"))

    async def _connect_initial(self) -> None:
        """First dial; retried with the same token and no ResumeSession (client spec §6.6)."""
        last: BaseException | None = None
        for delay in [*retry_delays(), None]:
            try:
                self._attach(await self._dial(self._token))
                return
            except (OSError, TimeoutError, ssl_module.SSLError) as exc:
                last = exc
            except Exception as exc:
                if not _is_client_error(exc):
                    raise
                last = exc
            if delay is None:
                break
            await asyncio.sleep(delay)
        raise _ConnectFailed(_describe(last))

    async def _reconnect(self) -> bool:
        """ResumeSession, then re-dial the original StreamUrl with the new token."""
        old, self._ws = self._ws, None
        if old is not None and not old.closed:
            self._background(_close_ws(old))
        for delay in [*retry_delays(), None]:
            if self._done.done():
                return False
            try:
                token = await self.api.resume(self.info.session_id)
            except Exception as exc:
                log.debug("ResumeSession failed: %s", exc)
                token = ""
                failed = True
            else:
                failed = False
                if not token:
                    self.warn(f"Session: {self.info.session_id} timed out.\n")
                    self.finish(self.exit_on_failure)
                    return False
            if not failed:
                self._token = token or self._token
                try:
                    self._attach(await self._dial(self._token))
                    return True
                except Exception as exc:
                    if not (isinstance(exc, OSError | TimeoutError | ssl_module.SSLError)
                            or _is_client_error(exc)):
                        raise
                    log.debug("re-dial failed: %s", exc)
            if delay is None:
                break
            await asyncio.sleep(delay)
        self.warn(f"Cannot perform start session: connection to the session {self.info.session_id} "
                 "was lost and could not be resumed\n")
        self.finish(self.exit_on_failure)
        return False

    # ------------------------------------------------------------------- tasks

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            ws = self._ws
            if ws is not None and not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.ping(b"keepalive")

    # ----------------------------------------------------------------- receive

    async def _on_events(self, events: list[StreamEvent]) -> None:
        for event in events:
            if self._done.done():
                return
            if isinstance(event, Delivered):
                await self._deliver(event.payload_type, event.payload)
            elif (isinstance(event, ControlReceived)
                  and event.message.message_type == MessageType.CHANNEL_CLOSED):
                await self._channel_closed(event.message)

    async def _channel_closed(self, msg: Message) -> None:
        output = ""
        with contextlib.suppress(PayloadError):
            output = ChannelClosed.from_json(msg.payload).output
        if self.handler is not None:
            with contextlib.suppress(Exception):
                await self.handler.close()
        sid = self.info.session_id
        if output:
            self.warn(f"\n\nSessionId: {sid} : {output}\n\n")
        else:
            self.say(f"\n\nExiting session with sessionId: {sid}.\n\n")
        status = 0
        if self.handler is not None and self.handler.exit_status is not None:
            status = self.handler.exit_status
        self.finish(status)

    async def _deliver(self, payload_type: int, payload: bytes) -> None:
        if self.cipher is not None and payload_type in (
                PayloadType.OUTPUT, PayloadType.STDERR, PayloadType.EXIT_CODE):
            from portless.protocol.encryption import EncryptionError

            try:
                payload = self.cipher.decrypt(payload)
            except EncryptionError as exc:
                log.debug("dropping undecryptable payload: %s", exc)
                return
        if self.handler is not None:
            await self.handler.on_data(payload_type, payload)
            return
        if payload_type == PayloadType.HANDSHAKE_REQUEST:
            self._handshake_seen = True
            await self._handshake_request(payload)
        elif payload_type == PayloadType.ENC_CHALLENGE_REQUEST:
            self._challenge(payload)
        elif payload_type == PayloadType.HANDSHAKE_COMPLETE:
            await self._handshake_complete(payload)
        elif payload_type == PayloadType.OUTPUT and not self._handshake_seen:
            # No handshake: the first output makes this a shell session (client spec §7.8).
            await self._start_handler(None)
            if self.handler is not None:
                await self.handler.on_data(payload_type, payload)
        # Anything else before the session type is known is acked and dropped.

    async def _handshake_request(self, payload: bytes) -> None:
        try:
            if self.handshake.data_key_provider is not None and b"KMSEncryption" in payload:
                response = await asyncio.to_thread(self.handshake.receive_request, payload)
            else:
                response = self.handshake.receive_request(payload)
        except HandshakeFailed as exc:
            log.debug("handshake request: %s", exc)
            return
        if self.handshake.data_key is not None:
            from portless.protocol.encryption import SessionCipher

            self.cipher = SessionCipher(self.handshake.data_key, is_client=True)
        self.send_nowait(PayloadType.HANDSHAKE_RESPONSE, response)

    def _challenge(self, payload: bytes) -> None:
        if self.cipher is None:
            return
        from portless.protocol.encryption import EncryptionError, challenge_response

        try:
            challenge = json.loads(payload)["Challenge"]
            answer = challenge_response(self.cipher, base64.b64decode(challenge))
        except (ValueError, KeyError, TypeError, EncryptionError) as exc:
            log.debug("bad encryption challenge: %s", exc)
            return
        body = json.dumps({"Challenge": base64.b64encode(answer).decode()},
                          separators=(",", ":")).encode()
        self.send_nowait(PayloadType.ENC_CHALLENGE_RESPONSE, body)

    async def _handshake_complete(self, payload: bytes) -> None:
        try:
            params = self.handshake.receive_complete(payload)
        except HandshakeFailed as exc:
            self.warn(f"Cannot perform start session: {exc.reason}\n")
            self.finish(self.exit_on_failure)
            return
        self.params = params
        if params.customer_message:
            self.say(params.customer_message + "\n")
        if params.fast_path is not None:
            self.fast_path = params.fast_path
            self.channel.reconfigure(window=params.fast_path.window,
                                     digest=params.fast_path.digest,
                                     max_payload=params.fast_path.max_payload)
        await self._start_handler(params)

    async def _start_handler(self, params: SessionParams | None) -> None:
        # Not ready until the handler says so (client spec §6.2).
        self.set_ready(False)
        handler = self.factory(self, params)
        self.handler = handler
        await handler.start()


class _ConnectFailed(Exception):
    pass


class _WsFrames:
    """An aiohttp client WebSocket as the FrameSocket that ReliableChannel drives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        import aiohttp

        self.ws = ws
        self._binary = aiohttp.WSMsgType.BINARY
        self._text = aiohttp.WSMsgType.TEXT
        self._done = frozenset({aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR})
        self._errors = (aiohttp.ClientError, ConnectionError)

    async def receive(self) -> bytes | None:
        while True:
            try:
                msg = await self.ws.receive()
            except self._errors as exc:
                log.debug("data channel read failed: %s", exc)
                return None
            kind = msg.type
            if kind == self._binary:
                data: bytes = msg.data
                return data
            if kind == self._text:
                text: str = msg.data
                return text.encode()
            if kind in self._done:
                return None

    async def send_many(self, frames: list[bytes]) -> None:
        send = self.ws.send_bytes
        for frame in frames:
            await send(frame)


def _is_client_error(exc: BaseException) -> bool:
    import aiohttp

    return isinstance(exc, aiohttp.ClientError)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "could not connect"
    import aiohttp

    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"data channel refused: HTTP {exc.status} {exc.message}"
    if isinstance(exc, TimeoutError):
        return "timed out connecting to the data channel"
    return str(exc) or type(exc).__name__


async def _close_ws(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Close `ws`, waiting at most a second; errors ignored."""
    with contextlib.suppress(Exception):
        await with_timeout(ws.close(), 1.0)
