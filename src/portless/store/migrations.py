"""A small, ordered, idempotent migration runner.

``schema_version`` records every applied step. All pending steps run in one
transaction, under a lock (PostgreSQL advisory lock; SQLite ``BEGIN IMMEDIATE``)
so replicas starting together do not race. A database newer than this code is
refused rather than silently used.

Adding a step: append a :class:`Migration` with the next version number and
change :mod:`portless.store.schema` to match. Because step 1 creates tables from
the current definitions, a later step that adds a column to an existing table
must tolerate the column already being there (use :func:`add_column_if_missing`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Column, Connection, insert, inspect, select
from sqlalchemy.schema import CreateColumn

from portless.store import schema as s
from portless.store.records import GENESIS_HASH, StoreError

# Arbitrary constant naming the advisory lock that guards migrations.
_PG_MIGRATION_LOCK = 0x706F72746C657373  # "portless"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def add_column_if_missing(conn: Connection, table: str, column: Column[object]) -> None:
    """``ALTER TABLE … ADD COLUMN`` unless the column exists (for future steps)."""
    existing = {c["name"] for c in inspect(conn).get_columns(table)}
    if column.name in existing:
        return
    ddl = CreateColumn(column).compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {ddl}")


def _v1_initial(conn: Connection) -> None:
    s.metadata.create_all(conn, tables=s.V1_TABLES, checkfirst=True)
    if conn.execute(select(s.audit_head.c.id)).first() is None:
        conn.execute(insert(s.audit_head).values(id=1, last_id=0, last_hash=GENESIS_HASH))


def _v2_iam(conn: Connection) -> None:
    s.metadata.create_all(conn, tables=s.V2_IAM_TABLES, checkfirst=True)


MIGRATIONS: list[Migration] = [
    Migration(1, "initial schema", _v1_initial),
    Migration(2, "IAM groups, policies, MFA devices", _v2_iam),
]


def migrate(conn: Connection) -> int:
    """Apply pending migrations inside the caller's transaction; return the schema version."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
    s.schema_version.create(conn, checkfirst=True)
    applied = set(conn.execute(select(s.schema_version.c.version)).scalars())
    known = {m.version for m in MIGRATIONS}
    if applied - known:
        raise StoreError(
            f"database schema version {max(applied)} is newer than this portless "
            f"(knows up to {max(known)}); refusing to use it"
        )
    for m in sorted(MIGRATIONS, key=lambda m: m.version):
        if m.version in applied:
            continue
        m.apply(conn)
        conn.execute(
            insert(s.schema_version).values(
                version=m.version, description=m.description, applied_at=time.time()
            )
        )
    return max(known)
