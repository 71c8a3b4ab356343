"""Fixtures running every store test against SQLite (tmp file) and PostgreSQL.

PostgreSQL: one fresh database per test session (dropped afterwards), one fresh
schema per test (selected through ``search_path``) so tests stay isolated and
each one exercises the migration runner from scratch.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from portless.store import SecretBox, Store

PG_HOST = os.environ.get("PORTLESS_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PORTLESS_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("PORTLESS_TEST_PG_USER", "postgres")


async def _pg_admin(sql: str, database: str = "postgres") -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database=database, timeout=5
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """Name of a fresh PostgreSQL database, or None if the server is unreachable."""
    name = f"portless_test_{secrets.token_hex(6)}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, ImportError) as exc:  # pragma: no cover - environment dependent
        print(f"PostgreSQL unavailable: {exc}")
        yield None
        return
    try:
        yield name
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Backend:
    """How to open a store on one backend; ``open()`` may be called repeatedly."""

    name: str
    url: str
    secret_box: SecretBox
    engine_options: dict[str, Any] = field(default_factory=dict)
    key_path: Path | None = None

    async def open(self, secret_box: SecretBox | None = None) -> Store:
        return await Store.open(
            self.url,
            secret_box=secret_box or self.secret_box,
            engine_options=self.engine_options,
        )


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, pg_database: str | None
) -> AsyncIterator[Backend]:
    key_path = tmp_path / "secret.key"
    box = SecretBox.from_file(key_path)
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'store.db'}", box, {}, key_path)
        return
    # PostgreSQL is part of this project's machine: a missing server is a failure.
    assert pg_database is not None, f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT}"
    schema = f"t_{secrets.token_hex(6)}"
    await _pg_admin(f'CREATE SCHEMA "{schema}"', pg_database)
    yield Backend(
        "postgresql",
        f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}",
        box,
        # synchronous_commit=off only makes the test run faster; the schema goes
        # away with the database at the end of the session.
        {"connect_args": {"server_settings": {"search_path": schema, "synchronous_commit": "off"}}},
        key_path,
    )


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    st = await backend.open()
    try:
        yield st
    finally:
        await st.close()
