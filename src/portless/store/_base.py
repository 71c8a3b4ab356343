"""Engine set-up and the transaction helpers every entity mixin builds on."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from sqlalchemy import Column, Connection, Row, Select, event, select, update
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from portless.store.records import AlreadyExistsError, InvalidNextTokenError, Page, StoreError
from portless.store.secretbox import SecretBox

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

SQLITE_BUSY_TIMEOUT_MS = 10_000

AnyRow: TypeAlias = Row[*tuple[Any, ...]]
AnySelect: TypeAlias = Select[*tuple[Any, ...]]
T = TypeVar("T")
R = TypeVar("R", bound="DataclassInstance")
_WRITE_OPTION = "portless_write"


def make_engine(url: str, engine_options: Mapping[str, Any] | None = None) -> AsyncEngine:
    """Create the async engine for *url*; SQLite gets WAL, foreign keys, busy timeout
    and explicit BEGIN handling (so write transactions can ``BEGIN IMMEDIATE``)."""
    engine = create_async_engine(url, **dict(engine_options or {}))
    if engine.dialect.name == "sqlite":
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_conn: DBAPIConnection, _rec: ConnectionPoolEntry) -> None:
            # Take over transaction control from the sqlite3 module.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(sync_engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get(_WRITE_OPTION, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class StoreBase:
    """State and helpers shared by the entity mixins that make up :class:`Store`."""

    _engine: AsyncEngine
    _secret_box: SecretBox | None
    _write_lock: asyncio.Lock | None

    def _init_base(self, engine: AsyncEngine, secret_box: SecretBox | None) -> None:
        self._engine = engine
        self._secret_box = secret_box
        # SQLite allows one writer; queueing writers in-process avoids spinning on
        # the busy timeout. PostgreSQL relies on row locks and conditional updates.
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    @property
    def _box(self) -> SecretBox:
        if self._secret_box is None:
            raise StoreError("this operation needs a SecretBox; pass secret_box= to Store.open")
        return self._secret_box

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside a (read) transaction; rolled back at the end."""
        async with self._engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on success; integrity errors become
        :class:`AlreadyExistsError`."""
        lock = self._write_lock if self._write_lock is not None else contextlib.nullcontext()
        async with lock, self._engine.connect() as conn:
            await conn.execution_options(**{_WRITE_OPTION: True})
            try:
                async with conn.begin():
                    yield conn
            except IntegrityError as exc:
                raise AlreadyExistsError(str(exc.orig)) from exc

    async def _get_by_key(
        self, column: Column[Any], key: object, mapper: Callable[[AnyRow], T]
    ) -> T | None:
        """The row of *column*'s table whose *column* equals *key*, mapped; None if absent."""
        async with self._read() as conn:
            row = (await conn.execute(select(column.table).where(column == key))).first()
        return mapper(row) if row else None

    async def _update_by_key(
        self, column: Column[Any], key: object, values: Mapping[str, Any]
    ) -> bool:
        """Set *values* on the row of *column*'s table whose *column* equals *key*;
        whether a row matched."""
        async with self._write() as conn:
            res = await conn.execute(update(column.table).where(column == key).values(**values))
        return res.rowcount > 0

    async def _page(
        self,
        query: AnySelect,
        limit: int,
        mapper: Callable[[AnyRow], T],
        kind: str,
        key: Callable[[T], list[Any]],
    ) -> Page[T]:
        """One page of a keyset-paginated list: run *query* (already ordered and filtered
        past the previous token) for up to *limit* items, with a token of kind *kind*
        holding *key* of the last item when more rows follow."""
        async with self._read() as conn:
            rows = (await conn.execute(query.limit(limit + 1))).all()
        items = [mapper(r) for r in rows[:limit]]
        token = encode_token(kind, key(items[-1])) if len(rows) > limit else None
        return Page(items, token)


# --------------------------------------------------------------------------- helpers


def dumps(value: object) -> str:
    """Canonical compact JSON (sorted keys) for JSON text columns and hashing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_mapper(cls: type[R], *, json_dicts: tuple[str, ...] = ()) -> Callable[[AnyRow], R]:
    """A row -> *cls* converter for a dataclass whose fields are columns of the same
    names; the *json_dicts* fields are JSON object text in the table (see `loads_dict`)."""
    names = tuple(f.name for f in dataclasses.fields(cls))

    def convert(row: AnyRow) -> R:
        m = row._mapping
        values = {f: m[f] for f in names}
        for f in json_dicts:
            values[f] = loads_dict(values[f])
        return cls(**values)

    return convert


def record_values(record: DataclassInstance, **overrides: Any) -> dict[str, Any]:
    """A dataclass record's fields as column values (shallow), with *overrides* applied."""
    values = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    values.update(overrides)
    return values


def loads_dict(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def encode_token(kind: str, key: list[Any]) -> str:
    """Opaque keyset pagination token: url-safe base64 of ``[kind, *key]``."""
    return base64.urlsafe_b64encode(dumps([kind, *key]).encode()).decode().rstrip("=")


def decode_token(token: str, kind: str, types: tuple[type, ...]) -> list[Any]:
    """Decode a token made by :func:`encode_token`, checking kind and element types."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidNextTokenError("malformed NextToken") from exc
    if not isinstance(value, list) or len(value) != len(types) + 1 or value[0] != kind:
        raise InvalidNextTokenError("NextToken does not belong to this list")
    key = value[1:]
    for item, typ in zip(key, types, strict=True):
        ok = isinstance(item, typ) and not isinstance(item, bool)
        if typ is float:
            ok = isinstance(item, int | float) and not isinstance(item, bool)
        if not ok:
            raise InvalidNextTokenError("NextToken does not belong to this list")
    return key


def clamp_limit(max_results: int | None, default: int = 50, maximum: int = 1000) -> int:
    if max_results is None:
        return default
    return max(1, min(int(max_results), maximum))
