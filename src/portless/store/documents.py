"""SSM documents: session documents and user preferences documents, with versions."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, select, update
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
    AlreadyExistsError,
    Document,
    DocumentVersion,
    DuplicateContentError,
    InvalidOperationError,
    NotFoundError,
    Page,
)

VersionSelector = int | str | None
"""``None``/``"$DEFAULT"`` = default version, ``"$LATEST"`` = latest, or a number."""


_doc = row_mapper(Document, json_dicts=("tags",))
_ver = row_mapper(DocumentVersion)


def _content_hash(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


async def _lock_doc(conn: AsyncConnection, name: str) -> Document:
    """Fetch the document row FOR UPDATE (PostgreSQL) so version bumps serialize."""
    row = (
        await conn.execute(select(s.documents).where(s.documents.c.name == name).with_for_update())
    ).first()
    if row is None:
        raise NotFoundError(name)
    return _doc(row)


class DocumentsMixin(StoreBase):
    """CreateDocument / UpdateDocument / GetDocument / ListDocuments / DeleteDocument."""

    async def create_document(
        self,
        name: str,
        content: str,
        *,
        document_type: str = "Session",
        document_format: str = "JSON",
        owner: str,
        version_name: str | None = None,
        display_name: str | None = None,
        target_type: str | None = None,
        tags: Mapping[str, str] | None = None,
        now: float | None = None,
    ) -> tuple[Document, DocumentVersion]:
        """Create a document at version 1; raises :class:`AlreadyExistsError`."""
        created = time.time() if now is None else now
        doc = Document(
            name=name,
            document_type=document_type,
            document_format=document_format,
            owner=owner,
            created_date=created,
            default_version=1,
            latest_version=1,
            display_name=display_name,
            target_type=target_type,
            tags=dict(tags or {}),
        )
        ver = DocumentVersion(
            name=name,
            version=1,
            content=content,
            document_format=document_format,
            content_hash=_content_hash(content),
            version_name=version_name,
            created_date=created,
        )
        async with self._write() as conn:
            exists = (
                await conn.execute(select(s.documents.c.name).where(s.documents.c.name == name))
            ).first()
            if exists is not None:
                raise AlreadyExistsError(name)
            await conn.execute(
                s.documents.insert().values(**record_values(doc, tags=dumps(doc.tags)))
            )
            await conn.execute(s.document_versions.insert().values(**record_values(ver)))
        return doc, ver

    async def add_document_version(
        self,
        name: str,
        content: str,
        *,
        document_format: str | None = None,
        version_name: str | None = None,
        display_name: str | None = None,
        now: float | None = None,
    ) -> tuple[Document, DocumentVersion]:
        """UpdateDocument: append version latest+1 (the default version is unchanged).

        Raises :class:`NotFoundError`, or :class:`DuplicateContentError` when the
        content equals an existing version's."""
        created = time.time() if now is None else now
        h = _content_hash(content)
        v = s.document_versions
        async with self._write() as conn:
            doc = await _lock_doc(conn, name)
            dup = (
                await conn.execute(
                    select(v.c.version).where(v.c.name == name, v.c.content_hash == h)
                )
            ).first()
            if dup is not None:
                raise DuplicateContentError(f"{name} version {dup.version} has this content")
            ver = DocumentVersion(
                name=name,
                version=doc.latest_version + 1,
                content=content,
                document_format=document_format or doc.document_format,
                content_hash=h,
                version_name=version_name,
                created_date=created,
            )
            await conn.execute(v.insert().values(**record_values(ver)))
            doc_values: dict[str, Any] = {"latest_version": ver.version}
            if display_name is not None:
                doc_values["display_name"] = display_name
            await conn.execute(
                update(s.documents).where(s.documents.c.name == name).values(**doc_values)
            )
            row = (await conn.execute(select(s.documents).where(s.documents.c.name == name))).one()
        return _doc(row), ver

    async def set_default_document_version(self, name: str, version: int) -> Document:
        """UpdateDocumentDefaultVersion; raises :class:`NotFoundError` for an unknown
        document or version."""
        v = s.document_versions
        async with self._write() as conn:
            await _lock_doc(conn, name)
            found = (
                await conn.execute(
                    select(v.c.version).where(v.c.name == name, v.c.version == version)
                )
            ).first()
            if found is None:
                raise NotFoundError(f"{name} version {version}")
            await conn.execute(
                update(s.documents)
                .where(s.documents.c.name == name)
                .values(default_version=version)
            )
            row = (await conn.execute(select(s.documents).where(s.documents.c.name == name))).one()
        return _doc(row)

    async def get_document(
        self, name: str, version: VersionSelector = None
    ) -> tuple[Document, DocumentVersion] | None:
        """A document and one of its versions: default (None or ``$DEFAULT``),
        ``$LATEST``, or a number (int or numeric string). None if either is missing."""
        async with self._read() as conn:
            row = (
                await conn.execute(select(s.documents).where(s.documents.c.name == name))
            ).first()
            if row is None:
                return None
            doc = _doc(row)
            if version is None or version == "$DEFAULT":
                num = doc.default_version
            elif version == "$LATEST":
                num = doc.latest_version
            else:
                try:
                    num = int(version)
                except ValueError:
                    return None
            v = s.document_versions
            vrow = (
                await conn.execute(select(v).where(v.c.name == name, v.c.version == num))
            ).first()
        return (doc, _ver(vrow)) if vrow else None

    async def list_document_versions(self, name: str) -> list[DocumentVersion]:
        v = s.document_versions
        async with self._read() as conn:
            rows = (
                await conn.execute(select(v).where(v.c.name == name).order_by(v.c.version))
            ).all()
        return [_ver(r) for r in rows]

    async def list_documents(
        self,
        *,
        document_types: Sequence[str] | None = None,
        owners: Sequence[str] | None = None,
        name_prefix: str | None = None,
        names: Sequence[str] | None = None,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> Page[Document]:
        """Documents ordered by name (ListDocuments)."""
        limit = clamp_limit(max_results)
        t = s.documents
        conds: list[ColumnElement[bool]] = []
        if document_types is not None:
            conds.append(t.c.document_type.in_(list(document_types)))
        if owners is not None:
            conds.append(t.c.owner.in_(list(owners)))
        if names is not None:
            conds.append(t.c.name.in_(list(names)))
        if name_prefix:
            conds.append(t.c.name.startswith(name_prefix, autoescape=True))
        if next_token:
            (last,) = decode_token(next_token, "doc", (str,))
            conds.append(t.c.name > last)
        q = select(t).where(*conds).order_by(t.c.name)
        return await self._page(q, limit, _doc, "doc", lambda d: [d.name])

    async def delete_document(self, name: str, version: int | None = None) -> bool:
        """Delete the whole document, or one version. The default version cannot be
        deleted alone (:class:`InvalidOperationError`). Returns False if missing."""
        v = s.document_versions
        async with self._write() as conn:
            if version is None:
                await conn.execute(delete(v).where(v.c.name == name))
                res = await conn.execute(delete(s.documents).where(s.documents.c.name == name))
                return res.rowcount > 0
            try:
                doc = await _lock_doc(conn, name)
            except NotFoundError:
                return False
            if version == doc.default_version:
                raise InvalidOperationError("cannot delete the default version of a document")
            res = await conn.execute(delete(v).where(v.c.name == name, v.c.version == version))
            if res.rowcount == 0:
                return False
            if version == doc.latest_version:
                latest = (
                    await conn.execute(select(func.max(v.c.version)).where(v.c.name == name))
                ).scalar_one()
                await conn.execute(
                    update(s.documents)
                    .where(s.documents.c.name == name)
                    .values(latest_version=latest)
                )
            return True

    async def add_document_tags(self, name: str, tags: Mapping[str, str]) -> dict[str, str]:
        """Add or overwrite tags; returns the resulting tags."""
        async with self._write() as conn:
            doc = await _lock_doc(conn, name)
            merged = {**doc.tags, **tags}
            await conn.execute(
                update(s.documents).where(s.documents.c.name == name).values(tags=dumps(merged))
            )
        return merged

    async def remove_document_tags(self, name: str, keys: Sequence[str]) -> dict[str, str]:
        async with self._write() as conn:
            doc = await _lock_doc(conn, name)
            remaining = {k: v for k, v in doc.tags.items() if k not in set(keys)}
            await conn.execute(
                update(s.documents).where(s.documents.c.name == name).values(tags=dumps(remaining))
            )
        return remaining
