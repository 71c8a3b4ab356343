"""The :class:`Store`: one object giving the server all its persistent state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from portless.store._base import make_engine
from portless.store.audit import AuditMixin
from portless.store.documents import DocumentsMixin
from portless.store.iam import IamMixin
from portless.store.identity import IdentityMixin
from portless.store.migrations import migrate
from portless.store.nodes import NodesMixin
from portless.store.secretbox import SecretBox
from portless.store.sessions import SessionsMixin

DEFAULT_URL = "sqlite+aiosqlite:///portless.db"


class Store(NodesMixin, IdentityMixin, IamMixin, SessionsMixin, DocumentsMixin, AuditMixin):
    """Async persistence over SQLite (embedded) or PostgreSQL (replicas), chosen by URL.

    Create with :meth:`open`, which also brings the schema up to date. The
    relay's hot path never calls the store; these calls happen at session
    start/end and on API requests.
    """

    schema_version: int

    def __init__(self, engine: AsyncEngine, secret_box: SecretBox | None = None) -> None:
        """Wrap an engine made by :func:`make_engine`; prefer :meth:`open`, which migrates."""
        self._init_base(engine, secret_box)
        self.schema_version = 0

    @classmethod
    async def open(
        cls,
        url: str = DEFAULT_URL,
        *,
        secret_box: SecretBox | None = None,
        engine_options: Mapping[str, Any] | None = None,
    ) -> Store:
        """Connect to *url* (``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://…``)
        and run pending migrations. *secret_box* is needed by the credential and
        access-key operations; *engine_options* go to ``create_async_engine``."""
        engine = make_engine(url, engine_options)
        store = cls(engine, secret_box)
        try:
            async with store._write() as conn:
                store.schema_version = await conn.run_sync(migrate)
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        """Release all connections."""
        await self._engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
