"""The one lease helper (``maos.store.lease``): hold, lose, fence (ADR 0012). Real SQLite store."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from maos.errors import LeaseLost
from maos.store import open_store
from maos.store.base import Store
from maos.store.lease import EpochFence, Fenced, Lease
from tests.readiness import until


async def expired(store: Store, name: str) -> bool:
    return await store.holder(name) is None


async def test_a_held_lease_is_renewed_and_released(sqlite_store: Store) -> None:
    lease = Lease(sqlite_store, "run:a", "me", ttl_s=0.3)
    assert await lease.acquire() == 1
    async with lease.held():
        # Twice in a row, a lease taken after ours with the same ttl and never renewed runs
        # out: by then ours would have too, had it not been renewed (twice, at least).
        for _ in range(2):
            await sqlite_store.acquire("control", "me", 0.3)
            await until(lambda: expired(sqlite_store, "control"), "the control lease to run out")
            assert await sqlite_store.holder("run:a") == "me"
    assert await sqlite_store.holder("run:a") is None
    assert lease.lost is None
    assert await sqlite_store.epoch("run:a") == 1


async def test_the_holder_is_cancelled_the_moment_another_owner_has_the_lease(sqlite_store: Store) -> None:
    lease = Lease(sqlite_store, "run:b", "me", ttl_s=0.3)
    await lease.acquire()
    reached_the_end = False

    async def holding() -> None:
        nonlocal reached_the_end
        async with lease.held():
            await sqlite_store.release("run:b", "me")
            assert await sqlite_store.acquire("run:b", "them", 60) == 2
            await asyncio.sleep(5)
            reached_the_end = True

    with pytest.raises(LeaseLost, match="another owner holds it now \\(them\\)"):
        await holding()
    assert not reached_the_end
    assert await sqlite_store.holder("run:b") == "them"  # not released in their name


async def test_a_store_that_cannot_renew_for_the_ttl_loses_the_lease(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """The store does not answer (another process holds SQLite's write lock): after ``ttl_s``
    by this process's clock the lease counts as lost, whatever the store says later."""
    lease = Lease(sqlite_store, "run:c", "me", ttl_s=0.4)
    await lease.acquire()
    blocker = sqlite3.connect(tmp_path / "maos.db", isolation_level=None)

    async def holding() -> None:
        async with lease.held():
            blocker.execute("BEGIN IMMEDIATE")
            await asyncio.sleep(10)

    try:
        with pytest.raises(LeaseLost, match="no renewal got through"):
            await holding()
    finally:
        blocker.close()


async def test_fenced_writes_stop_at_the_first_refusal(sqlite_store: Store) -> None:
    lease = Lease(sqlite_store, "{run:d}:orchestrator", "me", ttl_s=30)
    await lease.acquire()
    fenced = Fenced(sqlite_store, lease, "{run:d}:")
    await fenced.append("{run:d}:events", b"mine")
    assert await fenced.set("{run:d}:k", b"v") == 1
    assert await fenced.set("{run:d}:k", b"w") == 2
    await sqlite_store.release(lease.name, "me")
    assert await sqlite_store.acquire(lease.name, "next", 30) == 2
    with pytest.raises(LeaseLost):
        await fenced.append("{run:d}:events", b"late")
    assert lease.lost is not None
    with pytest.raises(LeaseLost):  # refused without asking the store again
        await fenced.cas("{run:d}:k", 2, b"x")
    await fenced.set("maos:elsewhere", b"not the run's")  # writes outside the run pass
    assert [entry.record for entry in await sqlite_store.read("{run:d}:events")] == [b"mine"]
    assert (await sqlite_store.get("{run:d}:k")) is not None


async def test_an_epoch_fence_tells_its_attempt_once(sqlite_store: Store) -> None:
    await sqlite_store.acquire("{run:e}:orchestrator", "first", 0.05)
    await until(lambda: expired(sqlite_store, "{run:e}:orchestrator"), "the lease to run out")
    told: list[str] = []
    fence = EpochFence("{run:e}:orchestrator", 1, on_lost=told.append)
    reports = Fenced(sqlite_store, fence, "{run:e}:")
    await reports.append("{run:e}:events", b"still epoch 1")  # expired but not taken: counts
    await sqlite_store.acquire("{run:e}:orchestrator", "second", 30)
    for _ in range(2):
        with pytest.raises(LeaseLost, match="epoch 1"):
            await reports.append("{run:e}:events", b"late")
    assert len(told) == 1


async def test_a_lease_never_acquired_cannot_be_held(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(LeaseLost, match="never acquired"):
            async with Lease(store, "n", "me", 1).held():
                pass
    finally:
        await store.close()
