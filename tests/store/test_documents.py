"""Documents and their versions."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from portless.store import (
    AlreadyExistsError,
    DuplicateContentError,
    InvalidNextTokenError,
    InvalidOperationError,
    NotFoundError,
    Store,
)

NOW = 1_800_000_000.0
PREFS = '{"schemaVersion":"1.0","sessionType":"Standard_Stream","inputs":{"runAsEnabled":false}}'


async def test_create_get_and_versions(store: Store) -> None:
    doc, v1 = await store.create_document(
        "SSM-SessionManagerRunShell", PREFS, owner="123456789012", tags={"a": "b"}, now=NOW
    )
    assert (doc.default_version, doc.latest_version, doc.document_type, doc.document_format) == (
        1,
        1,
        "Session",
        "JSON",
    )
    assert v1.content_hash == hashlib.sha256(PREFS.encode()).hexdigest()
    with pytest.raises(AlreadyExistsError):
        await store.create_document("SSM-SessionManagerRunShell", "{}", owner="x")
    doc2, v2 = await store.add_document_version(
        "SSM-SessionManagerRunShell", PREFS.replace("false", "true"), version_name="v2", now=NOW + 1
    )
    assert (doc2.default_version, doc2.latest_version, v2.version, v2.version_name) == (
        1,
        2,
        2,
        "v2",
    )
    with pytest.raises(DuplicateContentError):
        await store.add_document_version("SSM-SessionManagerRunShell", PREFS)
    with pytest.raises(NotFoundError):
        await store.add_document_version("Nope", PREFS)

    async def content(sel: int | str | None) -> str | None:
        got = await store.get_document("SSM-SessionManagerRunShell", sel)
        return got[1].content if got else None

    assert await content(None) == PREFS
    assert await content("$DEFAULT") == PREFS
    assert await content("$LATEST") == v2.content
    assert await content(2) == v2.content
    assert await content("2") == v2.content
    assert await content(3) is None
    assert await content("abc") is None
    assert await store.get_document("Nope") is None

    doc3 = await store.set_default_document_version("SSM-SessionManagerRunShell", 2)
    assert doc3.default_version == 2
    assert await content(None) == v2.content
    with pytest.raises(NotFoundError):
        await store.set_default_document_version("SSM-SessionManagerRunShell", 9)
    with pytest.raises(NotFoundError):
        await store.set_default_document_version("Nope", 1)
    versions = await store.list_document_versions("SSM-SessionManagerRunShell")
    assert [v.version for v in versions] == [1, 2]


async def test_delete_versions_and_documents(store: Store) -> None:
    await store.create_document("Doc-A", "1", owner="me", document_format="TEXT")
    await store.add_document_version("Doc-A", "2")
    await store.add_document_version("Doc-A", "3")
    with pytest.raises(InvalidOperationError):
        await store.delete_document("Doc-A", 1)  # the default version
    assert await store.delete_document("Doc-A", 3)
    got = await store.get_document("Doc-A", "$LATEST")
    assert got is not None and got[0].latest_version == 2 and got[1].content == "2"
    assert not await store.delete_document("Doc-A", 3)
    assert not await store.delete_document("Nope", 2)
    _doc, v4 = await store.add_document_version("Doc-A", "4")
    assert v4.version == 3  # numbering continues from the current latest
    assert await store.delete_document("Doc-A")
    assert await store.get_document("Doc-A") is None
    assert await store.list_document_versions("Doc-A") == []
    assert not await store.delete_document("Doc-A")
    # The name can be reused afterwards.
    doc, _ = await store.create_document("Doc-A", "new", owner="me")
    assert doc.latest_version == 1


async def test_list_documents(store: Store) -> None:
    await store.create_document("AWS-StartSSHSession", "{}", owner="Amazon")
    await store.create_document("AWS-StartPortForwardingSession", "{}", owner="Amazon")
    await store.create_document("My_Prefs", "{}", owner="123456789012")
    await store.create_document("MyCommand", "{}", owner="123456789012", document_type="Command")
    await store.create_document("My%Odd", "{}", owner="123456789012")

    async def names(**kw: object) -> list[str]:
        page = await store.list_documents(**kw)  # type: ignore[arg-type]
        return [d.name for d in page.items]

    assert await names() == sorted(
        ["AWS-StartSSHSession", "AWS-StartPortForwardingSession", "My_Prefs", "MyCommand", "My%Odd"]
    )
    assert await names(document_types=["Command"]) == ["MyCommand"]
    assert await names(owners=["Amazon"]) == [
        "AWS-StartPortForwardingSession",
        "AWS-StartSSHSession",
    ]
    assert await names(name_prefix="AWS-Start") == [
        "AWS-StartPortForwardingSession",
        "AWS-StartSSHSession",
    ]
    assert await names(name_prefix="My_") == ["My_Prefs"]  # "_" is literal, not a wildcard
    assert await names(name_prefix="My%") == ["My%Odd"]
    assert await names(names=["My_Prefs", "x"]) == ["My_Prefs"]
    assert await names(owners=["123456789012"], document_types=["Session"]) == [
        "My%Odd",
        "My_Prefs",
    ]
    seen: list[str] = []
    token = None
    while True:
        page = await store.list_documents(max_results=2, next_token=token)
        seen += [d.name for d in page.items]
        token = page.next_token
        if token is None:
            break
    assert seen == await names()
    with pytest.raises(InvalidNextTokenError):
        await store.list_documents(next_token="!!")


async def test_document_tags(store: Store) -> None:
    await store.create_document("Tagged", "{}", owner="me", tags={"a": "1"})
    assert await store.add_document_tags("Tagged", {"a": "2", "b": "3"}) == {"a": "2", "b": "3"}
    assert await store.remove_document_tags("Tagged", ["a"]) == {"b": "3"}
    got = await store.get_document("Tagged")
    assert got is not None and got[0].tags == {"b": "3"}
    with pytest.raises(NotFoundError):
        await store.add_document_tags("Nope", {"a": "b"})


async def test_concurrent_updates_get_distinct_versions(store: Store) -> None:
    await store.create_document("Busy", "v0", owner="me")
    results = await asyncio.gather(
        *(store.add_document_version("Busy", f"v{i}") for i in range(1, 9))
    )
    assert sorted(v.version for _d, v in results) == list(range(2, 10))
    got = await store.get_document("Busy", "$LATEST")
    assert got is not None and got[0].latest_version == 9
