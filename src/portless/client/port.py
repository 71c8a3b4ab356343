"""Port sessions: stdin/stdout (SSH ProxyCommand), basic and multiplexed forwarding.

Client spec §8.2-§8.5.  The mode comes from the handshake (`SessionParams.port_mode`).

* stdin/stdout: bytes between our stdin/stdout and the stream; stdin EOF ends.
* basic: one local connection at a time over the raw stream; Flag 1 when it ends.
* mux: a local listener (TCP on localhost, or a Unix socket), every accepted connection
  one smux stream (v1; v2 with per-stream windows on the fast path) over PayloadType 1.

Back-pressure: a local socket is read only while the stream takes data (`send` waits),
and data for a local socket is queued per stream and written with `drain()`; in smux v2
the peer's window bounds that queue, in v1 reading from the channel pauses once
`max_receive_buffer` bytes are waiting (as xtaci/smux does).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import signal
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from portless.client.signals import add_signal_handlers, remove_signal_handlers
from portless.protocol.message import PayloadType
from portless.protocol.payloads import Flag, PayloadError, decode_flag, encode_flag
from portless.protocol.smux import (
    MAX_FRAME_LENGTH,
    STOCK_FRAME_SIZE,
    SmuxError,
    SmuxSession,
    StreamClosed,
    StreamData,
    StreamOpened,
    WindowUpdated,
)
from portless.protocol.versions import TERMINATE_FLAG_AGENT, agent_newer_than

if TYPE_CHECKING:
    from portless.client.datachannel import DataChannel
    from portless.client.session import Stdio
    from portless.protocol.handshake import SessionParams

TERMINATE_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP)
SMUX_KEEPALIVE_INTERVAL = 10.0
FAST_STREAM_WINDOW = 4 * 1024 * 1024
LOCAL_READ_STOCK = 32768
LOCAL_READ_FAST = 256 * 1024


def _prop(properties: Any, name: str) -> str:
    """A port property the way the plugin decodes it: case-insensitive, strings only."""
    found = ""
    if isinstance(properties, dict):
        for key, value in properties.items():
            if isinstance(key, str) and key.lower() == name.lower() and isinstance(value, str):
                found = value
    return found


def local_port(properties: Any) -> int:
    text = _prop(properties, "localPortNumber").strip()
    return int(text) if text.isdigit() and int(text) <= 65535 else 0


def unix_socket_path(properties: Any) -> str | None:
    if _prop(properties, "localConnectionType").lower() == "unix":
        return _prop(properties, "localUnixSocket") or None
    return None


class _PortBase:
    """Signals and the listener shared by basic and mux mode."""

    def __init__(self, channel: DataChannel, params: SessionParams, stdio: Stdio) -> None:
        self.ch = channel
        self.params = params
        self.stdio = stdio
        self.exit_status: int | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._signals: list[int] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.port: int | None = None
        self.unix_path: str | None = None

    @property
    def sid(self) -> str:
        return self.ch.info.session_id

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _listen(self) -> None:
        path = unix_socket_path(self.params.properties)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self._servers.append(await asyncio.start_unix_server(self._accepted, path=path))
            self.unix_path = path
            return
        port = local_port(self.params.properties)
        # One port for both loopback families: take it on IPv4, then try ::1 with it.
        first = await asyncio.start_server(self._accepted, host="127.0.0.1", port=port,
                                           reuse_address=True)
        self._servers.append(first)
        self.port = first.sockets[0].getsockname()[1]
        if socket.has_ipv6:
            with contextlib.suppress(OSError):
                self._servers.append(await asyncio.start_server(
                    self._accepted, host="::1", port=self.port, reuse_address=True))

    async def _accepted(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        """Connection callback: serve, and never end cancelled (Python 3.11's stream
        server logs a spurious error for a connection task that ends cancelled)."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            _close_writer(writer)
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def _install_signals(self) -> None:
        handlers: dict[int, Callable[[], object]] = dict.fromkeys(
            TERMINATE_SIGNALS, self._terminate_signal)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            handlers[sig] = functools.partial(self.ch.finish, 128 + sig)
        self._signals += add_signal_handlers(handlers)

    def _terminate_signal(self) -> None:
        """Ctrl-C & co. (client spec §8.2): flag 2 and exit, or TerminateSession for old agents."""
        self.stdio.say("Terminate signal received, exiting.\n")
        if self._uses_flag():
            self.ch.send_nowait(PayloadType.FLAG, encode_flag(Flag.TERMINATE_SESSION))
            self.stdio.say(f"\n\nExiting session with sessionId: {self.sid}.\n\n")
            self.ch.finish(0)
        else:
            self._spawn(self.ch.terminate(), "terminate")

    def _uses_flag(self) -> bool:
        return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        remove_signal_handlers(self._signals)
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await self._close_connections()
        if self.unix_path:
            with contextlib.suppress(OSError):
                os.unlink(self.unix_path)
        await self.stdio.out.flush(timeout=2.0)

    async def _close_connections(self) -> None:
        pass


def _close_writer(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


# ------------------------------------------------------------------ stdin/stdout


class StdioPortHandler:
    """AWS-StartSSHSession and other Port sessions without `type` (client spec §8.3)."""

    def __init__(self, channel: DataChannel, params: SessionParams, stdio: Stdio) -> None:
        self.ch = channel
        self.params = params
        self.stdio = stdio
        self.mode = stdio.mode
        self.exit_status: int | None = None
        self._pump: asyncio.Task[None] | None = None
        self._signals: list[int] = []
        self._closed = False

    async def start(self) -> None:
        if self.mode.handle_signals:
            self._signals += add_signal_handlers(dict.fromkeys(
                (*TERMINATE_SIGNALS, signal.SIGTERM, signal.SIGHUP), self._signal))
        self._pump = asyncio.create_task(self._read_stdin(), name="port-stdin")
        self.ch.set_ready(True)

    def _signal(self) -> None:
        self.ch.send_nowait(PayloadType.FLAG, encode_flag(Flag.TERMINATE_SESSION))
        self.ch.finish(0)

    async def _read_stdin(self) -> None:
        inp = self.stdio.inp
        while not self.ch.done:
            size = self.ch.max_payload
            data = await inp.read(size)
            if not data:
                # stdin EOF ends the session (client spec §8.3); what was read goes out first.
                if self.mode.port_eof_flag:
                    self.ch.send_nowait(PayloadType.FLAG, encode_flag(Flag.TERMINATE_SESSION))
                await self.ch.wait_sent(2.0)
                self.ch.finish(0)
                return
            await self.ch.send(PayloadType.OUTPUT, data)
            if self.ch.pacing:
                await asyncio.sleep(self.ch.pacing)

    async def on_data(self, payload_type: int, payload: bytes) -> None:
        if payload_type == PayloadType.OUTPUT:
            out = self.stdio.out
            out.write(payload)
            await out.drain()
            if out.broken:
                self.ch.finish(0)
        elif payload_type == PayloadType.STDERR:
            self.stdio.err.write(payload)
        # Anything else would corrupt the byte stream on stdout (an SSH session).

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        remove_signal_handlers(self._signals)
        if self._pump is not None:
            self._pump.cancel()
        await self.stdio.out.flush(timeout=5.0)


# ------------------------------------------------------------------------ basic


class BasicPortHandler(_PortBase):
    """One local connection at a time over the raw stream (client spec §8.4)."""

    def __init__(self, channel: DataChannel, params: SessionParams, stdio: Stdio) -> None:
        super().__init__(channel, params, stdio)
        self._one = asyncio.Lock()
        self._writer: asyncio.StreamWriter | None = None
        self._connected_once = False

    def _uses_flag(self) -> bool:
        return agent_newer_than(self.params.agent_version, TERMINATE_FLAG_AGENT)

    async def start(self) -> None:
        await self._listen()
        where = f"Unix socket {self.unix_path}" if self.unix_path else f"Port {self.port}"
        self.stdio.say(f"{where} opened for sessionId {self.sid}.\n")
        self._install_signals()
        # Not ready until a local client connects: output waits at the agent (§8.4).
        self.ch.set_ready(False)

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        async with self._one:
            if self.ch.done:
                _close_writer(writer)
                return
            self.stdio.say(f"Connection accepted for session {self.sid}.\n")
            self._writer = writer
            self._connected_once = True
            self.ch.set_ready(True)
            try:
                while not self.ch.done:
                    try:
                        data = await reader.read(self.ch.max_payload)
                    except (ConnectionError, OSError):
                        data = b""
                    if not data:
                        break
                    await self.ch.send(PayloadType.OUTPUT, data)
                    if self.ch.pacing:
                        await asyncio.sleep(self.ch.pacing)
            finally:
                self._writer = None
                _close_writer(writer)
            if not self.ch.done:
                await self.ch.send(PayloadType.FLAG, encode_flag(Flag.DISCONNECT_TO_PORT))

    async def on_data(self, payload_type: int, payload: bytes) -> None:
        writer = self._writer
        if writer is None:
            return  # between connections: the old connection's tail is dropped
        if payload_type == PayloadType.FLAG and self.ch.fast:
            return
        if payload_type == PayloadType.STDERR and self.ch.fast:
            self.stdio.err.write(payload)
            return
        try:
            writer.write(payload)
            await writer.drain()
        except (ConnectionError, OSError):
            _close_writer(writer)

    async def _close_connections(self) -> None:
        if self._writer is not None:
            _close_writer(self._writer)


# -------------------------------------------------------------------------- mux


class _Conn:
    """One local connection carried by one smux stream."""

    __slots__ = ("closing", "queue", "reader", "sid", "window", "writer", "writer_task")

    def __init__(self, sid: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.sid = sid
        self.reader = reader
        self.writer = writer
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.window = asyncio.Event()
        self.window.set()
        self.closing = False
        self.writer_task: asyncio.Task[None] | None = None


SMUX_OUT_HIGH = 1 << 20
"""smux bytes waiting for the channel above which local sockets are not read."""


class MuxPortHandler(_PortBase):
    """Many local connections, one smux stream each (client spec §8.5).

    All smux output (data, FIN, window updates, keepalives) is appended in order to one
    queue that a single task carries over the channel in messages of up to max_payload
    bytes, so frames from different streams never interleave out of order.
    """

    def __init__(self, channel: DataChannel, params: SessionParams, stdio: Stdio) -> None:
        super().__init__(channel, params, stdio)
        fast = channel.fast_path
        version = fast.smux_version if fast is not None else 1
        self.smux = SmuxSession(
            is_client=True, version=min(version, 2),
            max_frame_size=MAX_FRAME_LENGTH if fast else STOCK_FRAME_SIZE,
            stream_window=FAST_STREAM_WINDOW if fast else 262144)
        self.conns: dict[int, _Conn] = {}
        self._announced = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._out: collections.deque[memoryview] = collections.deque()
        self._out_bytes = 0
        self._out_wake = asyncio.Event()
        self._out_room = asyncio.Event()
        self._out_room.set()
        self._failed = False

    async def start(self) -> None:
        await self._listen()
        if self.unix_path:
            self.stdio.say(f"Unix socket {self.unix_path} opened for sessionId {self.sid}.")
        else:
            self.stdio.say(f"Port {self.port} opened for sessionId {self.sid}.")
        self.stdio.say("\nWaiting for connections...\n")
        self._install_signals()
        self._spawn(self._sender(), "smux-sender")
        if self.params.smux_keepalive:
            self._spawn(self._keepalive(), "smux-keepalive")
        self.ch.set_ready(True)

    # ------------------------------------------------------------ smux output

    def _pull(self) -> None:
        """Move whatever smux queued into our ordered output queue."""
        data = self.smux.data_to_send()
        if data:
            self._out.append(memoryview(data))
            self._out_bytes += len(data)
            if self._out_bytes >= SMUX_OUT_HIGH:
                self._out_room.clear()
            self._out_wake.set()

    async def _push(self) -> None:
        """`_pull`, then wait while the output queue is over its high-water mark."""
        self._pull()
        while self._out_bytes >= SMUX_OUT_HIGH and not self.ch.done:
            await self._out_room.wait()

    async def _sender(self) -> None:
        out = self._out
        while True:
            if not out:
                self._out_wake.clear()
                await self._out_wake.wait()
                continue
            step = self.ch.max_payload
            pieces: list[memoryview] = []
            size = 0
            while out and size < step:
                head = out[0]
                take = step - size
                if len(head) <= take:
                    pieces.append(out.popleft())
                    size += len(head)
                else:
                    pieces.append(head[:take])
                    out[0] = head[take:]
                    size += take
            self._out_bytes -= size
            chunk = pieces[0].tobytes() if len(pieces) == 1 else b"".join(pieces)
            await self.ch.send(PayloadType.OUTPUT, chunk)
            if self._out_bytes < SMUX_OUT_HIGH // 2:
                self._out_room.set()
            if self.ch.pacing:
                await asyncio.sleep(self.ch.pacing)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(SMUX_KEEPALIVE_INTERVAL)
            self.smux.send_nop()
            self._pull()

    # ---------------------------------------------------------- local side

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        if self.ch.done or self._failed:
            _close_writer(writer)
            return
        if not self._announced:
            self._announced = True
            self.stdio.say(f"\nConnection accepted for session [{self.sid}]\n")
        with contextlib.suppress(OSError):
            sock = writer.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sid = self.smux.open_stream()
        conn = _Conn(sid, reader, writer)
        self.conns[sid] = conn
        conn.writer_task = self._spawn(self._write_local(conn), f"mux-write-{sid}")
        try:
            await self._push()
            await self._read_local(conn)
            # Wait for the peer's FIN (or a failure) before releasing the connection.
            await asyncio.wait([conn.writer_task])
        finally:
            _close_writer(writer)
            self.conns.pop(sid, None)

    async def _read_local(self, conn: _Conn) -> None:
        size = LOCAL_READ_FAST if self.ch.fast else LOCAL_READ_STOCK
        smux = self.smux
        try:
            while not self.ch.done and not conn.closing:
                try:
                    data = await conn.reader.read(size)
                except (ConnectionError, OSError):
                    data = b""
                if not data:
                    break
                view = memoryview(data)
                while view and not conn.closing:
                    n = smux.send(conn.sid, view)
                    view = view[n:]
                    if n:
                        await self._push()
                    if view:
                        conn.window.clear()
                        if smux.send_window(conn.sid) <= 0:
                            await conn.window.wait()
        except ValueError:
            pass  # the stream is no longer open for sending
        smux.close_stream(conn.sid)  # FIN (idempotent)
        self._pull()

    async def _write_local(self, conn: _Conn) -> None:
        writer = conn.writer
        while True:
            data = await conn.queue.get()
            if data is None:
                break  # the peer's FIN, after everything it sent
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                self._consumed(conn.sid, len(data))
                self._abort(conn)
                return
            self._consumed(conn.sid, len(data))
        # Like the plugin: deliver what arrived, then close the local connection.
        conn.closing = True
        conn.window.set()
        _close_writer(writer)

    def _consumed(self, sid: int, n: int) -> None:
        with contextlib.suppress(ValueError):
            self.smux.consumed(sid, n)
        self._pull()  # window updates
        if not self.smux.receive_paused:
            self._drained.set()

    def _abort(self, conn: _Conn) -> None:
        """The local socket failed: close it and the stream, drop what is queued."""
        conn.closing = True
        conn.window.set()
        _close_writer(conn.writer)
        self.smux.close_stream(conn.sid)
        while not conn.queue.empty():
            item = conn.queue.get_nowait()
            if item is not None:
                self._consumed(conn.sid, len(item))
        self._pull()

    # --------------------------------------------------------- channel side

    async def on_data(self, payload_type: int, payload: bytes) -> None:
        if payload_type == PayloadType.FLAG:
            with contextlib.suppress(PayloadError):
                if decode_flag(payload) == Flag.CONNECT_TO_PORT_ERROR:
                    self.stdio.say(
                        "\nConnection to destination port failed, check SSM Agent logs.\n")
            return
        if payload_type == PayloadType.STDERR and self.ch.fast:
            self.stdio.err.write(payload)
            return
        if payload_type != PayloadType.OUTPUT or self._failed:
            return
        try:
            events = self.smux.receive_data(payload)
        except SmuxError as exc:
            # The plugin's smux session dies here; so does ours, visibly.
            self._failed = True
            self.stdio.warn(f"Cannot continue port forwarding: {exc}\n")
            for failed in list(self.conns.values()):
                self._abort(failed)
            return
        for event in events:
            conn = self.conns.get(event.stream_id)
            if isinstance(event, StreamData):
                if conn is None or conn.closing:
                    self._consumed(event.stream_id, len(event.data))
                    continue
                conn.queue.put_nowait(event.data)
            elif isinstance(event, StreamClosed):
                if conn is not None:
                    conn.queue.put_nowait(None)
            elif isinstance(event, WindowUpdated):
                if conn is not None:
                    conn.window.set()
            elif isinstance(event, StreamOpened):
                # The plugin never accepts streams opened by the agent.
                self.smux.close_stream(event.stream_id)
        self._pull()
        # smux v1 has no per-stream windows: stop reading the channel while the local
        # sockets are behind by more than max_receive_buffer (xtaci/smux does the same).
        while self.smux.receive_paused and not self.ch.done:
            self._drained.clear()
            await self._drained.wait()

    async def _close_connections(self) -> None:
        for conn in list(self.conns.values()):
            conn.closing = True
            conn.window.set()
            _close_writer(conn.writer)
            conn.queue.put_nowait(None)
