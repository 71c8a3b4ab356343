"""Waiting for a condition in async tests, instead of sleeping for a guessed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def wait_until(predicate: Callable[[], Awaitable[Any] | Any], timeout: float = 5.0,
                     what: str = "condition", interval: float = 0.01) -> Any:
    """Polls `predicate` (plain or async) every `interval` s until it returns something
    truthy; fails the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        await asyncio.sleep(interval)
