from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from maos.store import open_store
from maos.store.base import Store


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(f"sqlite:///{tmp_path / 'maos.db'}")
    try:
        yield store
    finally:
        await store.close()
