"""Failover on one machine (issue 14; ADR 0012): fencing, taking a run back, supervisors.

Real store, real agent processes. The multi-host versions of these scenarios (partitions,
Redis restarts) are in ``tests/multihost/test_failover.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maos.errors import LeaseLost
from maos.eventlog import EventLog
from maos.events import RunResumed, TaskAssigned, TaskStarted, TaskSucceeded
from maos.model import AgentSpec, Assignment, Plan, RunConfig, RunStatus, TaskSpec, TaskState
from maos.orchestrator import Orchestrator
from maos.store import keys, open_store
from maos.store.base import Store
from maos.worker import StoreWorker

MAOS = [sys.executable, "-m", "maos"]


def _chain(tmp_path: Path, n: int, *, sleep_s: float = 0.3) -> Plan:
    """``n`` command tasks in a chain; each attempt appends ``TASK ATTEMPT`` to the ledger."""
    ledger = tmp_path / "ledger"
    return Plan(
        name="failover",
        tasks=tuple(
            TaskSpec(
                id=f"t{i}",
                command=f'sleep {sleep_s}; echo "t{i} $MAOS_ATTEMPT" >> {ledger}',
                depends_on=(f"t{i - 1}",) if i else (),
            )
            for i in range(n)
        ),
    )


def _ledger(tmp_path: Path) -> list[str]:
    path = tmp_path / "ledger"
    return path.read_text().splitlines() if path.exists() else []


async def _wait_for(check: object, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_fenced_orchestrator_writes_nothing_more_and_stops(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """Another owner takes the lease: the old orchestrator's next write is refused, it stops
    its agents and leaves, and the log holds not one event of it after the takeover."""
    orchestrator = Orchestrator(
        sqlite_store, _chain(tmp_path, 6), RunConfig(agents=2, workdir=str(tmp_path)), lease_s=30.0
    )
    driving = asyncio.create_task(orchestrator.run())
    await _wait_for(lambda: _has_ledger(tmp_path, 2), "two tasks done")
    lease = keys.run_lease(orchestrator.run_id)
    assert await sqlite_store.release(lease, orchestrator.owner)
    assert await sqlite_store.acquire(lease, "intruder", 60) == 2
    length = await sqlite_store.length(keys.events(orchestrator.run_id))
    with pytest.raises(LeaseLost, match="taken over by intruder"):
        await asyncio.wait_for(driving, 30)
    assert await sqlite_store.length(keys.events(orchestrator.run_id)) == length
    state = await EventLog(sqlite_store, orchestrator.run_id).replay()
    assert state.status is RunStatus.RUNNING  # left to its new owner
    assert await sqlite_store.holder(lease) == "intruder"
    running = [t for t in state.tasks.values() if t.state in (TaskState.ASSIGNED, TaskState.RUNNING)]
    for task in running:  # its agent was stopped with it
        assert task.pid is None or not _alive(task.pid)


async def test_an_orchestrator_takes_its_run_back_when_nobody_else_did(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """The lease ran out (a store outage, a long pause) and nobody took it: the orchestrator
    takes it back under a new epoch, continues from the log, and the run succeeds."""
    orchestrator = Orchestrator(
        sqlite_store, _chain(tmp_path, 5), RunConfig(agents=2, workdir=str(tmp_path)), lease_s=30.0
    )
    driving = asyncio.create_task(orchestrator.run())
    await _wait_for(lambda: _has_ledger(tmp_path, 2), "two tasks done")
    assert await sqlite_store.release(keys.run_lease(orchestrator.run_id), orchestrator.owner)
    state = await asyncio.wait_for(driving, 60)
    assert state.status is RunStatus.SUCCEEDED
    events = [event for _, event in await EventLog(sqlite_store, orchestrator.run_id).read("0", count=10_000)]
    resumed = [event for event in events if isinstance(event, RunResumed)]
    assert [event.epoch for event in resumed] == [2]
    after = events[events.index(resumed[0]) :]
    assert all(event.epoch == 2 for event in after if isinstance(event, TaskAssigned))
    succeeded_attempts = {(tid, task.attempts) for tid, task in state.tasks.items()}
    for tid, attempt in succeeded_attempts:
        assert _ledger(tmp_path).count(f"{tid} {attempt}") == 1


async def test_a_worker_drops_assignments_of_an_old_epoch(sqlite_store: Store, tmp_path: Path) -> None:
    """An assignment queued by an orchestrator that has since lost the run never runs."""
    run_id = "20261202-000000-old0"
    lease = keys.run_lease(run_id)
    await sqlite_store.acquire(lease, "old", 0.05)

    async def expired() -> bool:
        return await sqlite_store.holder(lease) is None

    await _wait_for(expired, "the old lease to run out")
    assert await sqlite_store.acquire(lease, "new", 60) == 2
    marker = tmp_path / "ran"
    stale = Assignment(
        run_id=run_id,
        task=TaskSpec(id="t0", command=f"touch {marker}"),
        agent=AgentSpec(id="agent-1"),
        attempt=1,
        workdir=str(tmp_path),
        epoch=1,
    )
    await sqlite_store.create_group(keys.ASSIGNMENTS, keys.WORKERS_GROUP)
    await sqlite_store.append(keys.ASSIGNMENTS, stale.model_dump_json().encode())
    from maos.agents.command import CommandRuntime

    worker = StoreWorker(sqlite_store, {"command": CommandRuntime()}, name="w1", lease_s=5)
    working = asyncio.create_task(worker.run())

    async def queue_empty() -> bool:
        return not await sqlite_store.pending(keys.ASSIGNMENTS, keys.WORKERS_GROUP) and bool(
            await sqlite_store.read(keys.ASSIGNMENTS)
        )

    await _wait_for(queue_empty, "the worker to take and drop the assignment")
    await asyncio.sleep(0)
    worker.request_stop()
    await asyncio.wait_for(working, 30)
    assert not marker.exists()
    assert not [e for _, e in await EventLog(sqlite_store, run_id).read("0") if isinstance(e, TaskStarted)]


def test_a_supervisor_finishes_a_run_whose_orchestrator_was_killed(tmp_path: Path) -> None:
    """SIGKILL `maos run` mid-run; `maos supervisor` takes the run over and finishes it, and no
    task that had succeeded runs again."""
    _write_plan(tmp_path, 6, sleep_s=0.6)
    run = subprocess.Popen(
        [*MAOS, "run", "plan.yaml", "--lease-s", "2", "--agents", "1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    supervisor = None
    try:
        _wait(lambda: len(_ledger(tmp_path)) >= 2, run, "two tasks done")
        run.send_signal(signal.SIGKILL)
        run.wait(10)
        # What the log says succeeded (a task may have written its line and not been recorded)
        done_before = asyncio.run(_succeeded_in_log(tmp_path))
        assert "t0" in done_before  # t1 started after it
        supervisor = _supervisor(tmp_path, "--lease-s", "2")
        _wait(
            lambda: _run_status(tmp_path) == "succeeded", supervisor, "the supervisor to finish the run", 60
        )
    finally:
        for process in (run, supervisor):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
    assert supervisor is not None
    assert supervisor.returncode == 0, (tmp_path / "supervisor.err").read_text()
    lines = _ledger(tmp_path)
    for task in done_before:
        assert [line for line in lines if line.startswith(f"{task} ")] == [f"{task} 1"]
    assert sorted({line.split()[0] for line in lines}) == [f"t{i}" for i in range(6)]
    status = json.loads(_maos(tmp_path, "status", "--json").stdout)
    assert status["counts"] == {"succeeded": 6}


def test_a_detached_run_is_driven_by_a_supervisor(tmp_path: Path) -> None:
    _write_plan(tmp_path, 3, sleep_s=0.1)
    started = _maos(tmp_path, "run", "plan.yaml", "--detach", "--json")
    run_id = json.loads(started.stdout)["run_id"]
    assert "no `maos supervisor` is running" in started.stderr
    supervisor = _supervisor(tmp_path)
    try:
        _wait(lambda: _run_status(tmp_path) == "succeeded", supervisor, "the detached run to finish", 60)
        again = _maos(tmp_path, "run", "plan.yaml", "--detach")
        assert "no `maos supervisor`" not in again.stderr  # one is alive now
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(30)
    listed = json.loads(_maos(tmp_path, "runs", "--json").stdout)
    assert run_id in [run["run_id"] for run in listed]


# ---------------------------------------------------------------------------- helpers


async def _log_length(cwd: Path) -> int:
    from maos.liveness import run_records
    from maos.store import open_store

    store = await open_store(f"sqlite:///{cwd / '.maos' / 'maos.db'}")
    try:
        [record] = await run_records(store)
        return await store.length(keys.events(record.run_id))
    finally:
        await store.close()


async def _finished_log_length(cwd: Path) -> int | None:
    """The length of the run's log once its owner has finished writing it (the run's end and
    the final checkpoint that follows it), else None."""
    from maos.liveness import run_records

    store = await open_store(f"sqlite:///{cwd / '.maos' / 'maos.db'}")
    try:
        [record] = await run_records(store)
        logged = await store.read(keys.events(record.run_id), count=1_000_000)
        types = [json.loads(entry.record)["type"] for entry in logged]
        settled = "run_finished" in types and types[-1] == "checkpoint_taken"
        return len(logged) if settled else None
    finally:
        await store.close()


def _stop_between_writes(process: subprocess.Popen[bytes], database: Path) -> None:
    """SIGSTOP ``process`` at a moment it holds no write transaction: stopped inside one, it
    would hold SQLite's write lock (and every writer) for as long as it stays stopped."""
    while True:
        process.send_signal(signal.SIGSTOP)
        conn = sqlite3.connect(database, timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            process.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        finally:
            conn.close()


async def _has_ledger(tmp_path: Path, n: int) -> bool:
    return len(_ledger(tmp_path)) >= n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _write_plan(tmp_path: Path, n: int, *, sleep_s: float) -> None:
    ledger = tmp_path / "ledger"
    tasks = "".join(
        f"  - id: t{i}\n    command: 'sleep {sleep_s}; echo \"t{i} $MAOS_ATTEMPT\" >> {ledger}'\n"
        + (f"    depends_on: [t{i - 1}]\n" if i else "")
        for i in range(n)
    )
    (tmp_path / "plan.yaml").write_text(f"name: failover\ntasks:\n{tasks}")


def _supervisor(cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    with (cwd / "supervisor.err").open("wb") as err:
        return subprocess.Popen(
            [*MAOS, "supervisor", "--poll-s", "0.2", *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=err
        )


def _maos(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*MAOS, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    return done


async def _succeeded_in_log(cwd: Path) -> set[str]:
    run_id = json.loads(_maos(cwd, "runs", "--json").stdout)[-1]["run_id"]
    store = await open_store(f"sqlite:///{cwd / '.maos' / 'maos.db'}")
    try:
        return {e.task_id async for _, e in EventLog(store, run_id).iterate() if isinstance(e, TaskSucceeded)}
    finally:
        await store.close()


def _run_status(cwd: Path) -> str:
    listed = json.loads(_maos(cwd, "runs", "--json").stdout)
    return str(listed[-1]["status"]) if listed else ""


def _wait(
    check: object, process: subprocess.Popen[str] | subprocess.Popen[bytes], what: str, timeout_s: float = 30
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert process.poll() is None, f"{what}: the process exited ({process.returncode})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_paused_orchestrator_is_fenced_when_it_wakes(tmp_path: Path) -> None:
    """SIGSTOP `maos run` past its lease: a supervisor takes the run over and finishes it. On
    SIGCONT the old orchestrator's first write is refused (its epoch is over); it stops its
    agents, finds the run finished by its new owner, reports that and writes nothing."""
    _write_plan(tmp_path, 6, sleep_s=0.6)
    with (tmp_path / "run.err").open("wb") as err:
        run = subprocess.Popen(
            [*MAOS, "run", "plan.yaml", "--lease-s", "1", "--agents", "1"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    supervisor = None
    try:
        _wait(lambda: len(_ledger(tmp_path)) >= 2, run, "two tasks done")
        _stop_between_writes(run, tmp_path / ".maos" / "maos.db")
        supervisor = _supervisor(tmp_path, "--lease-s", "1")
        _wait(
            lambda: asyncio.run(_finished_log_length(tmp_path)) is not None,
            supervisor,
            "the supervisor to finish the run",
            60,
        )
        logged = asyncio.run(_log_length(tmp_path))
        run.send_signal(signal.SIGCONT)
        run.wait(30)
        assert asyncio.run(_log_length(tmp_path)) == logged  # not one event of the old owner
    finally:
        for process in (run, supervisor):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
                process.wait(30)
    said = (tmp_path / "run.err").read_text()
    # on waking it learns it lost the lease (its renewal or its first write says so) and
    # stops; whichever came first, nothing it wrote landed (checked above)
    assert re.search(r"lease \{run:\S+\}:orchestrator lost: ", said), said
    assert "Traceback" not in said
    status = json.loads(_maos(tmp_path, "status", "--json").stdout)
    assert status["status"] == "succeeded"
    assert status["counts"] == {"succeeded": 6}
