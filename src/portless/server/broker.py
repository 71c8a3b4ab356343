"""The relay: pairs a session's client and agent data channels and moves frames between them.

Sequence numbers and acknowledgements are end to end between client and agent;
the server only relays.  Frames go through unchanged (same bytes): the header
is peeked (`peek_header`) to route and validate, payloads are not copied or
parsed except for the few control cases (Size for recordings, the
TerminateSession flag, `agent_session_state`).  No database write happens per
message.

Either side may be absent for a while (not connected yet, or reconnecting): up
to `pending_limit` bytes are queued for it and flushed, in order, when it
(re)attaches; beyond that frames are dropped and the ends' retransmission
fills the gap.  Sending awaits the receiver's transport, so a slow receiver
slows the sender; a receiver that stops reading for `send_timeout` is cut off.

Session lifecycle (timers, termination, status in the store) lives here too,
because it is driven by what the relay sees.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from portless.protocol.message import (
    FRAME_OVERHEAD,
    MessageError,
    MessageType,
    PayloadType,
    peek_header,
)
from portless.protocol.payloads import AgentSessionState, AgentTaskComplete, ChannelClosed
from portless.server.config import ServerConfig
from portless.server.recording import Recorder, RecordingManager
from portless.server.wsutil import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY, close_quietly
from portless.store import SessionStatus, Store

log = logging.getLogger(__name__)

END_NOTIFY_TIMEOUT = 15.0
"""Bound on the channel_closed notifications when a session ends (a dead peer must not
hold up the teardown)."""

_INPUT = MessageType.INPUT_STREAM_DATA
_OUTPUT = MessageType.OUTPUT_STREAM_DATA
_ACK = MessageType.ACKNOWLEDGE
_STATE = MessageType.AGENT_SESSION_STATE
_PT_OUTPUT = int(PayloadType.OUTPUT)
_PT_SIZE = int(PayloadType.SIZE)
_PT_FLAG = int(PayloadType.FLAG)
_PT_STDERR = int(PayloadType.STDERR)
_TERMINATE_FLAG = b"\x00\x00\x00\x02"

IDLE_OUTPUT = "Your session timed out due to inactivity and has been terminated."
MAX_DURATION_OUTPUT = ("Your session has reached the maximum session duration and has "
                       "been terminated.")
START_TIMEOUT_OUTPUT = ("The agent on {target} did not open the session's data channel "
                        "in time; the session failed.")
SHUTDOWN_OUTPUT = "The portless server is shutting down; the session was terminated."
AGENT_GONE_OUTPUT = "The agent on {target} disconnected; the session ended."

SendControl = Callable[[str, bytes], Awaitable[bool]]


class Side(enum.IntEnum):
    CLIENT = 0
    AGENT = 1

    @property
    def other(self) -> Side:
        return Side.AGENT if self is Side.CLIENT else Side.CLIENT


class Pending:
    """Frames waiting for an absent side, bounded in bytes."""

    __slots__ = ("dropped", "frames", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.frames: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.limit = limit
        self.dropped = 0

    def push(self, data: bytes) -> None:
        if self.size + len(data) > self.limit:
            self.dropped += 1
            return
        self.frames.append(data)
        self.size += len(data)

    def push_front(self, data: bytes) -> None:
        self.frames.appendleft(data)
        self.size += len(data)

    def pop(self) -> bytes:
        data = self.frames.popleft()
        self.size -= len(data)
        return data

    def clear(self) -> None:
        self.frames.clear()
        self.size = 0

    def __bool__(self) -> bool:
        return bool(self.frames)

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(eq=False)
class Peer:
    side: Side
    ws: web.WebSocketResponse
    request: web.Request
    ready: bool = False
    sending_since: float = 0.0

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: str
    instance_id: str
    owner_arn: str
    document_name: str
    session_type: str
    idle_seconds: float
    max_seconds: float | None

    @property
    def shell(self) -> bool:
        return self.session_type != "Port"


@dataclass(eq=False)
class Relay:
    info: SessionInfo
    recorder: Recorder
    pending: tuple[Pending, Pending]
    peers: list[Peer | None] = field(default_factory=lambda: [None, None])
    ever: list[bool] = field(default_factory=lambda: [False, False])
    gone_since: list[float | None] = field(default_factory=lambda: [None, None])
    created: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    agent_connected: bool = False
    agent_terminating: bool = False
    ended: bool = False
    end_output: str = ""

    @property
    def session_id(self) -> str:
        return self.info.session_id


class Broker:
    def __init__(self, config: ServerConfig, store: Store, recordings: RecordingManager,
                 send_control: SendControl) -> None:
        self.config = config
        self.store = store
        self.recordings = recordings
        self.send_control = send_control
        self.relays: dict[str, Relay] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[object]] = set()

    # ================================================================ lifecycle

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop(),
                                                                   name="broker-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for relay in list(self.relays.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.end(relay, "Terminated", SHUTDOWN_OUTPUT,
                                                cancel_agent=True), 5.0)
            for peer in relay.peers:
                if peer is not None:
                    await close_quietly(peer.ws, CLOSE_GOING_AWAY, b"server shutting down")
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _spawn(self, coro: Awaitable[object]) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def open(self, info: SessionInfo) -> Relay:
        limit = self.config.pending_limit
        relay = Relay(info, self.recordings.open(info.session_id, shell=info.shell),
                      (Pending(limit), Pending(limit)))
        self.relays[info.session_id] = relay
        return relay

    def get(self, session_id: str) -> Relay | None:
        return self.relays.get(session_id)

    # ================================================================ attaching

    async def attach(self, relay: Relay, side: Side, ws: web.WebSocketResponse,
                     request: web.Request) -> None:
        """Serve one data-channel WebSocket of `relay` until it closes."""
        peer = Peer(side, ws, request)
        old = relay.peers[side]
        relay.peers[side] = peer
        relay.ever[side] = True
        relay.gone_since[side] = None
        if old is not None:
            old.ready = False
            self._spawn(close_quietly(old.ws, CLOSE_NORMAL, b"replaced by a newer connection"))
        log.info("session %s: %s data channel attached", relay.session_id, side.name.lower())
        try:
            if await self._flush(relay, peer):
                await self._pump(relay, peer)
        finally:
            if relay.peers[side] is peer:
                relay.peers[side] = None
                relay.gone_since[side] = time.monotonic()
                log.info("session %s: %s data channel detached", relay.session_id,
                         side.name.lower())
            if not ws.closed:
                await close_quietly(ws, CLOSE_NORMAL, b"")

    async def _flush(self, relay: Relay, peer: Peer) -> bool:
        """Send what was queued for `peer`'s side, then mark it ready for live frames."""
        pending = relay.pending[peer.side]
        ws = peer.ws
        while pending:
            if relay.peers[peer.side] is not peer:
                return False
            data = pending.pop()
            peer.sending_since = time.monotonic()
            try:
                await ws.send_bytes(data)
            except Exception:
                pending.push_front(data)
                return False
            finally:
                peer.sending_since = 0.0
        if relay.peers[peer.side] is not peer:
            return False
        peer.ready = True
        if relay.ended and peer.side is Side.CLIENT:
            await self._send_closed(relay, peer)
            return False
        return True

    async def _forward(self, relay: Relay, dst: Side, data: bytes) -> None:
        peer = relay.peers[dst]
        if peer is None or not peer.ready:
            relay.pending[dst].push(data)
            return
        peer.sending_since = time.monotonic()
        try:
            await peer.ws.send_bytes(data)
        except Exception:
            peer.ready = False
            peer.sending_since = 0.0
            current = relay.peers[dst]
            if current is not None and current is not peer and current.ready:
                # A newer connection took over while this frame was in flight.
                await self._forward(relay, dst, data)
            else:
                # The receiver went away mid-send: keep the frame for its reconnect.
                relay.pending[dst].push(data)
        finally:
            peer.sending_since = 0.0

    async def _reject(self, relay: Relay, peer: Peer, exc: Exception) -> None:
        log.warning("session %s: malformed frame from the %s: %s", relay.session_id,
                    peer.side.name.lower(), exc)
        reason = f"malformed frame: {exc}"[:120].encode()
        await close_quietly(peer.ws, CLOSE_POLICY, reason)

    # ================================================================ pumps

    async def _pump(self, relay: Relay, peer: Peer) -> None:
        """Relay `peer`'s frames to the other side until its WebSocket closes.

        One loop serves both sides (the receive, peek and reject steps are the
        same); the per-type branches check the side with a local bool so the hot
        path adds no call or await per frame.
        """
        ws = peer.ws
        recorder = relay.recorder
        shell = relay.info.shell
        from_client = peer.side is Side.CLIENT
        dst = peer.side.other
        name = peer.side.name.lower()
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.BINARY:
                data: bytes = msg.data
            elif msg.type is WSMsgType.TEXT:
                continue
            else:
                if msg.type is WSMsgType.ERROR:
                    log.info("session %s: %s channel error: %s", relay.session_id, name,
                             ws.exception())
                return
            try:
                mtype, seq, ptype = peek_header(data)
            except MessageError as exc:
                await self._reject(relay, peer, exc)
                return
            if mtype == _OUTPUT and not from_client:
                relay.last_activity = time.monotonic()
                if ptype in (_PT_OUTPUT, _PT_STDERR):
                    if shell:
                        recorder.output(seq, data[FRAME_OVERHEAD:])
                    else:
                        recorder.count_output(seq, len(data) - FRAME_OVERHEAD)
                await self._forward(relay, dst, data)
            elif mtype == _INPUT and from_client:
                relay.last_activity = time.monotonic()
                terminate = False
                if ptype == _PT_OUTPUT:
                    recorder.count_input(seq, len(data) - FRAME_OVERHEAD)
                elif ptype == _PT_SIZE:
                    if shell:
                        _record_size(recorder, seq, data)
                elif ptype == _PT_FLAG:
                    terminate = data[FRAME_OVERHEAD:] == _TERMINATE_FLAG
                await self._forward(relay, dst, data)
                if terminate:
                    log.info("session %s: client sent TerminateSession", relay.session_id)
                    self._spawn(self.end(relay, "Terminated", cancel_agent=True))
            elif mtype == _ACK:
                await self._forward(relay, dst, data)
            elif mtype == _STATE and not from_client:
                self._agent_state(relay, data)
            else:
                log.debug("session %s: ignoring %s from the %s", relay.session_id, mtype, name)

    def _agent_state(self, relay: Relay, data: bytes) -> None:
        try:
            state = AgentSessionState.from_json(data[FRAME_OVERHEAD:])
        except ValueError as exc:
            log.info("session %s: bad agent_session_state: %s", relay.session_id, exc)
            return
        if state.state == "Connected" and not relay.agent_connected:
            relay.agent_connected = True
            if not relay.ended:
                self._spawn(self._store_status(relay.session_id, "Connected"))
        elif state.state == "Terminating":
            relay.agent_terminating = True

    async def _store_status(self, session_id: str, status: SessionStatus) -> None:
        try:
            await self.store.update_session_status(
                session_id, status, only_if_status_in=("Connecting", "Connected", "Disconnected"))
        except Exception:
            log.exception("could not record the status of %s", session_id)

    # ================================================================ ending

    async def _send_closed(self, relay: Relay, peer: Peer) -> None:
        frame = ChannelClosed(relay.session_id, relay.info.instance_id,
                              relay.end_output).to_message().encode()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(peer.ws.send_bytes(frame), 5.0)
        await close_quietly(peer.ws, CLOSE_NORMAL, b"session ended")

    async def end(self, relay: Relay, status: SessionStatus, output: str = "", *,
                  cancel_agent: bool) -> None:
        """Finish the session: channel_closed to the client (and the agent), store it."""
        if relay.ended:
            return
        relay.ended = True
        relay.end_output = output
        sid = relay.session_id
        log.info("session %s ended: %s%s", sid, status, f" ({output})" if output else "")
        client = relay.peers[Side.CLIENT]
        tasks: list[Awaitable[object]] = []
        if client is not None and client.ready:
            tasks.append(self._send_closed(relay, client))
        if cancel_agent:
            frame = ChannelClosed(sid, relay.info.instance_id).to_message().encode()
            tasks.append(self.send_control(relay.info.instance_id, frame))
            agent = relay.peers[Side.AGENT]
            if agent is not None:
                tasks.append(_send_quietly(agent.ws, frame))
        if tasks:
            try:
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                                       END_NOTIFY_TIMEOUT)
            except TimeoutError:
                log.warning("session %s: ending notifications timed out", sid)
        relay.pending[Side.AGENT].clear()
        agent = relay.peers[Side.AGENT]
        if agent is not None:
            # Give the agent a moment to close by itself after channel_closed.
            self._spawn(_close_later(agent.ws, 5.0 if cancel_agent else 0.5))
        if self.relays.get(sid) is relay:
            del self.relays[sid]
        await self.recordings.finish(relay.recorder)
        try:
            await self.store.update_session_status(
                sid, status, details=output or None,
                only_if_status_in=("Connecting", "Connected", "Disconnected", "Terminating"))
            await self.store.set_session_counters(sid, bytes_in=relay.recorder.bytes_in,
                                                  bytes_out=relay.recorder.bytes_out)
        except Exception:
            log.exception("could not record the end of session %s", sid)

    async def terminate(self, session_id: str, output: str = "") -> bool:
        """TerminateSession: end the live session (if this server holds it)."""
        relay = self.relays.get(session_id)
        if relay is None:
            return False
        await self.end(relay, "Terminated", output, cancel_agent=True)
        return True

    async def agent_task_complete(self, instance_id: str, done: AgentTaskComplete) -> None:
        relay = self.relays.get(done.session_id)
        if relay is None:
            # Already over (acks are idempotent), or held by nobody after a restart.
            try:
                sess = await self.store.get_session(done.session_id)
                if (sess is not None and sess.target == instance_id
                        and sess.status not in ("Terminated", "Failed")):
                    status: SessionStatus = ("Failed" if done.final_status == "Failed"
                                             else "Terminated")
                    await self.store.update_session_status(done.session_id, status,
                                                           details=done.output or None)
            except Exception:
                log.exception("could not record agent_task_complete for %s", done.session_id)
            return
        if relay.info.instance_id != instance_id:
            log.warning("agent %s reported the end of %s, which runs on %s", instance_id,
                        done.session_id, relay.info.instance_id)
            return
        failed = done.final_status in ("Failed", "TimedOut")
        # Not awaited: closing the client's socket must not hold up the control channel.
        self._spawn(self.end(relay, "Failed" if failed else "Terminated",
                             done.output if failed else "", cancel_agent=False))

    # ================================================================ timers

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                self.sweep()
            except Exception:
                log.exception("broker sweep failed")

    def sweep(self) -> None:
        now = time.monotonic()
        cfg = self.config
        for relay in list(self.relays.values()):
            if relay.ended:
                continue
            target = relay.info.instance_id
            for peer in relay.peers:
                if peer is not None and peer.sending_since and \
                        now - peer.sending_since > cfg.send_timeout:
                    log.warning("session %s: the %s stopped reading; cutting it off",
                                relay.session_id, peer.side.name.lower())
                    peer.sending_since = 0.0
                    peer.ready = False
                    peer.abort()
            agent_gone = relay.gone_since[Side.AGENT]
            client_gone = relay.gone_since[Side.CLIENT]
            if not relay.ever[Side.AGENT]:
                if now - relay.created > cfg.start_timeout:
                    self._spawn(self.end(relay, "Failed", START_TIMEOUT_OUTPUT.format(
                        target=target), cancel_agent=True))
                continue
            if agent_gone is not None:
                if relay.agent_terminating and now - agent_gone > cfg.end_grace:
                    self._spawn(self.end(relay, "Terminated", cancel_agent=False))
                    continue
                if now - agent_gone > cfg.disconnect_grace:
                    self._spawn(self.end(relay, "Failed", AGENT_GONE_OUTPUT.format(
                        target=target), cancel_agent=True))
                    continue
            if client_gone is not None and now - client_gone > cfg.disconnect_grace:
                self._spawn(self.end(relay, "Terminated", cancel_agent=True))
                continue
            if now - relay.last_activity > relay.info.idle_seconds:
                self._spawn(self.end(relay, "Terminated", IDLE_OUTPUT, cancel_agent=True))
                continue
            maximum = relay.info.max_seconds
            if maximum is not None and now - relay.created > maximum:
                self._spawn(self.end(relay, "Terminated", MAX_DURATION_OUTPUT,
                                     cancel_agent=True))


def _record_size(recorder: Recorder, seq: int, data: bytes) -> None:
    try:
        obj = json.loads(data[FRAME_OVERHEAD:])
        cols, rows = int(obj["cols"]), int(obj["rows"])
    except (ValueError, KeyError, TypeError):
        return
    if 0 < cols < 10000 and 0 < rows < 10000:
        recorder.resize(seq, cols, rows)


async def _send_quietly(ws: web.WebSocketResponse, data: bytes) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.send_bytes(data), 5.0)


async def _close_later(ws: web.WebSocketResponse, delay: float) -> None:
    await asyncio.sleep(delay)
    await close_quietly(ws, CLOSE_NORMAL, b"session ended")
