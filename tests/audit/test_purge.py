"""``maos purge RUN`` on a real run that used worktrees, checkpoints on S3 (moto's server on
loopback), messages and state, on SQLite and on Redis: afterwards no key, row, file, object or
branch names the run (``--keep-branch`` keeps ``maos/RUN``), checked here independently of the
purge's own check; a live run is refused."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from maos.audit import JsonlSink
from maos.store import keys, open_store
from tests.conftest import MOTO_WARNINGS, REDIS_URL, redis_answers, s3_client

from .conftest import git, maos, real_run

pytestmark = MOTO_WARNINGS

AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


@pytest.fixture(scope="module")
def endpoint(s3_endpoint: str) -> str:
    return s3_endpoint


s3 = s3_client


@pytest.fixture
def bucket(endpoint: str) -> str:
    name = f"purge-{uuid.uuid4().hex[:12]}"
    s3(endpoint).create_bucket(Bucket=name)
    return name


def objects(endpoint: str, bucket: str) -> list[str]:
    listed = s3(endpoint).list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listed.get("Contents", [])]


def files_naming(root: Path, run_id: str) -> list[str]:
    """Paths under ``root`` (its git folder aside) whose name or contents hold the run id."""
    found = []
    for path in root.rglob("*"):
        if ".git" in path.relative_to(root).parts:
            continue
        if run_id in path.name:
            found.append(str(path))
        elif path.is_file() and path.name != "audit.jsonl" and run_id.encode() in path.read_bytes():
            found.append(f"contents of {path}")
    return found


def sqlite_rows_naming(db: Path, run_id: str) -> list[str]:
    found = []
    with sqlite3.connect(db) as conn:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for row in conn.execute(f'SELECT * FROM "{table}"').fetchall():
                if any(run_id.encode() in (v if isinstance(v, bytes) else str(v).encode()) for v in row):
                    found.append(f"{table}: {row!r}"[:200])
    for path in (db, Path(f"{db}-wal")):
        if path.exists() and run_id.encode() in path.read_bytes():
            found.append(f"bytes of {path}")
    return found


async def redis_keys_naming(run_id: str) -> list[str]:
    import redis.asyncio

    client: Any = redis.asyncio.Redis.from_url(REDIS_URL)  # replies are bytes (no decoding)
    try:
        found = [key.decode() async for key in client.scan_iter(match=f"*{run_id}*", count=1000)]
        async for key in client.scan_iter(match="maos:*", count=1000):
            if b"{run:" in key:
                continue
            kind = (await client.type(key)).decode()
            if kind == "stream":
                found += [
                    f"{key.decode()} {i.decode()}"
                    for i, fields in await client.xrange(key)
                    if run_id.encode() in b"".join(fields.values())
                ]
            elif kind == "hash" and run_id.encode() in b"".join((await client.hgetall(key)).values()):
                found.append(key.decode())
        return found
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("backend", "keep_branch"),
    [("sqlite", False), ("sqlite", True), pytest.param("redis", False, marks=pytest.mark.redis)],
)
@pytest.mark.timeout(180)
async def test_purge_leaves_nothing_that_names_the_run(
    repo: Path, endpoint: str, bucket: str, backend: str, keep_branch: bool
) -> None:
    if backend == "redis" and not redis_answers():
        pytest.skip(f"no Redis server answers on {REDIS_URL}")
    store = f"sqlite:///{repo / '.maos' / 'maos.db'}" if backend == "sqlite" else REDIS_URL
    env = {**AWS, "MAOS_STORE": store}
    run_id = await asyncio.to_thread(
        real_run, repo, "--checkpoints", f"s3://{bucket}/ckpt", "--s3-endpoint", endpoint, env=env
    )
    # The run used every part: checkpoints on S3, its branch, state, messages, outputs.
    assert any(f"ckpt/{run_id}/" in name for name in objects(endpoint, bucket))
    assert f"maos/{run_id}" in git(repo, "branch", "--list", "maos/*")
    assert (repo / ".maos" / "runs" / run_id).is_dir()
    opened = await open_store(store)
    try:
        assert await opened.get(keys.state_key(run_id, "shared/x")) is not None
        assert await opened.scan(keys.bus_seq_prefix(run_id))  # the bus carried a message
    finally:
        await opened.close()

    args = ["purge", run_id, "--s3-endpoint", endpoint, *(["--keep-branch"] if keep_branch else [])]
    done = await asyncio.to_thread(maos, repo, *args, env=env)
    assert "checked: nothing naming the run is left" in done.stdout, done.stdout
    assert "checkpoint(s) in s3://" in done.stdout

    assert [name for name in objects(endpoint, bucket) if run_id in name] == []
    branches = git(repo, "for-each-ref", "--format=%(refname)")
    assert [ref for ref in branches.split() if run_id in ref] == (
        [f"refs/heads/maos/{run_id}"] if keep_branch else []
    )
    assert run_id not in git(repo, "worktree", "list", "--porcelain")
    logs = repo / ".git" / "logs"
    reflogs = [p.relative_to(logs).as_posix() for p in logs.rglob("*") if run_id in str(p)]
    assert reflogs == ([f"refs/heads/maos/{run_id}"] if keep_branch else [])
    assert files_naming(repo, run_id) == []
    if backend == "sqlite":
        assert sqlite_rows_naming(repo / ".maos" / "maos.db", run_id) == []
    else:
        assert await redis_keys_naming(run_id) == []
    purged = [r for r in await JsonlSink(repo / ".maos" / "audit.jsonl").read(run_id) if r.action == "purge"]
    assert [r.outcome for r in purged] == ["ok"]
    # The run is gone from the index: `maos audit` still shows its trail.
    assert run_id not in (await asyncio.to_thread(maos, repo, "runs", env=env)).stdout
    assert "state:shared/x" in (await asyncio.to_thread(maos, repo, "audit", run_id)).stdout


@pytest.mark.timeout(120)
async def test_a_live_run_is_refused_unless_forced_and_retention_purges_old_runs(repo: Path) -> None:
    store = f"sqlite:///{repo / '.maos' / 'maos.db'}"
    env = {"MAOS_STORE": store}
    run_id = await asyncio.to_thread(real_run, repo, env=env)
    opened = await open_store(store)
    try:  # an orchestrator of this host that is alive (this process) holds the run's lease
        owner = f"orchestrator {socket.gethostname()}:{os.getpid()} (test)"
        assert await opened.acquire(keys.run_lease(run_id), owner, 60)
    finally:
        await opened.close()
    refused = await asyncio.to_thread(maos, repo, "purge", run_id, env=env, check=False)
    assert refused.returncode == 1
    assert "is live" in refused.stderr
    assert (repo / ".maos" / "runs" / run_id).is_dir()  # nothing was removed
    none_old = await asyncio.to_thread(maos, repo, "purge", "--older-than", "30d", env=env)
    assert "no run finished more than 30d ago" in none_old.stdout
    # retention skips a live run too, and --force takes it
    done = await asyncio.to_thread(maos, repo, "purge", "--older-than", "0s", "--force", env=env)
    assert f"run {run_id}: removed" in done.stdout
    assert "checked: nothing naming the run is left" in done.stdout
    outcomes = [
        r.outcome for r in await JsonlSink(repo / ".maos" / "audit.jsonl").read(run_id) if r.action == "purge"
    ]
    assert outcomes == ["refused", "ok"]
    assert sqlite_rows_naming(repo / ".maos" / "maos.db", run_id) == []
    assert files_naming(repo, run_id) == []
    bad = await asyncio.to_thread(maos, repo, "purge", "--older-than", "soon", env=env, check=False)
    assert bad.returncode == 2


async def test_purge_erases_the_runs_keys_of_any_type_and_no_other_runs(tmp_path: Path) -> None:
    """Store contents are untrusted: a key of the run stored as a BLOB (by another program)
    is erased with the rest; a key of another run that merely contains the run's tag is not."""
    from maos.purge import _eraser

    run, other = "20261203-000000-aaaa", "20261203-000000-bbbb"
    url = f"sqlite:///{tmp_path / 'maos.db'}"
    store = await open_store(url)
    try:
        await store.set(keys.state_key(run, "a"), b"1")
        await store.set(keys.state_key(other, keys.run_prefix(run) + "b"), b"2")
        await store.set(keys.state_key(other, "c"), b"3")
        eraser = _eraser(store)
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "maos.db") as conn:
        conn.execute(
            "INSERT INTO kv (key, value, version) VALUES (CAST(? AS BLOB), X'00', 1)",
            (keys.state_key(run, "blob"),),
        )
    await eraser.erase(run)
    store = await open_store(url)
    try:
        left = sorted(item.key for item in await store.scan(""))
    finally:
        await store.close()
    assert left == sorted([keys.state_key(other, keys.run_prefix(run) + "b"), keys.state_key(other, "c")])


@pytest.mark.redis
async def test_purge_on_redis_leaves_another_runs_key_that_names_the_run() -> None:
    if not redis_answers():
        pytest.skip(f"no Redis server answers on {REDIS_URL}")
    from maos.purge import _eraser

    run, other = (f"20261203-000000-{uuid.uuid4().hex[:8]}" for _ in range(2))
    inside = keys.state_key(other, keys.run_prefix(run) + "b")
    store = await open_store(REDIS_URL)
    try:
        await store.set(keys.state_key(run, "a"), b"1")
        await store.set(inside, b"2")
        await _eraser(store).erase(run)
        assert await store.get(keys.state_key(run, "a")) is None
        assert await store.get(inside) is not None
        await _eraser(store).erase(other)
    finally:
        await store.close()
