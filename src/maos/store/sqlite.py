"""SQLite backend of the ``Store`` protocol: one file in WAL mode, shared by processes on one host.

Threads. sqlite3 calls block, so each store runs them on one dedicated worker thread that owns
the connection (a single-thread executor). Calls of one store are therefore serialized, which
SQLite would do for writes anyway. Other stores and other processes on the same file
coordinate through SQLite's own locks: every write takes the write lock up front (``BEGIN
IMMEDIATE``, or a single statement, which SQLite runs the same way), so a transaction never
fails half way on a stale snapshot. Every method of the worker's ``_Db`` is one transaction,
one statement or only reads, so a call that finds the lock taken (SQLITE_BUSY) is simply run
again after a short jittered sleep (``BUSY_FIRST_SLEEP_S`` doubling to ``BUSY_MAX_SLEEP_S``),
for up to ``BUSY_TIMEOUT_S``; SQLite's own busy handler, whose sleeps grow to tens of
milliseconds, is off.

Blocking reads. A reader that finds nothing waits on a future registered under each of its
streams. Appends made through this store resolve those directly, so a reader in the same
process wakes at once. Appends made by other processes are noticed by one poller thread per
store, shared by all its waiting readers: while at least one reader waits, it reads the
records table's autoincrement counter every ``POLL_INTERVAL_S``, and when the counter moved
past the ids this store already announced, wakes the readers of the streams those new
records belong to.

The GIL. The worker (and the poller) come back from each sqlite3 call, which runs without the
GIL, needing it again; while the event loop's thread runs Python, CPython makes them wait up
to its switch interval, 5 ms by default, before it hands the GIL over. A store operation
awaited by the loop could so take 5 ms longer than its query: the bus's p99 latency on SQLite
was that wait. Opening a store lowers the interval to ``SWITCH_INTERVAL_S`` (never raises it).

Schema (``PRAGMA user_version`` = ``SCHEMA_VERSION``)::

    kv       (key, value, version)                    version >= 1; a deleted key has no row
    records  (id AUTOINCREMENT, stream, record)       ids are global, so they increase per stream
    groups   (stream, grp, last_delivered)            consumer groups
    pending  (stream, grp, id, consumer, delivered_at, deliveries)
    leases   (name, owner, expires_at, epoch)         wall clock, seconds since the epoch; a
                                                      released lease keeps its row (expires_at
                                                      0) so that its epoch keeps growing

Version 2 added ``leases.epoch``; a version 1 file is upgraded in place when opened.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import random
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

from maos.errors import NoSuchGroup, StoreDataError, StoreError, StoreUnavailable
from maos.filemodes import private_dir, touch_private
from maos.store.base import (
    AckOp,
    AppendOp,
    CasOp,
    CasResult,
    Entry,
    FenceOp,
    KeyValue,
    PendingEntry,
    TransactResult,
    Versioned,
    WriteOp,
    check_maxlen,
    check_ops,
)

log = logging.getLogger("maos.store.sqlite")

T = TypeVar("T")
R = TypeVar("R", list[Entry], dict[str, list[Entry]])
Ts = TypeVarTuple("Ts")

SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 30.0
"""How long a write waits for another connection's write lock before failing."""
BUSY_FIRST_SLEEP_S = 0.0002
BUSY_MAX_SLEEP_S = 0.002
"""A write that finds the lock taken tries again after a jittered sleep that doubles from the
first to the max. SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20… ms: with several
processes writing, its waits made the tail latency."""
POLL_INTERVAL_S = 0.002
"""How often a waiting reader's poller looks for appends made by other processes."""
SWITCH_INTERVAL_S = 0.0005
"""The interpreter's thread switch interval once a store is open (``sys.setswitchinterval``)."""

_SQLITE_HEADER = b"SQLite format 3\x00"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kv (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        version INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS records (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        stream TEXT NOT NULL,
        record BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS records_by_stream ON records (stream, id)",
    """CREATE TABLE IF NOT EXISTS groups (
        stream TEXT NOT NULL,
        grp TEXT NOT NULL,
        last_delivered INTEGER NOT NULL,
        PRIMARY KEY (stream, grp)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS pending (
        stream TEXT NOT NULL,
        grp TEXT NOT NULL,
        id INTEGER NOT NULL,
        consumer TEXT NOT NULL,
        delivered_at REAL NOT NULL,
        deliveries INTEGER NOT NULL,
        PRIMARY KEY (stream, grp, id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at REAL NOT NULL,
        epoch INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
)

# _Db._fenced_append: an append that happens only while a lease is at an epoch (and held live
# by an owner), tested in the INSERT itself; _Db._fence_holds asks the same test as a query.
_FENCED_INSERT_SQL = "INSERT INTO records (stream, record) SELECT ?, ? WHERE "
_FENCE_TEST_SQL = "EXISTS (SELECT 1 FROM leases WHERE name = ? AND CAST(epoch AS INTEGER) = ?)"
_FENCE_OWNER_TEST_SQL = (
    "EXISTS (SELECT 1 FROM leases WHERE name = ? AND CAST(epoch AS INTEGER) = ? "
    "AND CAST(owner AS TEXT) = ? AND CAST(expires_at AS REAL) > ?)"
)
_SEQ_SQL = "SELECT seq FROM sqlite_sequence WHERE name = 'records'"

# The file is store contents, which any program may have written (the sqlite3 CLI stores
# TEXT, numbers, TEXT that is not UTF-8): values and records are read as BLOBs, numbers
# as numbers (text that is none reads as 0), and text through ``_text`` (see ``_connect``).
_SCAN_SQL = "SELECT key, CAST(value AS BLOB), CAST(version AS INTEGER) FROM kv "
_LEASE_SQL = "SELECT owner, CAST(expires_at AS REAL), CAST(epoch AS INTEGER) FROM leases WHERE name = ?"


# ---------------------------------------------------------------------------- errors


def _code(exc: sqlite3.Error) -> int:
    """The primary result code of ``exc`` (SQLITE_BUSY for SQLITE_BUSY_SNAPSHOT, ...)."""
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF


def _is_busy(exc: sqlite3.Error) -> bool:
    return _code(exc) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


_WAL_WRITE_LOCK_BYTE = 120
"""SQLite's unix VFS takes a WAL database's write lock as a POSIX lock on this byte of the
``-shm`` file (``UNIX_SHM_BASE`` + ``WAL_WRITE_LOCK``), so the kernel knows who holds it."""


def _lock_holder(path: Path) -> str:
    """What to do about the write lock of ``path``: which process holds it, when the kernel
    says (``/proc/locks``), and whether it is stopped (Ctrl-Z, SIGSTOP), as a stopped
    process holds the lock until it is continued or killed."""
    advice = "retry, or stop the process that keeps it busy"
    try:
        shm = Path(f"{path}-shm").stat()
        locks = Path("/proc/locks").read_text()
    except OSError:
        return advice
    device = f"{os.major(shm.st_dev):02x}:{os.minor(shm.st_dev):02x}:{shm.st_ino}"
    wanted = ["POSIX", "ADVISORY", "WRITE", device, str(_WAL_WRITE_LOCK_BYTE)]
    for line in locks.splitlines():
        fields = line.split()  # N: POSIX ADVISORY WRITE PID MAJ:MIN:INODE START END
        if [*fields[1:4], *fields[5:7]] != wanted:
            continue
        pid = fields[4]
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return advice
        holder = f"process {pid} ({command.strip()[:120]}) holds it"
        if state in ("T", "t"):
            return f"{holder} and is stopped: continue it (kill -CONT {pid}) or end it"
        return f"{holder}; retry, or stop that process"
    return advice


def _translate(exc: sqlite3.Error, path: Path) -> StoreError:
    """A ``StoreError`` that names the file and says what to do about ``exc``."""
    code = _code(exc)
    if _is_busy(exc):
        return StoreUnavailable(
            f"SQLite store {path} is locked: another connection held its write lock for more "
            f"than {BUSY_TIMEOUT_S:g} s ({exc}); {_lock_holder(path)}"
        )
    if code == sqlite3.SQLITE_FULL:
        return StoreError(f"SQLite store {path}: the disk is full ({exc}); free some space and retry")
    if code == sqlite3.SQLITE_NOTADB:
        return StoreDataError(
            f"{path} is not a SQLite database ({exc}); pass another path with --store sqlite:///PATH "
            "or move the file away"
        )
    if code == sqlite3.SQLITE_CORRUPT:
        return StoreDataError(
            f"SQLite store {path} is corrupt ({exc}); restore it from a backup or move it away "
            "to start with an empty store"
        )
    if code == sqlite3.SQLITE_CANTOPEN:
        return StoreUnavailable(
            f"cannot open SQLite store {path} ({exc}); check that its directory exists and is writable"
        )
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH):
        return StoreUnavailable(
            f"SQLite store {path} is not writable ({exc}); check the permissions of the file "
            "and of its directory (the -wal and -shm files live next to it)"
        )
    if code == sqlite3.SQLITE_IOERR:
        return StoreError(f"I/O error on SQLite store {path} ({exc}); check the disk and retry")
    return StoreError(f"SQLite store {path} failed: {exc}")


def _check_header(path: Path) -> None:
    """Refuse a non-empty file that is not a SQLite database before SQLite touches it."""
    try:
        # O_NONBLOCK: a FIFO must not block the open (check_store_url refuses one; this is for
        # one put there since).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:  # IsADirectoryError for a folder
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreUnavailable(f"{path} is not a regular file, not a SQLite database file")
            head = f.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        return
    except IsADirectoryError as exc:
        raise StoreUnavailable(
            f"{path} is a directory, not a SQLite database file; pass a file path with --store sqlite:///PATH"
        ) from exc
    except OSError as exc:
        raise StoreUnavailable(f"cannot read SQLite store {path}: {exc}") from exc
    if head and head != _SQLITE_HEADER:
        raise StoreDataError(
            f"{path} is not a SQLite database (it does not start with the SQLite header); "
            "pass another path with --store sqlite:///PATH or move the file away"
        )


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix``.

    SQLite compares TEXT as UTF-8 bytes, which orders like code points, so the keys with
    ``prefix`` are exactly ``[prefix, _prefix_end(prefix))``. None: no upper bound.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == 0xD800:  # surrogates cannot be stored; skip over them
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


# ---------------------------------------------------------------------------- sync core


class _LiveFiles:
    """The database files this process has open (by device and inode), counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[tuple[int, int], int] = {}

    @staticmethod
    def _key(path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def holds(self, path: Path) -> bool:
        key = self._key(path)
        with self._lock:
            return key is not None and key in self._count

    def add(self, path: Path) -> tuple[int, int] | None:
        key = self._key(path)
        if key is not None:
            with self._lock:
                self._count[key] = self._count.get(key, 0) + 1
        return key

    def remove(self, key: tuple[int, int] | None) -> None:
        if key is None:
            return
        with self._lock:
            left = self._count.get(key, 0) - 1
            if left > 0:
                self._count[key] = left
            else:
                self._count.pop(key, None)


_LIVE = _LiveFiles()


class _Db:
    """The synchronous half of the store: owns the connection, runs on the worker thread only."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._live: tuple[int, int] | None = None
        self._untrimmed: dict[str, int] = {}  # stream -> appends with maxlen since its last trim

    @classmethod
    def open(cls, path: Path) -> _Db:
        if not _LIVE.holds(path):
            # Not while this process has the file open: closing any descriptor of a file
            # drops every POSIX lock the process holds on it, SQLite's included, and another
            # process could then take itself for the last user and delete the -wal file under
            # us ("database disk image is malformed"). SQLite's own connections share their
            # descriptors and locks; only a plain open() of ours does this.
            _check_header(path)
        try:
            private_dir(path.parent)
            # Created 0600 before SQLite opens it: it holds each run's token secret, and SQLite
            # gives the -wal and -shm files the database file's mode.
            touch_private(path)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create the directory of SQLite store {path}: {exc}") from exc
        try:
            conn = _connect(path)
        except sqlite3.Error as exc:
            raise _translate(exc, path) from exc
        db = cls(conn, path)
        db._live = _LIVE.add(path)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                log.warning("SQLite store %s: journal_mode is %s, not wal", path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            db._migrate()
            # From here on a busy write fails at once and the worker retries it (_retrying_busy).
            conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            db.close()
            raise _translate(exc, path) from exc
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self) -> None:
        # Looked at without the write lock first: a file already at this version needs nothing,
        # and a reader (`maos runs`, `maos status`, the dashboard) must not wait for a writer,
        # which may be a stopped process holding the lock for as long as it stays stopped.
        if self._schema_version() == SCHEMA_VERSION:
            return
        with self._write():
            if self._schema_version() < SCHEMA_VERSION:  # another process may have migrated it
                for statement in _SCHEMA:
                    self.conn.execute(statement)
                columns = {row[1] for row in self.conn.execute("PRAGMA table_info(leases)")}
                if "epoch" not in columns:  # a version 1 file
                    self.conn.execute("ALTER TABLE leases ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _schema_version(self) -> int:
        (version,) = self.conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreDataError(
                f"SQLite store {self.path} has schema version {version}, newer than this "
                f"MAOS understands ({SCHEMA_VERSION}); upgrade MAOS"
            )
        return int(version)

    def close(self) -> None:
        self.conn.close()
        _LIVE.remove(self._live)
        self._live = None

    def seq(self) -> int:
        row = self.conn.execute(_SEQ_SQL).fetchone()
        return 0 if row is None else int(row[0])

    @contextmanager
    def _write(self) -> Iterator[None]:
        """A write transaction holding the write lock from the start (no BUSY on upgrade)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.rollback()  # a no-op if SQLite already rolled back (e.g. disk full)
            raise

    def _parse_id(self, raw: str) -> int:
        if not (raw.isascii() and raw.isdigit()):
            raise StoreError(
                f"{raw!r} is not a stream id of SQLite store {self.path}: ids are the decimal "
                "strings that append returns, or '0'"
            )
        return int(raw)

    # ------------------------------------------------------------------ kv

    def get(self, key: str) -> Versioned | None:
        row = self.conn.execute(
            "SELECT CAST(value AS BLOB), CAST(version AS INTEGER) FROM kv WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else Versioned(row[0], row[1])

    def set(self, key: str, value: bytes) -> int:
        # One statement: atomic on its own. fetchall() runs it to completion (and commit).
        rows = self.conn.execute(
            "INSERT INTO kv (key, value, version) VALUES (?, ?, 1) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = version + 1 "
            "RETURNING version",
            (key, value),
        ).fetchall()
        return int(rows[0][0])

    def delete(self, key: str) -> bool:
        return self.conn.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount > 0

    def cas(self, key: str, expected_version: int, value: bytes) -> CasResult:
        with self._write():
            if self._compare_and_set(key, expected_version, value):
                return CasResult(ok=True, version=expected_version + 1)
            current = self.get(key)
            return CasResult(ok=False, version=0 if current is None else current.version, current=current)

    def _version(self, key: str) -> int:
        row = self.conn.execute("SELECT CAST(version AS INTEGER) FROM kv WHERE key = ?", (key,)).fetchone()
        return 0 if row is None else int(row[0])

    def _compare_and_set(self, key: str, expected_version: int, value: bytes) -> bool:
        """Inside a write transaction: the write of a compare-and-set; True if it happened."""
        if expected_version == 0:
            cur = self.conn.execute(
                "INSERT INTO kv (key, value, version) VALUES (?, ?, 1) ON CONFLICT (key) DO NOTHING",
                (key, value),
            )
        else:
            cur = self.conn.execute(
                "UPDATE kv SET value = ?, version = version + 1 WHERE key = ? AND version = ?",
                (value, key, expected_version),
            )
        return cur.rowcount == 1

    def transact(self, ops: Sequence[WriteOp]) -> tuple[TransactResult, list[tuple[int, str]]]:
        """Apply ``ops`` in one write transaction; also return the appended (id, stream)s."""
        last = ops[-1] if ops else None
        fences = [op for op in ops[:-1] if isinstance(op, FenceOp)]
        if isinstance(last, AppendOp) and last.maxlen is None and len(fences) == len(ops) - 1:
            return self._fenced_append(fences, last)
        appended: list[tuple[int, str]] = []
        with self._write():
            if not all(self._fence_holds(op) for op in ops if isinstance(op, FenceOp)):
                return TransactResult(ok=False, fenced=True), appended
            checks = [op for op in ops if isinstance(op, CasOp)]
            current = [self._version(op.key) for op in checks]
            if any(version != op.expected_version for version, op in zip(current, checks, strict=True)):
                return TransactResult(ok=False, versions=tuple(current)), appended
            acked = 0
            for op in ops:
                if isinstance(op, CasOp):
                    self._compare_and_set(op.key, op.expected_version, op.value)
                elif isinstance(op, AppendOp):
                    appended.append((self._insert(op.stream, op.record, op.maxlen), op.stream))
                elif isinstance(op, AckOp):
                    acked += self._delete_pending(op.stream, op.group, op.ids)
        result = TransactResult(
            ok=True,
            versions=tuple(op.expected_version + 1 for op in checks),
            ids=tuple(str(rid) for rid, _ in appended),
            acked=acked,
        )
        return result, appended

    def _fenced_append(
        self, fences: Sequence[FenceOp], op: AppendOp
    ) -> tuple[TransactResult, list[tuple[int, str]]]:
        """``transact([*fences, op])`` as one statement, atomic on its own: the insert happens
        only if every fence holds (what ``_fence_holds`` checks). The usual write of a run (an
        event under its lease, from an attempt also under the epoch it was assigned under) in
        one statement instead of four or more (BEGIN, a SELECT per fence, the INSERT, COMMIT)."""
        tests: list[str] = []
        params: list[object] = [op.stream, op.record]
        for fence in fences:
            if fence.owner is None:
                tests.append(_FENCE_TEST_SQL)
                params += (fence.lease, fence.epoch)
            else:
                tests.append(_FENCE_OWNER_TEST_SQL)
                params += (fence.lease, fence.epoch, fence.owner, time.time())
        cur = self.conn.execute(_FENCED_INSERT_SQL + " AND ".join(tests or ["1"]), params)
        if cur.rowcount != 1:
            return TransactResult(ok=False, fenced=True), []
        rid = cur.lastrowid
        assert rid is not None
        return TransactResult(ok=True, ids=(str(rid),)), [(rid, op.stream)]

    def scan(self, prefix: str) -> list[KeyValue]:
        end = _prefix_end(prefix)
        if end is None:
            cur = self.conn.execute(_SCAN_SQL + "WHERE key >= ? ORDER BY key", (prefix,))
        else:
            cur = self.conn.execute(
                _SCAN_SQL + "WHERE key >= ? AND key < ? ORDER BY key",
                (prefix, end),
            )
        return [KeyValue(key, value, version) for key, value, version in cur]

    # ------------------------------------------------------------------ streams

    def append(self, stream: str, record: bytes, maxlen: int | None) -> int:
        if maxlen is None or not self._trim_due(stream, maxlen):
            return self._insert(stream, record, None)  # one statement: atomic on its own
        with self._write():
            rid = self._insert(stream, record, None)
            self._trim(stream, maxlen)
        return rid

    def _insert(self, stream: str, record: bytes, maxlen: int | None) -> int:
        """The insert of an append (with its trim, when due); inside a transaction if
        ``maxlen`` is set."""
        sql = "INSERT INTO records (stream, record) VALUES (?, ?)"
        rid = self.conn.execute(sql, (stream, record)).lastrowid
        assert rid is not None
        if maxlen is not None and self._trim_due(stream, maxlen):
            self._trim(stream, maxlen)
        return rid

    def _trim_due(self, stream: str, maxlen: int) -> bool:
        """Whether this append with ``maxlen`` should trim the stream.

        A trim walks ``maxlen`` index entries, so it runs every ``maxlen // 16`` appends (of
        this store; other processes count their own): a stream then holds at most about
        ``maxlen * (1 + 1/16)`` records per appending process, and the amortized cost stays
        constant. Small ``maxlen`` values are kept exactly.
        """
        n = self._untrimmed.get(stream, 0) + 1
        if n < maxlen // 16:
            self._untrimmed[stream] = n
            return False
        if len(self._untrimmed) > 10_000:  # bound the memory; forgetting only trims early
            self._untrimmed.clear()
        self._untrimmed[stream] = 0
        return True

    def _trim(self, stream: str, maxlen: int) -> int:
        """Delete all but the newest ``maxlen`` records, and their pending entries."""
        row = self.conn.execute(
            "SELECT id FROM records WHERE stream = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
            (stream, maxlen),
        ).fetchone()
        if row is None:
            return 0
        removed: int = self.conn.execute(
            "DELETE FROM records WHERE stream = ? AND id <= ?", (stream, row[0])
        ).rowcount
        self.conn.execute("DELETE FROM pending WHERE stream = ? AND id <= ?", (stream, row[0]))
        return removed

    def read(self, stream: str, after: str, count: int) -> list[Entry]:
        cur = self.conn.execute(
            "SELECT id, CAST(record AS BLOB) FROM records WHERE stream = ? AND id > ? ORDER BY id LIMIT ?",
            (stream, self._parse_id(after), count),
        )
        return [Entry(str(rid), record) for rid, record in cur]

    def last_id(self, stream: str) -> str:
        (rid,) = self.conn.execute("SELECT max(id) FROM records WHERE stream = ?", (stream,)).fetchone()
        return "0" if rid is None else str(rid)

    def length(self, stream: str) -> int:
        # Counts index entries: O(length), but keeps append to one cheap statement.
        (n,) = self.conn.execute("SELECT count(*) FROM records WHERE stream = ?", (stream,)).fetchone()
        return int(n)

    def trim(self, stream: str, maxlen: int) -> int:
        with self._write():
            return self._trim(stream, maxlen)

    def create_group(self, stream: str, group: str, start: str) -> bool:
        with self._write():
            if start == "$":
                (last,) = self.conn.execute(
                    "SELECT coalesce(max(id), 0) FROM records WHERE stream = ?", (stream,)
                ).fetchone()
            else:
                last = self._parse_id(start)
            return (
                self.conn.execute(
                    "INSERT INTO groups (stream, grp, last_delivered) VALUES (?, ?, ?) "
                    "ON CONFLICT (stream, grp) DO NOTHING",
                    (stream, group, last),
                ).rowcount
                == 1
            )

    def read_group(self, stream: str, group: str, consumer: str, count: int) -> list[Entry]:
        return self.read_groups((stream,), group, consumer, count).get(stream, [])

    def read_groups(
        self, streams: Sequence[str], group: str, consumer: str, count: int
    ) -> dict[str, list[Entry]]:
        # Look before taking the write lock: readers woken by an append they do not win, and
        # blocked readers re-checking, then stay out of the writers' way.
        due = [stream for stream in streams if self._may_have_new(stream, group)]
        out: dict[str, list[Entry]] = {}
        if due:
            with self._write():
                for stream in due:
                    entries = self._deliver_new(stream, group, consumer, count)
                    if entries:
                        out[stream] = entries
        return out

    def _may_have_new(self, stream: str, group: str) -> bool:
        """False if ``group`` exists and has nothing undelivered (True if it does not exist:
        the read then says so)."""
        row = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM records WHERE stream = g.stream AND id > g.last_delivered) "
            "FROM groups AS g WHERE g.stream = ? AND g.grp = ?",
            (stream, group),
        ).fetchone()
        return row is None or bool(row[0])

    def _deliver_new(self, stream: str, group: str, consumer: str, count: int) -> list[Entry]:
        """Inside a write transaction: the records ``group`` has not delivered yet, now
        pending for ``consumer``."""
        row = self.conn.execute(
            "SELECT last_delivered FROM groups WHERE stream = ? AND grp = ?", (stream, group)
        ).fetchone()
        if row is None:
            raise NoSuchGroup(
                f"stream {stream!r} has no consumer group {group!r} in SQLite store "
                f"{self.path}; call create_group first"
            )
        rows = self.conn.execute(
            "SELECT id, CAST(record AS BLOB) FROM records WHERE stream = ? AND id > ? ORDER BY id LIMIT ?",
            (stream, row[0], count),
        ).fetchall()
        if not rows:
            return []
        now = time.time()
        self.conn.executemany(
            "INSERT INTO pending (stream, grp, id, consumer, delivered_at, deliveries) "
            "VALUES (?, ?, ?, ?, ?, 1)",
            [(stream, group, rid, consumer, now) for rid, _ in rows],
        )
        self.conn.execute(
            "UPDATE groups SET last_delivered = ? WHERE stream = ? AND grp = ?",
            (rows[-1][0], stream, group),
        )
        return [Entry(str(rid), record, 1) for rid, record in rows]

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        with self._write():
            return self._delete_pending(stream, group, ids)

    def _delete_pending(self, stream: str, group: str, ids: Sequence[str]) -> int:
        params = [(stream, group, self._parse_id(i)) for i in ids]
        if not params:
            return 0
        sql = "DELETE FROM pending WHERE stream = ? AND grp = ? AND id = ?"
        return self.conn.executemany(sql, params).rowcount

    def pending(self, stream: str, group: str, count: int) -> list[PendingEntry]:
        now = time.time()
        cur = self.conn.execute(
            "SELECT id, consumer, delivered_at, deliveries FROM pending "
            "WHERE stream = ? AND grp = ? ORDER BY id LIMIT ?",
            (stream, group, count),
        )
        return [
            PendingEntry(str(rid), consumer, max(0.0, now - at), deliveries)
            for rid, consumer, at, deliveries in cur
        ]

    def unacknowledged(self, stream: str, group: str, count: int) -> list[Entry] | None:
        with self._write():  # one snapshot of the group and its records
            row = self.conn.execute(
                "SELECT last_delivered FROM groups WHERE stream = ? AND grp = ?", (stream, group)
            ).fetchone()
            if row is None:
                return None
            pending = self.conn.execute(
                "SELECT r.id, CAST(r.record AS BLOB), p.deliveries FROM pending AS p JOIN records AS r "
                "ON r.stream = p.stream AND r.id = p.id WHERE p.stream = ? AND p.grp = ? "
                "ORDER BY p.id LIMIT ?",
                (stream, group, count),
            ).fetchall()
            fresh = self.conn.execute(
                "SELECT id, CAST(record AS BLOB), 0 FROM records "
                "WHERE stream = ? AND id > ? ORDER BY id LIMIT ?",
                (stream, row[0], count - len(pending)),
            ).fetchall()
        return [Entry(str(rid), record, deliveries) for rid, record, deliveries in [*pending, *fresh]]

    def claim_stale(
        self, stream: str, group: str, consumer: str, min_idle_s: float, count: int
    ) -> list[Entry]:
        with self._write():
            now = time.time()
            # Trimming deletes pending entries with their records; the join is a second guard.
            rows = self.conn.execute(
                "SELECT p.id, CAST(r.record AS BLOB), p.deliveries "
                "FROM pending AS p JOIN records AS r ON r.id = p.id "
                "WHERE p.stream = ? AND p.grp = ? AND p.delivered_at <= ? ORDER BY p.id LIMIT ?",
                (stream, group, now - min_idle_s, count),
            ).fetchall()
            self.conn.executemany(
                "UPDATE pending SET consumer = ?, delivered_at = ?, deliveries = deliveries + 1 "
                "WHERE stream = ? AND grp = ? AND id = ?",
                [(consumer, now, stream, group, rid) for rid, _, _ in rows],
            )
        return [Entry(str(rid), record, deliveries + 1) for rid, record, deliveries in rows]

    # ------------------------------------------------------------------ leases
    # Each is one statement or one write transaction, atomic under the write lock.

    def acquire(self, name: str, owner: str, ttl_s: float) -> int:
        with self._write():
            now = time.time()
            row = self.conn.execute(_LEASE_SQL, (name,)).fetchone()
            if row is None:
                self.conn.execute(
                    "INSERT INTO leases (name, owner, expires_at, epoch) VALUES (?, ?, ?, 1)",
                    (name, owner, now + ttl_s),
                )
                return 1
            held_by, expires_at, epoch = str(row[0]), float(row[1]), int(row[2])
            if expires_at > now and held_by != owner:
                return 0
            if expires_at <= now or epoch < 1:  # a new holding: a new epoch
                epoch += 1
            self.conn.execute(
                "UPDATE leases SET owner = ?, expires_at = ?, epoch = ? WHERE name = ?",
                (owner, now + ttl_s, epoch, name),
            )
            return epoch

    def renew(self, name: str, owner: str, ttl_s: float) -> bool:
        now = time.time()
        return (
            self.conn.execute(
                "UPDATE leases SET expires_at = ? WHERE name = ? AND owner = ? AND expires_at > ?",
                (now + ttl_s, name, owner, now),
            ).rowcount
            == 1
        )

    def release(self, name: str, owner: str) -> bool:
        return (
            self.conn.execute(
                "UPDATE leases SET expires_at = 0 WHERE name = ? AND owner = ? AND expires_at > ?",
                (name, owner, time.time()),
            ).rowcount
            == 1
        )

    def holder(self, name: str) -> str | None:
        row = self.conn.execute(
            "SELECT owner FROM leases WHERE name = ? AND CAST(expires_at AS REAL) > ?", (name, time.time())
        ).fetchone()
        return None if row is None else str(row[0])

    def epoch(self, name: str) -> int:
        row = self.conn.execute(
            "SELECT CAST(epoch AS INTEGER) FROM leases WHERE name = ?", (name,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def _fence_holds(self, fence: FenceOp) -> bool:
        """The test ``_fenced_append`` makes in its INSERT, as a query: one rule for every
        fenced write, whatever the lease row holds."""
        if fence.owner is None:
            row = self.conn.execute(f"SELECT {_FENCE_TEST_SQL}", (fence.lease, fence.epoch)).fetchone()
        else:
            params = (fence.lease, fence.epoch, fence.owner, time.time())
            row = self.conn.execute(f"SELECT {_FENCE_OWNER_TEST_SQL}", params).fetchone()
        return bool(row[0])


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: autocommit; transactions are explicit (BEGIN IMMEDIATE).
    # timeout= sets SQLite's busy timeout. check_same_thread=False: the store serializes all
    # use on its worker thread, but an open cancelled at the wrong moment closes it elsewhere.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.text_factory = _text
    return conn


def _text(raw: bytes) -> str:
    """A TEXT value as a string: bytes that are not UTF-8 (another program wrote them) read
    as U+FFFD instead of failing the whole query."""
    return raw.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------- wake-ups


class _Watermark:
    """The highest record id up to which waiting readers of this store have been told of appends.

    Record ids are global and commit in order (a writer holds the write lock from insert to
    commit). The worker advances the watermark over ids this store appended itself (it wakes
    their readers directly), but only while they are contiguous: an id skipped over was
    appended by another connection, and the poller must still find its stream.
    Shared by the worker thread and the poller thread.
    """

    def __init__(self, start: int) -> None:
        self._lock = threading.Lock()
        self._id = start

    @property
    def id(self) -> int:
        with self._lock:
            return self._id

    def own(self, rid: int) -> None:
        with self._lock:
            if rid == self._id + 1:
                self._id = rid

    def advance(self, seq: int) -> None:
        with self._lock:
            self._id = max(self._id, seq)


class _Poller:
    """A thread that notices appends by other connections while readers wait.

    It runs only while ``resume()`` is in effect, polling with its own connection (reads in
    WAL mode never block writers): when the records counter moved past the watermark, it
    finds the streams appended to since and hands them to ``on_appended`` (None: too many
    records to look at, wake every reader).
    """

    MAX_SCAN = 1000
    """Records past the watermark worth reading for their stream names; beyond, wake all."""

    def __init__(
        self, path: Path, watermark: _Watermark, on_appended: Callable[[frozenset[str] | None], None]
    ) -> None:
        self._path = path
        self._watermark = watermark
        self._on_appended = on_appended
        self._active = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def resume(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"maos-sqlite-poll:{self._path.name}", daemon=True
            )
            self._thread.start()
        self._active.set()

    def pause(self) -> None:
        self._active.clear()

    def stop(self) -> None:
        self._stopping = True
        self._active.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        failing = False
        try:
            while True:
                self._active.wait()
                if self._stopping:
                    return
                try:
                    if conn is None:
                        conn = _connect(self._path)
                    self._poll(conn)
                    failing = False
                except sqlite3.Error as exc:
                    if not failing:  # log once per outage, not every few milliseconds
                        log.warning("SQLite store %s: polling for appends failed: %s", self._path, exc)
                    failing = True
                time.sleep(POLL_INTERVAL_S)
        finally:
            if conn is not None:
                conn.close()

    def _poll(self, conn: sqlite3.Connection) -> None:
        row = conn.execute(_SEQ_SQL).fetchone()
        seq = 0 if row is None else int(row[0])
        start = self._watermark.id
        if seq <= start:
            return
        streams: frozenset[str] | None = None
        if seq - start <= self.MAX_SCAN:
            streams = frozenset(
                stream
                for (stream,) in conn.execute(
                    "SELECT DISTINCT stream FROM records WHERE id > ? AND id <= ?", (start, seq)
                )
            )
        self._watermark.advance(seq)
        if streams is None or streams:
            self._on_appended(streams)


# ---------------------------------------------------------------------------- the worker


class _Worker:
    """The one thread that runs every sqlite3 call of a store, in submission order.

    Cheaper per call than ``run_in_executor`` (no concurrent.futures.Future in between),
    and a call whose awaiting task was cancelled before it started is skipped.

    ``inline`` runs a call on the event loop's thread instead when that is safe and cheap:
    no job is queued or running (so the order of calls holds and the connection is not in
    use), and the call does not find the database locked by another connection. A hop to
    the thread and back costs more than most calls themselves (a commit without ``fsync``
    takes ~10 µs) and makes the loop's thread and this one take turns at the GIL; a locked
    database is waited for on the thread, never on the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, path: Path) -> None:
        self._loop = loop
        self._path = path
        self._jobs: queue.SimpleQueue[_Job | _Stop] = queue.SimpleQueue()
        self._unfinished = 0  # jobs submitted and not yet run (or skipped) by the thread
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"maos-sqlite:{path.name}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[*Ts], T], *args: *Ts) -> asyncio.Future[T]:
        """Queue ``fn(*args)``; sqlite3 errors come back as ``StoreError``."""
        future: asyncio.Future[T] = self._loop.create_future()
        with self._lock:
            self._unfinished += 1
        self._jobs.put((fn, args, future))
        return future

    async def inline(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        """``fn(*args)`` on the calling (the loop's) thread if the worker is idle and the
        database is not locked; else ``submit``. Call only from the loop's thread."""
        with self._lock:
            idle = self._unfinished == 0
        if idle:
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise _translate(exc, self._path) from exc
                # rolled back (see _retrying_busy): the thread waits for the lock
            except sqlite3.Error as exc:
                raise _translate(exc, self._path) from exc
        return await self.submit(fn, *args)

    def stop(self, last: Callable[[], object] | None = None) -> None:
        """Let the thread exit after the queued jobs, running ``last`` on it first. No wait."""
        self._jobs.put(_Stop(last))

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        while not isinstance(job := self._jobs.get(), _Stop):
            fn, args, future = job
            try:
                if future.cancelled():  # a racy read of the loop's future, but a stale answer is harmless
                    continue
                try:
                    try:
                        result = _retrying_busy(fn, args)
                    except sqlite3.Error as exc:
                        raise _translate(exc, self._path) from exc
                except BaseException as exc:  # delivered to the awaiting task, not lost here
                    self._reply(_set_exception, future, exc)
                else:
                    self._reply(_set_result, future, result)
            finally:
                with self._lock:
                    self._unfinished -= 1
        if job.last is not None:
            try:
                job.last()
            except Exception:  # nobody awaits this; do not let the thread die noisily
                log.exception("SQLite store %s: closing failed", self._path)

    def _reply(
        self, setter: Callable[[asyncio.Future[Any], Any], None], future: asyncio.Future[Any], value: object
    ) -> None:
        with suppress(RuntimeError):  # the loop is closed: nobody is waiting for the answer
            self._loop.call_soon_threadsafe(setter, future, value)


_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


def _retrying_busy(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    """``fn(*args)``, run again while another connection holds the write lock (SQLITE_BUSY),
    for up to ``BUSY_TIMEOUT_S``. Safe because every ``_Db`` method is one transaction (or
    one statement, or only reads), which SQLite rolled back when it failed busy."""
    deadline: float | None = None
    delay_s = BUSY_FIRST_SLEEP_S
    while True:
        try:
            return fn(*args)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + BUSY_TIMEOUT_S
                what = getattr(fn, "__name__", fn)
                log.debug("%s found the database locked: retrying for up to %g s", what, BUSY_TIMEOUT_S)
            elif now >= deadline:
                raise
            time.sleep(random.uniform(delay_s / 2, delay_s))
            delay_s = min(delay_s * 2, BUSY_MAX_SLEEP_S)


@dataclass(frozen=True, slots=True)
class _Stop:
    last: Callable[[], object] | None


def _set_result(future: asyncio.Future[Any], result: object) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


# ---------------------------------------------------------------------------- the store


class SqliteStore:
    """The ``Store`` protocol on one SQLite file. Create with ``await SqliteStore.open(path, url=…)``."""

    url: str

    def __init__(
        self,
        db: _Db,
        worker: _Worker,
        loop: asyncio.AbstractEventLoop,
        url: str,
        *,
        seq: int,
    ) -> None:
        self.url = url
        self._db = db
        self._path = db.path
        self._worker = worker
        self._loop = loop
        self._closed = False
        self._watermark = _Watermark(seq)
        self._poller = _Poller(db.path, self._watermark, self._on_appended)
        # stream -> futures of the readers waiting on it, resolved by its next append
        self._wake: dict[str, list[asyncio.Future[None]]] = {}
        self._waiting: dict[str, int] = {}  # stream -> readers waiting on it
        self._n_waiting = 0
        self._blocked = 0  # readers parked on their wake-up future: ``blocked_readers``
        self._loop_thread = threading.get_ident()  # opened from the loop's thread

    @classmethod
    async def open(cls, path: Path, *, url: str) -> SqliteStore:
        """Open (or create, with its parent directory and schema) the database at ``path``."""
        loop = asyncio.get_running_loop()
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        worker = _Worker(loop, path)
        opened: list[_Db] = []
        try:
            seq = await worker.submit(_open_db, path, opened)
        except BaseException:
            # Failed, or cancelled while opening: close the connection if it got opened.
            worker.stop(last=lambda: _close_all(opened))
            raise
        return cls(opened[0], worker, loop, url, seq=seq)

    def __repr__(self) -> str:
        return f"SqliteStore({self.url!r}, path={str(self._path)!r}{', closed' if self._closed else ''})"

    async def _run(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        """Run ``fn(*args)``: a short call on the loop's thread when the worker is idle and
        the database not locked (``_Worker.inline``), else on the worker thread."""
        if self._closed:
            raise StoreError(f"SQLite store {self._path} is closed")
        return await self._worker.inline(fn, *args)

    async def _run_on_thread(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        """Run ``fn(*args)`` on the worker thread: for calls that may take long (a scan, a trim)."""
        if self._closed:
            raise StoreError(f"SQLite store {self._path} is closed")
        return await self._worker.submit(fn, *args)

    # ------------------------------------------------------------------ kv

    async def get(self, key: str) -> Versioned | None:
        return await self._run(self._db.get, key)

    async def set(self, key: str, value: bytes) -> int:
        return await self._run(self._db.set, key, value)

    async def delete(self, key: str) -> bool:
        return await self._run(self._db.delete, key)

    async def cas(self, key: str, expected_version: int, value: bytes) -> CasResult:
        return await self._run(self._db.cas, key, expected_version, value)

    async def scan(self, prefix: str) -> list[KeyValue]:
        return await self._run_on_thread(self._db.scan, prefix)

    async def transact(self, ops: Sequence[WriteOp]) -> TransactResult:
        check_ops(ops)
        if not ops:
            return TransactResult(ok=True)
        return await self._run(self._transact, ops)

    def _transact(self, ops: Sequence[WriteOp]) -> TransactResult:
        result, appended = self._db.transact(ops)
        for rid, stream in appended:  # as in _append
            self._watermark.own(rid)
            self._announce(stream)
        return result

    # ------------------------------------------------------------------ streams

    async def append(self, stream: str, record: bytes, *, maxlen: int | None = None) -> str:
        check_maxlen(maxlen, f"append to {stream!r}")
        return str(await self._run(self._append, stream, record, maxlen))

    def _append(self, stream: str, record: bytes, maxlen: int | None) -> int:
        rid = self._db.append(stream, record, maxlen)
        # Wake this stream's readers from here, right after the commit, not from append():
        # its caller may be cancelled by now, and the poller skips ids this store announced.
        self._watermark.own(rid)
        self._announce(stream)
        return rid

    def _announce(self, stream: str) -> None:
        """Wake ``stream``'s readers after an append (on the worker thread or the loop's)."""
        with suppress(RuntimeError):  # the loop is closed: nobody waits any more
            if threading.get_ident() == self._loop_thread:
                self._loop.call_soon(self._notify, stream)
            else:
                self._loop.call_soon_threadsafe(self._notify, stream)

    async def read(
        self, stream: str, after: str = "0", *, count: int = 1000, block_s: float | None = None
    ) -> list[Entry]:
        if count < 1:
            return []
        if block_s is None:
            return await self._run(self._db.read, stream, after, count)
        return await self._blocking(
            (stream,), block_s, lambda: self._run(self._db.read, stream, after, count)
        )

    async def last_id(self, stream: str) -> str:
        return await self._run(self._db.last_id, stream)

    async def length(self, stream: str) -> int:
        return await self._run(self._db.length, stream)

    async def trim(self, stream: str, maxlen: int) -> int:
        check_maxlen(maxlen, f"trim {stream!r}")
        return await self._run_on_thread(self._db.trim, stream, maxlen)

    async def create_group(self, stream: str, group: str, *, start: str = "0") -> bool:
        return await self._run(self._db.create_group, stream, group, start)

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int = 100,
        block_s: float | None = None,
    ) -> list[Entry]:
        if count < 1:
            return []
        if block_s is None:
            return await self._run(self._db.read_group, stream, group, consumer, count)
        return await self._blocking(
            (stream,), block_s, lambda: self._run(self._db.read_group, stream, group, consumer, count)
        )

    async def read_groups(
        self,
        streams: Sequence[str],
        group: str,
        consumer: str,
        *,
        count: int = 100,
        block_s: float | None = None,
    ) -> dict[str, list[Entry]]:
        streams = tuple(dict.fromkeys(streams))
        if count < 1 or not streams:
            return {}
        if block_s is None:
            return await self._run(self._db.read_groups, streams, group, consumer, count)
        return await self._blocking(
            streams, block_s, lambda: self._run(self._db.read_groups, streams, group, consumer, count)
        )

    async def ack(self, stream: str, group: str, ids: list[str]) -> int:
        return await self._run(self._db.ack, stream, group, ids)

    async def pending(self, stream: str, group: str, *, count: int = 1000) -> list[PendingEntry]:
        if count < 1:
            return []
        return await self._run(self._db.pending, stream, group, count)

    async def unacknowledged(self, stream: str, group: str, *, count: int = 1000) -> list[Entry] | None:
        if count < 1:
            return []
        return await self._run_on_thread(self._db.unacknowledged, stream, group, count)

    async def claim_stale(
        self, stream: str, group: str, consumer: str, *, min_idle_s: float, count: int = 100
    ) -> list[Entry]:
        if count < 1:
            return []
        return await self._run(self._db.claim_stale, stream, group, consumer, min_idle_s, count)

    # ------------------------------------------------------------------ blocking reads

    @property
    def blocked_readers(self) -> int:
        """Blocking reads of this store waiting now for an append (their last query found
        nothing): what Redis shows as blocked clients in ``CLIENT LIST``. A test waits for it
        before appending, to know that the append wakes a waiting reader."""
        return self._blocked

    async def _blocking(
        self, streams: Sequence[str], block_s: float, attempt: Callable[[], Awaitable[R]]
    ) -> R:
        """Run ``attempt`` until it returns something, retrying after each append to one of
        ``streams``; after ``block_s`` return its last (empty) result."""
        deadline = self._loop.time() + block_s
        for stream in streams:
            self._watch(stream)
        try:
            while True:
                # Register before querying: an append that lands after the query has
                # started resolves this future, so no wake-up is lost in between.
                woken: asyncio.Future[None] = self._loop.create_future()
                for stream in streams:
                    self._wake.setdefault(stream, []).append(woken)
                try:
                    found = await attempt()
                    remaining = deadline - self._loop.time()
                    if found or remaining <= 0:
                        return found
                    self._blocked += 1
                    try:
                        async with asyncio.timeout(remaining):
                            await woken
                    except TimeoutError:
                        return found
                    finally:
                        self._blocked -= 1
                finally:
                    for stream in streams:
                        waiters = self._wake.get(stream)
                        if waiters is not None:
                            with suppress(ValueError):
                                waiters.remove(woken)
                            if not waiters:
                                del self._wake[stream]
        finally:
            for stream in streams:
                self._unwatch(stream)

    def _watch(self, stream: str) -> None:
        self._waiting[stream] = self._waiting.get(stream, 0) + 1
        self._n_waiting += 1
        if self._n_waiting == 1 and not self._closed:
            self._poller.resume()

    def _unwatch(self, stream: str) -> None:
        left = self._waiting[stream] - 1
        if left:
            self._waiting[stream] = left
        else:
            del self._waiting[stream]
        self._n_waiting -= 1
        if self._n_waiting == 0:
            self._poller.pause()

    def _notify(self, stream: str) -> None:
        for woken in self._wake.pop(stream, ()):
            if not woken.done():
                woken.set_result(None)

    def _notify_all(self) -> None:
        wake, self._wake = self._wake, {}
        for waiters in wake.values():
            for woken in waiters:
                if not woken.done():
                    woken.set_result(None)

    def _on_appended(self, streams: frozenset[str] | None) -> None:
        """Poller thread: other connections appended to ``streams`` (None: unknown which)."""
        with suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._notify_streams, streams)

    def _notify_streams(self, streams: frozenset[str] | None) -> None:
        if streams is None:
            self._notify_all()
        else:
            for stream in streams:
                self._notify(stream)

    # ------------------------------------------------------------------ leases

    async def acquire(self, name: str, owner: str, ttl_s: float) -> int:
        return await self._run(self._db.acquire, name, owner, ttl_s)

    async def renew(self, name: str, owner: str, ttl_s: float) -> bool:
        return await self._run(self._db.renew, name, owner, ttl_s)

    async def release(self, name: str, owner: str) -> bool:
        return await self._run(self._db.release, name, owner)

    async def holder(self, name: str) -> str | None:
        return await self._run(self._db.holder, name)

    async def epoch(self, name: str) -> int:
        return await self._run(self._db.epoch, name)

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Close the connection and stop the threads; later calls raise ``StoreError``.

        Readers blocked in ``read``/``read_group`` wake and raise ``StoreError``.
        """
        if self._closed:
            return
        self._closed = True
        self._notify_all()
        self._poller.stop()  # returns within one poll interval
        # Queued behind every call already submitted, so those finish first; shielded so a
        # cancelled close still closes the connection.
        closing = self._worker.submit(self._db.close)
        self._worker.stop()
        await asyncio.shield(closing)
        self._worker.join()  # the thread has nothing left to do but exit


def _close_all(dbs: list[_Db]) -> None:
    for db in dbs:
        db.close()


def _open_db(path: Path, opened: list[_Db]) -> int:
    """Open the database into ``opened``; return the records counter."""
    db = _Db.open(path)
    opened.append(db)
    return db.seq()
