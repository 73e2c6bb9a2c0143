"""Shared state on SQLite and Redis: JSON values, versions, CAS, namespaces, limits, update()."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from maos.errors import StateConflict, StateError, StoreDataError
from maos.security import is_sealed, open_value
from maos.state import MAX_KEY_CHARS, SharedState, StateEntry
from maos.store import CasResult, Store, keys


async def test_get_set_and_versions(store: Store, run_id: str) -> None:
    state = SharedState(store, run_id)
    assert await state.get("api/schema") is None
    assert await state.set("api/schema", {"fields": ["id", "name"]}) == 1
    assert await state.get("api/schema") == StateEntry("api/schema", {"fields": ["id", "name"]}, 1)
    assert await state.set("api/schema", "v2") == 2
    entry = await state.get("api/schema")
    assert entry is not None
    assert (entry.value, entry.version) == ("v2", 2)
    # stored as compact JSON under the run's hash tag (sealed first on Redis: maos.security)
    raw = await store.get(keys.state_key(run_id, "api/schema"))
    assert raw is not None
    assert is_sealed(raw.value) == state.sealed
    assert open_value(state.cipher, raw.value, keys.state_key(run_id, "api/schema").encode(), "") == b'"v2"'


@pytest.mark.parametrize(
    "value", [None, True, 0, -3, 2.5, "", "héllo ✓", [], [1, [2, {"a": None}]], {"nested": {"k": [1.5]}}]
)
async def test_every_json_value_round_trips(store: Store, run_id: str, value: Any) -> None:
    state = SharedState(store, run_id)
    await state.set("v", value)
    entry = await state.get("v")
    assert entry is not None
    assert entry.value == value


@pytest.mark.parametrize("value", [{1, 2}, float("nan"), float("inf"), object()])
async def test_non_json_values_are_refused_naming_the_key(store: Store, run_id: str, value: Any) -> None:
    state = SharedState(store, run_id)
    with pytest.raises(StateError, match=r"value for state key 'conf/x' is not JSON"):
        await state.set("conf/x", value)
    assert await state.get("conf/x") is None


async def test_size_limit_names_key_size_and_limit(store: Store, run_id: str) -> None:
    state = SharedState(store, run_id, max_value_bytes=1000)
    await state.set("fits", "x" * 998)  # 1000 bytes with the quotes
    with pytest.raises(StateError) as caught:
        await state.set("big/blob", "x" * 999)
    message = str(caught.value)
    assert "'big/blob'" in message
    assert "1001 bytes" in message
    assert "limit of 1000 bytes" in message
    assert await state.get("big/blob") is None
    with pytest.raises(StateError, match="limit of 1000 bytes"):
        await state.cas("big/blob", 0, "x" * 2000)


async def test_default_limit_is_256_kib(store: Store, run_id: str) -> None:
    state = SharedState(store, run_id)
    assert state.max_value_bytes == 256 * 1024
    await state.set("big", "x" * (256 * 1024 - 2))
    with pytest.raises(StateError, match="262145 bytes of JSON, above the limit of 262144 bytes"):
        await state.set("big", "x" * (256 * 1024 - 1))


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "is empty"),
        ("/abs", "not valid"),
        ("trailing/", "not valid"),
        ("a//b", "not valid"),
        ("has space", "not valid"),
        ("brace{x}", "not valid"),
        ("new\nline", "not valid"),
        ("k" * (MAX_KEY_CHARS + 1), f"{MAX_KEY_CHARS + 1} characters long"),
    ],
)
async def test_bad_keys_are_refused_with_the_rule(store: Store, run_id: str, key: str, why: str) -> None:
    state = SharedState(store, run_id)
    for call in (state.get(key), state.set(key, 1), state.cas(key, 0, 1)):
        with pytest.raises(StateError) as caught:
            await call
        assert why in str(caught.value)
        assert "letters, digits" in str(caught.value)


async def test_good_keys(store: Store, run_id: str) -> None:
    state = SharedState(store, run_id)
    for key in ("a", "team-a/progress", "v1.2/api_schema", "agent@host:1", "k" * MAX_KEY_CHARS):
        assert await state.set(key, key) == 1


async def test_cas(store: Store, run_id: str) -> None:
    state = SharedState(store, run_id)
    assert await state.cas("lock", 0, "owner-1") == CasResult(True, 1)
    assert await state.cas("lock", 0, "owner-2") == CasResult(False, 1)  # exists already
    assert await state.cas("lock", 1, "owner-2") == CasResult(True, 2)
    assert await state.cas("lock", 1, "owner-3") == CasResult(False, 2)  # stale version
    assert await state.cas("absent", 3, "x") == CasResult(False, 0)
    entry = await state.get("lock")
    assert entry is not None
    assert (entry.value, entry.version) == ("owner-2", 2)
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(StateError, match="expected version for state key 'lock' must be an integer"):
            await state.cas("lock", bad, "x")  # type: ignore[arg-type]


async def test_list_by_namespace_sorted_and_per_run(store: Store, run_id: str) -> None:
    state = SharedState(store, run_id)
    other = SharedState(store, run_id + "-other")
    for key in ("api/users", "api/orders", "apis", "docs/readme"):
        await state.set(key, key.upper())
    await other.set("api/secret", 1)
    assert [e.key for e in await state.list()] == ["api/orders", "api/users", "apis", "docs/readme"]
    assert await state.list("api/") == [
        StateEntry("api/orders", "API/ORDERS", 1),
        StateEntry("api/users", "API/USERS", 1),
    ]
    assert [e.key for e in await state.list("api")] == ["api/orders", "api/users", "apis"]
    assert await state.list("nothing/") == []
    with pytest.raises(StateError, match="state prefix '/x' is not valid"):
        await state.list("/x")
    with pytest.raises(StateError, match="prefix 'a b' is not valid"):
        await state.list("a b")
    await store.set(keys.state_key(run_id, "api/zz"), b"not json")
    with pytest.raises(StoreDataError, match="does not hold JSON"):
        await state.list("api/")


async def test_update_from_many_writers_loses_nothing(store: Store, run_id: str) -> None:
    # Two SharedState objects (as two processes would have), 20 writers, 5 increments each.
    states = [SharedState(store, run_id), SharedState(store, run_id)]

    async def writer(n: int) -> None:
        for _ in range(5):
            await states[n % 2].update("counter", lambda v: (v or 0) + 1, retries=200, backoff_s=0.001)

    async with asyncio.TaskGroup() as group:
        for n in range(20):
            group.create_task(writer(n))
    entry = await states[0].get("counter")
    assert entry is not None
    assert entry.value == 100
    assert entry.version == 100


class _Contended:
    """A store whose first ``conflicts`` CAS calls lose to a phantom writer."""

    def __init__(self, store: Store, conflicts: int) -> None:
        self._store = store
        self.conflicts = conflicts
        self.url = store.url

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def cas(self, key: str, expected_version: int, value: bytes) -> CasResult:
        if self.conflicts > 0:
            self.conflicts -= 1
            version = await self._store.set(key, b'"phantom"')
            return CasResult(False, version)
        return await self._store.cas(key, expected_version, value)


async def test_update_backs_off_exponentially_with_jitter(
    store: Store, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("maos.store.cas.asyncio.sleep", fake_sleep)
    state = SharedState(_Contended(store, conflicts=6), run_id)
    seen: list[Any] = []

    def append(value: Any) -> Any:
        seen.append(value)
        return [*(value if isinstance(value, list) else []), "mine"]

    entry = await state.update(
        "k", append, retries=10, backoff_s=0.01, max_backoff_s=0.1, rng=random.Random(7)
    )
    assert entry.value == ["mine"]  # computed from the phantom's value, never from a stale one
    assert seen == [None, "phantom", "phantom", "phantom", "phantom", "phantom", "phantom"]
    caps = [0.01, 0.02, 0.04, 0.08, 0.1, 0.1]
    assert len(slept) == 6
    assert all(0 <= s <= cap for s, cap in zip(slept, caps, strict=True))
    assert len(set(slept)) == 6  # jittered, not fixed


async def test_update_gives_up_with_state_conflict(
    store: Store, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_sleep(seconds: float) -> None:
        return None

    monkeypatch.setattr("maos.store.cas.asyncio.sleep", no_sleep)
    state = SharedState(_Contended(store, conflicts=100), run_id)
    with pytest.raises(StateConflict, match=r"state key 'hot' changed under 4 attempts") as caught:
        await state.update("hot", lambda v: 1, retries=3)
    assert caught.value.key == "hot"
    assert caught.value.attempts == 4
