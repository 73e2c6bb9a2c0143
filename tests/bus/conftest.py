"""Fixtures for the bus tests: every test that takes ``store`` runs on SQLite and on Redis.

SQLite uses a file in the test's temporary directory. Redis is the server on 127.0.0.1:6379
(skipped when none answers); each test uses a fresh run id, and the keys of that run are
deleted afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from maos.bus import Bus
from maos.store import Store


@pytest.fixture
def run_id() -> str:
    return f"bus-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(run_store: Store) -> Store:
    """The shared ``run_store`` (SQLite and Redis), under the name these tests use."""
    return run_store


@pytest.fixture
def make_bus(store: Store, run_id: str) -> Callable[..., Bus]:
    """``make_bus(**options)``: a ``Bus`` of this test's run on this test's store."""

    def make(**options: Any) -> Bus:
        return Bus(store, run_id, **options)

    return make


@pytest.fixture
def bus(make_bus: Callable[..., Bus]) -> Bus:
    return make_bus()
