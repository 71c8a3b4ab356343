"""The control channel: one per instance, kept open forever (agent spec §10).

Each attempt performs CreateControlChannel (a new token) and a SigV4-signed WebSocket
`?role=subscribe&stream=input`, then sends the OpenControlChannel text frame. Attempts
back off D0·2^n (D0 drawn from 5-10 s, capped at 40 min, plus up to 50 %); after an
established channel breaks the agent pauses 0-2.5 s and retries at once. Incoming
`interactive_shell` starts a session and `channel_closed` cancels one;
`agent_task_complete` is sent up to 3 times, 1 s apart, until `agent_task_acknowledge`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from portless.agent.api import AgentApi, MgsError, NetworkError
from portless.agent.websocket import AgentSocket, Keepalive
from portless.aio import wait_event
from portless.protocol.message import MessageError, MessageType, decode
from portless.protocol.payloads import (
    AgentTaskAcknowledge,
    AgentTaskComplete,
    AgentTaskPayload,
    ChannelClosed,
    InteractiveShell,
    OpenControlChannel,
    PayloadError,
)
from portless.protocol.versions import PORTLESS_AGENT_VERSION

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ControlTiming:
    keepalive: Keepalive = field(default_factory=Keepalive)
    first_delay: tuple[float, float] = (5.0, 10.0)
    max_delay: float = 40 * 60.0
    break_pause: float = 2.5
    complete_interval: float = 1.0
    complete_tries: int = 3
    complete_wait_connected: float = 600.0


class SessionHandler(Protocol):
    def start_session(self, task: AgentTaskPayload) -> None: ...

    def cancel_session(self, session_id: str) -> None: ...


class ControlChannel:
    def __init__(self, api: AgentApi, instance_id: str, handler: SessionHandler, *,
                 timing: ControlTiming | None = None) -> None:
        self.api = api
        self.instance_id = instance_id
        self.handler = handler
        self.timing = timing or ControlTiming()
        self.connected = asyncio.Event()
        self.connections = 0
        self._sock: AgentSocket | None = None
        self._acks: dict[str, asyncio.Event] = {}

    async def run(self) -> None:
        """Connect, serve, reconnect — forever."""
        d0 = random.uniform(*self.timing.first_delay)
        failures = 0
        while True:
            try:
                sock = await self._open()
            except (MgsError, NetworkError) as exc:
                self._log_failure(exc)
                delay = min(d0 * 2**min(failures, 20), self.timing.max_delay)
                delay += random.uniform(0, delay / 2)
                failures += 1
                log.warning("control channel: cannot connect (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            except Exception as exc:  # credentials missing, etc.: same backoff
                delay = min(d0 * 2**min(failures, 20), self.timing.max_delay)
                failures += 1
                log.warning("control channel: %s: %s; retrying in %.1f s",
                            type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            self._sock = sock
            self.connections += 1
            self.connected.set()
            log.info("control channel connected")
            try:
                await self._serve(sock)
            finally:
                self.connected.clear()
                self._sock = None
                await sock.close()
            log.warning("control channel lost (%s); reconnecting", sock.close_reason)
            await asyncio.sleep(random.uniform(0, self.timing.break_pause))

    @staticmethod
    def _log_failure(exc: Exception) -> None:
        if isinstance(exc, MgsError) and "<AccessDeniedException>" in exc.body:
            log.error("control channel: access denied by the server")

    async def _open(self) -> AgentSocket:
        token = await self.api.create_control_channel(self.instance_id)
        ws = await self.api.ws_connect(f"/v1/control-channel/{self.instance_id}",
                                       "role=subscribe&stream=input")
        sock = AgentSocket(ws, self.timing.keepalive, name="control channel")
        try:
            await sock.send_text(OpenControlChannel(token, PORTLESS_AGENT_VERSION,
                                                    "linux").to_json())
        except Exception as exc:
            await sock.close()
            raise NetworkError(f"cannot send OpenControlChannel: {exc}") from exc
        return sock

    async def _serve(self, sock: AgentSocket) -> None:
        while (frame := await sock.receive()) is not None:
            try:
                self._handle(frame)
            except Exception:
                log.exception("control channel: failed to handle a message")

    def _handle(self, frame: bytes) -> None:
        try:
            msg = decode(frame, verify_digest=False, strict=False)
        except MessageError as exc:
            log.warning("control channel: dropped a malformed frame: %s", exc)
            return
        kind = msg.message_type
        try:
            if kind == MessageType.INTERACTIVE_SHELL:
                task = InteractiveShell.from_json(msg.payload).task
                log.info("control channel: session %s requested (%s)", task.session_id,
                         task.document_name)
                self.handler.start_session(task)
            elif kind == MessageType.CHANNEL_CLOSED:
                closed = ChannelClosed.from_json(msg.payload)
                log.info("control channel: session %s closed by the server", closed.session_id)
                self.handler.cancel_session(closed.session_id)
            elif kind == MessageType.AGENT_TASK_ACKNOWLEDGE:
                ack = AgentTaskAcknowledge.from_json(msg.payload)
                event = self._acks.get(ack.message_id.lower())
                if event is not None:
                    event.set()
            else:
                log.info("control channel: ignoring %s", kind)
        except PayloadError as exc:
            log.warning("control channel: dropped %s with a bad payload: %s", kind, exc)

    async def task_complete(self, session_id: str, status: str, output: str = "") -> bool:
        """Report the end of a session; True once acknowledged."""
        message_id = uuid.uuid4()
        ack = self._acks[str(message_id)] = asyncio.Event()
        try:
            for attempt in range(1, self.timing.complete_tries + 1):
                sock = self._sock
                if sock is None:
                    if not await wait_event(self.connected,
                                            self.timing.complete_wait_connected):
                        return False
                    sock = self._sock
                    if sock is None:
                        continue
                msg = AgentTaskComplete(session_id, self.instance_id, status, output,
                                        retry_number=attempt).to_message()
                msg.message_id = message_id.bytes
                with contextlib.suppress(Exception):
                    await sock.send_bytes(msg.encode())
                await wait_event(ack, self.timing.complete_interval)
                if ack.is_set():
                    return True
            return ack.is_set()
        finally:
            self._acks.pop(str(message_id), None)
