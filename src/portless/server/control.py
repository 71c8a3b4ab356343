"""Control channels: one live WebSocket per node, opened by its agent.

The agent opens it with a single-use control token (OpenControlChannel text
frame); while it is open the node is Online.  The server sends
`interactive_shell` (start a session) and `channel_closed` (cancel one) on it
and receives `agent_task_complete` (acknowledged with `agent_task_acknowledge`).
Telemetry and anything else is ignored.  A newer channel for the same node
replaces the older one.  A channel on which nothing (not even a ping) arrives
for `idle_timeout` is dropped (the agents ping every 54 s), and a send that
does not complete within `send_timeout` cuts the channel off: a node that
vanished without closing its TCP connection goes ConnectionLost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from portless.protocol.message import Message, MessageError, MessageType, decode
from portless.protocol.payloads import (
    AgentTaskAcknowledge,
    AgentTaskComplete,
    OpenControlChannel,
    PayloadError,
)
from portless.server.wsutil import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY, close_quietly
from portless.store import Store

log = logging.getLogger(__name__)

TaskCompleteHandler = Callable[[str, AgentTaskComplete], Awaitable[None]]


@dataclass(eq=False)
class ControlConnection:
    instance_id: str
    ws: web.WebSocketResponse
    request: web.Request
    send_timeout: float = 10.0

    @property
    def alive(self) -> bool:
        return not self.ws.closed

    async def send(self, data: bytes) -> bool:
        """Send one frame; False if the channel is gone (a send that times out cuts it off)."""
        if self.ws.closed:
            return False
        try:
            await asyncio.wait_for(self.ws.send_bytes(data), self.send_timeout)
        except TimeoutError:
            log.warning("control channel of %s: send timed out; dropping it", self.instance_id)
            self.abort()
            return False
        except (ConnectionError, RuntimeError):
            return False
        return True

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class ControlChannels:
    """The registry of connected nodes and the per-channel reader."""

    def __init__(self, store: Store, *, ping_interval: float = 60.0,
                 idle_timeout: float = 162.0, send_timeout: float = 10.0) -> None:
        self.store = store
        self.ping_interval = ping_interval
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        self.connections: dict[str, ControlConnection] = {}
        self.on_task_complete: TaskCompleteHandler | None = None
        self._ping_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    # ------------------------------------------------------------- queries

    def is_connected(self, instance_id: str) -> bool:
        conn = self.connections.get(instance_id)
        return conn is not None and conn.alive

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
            for instance_id, conn in list(self.connections.items()):
                if not conn.alive:
                    continue
                try:
                    await self.store.touch_instance_ping(instance_id)
                except Exception:
                    log.exception("could not refresh the ping time of %s", instance_id)

    # ------------------------------------------------------------- serving

    async def serve(self, instance_id: str, ws: web.WebSocketResponse, request: web.Request,
                    opened: OpenControlChannel) -> None:
        conn = ControlConnection(instance_id, ws, request, self.send_timeout)
        old = self.connections.get(instance_id)
        self.connections[instance_id] = conn
        self._changed.set()
        if old is not None and not old.ws.closed:
            log.info("control channel of %s replaced by a newer one", instance_id)
            asyncio.get_running_loop().create_task(
                close_quietly(old.ws, CLOSE_NORMAL, b"replaced by a newer control channel"))
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

    async def _read(self, conn: ControlConnection) -> None:
        ws = conn.ws
        while True:
            try:
                frame = await ws.receive(timeout=self.idle_timeout)
            except TimeoutError:
                log.warning("control channel of %s silent for %.0f s; dropping it",
                            conn.instance_id, self.idle_timeout)
                await close_quietly(ws, CLOSE_GOING_AWAY, b"no ping from the agent")
                conn.abort()
                break
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
                await close_quietly(ws, CLOSE_POLICY, f"malformed frame: {exc}"[:120].encode())
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

