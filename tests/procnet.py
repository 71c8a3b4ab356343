"""What /proc says about a process's sockets: which of them are listening."""

from __future__ import annotations

import os
from pathlib import Path


def socket_inodes(pid: int) -> set[str]:
    """Inodes of every socket the process holds open."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:["):-1])
    return found


def listening_inodes() -> set[str]:
    """Inodes of every listening TCP (v4, v6) and Unix socket on the machine."""
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":                       # TCP_LISTEN
                found.add(fields[9])
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[3], 16) & 0x10000:                # __SO_ACCEPTCON: a listener
            found.add(fields[6])
    return found
