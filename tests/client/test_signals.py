"""Signal handlers of session handlers: installed where possible, removed without a trace."""

from __future__ import annotations

import asyncio
import os
import signal

from portless.client.signals import add_signal_handlers, remove_signal_handlers


async def test_installed_handlers_run_and_are_removed_again() -> None:
    seen: list[str] = []
    handled = asyncio.Event()

    def on_usr1() -> None:
        seen.append("usr1")
        handled.set()

    installed = add_signal_handlers({signal.SIGUSR1: on_usr1,
                                     signal.SIGKILL: lambda: seen.append("never")})
    assert installed == [signal.SIGUSR1]        # SIGKILL cannot be caught: skipped
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(handled.wait(), 5)
        assert seen == ["usr1"]
    finally:
        remove_signal_handlers(installed)
    assert installed == []
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
