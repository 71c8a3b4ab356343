"""Whether a host name or address is this machine's loopback.

The server refuses plain HTTP off loopback, and the client skips proxy settings for a
loopback endpoint; both must agree on what loopback is.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for `localhost` and any loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
