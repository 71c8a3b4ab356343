"""One agent WebSocket with the stock agent's keepalive (agent spec §8).

A ping (payload `keepalive`) goes out every 54 s; the read deadline is 114 s after
connecting and is pushed to 60 s after each pong (data does not extend it). A missed
deadline, a close or an error ends the socket; the owner reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import aiohttp

from portless.aio import with_timeout

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Keepalive:
    ping_interval: float = 54.0
    first_deadline: float = 114.0
    pong_deadline: float = 60.0


class AgentSocket:
    """Wraps an aiohttp client WebSocket opened with autoping off."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, keepalive: Keepalive | None = None,
                 name: str = "websocket") -> None:
        self.ws = ws
        self.name = name
        self.keepalive = keepalive or Keepalive()
        self._deadline = time.monotonic() + self.keepalive.first_deadline
        self._pinger = asyncio.create_task(self._ping_loop())
        self._send_lock = asyncio.Lock()
        self.close_reason = ""

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def _ping_loop(self) -> None:
        try:
            while not self.ws.closed:
                await asyncio.sleep(self.keepalive.ping_interval)
                async with self._send_lock:
                    await self.ws.ping(b"keepalive")
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            log.debug("%s: ping failed: %s", self.name, exc)

    async def send_text(self, text: str) -> None:
        async with self._send_lock:
            await self.ws.send_str(text)

    async def send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            await self.ws.send_bytes(data)

    async def send_many(self, frames: list[bytes]) -> None:
        async with self._send_lock:
            for frame in frames:
                await self.ws.send_bytes(frame)

    async def receive(self) -> bytes | None:
        """The next text or binary frame (text as UTF-8 bytes); None once the socket is done."""
        ws = self.ws
        while True:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                self.close_reason = "no pong before the read deadline"
                await self.close()
                return None
            try:
                msg = await ws.receive(timeout=remaining)
            except TimeoutError:
                continue
            except (aiohttp.ClientError, ConnectionError) as exc:
                self.close_reason = f"read error: {exc}"
                await self.close()
                return None
            kind = msg.type
            if kind == aiohttp.WSMsgType.BINARY:
                data: bytes = msg.data
                return data
            if kind == aiohttp.WSMsgType.TEXT:
                text: str = msg.data
                return text.encode()
            if kind == aiohttp.WSMsgType.PING:
                with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                    async with self._send_lock:
                        await ws.pong(msg.data)
                continue
            if kind == aiohttp.WSMsgType.PONG:
                self._deadline = time.monotonic() + self.keepalive.pong_deadline
                continue
            if kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED):
                self.close_reason = f"closed by the server ({ws.close_code})"
                await self.close()
                return None
            if kind == aiohttp.WSMsgType.ERROR:
                self.close_reason = f"error: {ws.exception()}"
                await self.close()
                return None

    async def close(self) -> None:
        self._pinger.cancel()
        with contextlib.suppress(Exception):
            await with_timeout(self.ws.close(), 5)
