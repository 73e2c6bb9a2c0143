"""Fixtures for the bus tests: every test that takes ``store`` runs on SQLite and on Redis.

SQLite uses a file in the test's temporary directory. Redis is the server on 127.0.0.1:6379
(skipped when none answers); each test uses a fresh run id, and the keys of that run are
deleted afterwards.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from maos.bus import Bus
from maos.store import Store
from maos.store.sqlite import SqliteStore

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}"


def _redis_answers() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def run_id() -> str:
    return f"bus-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, tmp_path: Path, run_id: str) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        path = tmp_path / "maos.db"
        sqlite = await SqliteStore.open(path, url=f"sqlite:///{path}")
        try:
            yield sqlite
        finally:
            await sqlite.close()
        return
    if not _redis_answers():
        pytest.skip(f"no Redis server answers on {REDIS_URL}")
    import redis.asyncio

    from maos.store.redis import RedisStore

    redis_store = await RedisStore.open(REDIS_URL)
    try:
        yield redis_store
    finally:
        await redis_store.close()
        client = redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT)
        try:
            found = [key async for key in client.scan_iter(match=f"*{{run:{run_id}}}*", count=1000)]
            if found:
                await client.delete(*found)
        finally:
            await client.aclose()


@pytest.fixture
def make_bus(store: Store, run_id: str) -> Callable[..., Bus]:
    """``make_bus(**options)``: a ``Bus`` of this test's run on this test's store."""

    def make(**options: Any) -> Bus:
        return Bus(store, run_id, **options)

    return make


@pytest.fixture
def bus(make_bus: Callable[..., Bus]) -> Bus:
    return make_bus()
