"""Control channels: one live WebSocket per node, opened by its agent.

The agent opens it with a single-use control token (OpenControlChannel text
frame); while it is open the node is Online.  The server sends
`interactive_shell` (start a session) and `channel_closed` (cancel one) on it
and receives `agent_task_complete` (acknowledged with `agent_task_acknowledge`).
Telemetry and anything else is ignored.  A newer channel for the same node
replaces the older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from portless.protocol.message import Message, MessageError, MessageType, decode
from portless.protocol.payloads import (
    AgentTaskAcknowledge,
    AgentTaskComplete,
    OpenControlChannel,
    PayloadError,
)
from portless.store import Store

log = logging.getLogger(__name__)

CLOSE_POLICY = 1008

TaskCompleteHandler = Callable[[str, AgentTaskComplete], Awaitable[None]]
DisconnectHandler = Callable[[str], Awaitable[None]]


@dataclass(eq=False)
class ControlConnection:
    instance_id: str
    ws: web.WebSocketResponse
    request: web.Request
    agent_version: str = ""
    platform_type: str = ""
    connected_at: float = field(default_factory=time.time)

    async def send(self, data: bytes) -> bool:
        if self.ws.closed:
            return False
        try:
            await self.ws.send_bytes(data)
        except (ConnectionError, RuntimeError):
            return False
        return True

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class ControlChannels:
    """The registry of connected nodes and the per-channel reader."""

    def __init__(self, store: Store, *, ping_interval: float = 60.0) -> None:
        self.store = store
        self.ping_interval = ping_interval
        self.connections: dict[str, ControlConnection] = {}
        self.on_task_complete: TaskCompleteHandler | None = None
        self.on_disconnect: DisconnectHandler | None = None
        self._ping_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    # ------------------------------------------------------------- queries

    def is_connected(self, instance_id: str) -> bool:
        conn = self.connections.get(instance_id)
        return conn is not None and not conn.ws.closed

    async def wait_connected(self, instance_id: str, timeout: float) -> bool:
        """Wait (up to `timeout`) for `instance_id` to have a control channel."""
        deadline = time.monotonic() + timeout
        while not self.is_connected(instance_id):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    async def send(self, instance_id: str, msg: Message) -> bool:
        conn = self.connections.get(instance_id)
        if conn is None:
            return False
        return await conn.send(msg.encode())

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._ping_task is None:
            self._ping_task = asyncio.get_running_loop().create_task(self._pinger(),
                                                                     name="control-ping")

    async def stop(self) -> None:
        if self._ping_task is not None:
            self._ping_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ping_task
            self._ping_task = None
        for conn in list(self.connections.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=1001, message=b"server shutting down"),
                                       1.0)
        self.connections.clear()

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            for instance_id in list(self.connections):
                try:
                    await self.store.touch_instance_ping(instance_id)
                except Exception:
                    log.exception("could not refresh the ping time of %s", instance_id)

    # ------------------------------------------------------------- serving

    async def serve(self, instance_id: str, ws: web.WebSocketResponse, request: web.Request,
                    opened: OpenControlChannel) -> None:
        conn = ControlConnection(instance_id, ws, request, opened.agent_version,
                                 opened.platform_type)
        old = self.connections.get(instance_id)
        self.connections[instance_id] = conn
        self._changed.set()
        if old is not None and not old.ws.closed:
            log.info("control channel of %s replaced by a newer one", instance_id)
            asyncio.get_running_loop().create_task(
                _close_quietly(old.ws, 1000, b"replaced by a newer control channel"))
        log.info("control channel of %s connected (agent %s, %s)", instance_id,
                 opened.agent_version or "?", opened.platform_type or "?")
        try:
            await self.store.update_instance_info(instance_id,
                                                  ssm_connection_channel="ssmmessages")
        except Exception:
            log.exception("could not record the control channel of %s", instance_id)
        try:
            await self._read(conn)
        finally:
            if self.connections.get(instance_id) is conn:
                del self.connections[instance_id]
                self._changed.set()
                log.info("control channel of %s disconnected", instance_id)
                if self.on_disconnect is not None:
                    try:
                        await self.on_disconnect(instance_id)
                    except Exception:
                        log.exception("control-channel disconnect handler failed")

    async def _read(self, conn: ControlConnection) -> None:
        ws = conn.ws
        async for frame in ws:
            if frame.type == WSMsgType.BINARY:
                data: bytes = frame.data
            elif frame.type == WSMsgType.TEXT:
                data = frame.data.encode()
            else:
                break
            try:
                msg = decode(data, verify_digest=False, strict=False)
            except MessageError as exc:
                log.warning("malformed control frame from %s: %s", conn.instance_id, exc)
                await ws.close(code=CLOSE_POLICY, message=f"malformed frame: {exc}"[:120].encode())
                break
            if msg.message_type == MessageType.AGENT_TASK_COMPLETE:
                await self._task_complete(conn, msg)
            elif msg.message_type in (MessageType.AGENT_TELEMETRY,
                                      MessageType.AGENT_UPDATE_RESULT):
                continue
            else:
                log.debug("ignoring %s on the control channel of %s", msg.message_type,
                          conn.instance_id)

    async def _task_complete(self, conn: ControlConnection, msg: Message) -> None:
        try:
            done = AgentTaskComplete.from_json(msg.payload)
        except PayloadError as exc:
            log.warning("bad agent_task_complete from %s: %s", conn.instance_id, exc)
            return
        ack = AgentTaskAcknowledge(msg.id_str, done.session_id).to_message()
        await conn.send(ack.encode())
        if self.on_task_complete is not None:
            try:
                await self.on_task_complete(conn.instance_id, done)
            except Exception:
                log.exception("agent_task_complete handler failed for %s", done.session_id)


async def _close_quietly(ws: web.WebSocketResponse, code: int, message: bytes) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code=code, message=message), 2.0)
