"""Issued (temporary) credentials, users and their long-term access keys.

Secret access keys are stored encrypted with the store's :class:`SecretBox`
(bound to the access key id); session tokens only as SHA-256 hashes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import cast

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from portless.store import schema as s
from portless.store._base import (
    AnyRow,
    StoreBase,
    clamp_limit,
    decode_token,
    dumps,
    record_values,
    row_mapper,
)
from portless.store.records import (
    AccessKey,
    AccessKeyStatus,
    AccessKeyWithSecret,
    IssuedCredential,
    NotFoundError,
    Page,
    PrincipalType,
    User,
    generate_access_key_id,
    generate_secret_access_key,
    generate_user_id,
    sha256_hex,
)
from portless.store.secretbox import SecretBox


def _cred_context(access_key_id: str) -> str:
    return "credential:" + access_key_id


def _key_context(access_key_id: str) -> str:
    return "access_key:" + access_key_id


_user = row_mapper(User, json_dicts=("tags",))


async def insert_credential(
    conn: AsyncConnection,
    box: SecretBox,
    *,
    principal_type: PrincipalType,
    principal_id: str,
    expiration: float,
    created: float,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
) -> IssuedCredential:
    """Store temporary credentials in *conn*'s transaction (secret encrypted, token
    hashed), generating the ``ASIA…`` id, secret and token where not given.

    The returned record carries the raw session token, which is not kept. Shared by
    plain issuing and GetSessionToken, which records MFA in the same transaction.
    """
    akid = access_key_id or generate_access_key_id("ASIA")
    secret = secret_access_key or generate_secret_access_key()
    token = session_token or secrets.token_urlsafe(96)
    cred = IssuedCredential(
        access_key_id=akid,
        secret_access_key=secret,
        session_token_hash=sha256_hex(token),
        principal_type=principal_type,
        principal_id=principal_id,
        expiration=expiration,
        created_date=created,
        session_token=token,
    )
    await conn.execute(
        s.issued_credentials.insert().values(
            access_key_id=akid,
            secret_enc=box.encrypt(secret, context=_cred_context(akid)),
            session_token_hash=cred.session_token_hash,
            principal_type=principal_type,
            principal_id=principal_id,
            expiration=expiration,
            created_date=created,
        )
    )
    return cred


def _access_key(row: AnyRow) -> AccessKey:
    return AccessKey(
        access_key_id=row.access_key_id,
        user_name=row.user_name,
        user_id=row.user_id,
        user_arn=row.arn,
        status=cast(AccessKeyStatus, row.status),
        created_date=row.created_date,
    )


_KEY_COLUMNS = (
    s.access_keys.c.access_key_id,
    s.access_keys.c.user_name,
    s.access_keys.c.status,
    s.access_keys.c.created_date,
    s.access_keys.c.secret_enc,
    s.users.c.user_id,
    s.users.c.arn,
)


class IdentityMixin(StoreBase):
    """Temporary credentials, users and access keys."""

    # ------------------------------------------------------------------ issued credentials

    async def put_credential(
        self,
        *,
        access_key_id: str,
        secret_access_key: str,
        session_token: str,
        principal_type: PrincipalType,
        principal_id: str,
        expiration: float,
        now: float | None = None,
    ) -> IssuedCredential:
        """Store credentials the server handed out (secret encrypted, token hashed)."""
        async with self._write() as conn:
            return await insert_credential(
                conn,
                self._box,
                access_key_id=access_key_id,
                secret_access_key=secret_access_key,
                session_token=session_token,
                principal_type=principal_type,
                principal_id=principal_id,
                expiration=expiration,
                created=time.time() if now is None else now,
            )

    async def issue_credential(
        self,
        *,
        principal_type: PrincipalType,
        principal_id: str,
        ttl: float = 3600.0,
        now: float | None = None,
    ) -> IssuedCredential:
        """Generate (``ASIA…`` id, secret, session token) and store them; the returned
        record carries the raw session token, which is not kept."""
        when = time.time() if now is None else now
        async with self._write() as conn:
            return await insert_credential(
                conn,
                self._box,
                principal_type=principal_type,
                principal_id=principal_id,
                expiration=when + ttl,
                created=when,
            )

    async def get_credential(
        self, access_key_id: str, *, include_expired: bool = False, now: float | None = None
    ) -> IssuedCredential | None:
        """Credentials with the decrypted secret; None if unknown or (by default) expired."""
        t = s.issued_credentials
        async with self._read() as conn:
            row = (await conn.execute(select(t).where(t.c.access_key_id == access_key_id))).first()
        if row is None:
            return None
        when = time.time() if now is None else now
        if not include_expired and row.expiration <= when:
            return None
        return IssuedCredential(
            access_key_id=row.access_key_id,
            secret_access_key=self._box.decrypt(
                row.secret_enc, context=_cred_context(row.access_key_id)
            ),
            session_token_hash=row.session_token_hash,
            principal_type=cast(PrincipalType, row.principal_type),
            principal_id=row.principal_id,
            expiration=row.expiration,
            created_date=row.created_date,
        )

    async def delete_expired_credentials(self, *, now: float | None = None) -> int:
        when = time.time() if now is None else now
        t = s.issued_credentials
        async with self._write() as conn:
            res = await conn.execute(delete(t).where(t.c.expiration <= when))
        return res.rowcount

    async def delete_credentials_for(self, principal_type: PrincipalType, principal_id: str) -> int:
        t = s.issued_credentials
        async with self._write() as conn:
            res = await conn.execute(
                delete(t).where(
                    t.c.principal_type == principal_type, t.c.principal_id == principal_id
                )
            )
        return res.rowcount

    # ------------------------------------------------------------------ users

    async def create_user(
        self,
        name: str,
        *,
        arn: str,
        user_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        now: float | None = None,
    ) -> User:
        """Create a user; raises :class:`AlreadyExistsError` if the name is taken."""
        user = User(
            user_id=user_id or generate_user_id(),
            name=name,
            arn=arn,
            created_date=time.time() if now is None else now,
            tags=dict(tags or {}),
        )
        async with self._write() as conn:
            await conn.execute(
                s.users.insert().values(**record_values(user, tags=dumps(user.tags)))
            )
        return user

    async def get_user(self, name: str) -> User | None:
        return await self._get_by_key(s.users.c.name, name, _user)

    async def get_user_by_id(self, user_id: str) -> User | None:
        return await self._get_by_key(s.users.c.user_id, user_id, _user)

    async def list_users(
        self, *, max_results: int | None = None, next_token: str | None = None
    ) -> Page[User]:
        limit = clamp_limit(max_results, default=100)
        q = select(s.users).order_by(s.users.c.name)
        if next_token:
            (last,) = decode_token(next_token, "user", (str,))
            q = q.where(s.users.c.name > last)
        return await self._page(q, limit, _user, "user", lambda u: [u.name])

    async def set_user_tags(self, name: str, tags: Mapping[str, str]) -> bool:
        """Replace the user's tags (e.g. ``SSMSessionRunAs``)."""
        return await self._update_by_key(s.users.c.name, name, {"tags": dumps(dict(tags))})

    async def delete_user(self, name: str) -> bool:
        """Delete the user and (by cascade) its access keys."""
        async with self._write() as conn:
            await conn.execute(delete(s.access_keys).where(s.access_keys.c.user_name == name))
            res = await conn.execute(delete(s.users).where(s.users.c.name == name))
        return res.rowcount > 0

    # ------------------------------------------------------------------ access keys

    async def create_access_key(
        self,
        user_name: str,
        *,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        now: float | None = None,
    ) -> AccessKeyWithSecret:
        """Create an Active ``AKIA…`` key for *user_name*; the secret is returned only here."""
        akid = access_key_id or generate_access_key_id("AKIA")
        secret = secret_access_key or generate_secret_access_key()
        created = time.time() if now is None else now
        async with self._write() as conn:
            user = (await conn.execute(select(s.users).where(s.users.c.name == user_name))).first()
            if user is None:
                raise NotFoundError(user_name)
            await conn.execute(
                s.access_keys.insert().values(
                    access_key_id=akid,
                    user_name=user_name,
                    secret_enc=self._box.encrypt(secret, context=_key_context(akid)),
                    status="Active",
                    created_date=created,
                )
            )
        key = AccessKey(
            access_key_id=akid,
            user_name=user_name,
            user_id=user.user_id,
            user_arn=user.arn,
            status="Active",
            created_date=created,
        )
        return AccessKeyWithSecret(key, secret)

    async def get_access_key(self, access_key_id: str) -> AccessKeyWithSecret | None:
        """The key, its owner and decrypted secret (whatever its status: callers check)."""
        q = (
            select(*_KEY_COLUMNS)
            .join_from(s.access_keys, s.users, s.access_keys.c.user_name == s.users.c.name)
            .where(s.access_keys.c.access_key_id == access_key_id)
        )
        async with self._read() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            return None
        secret = self._box.decrypt(row.secret_enc, context=_key_context(row.access_key_id))
        return AccessKeyWithSecret(_access_key(row), secret)

    async def list_access_keys(self, user_name: str) -> list[AccessKey]:
        q = (
            select(*_KEY_COLUMNS)
            .join_from(s.access_keys, s.users, s.access_keys.c.user_name == s.users.c.name)
            .where(s.access_keys.c.user_name == user_name)
            .order_by(s.access_keys.c.created_date, s.access_keys.c.access_key_id)
        )
        async with self._read() as conn:
            rows = (await conn.execute(q)).all()
        return [_access_key(r) for r in rows]

    async def set_access_key_status(self, access_key_id: str, status: AccessKeyStatus) -> bool:
        if status not in ("Active", "Inactive"):
            raise ValueError(f"bad access key status {status!r}")
        return await self._update_by_key(
            s.access_keys.c.access_key_id, access_key_id, {"status": status}
        )

    async def delete_access_key(self, access_key_id: str) -> bool:
        t = s.access_keys
        async with self._write() as conn:
            res = await conn.execute(delete(t).where(t.c.access_key_id == access_key_id))
        return res.rowcount > 0
