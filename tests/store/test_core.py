"""Engine, migrations, persistence and SecretBox."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, text

from portless.store import RegistrationOutcome, SecretBox, SecretBoxError, Store, StoreError
from portless.store import schema as s
from portless.store.migrations import MIGRATIONS

from .conftest import Backend


async def test_open_migrates_and_is_idempotent(backend: Backend) -> None:
    first = await backend.open()
    assert first.schema_version == max(m.version for m in MIGRATIONS)
    await first.append_audit_event(action="a", decision="allowed")
    await first.close()
    # Reopen (twice, concurrently too): no step re-runs, nothing is reset.
    stores = await asyncio.gather(*(backend.open() for _ in range(3)))
    for st in stores:
        async with st.engine.connect() as conn:
            rows = (await conn.execute(select(s.schema_version.c.version))).scalars().all()
            heads = (await conn.execute(select(func.count()).select_from(s.audit_head))).scalar()
        assert sorted(rows) == [m.version for m in MIGRATIONS]
        assert heads == 1
    assert len(await stores[0].list_audit_events()) == 1
    assert await stores[0].verify_audit_chain() is None
    for st in stores:
        await st.close()


async def test_newer_schema_is_refused(backend: Backend) -> None:
    st = await backend.open()
    async with st.engine.begin() as conn:
        await conn.execute(
            insert(s.schema_version).values(version=999, description="future", applied_at=0.0)
        )
    await st.close()
    with pytest.raises(StoreError, match="newer"):
        await backend.open()


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    st = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'pragmas.db'}",
                          secret_box=SecretBox.generate())
    async with st.engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
        assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar_one() >= 1000
    assert st.dialect == "sqlite"
    await st.close()


async def test_persistence_across_close_and_reopen(backend: Backend) -> None:
    assert backend.key_path is not None
    st = await backend.open()
    act, _code = await st.create_activation(iam_role="role", expiration_date=time.time() + 60)
    inst = await st.create_instance(iam_role="role", tags={"env": "prod"})
    user = await st.create_user("alice", arn="arn:aws:iam::123456789012:user/alice")
    key = await st.create_access_key("alice")
    cred = await st.issue_credential(principal_type="instance", principal_id=inst.instance_id)
    await st.create_session(
        session_id="alice-0123456789abcdef0",
        owner_arn=user.arn,
        owner_name="alice",
        target=inst.instance_id,
        document_name="SSM-SessionManagerRunShell",
    )
    await st.create_document("MyPrefs", "{}", owner="123456789012")
    await st.append_audit_event(action="ssm:StartSession", decision="allowed")
    await st.close()

    # A new process: the key file is read back, not regenerated.
    again = await backend.open(SecretBox.from_file(backend.key_path))
    try:
        assert await again.get_activation(act.activation_id) == act
        assert await again.get_instance(inst.instance_id) == inst
        assert await again.list_instance_tags(inst.instance_id) == {"env": "prod"}
        got = await again.get_access_key(key.key.access_key_id)
        assert got is not None and got.secret_access_key == key.secret_access_key
        c2 = await again.get_credential(cred.access_key_id)
        assert c2 is not None and c2.secret_access_key == cred.secret_access_key
        assert (await again.get_session("alice-0123456789abcdef0")) is not None
        assert (await again.get_document("MyPrefs")) is not None
        assert await again.verify_audit_chain() is None
    finally:
        await again.close()


async def test_secret_operations_need_a_box(backend: Backend) -> None:
    st = await Store.open(backend.url, engine_options=backend.engine_options)
    try:
        await st.create_user("bob", arn="arn:aws:iam::1:user/bob")
        with pytest.raises(StoreError, match="SecretBox"):
            await st.create_access_key("bob")
    finally:
        await st.close()


def test_secretbox_file_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    box = SecretBox.from_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(path.read_bytes()) == 32
    ct = box.encrypt("s3cret", context="a")
    assert "s3cret" not in ct
    assert SecretBox.from_file(path).decrypt(ct, context="a") == "s3cret"


def test_secretbox_rejects_wrong_context_key_and_tampering(tmp_path: Path) -> None:
    box = SecretBox.generate()
    ct = box.encrypt("value", context="ctx")
    assert box.encrypt("value", context="ctx") != ct  # fresh nonce each time
    with pytest.raises(SecretBoxError):
        box.decrypt(ct, context="other")
    with pytest.raises(SecretBoxError):
        SecretBox.generate().decrypt(ct, context="ctx")
    tampered = ct[:-2] + ("A" if ct[-2] != "A" else "B") + ct[-1]
    with pytest.raises(SecretBoxError):
        box.decrypt(tampered, context="ctx")
    with pytest.raises(SecretBoxError):
        box.decrypt("garbage", context="ctx")
    bad = tmp_path / "short"
    bad.write_bytes(b"x" * 5)
    with pytest.raises(ValueError):
        SecretBox.from_file(bad)
    with pytest.raises(ValueError):
        SecretBox(b"short")


async def test_concurrent_writers_do_not_fail(store: Store) -> None:
    """Many simultaneous write transactions (SQLite: one writer at a time) all succeed."""
    inst = await store.create_instance()
    await asyncio.gather(
        *(
            store.update_instance_info(inst.instance_id, agent_version=f"3.3.{i}.0")
            for i in range(25)
        ),
        *(store.issue_channel_token("control", inst.instance_id) for _ in range(25)),
    )
    async with store.engine.connect() as conn:
        n = (await conn.execute(text("SELECT COUNT(*) FROM channel_tokens"))).scalar()
    assert n == 25


async def test_two_stores_on_one_database_stay_atomic(backend: Backend) -> None:
    """Two engines (as two processes or replicas would have): the in-process write
    lock does not help here, so atomicity must come from the database."""
    a, b = await backend.open(), await backend.open()
    try:
        act, code = await a.create_activation(
            iam_role="r", expiration_date=time.time() + 60, registration_limit=4
        )
        results = await asyncio.gather(
            *(
                st.increment_activation_registrations(act.activation_id, code=code)
                for st in (a, b) * 8
            )
        )
        assert results.count(RegistrationOutcome.OK) == 4
        tok = await a.issue_channel_token("data_client", "sess")
        won = await asyncio.gather(*(st.consume_channel_token(tok) for st in (a, b) * 6))
        assert sum(w is not None for w in won) == 1
        await asyncio.gather(
            *(st.append_audit_event(action="x", decision="allowed") for st in (a, b) * 8)
        )
        assert await a.verify_audit_chain() is None
        assert len(await b.list_audit_events()) == 16
    finally:
        await a.close()
        await b.close()
