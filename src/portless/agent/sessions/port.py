"""Port sessions: TCP to localhost:portNumber or host:portNumber (agent spec §12.4).

* stdin/stdout (AWS-StartSSHSession): dial right after the handshake; bytes both ways;
  the session ends when the TCP connection closes.
* basic (LocalPortForwarding with old clients): one connection at a time; DisconnectToPort
  closes it and the next data re-dials.
* mux: an smux server over the PayloadType-1 byte stream; one dial per SYN; a refused
  dial answers ConnectToPortError (flag 3) and FIN.

Back-pressure both ways: a socket is not read while the data channel has no room (or, smux
v2, while the stream's window is shut); client data beyond a bounded buffer is not accepted
(not acked) until the socket has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections import deque

from portless.agent.sessions.base import SessionClosed, SessionFailed, SessionIO, SessionPlugin
from portless.agent.sessions.document import SessionSpec
from portless.aio import with_timeout
from portless.protocol.handshake import PortMode
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

log = logging.getLogger(__name__)

DENIED_REMOTE_IPS = frozenset({
    "169.254.169.254", "fd00:ec2::254",     # instance metadata
    "169.254.169.253", "fd00:ec2::253",     # VPC DNS
    "169.254.169.123", "fd00:ec2::123",     # time sync
})
"""Mgs.DeniedPortForwardingRemoteIPs defaults: never forward to the cloud's own services."""

SOCKET_READ = 256 * 1024
"""Bytes per destination-socket read; the stream window and channel room still bound it."""
WRITE_HIGH_WATER = 1 * 2**20
"""Bytes queued towards one TCP socket beyond which client data is refused (not acked)."""
SMUX_RECEIVE_BUFFER = 4 * 2**20
SMUX_STREAM_WINDOW = 2**20
KEEPALIVE_INTERVAL = 10.0
DIAL_TIMEOUT = 30.0


NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
"""The well-known NAT64 prefix (RFC 6052): its addresses reach the embedded IPv4 address."""


def canonical_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """`address` as the IP it really reaches: IPv4-mapped (`::ffff:a.b.c.d`) and NAT64
    (`64:ff9b::a.b.c.d`) IPv6 addresses become their IPv4 address; a zone is dropped."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in NAT64_PREFIX:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


class Destination:
    """Where connections go: `localhost` or the session's `host`, resolved once."""

    def __init__(self, host: str, port: int, addresses: list[str] | None) -> None:
        self.host = host
        self.port = port
        self.addresses = addresses       # None: dial `host` by name (localhost)

    @classmethod
    async def resolve(cls, properties: dict[str, str],
                      denied: frozenset[str] = DENIED_REMOTE_IPS) -> Destination:
        raw_port = properties.get("portNumber", "")
        try:
            port = int(raw_port)
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            raise SessionFailed(f"Invalid portNumber {raw_port!r}")
        host = properties.get("host", "").strip()
        if not host:
            return cls("localhost", port, None)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("cannot resolve %s: %s", host, exc)
            return cls(host, port, [])      # every dial will fail, as with the stock agent
        addresses: list[str] = []
        for info in infos:
            addr = str(info[4][0])
            if addr not in addresses:
                addresses.append(addr)
        denied_ips = {canonical_ip(a) for a in denied}
        for addr in addresses:
            if canonical_ip(addr) in denied_ips:
                raise SessionFailed(f"Forwarding to IP address {addr} is forbidden.")
        return cls(host, port, addresses)

    async def dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect, trying the resolved addresses in order; raises OSError."""
        async with asyncio.timeout(DIAL_TIMEOUT):
            if self.addresses is None:
                return await asyncio.open_connection(self.host, self.port)
            last: OSError = ConnectionRefusedError(f"no address for {self.host}")
            for addr in self.addresses:
                try:
                    return await asyncio.open_connection(addr, self.port)
                except OSError as exc:
                    last = exc
            raise last

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _tune(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.transport.set_write_buffer_limits(high=256 * 1024)


async def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    writer.close()
    with contextlib.suppress(Exception):
        await with_timeout(writer.wait_closed(), 2)


class PortPlugin(SessionPlugin):
    def __init__(self, spec: SessionSpec, mode: PortMode, *, smux_version: int = 1,
                 smux_keepalive: bool = False) -> None:
        self.spec = spec
        self.mode = mode
        self.properties = spec.port_properties()
        self.smux_version = smux_version
        self.smux_keepalive = smux_keepalive
        self._io: SessionIO | None = None
        self._done = asyncio.Event()
        self._impl: _Connection | _Mux | None = None
        self._failure: str | None = None

    def fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
        self._done.set()

    async def run(self, io: SessionIO) -> None:
        self._io = io
        dest = await Destination.resolve(self.properties)
        if self.mode is PortMode.MUX:
            impl: _Connection | _Mux = _Mux(self, io, dest, self.smux_version,
                                            self.smux_keepalive)
        else:
            impl = _Connection(self, io, dest, redial=self.mode is PortMode.BASIC)
        try:
            await impl.start()
        except OSError as exc:
            raise SessionFailed(f"Unable to connect to specified port: {exc}") from None
        self._impl = impl
        io.set_ready(True)
        try:
            await self._done.wait()
        finally:
            await asyncio.shield(impl.close())
        if self._failure is not None:
            raise SessionFailed(self._failure)

    def on_input(self, payload_type: int, payload: bytes) -> None:
        if payload_type == PayloadType.FLAG:
            try:
                flag = decode_flag(payload)
            except PayloadError:
                return
            if flag == Flag.TERMINATE_SESSION:
                log.info("session %s: client ended the session", self.spec.session_id)
                self._done.set()
            elif flag == Flag.DISCONNECT_TO_PORT and isinstance(self._impl, _Connection):
                self._impl.disconnect()
            return
        if payload_type == PayloadType.OUTPUT and self._impl is not None:
            self._impl.feed(payload)


class _Connection:
    """stdin/stdout and basic mode: one TCP connection carried as PayloadType 1."""

    def __init__(self, owner: PortPlugin, io: SessionIO, dest: Destination, *,
                 redial: bool) -> None:
        self.owner = owner
        self.io = io
        self.dest = dest
        self.redial = redial
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.flusher: asyncio.Task[None] | None = None
        self.generation = 0
        self.closers: set[asyncio.Task[None]] = set()
        """Closes of dropped connections still running (referenced so they are not GC'd)."""

    async def start(self) -> None:
        await self._connect()

    async def _connect(self) -> None:
        reader, writer = await self.dest.dial()
        _tune(writer)
        self.generation += 1
        self.writer = writer
        self.reader_task = asyncio.create_task(self._pump(reader, writer, self.generation))
        log.info("session %s: connected to %s", self.owner.spec.session_id, self.dest)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    generation: int) -> None:
        """Socket → client, one message per read, waiting while the channel has no room."""
        size = min(self.io.max_payload, SOCKET_READ)
        try:
            while data := await reader.read(size):
                await self.io.send(PayloadType.OUTPUT, data)
        except SessionClosed:
            return
        except (ConnectionError, OSError) as exc:
            log.info("session %s: connection error: %s", self.owner.spec.session_id, exc)
        if generation != self.generation:
            return
        if not self.redial:
            log.info("session %s: %s closed the connection", self.owner.spec.session_id,
                     self.dest)
            self.owner._done.set()
            return
        # Basic mode: drop the connection; the next data from the client re-dials.
        self.writer = None
        await _close(writer)

    def disconnect(self) -> None:
        """DisconnectToPort: close the current connection (basic mode)."""
        if not self.redial:
            return
        writer, self.writer = self.writer, None
        self.generation += 1
        self.pending.clear()
        self.pending_bytes = 0
        if self.reader_task is not None:
            self.reader_task.cancel()
        if writer is not None:
            task = asyncio.get_running_loop().create_task(_close(writer))
            self.closers.add(task)
            task.add_done_callback(self.closers.discard)

    def feed(self, data: bytes) -> None:
        """Client → socket."""
        if not data:
            return
        writer = self.writer
        if writer is not None and not self.pending and not writer.is_closing():
            writer.write(data)
            if writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                self._hold()
            return
        self.pending.append(data)
        self.pending_bytes += len(data)
        self._hold()

    def _hold(self) -> None:
        """Stop accepting client data until the socket drained (or the re-dial finished)."""
        if self.flusher is None or self.flusher.done():
            self.io.set_ready(False)
            self.flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            if self.writer is None or self.writer.is_closing():
                if not self.redial:
                    self.pending.clear()
                    self.pending_bytes = 0
                    return
                try:
                    await self._connect()
                except OSError as exc:
                    self.owner.fail(f"Unable to connect to specified port: {exc}")
                    return
            writer = self.writer
            assert writer is not None
            while True:
                while self.pending:
                    data = self.pending.popleft()
                    self.pending_bytes -= len(data)
                    writer.write(data)
                await writer.drain()
                if not self.pending:
                    break
        except (ConnectionError, OSError) as exc:
            log.info("session %s: write failed: %s", self.owner.spec.session_id, exc)
        finally:
            self.io.set_ready(True)

    async def close(self) -> None:
        self.generation += 1
        for task in (self.reader_task, self.flusher):
            if task is not None and not task.done():
                task.cancel()
        await _close(self.writer)
        self.writer = None


class _MuxStream:
    __slots__ = ("data_ready", "pending", "pending_bytes", "remote_fin", "task", "window",
                 "writer", "writer_task")

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.data_ready = asyncio.Event()
        self.window = asyncio.Event()
        self.window.set()
        self.remote_fin = False
        self.task: asyncio.Task[None] | None = None
        self.writer_task: asyncio.Task[None] | None = None


class _Mux:
    """smux server: one TCP connection per client stream.

    Only the flusher task sends on the data channel, so smux bytes leave in order and a
    ConnectToPortError flag lands between the bytes queued before it and the stream's FIN.
    Socket readers wait for the flusher's backlog to clear, which is how a full data
    channel stops them reading.
    """

    def __init__(self, owner: PortPlugin, io: SessionIO, dest: Destination, version: int,
                 keepalive: bool) -> None:
        self.owner = owner
        self.io = io
        self.dest = dest
        frame = MAX_FRAME_LENGTH if version >= 2 else STOCK_FRAME_SIZE
        self.smux = SmuxSession(is_client=False, version=version, max_frame_size=frame,
                                stream_window=SMUX_STREAM_WINDOW,
                                max_receive_buffer=SMUX_RECEIVE_BUFFER)
        self.keepalive = keepalive
        self.streams: dict[int, _MuxStream] = {}
        self.refused: deque[int] = deque()
        self.flush_needed = asyncio.Event()
        self.backlog_clear = asyncio.Event()
        self.backlog_clear.set()
        self.tasks: list[asyncio.Task[None]] = []
        self.held = False

    async def start(self) -> None:
        self.tasks.append(asyncio.create_task(self._flusher()))
        if self.keepalive:
            self.tasks.append(asyncio.create_task(self._keepalive()))

    # -------------------------------------------------------------- output

    def _wake(self) -> None:
        self.backlog_clear.clear()
        self.flush_needed.set()

    async def _send_smux(self) -> None:
        chunk = self.io.max_payload
        while data := self.smux.data_to_send():
            for off in range(0, len(data), chunk):
                await self.io.send(PayloadType.OUTPUT, data[off:off + chunk])

    async def _flusher(self) -> None:
        try:
            await self._flush_loop()
        except SessionClosed:
            pass
        except Exception as exc:
            log.exception("session %s: mux output failed", self.owner.spec.session_id)
            self.owner.fail(f"internal error: {exc}")

    async def _flush_loop(self) -> None:
        while True:
            await self.flush_needed.wait()
            self.flush_needed.clear()
            await self._send_smux()
            while self.refused:
                sid = self.refused.popleft()
                await self.io.send(PayloadType.FLAG, encode_flag(Flag.CONNECT_TO_PORT_ERROR))
                self.smux.close_stream(sid)
                await self._send_smux()
            if not self.flush_needed.is_set():
                self.backlog_clear.set()

    async def _keepalive(self) -> None:
        """NOP every 10 s for old clients whose smux closes a silent session after 30 s.

        Unlike xtaci/smux, the agent does not itself end a session that received nothing
        for 30 s: a plugin that turned its own keepalive off would never send a NOP, and
        idle sessions are the server's to end (idleSessionTimeout).
        """
        while True:
            await asyncio.sleep(KEEPALIVE_INTERVAL)
            self.smux.send_nop()
            self._wake()

    # --------------------------------------------------------------- input

    def feed(self, data: bytes) -> None:
        try:
            events = self.smux.receive_data(data)
        except SmuxError as exc:
            self.owner.fail(f"smux protocol error: {exc}")
            return
        for event in events:
            if isinstance(event, StreamData):
                self._data(event.stream_id, event.data)
            elif isinstance(event, StreamOpened):
                self._open(event.stream_id)
            elif isinstance(event, StreamClosed):
                self._remote_fin(event.stream_id)
            elif isinstance(event, WindowUpdated):
                st = self.streams.get(event.stream_id)
                if st is not None:
                    st.window.set()
        if self.smux.receive_paused and not self.held:
            self.held = True
            self.io.set_ready(False)
        self._wake()

    def _open(self, sid: int) -> None:
        st = _MuxStream()
        self.streams[sid] = st
        st.task = asyncio.get_running_loop().create_task(self._serve(sid, st))

    def _data(self, sid: int, data: bytes) -> None:
        st = self.streams.get(sid)
        if st is None or st.remote_fin:
            self._consumed(sid, len(data))
            return
        st.pending.append(data)
        st.pending_bytes += len(data)
        st.data_ready.set()

    def _remote_fin(self, sid: int) -> None:
        st = self.streams.get(sid)
        if st is None:
            return
        st.remote_fin = True
        st.data_ready.set()

    def _consumed(self, sid: int, n: int) -> None:
        with contextlib.suppress(ValueError):
            self.smux.consumed(sid, n)
        if self.held and not self.smux.receive_paused:
            self.held = False
            self.io.set_ready(True)
        if self.smux.version >= 2:
            self._wake()

    # ------------------------------------------------------------- streams

    async def _serve(self, sid: int, st: _MuxStream) -> None:
        try:
            reader, writer = await self.dest.dial()
        except OSError as exc:
            log.info("session %s: stream %d: cannot connect to %s: %s",
                     self.owner.spec.session_id, sid, self.dest, exc)
            self.refused.append(sid)
            self._wake()
            self._release(sid, st)
            return
        _tune(writer)
        st.writer = writer
        st.writer_task = asyncio.create_task(self._write(sid, st, writer))
        try:
            await self._read(sid, st, reader)
        finally:
            if st.writer_task is not None and not st.writer_task.done():
                st.writer_task.cancel()
            self.smux.close_stream(sid)
            self._wake()
            self._release(sid, st)
            await _close(writer)

    async def _read(self, sid: int, st: _MuxStream, reader: asyncio.StreamReader) -> None:
        """Socket → smux stream, respecting the stream window and the channel's room."""
        try:
            while True:
                await self.backlog_clear.wait()
                data = await reader.read(SOCKET_READ)
                if not data:
                    return
                view = memoryview(data)
                while view:
                    if self.smux.send_window(sid) <= 0:
                        if sid not in self.smux.open_streams:
                            return
                        st.window.clear()
                        await st.window.wait()
                        continue
                    sent = self.smux.send(sid, view)
                    view = view[sent:]
                    self._wake()
        except (ConnectionError, OSError, ValueError) as exc:
            log.debug("stream %d: read ended: %s", sid, exc)

    async def _write(self, sid: int, st: _MuxStream, writer: asyncio.StreamWriter) -> None:
        """smux stream → socket; a FIN from the client closes the connection."""
        try:
            while True:
                await st.data_ready.wait()
                st.data_ready.clear()
                while st.pending:
                    data = st.pending.popleft()
                    st.pending_bytes -= len(data)
                    writer.write(data)
                    await writer.drain()
                    self._consumed(sid, len(data))
                if st.remote_fin:
                    break
        except (ConnectionError, OSError) as exc:
            log.debug("stream %d: write ended: %s", sid, exc)
        # The client closed its side (or the socket failed): end the whole stream.
        if st.task is not None and not st.task.done():
            st.task.cancel()

    def _release(self, sid: int, st: _MuxStream) -> None:
        if self.streams.get(sid) is st:
            del self.streams[sid]
        left = st.pending_bytes
        st.pending.clear()
        st.pending_bytes = 0
        if left:
            self._consumed(sid, left)

    async def close(self) -> None:
        tasks: list[asyncio.Task[None]] = list(self.tasks)
        writers = []
        for st in list(self.streams.values()):
            writers.append(st.writer)
            for task in (st.task, st.writer_task):
                if task is not None:
                    tasks.append(task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for writer in writers:
            await _close(writer)
        self.streams.clear()
