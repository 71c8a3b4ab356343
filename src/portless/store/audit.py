"""Append-only audit events, hash-chained so that edits and deletions show.

Each event's ``hash`` is SHA-256 over the canonical JSON of its fields
including ``prev_hash`` (the previous event's hash). Appends lock the single
``audit_head`` row, so ids are gap-free and the chain is consistent even with
several writers (connections or server replicas).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import select, update

from portless.store import schema as s
from portless.store._base import AnyRow, StoreBase, dumps, loads_dict, record_values
from portless.store.records import GENESIS_HASH, AuditEvent, Decision

_VERIFY_BATCH = 1000


def event_hash(event: AuditEvent) -> str:
    """The chain hash of *event* (its own ``hash`` field excluded)."""
    body = {
        "id": event.id,
        "time": event.time,
        "actor_arn": event.actor_arn,
        "action": event.action,
        "resource": event.resource,
        "decision": event.decision,
        "reason": event.reason,
        "request_id": event.request_id,
        "source_ip": event.source_ip,
        "details": event.details,
        "prev_hash": event.prev_hash,
    }
    return hashlib.sha256(dumps(body).encode()).hexdigest()


def _event(row: AnyRow) -> AuditEvent:
    return AuditEvent(
        id=int(row.id),
        time=row.time,
        actor_arn=row.actor_arn,
        action=row.action,
        resource=row.resource,
        decision=cast(Decision, row.decision),
        reason=row.reason,
        request_id=row.request_id,
        source_ip=row.source_ip,
        details=loads_dict(row.details),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class AuditMixin(StoreBase):
    """Audit trail: append, list, verify."""

    async def append_audit_event(
        self,
        *,
        action: str,
        decision: Decision,
        actor_arn: str | None = None,
        resource: str | None = None,
        reason: str | None = None,
        request_id: str | None = None,
        source_ip: str | None = None,
        details: Mapping[str, Any] | None = None,
        time_: float | None = None,
    ) -> AuditEvent:
        """Append one event to the chain and return it (with id and hash)."""
        if decision not in ("allowed", "denied"):
            raise ValueError(f"bad decision {decision!r}")
        # Round-trip details through JSON so the hash covers exactly what is stored.
        detail_text = dumps(dict(details or {}))
        h = s.audit_head
        async with self._write() as conn:
            head = (await conn.execute(select(h).where(h.c.id == 1).with_for_update())).one()
            ev = AuditEvent(
                id=int(head.last_id) + 1,
                time=time.time() if time_ is None else time_,
                actor_arn=actor_arn,
                action=action,
                resource=resource,
                decision=decision,
                reason=reason,
                request_id=request_id,
                source_ip=source_ip,
                details=loads_dict(detail_text),
                prev_hash=head.last_hash,
            )
            ev = dataclasses.replace(ev, hash=event_hash(ev))
            await conn.execute(
                s.audit_events.insert().values(**record_values(ev, details=detail_text))
            )
            await conn.execute(
                update(h).where(h.c.id == 1).values(last_id=ev.id, last_hash=ev.hash)
            )
        return ev

    async def list_audit_events(
        self,
        *,
        after_id: int = 0,
        before_id: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[AuditEvent]:
        """Events with ``after_id < id < before_id``, oldest first (export, tailing) or
        newest first (console paging: pass the smallest id seen as *before_id*)."""
        t = s.audit_events
        q = select(t).where(t.c.id > after_id).limit(max(1, limit))
        if before_id is not None:
            q = q.where(t.c.id < before_id)
        q = q.order_by(t.c.id.desc() if newest_first else t.c.id)
        async with self._read() as conn:
            rows = (await conn.execute(q)).all()
        return [_event(r) for r in rows]

    async def verify_audit_chain(self) -> int | None:
        """Walk the chain; return the id of the first event that is missing, altered or
        out of place, or None if the whole chain (up to the head) is intact."""
        t = s.audit_events
        expected_id = 1
        prev = GENESIS_HASH
        async with self._read() as conn:
            head = (await conn.execute(select(s.audit_head).where(s.audit_head.c.id == 1))).one()
            while True:
                rows = (
                    await conn.execute(
                        select(t).where(t.c.id >= expected_id).order_by(t.c.id).limit(_VERIFY_BATCH)
                    )
                ).all()
                if not rows:
                    break
                for row in rows:
                    ev = _event(row)
                    if ev.id != expected_id or ev.prev_hash != prev or event_hash(ev) != ev.hash:
                        return expected_id
                    prev = ev.hash
                    expected_id += 1
        if int(head.last_id) != expected_id - 1 or head.last_hash != prev:
            return expected_id
        return None
