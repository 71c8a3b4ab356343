"""Issued credentials, users and access keys."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from portless.store import (
    AlreadyExistsError,
    InvalidNextTokenError,
    NotFoundError,
    SecretBox,
    SecretBoxError,
    Store,
    generate_access_key_id,
)
from portless.store import schema as s

from .conftest import Backend

NOW = 1_800_000_000.0


async def _raw_values(store: Store, table: object) -> list[str]:
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(table))).all()  # type: ignore[call-overload]
    return [str(v) for row in rows for v in row]


async def test_issue_and_get_credential(store: Store) -> None:
    cred = await store.issue_credential(
        principal_type="instance", principal_id="mi-0123456789abcdef0", ttl=3600, now=NOW
    )
    assert re.fullmatch(r"ASIA[A-Z2-7]{16}", cred.access_key_id)
    assert cred.session_token and len(cred.secret_access_key) == 40
    assert cred.expiration == NOW + 3600
    got = await store.get_credential(cred.access_key_id, now=NOW + 1)
    assert got is not None
    assert got.secret_access_key == cred.secret_access_key
    assert got.session_token is None  # never stored
    assert got.session_token_matches(cred.session_token)
    assert not got.session_token_matches("other")
    assert (got.principal_type, got.principal_id) == ("instance", "mi-0123456789abcdef0")
    # Expired: hidden unless asked for.
    assert await store.get_credential(cred.access_key_id, now=NOW + 3600) is None
    exp = await store.get_credential(cred.access_key_id, include_expired=True, now=NOW + 4000)
    assert exp is not None and exp.expired(NOW + 4000)
    assert await store.get_credential("ASIANOPE") is None


async def test_credential_secrets_not_in_plaintext(store: Store) -> None:
    cred = await store.put_credential(
        access_key_id="ASIATESTTESTTESTTEST",
        secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        session_token="session-token-value",
        principal_type="user",
        principal_id="alice",
        expiration=NOW + 10,
        now=NOW,
    )
    raw = await _raw_values(store, s.issued_credentials)
    assert cred.secret_access_key not in " ".join(raw)
    assert "session-token-value" not in " ".join(raw)
    with pytest.raises(AlreadyExistsError):
        await store.put_credential(
            access_key_id="ASIATESTTESTTESTTEST",
            secret_access_key="x",
            session_token="y",
            principal_type="user",
            principal_id="alice",
            expiration=NOW + 10,
        )


async def test_credential_needs_the_right_key(backend: Backend) -> None:
    st = await backend.open()
    cred = await st.issue_credential(principal_type="user", principal_id="alice")
    await st.close()
    other = await backend.open(SecretBox.generate())
    try:
        with pytest.raises(SecretBoxError):
            await other.get_credential(cred.access_key_id)
    finally:
        await other.close()


async def test_delete_expired_and_per_principal(store: Store) -> None:
    a = await store.issue_credential(
        principal_type="instance", principal_id="mi-a", ttl=10, now=NOW
    )
    b = await store.issue_credential(
        principal_type="instance", principal_id="mi-a", ttl=100, now=NOW
    )
    c = await store.issue_credential(principal_type="user", principal_id="mi-a", ttl=100, now=NOW)
    d = await store.issue_credential(
        principal_type="instance", principal_id="mi-b", ttl=100, now=NOW
    )
    assert await store.delete_expired_credentials(now=NOW + 50) == 1
    assert await store.get_credential(a.access_key_id, include_expired=True) is None
    assert await store.delete_credentials_for("instance", "mi-a") == 1
    assert await store.get_credential(b.access_key_id, now=NOW) is None
    assert await store.get_credential(c.access_key_id, now=NOW) is not None
    assert await store.get_credential(d.access_key_id, now=NOW) is not None


async def test_users(store: Store) -> None:
    alice = await store.create_user(
        "alice",
        arn="arn:aws:iam::123456789012:user/alice",
        tags={"SSMSessionRunAs": "alice"},
        now=NOW,
    )
    assert re.fullmatch(r"AIDA[A-Z2-7]{17}", alice.user_id)
    assert await store.get_user("alice") == alice
    assert await store.get_user_by_id(alice.user_id) == alice
    assert await store.get_user("nobody") is None
    with pytest.raises(AlreadyExistsError):
        await store.create_user("alice", arn="x")
    assert await store.set_user_tags("alice", {"team": "ops"})
    got = await store.get_user("alice")
    assert got is not None and got.tags == {"team": "ops"}
    assert not await store.set_user_tags("nobody", {})
    for i in range(5):
        await store.create_user(f"u{i}", arn=f"arn:aws:iam::1:user/u{i}")
    names: list[str] = []
    token = None
    while True:
        page = await store.list_users(max_results=2, next_token=token)
        names += [u.name for u in page.items]
        token = page.next_token
        if token is None:
            break
    assert names == ["alice", "u0", "u1", "u2", "u3", "u4"]
    with pytest.raises(InvalidNextTokenError):
        await store.list_users(next_token="bm9wZQ")


async def test_access_keys(store: Store) -> None:
    user = await store.create_user("alice", arn="arn:aws:iam::123456789012:user/alice")
    created = await store.create_access_key("alice", now=NOW)
    key = created.key
    assert re.fullmatch(r"AKIA[A-Z2-7]{16}", key.access_key_id)
    assert len(created.secret_access_key) == 40
    assert (key.user_name, key.user_id, key.user_arn, key.status) == (
        "alice",
        user.user_id,
        user.arn,
        "Active",
    )
    raw = " ".join(await _raw_values(store, s.access_keys))
    assert created.secret_access_key not in raw
    got = await store.get_access_key(key.access_key_id)
    assert got is not None and got.key == key and got.secret_access_key == created.secret_access_key
    second = await store.create_access_key(
        "alice",
        access_key_id="AKIAIOSFODNN7EXAMPLE",
        secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        now=NOW + 1,
    )
    assert [k.access_key_id for k in await store.list_access_keys("alice")] == [
        key.access_key_id,
        "AKIAIOSFODNN7EXAMPLE",
    ]
    assert await store.set_access_key_status("AKIAIOSFODNN7EXAMPLE", "Inactive")
    got = await store.get_access_key("AKIAIOSFODNN7EXAMPLE")
    assert got is not None and got.key.status == "Inactive"
    assert got.secret_access_key == second.secret_access_key
    with pytest.raises(ValueError):
        await store.set_access_key_status("AKIAIOSFODNN7EXAMPLE", "Bogus")  # type: ignore[arg-type]
    assert not await store.set_access_key_status("AKIANOPE", "Active")
    assert await store.delete_access_key(key.access_key_id)
    assert not await store.delete_access_key(key.access_key_id)
    assert await store.get_access_key(key.access_key_id) is None
    with pytest.raises(NotFoundError):
        await store.create_access_key("nobody")
    with pytest.raises(AlreadyExistsError):
        await store.create_access_key("alice", access_key_id="AKIAIOSFODNN7EXAMPLE")
    assert await store.delete_user("alice")
    assert await store.get_access_key("AKIAIOSFODNN7EXAMPLE") is None
    assert await store.list_access_keys("alice") == []
    assert not await store.delete_user("alice")


def test_generated_ids() -> None:
    assert generate_access_key_id().startswith("AKIA")
    assert len(generate_access_key_id("ASIA")) == 20
