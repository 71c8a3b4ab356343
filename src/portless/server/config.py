"""Server configuration: what `portless server` was told, plus the relay's tunables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from portless.server.tls import TlsFiles

MiB = 1024 * 1024


def default_data_dir() -> Path:
    env = os.environ.get("PORTLESS_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path("~/.local/share/portless").expanduser()


@dataclass(slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = field(default_factory=default_data_dir)
    db_url: str | None = None
    region: str = "us-east-1"
    tls: TlsFiles | None = None

    # Sessions and relay.
    minute_seconds: float = 60.0
    """Length of the "minute" in idleSessionTimeout/maxSessionDuration (tests shorten it)."""
    start_timeout: float = 30.0
    """Fail a session whose agent has not opened its data channel by then."""
    disconnect_grace: float = 120.0
    """End a session whose client or agent has been gone (not reconnected) that long."""
    end_grace: float = 10.0
    """After the agent said Terminating and left, wait this long for agent_task_complete."""
    send_timeout: float = 60.0
    """A peer that has not taken a frame for this long is cut off (it stopped reading)."""
    pending_limit: int = 8 * MiB
    """Bytes queued for an absent side before frames are dropped (the ends retransmit)."""
    max_frame: int = 4 * MiB
    sweep_interval: float = 1.0

    # Agent-facing.
    credential_ttl: float = 3600.0
    channel_token_ttl: float = 300.0
    get_messages_hold: float = 10.0
    ping_interval: float = 60.0
    """How often a connected control channel refreshes the node's LastPingDateTime."""
    control_idle_timeout: float = 162.0
    """Drop a control channel on which nothing (not even a ping) arrived for this long;
    the agents ping every 54 s, so this is three missed pings."""
    control_send_timeout: float = 10.0
    """A control-channel send that has not completed by then cuts the channel off."""

    # Housekeeping.
    purge_interval: float = 300.0
    """How often used/expired channel tokens and expired issued credentials are deleted."""

    def resolved_db_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'portless.db'}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def ws_scheme(self) -> str:
        return "wss" if self.tls is not None else "ws"

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"

    @property
    def credentials_path(self) -> Path:
        return self.data_dir / "credentials"
