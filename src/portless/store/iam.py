"""IAM beyond users and keys: groups, inline and managed policies, attachments, MFA devices.

Principals are stored by id (``users.user_id``, ``iam_groups.group_id``) so that a name
re-used after a delete starts from nothing; the public methods take names, as the IAM API
does. Managed policies are referenced by ARN: customer managed policies (with versions and a
default version) live in ``iam_policies``; AWS managed ones (``arn:aws:iam::aws:policy/…``)
are defined in code (:mod:`portless.iam.managed`), so attachments to them store the ARN only
and :meth:`IamMixin.load_user_authorization` returns them with ``document=None``.

Virtual MFA device seeds are encrypted with the store's SecretBox. Each device remembers the
last TOTP time step it accepted, advanced with a conditional UPDATE, so a code cannot be used
twice even by two replicas racing.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Table, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from portless.store import schema as s
from portless.store._base import (
    AnyRow,
    AnySelect,
    StoreBase,
    dumps,
    loads_dict,
    record_values,
    row_mapper,
)
from portless.store.identity import _user, insert_credential
from portless.store.records import (
    AlreadyExistsError,
    InvalidOperationError,
    IssuedCredential,
    NotFoundError,
    User,
)

__all__ = [
    "AWS_POLICY_ARN_PREFIX",
    "CredentialMfa",
    "CustomerPolicy",
    "Group",
    "IamMixin",
    "InlinePolicy",
    "MfaDevice",
    "PolicySource",
    "PolicyVersion",
    "PrincipalKind",
    "RoleAuthorization",
    "UserAuthorization",
    "generate_group_id",
    "generate_policy_id",
]

AWS_POLICY_ARN_PREFIX = "arn:aws:iam::aws:policy/"

PrincipalKind = Literal["user", "group", "role"]

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _unique_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_B32) for _ in range(17))


def generate_group_id() -> str:
    """An AWS-shaped group id: ``AGPA`` + 17 chars."""
    return _unique_id("AGPA")


def generate_policy_id() -> str:
    """An AWS-shaped managed policy id: ``ANPA`` + 17 chars."""
    return _unique_id("ANPA")


def _mfa_context(serial: str) -> str:
    return "mfa:" + serial


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Group:
    group_id: str
    name: str
    path: str
    arn: str
    created_date: float


@dataclass(frozen=True, slots=True)
class InlinePolicy:
    """A policy embedded in one user, group or role."""

    principal_kind: PrincipalKind
    principal_name: str
    policy_name: str
    document: str
    updated_date: float


@dataclass(frozen=True, slots=True)
class CustomerPolicy:
    """A customer managed policy (its default version's document included)."""

    policy_id: str
    name: str
    path: str
    arn: str
    description: str
    default_version_id: str
    document: str
    attachment_count: int
    created_date: float
    updated_date: float
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    policy_arn: str
    version_id: str
    document: str
    is_default: bool
    created_date: float


@dataclass(frozen=True, slots=True)
class MfaDevice:
    """A virtual MFA device; ``user_name`` is set while it is enabled for a user."""

    serial_number: str
    name: str
    path: str
    user_name: str | None
    user_id: str | None
    enable_date: float | None
    last_used_step: int | None
    created_date: float
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class CredentialMfa:
    """How the holder of a temporary credential proved MFA (GetSessionToken)."""

    access_key_id: str
    mfa_serial: str
    authenticated_at: float


@dataclass(frozen=True, slots=True)
class PolicySource:
    """One policy that applies to a principal, and where it comes from.

    ``kind`` is ``inline`` (``name`` is the policy name, ``document`` its text) or
    ``managed`` (``arn`` set; ``document`` is the default version for customer managed
    policies and None for AWS managed ones, which callers resolve from code). ``via`` is
    ``user/NAME``, ``group/NAME`` or ``role/NAME``.
    """

    kind: Literal["inline", "managed"]
    name: str
    document: str | None
    arn: str | None
    via: str


@dataclass(frozen=True, slots=True)
class UserAuthorization:
    """Everything that decides what a user may do, read in one transaction."""

    user: User
    groups: list[Group]
    sources: list[PolicySource]


@dataclass(frozen=True, slots=True)
class RoleAuthorization:
    role_name: str
    sources: list[PolicySource]


# --------------------------------------------------------------------------- row mappers


_group = row_mapper(Group)


def _mfa(row: AnyRow, user_name: str | None) -> MfaDevice:
    return MfaDevice(
        serial_number=row.serial_number,
        name=row.name,
        path=row.path,
        user_name=user_name,
        user_id=row.user_id,
        enable_date=row.enable_date,
        last_used_step=None if row.last_used_step is None else int(row.last_used_step),
        created_date=row.created_date,
        tags=loads_dict(row.tags),
    )


def _policy_name_from_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


_INLINE: dict[PrincipalKind, tuple[Table, str]] = {
    "user": (s.iam_user_policies, "user_id"),
    "group": (s.iam_group_policies, "group_id"),
    "role": (s.iam_role_policies, "role_name"),
}
_ATTACH: dict[PrincipalKind, tuple[Table, str]] = {
    "user": (s.iam_user_attachments, "user_id"),
    "group": (s.iam_group_attachments, "group_id"),
    "role": (s.iam_role_attachments, "role_name"),
}


class IamMixin(StoreBase):
    """Groups, inline policies, managed policies and attachments, MFA devices."""

    # ------------------------------------------------------------------ id resolution

    async def _principal_key(self, conn: AsyncConnection, kind: PrincipalKind, name: str) -> str:
        """The key column value for a principal name; NotFoundError if absent."""
        if kind == "role":
            return name
        if kind == "user":
            q = select(s.users.c.user_id).where(s.users.c.name == name)
        else:
            q = select(s.iam_groups.c.group_id).where(s.iam_groups.c.name == name)
        found = (await conn.execute(q)).scalar()
        if found is None:
            raise NotFoundError(f"{kind} {name}")
        return str(found)

    # ------------------------------------------------------------------ groups

    async def create_group(
        self,
        name: str,
        *,
        arn: str,
        path: str = "/",
        group_id: str | None = None,
        now: float | None = None,
    ) -> Group:
        """Create a group; AlreadyExistsError if the name is taken."""
        group = Group(
            group_id=group_id or generate_group_id(),
            name=name,
            path=path,
            arn=arn,
            created_date=time.time() if now is None else now,
        )
        async with self._write() as conn:
            await conn.execute(s.iam_groups.insert().values(**record_values(group)))
        return group

    async def get_group(self, name: str) -> Group | None:
        t = s.iam_groups
        async with self._read() as conn:
            row = (await conn.execute(select(t).where(t.c.name == name))).first()
        return _group(row) if row else None

    async def list_groups(self) -> list[Group]:
        t = s.iam_groups
        async with self._read() as conn:
            rows = (await conn.execute(select(t).order_by(t.c.name))).all()
        return [_group(r) for r in rows]

    async def delete_group(self, name: str) -> bool:
        """Delete the group (memberships, inline policies and attachments cascade)."""
        t = s.iam_groups
        async with self._write() as conn:
            gid = (await conn.execute(select(t.c.group_id).where(t.c.name == name))).scalar()
            if gid is None:
                return False
            # Explicit deletes as well as ON DELETE CASCADE: correct even where the
            # database does not enforce foreign keys.
            for table in (s.iam_group_members, s.iam_group_policies, s.iam_group_attachments):
                await conn.execute(delete(table).where(table.c.group_id == gid))
            res = await conn.execute(delete(t).where(t.c.group_id == gid))
        return res.rowcount > 0

    async def add_user_to_group(
        self, group_name: str, user_name: str, *, now: float | None = None
    ) -> bool:
        """Add a member; False if already a member. NotFoundError names what is missing."""
        m = s.iam_group_members
        async with self._write() as conn:
            gid = await self._principal_key(conn, "group", group_name)
            uid = await self._principal_key(conn, "user", user_name)
            exists = (
                await conn.execute(
                    select(m.c.user_id).where(m.c.group_id == gid, m.c.user_id == uid)
                )
            ).first()
            if exists is not None:
                return False
            await conn.execute(
                m.insert().values(
                    group_id=gid, user_id=uid, added_date=time.time() if now is None else now
                )
            )
        return True

    async def remove_user_from_group(self, group_name: str, user_name: str) -> bool:
        """Remove a member; False if they were not one. NotFoundError if either is absent."""
        m = s.iam_group_members
        async with self._write() as conn:
            gid = await self._principal_key(conn, "group", group_name)
            uid = await self._principal_key(conn, "user", user_name)
            res = await conn.execute(delete(m).where(m.c.group_id == gid, m.c.user_id == uid))
        return res.rowcount > 0

    @staticmethod
    async def _groups_of(conn: AsyncConnection, user_id: str) -> list[Group]:
        """The groups the user with *user_id* belongs to, by name."""
        g, m = s.iam_groups, s.iam_group_members
        rows = (
            await conn.execute(
                select(g)
                .join(m, m.c.group_id == g.c.group_id)
                .where(m.c.user_id == user_id)
                .order_by(g.c.name)
            )
        ).all()
        return [_group(r) for r in rows]

    async def list_groups_for_user(self, user_name: str) -> list[Group]:
        """The user's groups by name; NotFoundError if the user does not exist."""
        async with self._read() as conn:
            return await self._groups_of(conn, await self._principal_key(conn, "user", user_name))

    async def list_group_members(self, group_name: str) -> list[User]:
        """The group's users by name; NotFoundError if the group does not exist."""
        u, m = s.users, s.iam_group_members
        async with self._read() as conn:
            gid = await self._principal_key(conn, "group", group_name)
            rows = (
                await conn.execute(
                    select(u)
                    .join(m, m.c.user_id == u.c.user_id)
                    .where(m.c.group_id == gid)
                    .order_by(u.c.name)
                )
            ).all()
        return [_user(r) for r in rows]

    # ------------------------------------------------------------------ user tags

    async def update_user_tags(
        self,
        name: str,
        *,
        set_tags: Mapping[str, str] | None = None,
        remove_keys: Sequence[str] = (),
        max_tags: int | None = None,
    ) -> dict[str, str]:
        """Merge *set_tags* into and drop *remove_keys* from the user's tags, atomically.

        Raises NotFoundError if the user is absent and InvalidOperationError if the
        result would hold more than *max_tags* tags. Returns the new tags.
        """
        u = s.users
        async with self._write() as conn:
            row = (
                await conn.execute(select(u.c.tags).where(u.c.name == name).with_for_update())
            ).first()
            if row is None:
                raise NotFoundError(f"user {name}")
            tags: dict[str, str] = {str(k): str(v) for k, v in loads_dict(row.tags).items()}
            tags.update(set_tags or {})
            for key in remove_keys:
                tags.pop(key, None)
            if max_tags is not None and len(tags) > max_tags:
                raise InvalidOperationError(f"a user can have at most {max_tags} tags")
            await conn.execute(update(u).where(u.c.name == name).values(tags=dumps(tags)))
        return tags

    # ------------------------------------------------------------------ inline policies

    async def put_inline_policy(
        self,
        kind: PrincipalKind,
        principal_name: str,
        policy_name: str,
        document: str,
        *,
        now: float | None = None,
    ) -> InlinePolicy:
        """Create or replace an inline policy; NotFoundError if the user/group is absent."""
        table, col = _INLINE[kind]
        when = time.time() if now is None else now
        async with self._write() as conn:
            key = await self._principal_key(conn, kind, principal_name)
            where = and_(table.c[col] == key, table.c.policy_name == policy_name)
            res = await conn.execute(
                update(table).where(where).values(document=document, updated_date=when)
            )
            if res.rowcount == 0:
                await conn.execute(
                    table.insert().values(
                        {
                            col: key,
                            "policy_name": policy_name,
                            "document": document,
                            "updated_date": when,
                        }
                    )
                )
        return InlinePolicy(kind, principal_name, policy_name, document, when)

    async def get_inline_policy(
        self, kind: PrincipalKind, principal_name: str, policy_name: str
    ) -> InlinePolicy | None:
        """The inline policy, or None; NotFoundError if the user/group is absent."""
        table, col = _INLINE[kind]
        async with self._read() as conn:
            key = await self._principal_key(conn, kind, principal_name)
            row = (
                await conn.execute(
                    select(table).where(table.c[col] == key, table.c.policy_name == policy_name)
                )
            ).first()
        if row is None:
            return None
        return InlinePolicy(kind, principal_name, row.policy_name, row.document, row.updated_date)

    async def list_inline_policies(
        self, kind: PrincipalKind, principal_name: str
    ) -> list[InlinePolicy]:
        """All inline policies of the principal, by name; NotFoundError if it is absent."""
        table, col = _INLINE[kind]
        async with self._read() as conn:
            key = await self._principal_key(conn, kind, principal_name)
            rows = (
                await conn.execute(
                    select(table).where(table.c[col] == key).order_by(table.c.policy_name)
                )
            ).all()
        return [
            InlinePolicy(kind, principal_name, r.policy_name, r.document, r.updated_date)
            for r in rows
        ]

    async def delete_inline_policy(
        self, kind: PrincipalKind, principal_name: str, policy_name: str
    ) -> bool:
        """Delete an inline policy; False if it did not exist (NotFoundError if no principal)."""
        table, col = _INLINE[kind]
        async with self._write() as conn:
            key = await self._principal_key(conn, kind, principal_name)
            res = await conn.execute(
                delete(table).where(table.c[col] == key, table.c.policy_name == policy_name)
            )
        return res.rowcount > 0

    # ------------------------------------------------------------------ managed policies

    async def create_policy(
        self,
        name: str,
        *,
        arn: str,
        document: str,
        path: str = "/",
        description: str = "",
        tags: Mapping[str, str] | None = None,
        policy_id: str | None = None,
        now: float | None = None,
    ) -> CustomerPolicy:
        """Create a customer managed policy with version ``v1`` as its default."""
        when = time.time() if now is None else now
        pid = policy_id or generate_policy_id()
        async with self._write() as conn:
            await conn.execute(
                s.iam_policies.insert().values(
                    policy_id=pid,
                    name=name,
                    path=path,
                    arn=arn,
                    description=description,
                    default_version_id="v1",
                    next_version=2,
                    created_date=when,
                    updated_date=when,
                    tags=dumps(dict(tags or {})),
                )
            )
            await conn.execute(
                s.iam_policy_versions.insert().values(
                    policy_id=pid, version_id="v1", document=document, created_date=when
                )
            )
        return CustomerPolicy(
            policy_id=pid,
            name=name,
            path=path,
            arn=arn,
            description=description,
            default_version_id="v1",
            document=document,
            attachment_count=0,
            created_date=when,
            updated_date=when,
            tags=dict(tags or {}),
        )

    @staticmethod
    async def _attachment_count(conn: AsyncConnection, arn: str) -> int:
        total = 0
        for table, _col in _ATTACH.values():
            n = (
                await conn.execute(
                    select(func.count()).select_from(table).where(table.c.policy_arn == arn)
                )
            ).scalar()
            total += int(n or 0)
        return total

    @staticmethod
    def _policies_with_document() -> AnySelect:
        """Customer managed policies joined with their default version's document."""
        p, v = s.iam_policies, s.iam_policy_versions
        return select(p, v.c.document).join(
            v, and_(v.c.policy_id == p.c.policy_id, v.c.version_id == p.c.default_version_id)
        )

    async def _policy_row(self, conn: AsyncConnection, arn: str) -> AnyRow | None:
        q = self._policies_with_document().where(s.iam_policies.c.arn == arn)
        return (await conn.execute(q)).first()

    async def _customer_policy(self, conn: AsyncConnection, row: AnyRow) -> CustomerPolicy:
        return CustomerPolicy(
            policy_id=row.policy_id,
            name=row.name,
            path=row.path,
            arn=row.arn,
            description=row.description,
            default_version_id=row.default_version_id,
            document=row.document,
            attachment_count=await self._attachment_count(conn, row.arn),
            created_date=row.created_date,
            updated_date=row.updated_date,
            tags=loads_dict(row.tags),
        )

    async def get_policy(self, arn: str) -> CustomerPolicy | None:
        """A customer managed policy by ARN (None for unknown and for AWS managed ARNs)."""
        async with self._read() as conn:
            row = await self._policy_row(conn, arn)
            return None if row is None else await self._customer_policy(conn, row)

    async def list_policies(self) -> list[CustomerPolicy]:
        """Every customer managed policy, by name."""
        q = self._policies_with_document().order_by(s.iam_policies.c.name)
        async with self._read() as conn:
            rows = (await conn.execute(q)).all()
            return [await self._customer_policy(conn, r) for r in rows]

    async def count_policy_attachments(self, arn: str) -> int:
        """How many users, groups and roles have *arn* attached (any managed policy)."""
        async with self._read() as conn:
            return await self._attachment_count(conn, arn)

    async def get_policy_version(self, arn: str, version_id: str) -> PolicyVersion | None:
        p, v = s.iam_policies, s.iam_policy_versions
        q = (
            select(v, p.c.default_version_id)
            .join(p, p.c.policy_id == v.c.policy_id)
            .where(p.c.arn == arn, v.c.version_id == version_id)
        )
        async with self._read() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            return None
        return PolicyVersion(
            arn,
            row.version_id,
            row.document,
            row.version_id == row.default_version_id,
            row.created_date,
        )

    async def list_policy_versions(self, arn: str) -> list[PolicyVersion]:
        """Versions newest first; NotFoundError if the policy does not exist."""
        p, v = s.iam_policies, s.iam_policy_versions
        async with self._read() as conn:
            pol = (await conn.execute(select(p).where(p.c.arn == arn))).first()
            if pol is None:
                raise NotFoundError(arn)
            rows = (
                await conn.execute(
                    select(v)
                    .where(v.c.policy_id == pol.policy_id)
                    .order_by(v.c.created_date.desc())
                )
            ).all()
        return [
            PolicyVersion(
                arn,
                r.version_id,
                r.document,
                r.version_id == pol.default_version_id,
                r.created_date,
            )
            for r in rows
        ]

    async def create_policy_version(
        self,
        arn: str,
        document: str,
        *,
        set_as_default: bool = False,
        max_versions: int | None = None,
        now: float | None = None,
    ) -> PolicyVersion:
        """Add a version (``vN``); NotFoundError if no such policy, InvalidOperationError
        if it already has *max_versions* versions."""
        p, v = s.iam_policies, s.iam_policy_versions
        when = time.time() if now is None else now
        async with self._write() as conn:
            pol = (await conn.execute(select(p).where(p.c.arn == arn).with_for_update())).first()
            if pol is None:
                raise NotFoundError(arn)
            count = (
                await conn.execute(
                    select(func.count()).select_from(v).where(v.c.policy_id == pol.policy_id)
                )
            ).scalar()
            if max_versions is not None and int(count or 0) >= max_versions:
                raise InvalidOperationError(f"a policy can have at most {max_versions} versions")
            version_id = f"v{pol.next_version}"
            await conn.execute(
                v.insert().values(
                    policy_id=pol.policy_id,
                    version_id=version_id,
                    document=document,
                    created_date=when,
                )
            )
            values: dict[str, Any] = {"next_version": pol.next_version + 1, "updated_date": when}
            if set_as_default:
                values["default_version_id"] = version_id
            await conn.execute(update(p).where(p.c.policy_id == pol.policy_id).values(values))
        return PolicyVersion(arn, version_id, document, set_as_default, when)

    async def set_default_policy_version(
        self, arn: str, version_id: str, *, now: float | None = None
    ) -> None:
        """Make *version_id* the default; NotFoundError if the policy or version is absent."""
        p, v = s.iam_policies, s.iam_policy_versions
        async with self._write() as conn:
            pol = (await conn.execute(select(p).where(p.c.arn == arn))).first()
            if pol is None:
                raise NotFoundError(arn)
            exists = (
                await conn.execute(
                    select(v.c.version_id).where(
                        v.c.policy_id == pol.policy_id, v.c.version_id == version_id
                    )
                )
            ).first()
            if exists is None:
                raise NotFoundError(f"{arn} {version_id}")
            await conn.execute(
                update(p)
                .where(p.c.policy_id == pol.policy_id)
                .values(
                    default_version_id=version_id, updated_date=time.time() if now is None else now
                )
            )

    async def delete_policy_version(self, arn: str, version_id: str) -> bool:
        """Delete a non-default version; InvalidOperationError for the default one."""
        p, v = s.iam_policies, s.iam_policy_versions
        async with self._write() as conn:
            pol = (await conn.execute(select(p).where(p.c.arn == arn))).first()
            if pol is None:
                raise NotFoundError(arn)
            if pol.default_version_id == version_id:
                raise InvalidOperationError("cannot delete the default version of a policy")
            res = await conn.execute(
                delete(v).where(v.c.policy_id == pol.policy_id, v.c.version_id == version_id)
            )
        return res.rowcount > 0

    async def delete_policy(self, arn: str) -> bool:
        """Delete a customer managed policy and its versions (attachments are the caller's
        business: IAM refuses while any remain)."""
        p, v = s.iam_policies, s.iam_policy_versions
        async with self._write() as conn:
            pid = (await conn.execute(select(p.c.policy_id).where(p.c.arn == arn))).scalar()
            if pid is None:
                return False
            await conn.execute(delete(v).where(v.c.policy_id == pid))
            res = await conn.execute(delete(p).where(p.c.policy_id == pid))
        return res.rowcount > 0

    # ------------------------------------------------------------------ attachments

    async def attach_policy(
        self,
        kind: PrincipalKind,
        principal_name: str,
        policy_arn: str,
        *,
        max_attached: int | None = None,
        now: float | None = None,
    ) -> bool:
        """Attach a managed policy by ARN; False if already attached.

        Customer managed ARNs must exist (NotFoundError); AWS managed ARNs are not checked
        here. InvalidOperationError if the principal already has *max_attached* policies.
        """
        table, col = _ATTACH[kind]
        async with self._write() as conn:
            key = await self._principal_key(conn, kind, principal_name)
            if not policy_arn.startswith(AWS_POLICY_ARN_PREFIX):
                p = s.iam_policies
                if (
                    await conn.execute(select(p.c.policy_id).where(p.c.arn == policy_arn))
                ).first() is None:
                    raise NotFoundError(policy_arn)
            mine = table.c[col] == key
            if (
                await conn.execute(
                    select(table.c.policy_arn).where(mine, table.c.policy_arn == policy_arn)
                )
            ).first():
                return False
            if max_attached is not None:
                count = (
                    await conn.execute(select(func.count()).select_from(table).where(mine))
                ).scalar()
                if int(count or 0) >= max_attached:
                    raise InvalidOperationError(f"at most {max_attached} attached policies")
            await conn.execute(
                table.insert().values(
                    {
                        col: key,
                        "policy_arn": policy_arn,
                        "attached_date": time.time() if now is None else now,
                    }
                )
            )
        return True

    async def detach_policy(
        self, kind: PrincipalKind, principal_name: str, policy_arn: str
    ) -> bool:
        """Detach; False if it was not attached (NotFoundError if no such principal)."""
        table, col = _ATTACH[kind]
        async with self._write() as conn:
            key = await self._principal_key(conn, kind, principal_name)
            res = await conn.execute(
                delete(table).where(table.c[col] == key, table.c.policy_arn == policy_arn)
            )
        return res.rowcount > 0

    async def list_attached_policies(self, kind: PrincipalKind, principal_name: str) -> list[str]:
        """ARNs attached to the principal, in attachment order (NotFoundError if absent)."""
        table, col = _ATTACH[kind]
        async with self._read() as conn:
            key = await self._principal_key(conn, kind, principal_name)
            rows = (
                (
                    await conn.execute(
                        select(table.c.policy_arn)
                        .where(table.c[col] == key)
                        .order_by(table.c.attached_date, table.c.policy_arn)
                    )
                )
                .scalars()
                .all()
            )
        return [str(r) for r in rows]

    # ------------------------------------------------------------------ for the authorizer

    async def _sources(
        self, conn: AsyncConnection, kind: PrincipalKind, key: str, via: str
    ) -> list[PolicySource]:
        itable, icol = _INLINE[kind]
        atable, acol = _ATTACH[kind]
        out: list[PolicySource] = []
        rows = (
            await conn.execute(
                select(itable.c.policy_name, itable.c.document)
                .where(itable.c[icol] == key)
                .order_by(itable.c.policy_name)
            )
        ).all()
        out.extend(PolicySource("inline", r.policy_name, r.document, None, via) for r in rows)
        p, v = s.iam_policies, s.iam_policy_versions
        q = (
            select(atable.c.policy_arn, p.c.name, v.c.document)
            .select_from(
                atable.outerjoin(p, p.c.arn == atable.c.policy_arn).outerjoin(
                    v,
                    and_(v.c.policy_id == p.c.policy_id, v.c.version_id == p.c.default_version_id),
                )
            )
            .where(atable.c[acol] == key)
            .order_by(atable.c.attached_date, atable.c.policy_arn)
        )
        for r in (await conn.execute(q)).all():
            arn = str(r.policy_arn)
            if arn.startswith(AWS_POLICY_ARN_PREFIX):
                out.append(PolicySource("managed", _policy_name_from_arn(arn), None, arn, via))
            elif r.document is not None:
                out.append(PolicySource("managed", r.name, r.document, arn, via))
            # A customer ARN whose policy is gone grants nothing.
        return out

    async def load_user_authorization(self, user_name: str) -> UserAuthorization | None:
        """The user, their groups and every policy that applies (user's first, then each
        group's), read in one transaction; None if the user does not exist."""
        async with self._read() as conn:
            row = (await conn.execute(select(s.users).where(s.users.c.name == user_name))).first()
            if row is None:
                return None
            user = _user(row)
            sources = await self._sources(conn, "user", user.user_id, f"user/{user.name}")
            groups = await self._groups_of(conn, user.user_id)
            for group in groups:
                sources.extend(
                    await self._sources(conn, "group", group.group_id, f"group/{group.name}")
                )
        return UserAuthorization(user, groups, sources)

    async def load_role_authorization(self, role_name: str) -> RoleAuthorization:
        """Inline and attached policies of a role (an activation's IamRole)."""
        async with self._read() as conn:
            sources = await self._sources(conn, "role", role_name, f"role/{role_name}")
        return RoleAuthorization(role_name, sources)

    # ------------------------------------------------------------------ MFA devices

    async def create_mfa_device(
        self,
        serial_number: str,
        *,
        name: str,
        secret: str,
        path: str = "/",
        tags: Mapping[str, str] | None = None,
        now: float | None = None,
    ) -> MfaDevice:
        """Create an unassigned virtual MFA device holding *secret* (base32), encrypted."""
        when = time.time() if now is None else now
        async with self._write() as conn:
            await conn.execute(
                s.iam_mfa_devices.insert().values(
                    serial_number=serial_number,
                    name=name,
                    path=path,
                    secret_enc=self._box.encrypt(secret, context=_mfa_context(serial_number)),
                    user_id=None,
                    enable_date=None,
                    last_used_step=None,
                    created_date=when,
                    tags=dumps(dict(tags or {})),
                )
            )
        return MfaDevice(serial_number, name, path, None, None, None, None, when, dict(tags or {}))

    def _mfa_query(self) -> Any:
        d, u = s.iam_mfa_devices, s.users
        return select(d, u.c.name.label("user_name")).select_from(
            d.outerjoin(u, u.c.user_id == d.c.user_id)
        )

    async def get_mfa_device(self, serial_number: str) -> MfaDevice | None:
        d = s.iam_mfa_devices
        async with self._read() as conn:
            row = (
                await conn.execute(self._mfa_query().where(d.c.serial_number == serial_number))
            ).first()
        return _mfa(row, row.user_name) if row else None

    async def get_mfa_secret(self, serial_number: str) -> str | None:
        """The device's decrypted base32 seed (for TOTP checks), or None."""
        d = s.iam_mfa_devices
        async with self._read() as conn:
            enc = (
                await conn.execute(select(d.c.secret_enc).where(d.c.serial_number == serial_number))
            ).scalar()
        if enc is None:
            return None
        return self._box.decrypt(str(enc), context=_mfa_context(serial_number))

    async def list_mfa_devices(
        self, *, user_name: str | None = None, assigned: bool | None = None
    ) -> list[MfaDevice]:
        """Devices (of one user when *user_name* is given; NotFoundError if absent)."""
        d = s.iam_mfa_devices
        q = self._mfa_query().order_by(d.c.serial_number)
        async with self._read() as conn:
            if user_name is not None:
                uid = await self._principal_key(conn, "user", user_name)
                q = q.where(d.c.user_id == uid)
            elif assigned is not None:
                q = q.where(d.c.user_id.is_not(None) if assigned else d.c.user_id.is_(None))
            rows = (await conn.execute(q)).all()
        return [_mfa(r, r.user_name) for r in rows]

    async def enable_mfa_device(
        self, serial_number: str, user_name: str, *, last_used_step: int, now: float | None = None
    ) -> None:
        """Assign an unassigned device to a user, remembering the last code's time step.

        NotFoundError if the user or device is absent; AlreadyExistsError if the device is
        already enabled (for anyone).
        """
        d = s.iam_mfa_devices
        async with self._write() as conn:
            uid = await self._principal_key(conn, "user", user_name)
            found = (
                await conn.execute(select(d.c.user_id).where(d.c.serial_number == serial_number))
            ).first()
            if found is None:
                raise NotFoundError(serial_number)
            res = await conn.execute(
                update(d)
                .where(d.c.serial_number == serial_number, d.c.user_id.is_(None))
                .values(
                    user_id=uid,
                    enable_date=time.time() if now is None else now,
                    last_used_step=last_used_step,
                )
            )
            if res.rowcount == 0:
                raise AlreadyExistsError(serial_number)

    async def deactivate_mfa_device(self, serial_number: str, user_name: str) -> bool:
        """Unassign the device from the user; False if it was not enabled for them."""
        d = s.iam_mfa_devices
        async with self._write() as conn:
            uid = await self._principal_key(conn, "user", user_name)
            res = await conn.execute(
                update(d)
                .where(d.c.serial_number == serial_number, d.c.user_id == uid)
                .values(user_id=None, enable_date=None)
            )
        return res.rowcount > 0

    async def delete_mfa_device(self, serial_number: str) -> bool:
        d = s.iam_mfa_devices
        async with self._write() as conn:
            res = await conn.execute(delete(d).where(d.c.serial_number == serial_number))
        return res.rowcount > 0

    async def consume_mfa_step(self, serial_number: str, step: int) -> bool:
        """Record that the code of TOTP time *step* was used; False if that step (or a
        later one) was already used, which is how a replayed code is refused."""
        d = s.iam_mfa_devices
        async with self._write() as conn:
            res = await conn.execute(
                update(d)
                .where(
                    d.c.serial_number == serial_number,
                    or_(d.c.last_used_step.is_(None), d.c.last_used_step < step),
                )
                .values(last_used_step=step)
            )
        return res.rowcount > 0

    # ------------------------------------------------------------------ MFA-bearing credentials

    async def issue_session_credential(
        self,
        user_name: str,
        *,
        ttl: float,
        mfa_serial: str | None = None,
        mfa_authenticated_at: float | None = None,
        now: float | None = None,
    ) -> IssuedCredential:
        """Issue temporary credentials for a user (GetSessionToken), recording MFA presence
        and time in the same transaction. The record carries the raw session token."""
        when = time.time() if now is None else now
        async with self._write() as conn:
            cred = await insert_credential(
                conn,
                self._box,
                principal_type="user",
                principal_id=user_name,
                expiration=when + ttl,
                created=when,
            )
            if mfa_serial is not None:
                await conn.execute(
                    s.iam_credential_mfa.insert().values(
                        access_key_id=cred.access_key_id,
                        mfa_serial=mfa_serial,
                        authenticated_at=when
                        if mfa_authenticated_at is None
                        else mfa_authenticated_at,
                    )
                )
        return cred

    async def get_credential_mfa(self, access_key_id: str) -> CredentialMfa | None:
        """The MFA facts of a temporary credential, or None (no MFA, or unknown)."""
        t = s.iam_credential_mfa
        async with self._read() as conn:
            row = (await conn.execute(select(t).where(t.c.access_key_id == access_key_id))).first()
        if row is None:
            return None
        return CredentialMfa(row.access_key_id, row.mfa_serial, row.authenticated_at)
