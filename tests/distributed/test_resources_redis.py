"""Resource dependencies on Redis: two `maos worker` processes run tasks sharing
``resources: {db: 1}``; the worker holding it is SIGKILLed; no two attempts ever hold db at
once (event timestamps) and the run completes. Shared (cross-run) capacities: two runs on one
store never exceed the capacity together, and a crashed holder's units come back with its
lease."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from maos.eventlog import EventLog
from maos.events import TaskFailed, TaskStarted
from maos.model import Plan, RunConfig, RunStatus, TaskSpec
from maos.orchestrator import Orchestrator
from maos.semaphore import SharedPool
from maos.store import open_store
from maos.store.lease import Lease

from ..constraints.helpers import events, holds, overlapping
from ..store.redis_harness import RedisServer, redis_server

MAOS = [sys.executable, "-m", "maos"]
pytestmark = pytest.mark.redis


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


def _worker(url: str, name: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MAOS, "worker", "--store", url, "--name", name, "--capacity", "3", "--lease-s", "2"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _started_on(url: str, run_id: str) -> dict[str, str]:
    store = await open_store(url)
    try:
        return {
            e.task_id: e.worker for _, e in await EventLog(store, run_id).read() if isinstance(e, TaskStarted)
        }
    finally:
        await store.close()


def _run_id(tmp_path: Path, url: str) -> str | None:
    async def newest() -> str | None:
        store = await open_store(url)
        try:
            records = await store.scan("maos:run:")
            return records[-1].key.removeprefix("maos:run:") if records else None
        finally:
            await store.close()

    return asyncio.run(newest())


def test_two_workers_never_overlap_on_a_resource_and_a_killed_holder_releases(
    server: RedisServer, tmp_path: Path
) -> None:
    lines = ["name: db-contended", "tasks:"]
    for n in range(6):
        lines += [
            f"  - id: db{n}",
            "    command: 'sleep 0.5'",
            "    resources: {db: 1}",
            "    max_attempts: 3",
        ]
    lines += ["  - id: free", "    command: 'sleep 0.5'"]
    (tmp_path / "plan.yaml").write_text("\n".join(lines) + "\n")
    workers = {name: _worker(server.url, name, tmp_path) for name in ("w1", "w2")}
    try:
        run = subprocess.Popen(
            [
                *MAOS,
                "run",
                "plan.yaml",
                "--store",
                server.url,
                "--workers-only",
                "--agents",
                "4",
                "--lease-s",
                "2",
                "--resource",
                "db=1",
                "--json",
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        victim = None
        while victim is None:
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "no db task started"
            run_id = _run_id(tmp_path, server.url)
            if run_id is not None:
                started = asyncio.run(_started_on(server.url, run_id))
                on = [worker for task, worker in started.items() if task.startswith("db")]
                victim = on[0] if on else None
            time.sleep(0.05)
        workers[victim].send_signal(signal.SIGKILL)  # with the db task it holds
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        summary = json.loads(out)
        assert summary["counts"] == {"succeeded": 7}
        log = asyncio.run(_log(server.url, summary["run_id"]))
        lost = [e for e in log if isinstance(e, TaskFailed) and e.reason.startswith("lost:")]
        assert lost, "the killed worker's attempt was not reported lost"
        assert lost[0].task_id.startswith("db"), lost
        held = [h for h in holds(log) if h.task_id.startswith("db")]
        assert len(held) >= 7  # six tasks, one of them twice
        assert overlapping(held) == []
        survivor = next(name for name in workers if name != victim)
        assert {e.worker for e in log if isinstance(e, TaskStarted) and e.task_id.startswith("db")} >= {
            survivor
        }
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers.values():
            proc.communicate(timeout=60)


async def _log(url: str, run_id: str) -> list:  # type: ignore[type-arg]
    store = await open_store(url)
    try:
        return await events(store, run_id)
    finally:
        await store.close()


async def test_runs_sharing_a_resource_stay_within_its_capacity(server: RedisServer, tmp_path: Path) -> None:
    store = await open_store(server.url)
    try:
        plans = [
            Plan(
                name=f"run{n}",
                resources={"lab": {"capacity": 1, "shared": True}},  # type: ignore[dict-item]
                tasks=tuple(
                    TaskSpec(id=f"t{m}", command="sleep 0.3", resources={"lab": 1}) for m in range(3)
                ),
            )
            for n in range(2)
        ]
        orchestrators = [
            Orchestrator(store, plan, RunConfig(agents=3, workdir=str(tmp_path / plan.name)))
            for plan in plans
        ]
        for plan in plans:
            (tmp_path / plan.name).mkdir()
        states = await asyncio.gather(*(o.run() for o in orchestrators))
        assert all(state.status is RunStatus.SUCCEEDED for state in states), [s.summary for s in states]
        held = []
        for orchestrator in orchestrators:
            held += holds(await events(store, orchestrator.run_id))
        assert len(held) == 6
        assert overlapping(held) == []
        assert (await store.get("maos:resources")) is None or json.loads(
            (await store.get("maos:resources")).value  # type: ignore[union-attr]
        ) == {"holders": {}}
    finally:
        await store.close()


async def test_a_crashed_holders_shared_units_come_back_with_its_lease(server: RedisServer) -> None:
    store = await open_store(server.url)
    try:
        dead = Lease(store, "{run:dead}:orchestrator", "orchestrator that will crash", ttl_s=1.0)
        epoch = await dead.acquire()  # never renewed: as if its process were SIGKILLed
        crashed = SharedPool(store, "dead", dead.name)
        assert await crashed.acquire("t", 1, {"gpu": 2}, {"gpu": 2}, epoch) == {}
        alive = Lease(store, "{run:alive}:orchestrator", "live orchestrator", ttl_s=30.0)
        other = SharedPool(store, "alive", alive.name)
        assert await other.acquire("u", 1, {"gpu": 1}, {"gpu": 2}, await alive.acquire()) == {"gpu": 1}
        assert await other.in_use_by_others() == {"gpu": 2}
        deadline = time.monotonic() + 10
        while await other.acquire("u", 1, {"gpu": 1}, {"gpu": 2}, alive.epoch):
            assert time.monotonic() < deadline, "the crashed holder's units never came back"
            await asyncio.sleep(0.1)
        assert await other.in_use_by_others() == {}
        await other.release(["u"])
        assert json.loads((await store.get("maos:resources")).value) == {"holders": {}}  # type: ignore[union-attr]
    finally:
        await store.close()
