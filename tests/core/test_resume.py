"""Kill the orchestrator with SIGKILL mid-run; `maos resume` finishes the run, re-running only
what had not succeeded. A second orchestrator for a live run is refused."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maos.blobs import open_blob_store
from maos.checkpoint.checkpointer import Checkpointer
from maos.errors import RunLocked, RunNotFound
from maos.eventlog import EventLog
from maos.events import TaskStarted, TaskSucceeded
from maos.liveness import run_records
from maos.model import Plan, RunConfig, RunStatus, TaskSpec, TaskState
from maos.orchestrator import Orchestrator
from maos.security import load_or_create_key
from maos.store import open_store

MAOS = [sys.executable, "-m", "maos"]


def test_resume_after_sigkill_reruns_only_unfinished_tasks(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    tasks = "".join(
        f"  - id: t{n}\n    command: 'echo t{n} >> {ledger}; sleep 0.6'\n"
        + (f"    depends_on: [t{n - 2}]\n" if n >= 2 else "")
        for n in range(12)
    )
    (tmp_path / "plan.yaml").write_text(f"name: resumable\ntasks:\n{tasks}")
    proc = subprocess.Popen(
        [*MAOS, "run", "plan.yaml", "--agents", "2", "--lease-s", "2", "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not ledger.exists() or len(ledger.read_text().split()) < 5:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    killed_at = time.time()
    proc.communicate(timeout=30)
    runs = json.loads(
        subprocess.run(
            [*MAOS, "runs", "--json"], cwd=tmp_path, capture_output=True, text=True, check=True
        ).stdout
    )
    run_id = runs[0]["run_id"]
    before = asyncio.run(_succeeded_tasks(tmp_path, run_id))
    assert before, "some tasks should have finished before the kill"

    done = subprocess.run(
        [*MAOS, "resume", run_id, "--json", "--lease-s", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    summary = json.loads(done.stdout)
    assert summary["counts"] == {"succeeded": 12}
    events = asyncio.run(_events(tmp_path, run_id))
    succeeded = [e.task_id for e in events if isinstance(e, TaskSucceeded)]
    assert sorted(succeeded) == sorted(f"t{n}" for n in range(12))  # each exactly once
    restarted = {e.task_id for e in events if isinstance(e, TaskStarted) and e.ts > killed_at}
    assert not restarted & before, "a task that had succeeded ran again"
    ran = ledger.read_text().split()
    for task_id in before:
        assert ran.count(task_id) == 1


async def _events(cwd: Path, run_id: str) -> list:  # type: ignore[type-arg]
    store = await open_store(f"sqlite:///{cwd / '.maos/maos.db'}")
    try:
        return [event async for _, event in EventLog(store, run_id).iterate()]
    finally:
        await store.close()


async def _succeeded_tasks(cwd: Path, run_id: str) -> set[str]:
    return {e.task_id for e in await _events(cwd, run_id) if isinstance(e, TaskSucceeded)}


async def test_second_orchestrator_for_a_live_run_is_refused(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'maos.db'}")
    try:
        plan = Plan(name="locked", tasks=(TaskSpec(id="slow", command=f"touch {tmp_path}/go; sleep 1"),))
        config = RunConfig(agents=1, workdir=str(tmp_path))
        first = Orchestrator(store, plan, config)
        running = asyncio.create_task(first.run())
        async with asyncio.timeout(30):
            while not (tmp_path / "go").exists():
                await asyncio.sleep(0.02)
        second = Orchestrator(store, plan, config, run_id=first.run_id)
        with pytest.raises(
            RunLocked, match=f"run {first.run_id} is being driven by another orchestrator"
        ) as info:
            await second.resume()
        assert f"{os.getpid()}" in str(info.value)
        state = await running
        assert state.status is RunStatus.SUCCEEDED
        # once the first has finished, the run can be opened again (resume of a finished run is a no-op)
        again = await Orchestrator.resume_from(store, first.run_id)
        assert again.state.status is RunStatus.SUCCEEDED
        assert (await again.resume()).status is RunStatus.SUCCEEDED
        with pytest.raises(RunNotFound, match="no run 'nope'"):
            await Orchestrator.resume_from(store, "nope")
    finally:
        await store.close()


async def test_resume_from_reads_an_interrupted_run_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL `maos run` mid-run; `Orchestrator.resume_from` reads the run once (its newest
    checkpoint, then the log after it), with the run's own plan and agents, and `resume()`
    goes on from that state to the end: only what had not succeeded runs again."""
    ledger = tmp_path / "ledger"
    tasks = "".join(
        f"  - id: t{n}\n    command: 'echo t{n} >> {ledger}; sleep 0.3'\n"
        + (f"    depends_on: [t{n - 1}]\n" if n else "")
        for n in range(8)
    )
    (tmp_path / "plan.yaml").write_text(f"name: read-once\ntasks:\n{tasks}")
    proc = subprocess.Popen(
        [*MAOS, "run", "plan.yaml", "--agents", "1", "--lease-s", "2"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not ledger.exists() or len(ledger.read_text().split()) < 4:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)

    store = await open_store(f"sqlite:///{tmp_path / '.maos/maos.db'}")
    blobs = open_blob_store(None, workdir=tmp_path)
    try:
        run_id = (await run_records(store))[0].run_id
        checkpointer = Checkpointer(run_id, blobs, load_or_create_key(tmp_path / ".maos"))
        with caplog.at_level(logging.INFO, logger="maos.orchestrator"):
            orchestrator = await Orchestrator.resume_from(store, run_id, checkpointer=checkpointer, lease_s=2)
            state = orchestrator.state
            before = {task_id for task_id, task in state.tasks.items() if task.state is TaskState.SUCCEEDED}
            assert before, "some tasks should have finished before the kill"
            assert not state.status.finished
            assert orchestrator.plan.name == "read-once"
            assert [agent.id for agent in orchestrator.agents] == list(state.agents)
            result = await asyncio.wait_for(orchestrator.resume(), 120)
        assert result.status is RunStatus.SUCCEEDED, result.summary
        restored = [record for record in caplog.records if "restoring from checkpoint" in record.getMessage()]
        assert len(restored) == 1, "the run was read twice"
        events = [event async for _, event in EventLog(store, run_id).iterate()]
        succeeded = [event.task_id for event in events if isinstance(event, TaskSucceeded)]
        assert sorted(succeeded) == [f"t{n}" for n in range(8)]  # each exactly once
        ran = ledger.read_text().split()
        assert all(ran.count(task_id) == 1 for task_id in before), ran
    finally:
        await blobs.close()
        await store.close()
