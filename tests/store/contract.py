"""The contract every ``Store`` backend passes, written only against the protocol.

Collected by ``conftest.py`` and run once per backend in its ``BACKENDS``. Every key and
stream name starts with the test's ``ns`` prefix (unique, with a Redis Cluster hash tag).
Timing asserts are loose (a blocked read must return well before its timeout, not within
some milliseconds) so that they hold on a slow machine.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from maos.errors import NoSuchGroup, StoreError
from maos.store import (
    AckOp,
    AppendOp,
    CasOp,
    CasResult,
    Entry,
    FenceOp,
    KeyValue,
    Store,
    TransactResult,
    Versioned,
    connect_url,
    open_store,
)
from maos.store.cas import cas_update
from tests.readiness import readers_blocked, until

ALL_BYTES = bytes(range(256))
WAKE_BLOCK_S = 30.0
"""A blocking read that must be woken: so long that returning in a third of it on the
slowest machine means it was woken, not that it timed out."""


def records(entries: list[Entry]) -> list[bytes]:
    return [e.record for e in entries]


async def append_all(store: Store, stream: str, values: list[bytes]) -> list[str]:
    return [await store.append(stream, value) for value in values]


def numbered(n: int) -> list[bytes]:
    return [f"r{i}".encode() for i in range(n)]


async def expired(store: Store, lease: str) -> bool:
    return await store.holder(lease) is None


async def idle_at_least(store: Store, stream: str, idle_s: float) -> bool:
    """Every record pending in group ``g`` of ``stream`` was delivered ``idle_s`` ago or more."""
    return all(p.idle_s >= idle_s for p in await store.pending(stream, "g"))


# ---------------------------------------------------------------------------- kv


async def test_store_satisfies_protocol(store: Store) -> None:
    assert isinstance(store, Store)
    assert isinstance(store.url, str)


async def test_get_missing_key_is_none(store: Store, ns: str) -> None:
    assert await store.get(f"{ns}missing") is None


async def test_set_increments_version(store: Store, ns: str) -> None:
    key = f"{ns}k"
    assert await store.set(key, b"one") == 1
    assert await store.set(key, b"two") == 2
    assert await store.get(key) == Versioned(b"two", 2)


async def test_delete_resets_version(store: Store, ns: str) -> None:
    key = f"{ns}k"
    assert await store.delete(key) is False
    await store.set(key, b"a")
    await store.set(key, b"b")
    assert await store.delete(key) is True
    assert await store.get(key) is None
    assert await store.delete(key) is False
    assert await store.set(key, b"c") == 1


async def test_cas_zero_creates_only_if_absent(store: Store, ns: str) -> None:
    key = f"{ns}k"
    first = await store.cas(key, 0, b"first")
    assert (first.ok, first.version) == (True, 1)
    second = await store.cas(key, 0, b"second")
    assert (second.ok, second.version) == (False, 1)
    assert await store.get(key) == Versioned(b"first", 1)


async def test_cas_success_and_conflict(store: Store, ns: str) -> None:
    key = f"{ns}k"
    await store.set(key, b"v1")
    ok = await store.cas(key, 1, b"v2")
    assert (ok.ok, ok.version) == (True, 2)
    stale = await store.cas(key, 1, b"lost")
    assert (stale.ok, stale.version) == (False, 2)
    assert await store.get(key) == Versioned(b"v2", 2)


async def test_cas_on_missing_key_with_a_version_fails(store: Store, ns: str) -> None:
    key = f"{ns}k"
    result = await store.cas(key, 3, b"x")
    assert (result.ok, result.version) == (False, 0)
    assert await store.get(key) is None


async def test_cas_after_delete_starts_again_at_zero(store: Store, ns: str) -> None:
    key = f"{ns}k"
    await store.set(key, b"a")
    await store.delete(key)
    assert (await store.cas(key, 1, b"b")).ok is False
    result = await store.cas(key, 0, b"c")
    assert (result.ok, result.version) == (True, 1)


async def test_scan_returns_prefix_sorted(store: Store, ns: str) -> None:
    keys = [f"{ns}a:3", f"{ns}a:1", f"{ns}b:1", f"{ns}a:2", f"{ns}ab", f"{ns}a", f"{ns}a:10"]
    for i, key in enumerate(keys):
        await store.set(key, str(i).encode())
    await store.set(f"{ns}a:2", b"again")
    found = await store.scan(f"{ns}a:")
    assert found == [
        KeyValue(f"{ns}a:1", b"1", 1),
        KeyValue(f"{ns}a:10", b"6", 1),
        KeyValue(f"{ns}a:2", b"again", 2),
        KeyValue(f"{ns}a:3", b"0", 1),
    ]
    assert [kv.key for kv in await store.scan(ns)] == sorted(keys)
    assert await store.scan(f"{ns}zzz") == []


async def test_binary_values_round_trip(store: Store, ns: str) -> None:
    for i, value in enumerate([ALL_BYTES, b"", b"\x00", b"\xff\xfe" * 1000]):
        await store.set(f"{ns}k{i}", value)
        got = await store.get(f"{ns}k{i}")
        assert got is not None
        assert got.value == value
        assert isinstance(got.value, bytes)
    stream = f"{ns}s"
    await store.append(stream, ALL_BYTES)
    await store.append(stream, b"")
    assert records(await store.read(stream)) == [ALL_BYTES, b""]


async def test_unicode_keys(store: Store, ns: str) -> None:
    keys = [f"{ns}é", f"{ns}日本", f"{ns}e", f"{ns}😀"]
    for key in keys:
        await store.set(key, key.encode())
    assert [kv.key for kv in await store.scan(ns)] == sorted(keys)


async def test_concurrent_cas_increments_lose_no_update(store: Store, ns: str) -> None:
    key = f"{ns}counter"

    async def increment() -> None:
        while True:
            current = await store.get(key)
            version = current.version if current else 0
            value = int(current.value) if current else 0
            if (await store.cas(key, version, str(value + 1).encode())).ok:
                return

    async with asyncio.TaskGroup() as tg:
        for _ in range(20):
            tg.create_task(increment())
    assert await store.get(key) == Versioned(b"20", 20)


async def test_cas_conflict_returns_what_it_found(store: Store, ns: str) -> None:
    key = f"{ns}k"
    assert (await store.cas(key, 0, b"v1")).current is None  # success: nothing to report
    await store.set(key, b"v2")
    lost = await store.cas(key, 1, b"mine")
    assert lost == CasResult(False, 2, Versioned(b"v2", 2))
    assert await store.cas(f"{ns}absent", 4, b"x") == CasResult(False, 0, None)
    await store.delete(key)
    assert await store.cas(key, 2, b"x") == CasResult(False, 0, None)


async def test_cas_update_loses_no_update_with_20_writers_in_two_processes(store: Store, ns: str) -> None:
    """20 writers of one key, half through another connection (as another process would be):
    every increment lands exactly once, and each returns the version it wrote."""
    key = f"{ns}counter"
    other = await open_store(connect_url(store))
    versions: list[int] = []

    def increment(current: Versioned | None) -> bytes:
        return str(1 + (0 if current is None else int(current.value))).encode()

    async def writer(on: Store) -> None:
        for _ in range(10):
            updated = await cas_update(on, key, increment, what="the counter", attempts=1000, backoff_s=0.001)
            assert updated is not None
            assert int(updated.value) == updated.version  # the value it wrote is that version's
            versions.append(updated.version)

    try:
        async with asyncio.TaskGroup() as tg:
            for n in range(20):
                tg.create_task(writer(store if n % 2 else other))
    finally:
        await other.close()
    assert await store.get(key) == Versioned(b"200", 200)
    assert sorted(versions) == list(range(1, 201))


# ---------------------------------------------------------------------------- streams


async def test_missing_stream_is_empty(store: Store, ns: str) -> None:
    stream = f"{ns}nothing"
    assert await store.read(stream) == []
    assert await store.last_id(stream) == "0"
    assert await store.length(stream) == 0


async def test_append_then_read_in_order(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    ids = await append_all(store, stream, numbered(5))
    assert len(set(ids)) == 5
    entries = await store.read(stream)
    assert [e.id for e in entries] == ids
    assert records(entries) == numbered(5)
    assert await store.read(stream, "0") == entries


async def test_read_after_an_id(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    ids = await append_all(store, stream, numbered(5))
    after = await store.read(stream, ids[1])
    assert [e.id for e in after] == ids[2:]
    assert await store.read(stream, ids[-1]) == []


async def test_read_count_limits_and_pages(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    values = numbered(12)
    await append_all(store, stream, values)
    first = await store.read(stream, count=5)
    assert records(first) == values[:5]
    second = await store.read(stream, first[-1].id, count=5)
    assert records(second) == values[5:10]
    third = await store.read(stream, second[-1].id, count=5)
    assert records(third) == values[10:]


async def test_streams_are_separate(store: Store, ns: str) -> None:
    await store.append(f"{ns}one", b"1")
    await store.append(f"{ns}two", b"2")
    assert records(await store.read(f"{ns}one")) == [b"1"]
    assert records(await store.read(f"{ns}two")) == [b"2"]
    assert await store.length(f"{ns}one") == 1


async def test_blocking_read_wakes_on_append(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.append(stream, b"old")
    last = await store.last_id(stream)
    started = time.monotonic()
    reader = asyncio.create_task(store.read(stream, last, block_s=WAKE_BLOCK_S))
    await readers_blocked(store)
    assert not reader.done()
    new_id = await store.append(stream, b"new")
    entries = await asyncio.wait_for(reader, WAKE_BLOCK_S)
    assert [(e.id, e.record) for e in entries] == [(new_id, b"new")]
    assert time.monotonic() - started < WAKE_BLOCK_S / 3  # woken, not timed out


async def test_blocking_read_returns_at_once_when_records_exist(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.append(stream, b"there")
    started = time.monotonic()
    assert records(await store.read(stream, block_s=WAKE_BLOCK_S)) == [b"there"]
    assert time.monotonic() - started < WAKE_BLOCK_S / 3


async def test_blocking_read_times_out_empty(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.append(stream, b"old")
    last = await store.last_id(stream)
    started = time.monotonic()
    assert await store.read(stream, last, block_s=0.2) == []
    assert 0.15 <= time.monotonic() - started < 10


async def test_blocking_read_ignores_other_streams(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    started = time.monotonic()
    # long enough to be seen blocked on a slow machine, whose reader would otherwise be
    # done before readers_blocked looked
    reader = asyncio.create_task(store.read(stream, block_s=3))
    await readers_blocked(store)
    await store.append(f"{ns}other", b"x")
    assert await reader == []
    assert time.monotonic() - started >= 2.95  # not woken early: it waited out its block_s


async def test_several_blocked_readers_all_wake(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    readers = [asyncio.create_task(store.read(stream, block_s=WAKE_BLOCK_S)) for _ in range(5)]
    await readers_blocked(store, 5)
    started = time.monotonic()
    await store.append(stream, b"x")
    results = await asyncio.wait_for(asyncio.gather(*readers), WAKE_BLOCK_S)
    assert [records(r) for r in results] == [[b"x"]] * 5
    assert time.monotonic() - started < WAKE_BLOCK_S / 3


async def test_last_id_and_length(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    ids = await append_all(store, stream, numbered(3))
    assert await store.last_id(stream) == ids[-1]
    assert await store.length(stream) == 3


async def test_trim_keeps_newest(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    values = numbered(10)
    ids = await append_all(store, stream, values)
    assert await store.trim(stream, 4) == 6
    assert await store.length(stream) == 4
    assert records(await store.read(stream)) == values[6:]
    assert await store.last_id(stream) == ids[-1]
    assert await store.trim(stream, 10) == 0
    assert await store.trim(stream, 0) == 4
    assert await store.length(stream) == 0
    assert await store.last_id(stream) == "0"


async def test_append_with_maxlen_trims_old_records(store: Store, ns: str) -> None:
    # maxlen trimming may be approximate: some old records may survive, the newest never go.
    stream = f"{ns}s"
    values = numbered(300)
    for value in values:
        await store.append(stream, value, maxlen=10)
    length = await store.length(stream)
    assert 10 <= length < 300
    kept = records(await store.read(stream))
    assert len(kept) == length
    assert kept == values[-length:]


# ---------------------------------------------------------------------------- consumer groups


async def test_create_group_twice_returns_false(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    assert await store.create_group(stream, "g") is True
    assert await store.create_group(stream, "g") is False
    assert await store.create_group(stream, "other") is True


async def test_create_group_creates_the_stream(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    assert await store.create_group(stream, "g") is True
    assert await store.length(stream) == 0
    assert await store.last_id(stream) == "0"
    assert await store.read_group(stream, "g", "c") == []
    await store.append(stream, b"x")
    assert records(await store.read_group(stream, "g", "c")) == [b"x"]


async def test_read_group_without_group_raises(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.append(stream, b"x")
    with pytest.raises(NoSuchGroup):  # a StoreError: what a worker recreates after a data loss
        await store.read_group(stream, "nope", "c")
    with pytest.raises(NoSuchGroup):
        await store.read_groups([stream], "nope", "c")


async def test_group_delivers_each_record_once(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.create_group(stream, "g")
    values = numbered(5)
    await append_all(store, stream, values)
    first = await store.read_group(stream, "g", "c1", count=3)
    assert records(first) == values[:3]
    assert [e.deliveries for e in first] == [1, 1, 1]
    second = await store.read_group(stream, "g", "c2")
    assert records(second) == values[3:]
    assert await store.read_group(stream, "g", "c1") == []
    assert await store.read_group(stream, "g", "c2") == []


async def test_concurrent_consumers_share_records_without_duplicates(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.create_group(stream, "g")
    values = numbered(60)
    await append_all(store, stream, values)
    seen: list[bytes] = []

    async def consume(name: str) -> None:
        while batch := await store.read_group(stream, "g", name, count=4):
            seen.extend(records(batch))
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        for i in range(4):
            tg.create_task(consume(f"c{i}"))
    assert sorted(seen) == sorted(values)


async def test_two_groups_each_get_every_record(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.create_group(stream, "g1")
    await store.create_group(stream, "g2")
    values = numbered(5)
    await append_all(store, stream, values)
    assert records(await store.read_group(stream, "g1", "c")) == values
    assert records(await store.read_group(stream, "g2", "c")) == values


async def test_group_start_dollar_reads_only_new_records(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await append_all(store, stream, [b"old1", b"old2"])
    assert await store.create_group(stream, "g", start="$") is True
    await store.append(stream, b"new")
    assert records(await store.read_group(stream, "g", "c")) == [b"new"]


async def test_group_start_dollar_on_empty_stream(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.create_group(stream, "g", start="$")
    await store.append(stream, b"first")
    assert records(await store.read_group(stream, "g", "c")) == [b"first"]


async def test_group_start_at_an_id(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    ids = await append_all(store, stream, numbered(3))
    await store.create_group(stream, "g", start=ids[0])
    assert [e.id for e in await store.read_group(stream, "g", "c")] == ids[1:]


async def test_pending_and_ack(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.create_group(stream, "g")
    ids = await append_all(store, stream, numbered(3))
    await store.read_group(stream, "g", "c1", count=2)
    await store.read_group(stream, "g", "c2")
    pending = await store.pending(stream, "g")
    assert [(p.id, p.consumer, p.deliveries) for p in pending] == [
        (ids[0], "c1", 1),
        (ids[1], "c1", 1),
        (ids[2], "c2", 1),
    ]
    assert all(0 <= p.idle_s < 60 for p in pending)
    assert await store.ack(stream, "g", [ids[0], ids[2]]) == 2
    assert await store.ack(stream, "g", [ids[0]]) == 0
    assert await store.ack(stream, "g", []) == 0
    assert [p.id for p in await store.pending(stream, "g")] == [ids[1]]


async def test_pending_count_limits(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.create_group(stream, "g")
    ids = await append_all(store, stream, numbered(5))
    await store.read_group(stream, "g", "c")
    assert [p.id for p in await store.pending(stream, "g", count=2)] == ids[:2]


async def test_ack_is_per_group(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.create_group(stream, "g1")
    await store.create_group(stream, "g2")
    (rid,) = await append_all(store, stream, [b"x"])
    await store.read_group(stream, "g1", "c")
    await store.read_group(stream, "g2", "c")
    assert await store.ack(stream, "g1", [rid]) == 1
    assert [p.id for p in await store.pending(stream, "g2")] == [rid]


async def test_unacknowledged_is_pending_then_undelivered(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    assert await store.unacknowledged(stream, "g") is None  # no stream
    await store.create_group(stream, "g")
    await store.create_group(stream, "other")
    values = numbered(5)
    ids = await append_all(store, stream, values)
    await store.read_group(stream, "g", "c", count=3)
    await store.ack(stream, "g", [ids[1]])
    owed = await store.unacknowledged(stream, "g")
    assert owed is not None
    assert [(e.id, e.record, e.deliveries) for e in owed] == [
        (ids[0], values[0], 1),
        (ids[2], values[2], 1),
        (ids[3], values[3], 0),
        (ids[4], values[4], 0),
    ]
    # Reading it delivers nothing: the group's next read still starts after its cursor.
    assert [e.id for e in await store.read_group(stream, "g", "c")] == ids[3:]
    assert [e.id for e in await store.unacknowledged(stream, "g", count=2) or []] == ids[:1] + ids[2:3]
    assert [e.id for e in await store.unacknowledged(stream, "other") or []] == ids
    assert await store.unacknowledged(stream, "missing") is None
    assert await store.unacknowledged(stream, "g", count=0) == []


async def test_claim_stale_moves_idle_entries(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.create_group(stream, "g")
    values = numbered(2)
    ids = await append_all(store, stream, values)
    await store.read_group(stream, "g", "dead")
    await until(lambda: idle_at_least(store, stream, 0.2), "the records to be idle 0.2 s")
    claimed = await store.claim_stale(stream, "g", "alive", min_idle_s=0.2)
    assert [(e.id, e.record, e.deliveries) for e in claimed] == [
        (ids[0], values[0], 2),
        (ids[1], values[1], 2),
    ]
    pending = await store.pending(stream, "g")
    assert [(p.consumer, p.deliveries) for p in pending] == [("alive", 2), ("alive", 2)]
    assert all(p.idle_s < 0.2 for p in pending)
    # Claimed records stay pending; read_group does not deliver them again.
    assert await store.read_group(stream, "g", "other") == []
    await until(lambda: idle_at_least(store, stream, 0.2), "the records to be idle 0.2 s")
    again = await store.claim_stale(stream, "g", "third", min_idle_s=0.2, count=1)
    assert [(e.id, e.deliveries) for e in again] == [(ids[0], 3)]


async def test_claim_stale_ignores_entries_not_idle_long_enough(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.create_group(stream, "g")
    await store.append(stream, b"x")
    await store.read_group(stream, "g", "busy")
    assert await store.claim_stale(stream, "g", "thief", min_idle_s=60) == []
    assert [(p.consumer, p.deliveries) for p in await store.pending(stream, "g")] == [("busy", 1)]


async def test_claim_stale_ignores_acknowledged(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.create_group(stream, "g")
    (rid,) = await append_all(store, stream, [b"x"])
    await store.read_group(stream, "g", "c")
    await store.ack(stream, "g", [rid])
    assert await store.claim_stale(stream, "g", "other", min_idle_s=0) == []


async def test_claim_stale_drops_trimmed_records(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.create_group(stream, "g")
    ids = await append_all(store, stream, numbered(3))
    await store.read_group(stream, "g", "dead")
    assert await store.trim(stream, 1) == 2
    claimed = await store.claim_stale(stream, "g", "alive", min_idle_s=0)
    assert [e.id for e in claimed] == [ids[2]]
    assert [p.id for p in await store.pending(stream, "g")] == [ids[2]]


async def test_blocking_read_group_wakes_on_append(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.create_group(stream, "g")
    started = time.monotonic()
    reader = asyncio.create_task(store.read_group(stream, "g", "c", block_s=WAKE_BLOCK_S))
    await readers_blocked(store)
    assert not reader.done()
    await store.append(stream, b"work")
    entries = await asyncio.wait_for(reader, WAKE_BLOCK_S)
    assert [(e.record, e.deliveries) for e in entries] == [(b"work", 1)]
    assert time.monotonic() - started < WAKE_BLOCK_S / 3


async def test_blocked_group_readers_split_records(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.create_group(stream, "g")
    readers = [
        asyncio.create_task(store.read_group(stream, "g", f"c{i}", count=1, block_s=WAKE_BLOCK_S))
        for i in range(3)
    ]
    await readers_blocked(store, 3)
    values = numbered(3)
    await append_all(store, stream, values)
    results = await asyncio.wait_for(asyncio.gather(*readers), WAKE_BLOCK_S)
    assert sorted(r for batch in results for r in records(batch)) == values


async def test_blocking_read_group_times_out_empty(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.create_group(stream, "g")
    started = time.monotonic()
    assert await store.read_group(stream, "g", "c", block_s=0.2) == []
    assert 0.15 <= time.monotonic() - started < 10


async def test_read_groups_reads_several_streams_in_one_call(store: Store, ns: str) -> None:
    a, b, c = f"{ns}a", f"{ns}b", f"{ns}c"
    for stream in (a, b, c):
        await store.create_group(stream, "g")
    await append_all(store, b, [b"b1", b"b2", b"b3"])
    await store.append(a, b"a1")
    found = await store.read_groups([c, b, a], "g", "me", count=2)
    assert list(found) == [b, a]  # the order of the streams asked for; empty ones left out
    assert [records(found[b]), records(found[a])] == [[b"b1", b"b2"], [b"a1"]]
    assert all(e.deliveries == 1 for entries in found.values() for e in entries)
    assert [p.consumer for p in await store.pending(b, "g")] == ["me", "me"]
    assert records((await store.read_groups([a, b, c], "g", "me"))[b]) == [b"b3"]
    assert await store.read_groups([a, b, c], "g", "me") == {}


async def test_blocking_read_groups_wakes_on_any_stream(store: Store, ns: str) -> None:
    streams = [f"{ns}s{i}" for i in range(3)]
    for stream in streams:
        await store.create_group(stream, "g")
    started = time.monotonic()
    reader = asyncio.create_task(store.read_groups(streams, "g", "me", block_s=30))
    await readers_blocked(store)
    assert not reader.done()
    await store.append(streams[2], b"late")
    found = await asyncio.wait_for(reader, 10)
    assert {k: records(v) for k, v in found.items()} == {streams[2]: [b"late"]}
    assert time.monotonic() - started < 10
    started = time.monotonic()
    assert await store.read_groups(streams, "g", "me", block_s=0.2) == {}
    assert 0.15 <= time.monotonic() - started < 5


async def test_transact_applies_every_op_at_once(store: Store, ns: str) -> None:
    key, stream, other = f"{ns}k", f"{ns}s", f"{ns}t"
    await store.create_group(stream, "g")
    first = await store.append(stream, b"old")
    await store.read_group(stream, "g", "me")
    result = await store.transact(
        [
            CasOp(key, 0, b"v1"),
            AppendOp(stream, b"new"),
            AppendOp(other, b"x", maxlen=10),
            AckOp(stream, "g", (first,)),
        ]
    )
    assert result.ok
    assert result.versions == (1,)
    assert len(result.ids) == 2
    assert result.acked == 1
    assert await store.get(key) == Versioned(b"v1", 1)
    assert records(await store.read(stream, first)) == [b"new"]
    assert [e.id for e in await store.read(other)] == [result.ids[1]]
    assert await store.pending(stream, "g") == []


async def test_transact_with_a_failed_compare_writes_nothing(store: Store, ns: str) -> None:
    key, fresh, stream = f"{ns}k", f"{ns}fresh", f"{ns}s"
    await store.set(key, b"a")
    await store.set(key, b"b")
    await store.create_group(stream, "g")
    pending = await store.append(stream, b"p")
    await store.read_group(stream, "g", "me")
    result = await store.transact(
        [
            CasOp(fresh, 0, b"new"),
            CasOp(key, 1, b"stale"),
            AppendOp(stream, b"x"),
            AckOp(stream, "g", (pending,)),
        ]
    )
    assert result == TransactResult(ok=False, versions=(0, 2))
    assert await store.get(fresh) is None
    assert await store.get(key) == Versioned(b"b", 2)
    assert records(await store.read(stream)) == [b"p"]
    assert [p.id for p in await store.pending(stream, "g")] == [pending]
    retry = await store.transact([CasOp(key, 2, b"c"), AppendOp(stream, b"x")])
    assert retry.ok
    assert retry.versions == (3,)


async def test_transact_wakes_blocked_readers_and_refuses_bad_ops(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    reader = asyncio.create_task(store.read(stream, "0", block_s=30))
    await readers_blocked(store)
    await store.transact([AppendOp(stream, b"hello")])
    assert records(await asyncio.wait_for(reader, 10)) == [b"hello"]
    assert await store.transact([]) == TransactResult(ok=True)
    with pytest.raises(ValueError, match="more than one CasOp"):
        await store.transact([CasOp(f"{ns}k", 0, b"a"), CasOp(f"{ns}k", 1, b"b")])
    with pytest.raises(ValueError, match="maxlen"):
        await store.transact([AppendOp(stream, b"x", maxlen=-1)])


async def test_transact_with_thousands_of_ops(store: Store, ns: str) -> None:
    stream = f"{ns}s"
    await store.create_group(stream, "g")
    appended = await store.transact([AppendOp(stream, f"{i}".encode()) for i in range(2500)])
    assert len(appended.ids) == 2500
    delivered = await store.read_group(stream, "g", "c", count=5000)
    assert [e.id for e in delivered] == list(appended.ids)
    result = await store.transact([AckOp(stream, "g", appended.ids), AppendOp(stream, b"last")])
    assert (result.ok, result.acked, len(result.ids)) == (True, 2500, 1)
    assert await store.pending(stream, "g") == []


async def test_concurrent_transacts_are_each_all_or_nothing(store: Store, ns: str) -> None:
    """Many transactions at once (Redis sends those submitted together in one call): each is
    applied or refused on its own, and one that fails (a bad id) fails alone."""
    stream = f"{ns}s"
    await store.create_group(stream, "g")
    for n in range(0, 40, 2):
        await store.set(f"{ns}k{n}", b"taken")  # even keys exist: a CasOp at version 0 loses
    bad = f"{ns}bad"
    await store.create_group(bad, "g")

    async def one(n: int) -> TransactResult:
        return await store.transact([CasOp(f"{ns}k{n}", 0, b"mine"), AppendOp(stream, f"r{n}".encode())])

    async def failing() -> None:
        with pytest.raises(StoreError):
            await store.transact([AppendOp(bad, b"never"), AckOp(bad, "g", ("not-an-id",))])

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(n)) for n in range(20)]
        tg.create_task(failing())
        tasks += [tg.create_task(one(n)) for n in range(20, 40)]
    results = [task.result() for task in tasks]
    assert [r.ok for r in results] == [n % 2 == 1 for n in range(40)]
    assert all(r.versions == (1,) for r in results)  # the new version, or the one that won
    assert sorted(records(await store.read(stream))) == sorted(f"r{n}".encode() for n in range(1, 40, 2))
    for n in range(40):
        assert (await store.get(f"{ns}k{n}")) == Versioned(b"mine" if n % 2 else b"taken", 1)
    assert records(await store.read(bad)) in ([], [b"never"])  # no rollback promised for errors


async def test_concurrent_transacts_keep_each_senders_order(store: Store, ns: str) -> None:
    """Senders that each wait for one transaction before the next: every stream holds each
    sender's records in the order it sent them, ids increasing, nothing lost or doubled."""
    shared = f"{ns}shared"

    async def sender(n: int) -> None:
        own = f"{ns}own{n}"
        for i in range(25):
            result = await store.transact(
                [AppendOp(own, f"{i}".encode()), AppendOp(shared, f"{n}:{i}".encode())]
            )
            assert result.ok
            assert len(result.ids) == 2

    async with asyncio.TaskGroup() as tg:
        for n in range(10):
            tg.create_task(sender(n))
    for n in range(10):
        assert records(await store.read(f"{ns}own{n}")) == [f"{i}".encode() for i in range(25)]
    entries = await store.read(shared)
    assert len(entries) == 250
    for n in range(10):
        assert [e.record for e in entries if e.record.startswith(f"{n}:".encode())] == [
            f"{n}:{i}".encode() for i in range(25)
        ]


# ---------------------------------------------------------------------------- leases


async def test_acquire_conflict_and_release(store: Store, ns: str) -> None:
    lease = f"{ns}lease"
    assert await store.holder(lease) is None
    assert await store.epoch(lease) == 0
    assert await store.acquire(lease, "a", 10) == 1
    assert await store.holder(lease) == "a"
    assert await store.acquire(lease, "b", 10) == 0
    assert await store.acquire(lease, "a", 10) == 1  # the holder re-acquires (renews): same epoch
    assert await store.release(lease, "b") is False
    assert await store.holder(lease) == "a"
    assert await store.release(lease, "a") is True
    assert await store.release(lease, "a") is False
    assert await store.holder(lease) is None
    assert await store.epoch(lease) == 1  # the epoch outlives the holding
    assert await store.acquire(lease, "b", 10) == 2
    assert await store.holder(lease) == "b"
    assert await store.epoch(lease) == 2


async def test_renew_only_by_holder(store: Store, ns: str) -> None:
    lease = f"{ns}lease"
    assert await store.renew(lease, "a", 10) is False  # nobody holds it
    await store.acquire(lease, "a", 10)
    assert await store.renew(lease, "a", 10) is True
    assert await store.renew(lease, "b", 10) is False
    assert await store.holder(lease) == "a"
    assert await store.epoch(lease) == 1  # renewals keep the epoch


async def test_renew_extends_the_lease(store: Store, ns: str) -> None:
    lease, control = f"{ns}lease", f"{ns}control"
    await store.acquire(lease, "a", 0.3)
    await store.acquire(control, "a", 0.3)  # taken later, with the same ttl, never renewed
    assert await store.renew(lease, "a", 10) is True
    await until(lambda: expired(store, control), "the control lease to run out")
    assert await store.holder(lease) == "a"  # its first ttl ran out before the control's


async def test_lease_expires_after_ttl(store: Store, ns: str) -> None:
    lease = f"{ns}lease"
    assert await store.acquire(lease, "a", 0.2) == 1
    await until(lambda: expired(store, lease), "the lease to run out")
    assert await store.renew(lease, "a", 10) is False
    assert await store.acquire(lease, "b", 10) == 2
    assert await store.holder(lease) == "b"
    assert await store.release(lease, "a") is False


async def test_retaking_an_expired_lease_is_a_new_epoch(store: Store, ns: str) -> None:
    """The same owner taking its lease back after it ran out may have missed another
    holder in between: it gets a new epoch, so its old fences stop holding."""
    lease = f"{ns}lease"
    assert await store.acquire(lease, "a", 0.2) == 1
    await until(lambda: expired(store, lease), "the lease to run out")
    assert await store.acquire(lease, "a", 10) == 2


async def test_concurrent_acquire_has_one_winner(store: Store, ns: str) -> None:
    lease = f"{ns}lease"
    results = await asyncio.gather(*(store.acquire(lease, f"o{i}", 10) for i in range(10)))
    assert sorted(results) == [0] * 9 + [1]
    assert await store.holder(lease) == f"o{results.index(1)}"


# ---------------------------------------------------------------------------- fencing


async def test_fenced_writes_need_the_current_epoch(store: Store, ns: str) -> None:
    lease, stream = f"{ns}lease", f"{ns}events"
    first = await store.acquire(lease, "old", 0.2)
    ok = await store.transact([FenceOp(lease, first, "old"), AppendOp(stream, b"e1")])
    assert ok.ok
    assert not ok.fenced
    assert len(ok.ids) == 1
    await until(lambda: expired(store, lease), "the lease to run out")
    second = await store.acquire(lease, "new", 10)
    assert second == first + 1
    refused = await store.transact(
        [FenceOp(lease, first, "old"), AppendOp(stream, b"late"), CasOp(f"{ns}k", 0, b"v")]
    )
    assert refused == TransactResult(ok=False, fenced=True)
    # epoch only (a worker's report): the epoch must still be the one it was given
    assert (await store.transact([FenceOp(lease, first), AppendOp(stream, b"late")])).fenced
    assert (await store.transact([FenceOp(lease, second), AppendOp(stream, b"e2")])).ok
    assert [e.record for e in await store.read(stream)] == [b"e1", b"e2"]
    assert await store.get(f"{ns}k") is None


async def test_a_fence_needs_a_live_holder_when_it_names_one(store: Store, ns: str) -> None:
    lease, stream = f"{ns}lease", f"{ns}events"
    epoch = await store.acquire(lease, "a", 10)
    assert (await store.transact([FenceOp(lease, epoch, "b"), AppendOp(stream, b"x")])).fenced
    await store.release(lease, "a")
    assert (await store.transact([FenceOp(lease, epoch, "a"), AppendOp(stream, b"x")])).fenced
    assert (await store.transact([FenceOp(lease, epoch), AppendOp(stream, b"x")])).ok  # epoch only
    assert (await store.transact([FenceOp(f"{ns}never", 1), AppendOp(stream, b"x")])).fenced
    assert await store.length(stream) == 1


async def test_every_fence_of_a_write_must_hold(store: Store, ns: str) -> None:
    """An attempt's report carries two fences (its epoch, and its orchestrator's hold of the
    lease): one that fails refuses the write, whichever it is."""
    lease, other, stream = f"{ns}lease", f"{ns}other", f"{ns}events"
    epoch = await store.acquire(lease, "a", 10)
    held = await store.acquire(other, "b", 10)
    both = [FenceOp(lease, epoch), FenceOp(other, held, "b")]
    assert (await store.transact([*both, AppendOp(stream, b"ok")])).ok
    for stale in ([FenceOp(lease, epoch + 1), both[1]], [both[0], FenceOp(other, held, "c")]):
        assert (await store.transact([*stale, AppendOp(stream, b"late")])).fenced
        assert (await store.transact([*reversed(stale), AppendOp(stream, b"late")])).fenced
    alone = await store.transact([AppendOp(stream, b"unfenced")])
    assert alone.ok
    assert [e.record for e in await store.read(stream)] == [b"ok", b"unfenced"]
    assert alone.ids == ((await store.read(stream))[-1].id,)


async def test_fence_is_checked_before_compare_and_set(store: Store, ns: str) -> None:
    lease = f"{ns}lease"
    epoch = await store.acquire(lease, "a", 10)
    await store.set(f"{ns}k", b"v1")
    conflict = await store.transact([FenceOp(lease, epoch, "a"), CasOp(f"{ns}k", 0, b"v2")])
    assert not conflict.ok
    assert not conflict.fenced
    assert conflict.versions == (1,)
    done = await store.transact([FenceOp(lease, epoch, "a"), CasOp(f"{ns}k", 1, b"v2")])
    assert done.ok
    assert done.versions == (2,)
    with pytest.raises(ValueError, match="epoch"):
        await store.transact([FenceOp(lease, 0, "a")])


async def test_arguments_mean_the_same_on_every_backend(store: Store, ns: str) -> None:
    """A count below 1 reads and delivers nothing; a negative maxlen is ValueError before any
    I/O (the same on SQLite, Redis and Redis Cluster: checked in the protocol layer)."""
    stream = f"{ns}s"
    await store.create_group(stream, "g")
    ids = await append_all(store, stream, numbered(3))
    for count in (0, -1):
        assert await store.read(stream, "0", count=count) == []
        assert await store.read_group(stream, "g", "c", count=count) == []
        assert await store.read_groups([stream], "g", "c", count=count) == {}
        assert await store.pending(stream, "g", count=count) == []
        assert await store.claim_stale(stream, "g", "c", min_idle_s=0, count=count) == []
        assert await store.unacknowledged(stream, "g", count=count) == []
    assert [e.id for e in await store.read_group(stream, "g", "c")] == ids  # nothing was delivered
    for bad in (-1, -100):
        with pytest.raises(ValueError, match="maxlen"):
            await store.append(stream, b"x", maxlen=bad)
        with pytest.raises(ValueError, match="maxlen"):
            await store.trim(stream, bad)
        with pytest.raises(ValueError, match="maxlen"):
            await store.transact([AppendOp(stream, b"x", maxlen=bad)])
    assert await store.length(stream) == 3  # the refused appends wrote nothing
