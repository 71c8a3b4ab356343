"""Small asyncio helpers that stay correct under cancellation.

Python 3.11's `asyncio.wait_for` can swallow a cancellation that races with the awaited
future completing, which leaves a cancelled loop running forever; these use
`asyncio.timeout` instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set or `timeout` seconds passed; True if it is set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


async def with_timeout(aw: Awaitable[T], timeout: float | None) -> T:
    """Await `aw` for at most `timeout` seconds (raises TimeoutError)."""
    async with asyncio.timeout(timeout):
        return await aw
