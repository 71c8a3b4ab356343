"""The client end of a session's data channel (client spec §3, §6, §7).

Dials the StreamUrl verbatim, opens the channel with the token, runs the reliable
stream in the client role and the client half of the handshake, then hands the
session's bytes to a handler chosen by the session type (shell.py, port.py).  On a
lost WebSocket it resumes the session (ResumeSession, new token, same StreamUrl and
ClientId); `channel_closed` ends it with the plugin's exit text.

Tasks: one reader (frames in, handler fed in order: it may await, which is the
back-pressure for output), one writer (frames out, in order), one timer (resends), one
pinger.  The reader never waits for the writer's socket, so a peer that is slow to read
cannot stop us from reading its acknowledgements.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import ipaddress
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
from portless.protocol.handshake import ClientHandshake, FastPath, HandshakeFailed, SessionParams
from portless.protocol.message import (
    STOCK_CHUNK,
    Message,
    MessageError,
    MessageType,
    PayloadType,
    decode,
)
from portless.protocol.payloads import ChannelClosed, OpenDataChannel, PayloadError
from portless.protocol.reliable import (
    Acked,
    BufferFull,
    ControlReceived,
    Delivered,
    ReliableStream,
    StreamConfig,
    StreamEvent,
    StreamTimedOut,
    Writable,
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


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        self._connected = asyncio.Event()
        self._outq: collections.deque[bytes] = collections.deque()
        self._outq_bytes = 0
        self._out_ready = asyncio.Event()
        self._out_room = asyncio.Event()
        self._out_room.set()
        self._out_empty = asyncio.Event()
        self._out_empty.set()
        self._writable = asyncio.Event()
        self._writable.set()
        self._acked_all = asyncio.Event()
        self._acked_all.set()
        self._timer_wake = asyncio.Event()
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
        while not self._done.done():
            if not self.stream.writable:
                self._writable.clear()
                await self._wait_or_done(self._writable)
                continue
            if self._outq_bytes >= OUT_HIGH_WATER:
                await self._wait_or_done(self._out_room)
                continue
            break
        if self._done.done():
            return
        if self.cipher is not None and payload_type == PayloadType.OUTPUT:
            payload = self.cipher.encrypt(payload)
        while True:
            try:
                self.stream.send(payload_type, payload, self.loop.time())
                break
            except BufferFull:
                self._writable.clear()
                await self._wait_or_done(self._writable)
                if self._done.done():
                    return
        self._acked_all.clear()
        self._flush()
        if self._timer_wake is not None:
            self._timer_wake.set()

    def send_nowait(self, payload_type: int, payload: bytes) -> None:
        """Queue a small control message (size, flag) without waiting for room."""
        if self.cipher is not None and payload_type == PayloadType.OUTPUT:
            payload = self.cipher.encrypt(payload)
        with contextlib.suppress(BufferFull):
            self.stream.send(payload_type, payload, self.loop.time())
            self._acked_all.clear()
            self._flush()
            self._timer_wake.set()

    async def wait_acked(self, timeout: float) -> None:
        """Wait (bounded) until the peer acknowledged everything we sent."""
        with contextlib.suppress(TimeoutError):
            await with_timeout(self._acked_all.wait(), timeout)

    async def wait_sent(self, timeout: float) -> None:
        """Wait (bounded) until every queued frame was handed to the socket."""
        self._flush()
        with contextlib.suppress(TimeoutError):
            await with_timeout(self._out_empty.wait(), timeout)

    def finish(self, status: int) -> None:
        if not self._done.done():
            self._done.set_result(status)

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

    async def _wait_or_done(self, event: asyncio.Event) -> None:
        if event.is_set():
            return
        waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
        futures: set[asyncio.Future[Any]] = {waiter, self._done}
        try:
            await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    # ----------------------------------------------------------------------- run

    async def run(self) -> int:
        import aiohttp

        self._http = aiohttp.ClientSession(trust_env=not _is_loopback(self.info.stream_url))
        try:
            try:
                await self._connect_initial()
            except _ConnectFailed as exc:
                self.warn(f"Cannot perform start session: {exc}\n")
                return self.exit_on_failure
            self._tasks = [
                asyncio.create_task(self._reader(), name="datachannel-reader"),
                asyncio.create_task(self._writer(), name="datachannel-writer"),
                asyncio.create_task(self._timer(), name="datachannel-timer"),
                asyncio.create_task(self._pinger(), name="datachannel-pinger"),
            ]
            for task in self._tasks:
                task.add_done_callback(self._task_done)
            return await self._done
        finally:
            await self._shutdown()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not self._done.done():
            log.debug("task %s failed", task.get_name(), exc_info=exc)
            self.warn(f"Cannot perform start session: {exc}\n")
            self.finish(self.exit_on_failure)

    async def _shutdown(self) -> None:
        if self.handler is not None:
            with contextlib.suppress(Exception):
                await self.handler.close()
        # Let anything the handler queued last (a flag, final input) reach the socket.
        if self._ws is not None and not self._ws.closed:
            self._flush()
            with contextlib.suppress(TimeoutError):
                await with_timeout(self._out_empty.wait(), 1.0)
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
        self._outq.clear()
        self._outq_bytes = 0
        self._out_room.set()
        self._out_empty.set()
        self.stream.reconnected(self.loop.time())
        self._connected.set()
        self._flush()
        self._timer_wake.set()
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
        self._connected.clear()
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

    async def _reader(self) -> None:
        import aiohttp

        while not self._done.done():
            ws = self._ws
            if ws is None:
                return
            try:
                async for wsmsg in ws:
                    if wsmsg.type == aiohttp.WSMsgType.BINARY:
                        await self._on_frame(wsmsg.data)
                    elif wsmsg.type == aiohttp.WSMsgType.TEXT:
                        await self._on_frame(wsmsg.data.encode())
                    elif wsmsg.type == aiohttp.WSMsgType.ERROR:
                        break
                    if self._done.done():
                        return
            except (aiohttp.ClientError, ConnectionError) as exc:
                log.debug("data channel read failed: %s", exc)
            if self._done.done():
                return
            if not await self._reconnect():
                return

    async def _writer(self) -> None:
        while True:
            if not self._outq:
                self._out_ready.clear()
                await self._out_ready.wait()
                continue
            ws = self._ws
            if ws is None:
                await self._connected.wait()
                continue
            frame = self._outq.popleft()
            self._outq_bytes -= len(frame)
            try:
                await ws.send_bytes(frame)
            except Exception as exc:
                # The reader notices the dead socket and reconnects; unacked data is resent.
                log.debug("data channel write failed: %s", exc)
            if self._outq_bytes < OUT_HIGH_WATER // 2:
                self._out_room.set()
            if not self._outq:
                self._out_empty.set()

    def _flush(self) -> None:
        frames = self.stream.frames_to_send()
        if not frames:
            return
        for frame in frames:
            self._outq.append(frame)
            self._outq_bytes += len(frame)
        self._out_empty.clear()
        if self._outq_bytes >= OUT_HIGH_WATER:
            self._out_room.clear()
        self._out_ready.set()

    async def _timer(self) -> None:
        while True:
            deadline = self.stream.next_deadline()
            self._timer_wake.clear()
            if deadline is None:
                await self._timer_wake.wait()
                continue
            delay = deadline - self.loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await with_timeout(self._timer_wake.wait(), delay)
                continue
            if self._ws is None:
                await self._connected.wait()
                continue
            for event in self.stream.tick(self.loop.time()):
                await self._on_event(event)
            self._flush()

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            ws = self._ws
            if ws is not None and not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.ping(b"keepalive")

    # ----------------------------------------------------------------- receive

    async def _on_frame(self, frame: bytes) -> None:
        try:
            # Like the plugin: PayloadLength and PayloadType are not checked; a bad digest
            # drops the message silently (the peer resends it).
            msg = decode(frame, verify_digest=self.stream.config.digest, strict=False)
        except MessageError as exc:
            log.debug("dropping malformed frame: %s", exc)
            return
        events = self.stream.receive(msg, self.loop.time())
        # Acknowledge before processing (handshake messages must be acked first).
        self._flush()
        for event in events:
            await self._on_event(event)
            if self._done.done():
                return
        self._flush()

    async def _on_event(self, event: StreamEvent) -> None:
        if isinstance(event, Delivered):
            await self._deliver(event.payload_type, event.payload)
        elif isinstance(event, Acked):
            if self.stream.unacked == 0:
                self._acked_all.set()
        elif isinstance(event, Writable):
            self._writable.set()
        elif isinstance(event, ControlReceived):
            if event.message.message_type == MessageType.CHANNEL_CLOSED:
                await self._channel_closed(event.message)
        elif isinstance(event, StreamTimedOut):
            # The plugin asks the service to end the session; channel_closed follows.
            self._background(self.terminate())

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
            self.stream.reconfigure(window=params.fast_path.window,
                                    digest=params.fast_path.digest, now=self.loop.time(),
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
