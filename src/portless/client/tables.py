"""Plain-text tables for `portless nodes` and `portless sessions`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

MISSING = "-"


def render(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    rows = [[(c if c else MISSING) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        cells.append(row[-1])
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def fmt_time(value: Any) -> str:
    """botocore hands timestamps over as aware datetimes; show them in local time."""
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    return str(value) if value else ""


def _s(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return "" if value is None else str(value)


NODE_HEADERS = ("ID", "NAME", "PING", "PLATFORM", "IP", "AGENT")


def node_row(info: Mapping[str, Any]) -> list[str]:
    platform = " ".join(p for p in (_s(info, "PlatformName"), _s(info, "PlatformVersion")) if p)
    return [
        _s(info, "InstanceId"),
        _s(info, "Name") or _s(info, "ComputerName"),
        _s(info, "PingStatus"),
        platform or _s(info, "PlatformType"),
        _s(info, "IPAddress"),
        _s(info, "AgentVersion"),
    ]


def render_nodes(nodes: Iterable[Mapping[str, Any]]) -> str:
    return render(NODE_HEADERS, (node_row(n) for n in nodes))


def _owner(arn: str) -> str:
    """`arn:aws:iam::123456789012:user/alice` → `alice`; anything else unchanged."""
    if arn.startswith("arn:") and "/" in arn:
        return arn.rsplit("/", 1)[1]
    return arn


SESSION_HEADERS = ("SESSION", "TARGET", "STATUS", "OWNER", "DOCUMENT", "STARTED")
HISTORY_HEADERS = (*SESSION_HEADERS, "ENDED")


def session_row(sess: Mapping[str, Any], *, history: bool = False) -> list[str]:
    row = [
        _s(sess, "SessionId"),
        _s(sess, "Target"),
        _s(sess, "Status"),
        _owner(_s(sess, "Owner")),
        _s(sess, "DocumentName"),
        fmt_time(sess.get("StartDate")),
    ]
    if history:
        row.append(fmt_time(sess.get("EndDate")))
    return row


def render_sessions(sessions: Iterable[Mapping[str, Any]], *, history: bool = False) -> str:
    headers = HISTORY_HEADERS if history else SESSION_HEADERS
    return render(headers, (session_row(s, history=history) for s in sessions))
