"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from maos.store import open_store
from maos.store.base import Store


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh SQLite store in the test's directory."""
    store = await open_store(f"sqlite:///{tmp_path / 'maos.db'}")
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def cli() -> Path:
    """The real Claude Code CLI (bundled in the claude-agent-sdk wheel)."""
    from maos.agents.claude_cli import find_claude_cli

    found = find_claude_cli()
    if found is None:
        pytest.skip("no Claude Code CLI (pip install claude-agent-sdk bundles one)")
    return found
