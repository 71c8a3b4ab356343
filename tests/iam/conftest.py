"""Fixtures shared by the IAM tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from portless.store import SecretBox, Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh SQLite store with its own secret box."""
    st = await Store.open(
        f"sqlite+aiosqlite:///{tmp_path / 'iam.db'}", secret_box=SecretBox.generate()
    )
    try:
        yield st
    finally:
        await st.close()
