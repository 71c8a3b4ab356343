"""The contract between the data channel and a session plugin.

The data channel owns the reliable stream; a plugin sees only `SessionIO`: it sends
payloads (waiting while the stream is not writable, which is how back-pressure reaches the
pty or socket reader), says whether it can take input yet (input it cannot take is neither
acked nor delivered, so the client retransmits it), and receives the client's payloads in
order through `on_input`.
"""

from __future__ import annotations

import abc
from typing import Protocol

from portless.protocol.message import STOCK_CHUNK

__all__ = ["STOCK_CHUNK", "SessionClosed", "SessionFailed", "SessionIO", "SessionPlugin"]


class SessionFailed(Exception):
    """The session cannot go on; the text becomes agent_task_complete's Output."""


class SessionClosed(Exception):
    """Raised by `SessionIO.send` once the session is over (cancelled or channel lost)."""


class SessionIO(Protocol):
    @property
    def max_payload(self) -> int:
        """Largest payload to put in one message: 1024 for stock clients, more on the fast path."""

    @property
    def fast_path(self) -> bool:
        """True when the client is portless and negotiated the fast path."""

    async def send(self, payload_type: int, data: bytes) -> None:
        """Queue one output message; waits while the stream has no room.

        Raises SessionClosed once the session is over.
        """

    def set_ready(self, ready: bool) -> None:
        """Whether in-order input may be delivered (and acked) now."""


class SessionPlugin(abc.ABC):
    """One session type. `run` returns when the session is over (normally: Success)."""

    @abc.abstractmethod
    async def run(self, io: SessionIO) -> None:
        """Run the session; raise SessionFailed to end it with FinalTaskStatus Failed."""

    @abc.abstractmethod
    def on_input(self, payload_type: int, payload: bytes) -> None:
        """One in-order client payload (after the handshake); only called while ready."""
