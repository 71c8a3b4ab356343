"""Groups, inline/managed policies, attachments, MFA devices and MFA-bearing credentials,
on SQLite and PostgreSQL (fixtures in conftest.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from portless.store import (
    AlreadyExistsError,
    InvalidOperationError,
    NotFoundError,
    Store,
)
from portless.store import schema as s
from portless.store.iam import AWS_POLICY_ARN_PREFIX
from portless.store.migrations import MIGRATIONS

ACCOUNT = "123456789012"
NOW = 1_800_000_000.0
DOC = '{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ssm:*","Resource":"*"}}'
CORE = AWS_POLICY_ARN_PREFIX + "AmazonSSMManagedInstanceCore"


def user_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


def group_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:group/{name}"


def policy_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:policy/{name}"


async def test_schema_has_iam_step(store: Store) -> None:
    assert 2 in {m.version for m in MIGRATIONS}
    assert store.schema_version >= 2


async def test_groups_and_membership(store: Store) -> None:
    await store.create_user("alice", arn=user_arn("alice"))
    await store.create_user("bob", arn=user_arn("bob"))
    devs = await store.create_group("devs", arn=group_arn("devs"), now=NOW)
    assert devs.group_id.startswith("AGPA") and len(devs.group_id) == 21
    with pytest.raises(AlreadyExistsError):
        await store.create_group("devs", arn=group_arn("devs"))
    await store.create_group("ops", arn=group_arn("ops"), path="/eng/")
    assert await store.get_group("devs") == devs
    assert await store.get_group("nope") is None
    assert [g.name for g in await store.list_groups()] == ["devs", "ops"]

    assert await store.add_user_to_group("devs", "alice")
    assert not await store.add_user_to_group("devs", "alice")  # idempotent
    await store.add_user_to_group("ops", "alice")
    await store.add_user_to_group("devs", "bob")
    with pytest.raises(NotFoundError):
        await store.add_user_to_group("nope", "alice")
    with pytest.raises(NotFoundError):
        await store.add_user_to_group("devs", "nobody")
    assert [g.name for g in await store.list_groups_for_user("alice")] == ["devs", "ops"]
    assert [u.name for u in await store.list_group_members("devs")] == ["alice", "bob"]

    assert await store.remove_user_from_group("ops", "alice")
    assert not await store.remove_user_from_group("ops", "alice")
    assert [g.name for g in await store.list_groups_for_user("alice")] == ["devs"]

    # Deleting a user drops its memberships; deleting a group drops the rest.
    await store.delete_user("bob")
    assert [u.name for u in await store.list_group_members("devs")] == ["alice"]
    assert await store.delete_group("devs")
    assert not await store.delete_group("devs")
    assert await store.list_groups_for_user("alice") == []


async def test_inline_policies(store: Store) -> None:
    await store.create_user("alice", arn=user_arn("alice"))
    await store.create_group("devs", arn=group_arn("devs"))
    with pytest.raises(NotFoundError):
        await store.put_inline_policy("user", "nobody", "p", DOC)
    await store.put_inline_policy("user", "alice", "b", DOC, now=NOW)
    await store.put_inline_policy("user", "alice", "a", DOC, now=NOW)
    replaced = '{"Statement":[]}'
    await store.put_inline_policy("user", "alice", "b", replaced, now=NOW + 1)
    got = await store.get_inline_policy("user", "alice", "b")
    assert got is not None and got.document == replaced and got.updated_date == NOW + 1
    assert await store.get_inline_policy("user", "alice", "zzz") is None
    assert [p.policy_name for p in await store.list_inline_policies("user", "alice")] == ["a", "b"]
    await store.put_inline_policy("group", "devs", "g", DOC)
    await store.put_inline_policy("role", "SSMRole", "r", DOC)
    assert [p.policy_name for p in await store.list_inline_policies("group", "devs")] == ["g"]
    assert [p.policy_name for p in await store.list_inline_policies("role", "SSMRole")] == ["r"]
    assert await store.delete_inline_policy("user", "alice", "a")
    assert not await store.delete_inline_policy("user", "alice", "a")

    # A user deleted and re-created under the same name inherits nothing.
    await store.delete_user("alice")
    await store.create_user("alice", arn=user_arn("alice"))
    assert await store.list_inline_policies("user", "alice") == []


async def test_managed_policies_and_versions(store: Store) -> None:
    arn = policy_arn("SessionAccess")
    made = await store.create_policy(
        "SessionAccess", arn=arn, document=DOC, description="d", tags={"k": "v"}, now=NOW
    )
    assert made.policy_id.startswith("ANPA") and made.default_version_id == "v1"
    with pytest.raises(AlreadyExistsError):
        await store.create_policy("SessionAccess", arn=arn, document=DOC)
    got = await store.get_policy(arn)
    assert got is not None
    assert (got.name, got.document, got.attachment_count, got.tags) == (
        "SessionAccess", DOC, 0, {"k": "v"},
    )  # fmt: skip
    assert await store.get_policy(CORE) is None  # AWS managed policies live in code

    v2 = await store.create_policy_version(arn, '{"v":2}', now=NOW + 1)
    assert (v2.version_id, v2.is_default) == ("v2", False)
    v3 = await store.create_policy_version(arn, '{"v":3}', set_as_default=True, now=NOW + 2)
    assert v3.is_default
    got = await store.get_policy(arn)
    assert got is not None and got.default_version_id == "v3" and got.document == '{"v":3}'
    assert [v.version_id for v in await store.list_policy_versions(arn)] == ["v3", "v2", "v1"]
    v1 = await store.get_policy_version(arn, "v1")
    assert v1 is not None and v1.document == DOC and not v1.is_default
    assert await store.get_policy_version(arn, "v9") is None
    with pytest.raises(InvalidOperationError):
        await store.create_policy_version(arn, "{}", max_versions=3)
    with pytest.raises(InvalidOperationError):
        await store.delete_policy_version(arn, "v3")
    assert await store.delete_policy_version(arn, "v2")
    await store.set_default_policy_version(arn, "v1")
    with pytest.raises(NotFoundError):
        await store.set_default_policy_version(arn, "v2")
    assert [p.name for p in await store.list_policies()] == ["SessionAccess"]
    assert await store.delete_policy(arn)
    assert not await store.delete_policy(arn)
    assert await store.get_policy(arn) is None


async def test_attachments(store: Store) -> None:
    await store.create_user("alice", arn=user_arn("alice"))
    await store.create_group("devs", arn=group_arn("devs"))
    arn = policy_arn("P")
    await store.create_policy("P", arn=arn, document=DOC)
    with pytest.raises(NotFoundError):
        await store.attach_policy("user", "alice", policy_arn("Missing"))
    assert await store.attach_policy("user", "alice", arn, now=NOW)
    assert not await store.attach_policy("user", "alice", arn)
    assert await store.attach_policy("user", "alice", CORE, now=NOW + 1)
    await store.attach_policy("group", "devs", arn)
    await store.attach_policy("role", "SSMRole", arn)
    assert await store.list_attached_policies("user", "alice") == [arn, CORE]
    assert await store.count_policy_attachments(arn) == 3
    got = await store.get_policy(arn)
    assert got is not None and got.attachment_count == 3
    with pytest.raises(InvalidOperationError):
        await store.attach_policy(
            "user", "alice", AWS_POLICY_ARN_PREFIX + "AdministratorAccess", max_attached=2
        )
    assert await store.detach_policy("user", "alice", arn)
    assert not await store.detach_policy("user", "alice", arn)
    with pytest.raises(NotFoundError):
        await store.detach_policy("group", "nope", arn)
    assert await store.count_policy_attachments(arn) == 2


async def test_load_user_authorization(store: Store) -> None:
    await store.create_user("alice", arn=user_arn("alice"), tags={"team": "a"})
    await store.create_group("devs", arn=group_arn("devs"))
    await store.create_group("ops", arn=group_arn("ops"))
    await store.add_user_to_group("devs", "alice")
    await store.add_user_to_group("ops", "alice")
    await store.put_inline_policy("user", "alice", "own", DOC)
    await store.create_policy("Shared", arn=policy_arn("Shared"), document='{"shared":1}')
    await store.attach_policy("user", "alice", CORE, now=NOW)
    await store.attach_policy("group", "devs", policy_arn("Shared"), now=NOW)
    await store.put_inline_policy("group", "ops", "opsy", '{"ops":1}')

    loaded = await store.load_user_authorization("alice")
    assert loaded is not None
    assert loaded.user.tags == {"team": "a"}
    assert [g.name for g in loaded.groups] == ["devs", "ops"]
    summary = [(p.kind, p.name, p.document, p.arn, p.via) for p in loaded.sources]
    assert summary == [
        ("inline", "own", DOC, None, "user/alice"),
        ("managed", "AmazonSSMManagedInstanceCore", None, CORE, "user/alice"),
        ("managed", "Shared", '{"shared":1}', policy_arn("Shared"), "group/devs"),
        ("inline", "opsy", '{"ops":1}', None, "group/ops"),
    ]
    # The policy's current default version is what applies.
    await store.create_policy_version(policy_arn("Shared"), '{"shared":2}', set_as_default=True)
    loaded = await store.load_user_authorization("alice")
    assert loaded is not None and loaded.sources[2].document == '{"shared":2}'
    assert await store.load_user_authorization("nobody") is None

    role = await store.load_role_authorization("SSMRole")
    assert role.sources == []
    await store.attach_policy("role", "SSMRole", CORE)
    role = await store.load_role_authorization("SSMRole")
    assert [(p.name, p.via) for p in role.sources] == [
        ("AmazonSSMManagedInstanceCore", "role/SSMRole")
    ]


async def test_update_user_tags(store: Store) -> None:
    await store.create_user("alice", arn=user_arn("alice"), tags={"a": "1"})
    assert await store.update_user_tags("alice", set_tags={"b": "2"}) == {"a": "1", "b": "2"}
    assert await store.update_user_tags("alice", set_tags={"a": "x"}, remove_keys=["b"]) == {
        "a": "x"
    }
    with pytest.raises(InvalidOperationError):
        await store.update_user_tags("alice", set_tags={"c": "3", "d": "4"}, max_tags=2)
    user = await store.get_user("alice")
    assert user is not None and user.tags == {"a": "x"}
    with pytest.raises(NotFoundError):
        await store.update_user_tags("nobody", set_tags={"a": "1"})


async def test_mfa_devices(store: Store) -> None:
    await store.create_user("alice", arn=user_arn("alice"))
    serial = f"arn:aws:iam::{ACCOUNT}:mfa/alice-phone"
    made = await store.create_mfa_device(serial, name="alice-phone", secret="JBSWY3DPEHPK3PXP")
    assert made.user_name is None
    with pytest.raises(AlreadyExistsError):
        await store.create_mfa_device(serial, name="alice-phone", secret="X")
    # Encrypted at rest.
    async with store.engine.connect() as conn:
        raw = (await conn.execute(select(s.iam_mfa_devices.c.secret_enc))).scalar()
    assert raw is not None and "JBSWY3DPEHPK3PXP" not in raw
    assert await store.get_mfa_secret(serial) == "JBSWY3DPEHPK3PXP"
    assert await store.get_mfa_secret("arn:aws:iam::1:mfa/none") is None

    await store.enable_mfa_device(serial, "alice", last_used_step=100, now=NOW)
    with pytest.raises(AlreadyExistsError):
        await store.enable_mfa_device(serial, "alice", last_used_step=101)
    with pytest.raises(NotFoundError):
        await store.enable_mfa_device("arn:aws:iam::1:mfa/none", "alice", last_used_step=1)
    got = await store.get_mfa_device(serial)
    assert got is not None
    assert (got.user_name, got.enable_date, got.last_used_step) == ("alice", NOW, 100)
    assert [d.serial_number for d in await store.list_mfa_devices(user_name="alice")] == [serial]
    assert await store.list_mfa_devices(assigned=False) == []

    # Each time step is accepted once, and never one at or before the last.
    assert not await store.consume_mfa_step(serial, 100)
    assert not await store.consume_mfa_step(serial, 99)
    assert await store.consume_mfa_step(serial, 101)
    assert not await store.consume_mfa_step(serial, 101)

    await store.create_user("bob", arn=user_arn("bob"))
    assert not await store.deactivate_mfa_device(serial, "bob")  # not bob's device
    assert await store.deactivate_mfa_device(serial, "alice")
    assert not await store.deactivate_mfa_device(serial, "alice")
    assert [d.serial_number for d in await store.list_mfa_devices(assigned=False)] == [serial]
    # Deleting the user unassigns (but keeps) a virtual device.
    await store.enable_mfa_device(serial, "alice", last_used_step=200)
    await store.delete_user("alice")
    got = await store.get_mfa_device(serial)
    assert got is not None and got.user_name is None
    assert await store.delete_mfa_device(serial)
    assert await store.get_mfa_device(serial) is None


async def test_session_credentials_carry_mfa(store: Store) -> None:
    await store.create_user("alice", arn=user_arn("alice"))
    plain = await store.issue_session_credential("alice", ttl=900, now=NOW)
    with_mfa = await store.issue_session_credential(
        "alice", ttl=900, mfa_serial="arn:aws:iam::1:mfa/x", mfa_authenticated_at=NOW - 5, now=NOW
    )
    for cred in (plain, with_mfa):
        assert cred.access_key_id.startswith("ASIA") and cred.session_token
        stored = await store.get_credential(cred.access_key_id, now=NOW + 1)
        assert stored is not None
        assert stored.secret_access_key == cred.secret_access_key
        assert stored.session_token_matches(cred.session_token or "")
        assert (stored.principal_type, stored.principal_id) == ("user", "alice")
        assert stored.expiration == NOW + 900
    assert await store.get_credential_mfa(plain.access_key_id) is None
    mfa = await store.get_credential_mfa(with_mfa.access_key_id)
    assert mfa is not None
    assert (mfa.mfa_serial, mfa.authenticated_at) == ("arn:aws:iam::1:mfa/x", NOW - 5)
    # Expired credentials go, and their MFA facts with them.
    assert await store.delete_expired_credentials(now=NOW + 901) == 2
    assert await store.get_credential_mfa(with_mfa.access_key_id) is None
