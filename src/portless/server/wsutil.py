"""WebSocket helpers shared by the control channels, the relay and the MGS handlers."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_INTERNAL_ERROR = 1011


async def close_quietly(ws: web.WebSocketResponse, code: int, message: bytes) -> None:
    """Close `ws` (bounded to 2 s), ignoring every error; no-op if already closed."""
    if ws.closed:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code=code, message=message), 2.0)

