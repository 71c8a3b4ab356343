"""Version strings and the thresholds at which the plugin and the agent change behaviour.

Both peers compare dotted numeric versions component-wise; the plugin additionally treats
any agent version without exactly four numeric components as "older" (client spec §7.2,
§7.9; agent spec §11.5).
"""

from __future__ import annotations

TERMINATE_FLAG_AGENT = "2.3.722.0"
"""Agent versions above this understand the TerminateSession flag in basic port mode."""

MUX_AGENT = "3.0.196.0"
"""Agent versions above this multiplex port sessions (smux)."""

SMUX_KEEPALIVE_OFF_AGENT = "3.1.1511.0"
"""Agent versions above this make the plugin turn its smux keepalive off."""

MUX_CLIENT = "1.1.70"
"""Client versions at or above this get a multiplexed port session from the agent."""

SMUX_KEEPALIVE_OFF_CLIENT = "1.2.331.0"
"""Client versions above this make the agent turn its smux keepalive off."""

PORTLESS_AGENT_VERSION = "3.3.4000.0"
"""What the portless agent announces: four components, above every agent threshold."""

PORTLESS_CLIENT_VERSION = "1.2.694.0"
"""What the portless client announces: a current plugin version."""


def parse_version(version: str) -> tuple[int, ...] | None:
    """The numeric components of `version`, or None when it is empty or not all digits."""
    if not version:
        return None
    parts = version.split(".")
    if not all(p.isascii() and p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as `a` is lower, equal or higher than `b`.

    Components compare numerically with zero padding ("1.1.70" == "1.1.70.0"); an empty
    or malformed version compares lower than any valid one and equal to another invalid one.
    """
    pa, pb = parse_version(a), parse_version(b)
    if pa is None or pb is None:
        return (pa is not None) - (pb is not None)
    width = max(len(pa), len(pb))
    pa = pa + (0,) * (width - len(pa))
    pb = pb + (0,) * (width - len(pb))
    return (pa > pb) - (pa < pb)


def is_four_part(version: str) -> bool:
    """True when `version` has exactly four numeric components, as the plugin requires."""
    parsed = parse_version(version)
    return parsed is not None and len(parsed) == 4


def agent_newer_than(agent_version: str, threshold: str) -> bool:
    """The plugin's check on the agent version: four components and strictly greater."""
    return is_four_part(agent_version) and compare_versions(agent_version, threshold) > 0


def client_at_least(client_version: str, threshold: str) -> bool:
    """The agent's check on the client version (zero-padded compare; empty is lowest)."""
    return compare_versions(client_version, threshold) >= 0


def client_newer_than(client_version: str, threshold: str) -> bool:
    return compare_versions(client_version, threshold) > 0


assert is_four_part(PORTLESS_AGENT_VERSION)
assert all(agent_newer_than(PORTLESS_AGENT_VERSION, t)
           for t in (TERMINATE_FLAG_AGENT, MUX_AGENT, SMUX_KEEPALIVE_OFF_AGENT))
assert client_newer_than(PORTLESS_CLIENT_VERSION, SMUX_KEEPALIVE_OFF_CLIENT)
