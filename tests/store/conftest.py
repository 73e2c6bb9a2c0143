"""Store backends for the contract suite and the fixtures it uses.

``contract.py`` holds tests written only against the ``Store`` protocol; every test that takes
the ``store`` fixture runs once per entry of ``BACKENDS``. Adding a backend is one line there:
a function that takes pytest's ``tmp_path`` and returns an async context manager yielding an
open store (and closing it afterwards); one that needs a server calls ``pytest.skip()`` when
none runs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from maos.store import Store
from maos.store.sqlite import SqliteStore

from .redis_harness import SESSION_CLUSTER, RedisClusterProcesses, redis_backend, redis_cluster_backend

# contract.py does not match test_*.py: collect it from here, with pytest's assert rewriting.
pytest.register_assert_rewrite(f"{__name__.rpartition('.')[0]}.contract")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    # Named on the command line, pytest collects it itself.
    if (
        file_path.name == "contract.py"
        and file_path.parent == Path(__file__).parent
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@asynccontextmanager
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Store]:
    path = tmp_path / "maos.db"
    store = await SqliteStore.open(path, url=f"sqlite:///{path}")
    try:
        yield store
    finally:
        await store.close()


BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[Store]]] = {
    "sqlite": sqlite_backend,
    "redis": redis_backend,  # the server at 127.0.0.1:6379; skips when none runs
    "redis-cluster": redis_cluster_backend,  # 6 redis-server processes, started once per session
}


@pytest.fixture(params=list(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with BACKENDS[request.param](tmp_path) as opened:
        yield opened


@pytest.fixture
def ns() -> str:
    """A fresh key prefix for one test: ``{t:<uuid>}:``.

    Unique, so tests sharing one Redis server never see each other's keys; a hash tag, so all
    keys of one test live in one Redis Cluster slot and multi-key operations work.
    """
    return f"{{t:{uuid.uuid4().hex}}}:"


@pytest.fixture(scope="session", autouse=True)
def _stop_redis_cluster() -> Iterator[None]:
    """Stop the session's Redis Cluster (if a test started one) when the session ends."""
    yield
    SESSION_CLUSTER.stop()


@pytest.fixture(scope="session")
def redis_cluster_procs() -> RedisClusterProcesses:
    return SESSION_CLUSTER.get()
