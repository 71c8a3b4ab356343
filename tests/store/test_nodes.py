"""Activations, registration and managed instances."""

from __future__ import annotations

import asyncio
import re

import pytest
from sqlalchemy import select

from portless.store import (
    InvalidNextTokenError,
    ManagedInstance,
    NotFoundError,
    RegistrationOutcome,
    Store,
    generate_instance_id,
    ping_status,
)
from portless.store import schema as s

NOW = 1_800_000_000.0


async def test_activation_crud_and_code_not_stored(store: Store) -> None:
    act, code = await store.create_activation(
        iam_role="SSMServiceRole",
        expiration_date=NOW + 3600,
        registration_limit=3,
        description="lab",
        default_instance_name="lab-vm",
        tags={"team": "ops"},
        now=NOW,
    )
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", act.activation_id
    )
    assert 20 <= len(code) <= 250
    assert act.registrations_count == 0 and act.created_date == NOW
    assert await store.get_activation(act.activation_id) == act
    assert await store.get_activation("00000000-0000-0000-0000-000000000000") is None
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(s.activations))).one()
    assert code not in [str(v) for v in row]
    assert row.code_hash != code and len(row.code_hash) == 64
    assert await store.delete_activation(act.activation_id)
    assert not await store.delete_activation(act.activation_id)
    assert await store.get_activation(act.activation_id) is None


async def test_activation_list_pagination_and_filters(store: Store) -> None:
    ids = []
    for i in range(7):
        a, _ = await store.create_activation(
            iam_role="r1" if i % 2 else "r2", expiration_date=NOW + 10, now=NOW + (i // 2)
        )
        ids.append(a.activation_id)
    seen: list[str] = []
    token = None
    while True:
        page = await store.list_activations(max_results=3, next_token=token)
        seen += [a.activation_id for a in page.items]
        token = page.next_token
        if token is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    created = [(await store.get_activation(x)) for x in seen]
    assert [c.created_date for c in created if c] == sorted(c.created_date for c in created if c)
    r1 = await store.list_activations(iam_roles=["r1"])
    assert len(r1.items) == 3 and r1.next_token is None
    one = await store.list_activations(activation_ids=[ids[4]])
    assert [a.activation_id for a in one.items] == [ids[4]]
    with pytest.raises(InvalidNextTokenError):
        await store.list_activations(next_token="not-a-token")


async def test_registration_outcomes(store: Store) -> None:
    act, code = await store.create_activation(
        iam_role="r", expiration_date=NOW + 100, registration_limit=1, now=NOW
    )
    inc = store.increment_activation_registrations
    assert await inc("missing", now=NOW) is RegistrationOutcome.NOT_FOUND
    assert await inc("missing", code=code, now=NOW) is RegistrationOutcome.NOT_FOUND
    assert await inc(act.activation_id, code="wrong", now=NOW) is RegistrationOutcome.BAD_CODE
    assert await inc(act.activation_id, now=NOW + 100) is RegistrationOutcome.EXPIRED
    assert await inc(act.activation_id, code=code, now=NOW) is RegistrationOutcome.OK
    assert await inc(act.activation_id, code=code, now=NOW) is RegistrationOutcome.LIMIT_REACHED
    got = await store.get_activation(act.activation_id)
    assert got is not None and got.registrations_count == 1


async def test_registration_limit_is_atomic_under_concurrency(store: Store) -> None:
    act, code = await store.create_activation(
        iam_role="r", expiration_date=NOW + 100, registration_limit=5, now=NOW
    )
    results = await asyncio.gather(
        *(
            store.increment_activation_registrations(act.activation_id, code=code, now=NOW)
            for _ in range(20)
        )
    )
    assert results.count(RegistrationOutcome.OK) == 5
    assert results.count(RegistrationOutcome.LIMIT_REACHED) == 15
    got = await store.get_activation(act.activation_id)
    assert got is not None and got.registrations_count == 5


async def test_register_instance(store: Store) -> None:
    act, code = await store.create_activation(
        iam_role="SSMRole",
        expiration_date=NOW + 100,
        registration_limit=3,
        default_instance_name="web",
        tags={"env": "prod", "team": "a"},
        now=NOW,
    )
    results = await asyncio.gather(
        *(
            store.register_instance(
                activation_id=act.activation_id,
                activation_code=code,
                public_key=f"MIIB{i}",
                public_key_type="Rsa",
                fingerprint=f"fp-{i}",
                region="us-east-1",
                now=NOW,
            )
            for i in range(8)
        )
    )
    ok = [r.instance for r in results if r.outcome is RegistrationOutcome.OK]
    assert len(ok) == 3
    assert all(r.instance is None for r in results if r.outcome is not RegistrationOutcome.OK)
    assert {r.outcome for r in results} == {
        RegistrationOutcome.OK,
        RegistrationOutcome.LIMIT_REACHED,
    }
    inst = ok[0]
    assert inst is not None
    assert re.fullmatch(r"mi-[0-9a-f]{17}", inst.instance_id)
    assert inst.iam_role == "SSMRole" and inst.name == "web" and inst.region == "us-east-1"
    assert inst.activation_id == act.activation_id and inst.registration_date == NOW
    assert inst.public_key_type == "Rsa" and inst.fingerprint.startswith("fp-")  # type: ignore[union-attr]
    assert await store.get_instance(inst.instance_id) == inst
    assert await store.list_instance_tags(inst.instance_id) == {"env": "prod", "team": "a"}
    assert (await store.count_instances()) == 3
    bad = await store.register_instance(
        activation_id=act.activation_id,
        activation_code="nope",
        public_key="k",
        public_key_type="Rsa",
        fingerprint="f",
        region="r",
    )
    assert bad.outcome is RegistrationOutcome.BAD_CODE and bad.instance is None


async def test_instance_updates(store: Store) -> None:
    inst = await store.create_instance(
        iam_role="r", public_key="k1", public_key_type="Rsa", now=NOW
    )
    iid = inst.instance_id
    full = dict(
        agent_name="amazon-ssm-agent",
        agent_version="3.3.0.0",
        platform_type="Linux",
        platform_name="Debian GNU/Linux",
        platform_version="12",
        ip_address="192.0.2.2",
        computer_name="vm",
        ssm_connection_channel="ssmmessages",
    )
    assert await store.update_instance_info(iid, **full, now=NOW + 1)
    # The minimal ping sends only three fields; the others must survive.
    assert await store.update_instance_info(
        iid,
        agent_name="amazon-ssm-agent",
        agent_version="3.3.1.0",
        platform_type="Linux",
        now=NOW + 2,
    )
    got = await store.get_instance(iid)
    assert got is not None
    assert got.agent_version == "3.3.1.0" and got.platform_name == "Debian GNU/Linux"
    assert got.ip_address == "192.0.2.2" and got.ssm_connection_channel == "ssmmessages"
    assert got.last_ping_date == NOW + 2
    assert await store.touch_instance_ping(iid, now=NOW + 3)
    assert await store.set_instance_public_key(iid, "k2", "Rsa", now=NOW + 4)
    assert await store.set_instance_fingerprint(iid, "fp2")
    assert await store.set_instance_name(iid, "renamed")
    got = await store.get_instance(iid)
    assert got is not None
    assert (got.last_ping_date, got.public_key, got.public_key_date) == (NOW + 3, "k2", NOW + 4)
    assert (got.fingerprint, got.name) == ("fp2", "renamed")
    assert not await store.update_instance_info("mi-00000000000000000", agent_name="x")
    assert not await store.touch_instance_ping("mi-00000000000000000")
    assert await store.get_instance("mi-00000000000000000") is None


async def test_instance_tags(store: Store) -> None:
    inst = await store.create_instance(tags={"a": "1"})
    iid = inst.instance_id
    await store.add_instance_tags(iid, {"a": "2", "b": "3"})
    await store.add_instance_tags(iid, {})
    assert await store.list_instance_tags(iid) == {"a": "2", "b": "3"}
    assert await store.remove_instance_tags(iid, ["a", "zz"]) == 1
    assert await store.list_instance_tags(iid) == {"b": "3"}
    with pytest.raises(NotFoundError):
        await store.add_instance_tags("mi-00000000000000000", {"a": "b"})
    assert await store.list_instance_tags("mi-00000000000000000") == {}


async def test_delete_instance_removes_tags_credentials_and_tokens(store: Store) -> None:
    inst = await store.create_instance(tags={"k": "v"})
    iid = inst.instance_id
    other = await store.create_instance()
    cred = await store.issue_credential(principal_type="instance", principal_id=iid)
    keep = await store.issue_credential(principal_type="instance", principal_id=other.instance_id)
    tok = await store.issue_channel_token("control", iid, instance_id=iid)
    assert await store.delete_instance(iid)
    assert not await store.delete_instance(iid)
    assert await store.get_instance(iid) is None
    assert await store.list_instance_tags(iid) == {}
    assert await store.get_credential(cred.access_key_id) is None
    assert await store.get_credential(keep.access_key_id) is not None
    assert await store.consume_channel_token(tok) is None


async def _fleet(store: Store) -> list[ManagedInstance]:
    specs = [
        # platform, activation, agent version, role, last ping, tags
        ("Linux", "act-a", "3.3.0.0", "r1", NOW, {"env": "prod", "team": "web"}),
        ("Linux", "act-a", "3.2.0.0", "r1", NOW - 600, {"env": "dev"}),
        ("Windows", "act-b", "3.3.0.0", "r2", None, {"env": "prod"}),
        ("MacOS", None, "3.3.0.0", "r2", NOW - 10, {"owner": "me"}),
        ("Linux", "act-b", "3.3.0.0", "r1", NOW - 5, {}),
    ]
    out = []
    for platform, act, ver, role, ping, tags in specs:
        inst = await store.create_instance(
            activation_id=act, iam_role=role, tags=tags, now=NOW - 1000
        )
        await store.update_instance_info(
            inst.instance_id, platform_type=platform, agent_version=ver, now=ping or NOW - 2000
        )
        if ping is None:
            async with store.engine.begin() as conn:
                await conn.execute(
                    s.instances.update()
                    .where(s.instances.c.instance_id == inst.instance_id)
                    .values(last_ping_date=None)
                )
        got = await store.get_instance(inst.instance_id)
        assert got is not None
        out.append(got)
    return out


async def test_list_instances_filters(store: Store) -> None:
    fleet = await _fleet(store)
    ids = [i.instance_id for i in fleet]

    async def q(**kw: object) -> list[str]:
        page = await store.list_instances(**kw)  # type: ignore[arg-type]
        return sorted(i.instance_id for i in page.items)

    assert await q() == sorted(ids)
    assert await q(instance_ids=[ids[1], ids[3], "mi-00000000000000000"]) == sorted(
        [ids[1], ids[3]]
    )
    assert await q(platform_types=["Linux"]) == sorted([ids[0], ids[1], ids[4]])
    assert await q(platform_types=["Windows", "MacOS"]) == sorted([ids[2], ids[3]])
    assert await q(activation_ids=["act-b"]) == sorted([ids[2], ids[4]])
    assert await q(agent_versions=["3.2.0.0"]) == [ids[1]]
    assert await q(iam_roles=["r2"]) == sorted([ids[2], ids[3]])
    assert await q(resource_types=["ManagedInstance"]) == sorted(ids)
    assert await q(resource_types=["EC2Instance"]) == []
    since = NOW - 60
    assert await q(ping_statuses=["Online"], online_since=since) == sorted([ids[0], ids[3], ids[4]])
    assert await q(ping_statuses=["ConnectionLost"], online_since=since) == sorted([ids[1], ids[2]])
    assert await q(ping_statuses=["Online", "ConnectionLost"], online_since=since) == sorted(ids)
    assert await q(ping_statuses=["Inactive"], online_since=since) == []
    for inst in fleet:  # the filter and the renderer agree
        online = ping_status(inst.last_ping_date, since) == "Online"
        assert online == (inst.instance_id in await q(ping_statuses=["Online"], online_since=since))
    with pytest.raises(ValueError):
        await store.list_instances(ping_statuses=["Online"])
    assert await q(tag_filters={"env": ["prod"]}) == sorted([ids[0], ids[2]])
    assert await q(tag_filters={"env": ["prod", "dev"]}) == sorted([ids[0], ids[1], ids[2]])
    assert await q(tag_filters={"env": ["prod"], "team": ["web"]}) == [ids[0]]
    assert await q(tag_keys=["owner", "team"]) == sorted([ids[0], ids[3]])
    assert await q(tag_keys=["nope"]) == []
    assert await q(
        platform_types=["Linux"], tag_filters={"env": ["prod", "dev"]}, agent_versions=["3.3.0.0"]
    ) == [ids[0]]


async def test_list_instances_pagination(store: Store) -> None:
    ids = sorted([(await store.create_instance()).instance_id for _ in range(12)])
    pages = []
    token = None
    while True:
        page = await store.list_instances(max_results=5, next_token=token)
        pages.append([i.instance_id for i in page.items])
        token = page.next_token
        if token is None:
            break
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [i for p in pages for i in p] == ids
    exact = await store.list_instances(max_results=12)
    assert len(exact.items) == 12 and exact.next_token is None
    for bad in ("@@@", "e30", "WyJzZXNzOkFjdGl2ZSIsMSwieCJd"):
        with pytest.raises(InvalidNextTokenError):
            await store.list_instances(next_token=bad)
    inst_token = (await store.list_instances(max_results=5)).next_token
    assert inst_token is not None
    with pytest.raises(InvalidNextTokenError):  # a token only fits the list it came from
        await store.list_sessions("Active", next_token=inst_token)


def test_generate_instance_id() -> None:
    ids = {generate_instance_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"mi-[0-9a-f]{17}", i) for i in ids)


def test_ping_status() -> None:
    assert ping_status(None, NOW) == "ConnectionLost"
    assert ping_status(NOW, NOW) == "Online"
    assert ping_status(NOW - 1, NOW) == "ConnectionLost"
