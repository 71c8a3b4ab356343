"""One session's data channel, agent side (agent spec §11).

CreateDataChannel → signed WebSocket `?role=publish_subscribe` → OpenDataChannel (text) →
`agent_session_state` Connected → handshake → session plugin → drain (≤ 2 s) →
`agent_session_state` Terminating (shell types) → close. Sequencing, acks and
retransmission are the sans-I/O ReliableStream's, its tasks and back-pressure the shared
ReliableChannel's; this module owns the agent's side: opening the channel, reconnection
through CreateDataChannel (same sequence numbers, up to 6 attempts), the handshake and the
plugin's view (SessionIO).

The handshake is always performed, for every session type, so that a portless client can
negotiate the fast path (large payloads, a window, no digests) and exit codes; a stock
client answers the extra action "unsupported" and gets exactly the stock behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from portless.agent.api import AgentApi, MgsError
from portless.agent.sessions.base import STOCK_CHUNK, SessionClosed, SessionFailed, SessionPlugin
from portless.agent.sessions.commands import CommandsPlugin
from portless.agent.sessions.document import SessionSpec
from portless.agent.sessions.port import PortPlugin
from portless.agent.sessions.shell import ShellPlugin
from portless.agent.websocket import AgentSocket, Keepalive
from portless.aio import with_timeout
from portless.channel import ReliableChannel
from portless.protocol.handshake import (
    AgentHandshake,
    FastPath,
    HandshakeFailed,
    PortMode,
    SessionParams,
)
from portless.protocol.message import MessageType, PayloadType
from portless.protocol.payloads import (
    AgentSessionState,
    ChannelClosed,
    OpenDataChannel,
    PayloadError,
    SessionType,
)
from portless.protocol.reliable import (
    ControlReceived,
    Delivered,
    ReliableStream,
    StreamConfig,
    StreamEvent,
)
from portless.protocol.versions import PORTLESS_AGENT_VERSION

log = logging.getLogger(__name__)

FAST_PATH_OFFER = FastPath(max_payload=512 * 1024, window=32, digest=False, smux_version=2)
"""What the agent offers a portless client; the client may lower any of it."""

HANDSHAKE_TIMEOUT_TEXT = ("Handshake timed out. Please ensure that you have the latest version "
                          "of the session manager plugin.")
SHELL_TYPES = frozenset({SessionType.STANDARD_STREAM, SessionType.INTERACTIVE_COMMANDS,
                         SessionType.NON_INTERACTIVE_COMMANDS})

SUCCESS = "Success"
FAILED = "Failed"


@dataclass(slots=True)
class DataChannelTiming:
    keepalive: Keepalive = field(default_factory=Keepalive)
    attempts: int = 6
    first_delay: tuple[float, float] = (0.1, 0.2)
    max_delay: float = 5.0
    handshake_timeout: float = 15.0
    drain: float = 2.0


@dataclass(slots=True)
class TaskResult:
    status: str
    output: str = ""


class _SetupFailed(Exception):
    pass


class DataChannel:
    """Runs one session end to end; `cancel()` ends it early (FinalTaskStatus Success)."""

    def __init__(self, api: AgentApi, instance_id: str, spec: SessionSpec, *,
                 timing: DataChannelTiming | None = None,
                 offer_fast_path: FastPath | None = FAST_PATH_OFFER,
                 plugin_factory: Callable[[SessionSpec, SessionParams], SessionPlugin] | None
                 = None) -> None:
        self.api = api
        self.instance_id = instance_id
        self.spec = spec
        self.timing = timing or DataChannelTiming()
        self.offer_fast_path = offer_fast_path
        self.plugin_factory = plugin_factory or make_plugin
        loop = asyncio.get_running_loop()
        self._loop = loop
        config = StreamConfig(outgoing_type=MessageType.OUTPUT_STREAM_DATA,
                              max_unacked=100000, max_reorder=100000, max_resends=2**62)
        self.stream = ReliableStream(config, loop.time())
        self.channel = ReliableChannel(
            self.stream, on_events=self._handle, on_lost=self._lost, on_timeout=self._timed_out,
            on_error=self._task_failed, verify_digest=False,
            name=f"session {spec.session_id}")
        self._sock: AgentSocket | None = None
        self._over = asyncio.Event()
        self._over_reason: TaskResult | None = None
        self._cancelled = False
        self._ending = False
        self._handshake: AgentHandshake | None = None
        self._handshake_done: asyncio.Future[SessionParams] = loop.create_future()
        self._params: SessionParams | None = None
        self._plugin: SessionPlugin | None = None
        self._plugin_ready = False
        self._early: list[tuple[int, bytes]] = []

    # ------------------------------------------------------------ SessionIO

    @property
    def max_payload(self) -> int:
        fast = self._params.fast_path if self._params is not None else None
        return fast.max_payload if fast is not None else STOCK_CHUNK

    @property
    def fast_path(self) -> bool:
        return self._params is not None and self._params.fast_path is not None

    async def send(self, payload_type: int, data: bytes) -> None:
        if not await self.channel.send(payload_type, data):
            raise SessionClosed("the session is over")

    def set_ready(self, ready: bool) -> None:
        if ready and not self._plugin_ready and self._plugin is not None:
            self._plugin_ready = True
            early, self._early = self._early, []
            for payload_type, payload in early:
                self._deliver(payload_type, payload)
        self.stream.accepting = ready and self._plugin is not None

    # ------------------------------------------------------------ lifecycle

    def cancel(self, reason: str = "cancelled") -> None:
        """channel_closed (control or data channel) or agent shutdown: end with Success."""
        if not self._over.is_set():
            self._cancelled = True
        self._end(TaskResult(SUCCESS), reason)

    def _end(self, result: TaskResult, reason: str) -> None:
        if not self._over.is_set():
            log.info("session %s: ending (%s)", self.spec.session_id, reason)
            self._over_reason = result
            self._over.set()
            self.channel.end()

    async def run(self) -> TaskResult:
        sid = self.spec.session_id
        try:
            await self._connect(first=True)
        except _SetupFailed as exc:
            return TaskResult(FAILED, f"Setting up data channel with id {sid} failed: {exc}")
        self.channel.start()
        result = TaskResult(SUCCESS)
        try:
            session = asyncio.create_task(self._session())
            over = asyncio.create_task(self._over.wait())
            await asyncio.wait({session, over}, return_when=asyncio.FIRST_COMPLETED)
            if not session.done():
                session.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                result = await session
            over.cancel()
            if self._over_reason is not None:
                result = self._over_reason
        except asyncio.CancelledError:
            result = TaskResult(SUCCESS)
            raise
        finally:
            await asyncio.shield(self._finish(result))
        return result

    async def _session(self) -> TaskResult:
        try:
            params = await self._do_handshake()
            plugin = self.plugin_factory(self.spec, params)
            self._plugin = plugin
            await plugin.run(self)
            return TaskResult(SUCCESS)
        except SessionFailed as exc:
            return TaskResult(FAILED, str(exc))
        except HandshakeFailed as exc:
            return TaskResult(FAILED, exc.reason)
        except SessionClosed:
            return self._over_reason or TaskResult(SUCCESS)
        except Exception as exc:
            log.exception("session %s: plugin crashed", self.spec.session_id)
            return TaskResult(FAILED, f"internal error: {type(exc).__name__}: {exc}")

    async def _do_handshake(self) -> SessionParams:
        spec = self.spec
        if spec.kms_key_id and spec.session_type != SessionType.PORT:
            raise SessionFailed("KMS encryption of sessions is not supported by the portless agent")
        props = spec.port_properties() if spec.session_type == SessionType.PORT else None
        hs = self._handshake = AgentHandshake(
            session_type=spec.session_type, properties=props,
            agent_version=PORTLESS_AGENT_VERSION, offer_fast_path=self.offer_fast_path,
            now=self._loop.time(), timeout=self.timing.handshake_timeout)
        await self.send(PayloadType.HANDSHAKE_REQUEST, hs.request())
        try:
            params = await with_timeout(asyncio.shield(self._handshake_done),
                                        self.timing.handshake_timeout)
        except TimeoutError:
            self._handshake_done.cancel()    # a late answer is dropped, not recorded
            raise HandshakeFailed(HANDSHAKE_TIMEOUT_TEXT) from None
        await self.send(PayloadType.HANDSHAKE_COMPLETE, hs.complete(self._loop.time()))
        fast = params.fast_path
        if fast is not None:
            self.channel.reconfigure(window=fast.window, digest=fast.digest,
                                     max_payload=fast.max_payload)
        self._params = params
        log.info("session %s: handshake done (client %s, %s%s)", spec.session_id,
                 params.client_version or "?", spec.session_type,
                 ", fast path" if fast is not None else "")
        return params

    async def _finish(self, result: TaskResult) -> None:
        """Drain what is unacked (≤ 2 s), say Terminating (shell types), close the socket.

        A cancelled session (channel_closed, shutdown) skips both and just closes.
        """
        self._ending = True
        if not self._cancelled and not self.stream.closed and self.channel.socket is not None:
            await self.channel.wait_acked(self.timing.drain)
        sock = self._sock
        if sock is not None and not self._cancelled and self.spec.session_type in SHELL_TYPES:
            with contextlib.suppress(Exception):
                await sock.send_bytes(
                    AgentSessionState(self.spec.session_id, "Terminating").to_message().encode())
        await self.channel.stop()
        if sock is not None:
            await sock.close()
        self._sock = None
        log.info("session %s: data channel closed (%s%s)", self.spec.session_id, result.status,
                 f": {result.output}" if result.output else "")

    # ---------------------------------------------------------- connection

    async def _connect(self, *, first: bool) -> None:
        """CreateDataChannel + WebSocket + OpenDataChannel, up to `attempts` tries."""
        sid = self.spec.session_id
        delay = random.uniform(*self.timing.first_delay)
        last = "no attempt made"
        for attempt in range(self.timing.attempts):
            if attempt:
                await asyncio.sleep(delay)
                delay = delay * 2 if delay * 2 <= self.timing.max_delay else \
                    random.uniform(*self.timing.first_delay)
            if self._over.is_set():
                raise _SetupFailed("session is over")
            try:
                token = await self.api.create_data_channel(sid)
                ws = await self.api.ws_connect(f"/v1/data-channel/{sid}",
                                               "role=publish_subscribe")
            except MgsError as exc:
                last = str(exc)
                if "Session is already terminated" in exc.body:
                    raise _SetupFailed(last) from None
                continue
            except Exception as exc:       # network errors, credentials not available, ...
                last = f"{type(exc).__name__}: {exc}"
                continue
            sock = AgentSocket(ws, self.timing.keepalive, name=f"data channel {sid}")
            try:
                await sock.send_text(OpenDataChannel(
                    token=token, client_instance_id=self.instance_id).to_json())
                if first:
                    await sock.send_bytes(
                        AgentSessionState(sid, "Connected").to_message().encode())
            except Exception as exc:
                last = f"cannot open the channel: {exc}"
                await sock.close()
                continue
            self._sock = sock
            self.channel.attach(sock)
            return
        raise _SetupFailed(last)

    async def _lost(self) -> bool:
        """The socket is gone: reconnect (True) unless the session is ending (False)."""
        if self._ending or self._over.is_set():
            return False
        reason = self._sock.close_reason if self._sock is not None else ""
        log.info("session %s: data channel lost (%s); reconnecting", self.spec.session_id, reason)
        self._sock = None
        try:
            await self._connect(first=False)
        except _SetupFailed as exc:
            self._end(TaskResult(FAILED, f"Data channel lost: {exc}"), "reconnect failed")
            return False
        return True

    def _timed_out(self) -> None:
        self._end(TaskResult(FAILED, "the client stopped acknowledging"), "timed out")

    def _task_failed(self, what: str, exc: Exception) -> None:
        log.error("session %s: %s failed", self.spec.session_id, what, exc_info=exc)
        self._end(TaskResult(FAILED, f"internal error: {exc}"), f"{what} failed")

    def _handle(self, events: list[StreamEvent]) -> None:
        for event in events:
            if isinstance(event, Delivered):
                self._delivered(event.payload_type, event.payload)
            elif isinstance(event, ControlReceived):
                self._control(event)

    def _control(self, event: ControlReceived) -> None:
        msg = event.message
        if msg.message_type == MessageType.CHANNEL_CLOSED:
            try:
                closed = ChannelClosed.from_json(msg.payload)
            except PayloadError:
                log.warning("session %s: malformed channel_closed dropped", self.spec.session_id)
                self.stream.closed = False
                return
            if closed.session_id and closed.session_id != self.spec.session_id:
                self.stream.closed = False
                return
            self.cancel("channel_closed on the data channel")

    def _delivered(self, payload_type: int, payload: bytes) -> None:
        if not self._handshake_done.done():
            # Handshake in progress: only its answer counts; other input is acked and dropped.
            if payload_type == PayloadType.HANDSHAKE_RESPONSE and self._handshake is not None:
                try:
                    params = self._handshake.receive_response(payload, self._loop.time())
                except HandshakeFailed as exc:
                    self._handshake_done.set_exception(exc)
                    return
                # Nothing more is taken until the plugin is installed and ready.
                self.stream.accepting = False
                self._handshake_done.set_result(params)
            return
        if self._handshake_done.cancelled():
            return                           # the handshake timed out: the session is over
        if not self._plugin_ready:
            self._early.append((payload_type, payload))
            return
        self._deliver(payload_type, payload)

    def _deliver(self, payload_type: int, payload: bytes) -> None:
        assert self._plugin is not None
        try:
            self._plugin.on_input(payload_type, payload)
        except Exception:
            log.exception("session %s: input handler failed", self.spec.session_id)
            self._end(TaskResult(FAILED, "internal error while handling input"), "plugin error")


def make_plugin(spec: SessionSpec, params: SessionParams) -> SessionPlugin:
    """The session plugin for a resolved task and a completed handshake."""
    kind = spec.session_type
    if kind == SessionType.PORT:
        mode = params.port_mode or PortMode.STDIO
        smux_version = params.fast_path.smux_version if params.fast_path is not None else 1
        return PortPlugin(spec, mode, smux_version=min(smux_version, 2),
                          smux_keepalive=params.smux_keepalive)
    if kind == SessionType.NON_INTERACTIVE_COMMANDS:
        return CommandsPlugin(spec)
    return ShellPlugin.for_spec(spec)
