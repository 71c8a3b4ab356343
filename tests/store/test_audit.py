"""Audit events and the hash chain."""

from __future__ import annotations

import asyncio
import itertools

from sqlalchemy import delete, update

from portless.store import AuditEvent, Store, event_hash
from portless.store import schema as s

NOW = 1_800_000_000.0


async def _append(store: Store, n: int) -> list[AuditEvent]:
    return [
        await store.append_audit_event(
            action="ssm:StartSession",
            decision="allowed" if i % 2 == 0 else "denied",
            actor_arn="arn:aws:iam::123456789012:user/alice",
            resource=f"arn:aws:ssm:us-east-1:123456789012:managed-instance/mi-{i:017x}",
            reason=None if i % 2 == 0 else "implicit deny",
            request_id=f"req-{i}",
            source_ip="192.0.2.1",
            details={"n": i, "nested": {"f": 0.1 + i, "u": "ü"}},
            time_=NOW + i / 3,
        )
        for i in range(n)
    ]


async def test_append_list_verify(store: Store) -> None:
    assert await store.verify_audit_chain() is None  # empty chain is fine
    events = await _append(store, 5)
    assert [e.id for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    assert all(event_hash(e) == e.hash for e in events)
    listed = await store.list_audit_events()
    assert listed == events
    assert [e.id for e in await store.list_audit_events(after_id=3)] == [4, 5]
    assert [e.id for e in await store.list_audit_events(limit=2, newest_first=True)] == [5, 4]
    assert [e.id for e in await store.list_audit_events(before_id=4, newest_first=True)] == [
        3,
        2,
        1,
    ]
    assert [e.id for e in await store.list_audit_events(after_id=1, before_id=4)] == [2, 3]
    assert listed[1].decision == "denied" and listed[1].reason == "implicit deny"
    assert listed[2].details == {"n": 2, "nested": {"f": 2.1, "u": "ü"}}
    assert await store.verify_audit_chain() is None


async def test_concurrent_appends_form_one_chain(store: Store) -> None:
    await asyncio.gather(
        *(store.append_audit_event(action=f"a{i}", decision="allowed") for i in range(30))
    )
    events = await store.list_audit_events(limit=100)
    assert [e.id for e in events] == list(range(1, 31))
    assert await store.verify_audit_chain() is None


async def test_modified_row_is_detected(store: Store) -> None:
    await _append(store, 6)
    async with store.engine.begin() as conn:
        # id 4 was denied; flip it to allowed, as someone hiding a denial would.
        await conn.execute(
            update(s.audit_events)
            .where(s.audit_events.c.id == 4)
            .values(decision="allowed", reason=None)
        )
    assert await store.verify_audit_chain() == 4


async def test_rehashed_row_breaks_the_next_link(store: Store) -> None:
    events = await _append(store, 4)
    forged = AuditEvent(
        **{
            **{f: getattr(events[1], f) for f in AuditEvent.__dataclass_fields__},
            "action": "ssm:Nothing",
        }
    )
    async with store.engine.begin() as conn:
        await conn.execute(
            update(s.audit_events)
            .where(s.audit_events.c.id == 2)
            .values(action="ssm:Nothing", hash=event_hash(forged))
        )
    assert await store.verify_audit_chain() == 3


async def test_deleted_rows_are_detected(store: Store) -> None:
    await _append(store, 5)
    async with store.engine.begin() as conn:
        await conn.execute(delete(s.audit_events).where(s.audit_events.c.id == 5))
    assert await store.verify_audit_chain() == 5  # truncation: the head remembers
    async with store.engine.begin() as conn:
        await conn.execute(delete(s.audit_events).where(s.audit_events.c.id == 2))
    assert await store.verify_audit_chain() == 2
