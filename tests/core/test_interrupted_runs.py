"""A run whose orchestrator is gone shows as `interrupted` (since its last event, with the
hint to resume it) in `maos runs`, `maos status`, their --json and the dashboard; never as
`running`. Nothing of it is stored: after `maos resume` the run shows its true status."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from maos.eventlog import EventLog
from maos.events import RunFinished, RunStarted, TaskAssigned, TaskReady, TaskStarted, TaskSucceeded
from maos.liveness import INTERRUPTED, dead_here, run_view
from maos.model import Plan, RunConfig, RunRecord, RunState, RunStatus, TaskSpec
from maos.store import keys, open_store
from maos.store.base import Store
from maos.web import create_app

from .test_agents_die_with_host import agent_pids, assert_none_left

MAOS = [sys.executable, "-m", "maos"]
WAITING_AGENT = "if [ -e go ]; then echo done; else sleep 300; fi"


def maos(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*MAOS, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    return done


async def _snapshot(url: str, run_id: str) -> dict[str, Any]:
    store = await open_store(url)
    try:
        app = create_app(store)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client,
        ):
            response = await client.get(f"/api/runs/{run_id}/state")
            assert response.status_code == 200
            found: dict[str, Any] = response.json()
            # the run selector's list says the same
            listed = (await client.get("/api/runs")).json()["runs"]
            assert [run["status"] for run in listed if run["run_id"] == run_id] == [found["status"]]
            return found
    finally:
        await store.close()


async def _lease_holder(url: str, run_id: str) -> str | None:
    store = await open_store(url)
    try:
        return await store.holder(keys.run_lease(run_id))
    finally:
        await store.close()


def test_a_killed_run_shows_interrupted_until_resumed(tmp_path: Path) -> None:
    tasks = "".join(f"  - id: t{n}\n    command: '{WAITING_AGENT}'\n" for n in range(2))
    (tmp_path / "plan.yaml").write_text(f"name: waiting\ntasks:\n{tasks}")
    url = f"sqlite:///{tmp_path / '.maos' / 'maos.db'}"
    run = subprocess.Popen(
        [*MAOS, "run", "plan.yaml", "--agents", "2", "--lease-s", "1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        run_id = ""
        while not run_id or len(agent_pids(run_id)) < 4:  # two agents, each waiting in a sleep
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "the agents did not start"
            time.sleep(0.1)
            if not run_id and (tmp_path / ".maos" / "maos.db").exists():
                listed = json.loads(maos("runs", "--json", cwd=tmp_path).stdout)
                run_id = listed[0]["run_id"] if listed else ""
        alive = json.loads(maos("status", run_id, "--json", cwd=tmp_path).stdout)
        assert alive["status"] == "running"  # a live orchestrator holds the lease
        assert alive["interrupted_since"] is None
        assert alive["hint"] is None
        assert alive["orchestrator"].startswith(f"orchestrator {socket.gethostname()}:")
        assert alive["orchestrator_epoch"] == 1
        seen = asyncio.run(_snapshot(f"sqlite:///{tmp_path / '.maos' / 'maos.db'}", run_id))
        assert (seen["orchestrator"], seen["orchestrator_epoch"]) == (alive["orchestrator"], 1)
    finally:
        run.kill()
        run.communicate(timeout=30)
    killed_at = time.time()
    assert_none_left(run_id)

    hint = f"run `maos resume {run_id}` (a running `maos supervisor` takes it over by itself)"
    for lease_ran_out in (False, True):  # at once (a dead process of this host), and after its lease ran out
        if lease_ran_out:
            deadline = time.monotonic() + 30
            while asyncio.run(_lease_holder(url, run_id)) is not None:
                assert time.monotonic() < deadline, "the dead orchestrator's lease never ran out"
                time.sleep(0.05)
        listed = json.loads(maos("runs", "--json", cwd=tmp_path).stdout)
        assert listed[0]["run_id"] == run_id
        assert listed[0]["status"] == INTERRUPTED
        assert (listed[0]["orchestrator"], listed[0]["orchestrator_epoch"]) == (None, None)
        assert listed[0]["logged_status"] == "running"
        assert listed[0]["hint"] == hint
        assert listed[0]["interrupted_since"] <= killed_at
        status = json.loads(maos("status", run_id, "--json", cwd=tmp_path).stdout)
        assert status["status"] == INTERRUPTED
        assert status["hint"] == hint
        assert status["interrupted_since"] == listed[0]["interrupted_since"]
        # their agents died with the orchestrator: not shown running, though the log says so
        assert status["counts"] == {INTERRUPTED: 2}
        assert {task["state"] for task in status["tasks"].values()} == {INTERRUPTED}
        assert {task["logged_state"] for task in status["tasks"].values()} == {"running"}
        snapshot = asyncio.run(_snapshot(url, run_id))
        assert snapshot["status"] == INTERRUPTED
        assert snapshot["hint"] == hint
        assert snapshot["interrupted_since"] == status["interrupted_since"]
        assert [task["state"] for task in snapshot["tasks"]] == [INTERRUPTED, INTERRUPTED]
        assert snapshot["counts"] == {INTERRUPTED: 2}
        assert {agent["state"] for agent in snapshot["agents"]} == {INTERRUPTED}

    metrics = asyncio.run(_scraped(url, run_id, 'maos_tasks{state="interrupted"} 2.0'))
    assert "maos_run_interrupted 1.0" in metrics  # what the log says last is not what is true
    assert "maos_active_agents 0.0" in metrics
    assert 'maos_tasks{state="running"} 0.0' in metrics

    text = maos("status", run_id, cwd=tmp_path).stdout
    assert f"run {run_id} plan 'waiting': interrupted" in text
    assert hint in text
    assert "running (" not in text.splitlines()[0]
    assert "(interrupted 2)" in text.splitlines()[0]
    rows = [line.split() for line in text.splitlines() if line.split()[:1] in (["t0"], ["t1"])]
    assert [row[1] for row in rows] == [INTERRUPTED, INTERRUPTED]  # no task is shown running
    table = maos("runs", cwd=tmp_path).stdout
    assert INTERRUPTED in table
    assert hint in table
    # following the log of an interrupted run ends, saying why, instead of waiting forever
    began = time.monotonic()
    followed = maos("logs", run_id, "--follow", cwd=tmp_path)
    assert time.monotonic() - began < 30
    assert f"run {run_id} is interrupted" in " ".join(followed.stderr.split())

    (tmp_path / "go").touch()
    maos("resume", run_id, "--lease-s", "1", cwd=tmp_path)
    status = json.loads(maos("status", run_id, "--json", cwd=tmp_path).stdout)
    assert status["status"] == "succeeded"
    assert status["hint"] is None
    assert json.loads(maos("runs", "--json", cwd=tmp_path).stdout)[0]["status"] == "succeeded"
    assert asyncio.run(_snapshot(url, run_id))["status"] == "succeeded"
    resumed = asyncio.run(_scraped(url, run_id, 'maos_tasks{state="succeeded"} 2.0'))
    assert "maos_run_interrupted 0.0" in resumed
    assert 'maos_tasks{state="interrupted"} 0.0' in resumed
    # never stored: the log holds no such status
    assert INTERRUPTED not in asyncio.run(_raw_log(url, run_id))


async def _scraped(url: str, run_id: str, until: str) -> str:
    """``/metrics`` of a dashboard that follows run ``run_id`` from outside it, once it shows
    ``until`` (it has read the log that far)."""
    from maos.web import serve_in_background

    app = create_app(url, run_id=run_id)
    async with (
        serve_in_background(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
    ):
        deadline = time.monotonic() + 30
        while until not in (text := (await client.get("/metrics")).text):
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.1)
        return text


async def _raw_log(url: str, run_id: str) -> str:
    store = await open_store(url)
    try:
        return "".join(
            entry.record.decode() for entry in await store.read(keys.events(run_id), count=100_000)
        )
    finally:
        await store.close()


# ---------------------------------------------------------------------------- run_view


async def _started(store: Store, run_id: str) -> None:
    plan = Plan(name="p", tasks=(TaskSpec(id="a", command="true"),))
    await EventLog(store, run_id).append(
        RunStarted(run_id=run_id, plan=plan, config=RunConfig(agents=1, workdir="."), agents=())
    )


def test_a_run_whose_checkpoints_are_all_corrupt_resumes_from_its_intact_log(tmp_path: Path) -> None:
    """Checkpoints are for a log that is lost; with the log there, corrupt ones (another
    program, a bad disk) cost a warning and a replay of the log, not the run."""
    (tmp_path / "plan.yaml").write_text(
        "name: ckpt\ntasks:\n  - {id: a, command: 'true'}\n"
        "  - {id: b, command: 'if [ \"$MAOS_ATTEMPT\" = 1 ]; then sleep 300; fi', depends_on: [a]}\n"
    )
    run = subprocess.Popen(
        [*MAOS, "run", "plan.yaml"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    checkpoints = tmp_path / ".maos" / "checkpoints"
    try:
        deadline = time.monotonic() + 60
        while len(list(checkpoints.glob("*/*.ckpt"))) < 1 or not agent_pids_of_plan(tmp_path):
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "no checkpoint, or task b did not start"
            time.sleep(0.1)
    finally:
        run.kill()
        run.communicate(timeout=30)
    for path in checkpoints.glob("*/*.ckpt"):
        path.write_bytes(os.urandom(200))
    run_id = json.loads(maos("runs", "--json", cwd=tmp_path).stdout)[0]["run_id"]
    assert_none_left(run_id)
    resumed = maos("resume", run_id, "--json", cwd=tmp_path)
    assert json.loads(resumed.stdout)["counts"] == {"succeeded": 2}
    assert "replaying its log from the start instead" in resumed.stderr


def agent_pids_of_plan(cwd: Path) -> list[int]:
    """The processes of the newest run in ``cwd``'s store, once it is listed."""
    listed = (
        json.loads(maos("runs", "--json", cwd=cwd).stdout) if (cwd / ".maos" / "maos.db").exists() else []
    )
    return agent_pids(listed[0]["run_id"]) if listed else []


async def test_run_view_reads_the_lease(sqlite_store: Store) -> None:
    await _started(sqlite_store, "r1")
    lease = keys.run_lease("r1")
    here = socket.gethostname()

    view = await run_view(sqlite_store, "r1", RunStatus.RUNNING)
    assert view.interrupted  # nobody ever held it
    assert view.interrupted_since is not None

    me = f"orchestrator {here}:{os.getpid()} (abc)"
    assert await sqlite_store.acquire(lease, me, 30)
    view = await run_view(sqlite_store, "r1", RunStatus.DRAINING)
    assert (view.status, view.orchestrator, view.hint) == ("draining", me, None)
    assert view.owner == f"{here}:{os.getpid()} · epoch {view.epoch}"
    assert view.epoch == 1
    await sqlite_store.release(lease, me)

    elsewhere = "orchestrator some-other-host:1 (abc)"
    assert await sqlite_store.acquire(lease, elsewhere, 30)
    assert (await run_view(sqlite_store, "r1", RunStatus.RUNNING)).status == "running"  # trust its lease
    await sqlite_store.release(lease, elsewhere)

    dead = f"orchestrator {here}:{_dead_pid()} (abc)"
    assert dead_here(dead)
    assert await sqlite_store.acquire(lease, dead, 30)
    view = await run_view(sqlite_store, "r1", RunStatus.CANCELLING)
    assert (view.status, view.logged_status) == (INTERRUPTED, "cancelling")
    assert view.hint == "run `maos resume r1` (a running `maos supervisor` takes it over by itself)"
    assert view.owner == "none"


async def test_a_finished_log_wins_over_a_stale_record(sqlite_store: Store) -> None:
    await _started(sqlite_store, "r2")
    await EventLog(sqlite_store, "r2").append(RunFinished(status=RunStatus.FAILED))
    record = RunRecord(
        run_id="r2", name="p", tasks=1, workdir=".", started_at=time.time(), status=RunStatus.RUNNING
    )
    await sqlite_store.set(keys.run_record("r2"), record.model_dump_json().encode())
    view = await run_view(sqlite_store, "r2", record.status)  # what `maos runs` passes
    assert (view.status, view.interrupted) == ("failed", False)
    assert (await run_view(sqlite_store, "r2", RunStatus.SUCCEEDED)).status == "succeeded"


async def test_forged_ends_of_a_run_whose_task_runs_change_nothing(sqlite_store: Store) -> None:
    """Two run_finished entries forged into the log of an interrupted run whose task was
    running: `maos status` said succeeded, `maos runs` failed, and resume refused, so the
    unfinished work was lost. Neither applies; every view says interrupted."""
    await _started(sqlite_store, "r3")
    log = EventLog(sqlite_store, "r3")
    await log.append(TaskReady(task_id="a"))
    await log.append(TaskAssigned(task_id="a", agent_id="x", attempt=1))
    await log.append(RunFinished(status=RunStatus.SUCCEEDED))
    await log.append(RunFinished(status=RunStatus.FAILED))
    state = await log.replay()
    assert state.status is RunStatus.RUNNING
    assert state.rejected == 2
    view = await run_view(sqlite_store, "r3", RunStatus.RUNNING)  # what `maos runs` passes
    assert (view.status, view.interrupted) == (INTERRUPTED, True)


async def test_following_a_log_does_not_stop_at_an_end_that_does_not_apply(sqlite_store: Store) -> None:
    """The dashboard's metrics stopped following a run at a run_finished the reducer refuses."""
    await _started(sqlite_store, "r4")
    log = EventLog(sqlite_store, "r4")
    for event in (
        TaskReady(task_id="a"),
        TaskAssigned(task_id="a", agent_id="x", attempt=1),
        TaskStarted(task_id="a", agent_id="x", attempt=1, pid=1),
        RunFinished(status=RunStatus.SUCCEEDED),  # refused: a runs
        TaskSucceeded(task_id="a", agent_id="x", attempt=1, duration_s=0.1),
        RunFinished(status=RunStatus.SUCCEEDED),
    ):
        await log.append(event)
    state = RunState()
    seen = [event.type async for _, event in log.follow(state, poll_s=0.1)]
    assert seen[-2:] == ["task_succeeded", "run_finished"]
    assert state.status is RunStatus.SUCCEEDED
    assert state.rejected == 1


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("pid", ["-1", "0", "99999999999999999999999", "٣", "+1", "1_0", "abc", ""])
async def test_a_lease_owner_with_a_pid_that_is_no_pid_is_not_known_dead(
    sqlite_store: Store, pid: str
) -> None:
    # os.kill(-1, 0) asks about every process, os.kill(0, 0) about our group, a huge pid
    # raised OverflowError out of 'maos runs': such an owner is no process of this host.
    owner = f"orchestrator {socket.gethostname()}:{pid} (abc)"
    assert not dead_here(owner)
    await _started(sqlite_store, "r3")
    await sqlite_store.acquire(keys.run_lease("r3"), owner, 30)
    view = await run_view(sqlite_store, "r3", RunStatus.RUNNING)
    assert view.orchestrator == owner
