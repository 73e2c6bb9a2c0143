"""``cas_update`` (maos.store.cas) on every backend: how many round trips an update costs, and
when it backs off. Other writers are played by the real store, written to right before a
compare-and-set, so the interleaving is exact."""

from __future__ import annotations

import asyncio
import collections
import random
from typing import Any

import pytest

from maos.errors import StateConflict
from maos.store import CasResult, Store, Versioned
from maos.store.cas import CasUpdated, cas_update


class Counted:
    """``store`` with its ``get`` and ``cas`` calls counted; the first ``lose`` compare-and-sets
    lose to a write of ``b"100"``, ``b"101"``, ... made through ``store`` just before them.
    Each call lets other tasks run first, as a round trip does (an idle SQLite store may
    answer without suspending its caller), so concurrent updates overlap on every backend."""

    def __init__(self, store: Store, *, lose: int = 0) -> None:
        self._store = store
        self.url = store.url
        self.calls: collections.Counter[str] = collections.Counter()
        self.lose = lose
        self._other = 100

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get(self, key: str) -> Versioned | None:
        self.calls["get"] += 1
        await let_others_run()
        return await self._store.get(key)

    async def cas(self, key: str, expected_version: int, value: bytes) -> CasResult:
        self.calls["cas"] += 1
        await let_others_run()
        if self.lose > 0:
            self.lose -= 1
            await self._store.set(key, str(self._other).encode())
            self._other += 1
        return await self._store.cas(key, expected_version, value)


async def let_others_run() -> None:
    """One turn of the event loop (not ``asyncio.sleep``, which the ``slept`` fixture records)."""
    loop = asyncio.get_running_loop()
    turn: asyncio.Future[None] = loop.create_future()
    loop.call_soon(turn.set_result, None)
    await turn


def increment(current: Versioned | None) -> bytes:
    return str(1 + (0 if current is None else int(current.value))).encode()


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff sleeps of ``cas_update``, recorded instead of slept."""
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr("maos.store.cas.asyncio.sleep", fake_sleep)
    return sleeps


async def test_updates_of_one_key_in_one_process_take_turns(store: Store, ns: str) -> None:
    """20 concurrent updates through one store: one read, then one compare-and-set each,
    none lost to another, versions 1..20 in the order they ran."""
    counted = Counted(store)
    key = f"{ns}k"
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(cas_update(counted, key, increment, what="k")) for _ in range(20)]
    updates = [task.result() for task in tasks]
    assert all(u is not None and u.conflicts == 0 for u in updates)
    assert sorted(u.version for u in updates if u is not None) == list(range(1, 21))
    assert counted.calls == {"get": 1, "cas": 20}
    assert await store.get(key) == Versioned(b"20", 20)
    # The turns are gone once the updates are: the next update reads the key again.
    assert await cas_update(counted, key, increment, what="k") == CasUpdated(b"21", 21, 0)
    assert counted.calls == {"get": 2, "cas": 21}


async def test_a_lost_compare_and_set_retries_with_the_value_it_found(
    store: Store, ns: str, slept: list[float]
) -> None:
    counted = Counted(store, lose=1)
    key = f"{ns}k"
    updated = await cas_update(counted, key, increment, what="k", backoff_s=0.01, rng=random.Random(1))
    assert updated == CasUpdated(b"101", 2, 1)  # computed from the other writer's 100
    assert counted.calls == {"get": 1, "cas": 2}  # no second read
    assert len(slept) == 1
    assert 0 <= slept[0] <= 0.01


async def test_a_loss_on_a_value_from_before_the_backoff_is_retried_at_once(
    store: Store, ns: str, slept: list[float]
) -> None:
    """The second compare-and-set loses to a write made while the first one's backoff slept:
    not a race lost, so no second sleep and no attempt used up (attempts=2 is enough)."""
    counted = Counted(store, lose=2)
    key = f"{ns}k"
    updated = await cas_update(counted, key, increment, what="k", attempts=2, backoff_s=0.01)
    assert updated == CasUpdated(b"102", 3, 2)
    assert counted.calls == {"get": 1, "cas": 3}
    assert len(slept) == 1
    with pytest.raises(StateConflict, match="k changed under 2 attempts"):
        await cas_update(Counted(store, lose=4), key, increment, what="k", attempts=2, backoff_s=0.01)


async def test_nothing_to_write_is_judged_on_a_fresh_value(store: Store, ns: str, slept: list[float]) -> None:
    """``change`` returning None after a backoff (the key seemed done already) is checked
    against a fresh read before ``cas_update`` gives up writing."""
    counted = Counted(store, lose=1)  # the other writer writes 100
    key = f"{ns}k"
    seen: list[bytes | None] = []

    def up_to_100(current: Versioned | None) -> bytes | None:
        seen.append(None if current is None else current.value)
        value = 0 if current is None else int(current.value)
        return None if value >= 100 else str(value + 1).encode()

    assert await cas_update(counted, key, up_to_100, what="k") is None
    assert seen == [None, b"100", b"100"]  # the value the loss returned, then a fresh read
    assert counted.calls == {"get": 2, "cas": 1}
