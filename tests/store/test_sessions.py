"""Sessions and channel tokens."""

from __future__ import annotations

import asyncio
import re

import pytest
from sqlalchemy import select

from portless.store import AlreadyExistsError, InvalidNextTokenError, Session, Store
from portless.store import schema as s

NOW = 1_800_000_000.0
ALICE = "arn:aws:iam::123456789012:user/alice"
BOB = "arn:aws:iam::123456789012:user/bob"


async def _session(
    store: Store,
    sid: str,
    *,
    start: float,
    owner: str = ALICE,
    target: str = "mi-0123456789abcdef0",
    **kw: object,
) -> Session:
    return await store.create_session(
        session_id=sid,
        owner_arn=owner,
        owner_name=owner.rsplit("/", 1)[-1],
        target=target,
        document_name="SSM-SessionManagerRunShell",
        now=start,
        **kw,  # type: ignore[arg-type]
    )


async def test_session_crud(store: Store) -> None:
    sess = await store.create_session(
        session_id="alice-0123456789abcdef0",
        owner_arn=ALICE,
        owner_name="alice",
        target="mi-0123456789abcdef0",
        document_name="AWS-StartPortForwardingSession",
        reason="debug",
        parameters={"portNumber": ["80"], "localPortNumber": ["8080"]},
        run_as_user="ec2-user",
        client_token="tok",
        max_session_duration=60,
        s3_output_url="",
        now=NOW,
    )
    assert sess.status == "Connecting" and sess.start_date == NOW and sess.end_date is None
    assert sess.client_token_hash is not None and sess.client_token_hash != "tok"
    got = await store.get_session(sess.session_id)
    assert got == sess
    assert got is not None and got.parameters == {"portNumber": ["80"], "localPortNumber": ["8080"]}
    assert await store.get_session("nope") is None
    with pytest.raises(AlreadyExistsError):
        await _session(store, sess.session_id, start=NOW)
    with pytest.raises(ValueError):
        await _session(store, "x", start=NOW, status="Bogus")


async def test_session_status_transitions(store: Store) -> None:
    sid = "alice-1"
    await _session(store, sid, start=NOW)
    assert await store.update_session_status(sid, "Connected", now=NOW + 1)
    got = await store.get_session(sid)
    assert got is not None and got.status == "Connected" and got.end_date is None
    assert await store.update_session_status(
        sid, "Terminated", details="closed by user", now=NOW + 5
    )
    got = await store.get_session(sid)
    assert got is not None
    assert (got.status, got.end_date, got.details) == ("Terminated", NOW + 5, "closed by user")
    # Compare-and-set: a late "Connected" must not revive a terminated session.
    assert not await store.update_session_status(
        sid, "Connected", only_if_status_in=["Connecting", "Disconnected"]
    )
    # A second terminal update keeps the first end date.
    assert await store.update_session_status(sid, "Failed", now=NOW + 50)
    got = await store.get_session(sid)
    assert got is not None and got.end_date == NOW + 5 and got.status == "Failed"
    # An explicit end date wins.
    assert await store.update_session_status(sid, "Terminated", end_date=NOW + 7)
    got = await store.get_session(sid)
    assert got is not None and got.end_date == NOW + 7
    assert not await store.update_session_status("missing", "Terminated")
    with pytest.raises(ValueError):
        await store.update_session_status(sid, "Bogus")  # type: ignore[arg-type]


async def test_session_counters_and_output(store: Store) -> None:
    await _session(store, "c-1", start=NOW)
    assert await store.set_session_counters("c-1", bytes_in=5_000_000_000, bytes_out=7)
    assert await store.set_session_output_urls(
        "c-1", s3_output_url="s3://b/k", cloudwatch_output_url=None
    )
    got = await store.get_session("c-1")
    assert got is not None and (got.bytes_in, got.bytes_out) == (5_000_000_000, 7)
    assert got.s3_output_url == "s3://b/k" and got.cloudwatch_output_url is None
    assert not await store.set_session_counters("missing", bytes_in=1, bytes_out=1)


async def test_list_sessions_state_and_filters(store: Store) -> None:
    await _session(store, "a-1", start=NOW + 1)
    await _session(store, "a-2", start=NOW + 2, owner=BOB, target="mi-11111111111111111")
    await _session(store, "a-3", start=NOW + 3, access_type="JustInTime")
    await _session(store, "a-4", start=NOW + 4, owner=BOB)
    await _session(store, "a-5", start=NOW + 5)
    await store.update_session_status("a-1", "Terminated", now=NOW + 10)
    await store.update_session_status("a-4", "Failed", now=NOW + 10)
    await store.update_session_status("a-5", "Connected")
    await store.update_session_status("a-3", "Terminating")

    async def q(state: str, **kw: object) -> list[str]:
        page = await store.list_sessions(state, **kw)  # type: ignore[arg-type]
        return [x.session_id for x in page.items]

    assert await q("Active") == ["a-5", "a-3", "a-2"]  # newest first
    assert await q("History") == ["a-4", "a-1"]
    assert await q("Active", owner=BOB) == ["a-2"]
    assert await q("History", owner=BOB) == ["a-4"]
    assert await q("Active", target="mi-11111111111111111") == ["a-2"]
    assert await q("Active", status="Connected") == ["a-5"]
    assert await q("History", status="Failed") == ["a-4"]
    assert await q("Active", session_id="a-3") == ["a-3"]
    assert await q("History", session_id="a-3") == []
    assert await q("Active", access_type="JustInTime") == ["a-3"]
    assert await q("Active", invoked_after=NOW + 3) == ["a-5", "a-3"]
    assert await q("Active", invoked_before=NOW + 3) == ["a-3", "a-2"]
    assert await q("Active", invoked_after=NOW + 2.5, invoked_before=NOW + 4.5, owner=ALICE) == [
        "a-3"
    ]
    with pytest.raises(ValueError):
        await store.list_sessions("Everything")  # type: ignore[arg-type]


async def test_list_sessions_pagination_with_ties(store: Store) -> None:
    # Identical start dates: the session id breaks the tie, so nothing repeats or goes missing.
    sids = [f"s-{i:02d}" for i in range(11)]
    for i, sid in enumerate(sids):
        await _session(store, sid, start=NOW + (i // 4))
    seen: list[str] = []
    token = None
    while True:
        page = await store.list_sessions("Active", max_results=3, next_token=token)
        assert len(page.items) <= 3
        seen += [x.session_id for x in page.items]
        token = page.next_token
        if token is None:
            break
    # Newest first, ties by session id descending.
    assert seen == sorted(sids, key=lambda x: (int(x[2:]) // 4, x), reverse=True)
    history_token = (await store.list_sessions("Active", max_results=2)).next_token
    assert history_token is not None
    with pytest.raises(InvalidNextTokenError):
        await store.list_sessions("History", next_token=history_token)


async def test_channel_token_single_use(store: Store) -> None:
    tok = await store.issue_channel_token(
        "data_client",
        "alice-0123456789abcdef0",
        instance_id="mi-0123456789abcdef0",
        ttl=60,
        now=NOW,
    )
    assert len(tok) <= 300 and re.fullmatch(r"[A-Za-z0-9_-]{43,}", tok)
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(s.channel_tokens))).one()
    assert tok not in [str(v) for v in row]
    # Wrong kind: refused and not spent.
    assert await store.consume_channel_token(tok, kind="control", now=NOW) is None
    rec = await store.consume_channel_token(tok, kind="data_client", now=NOW + 1)
    assert rec is not None
    assert (rec.kind, rec.subject, rec.instance_id, rec.used) == (
        "data_client",
        "alice-0123456789abcdef0",
        "mi-0123456789abcdef0",
        True,
    )
    assert rec.expires == NOW + 60
    assert await store.consume_channel_token(tok, now=NOW + 2) is None
    assert await store.consume_channel_token("never-issued", now=NOW) is None
    with pytest.raises(ValueError):
        await store.issue_channel_token("bogus", "x")  # type: ignore[arg-type]


async def test_channel_token_expiry_and_purge(store: Store) -> None:
    t1 = await store.issue_channel_token("control", "mi-1", ttl=10, now=NOW)
    t2 = await store.issue_channel_token("data_agent", "sess", ttl=100, now=NOW)
    t3 = await store.issue_channel_token("data_agent", "sess", ttl=100, now=NOW)
    assert await store.consume_channel_token(t1, now=NOW + 10) is None  # expired
    assert await store.consume_channel_token(t2, now=NOW + 1) is not None
    assert await store.purge_channel_tokens(now=NOW + 20) == 2  # t1 expired, t2 used
    assert await store.consume_channel_token(t3, now=NOW + 21) is not None


async def test_channel_token_concurrent_consumption_has_one_winner(store: Store) -> None:
    for _ in range(3):
        tok = await store.issue_channel_token("data_client", "sess")
        results = await asyncio.gather(*(store.consume_channel_token(tok) for _ in range(20)))
        assert sum(r is not None for r in results) == 1
