"""Sessions (StartSession … DescribeSessions) and single-use channel tokens."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from portless.store import schema as s
from portless.store._base import AnyRow, StoreBase, clamp_limit, decode_token, dumps, record_values
from portless.store.records import (
    SESSION_STATUSES,
    TERMINAL_STATUSES,
    ChannelToken,
    Page,
    Session,
    SessionStatus,
    TokenKind,
    sha256_hex,
)

TOKEN_KINDS: tuple[TokenKind, ...] = ("control", "data_agent", "data_client")


def _session(row: AnyRow) -> Session:
    params = json.loads(row.parameters) if row.parameters else {}
    return Session(
        session_id=row.session_id,
        owner_arn=row.owner_arn,
        owner_name=row.owner_name,
        target=row.target,
        document_name=row.document_name,
        reason=row.reason,
        status=cast(SessionStatus, row.status),
        start_date=row.start_date,
        end_date=row.end_date,
        details=row.details,
        parameters=params if isinstance(params, dict) else {},
        run_as_user=row.run_as_user,
        client_token_hash=row.client_token_hash,
        max_session_duration=row.max_session_duration,
        access_type=row.access_type,
        s3_output_url=row.s3_output_url,
        cloudwatch_output_url=row.cloudwatch_output_url,
        bytes_in=int(row.bytes_in),
        bytes_out=int(row.bytes_out),
    )


def _token(row: AnyRow) -> ChannelToken:
    return ChannelToken(
        token_hash=row.token_hash,
        kind=cast(TokenKind, row.kind),
        subject=row.subject,
        instance_id=row.instance_id,
        expires=row.expires,
        used=bool(row.used),
        created_date=row.created_date,
    )


class SessionsMixin(StoreBase):
    """Session records and channel tokens."""

    # ------------------------------------------------------------------ sessions

    async def create_session(
        self,
        *,
        session_id: str,
        owner_arn: str,
        owner_name: str,
        target: str,
        document_name: str,
        reason: str | None = None,
        status: SessionStatus = "Connecting",
        parameters: Mapping[str, Sequence[str]] | None = None,
        run_as_user: str | None = None,
        client_token: str | None = None,
        max_session_duration: int | None = None,
        access_type: str = "Standard",
        s3_output_url: str | None = None,
        cloudwatch_output_url: str | None = None,
        details: str | None = None,
        now: float | None = None,
    ) -> Session:
        """Record a new session (``client_token`` stored hashed); raises
        :class:`AlreadyExistsError` on a duplicate id."""
        if status not in SESSION_STATUSES:
            raise ValueError(f"bad session status {status!r}")
        params = {k: list(v) for k, v in (parameters or {}).items()}
        sess = Session(
            session_id=session_id,
            owner_arn=owner_arn,
            owner_name=owner_name,
            target=target,
            document_name=document_name,
            reason=reason,
            status=status,
            start_date=time.time() if now is None else now,
            end_date=None,
            details=details,
            parameters=params,
            run_as_user=run_as_user,
            client_token_hash=sha256_hex(client_token) if client_token else None,
            max_session_duration=max_session_duration,
            access_type=access_type,
            s3_output_url=s3_output_url,
            cloudwatch_output_url=cloudwatch_output_url,
            bytes_in=0,
            bytes_out=0,
        )
        async with self._write() as conn:
            await conn.execute(
                s.sessions.insert().values(**record_values(sess, parameters=dumps(params)))
            )
        return sess

    async def get_session(self, session_id: str) -> Session | None:
        return await self._get_by_key(s.sessions.c.session_id, session_id, _session)

    async def update_session_status(
        self,
        session_id: str,
        status: SessionStatus,
        *,
        end_date: float | None = None,
        details: str | None = None,
        only_if_status_in: Sequence[SessionStatus] | None = None,
        now: float | None = None,
    ) -> bool:
        """Set the status; a terminal status also sets ``end_date`` (given, or now)
        unless one is recorded already. With ``only_if_status_in`` the change is
        a compare-and-set (e.g. never revive a Terminated session). Returns
        whether a row changed."""
        if status not in SESSION_STATUSES:
            raise ValueError(f"bad session status {status!r}")
        t = s.sessions
        values: dict[str, Any] = {"status": status}
        if details is not None:
            values["details"] = details
        if end_date is not None:
            values["end_date"] = end_date
        elif status in TERMINAL_STATUSES:
            when = time.time() if now is None else now
            # Keep an end date recorded earlier.
            values["end_date"] = func.coalesce(t.c.end_date, when)
        q = update(t).where(t.c.session_id == session_id).values(**values)
        if only_if_status_in is not None:
            q = q.where(t.c.status.in_(list(only_if_status_in)))
        async with self._write() as conn:
            res = await conn.execute(q)
        return res.rowcount > 0

    async def set_session_counters(self, session_id: str, *, bytes_in: int, bytes_out: int) -> bool:
        """Record the byte counters (once, at the end; the relay keeps them in memory)."""
        return await self._update_by_key(
            s.sessions.c.session_id, session_id, {"bytes_in": bytes_in, "bytes_out": bytes_out}
        )

    async def set_session_output_urls(
        self,
        session_id: str,
        *,
        s3_output_url: str | None = None,
        cloudwatch_output_url: str | None = None,
    ) -> bool:
        return await self._update_by_key(
            s.sessions.c.session_id,
            session_id,
            {"s3_output_url": s3_output_url, "cloudwatch_output_url": cloudwatch_output_url},
        )

    async def list_sessions(
        self,
        state: Literal["Active", "History"],
        *,
        invoked_after: float | None = None,
        invoked_before: float | None = None,
        target: str | None = None,
        owner: str | None = None,
        status: str | None = None,
        session_id: str | None = None,
        access_type: str | None = None,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> Page[Session]:
        """DescribeSessions: Active = not Terminated/Failed, History = Terminated/Failed;
        newest first. ``invoked_after``/``before`` compare with the start date
        (inclusive); ``owner`` matches the owner ARN."""
        if state not in ("Active", "History"):
            raise ValueError(f"bad state {state!r}")
        limit = clamp_limit(max_results, default=20, maximum=200)
        t = s.sessions
        terminal = t.c.status.in_(list(TERMINAL_STATUSES))
        conds: list[ColumnElement[bool]] = [terminal if state == "History" else ~terminal]
        if invoked_after is not None:
            conds.append(t.c.start_date >= invoked_after)
        if invoked_before is not None:
            conds.append(t.c.start_date <= invoked_before)
        for col, val in (
            (t.c.target, target),
            (t.c.owner_arn, owner),
            (t.c.status, status),
            (t.c.session_id, session_id),
            (t.c.access_type, access_type),
        ):
            if val is not None:
                conds.append(col == val)
        if next_token:
            start, sid = decode_token(next_token, "sess:" + state, (float, str))
            conds.append(
                or_(t.c.start_date < start, and_(t.c.start_date == start, t.c.session_id < sid))
            )
        q = select(t).where(*conds).order_by(t.c.start_date.desc(), t.c.session_id.desc())
        return await self._page(
            q, limit, _session, "sess:" + state, lambda x: [x.start_date, x.session_id]
        )

    # ------------------------------------------------------------------ channel tokens

    async def issue_channel_token(
        self,
        kind: TokenKind,
        subject: str,
        *,
        instance_id: str | None = None,
        ttl: float = 300.0,
        now: float | None = None,
    ) -> str:
        """Create a single-use bearer token and return it; only its hash is stored.

        The token is 64 url-safe characters (well within StartSession's 300)."""
        if kind not in TOKEN_KINDS:
            raise ValueError(f"bad token kind {kind!r}")
        raw = secrets.token_urlsafe(48)
        created = time.time() if now is None else now
        async with self._write() as conn:
            await conn.execute(
                s.channel_tokens.insert().values(
                    token_hash=sha256_hex(raw),
                    kind=kind,
                    subject=subject,
                    instance_id=instance_id,
                    expires=created + ttl,
                    used=False,
                    created_date=created,
                )
            )
        return raw

    async def consume_channel_token(
        self, token: str, *, kind: TokenKind | None = None, now: float | None = None
    ) -> ChannelToken | None:
        """Spend a token: atomically mark it used and return it if it exists, is
        unused, unexpired (and of *kind*, if given); otherwise None. Of several
        concurrent callers presenting the same token, exactly one wins."""
        when = time.time() if now is None else now
        t = s.channel_tokens
        h = sha256_hex(token)
        conds: list[ColumnElement[bool]] = [
            t.c.token_hash == h,
            t.c.used.is_(False),
            t.c.expires > when,
        ]
        if kind is not None:
            conds.append(t.c.kind == kind)
        async with self._write() as conn:
            res = await conn.execute(update(t).where(*conds).values(used=True))
            if res.rowcount != 1:
                return None
            row = (await conn.execute(select(t).where(t.c.token_hash == h))).one()
        return _token(row)

    async def purge_channel_tokens(self, *, now: float | None = None) -> int:
        """Delete used and expired tokens."""
        when = time.time() if now is None else now
        t = s.channel_tokens
        async with self._write() as conn:
            res = await conn.execute(delete(t).where(or_(t.c.used.is_(True), t.c.expires <= when)))
        return res.rowcount
