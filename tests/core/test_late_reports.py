"""A late report cannot poison a run's log (issue 14, item 0).

A worker cut off from the store, whose task was declared lost and made READY again, delivers
its buffered ``task_succeeded`` when the link heals. The reducer used to raise
``IllegalTransition: ready -> succeeded``; the orchestrator died and ``maos status`` and
``maos resume`` failed on that log forever. Now such a report is recorded as stale and counts
for nothing, and no entry of a log (garbage included) can make a reader fail.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from maos.eventlog import EventLog
from maos.events import RunStarted, TaskAssigned, TaskReady, TaskRequeued, TaskStarted, TaskSucceeded
from maos.model import AgentSpec, Plan, RunConfig, RunRecord, RunStatus, TaskSpec
from maos.store import keys, open_store

MAOS = [sys.executable, "-m", "maos"]
RUN_ID = "20261201-000000-late"


def _plan(tmp_path: Path) -> Plan:
    ledger = tmp_path / "ledger"
    return Plan(
        name="late",
        tasks=(
            TaskSpec(id="t1", command=f"echo t1 >> {ledger}"),
            TaskSpec(id="t2", command=f"echo t2 >> {ledger}", depends_on=("t1",)),
        ),
    )


async def _write_poisoned_log(tmp_path: Path) -> None:
    """The log a partitioned worker leaves: attempt 1 of t1 declared lost and requeued, then
    its success arrives, plus a duplicate start and an entry that is not an event at all."""
    store = await open_store(f"sqlite:///{tmp_path / '.maos' / 'maos.db'}")
    try:
        log = EventLog(store, RUN_ID)
        plan = _plan(tmp_path)
        config = RunConfig(agents=2, workdir=str(tmp_path))
        started = RunStarted(run_id=RUN_ID, plan=plan, config=config, agents=(AgentSpec(id="agent-1"),))
        await store.set(
            keys.run_record(RUN_ID),
            RunRecord(
                run_id=RUN_ID,
                name=plan.name,
                tasks=2,
                workdir=str(tmp_path),
                started_at=started.ts,
                status=RunStatus.RUNNING,
            )
            .model_dump_json()
            .encode(),
        )
        for event in (
            started,
            TaskReady(task_id="t1"),
            TaskAssigned(task_id="t1", agent_id="agent-1", attempt=1, score=1.0),
            TaskStarted(task_id="t1", agent_id="agent-1", attempt=1, pid=999_999, worker="cut-off"),
            TaskRequeued(task_id="t1", attempt=1, reason="worker cut-off lost"),
            # the cut-off worker's buffered report lands now: the task is READY
            TaskSucceeded(task_id="t1", agent_id="agent-1", attempt=1, exit_code=0, duration_s=1.0),
            TaskStarted(task_id="t1", agent_id="agent-1", attempt=1, pid=999_999, worker="cut-off"),
            TaskReady(task_id="t1"),  # a second driver's duplicate decision
        ):
            await log.append(event)
        await store.append(keys.events(RUN_ID), b"\x00\xff not an event {")
        await store.append(keys.events(RUN_ID), b'{"type": "task_succeeded", "task_id": 7}')
    finally:
        await store.close()


def test_status_and_resume_work_on_a_log_with_late_reports_and_garbage(tmp_path: Path) -> None:
    (tmp_path / ".maos").mkdir()
    asyncio.run(_write_poisoned_log(tmp_path))

    status = subprocess.run(
        [*MAOS, "status", RUN_ID, "--json"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert status.returncode == 0, status.stderr
    assert "Traceback" not in status.stderr
    summary = json.loads(status.stdout)
    assert summary["tasks"]["t1"]["state"] == "ready"  # the late success counted for nothing
    assert summary["stale_reports"] == 2
    assert summary["rejected_events"] == 5
    reasons = [rejection["reason"] for rejection in summary["rejections"]]
    assert any("already ended (the task is ready)" in reason for reason in reasons), reasons
    assert any("unreadable entry" in reason for reason in reasons), reasons

    done = subprocess.run(
        [*MAOS, "resume", RUN_ID, "--json", "--lease-s", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert json.loads(done.stdout)["counts"] == {"succeeded": 2}
    assert (tmp_path / "ledger").read_text().split() == ["t1", "t2"]  # t1 ran once, as attempt 2

    after = subprocess.run(
        [*MAOS, "status", RUN_ID, "--json"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    final = json.loads(after.stdout)
    assert final["status"] == "succeeded"
    assert final["tasks"]["t1"]["attempts"] == 2
    runs = subprocess.run([*MAOS, "runs", "--json"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert json.loads(runs.stdout)[0]["status"] == "succeeded"
