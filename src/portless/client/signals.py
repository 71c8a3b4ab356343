"""Signal handlers of a session's handler, installed on the running loop and removed again.

Shell and port sessions both catch signals while they run (Ctrl-C, SIGTERM, SIGWINCH) and
must leave the process as they found it; a signal the loop cannot handle here (not the
main thread, an unsupported platform) is skipped rather than failing the session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping


def add_signal_handlers(handlers: Mapping[int, Callable[[], object]]) -> list[int]:
    """Install `handlers` on the running loop; returns the signals actually installed."""
    loop = asyncio.get_running_loop()
    installed: list[int] = []
    for sig, callback in handlers.items():
        try:
            loop.add_signal_handler(sig, callback)
        except (ValueError, RuntimeError, OSError):
            continue
        installed.append(sig)
    return installed


def remove_signal_handlers(signals: list[int]) -> None:
    """Remove the handlers of `signals` (from `add_signal_handlers`) and empty the list."""
    loop = asyncio.get_running_loop()
    for sig in signals:
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sig)
    signals.clear()
