"""Activations and managed instances (registered nodes) with their tags."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from portless.store import schema as s
from portless.store._base import (
    StoreBase,
    clamp_limit,
    decode_token,
    dumps,
    record_values,
    row_mapper,
)
from portless.store.records import (
    Activation,
    ManagedInstance,
    NotFoundError,
    Page,
    RegistrationOutcome,
    RegistrationResult,
    generate_instance_id,
    sha256_hex,
)

_activation = row_mapper(Activation, json_dicts=("tags",))
_instance = row_mapper(ManagedInstance)
_INSTANCE_FIELDS = tuple(ManagedInstance.__dataclass_fields__)


class NodesMixin(StoreBase):
    """Activations (CreateActivation, registration) and managed instances."""

    # ------------------------------------------------------------------ activations

    async def create_activation(
        self,
        *,
        iam_role: str,
        expiration_date: float,
        registration_limit: int = 1,
        description: str = "",
        default_instance_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        activation_id: str | None = None,
        activation_code: str | None = None,
        now: float | None = None,
    ) -> tuple[Activation, str]:
        """Create an activation; returns it with the activation code (shown once,
        stored only as a SHA-256 hash)."""
        aid = activation_id or str(uuid.uuid4())
        code = activation_code or secrets.token_urlsafe(24)
        act = Activation(
            activation_id=aid,
            iam_role=iam_role,
            description=description,
            default_instance_name=default_instance_name,
            registration_limit=registration_limit,
            registrations_count=0,
            expiration_date=expiration_date,
            created_date=time.time() if now is None else now,
            tags=dict(tags or {}),
        )
        async with self._write() as conn:
            await conn.execute(
                insert(s.activations).values(
                    **record_values(act, code_hash=sha256_hex(code), tags=dumps(act.tags))
                )
            )
        return act, code

    async def get_activation(self, activation_id: str) -> Activation | None:
        return await self._get_by_key(s.activations.c.activation_id, activation_id, _activation)

    async def list_activations(
        self,
        *,
        activation_ids: Sequence[str] | None = None,
        iam_roles: Sequence[str] | None = None,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> Page[Activation]:
        """Activations, oldest first (DescribeActivations)."""
        limit = clamp_limit(max_results)
        t = s.activations
        q = select(t).order_by(t.c.created_date, t.c.activation_id)
        if activation_ids is not None:
            q = q.where(t.c.activation_id.in_(list(activation_ids)))
        if iam_roles is not None:
            q = q.where(t.c.iam_role.in_(list(iam_roles)))
        if next_token:
            created, aid = decode_token(next_token, "act", (float, str))
            q = q.where(
                or_(
                    t.c.created_date > created,
                    and_(t.c.created_date == created, t.c.activation_id > aid),
                )
            )
        return await self._page(
            q, limit, _activation, "act", lambda a: [a.created_date, a.activation_id]
        )

    async def delete_activation(self, activation_id: str) -> bool:
        async with self._write() as conn:
            res = await conn.execute(
                delete(s.activations).where(s.activations.c.activation_id == activation_id)
            )
        return res.rowcount > 0

    @staticmethod
    async def _consume_registration(
        conn: AsyncConnection, activation_id: str, code: str | None, now: float
    ) -> RegistrationOutcome:
        t = s.activations
        if code is not None:
            row = (
                await conn.execute(select(t.c.code_hash).where(t.c.activation_id == activation_id))
            ).first()
            if row is None:
                return RegistrationOutcome.NOT_FOUND
            if not secrets.compare_digest(row.code_hash, sha256_hex(code)):
                return RegistrationOutcome.BAD_CODE
        # One conditional UPDATE: atomic under concurrency on both backends.
        res = await conn.execute(
            update(t)
            .where(
                t.c.activation_id == activation_id,
                t.c.registrations_count < t.c.registration_limit,
                t.c.expiration_date > now,
            )
            .values(registrations_count=t.c.registrations_count + 1)
        )
        if res.rowcount == 1:
            return RegistrationOutcome.OK
        row = (
            await conn.execute(
                select(t.c.expiration_date, t.c.registrations_count, t.c.registration_limit).where(
                    t.c.activation_id == activation_id
                )
            )
        ).first()
        if row is None:
            return RegistrationOutcome.NOT_FOUND
        if row.expiration_date <= now:
            return RegistrationOutcome.EXPIRED
        return RegistrationOutcome.LIMIT_REACHED

    async def increment_activation_registrations(
        self, activation_id: str, *, code: str | None = None, now: float | None = None
    ) -> RegistrationOutcome:
        """Count one registration if the activation exists, the code (if given)
        matches, it is unexpired and under its limit; otherwise say why not."""
        when = time.time() if now is None else now
        async with self._write() as conn:
            return await self._consume_registration(conn, activation_id, code, when)

    async def register_instance(
        self,
        *,
        activation_id: str,
        activation_code: str,
        public_key: str,
        public_key_type: str,
        fingerprint: str,
        region: str | None,
        instance_id: str | None = None,
        now: float | None = None,
    ) -> RegistrationResult:
        """RegisterManagedInstance in one transaction: check the code, consume one
        registration, create the instance with the activation's role, name and tags."""
        when = time.time() if now is None else now
        async with self._write() as conn:
            outcome = await self._consume_registration(conn, activation_id, activation_code, when)
            if outcome is not RegistrationOutcome.OK:
                return RegistrationResult(outcome)
            act_row = (
                await conn.execute(
                    select(s.activations).where(s.activations.c.activation_id == activation_id)
                )
            ).one()
            act = _activation(act_row)
            inst = await self._insert_instance(
                conn,
                instance_id=instance_id or generate_instance_id(),
                activation_id=activation_id,
                iam_role=act.iam_role,
                name=act.default_instance_name,
                public_key=public_key,
                public_key_type=public_key_type,
                fingerprint=fingerprint,
                region=region,
                tags=act.tags,
                now=when,
            )
        return RegistrationResult(RegistrationOutcome.OK, inst)

    # ------------------------------------------------------------------ instances

    @staticmethod
    async def _insert_instance(
        conn: AsyncConnection,
        *,
        instance_id: str,
        activation_id: str | None,
        iam_role: str,
        name: str | None,
        public_key: str | None,
        public_key_type: str | None,
        fingerprint: str | None,
        region: str | None,
        tags: Mapping[str, str],
        now: float,
        resource_type: str = "ManagedInstance",
    ) -> ManagedInstance:
        values: dict[str, Any] = {f: None for f in _INSTANCE_FIELDS}
        values.update(
            instance_id=instance_id,
            activation_id=activation_id,
            iam_role=iam_role,
            name=name,
            public_key=public_key,
            public_key_type=public_key_type,
            public_key_date=now if public_key else None,
            fingerprint=fingerprint,
            registration_date=now,
            region=region,
            resource_type=resource_type,
        )
        await conn.execute(insert(s.instances).values(**values))
        if tags:
            await conn.execute(
                insert(s.instance_tags),
                [{"instance_id": instance_id, "key": k, "value": v} for k, v in tags.items()],
            )
        return ManagedInstance(**values)

    async def create_instance(
        self,
        *,
        instance_id: str | None = None,
        activation_id: str | None = None,
        iam_role: str = "",
        name: str | None = None,
        public_key: str | None = None,
        public_key_type: str | None = None,
        fingerprint: str | None = None,
        region: str | None = None,
        tags: Mapping[str, str] | None = None,
        now: float | None = None,
    ) -> ManagedInstance:
        """Create an instance record directly (no activation bookkeeping)."""
        when = time.time() if now is None else now
        async with self._write() as conn:
            return await self._insert_instance(
                conn,
                instance_id=instance_id or generate_instance_id(),
                activation_id=activation_id,
                iam_role=iam_role,
                name=name,
                public_key=public_key,
                public_key_type=public_key_type,
                fingerprint=fingerprint,
                region=region,
                tags=tags or {},
                now=when,
            )

    async def get_instance(self, instance_id: str) -> ManagedInstance | None:
        return await self._get_by_key(s.instances.c.instance_id, instance_id, _instance)

    async def update_instance_info(
        self,
        instance_id: str,
        *,
        agent_name: str | None = None,
        agent_version: str | None = None,
        platform_type: str | None = None,
        platform_name: str | None = None,
        platform_version: str | None = None,
        ip_address: str | None = None,
        computer_name: str | None = None,
        ssm_connection_channel: str | None = None,
        now: float | None = None,
    ) -> bool:
        """Record an UpdateInstanceInformation call: set the fields that were sent
        (None = not sent, keep the old value) and the last ping time."""
        values: dict[str, Any] = {"last_ping_date": time.time() if now is None else now}
        for key, val in (
            ("agent_name", agent_name),
            ("agent_version", agent_version),
            ("platform_type", platform_type),
            ("platform_name", platform_name),
            ("platform_version", platform_version),
            ("ip_address", ip_address),
            ("computer_name", computer_name),
            ("ssm_connection_channel", ssm_connection_channel),
        ):
            if val is not None:
                values[key] = val
        return await self._update_instance(instance_id, values)

    async def touch_instance_ping(self, instance_id: str, *, now: float | None = None) -> bool:
        """Bump the last ping time only (e.g. on control-channel activity)."""
        return await self._update_instance(
            instance_id, {"last_ping_date": time.time() if now is None else now}
        )

    async def set_instance_public_key(
        self,
        instance_id: str,
        public_key: str,
        public_key_type: str,
        *,
        now: float | None = None,
    ) -> bool:
        """Replace the node's public key (UpdateManagedInstancePublicKey)."""
        return await self._update_instance(
            instance_id,
            {
                "public_key": public_key,
                "public_key_type": public_key_type,
                "public_key_date": time.time() if now is None else now,
            },
        )

    async def set_instance_fingerprint(self, instance_id: str, fingerprint: str) -> bool:
        return await self._update_instance(instance_id, {"fingerprint": fingerprint})

    async def set_instance_name(self, instance_id: str, name: str | None) -> bool:
        return await self._update_instance(instance_id, {"name": name})

    async def _update_instance(self, instance_id: str, values: dict[str, Any]) -> bool:
        return await self._update_by_key(s.instances.c.instance_id, instance_id, values)

    async def list_instances(
        self,
        *,
        instance_ids: Sequence[str] | None = None,
        platform_types: Sequence[str] | None = None,
        activation_ids: Sequence[str] | None = None,
        agent_versions: Sequence[str] | None = None,
        iam_roles: Sequence[str] | None = None,
        resource_types: Sequence[str] | None = None,
        ping_statuses: Sequence[str] | None = None,
        online_since: float | None = None,
        tag_filters: Mapping[str, Sequence[str]] | None = None,
        tag_keys: Sequence[str] | None = None,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> Page[ManagedInstance]:
        """Instances ordered by id, for DescribeInstanceInformation.

        Each given filter must match (AND); values within one filter are
        alternatives (OR). ``ping_statuses`` uses :func:`records.ping_status`
        with ``online_since`` (required with it). ``tag_filters`` maps a tag key
        to accepted values (``tag:Key``); ``tag_keys`` matches instances having
        any of those keys (``tag-key``).
        """
        limit = clamp_limit(max_results)
        t = s.instances
        conds: list[ColumnElement[bool]] = []
        for col, vals in (
            (t.c.instance_id, instance_ids),
            (t.c.platform_type, platform_types),
            (t.c.activation_id, activation_ids),
            (t.c.agent_version, agent_versions),
            (t.c.iam_role, iam_roles),
            (t.c.resource_type, resource_types),
        ):
            if vals is not None:
                conds.append(col.in_(list(vals)))
        if ping_statuses is not None:
            if online_since is None:
                raise ValueError("ping_statuses filter needs online_since")
            wanted = set(ping_statuses)
            online = and_(t.c.last_ping_date.is_not(None), t.c.last_ping_date >= online_since)
            alts: list[ColumnElement[bool]] = []
            if "Online" in wanted:
                alts.append(online)
            if "ConnectionLost" in wanted:
                alts.append(~online)
            conds.append(or_(*alts) if alts else t.c.instance_id.is_(None))
        tags = s.instance_tags
        for key, vals in (tag_filters or {}).items():
            conds.append(
                exists().where(
                    tags.c.instance_id == t.c.instance_id,
                    tags.c.key == key,
                    tags.c.value.in_(list(vals)),
                )
            )
        if tag_keys is not None:
            conds.append(
                exists().where(
                    tags.c.instance_id == t.c.instance_id, tags.c.key.in_(list(tag_keys))
                )
            )
        if next_token:
            (last_id,) = decode_token(next_token, "inst", (str,))
            conds.append(t.c.instance_id > last_id)
        q = select(t).where(*conds).order_by(t.c.instance_id)
        return await self._page(q, limit, _instance, "inst", lambda i: [i.instance_id])

    async def count_instances(self) -> int:
        async with self._read() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(s.instances))).scalar_one()
            )

    async def delete_instance(self, instance_id: str) -> bool:
        """Deregister: remove the instance, its tags, its credentials and channel tokens."""
        async with self._write() as conn:
            res = await conn.execute(
                delete(s.instances).where(s.instances.c.instance_id == instance_id)
            )
            await conn.execute(
                delete(s.instance_tags).where(s.instance_tags.c.instance_id == instance_id)
            )
            await conn.execute(
                delete(s.issued_credentials).where(
                    s.issued_credentials.c.principal_type == "instance",
                    s.issued_credentials.c.principal_id == instance_id,
                )
            )
            await conn.execute(
                delete(s.channel_tokens).where(s.channel_tokens.c.instance_id == instance_id)
            )
        return res.rowcount > 0

    # ------------------------------------------------------------------ instance tags

    async def add_instance_tags(self, instance_id: str, tags: Mapping[str, str]) -> None:
        """Add or overwrite tags; raises :class:`NotFoundError` for an unknown instance."""
        t = s.instance_tags
        async with self._write() as conn:
            found = (
                await conn.execute(
                    select(s.instances.c.instance_id).where(
                        s.instances.c.instance_id == instance_id
                    )
                )
            ).first()
            if found is None:
                raise NotFoundError(instance_id)
            if not tags:
                return
            await conn.execute(
                delete(t).where(t.c.instance_id == instance_id, t.c.key.in_(list(tags)))
            )
            await conn.execute(
                insert(t),
                [{"instance_id": instance_id, "key": k, "value": v} for k, v in tags.items()],
            )

    async def list_instance_tags(self, instance_id: str) -> dict[str, str]:
        t = s.instance_tags
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    select(t.c.key, t.c.value)
                    .where(t.c.instance_id == instance_id)
                    .order_by(t.c.key)
                )
            ).all()
        return {r.key: r.value for r in rows}

    async def remove_instance_tags(self, instance_id: str, keys: Sequence[str]) -> int:
        t = s.instance_tags
        async with self._write() as conn:
            res = await conn.execute(
                delete(t).where(t.c.instance_id == instance_id, t.c.key.in_(list(keys)))
            )
        return res.rowcount
