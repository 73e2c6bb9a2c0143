"""SQLite-only behaviour: several OS processes on one file, the file itself, error messages.

The protocol-level behaviour is in ``contract.py``; these tests open ``SqliteStore`` directly.
Other processes are ``python -c`` children running small scripts against the same file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from maos.errors import StoreDataError, StoreError, StoreUnavailable
from maos.store import AppendOp, CasOp, Entry, FenceOp, Versioned, open_store
from maos.store import sqlite as sqlite_module
from maos.store.sqlite import SqliteStore, _prefix_end
from tests.readiness import readers_blocked, until


async def open_at(path: Path) -> SqliteStore:
    return await SqliteStore.open(path, url=f"sqlite:///{path}")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "maos.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await open_at(db_path)
    try:
        yield opened
    finally:
        await opened.close()


# ---------------------------------------------------------------------------- other processes

_PRELUDE = """
import asyncio, json, sys, time
from pathlib import Path
from maos.store.sqlite import SqliteStore

async def open_store():
    return await SqliteStore.open(Path(sys.argv[1]), url="sqlite:///" + sys.argv[1])
"""


async def run_child(script: str, *args: str, timeout_s: float = 60) -> str:
    """Run ``script`` in a new Python process; return its stdout, fail on a non-zero exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PRELUDE + script,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except BaseException:
        proc.kill()
        await proc.communicate()
        raise
    assert proc.returncode == 0, err.decode()
    return out.decode()


_CAS_RACER = """
async def main(key, me, other, rounds):
    store = await open_store()
    won = []
    try:
        for r in range(1, rounds + 1):
            # Barrier: both processes have finished round r - 1 before either tries round r.
            await store.set(f"{key}:ready:{me}:{r}", b"")
            while await store.get(f"{key}:ready:{other}:{r}") is None:
                await asyncio.sleep(0.0005)
            result = await store.cas(key, r - 1, me.encode())
            if result.ok:
                won.append(r)
            elif result.version != r:
                raise SystemExit(f"round {r}: lost, but the version is {result.version}")
    finally:
        await store.close()
    print(json.dumps(won))

asyncio.run(main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
"""


async def test_two_processes_race_cas_one_winner_per_round(store: SqliteStore, db_path: Path) -> None:
    rounds = 40
    out_a, out_b = await asyncio.gather(
        run_child(_CAS_RACER, str(db_path), "race", "a", "b", str(rounds)),
        run_child(_CAS_RACER, str(db_path), "race", "b", "a", str(rounds)),
    )
    won_a, won_b = set(json.loads(out_a)), set(json.loads(out_b))
    assert won_a.isdisjoint(won_b)
    assert won_a | won_b == set(range(1, rounds + 1))
    final = await store.get("race")
    assert final is not None
    assert final.version == rounds


_APPEND_AND_TIME = """
async def main(stream):
    store = await open_store()
    try:
        rid = await store.append(stream, b"from the child")
        print(json.dumps({"id": rid, "at": time.time()}))
    finally:
        await store.close()

asyncio.run(main(sys.argv[2]))
"""


async def test_blocked_read_wakes_on_append_by_another_process(store: SqliteStore, db_path: Path) -> None:
    await store.append("s", b"old")
    last = await store.last_id("s")
    woke_at = 0.0

    async def reader() -> list[str]:
        nonlocal woke_at
        entries = await store.read("s", last, block_s=60)
        woke_at = time.time()
        return [e.id for e in entries]

    waiting = asyncio.create_task(reader())
    await readers_blocked(store)  # the child's append wakes it: it does not find it at once
    child = json.loads(await run_child(_APPEND_AND_TIME, str(db_path), "s"))
    assert await asyncio.wait_for(waiting, 10) == [child["id"]]
    # The poller looks every few milliseconds; allow a lot more for a loaded machine.
    assert woke_at - child["at"] < 1.0


async def test_other_process_append_is_noticed_among_own_appends(store: SqliteStore, db_path: Path) -> None:
    # This store keeps appending to another stream while the child appends to "x": the ids
    # interleave, and our own appends must not hide the child's from the poller.
    woke_at = 0.0

    async def reader() -> list[bytes]:
        nonlocal woke_at
        entries = await store.read("x", block_s=60)
        woke_at = time.time()
        return [e.record for e in entries]

    async def busy() -> None:
        while True:
            await store.append("y", b"noise")
            await asyncio.sleep(0.0005)

    waiting = asyncio.create_task(reader())
    await readers_blocked(store)
    noise = asyncio.create_task(busy())
    try:
        child = json.loads(await run_child(_APPEND_AND_TIME, str(db_path), "x"))
        assert await asyncio.wait_for(waiting, 10) == [b"from the child"]
    finally:
        noise.cancel()
        await asyncio.gather(noise, return_exceptions=True)
    assert woke_at - child["at"] < 1.0


async def test_blocked_read_group_wakes_on_append_by_another_process(
    store: SqliteStore, db_path: Path
) -> None:
    await store.create_group("s", "g")
    waiting = asyncio.create_task(store.read_group("s", "g", "c", block_s=60))
    await readers_blocked(store)
    child = json.loads(await run_child(_APPEND_AND_TIME, str(db_path), "s"))
    entries = await asyncio.wait_for(waiting, 10)
    assert [(e.id, e.record) for e in entries] == [(child["id"], b"from the child")]


_READ_THEN_WRITE = """
async def main():
    store = await open_store()
    try:
        got = await store.get("from-parent")
        await store.set("from-child", b"hello parent")
        await store.append("log", b"child record")
        print(json.dumps({"value": got.value.decode(), "version": got.version}))
    finally:
        await store.close()

asyncio.run(main())
"""


async def test_processes_see_each_others_writes(store: SqliteStore, db_path: Path) -> None:
    await store.set("from-parent", b"one")
    await store.set("from-parent", b"hello child")
    await store.append("log", b"parent record")
    child = json.loads(await run_child(_READ_THEN_WRITE, str(db_path)))
    assert child == {"value": "hello child", "version": 2}
    got = await store.get("from-child")
    assert got is not None
    assert got.value == b"hello parent"
    assert [e.record for e in await store.read("log")] == [b"parent record", b"child record"]


async def test_two_stores_in_one_process_share_the_file(store: SqliteStore, db_path: Path) -> None:
    other = await open_at(db_path)
    try:
        waiting = asyncio.create_task(other.read("s", block_s=10))
        await readers_blocked(other)
        rid = await store.append("s", b"x")
        assert [e.id for e in await asyncio.wait_for(waiting, 5)] == [rid]
        assert await other.acquire("lease", "a", 10) == 1
        assert await store.acquire("lease", "b", 10) == 0
    finally:
        await other.close()


# ---------------------------------------------------------------------------- the file


async def test_creates_parent_directories_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "maos.db"
    opened = await open_at(path)
    await opened.set("k", b"v")
    await opened.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM kv WHERE key = 'k'").fetchone()[0] == b"v"
    finally:
        conn.close()


async def test_reopening_keeps_data(db_path: Path) -> None:
    first = await open_at(db_path)
    await first.set("k", b"v")
    rid = await first.append("s", b"r")
    await first.close()
    second = await open_at(db_path)
    try:
        assert (await second.get("k")) is not None
        assert await second.last_id("s") == rid
    finally:
        await second.close()


async def test_default_path_is_created_by_open_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    opened = await open_store(None)
    try:
        assert isinstance(opened, SqliteStore)
        assert (tmp_path / ".maos" / "maos.db").is_file()
        await opened.set("k", b"v")
    finally:
        await opened.close()


async def test_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    content = b"these are my notes, not a database\n" * 50
    path.write_bytes(content)
    with pytest.raises(StoreDataError, match="not a SQLite database") as caught:
        await open_at(path)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


async def test_tiny_non_database_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(b"hi")
    with pytest.raises(StoreDataError):
        await open_at(path)
    assert path.read_bytes() == b"hi"


async def test_empty_file_becomes_a_database(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    opened = await open_at(path)
    try:
        assert await opened.set("k", b"v") == 1
    finally:
        await opened.close()


async def test_directory_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="is a directory"):
        await open_at(tmp_path)


async def test_newer_schema_is_refused(db_path: Path) -> None:
    await (await open_at(db_path)).close()
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreDataError, match="newer"):
        await open_at(db_path)


async def test_a_version_1_file_gains_lease_epochs(db_path: Path) -> None:
    """A store written before leases had epochs opens, keeps its lease, and fences from then on."""
    conn = sqlite3.connect(db_path)
    conn.execute(
        "CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL) "
        "WITHOUT ROWID"
    )
    conn.execute("INSERT INTO leases VALUES ('run', 'old', ?)", (time.time() + 60,))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    opened = await open_at(db_path)
    try:
        assert await opened.holder("run") == "old"
        assert await opened.epoch("run") == 0
        assert await opened.acquire("run", "old", 60) == 1  # its holder's first epoch
        assert await opened.acquire("run", "new", 60) == 0
    finally:
        await opened.close()
    check = sqlite3.connect(db_path)
    assert check.execute("PRAGMA user_version").fetchone() == (sqlite_module.SCHEMA_VERSION,)
    check.close()


async def test_locked_database_gives_a_clear_error(
    store: SqliteStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_S", 0.1)
    impatient = await open_at(db_path)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="is locked") as caught:
            await impatient.set("k", b"v")
        assert str(db_path) in str(caught.value)
        assert f"process {os.getpid()} (" in str(caught.value)  # the kernel says who holds it
        assert "holds it; retry, or stop that process" in str(caught.value)
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        blocker.execute("ROLLBACK")
        assert await impatient.set("k", b"v") == 1  # usable again once the lock is gone
    finally:
        blocker.close()
        await impatient.close()


async def test_a_write_waits_for_a_lock_held_briefly_by_another_connection(
    store: SqliteStore, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's own connection fails busy at once (busy_timeout 0) and retries by itself."""
    blocker = sqlite3.connect(db_path, isolation_level=None)
    caplog.set_level(logging.DEBUG, logger="maos.store.sqlite")
    try:
        blocker.execute("BEGIN IMMEDIATE")
        writes = asyncio.gather(
            store.set("k", b"v"),
            store.transact([CasOp("c", 0, b"1"), AppendOp("s", b"r")]),
            store.append("s", b"r2"),
        )
        await until(lambda: "found the database locked" in caplog.text, "the first write to find the lock")
        assert not writes.done()  # it waits, and does not fail
        blocker.execute("ROLLBACK")
        version, result, _ = await asyncio.wait_for(writes, 10)
        assert version == 1
        assert result.ok
        assert [e.record for e in await store.read("s")] == [b"r", b"r2"]
    finally:
        blocker.close()


# ---------------------------------------------------------------------------- lifecycle


async def test_closed_store_raises(db_path: Path) -> None:
    opened = await open_at(db_path)
    await opened.close()
    await opened.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await opened.get("k")
    with pytest.raises(StoreError, match="closed"):
        await opened.append("s", b"x")


async def test_close_wakes_blocked_readers_with_an_error(db_path: Path) -> None:
    opened = await open_at(db_path)
    waiting = asyncio.create_task(opened.read("s", block_s=30))
    await readers_blocked(opened)
    await opened.close()
    with pytest.raises(StoreError, match="closed"):
        await asyncio.wait_for(waiting, 5)


async def test_cancelled_blocked_read_leaves_the_store_usable(store: SqliteStore) -> None:
    waiting = asyncio.create_task(store.read("s", block_s=30))
    await readers_blocked(store)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    rid = await store.append("s", b"x")
    assert [e.id for e in await store.read("s", block_s=1)] == [rid]


async def test_cancelled_append_that_happened_still_wakes_readers(store: SqliteStore, db_path: Path) -> None:
    reader = asyncio.create_task(store.read("s", block_s=30))
    await readers_blocked(store)
    appending = asyncio.create_task(store.append("s", b"x"))
    await asyncio.sleep(0)  # queued on the worker
    # Block the loop until the worker has committed: the cancel lands after the append happened.
    with closing(sqlite3.connect(db_path)) as look:
        deadline = time.monotonic() + 10
        while not look.execute("SELECT 1 FROM records WHERE stream = 's'").fetchone():
            assert time.monotonic() < deadline, "the append was never committed"
            time.sleep(0.001)
    appending.cancel()
    await asyncio.gather(appending, return_exceptions=True)
    assert records_of(await asyncio.wait_for(reader, 5)) == [b"x"]


def records_of(entries: list[Entry]) -> list[bytes]:
    return [e.record for e in entries]


# ---------------------------------------------------------------------------- ids and keys


async def test_ids_compare_as_numbers_not_strings(store: SqliteStore) -> None:
    ids = [await store.append("s", str(i).encode()) for i in range(12)]
    assert ids == [str(i) for i in range(1, 13)]  # a fresh file: ids 1..12, crossing 9 -> 10
    assert [e.id for e in await store.read("s", "9")] == ["10", "11", "12"]
    assert await store.last_id("s") == "12"
    await store.create_group("s", "g", start="9")
    assert [e.id for e in await store.read_group("s", "g", "c")] == ["10", "11", "12"]
    assert await store.ack("s", "g", ["10", "9"]) == 1


async def test_ids_are_not_reused_after_trimming_everything(store: SqliteStore) -> None:
    first = await store.append("s", b"a")
    await store.trim("s", 0)
    assert int(await store.append("s", b"b")) > int(first)


async def test_malformed_id_is_a_store_error(store: SqliteStore) -> None:
    with pytest.raises(StoreError, match="not a stream id"):
        await store.read("s", "1700000000000-0")


async def test_maxlen_keeps_small_streams_exact(store: SqliteStore) -> None:
    for i in range(20):
        await store.append("s", str(i).encode(), maxlen=5)
    assert [e.record for e in await store.read("s")] == [b"15", b"16", b"17", b"18", b"19"]


async def test_maxlen_large_is_approximate_and_bounded(store: SqliteStore) -> None:
    for i in range(400):
        await store.append("s", str(i).encode(), maxlen=160)
    assert 160 <= await store.length("s") <= 160 + 160 // 16


async def test_scan_with_extreme_code_points(store: SqliteStore) -> None:
    keys = ["a", "a\U0010ffff", "a\U0010ffff\U0010ffff", "a\ud7ff", "a\ue000", "b", "a\U0010ffffz"]
    for key in keys:
        await store.set(key, b"")
    assert [kv.key for kv in await store.scan("a\U0010ffff")] == sorted(
        k for k in keys if k.startswith("a\U0010ffff")
    )
    assert [kv.key for kv in await store.scan("a\ud7ff")] == ["a\ud7ff"]
    assert [kv.key for kv in await store.scan("a")] == sorted(k for k in keys if k.startswith("a"))


def test_prefix_end() -> None:
    assert _prefix_end("") is None
    assert _prefix_end("ab") == "ac"
    assert _prefix_end("a\ud7ff") == "a\ue000"
    assert _prefix_end("a\U0010ffff") == "b"
    assert _prefix_end("\U0010ffff") is None


async def test_a_second_store_on_the_same_file_keeps_this_process_locks(tmp_path: Path) -> None:
    """Opening the file again in a process that has it open must not drop the process's POSIX
    locks (closing any descriptor of a file does): another process closing the database would
    then take itself for its last user and delete the -wal file under the first store."""
    url = f"sqlite:///{tmp_path / 'maos.db'}"
    first = await open_store(url)
    second = await open_store(url)  # as a worker's door endpoint beside the worker's store
    try:
        await first.set("k", b"v")
        other = (
            "import asyncio\n"
            "from maos.store import open_store\n"
            "async def main():\n"
            f"    store = await open_store({url!r})\n"
            "    await store.get('k')\n"
            "    await store.close()\n"
            "asyncio.run(main())\n"
        )
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", other)
        assert await process.wait() == 0
        assert (tmp_path / "maos.db-wal").exists()
        await first.set("k2", b"v2")
        assert (await second.get("k2")) is not None
    finally:
        await second.close()
        await first.close()
    with closing(sqlite3.connect(tmp_path / "maos.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# ---------------------------------------------------------------------------- what others wrote


def write_as_another_program(db_path: Path, *statements: str) -> None:
    """What the sqlite3 CLI (or any program) can put in the file: TEXT that is not UTF-8,
    numbers where MAOS writes BLOBs, text where it writes numbers."""
    with closing(sqlite3.connect(db_path)) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.commit()


async def test_records_and_values_of_any_sqlite_type_read_back_as_bytes(
    store: SqliteStore, db_path: Path
) -> None:
    await store.create_group("s", "g")
    write_as_another_program(
        db_path,
        "INSERT INTO records (stream, record) VALUES "
        "('s', CAST(X'7BFF' AS TEXT)), ('s', 12345), ('s', 1.5), ('s', 'text')",
        "INSERT INTO kv (key, value, version) VALUES "
        "('k:text', CAST(X'7BFF' AS TEXT), 1), ('k:int', 42, 'x'), (CAST(X'6B3AFF' AS TEXT), 'v', 1)",
        "INSERT INTO leases (name, owner, expires_at, epoch) VALUES "
        "('l', CAST(X'FF' AS TEXT), 'soon', 'x'), ('m', CAST(X'FF' AS TEXT), 1e300, 2)",
    )
    expected = [b"{\xff", b"12345", b"1.5", b"text"]
    assert records_of(await store.read("s")) == expected
    assert records_of(await store.read_group("s", "g", "c")) == expected
    assert records_of(await store.unacknowledged("s", "g") or []) == expected
    assert records_of(await store.claim_stale("s", "g", "c", min_idle_s=0)) == expected
    assert await store.get("k:text") == Versioned(b"{\xff", 1)
    assert await store.get("k:int") == Versioned(b"42", 0)  # a version that is no number
    assert [(kv.key, kv.value) for kv in await store.scan("k:")] == [
        ("k:int", b"42"),
        ("k:text", b"{\xff"),
        ("k:\ufffd", b"v"),
    ]
    assert await store.holder("l") is None
    assert await store.epoch("l") == 0
    assert await store.holder("m") == "\ufffd"
    assert await store.acquire("l", "me", 5) == 1


async def test_a_fifo_path_is_refused_without_blocking(tmp_path: Path) -> None:
    """``maos.store.check_store_url`` refuses a FIFO first; this is for one put there since."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(StoreUnavailable, match="is not a regular file"):
        await asyncio.wait_for(open_at(fifo), 10)


@pytest.mark.parametrize(
    ("owner", "expires_at", "epoch"),
    [
        (b"me", 1e12, 3),  # a BLOB owner (the columns' types are not enforced in old files)
        ("me", "99999999999", "3"),  # numbers as text
        ("me", 1e12, "3abc"),
        ("me", 1e12, 3.0),
        ("me", 0, 3),  # expired
        ("other", 1e12, 3),
        ("me", 1e12, 4),
    ],
)
async def test_a_write_under_a_fence_reads_a_tampered_lease_row_one_way(
    store: SqliteStore, db_path: Path, owner: object, expires_at: object, epoch: object
) -> None:
    """Whatever another program wrote in the lease row, an append under a fence (one INSERT
    that tests it) and a compare-and-set under the same fence (a transaction that asks it)
    are both let through or both refused."""

    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute(
            "INSERT INTO leases (name, owner, expires_at, epoch) VALUES (?, ?, ?, ?)",
            ("lease", owner, expires_at, epoch),
        )
    fence = FenceOp("lease", 3, "me")
    appended = await store.transact([fence, AppendOp("s", b"x")])
    compared = await store.transact([fence, CasOp("k", 0, b"v")])
    assert appended.fenced == compared.fenced
    assert appended.ok == compared.ok
