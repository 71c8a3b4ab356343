"""What UpdateInstanceInformation reports about this machine (agent spec §6.2)."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from pathlib import Path
from typing import Any

from portless.agent.api import AGENT_NAME
from portless.protocol.versions import PORTLESS_AGENT_VERSION


def os_release(*paths: Path) -> dict[str, str]:
    """The fields of os-release(5): /etc/os-release, else /usr/lib/os-release."""
    fields: dict[str, str] = {}
    text = ""
    for path in paths or (Path("/etc/os-release"), Path("/usr/lib/os-release")):
        try:
            text = path.read_text()
            break
        except OSError:
            continue
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if not sep or name.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        fields[name.strip()] = value
    return fields


def _ipv4_addresses() -> list[str]:
    """IPv4 addresses of the local interfaces, from /proc/net/fib_trie (LOCAL entries)."""
    found: list[str] = []
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return found
    last = ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("|--"):
            last = stripped[3:].strip()
        elif stripped.startswith("/32 host LOCAL") and last and last not in found:
            found.append(last)
    return found


def _ipv6_addresses() -> list[str]:
    found: list[str] = []
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        raw = line.split()[0] if line.split() else ""
        if len(raw) == 32:
            found.append(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    return found


def primary_ip() -> str:
    """One address of the machine: non-loopback, non-link-local preferred, IPv4 preferred."""
    candidates = [ipaddress.ip_address(a) for a in _ipv4_addresses() + _ipv6_addresses()]
    for want_v4 in (True, False):
        for addr in candidates:
            if (addr.version == 4) == want_v4 and not (addr.is_loopback or addr.is_link_local
                                                      or addr.is_unspecified):
                return str(addr)
    return str(candidates[0]) if candidates else "127.0.0.1"


def computer_name() -> str:
    name = socket.gethostname()
    with contextlib.suppress(OSError):
        fqdn = socket.getfqdn(name)
        if fqdn and fqdn != "localhost":
            return fqdn
    return name


def minimal_report(instance_id: str) -> dict[str, Any]:
    return {"AgentName": AGENT_NAME, "AgentVersion": PORTLESS_AGENT_VERSION,
            "InstanceId": instance_id, "PlatformType": "Linux"}


def full_report(instance_id: str, connection_channel: str = "") -> dict[str, Any]:
    """The full UpdateInstanceInformation body; blocking (DNS): call it from a thread."""
    release = os_release()
    return {
        "AgentName": AGENT_NAME,
        "AgentStatus": "Active",
        "AgentVersion": PORTLESS_AGENT_VERSION,
        "AvailabilityZone": "",
        "AvailabilityZoneId": "",
        "ComputerName": computer_name(),
        "IPAddress": primary_ip(),
        "InstanceId": instance_id,
        "PlatformName": release.get("NAME", "Linux"),
        "PlatformType": "Linux",
        "PlatformVersion": release.get("VERSION_ID", ""),
        "SSMConnectionChannel": connection_channel,
    }
