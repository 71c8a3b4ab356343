"""Sans-I/O smux session, wire-compatible with github.com/xtaci/smux protocol v1 and v2.

The Session Manager plugin and agent multiplex port-forwarding connections over one data
channel with smux v1 (client spec §8.5, agent spec §12.4); v2 adds per-stream flow control
via UPD frames.  The byte stream arrives in arbitrary chunks, so frames are reassembled here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER_SIZE = 8
MAX_FRAME_LENGTH = 0xFFFF
"""Largest data length the 16-bit length field can carry; always accepted on receipt."""
STOCK_FRAME_SIZE = 32768
"""The plugin's MaxFrameSize (xtaci/smux v1 default): what stock peers send and expect."""

CMD_SYN = 0
CMD_FIN = 1
CMD_PSH = 2
CMD_NOP = 3
CMD_UPD = 4

UPD_SIZE = 8
"""Data length of a UPD frame: consumed(uint32 LE) + window(uint32 LE); xtaci/smux szCmdUPD."""

INITIAL_PEER_WINDOW = 262144
"""Per-stream send window assumed before the peer's first UPD; xtaci/smux initialPeerWindow."""

V1_SEND_WINDOW = 0x7FFFFFFF
"""What `send_window` reports in v1, which has no per-stream flow control."""

_U32 = 0xFFFFFFFF
_HALF_U32 = 0x80000000
_HEADER = struct.Struct("<BBHI")
_UPD = struct.Struct("<II")


class SmuxError(Exception):
    """The peer violated the smux protocol; the session is unusable afterwards."""


@dataclass(slots=True)
class StreamOpened:
    stream_id: int


@dataclass(slots=True)
class StreamData:
    stream_id: int
    data: bytes


@dataclass(slots=True)
class StreamClosed:
    """The peer sent FIN: it will send nothing more on this stream."""

    stream_id: int


@dataclass(slots=True)
class WindowUpdated:
    """v2: the peer acknowledged data or opened its window; the stream may be writable again."""

    stream_id: int


SmuxEvent = StreamOpened | StreamData | StreamClosed | WindowUpdated


class _Stream:
    """Per-stream state; counters that travel on the wire are kept modulo 2**32."""

    __slots__ = (
        "advertised",
        "incr",
        "local_fin",
        "num_read",
        "num_written",
        "peer_consumed",
        "peer_window",
        "remote_fin",
        "unconsumed",
    )

    def __init__(self) -> None:
        self.local_fin = False
        self.remote_fin = False
        self.num_written = 0
        self.peer_consumed = 0
        self.peer_window = INITIAL_PEER_WINDOW
        self.num_read = 0
        self.incr = 0
        self.advertised = False
        self.unconsumed = 0


class SmuxSession:
    """One end of an smux session: feed received bytes in, collect bytes to send out.

    Received data is handed to the application at once as events; `consumed` reports how
    much of it the application has disposed of, which drives v2 window updates and the
    advisory `receive_paused` back-pressure flag.
    """

    def __init__(
        self,
        *,
        is_client: bool,
        version: int = 1,
        max_frame_size: int = STOCK_FRAME_SIZE,
        stream_window: int = 262144,
        max_receive_buffer: int = 4 * 1024 * 1024,
    ) -> None:
        if version not in (1, 2):
            raise ValueError(f"unsupported smux version {version}")
        if not 0 < max_frame_size <= MAX_FRAME_LENGTH:
            raise ValueError(f"max_frame_size must be in 1..{MAX_FRAME_LENGTH}")
        if not 0 < stream_window <= 0x7FFFFFFF:
            raise ValueError("stream_window must be a positive int32")
        if max_receive_buffer <= 0:
            raise ValueError("max_receive_buffer must be positive")
        self._is_client = is_client
        self._version = version
        self._max_cmd = CMD_UPD if version >= 2 else CMD_NOP
        self._max_frame_size = max_frame_size
        self._stream_window = stream_window
        self._max_receive_buffer = max_receive_buffer
        # xtaci/smux: the client's nextStreamID starts at 1, the server's at 0, and both
        # add 2 before use, so the first ids are 3 and 2.
        self._next_id = 3 if is_client else 2
        self._streams: dict[int, _Stream] = {}
        # Released streams whose delivered data the application has not consumed yet.
        self._draining: dict[int, int] = {}
        self._buffered = 0
        self._rx = bytearray()
        self._tx = bytearray()
        self._failed: SmuxError | None = None

    @property
    def version(self) -> int:
        return self._version

    @property
    def is_client(self) -> bool:
        return self._is_client

    @property
    def open_streams(self) -> frozenset[int]:
        """Ids of streams not yet released (released once both sides have sent FIN)."""
        return frozenset(self._streams)

    @property
    def receive_buffered(self) -> int:
        """Bytes delivered in StreamData events and not yet reported via `consumed`."""
        return self._buffered

    @property
    def receive_paused(self) -> bool:
        """True while `receive_buffered` is at or above max_receive_buffer: stop reading input."""
        return self._buffered >= self._max_receive_buffer

    # ----------------------------------------------------------------- receiving

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[SmuxEvent]:
        """Parse a chunk of the peer's byte stream; raises SmuxError on a protocol violation."""
        if self._failed is not None:
            raise SmuxError(f"session already failed: {self._failed}")
        events: list[SmuxEvent] = []
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        try:
            self._receive(view, events)
        except SmuxError as exc:
            self._failed = exc
            self._rx.clear()
            raise
        return events

    def _receive(self, view: memoryview, events: list[SmuxEvent]) -> None:
        end = len(view)
        pos = 0
        rx = self._rx
        if rx:
            # Finish the frame left incomplete by the previous chunk.
            have = len(rx)
            if have < HEADER_SIZE:
                pos = min(HEADER_SIZE - have, end)
                rx += view[:pos]
                if len(rx) < HEADER_SIZE:
                    return
                self._check_header(*_HEADER.unpack_from(rx))
            length = rx[2] | (rx[3] << 8)
            need = HEADER_SIZE + length - len(rx)
            take = min(need, end - pos)
            rx += view[pos : pos + take]
            pos += take
            if take < need:
                return
            frame = bytes(rx)
            rx.clear()
            _, cmd, length, sid = _HEADER.unpack_from(frame)
            self._dispatch(cmd, sid, memoryview(frame)[HEADER_SIZE:], events)

        unpack = _HEADER.unpack_from
        version = self._version
        max_cmd = self._max_cmd
        streams = self._streams
        while end - pos >= HEADER_SIZE:
            ver, cmd, length, sid = unpack(view, pos)
            if ver != version or cmd > max_cmd or (cmd == CMD_UPD and length != UPD_SIZE):
                self._check_header(ver, cmd, length, sid)
            start = pos + HEADER_SIZE
            stop = start + length
            if stop > end:
                break
            if cmd == CMD_PSH:
                st = streams.get(sid)
                if length and st is not None and not st.remote_fin:
                    st.unconsumed += length
                    self._buffered += length
                    events.append(StreamData(sid, bytes(view[start:stop])))
            else:
                self._dispatch(cmd, sid, view[start:stop], events)
            pos = stop
        if pos < end:
            # What is left is a partial frame, so the buffer stays within 8 + 65535 bytes.
            rx += view[pos:]

    def _check_header(self, ver: int, cmd: int, length: int, sid: int) -> None:
        if ver != self._version:
            raise SmuxError(f"smux frame version {ver}, session uses {self._version}")
        if cmd > self._max_cmd:
            raise SmuxError(f"invalid smux command {cmd} for protocol v{self._version}")
        if cmd == CMD_UPD and length != UPD_SIZE:
            raise SmuxError(f"UPD frame on stream {sid} with length {length}")

    def _dispatch(self, cmd: int, sid: int, body: memoryview, events: list[SmuxEvent]) -> None:
        if cmd == CMD_PSH:
            st = self._streams.get(sid)
            # Data after the peer's FIN is discarded like data for an unknown stream.
            if body.nbytes and st is not None and not st.remote_fin:
                st.unconsumed += body.nbytes
                self._buffered += body.nbytes
                events.append(StreamData(sid, bytes(body)))
        elif cmd == CMD_SYN:
            if sid not in self._streams:
                self._buffered -= self._draining.pop(sid, 0)
                self._streams[sid] = _Stream()
                events.append(StreamOpened(sid))
        elif cmd == CMD_FIN:
            st = self._streams.get(sid)
            if st is not None and not st.remote_fin:
                st.remote_fin = True
                events.append(StreamClosed(sid))
                if st.local_fin:
                    self._release(sid)
        elif cmd == CMD_UPD:
            st = self._streams.get(sid)
            if st is None:
                return
            consumed, window = _UPD.unpack_from(body)
            # Same modular check as xtaci/smux writeV2 (ErrConsumed): the peer may not
            # acknowledge bytes that were never sent.
            if (st.num_written - consumed) & _U32 >= _HALF_U32:
                raise SmuxError(f"UPD on stream {sid} acknowledges more than was sent")
            st.peer_consumed = consumed
            st.peer_window = window
            if not st.local_fin:
                events.append(WindowUpdated(sid))
        # CMD_NOP: keepalive, nothing to do.

    def _release(self, sid: int) -> None:
        st = self._streams.pop(sid)
        if st.unconsumed:
            self._draining[sid] = st.unconsumed

    # ------------------------------------------------------------------- sending

    def open_stream(self) -> int:
        """Allocate the next stream id of this side and queue its SYN."""
        sid = self._next_id
        while sid in self._streams:
            sid += 2
        if sid > _U32:
            raise SmuxError("stream ids exhausted")
        self._next_id = sid + 2
        self._buffered -= self._draining.pop(sid, 0)
        self._streams[sid] = _Stream()
        self._tx += _HEADER.pack(self._version, CMD_SYN, 0, sid)
        return sid

    def send(self, stream_id: int, data: bytes | bytearray | memoryview) -> int:
        """Queue PSH frames for `data`; returns how many bytes were accepted.

        v1 accepts everything; v2 accepts at most `send_window(stream_id)` bytes, and the
        caller retries the rest after a WindowUpdated event.
        """
        st = self._streams.get(stream_id)
        if st is None or st.local_fin:
            raise ValueError(f"stream {stream_id} is not open for sending")
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        n = len(view)
        if self._version >= 2:
            n = min(n, self._window(st))
        if n <= 0:
            return 0
        tx = self._tx
        pack = _HEADER.pack
        version = self._version
        step = self._max_frame_size
        for off in range(0, n, step):
            chunk = view[off : min(off + step, n)]
            tx += pack(version, CMD_PSH, len(chunk), stream_id)
            tx += chunk
        st.num_written = (st.num_written + n) & _U32
        return n

    def send_window(self, stream_id: int) -> int:
        """Bytes `send` would accept now: v2 the peer's remaining window, v1 a large constant."""
        st = self._streams.get(stream_id)
        if st is None or st.local_fin:
            return 0
        if self._version < 2:
            return V1_SEND_WINDOW
        return self._window(st)

    @staticmethod
    def _window(st: _Stream) -> int:
        inflight = (st.num_written - st.peer_consumed) & _U32
        return max(0, st.peer_window - inflight)

    def close_stream(self, stream_id: int) -> None:
        """Queue FIN for the stream (idempotent; unknown ids are ignored)."""
        st = self._streams.get(stream_id)
        if st is None or st.local_fin:
            return
        st.local_fin = True
        self._tx += _HEADER.pack(self._version, CMD_FIN, 0, stream_id)
        if st.remote_fin:
            self._release(stream_id)

    def consumed(self, stream_id: int, n: int) -> None:
        """Report that the application disposed of `n` delivered bytes of this stream.

        Frees receive-buffer budget; in v2 it also queues a UPD after the first
        consumption and whenever half a window has been consumed since the last one,
        the policy xtaci/smux uses so a reading peer never stalls.
        """
        if n < 0:
            raise ValueError("n must not be negative")
        if n == 0:
            return
        st = self._streams.get(stream_id)
        if st is None:
            left = self._draining.get(stream_id, 0)
            if n > left:
                raise ValueError(f"stream {stream_id}: consumed more than was delivered")
            if n == left:
                del self._draining[stream_id]
            else:
                self._draining[stream_id] = left - n
            self._buffered -= n
            return
        if n > st.unconsumed:
            raise ValueError(f"stream {stream_id}: consumed more than was delivered")
        st.unconsumed -= n
        self._buffered -= n
        if self._version < 2 or st.remote_fin:
            return
        st.num_read = (st.num_read + n) & _U32
        st.incr += n
        if not st.advertised or st.incr >= self._stream_window // 2:
            st.advertised = True
            st.incr = 0
            self._tx += _HEADER.pack(self._version, CMD_UPD, UPD_SIZE, stream_id)
            self._tx += _UPD.pack(st.num_read, self._stream_window)

    def send_nop(self) -> None:
        """Queue a keepalive NOP (stream id 0)."""
        self._tx += _HEADER.pack(self._version, CMD_NOP, 0, 0)

    def data_to_send(self) -> bytes:
        """Drain and return every queued frame byte."""
        if not self._tx:
            return b""
        out = bytes(self._tx)
        self._tx.clear()
        return out
