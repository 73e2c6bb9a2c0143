"""Erasure of a run (``maos purge RUN``): everything MAOS kept of it, everywhere, then a check.

What a run leaves, and where (``maos.store.keys`` lists the store's part):

- in the store, under the run's hash tag ``{run:<id>}``: the event log, shared state, published
  results and outputs, the run's secret, its lease, control stream and dead letters, and the
  bus's inboxes, topics, doorbells, dead letters, sequence counters and consumer groups; outside
  it: the run record ``maos:run:<id>``, the worker queue's assignments of the run
  (``maos:assignments``) and the run's id in the role history's list of recorded runs;
- on disk, in the run's working directory: ``.maos/runs/<id>/`` (outputs, transcripts, the
  report), ``.maos/worktrees/<id>/`` and the git branches ``maos/<id>`` (kept with
  ``keep_branch``) and ``maos/tasks/<id>/…``;
- checkpoints ``<id>/…`` in every checkpoint location the run's log names and those given.

The ``Store`` protocol has no way to remove a stream or a consumer group, so the store's part is
erased with the backend's own client (``_SqliteEraser``, ``_RedisEraser``): matching exactly the
run's hash tag, its record key and, in shared streams, records carrying ``"run_id":"<id>"``.
On SQLite the deletion runs with ``secure_delete`` (freed pages are zeroed) and the WAL is
checkpointed, so the run's bytes leave the database file too. Then everything is looked at
again, broadly: any key, stream, record or lease whose name or contents hold the run id, any
file under ``.maos/`` named after it, any git ref or worktree naming it. What is left is
reported, never hidden. The audit sink is not touched: it is the append-only record that the
run existed and was purged (it holds no message contents nor state values).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maos.errors import MaosError, RunLocked
from maos.events import CheckpointTaken, RunStarted
from maos.model import RunRecord
from maos.paths import audit_file, run_dir, run_worktrees, state_dir
from maos.store import keys
from maos.store.base import Store, connect_url

__all__ = ["PurgeReport", "finished_runs_older_than", "purge_run"]

log = logging.getLogger("maos.purge")

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{3,127}$")


@dataclass
class PurgeReport:
    """What ``purge_run`` removed, kept on purpose, and found left afterwards."""

    run_id: str
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.remaining

    def as_json(self) -> dict[str, Any]:
        return {"run": self.run_id, "removed": self.removed, "kept": self.kept, "remaining": self.remaining}


def _json_mark(run_id: str) -> bytes:
    return f'"run_id":"{run_id}"'.encode()


async def purge_run(
    store: Store,
    run_id: str,
    *,
    workdir: Path | None = None,
    checkpoints: Sequence[str | None] = (),
    s3_endpoint: str | None = None,
    keep_branch: bool = False,
    force: bool = False,
) -> PurgeReport:
    """Erase ``run_id`` from ``store``, its working directory (the one its log names, and
    ``workdir``) and its checkpoint locations (those its log names, and ``checkpoints``:
    ``None`` is the default ``.maos/checkpoints``). ``RunLocked`` if an orchestrator holds the
    run's lease, unless ``force``."""
    from maos.liveness import live_orchestrator

    if not _RUN_ID_RE.fullmatch(run_id):
        raise MaosError(f"run id {run_id!r} is not one MAOS makes: nothing purged")
    holder = await live_orchestrator(store, run_id)
    if holder is not None and not force:
        raise RunLocked(
            f"run {run_id} is live: {holder} holds its lease. Cancel it first, or purge with --force "
            "(its agents may write again after the purge)"
        )
    report = PurgeReport(run_id)
    workdirs, locations = await _where(store, run_id, workdir)
    blob_urls = [*dict.fromkeys([*checkpoints, *locations])]
    base = workdir or (next(iter(workdirs)) if workdirs else Path.cwd())
    await _purge_checkpoints(run_id, blob_urls, base, s3_endpoint, report)
    for directory in workdirs:
        await _purge_disk(run_id, directory, keep_branch, report)
    await _forget_in_history(store, run_id, report)
    eraser = _eraser(store)
    report.removed += await eraser.erase(run_id)
    report.remaining += await eraser.remaining(run_id)
    for directory in workdirs:
        report.remaining += await _left_on_disk(run_id, directory, keep_branch)
    report.remaining += await _left_in_checkpoints(run_id, blob_urls, base, s3_endpoint)
    return report


async def _where(store: Store, run_id: str, workdir: Path | None) -> tuple[set[Path], list[str]]:
    """The run's working directories and checkpoint locations, from its record and log."""
    from maos.eventlog import EventLog

    workdirs: set[Path] = set()
    locations: list[str] = []
    if workdir is not None:
        workdirs.add(workdir.resolve())
    found = await store.get(keys.run_record(run_id))
    if found is not None:
        with contextlib.suppress(ValueError):  # an unreadable record: the log still names it
            workdirs.add(Path(RunRecord.model_validate_json(found.value).workdir))
    async for _, event in EventLog(store, run_id).iterate():
        if isinstance(event, RunStarted):
            workdirs.add(Path(event.config.workdir))
        elif isinstance(event, CheckpointTaken) and event.location and event.location not in locations:
            locations.append(event.location)
    return {path for path in workdirs if path.is_dir()}, locations


async def _purge_checkpoints(
    run_id: str, urls: Sequence[str | None], workdir: Path, endpoint: str | None, report: PurgeReport
) -> None:
    from maos.blobs import LocalBlobStore, open_blob_store

    for url in urls:
        blobs = open_blob_store(url, workdir=workdir, endpoint_url=endpoint)
        try:
            found = await blobs.list(f"{run_id}/")
            for info in found:
                await blobs.delete(info.name)
            if isinstance(blobs, LocalBlobStore) and (blobs.root / run_id).exists():
                await asyncio.to_thread(shutil.rmtree, blobs.root / run_id)
            if found:
                report.removed.append(f"{len(found)} checkpoint(s) in {blobs.url}")
        finally:
            await blobs.close()


async def _left_in_checkpoints(
    run_id: str, urls: Sequence[str | None], workdir: Path, endpoint: str | None
) -> list[str]:
    from maos.blobs import LocalBlobStore, open_blob_store

    left: list[str] = []
    for url in urls:
        blobs = open_blob_store(url, workdir=workdir, endpoint_url=endpoint)
        try:
            left += [f"checkpoint {info.name} in {blobs.url}" for info in await blobs.list(f"{run_id}/")]
            if isinstance(blobs, LocalBlobStore) and (blobs.root / run_id).exists():
                left.append(f"folder {blobs.root / run_id}")
        finally:
            await blobs.close()
    return left


async def _purge_disk(run_id: str, workdir: Path, keep_branch: bool, report: PurgeReport) -> None:
    from maos.agents.workspace import git, remove_worktrees, repository_root

    repo = await repository_root(workdir)
    if repo is not None:
        removed = await remove_worktrees(repo, run_worktrees(repo, run_id))
        if removed:
            report.removed.append(f"{removed} worktree(s) in {run_worktrees(repo, run_id)}")
        for branch in await _branches(repo, run_id):
            if keep_branch and branch == f"maos/{run_id}":
                report.kept.append(f"branch {branch} in {repo} (--keep-branch)")
                continue
            await git(repo, "branch", "-D", branch)
            report.removed.append(f"branch {branch} in {repo}")
    for folder in (run_dir(workdir, run_id), run_worktrees(workdir, run_id)):
        if folder.exists():
            await asyncio.to_thread(shutil.rmtree, folder)
            report.removed.append(f"folder {folder}")
    for path in await asyncio.to_thread(_named_after, run_id, workdir):
        if path.is_dir():
            await asyncio.to_thread(shutil.rmtree, path)
        else:
            path.unlink(missing_ok=True)
        report.removed.append(f"{path}")


async def _branches(repo: Path, run_id: str) -> list[str]:
    from maos.agents.workspace import git

    _, out = await git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/maos/")
    return [
        name
        for name in out.split()
        if name == f"maos/{run_id}" or name.startswith(f"maos/tasks/{run_id}/") or run_id in name
    ]


def _named_after(run_id: str, workdir: Path) -> list[Path]:
    """Files and folders under ``workdir``'s ``.maos/`` whose name holds the run id (outermost
    only), except the audit file."""
    found: list[Path] = []
    root, kept = state_dir(workdir), audit_file(workdir)
    if not root.is_dir():
        return found
    for path in sorted(root.rglob(f"*{run_id}*")):
        if path == kept or any(parent in found for parent in path.parents):
            continue
        found.append(path)
    return found


async def _left_on_disk(run_id: str, workdir: Path, keep_branch: bool) -> list[str]:
    from maos.agents.workspace import git, repository_root

    left = [f"file {path}" for path in await asyncio.to_thread(_named_after, run_id, workdir)]
    repo = await repository_root(workdir)
    if repo is not None:
        _, refs = await git(repo, "for-each-ref", "--format=%(refname)")
        kept = f"refs/heads/maos/{run_id}" if keep_branch else None
        left += [f"git ref {ref} in {repo}" for ref in refs.split() if run_id in ref and ref != kept]
        _, worktrees = await git(repo, "worktree", "list", "--porcelain")
        left += [f"git {line} in {repo}" for line in worktrees.splitlines() if run_id in line]
    return left


async def _forget_in_history(store: Store, run_id: str, report: PurgeReport) -> None:
    """Take the run's id out of the role history's recorded runs (its outcomes stay, counted
    into per-role totals that name no run)."""
    from maos.history import HistoryRecord

    for _ in range(10):
        found = await store.get(keys.HISTORY)
        if found is None:
            return
        try:
            record = HistoryRecord.model_validate_json(found.value)
        except ValueError:
            return  # not ours to repair; the check afterwards says if it names the run
        if run_id not in record.runs:
            return
        changed = record.model_copy(update={"runs": tuple(r for r in record.runs if r != run_id)})
        if (await store.cas(keys.HISTORY, found.version, changed.model_dump_json().encode())).ok:
            report.removed.append("the run's id in the role history")
            return


# ---------------------------------------------------------------------------- store backends


class _Eraser:
    async def erase(self, run_id: str) -> list[str]:
        raise NotImplementedError

    async def remaining(self, run_id: str) -> list[str]:
        raise NotImplementedError


def _eraser(store: Store) -> _Eraser:
    url = store.url
    if url.startswith("sqlite:"):
        from maos.store import sqlite_path

        return _SqliteEraser(sqlite_path(url))
    if url.startswith(("redis://", "rediss://", "redis+cluster://")):
        return _RedisEraser(connect_url(store), shown=url)  # its own connection: with the password
    raise MaosError(f"purge does not know the store {url!r}")


class _SqliteEraser(_Eraser):
    """Direct SQL on the store's file, in one transaction, with ``secure_delete`` on."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA secure_delete = ON")
        return conn

    async def erase(self, run_id: str) -> list[str]:
        return await asyncio.to_thread(self._erase, run_id)

    def _erase(self, run_id: str) -> list[str]:
        # As bytes, compared with the columns as bytes: a key another program stored as a
        # BLOB (store contents are untrusted) is the run's as much as a TEXT one.
        tag = keys.run_prefix(run_id).encode()
        record_key = keys.run_record(run_id).encode()
        mark = _json_mark(run_id)
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            own = "substr(CAST({col} AS BLOB), 1, ?) = ?"
            counts = {
                "pending": conn.execute(
                    "DELETE FROM pending WHERE " + own.format(col="stream") + " OR (stream, id) IN "
                    "(SELECT stream, id FROM records WHERE instr(CAST(record AS BLOB), ?) > 0)",
                    (len(tag), tag, mark),
                ).rowcount,
                "groups": conn.execute(
                    "DELETE FROM groups WHERE " + own.format(col="stream"), (len(tag), tag)
                ).rowcount,
                "records": conn.execute(
                    "DELETE FROM records WHERE "
                    + own.format(col="stream")
                    + " OR instr(CAST(record AS BLOB), ?) > 0",
                    (len(tag), tag, mark),
                ).rowcount,
                "kv": conn.execute(
                    "DELETE FROM kv WHERE " + own.format(col="key") + " OR CAST(key AS BLOB) = ?",
                    (len(tag), tag, record_key),
                ).rowcount,
                "leases": conn.execute(
                    "DELETE FROM leases WHERE " + own.format(col="name"), (len(tag), tag)
                ).rowcount,
            }
            conn.execute("COMMIT")
            # Move the WAL's copies of the deleted pages into the (zeroed) file and empty it.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise MaosError(f"cannot purge run {run_id} from {self.path}: {exc}") from exc
        finally:
            conn.close()
        names = {"records": "stream records", "kv": "keys", "pending": "pending entries"}
        return [
            f"{count} {names.get(table, table)} in {self.path}"
            for table, count in counts.items()
            if count > 0
        ]

    async def remaining(self, run_id: str) -> list[str]:
        return await asyncio.to_thread(self._remaining, run_id)

    def _remaining(self, run_id: str) -> list[str]:
        left: list[str] = []
        needle = run_id.encode()
        conn = self._connect()
        try:
            tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                if table.startswith("sqlite_"):
                    continue
                columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
                for column in columns:
                    count = conn.execute(
                        f'SELECT count(*) FROM "{table}" WHERE instr(CAST("{column}" AS BLOB), ?) > 0',
                        (needle,),
                    ).fetchone()[0]
                    if count:
                        left.append(f"{count} row(s) of table {table} whose {column} names the run")
        finally:
            conn.close()
        for path in (self.path, Path(f"{self.path}-wal")):
            if path.exists() and needle in path.read_bytes():
                left.append(f"bytes naming the run in {path}")
        return left


class _RedisEraser(_Eraser):
    """Redis' own commands: UNLINK of the run's keys, XDEL of its records in shared streams."""

    def __init__(self, url: str, *, shown: str) -> None:
        self.url = url
        self.shown = shown  # in messages: the password masked

    def _client(self) -> Any:
        import redis.asyncio
        from redis.asyncio.cluster import RedisCluster

        if self.url.startswith("redis+cluster://"):
            return RedisCluster.from_url("redis://" + self.url.removeprefix("redis+cluster://"))
        return redis.asyncio.Redis.from_url(self.url)

    async def _keys(self, client: Any, pattern: str) -> list[bytes]:
        from redis.asyncio.cluster import RedisCluster

        if isinstance(client, RedisCluster):
            found = client.scan_iter(match=pattern, count=1000, target_nodes=RedisCluster.PRIMARIES)
        else:
            found = client.scan_iter(match=pattern, count=1000)
        return sorted({bytes(key) async for key in found})

    async def _shared_streams(self, client: Any) -> list[bytes]:
        return [key for key in await self._keys(client, "maos:x:*") if b"{run:" not in key]

    async def erase(self, run_id: str) -> list[str]:
        import redis.exceptions

        tag = _glob_escape(keys.run_prefix(run_id))
        mark = _json_mark(run_id)
        client = self._client()
        try:
            # The run's own keys: MAOS's kind prefix, then the run's tag (``maos:x:{run:ID}:…``).
            # Not a key that only contains the tag further on: another run's state key may.
            own = keys.run_prefix(run_id).encode()
            found = [
                key
                for key in await self._keys(client, f"maos:*{tag}*")
                if key.split(b":", 2)[-1].startswith(own)
            ]
            found += await self._keys(client, f"maos:kv:{_glob_escape(keys.run_record(run_id))}")
            for key in found:
                await client.unlink(key)
            dropped = 0
            for stream in await self._shared_streams(client):
                ids = [
                    entry_id
                    for entry_id, fields in await client.xrange(stream)
                    if mark in (fields.get(b"d") or b"")
                ]
                if not ids:
                    continue
                for group in await client.xinfo_groups(stream):
                    await client.xack(stream, group["name"], *ids)
                dropped += await client.xdel(stream, *ids)
        except redis.exceptions.RedisError as exc:
            raise MaosError(f"cannot purge run {run_id} from {self.shown}: {exc}") from exc
        finally:
            await client.aclose()
        removed = [f"{len(found)} Redis key(s) of the run"] if found else []
        return removed + ([f"{dropped} record(s) of shared streams"] if dropped else [])

    async def remaining(self, run_id: str) -> list[str]:
        needle = run_id.encode()
        client = self._client()
        try:
            left = [
                f"Redis key {key.decode(errors='replace')}"
                for key in await self._keys(client, f"*{_glob_escape(run_id)}*")
            ]
            for key in await self._keys(client, "maos:*"):
                if b"{run:" in key:
                    continue  # another run's own keys
                kind = (await client.type(key)).decode()
                if kind == "stream":
                    hits = [
                        i for i, fields in await client.xrange(key) if needle in (fields.get(b"d") or b"")
                    ]
                    left += [f"record {i.decode()} of Redis stream {key.decode()}" for i in hits]
                elif kind == "hash":
                    if needle in (await client.hget(key, "v") or b""):
                        left.append(f"the value of Redis key {key.decode()}")
                elif kind == "string" and needle in (await client.get(key) or b""):
                    left.append(f"the value of Redis key {key.decode()}")
        finally:
            await client.aclose()
        return left


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


# ---------------------------------------------------------------------------- retention


async def finished_runs_older_than(store: Store, age_s: float, *, now: float | None = None) -> list[str]:
    """The runs of the store's index that finished more than ``age_s`` seconds ago, oldest first."""
    from maos.liveness import run_records

    cutoff = (time.time() if now is None else now) - age_s
    old = [
        record
        for record in await run_records(store)
        if record.status.finished and (record.finished_at or record.started_at) < cutoff
    ]
    return [record.run_id for record in sorted(old, key=lambda record: record.started_at)]
