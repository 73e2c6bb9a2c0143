"""Distributed workers on Redis: three `maos worker` processes run a 60-task plan for an
orchestrator that runs no agent itself; one worker is SIGKILLed mid-run; the run completes
and every task succeeded exactly once."""

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

from maos.errors import NoSuchGroup
from maos.eventlog import EventLog
from maos.events import TaskSucceeded
from maos.store import keys, open_store
from maos.store.base import Store
from tests.readiness import until

from ..store.redis_harness import RedisServer, redis_server

MAOS = [sys.executable, "-m", "maos"]


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


def _plan(path: Path, ledger: Path) -> None:
    lines = ["name: distributed", "tasks:"]
    for n in range(60):
        deps = [f"t{n - 6}"] if n >= 6 else []
        lines += [
            f"  - id: t{n}",
            f"    command: 'sleep 0.4; echo t{n} $MAOS_ATTEMPT >> {ledger}; echo out-t{n}'",
            f"    depends_on: [{', '.join(deps)}]",
            "    max_attempts: 4",
        ]
    path.write_text("\n".join(lines) + "\n")


def _worker(url: str, name: str, cwd: Path, *, lease_s: float = 2) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MAOS, "worker", "--store", url, "--name", name, "--capacity", "4", "--lease-s", f"{lease_s:g}"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkilled_worker_loses_nothing(server: RedisServer, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    _plan(tmp_path / "plan.yaml", ledger)
    workers = {name: _worker(server.url, name, tmp_path) for name in ("w1", "w2", "w3")}
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
                "12",
                "--lease-s",
                "2",
                "--json",
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 90
        while not ledger.exists() or len(ledger.read_text().splitlines()) < 15:
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.05)
        workers["w1"].send_signal(signal.SIGKILL)
        out, err = run.communicate(timeout=180)
        assert run.returncode == 0, err
        summary = json.loads(out)
        assert summary["counts"] == {"succeeded": 60}
        by_worker, lost = asyncio.run(_check_log(server.url, summary["run_id"]))
        assert {"w2", "w3"} <= set(by_worker), by_worker
        # w1 ran chain tasks when it died: they were reported lost and run elsewhere
        assert lost, "no attempt was reported lost with the killed worker"
        assert all("worker 'w1' stopped heartbeating" in reason for reason in lost)
        # the outputs of parents reached children across workers through the store
        assert all(summary["tasks"][f"t{n}"]["state"] == "succeeded" for n in range(60))
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in workers.items():
            proc.communicate(timeout=60)
            if name != "w1":
                assert proc.returncode == 0, f"worker {name} did not drain cleanly"


async def _check_log(url: str, run_id: str) -> tuple[dict[str, int], list[str]]:
    store = await open_store(url)
    try:
        state = await EventLog(store, run_id).replay()
        current: dict[str, int] = {}
        lost: list[str] = []
        by_worker: dict[str, int] = {}
        started_on: dict[tuple[str, int], str] = {}
        async for _, event in EventLog(store, run_id).iterate():
            if event.type == "task_failed" and event.reason.startswith("lost:"):
                lost.append(event.reason)
            if event.type == "task_started":
                started_on[(event.task_id, event.attempt)] = event.worker
            if isinstance(event, TaskSucceeded) and event.attempt == state.tasks[event.task_id].attempts:
                current[event.task_id] = current.get(event.task_id, 0) + 1
                worker = started_on[(event.task_id, event.attempt)]
                by_worker[worker] = by_worker.get(worker, 0) + 1
        assert current == {f"t{n}": 1 for n in range(60)}, "each task succeeded exactly once"
        return by_worker, lost
    finally:
        await store.close()


def test_an_assignment_whose_delivery_was_lost_is_taken_up(server: RedisServer, tmp_path: Path) -> None:
    """XREADGROUP makes an entry pending for the worker before it replies; a Redis that
    crashes (or a connection cut) in between loses the reply. The worker's lease holds, so
    nobody would reassign the task: the worker finds the entry pending for it and runs it."""
    (tmp_path / "plan.yaml").write_text("name: lost\ntasks:\n  - id: t0\n    command: 'echo ran'\n")
    # A lease that outlasts the stop below on a slow machine: the lost delivery, not the
    # lease running out, must be what brings the task back.
    worker = _worker(server.url, "w1", tmp_path, lease_s=60)
    run: subprocess.Popen[str] | None = None
    try:
        asyncio.run(_until_registered(server.url, "w1"))
        worker.send_signal(signal.SIGSTOP)
        time.sleep(1.0)  # its blocking read (0.5 s) ends on the server: nothing of ours is in flight
        run = subprocess.Popen(
            [*MAOS, "run", "plan.yaml", "--store", server.url, "--workers-only", "--json"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stolen = asyncio.run(_deliver_to(server.url, "w1"))  # the reply that never arrived
        worker.send_signal(signal.SIGCONT)
        out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        assert json.loads(out)["counts"] == {"succeeded": 1}
    finally:
        if run is not None and run.poll() is None:
            run.kill()
            run.communicate()
        worker.send_signal(signal.SIGCONT)
        worker.send_signal(signal.SIGTERM)
        _, worker_err = worker.communicate(timeout=60)
    assert f"assignment {stolen} was delivered but lost on the way" in worker_err


async def _until_registered(url: str, name: str) -> None:
    store = await open_store(url)
    try:
        await until(lambda: _holder_is(store, name), f"worker {name} registered", timeout_s=30)
    finally:
        await store.close()


async def _holder_is(store: Store, name: str) -> bool:
    return await store.holder(keys.worker_lease(name)) == name


async def _deliver_to(url: str, consumer: str) -> str:
    """The run's first assignment, delivered to ``consumer`` by a read that is not its own."""
    store = await open_store(url)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                entries = await store.read_group(keys.ASSIGNMENTS, keys.WORKERS_GROUP, consumer, block_s=1)
            except NoSuchGroup:  # the worker was stopped before it made the group; the run makes it
                entries = []
                await asyncio.sleep(0.1)
            if entries:
                return entries[0].id
            assert time.monotonic() < deadline, "the run queued no assignment"
    finally:
        await store.close()
