"""The summary of a cancelled run counts every task that did not finish, also those a
previous orchestrator of the run cancelled before it died."""

from __future__ import annotations

import asyncio
from pathlib import Path

from maos.eventlog import EventLog
from maos.events import RunCancelling, RunStarted, TaskCancelled, TaskReady
from maos.model import AgentSpec, Plan, RunConfig, RunStatus, TaskSpec, TaskState
from maos.orchestrator import Orchestrator
from maos.store.base import Store


async def test_a_cancel_finished_by_the_next_orchestrator_counts_what_was_cancelled(
    sqlite_store: Store, tmp_path: Path
) -> None:
    plan = Plan(name="c", tasks=(TaskSpec(id="a", command="sleep 30"), TaskSpec(id="b", command="sleep 30")))
    config = RunConfig(agents=2, workdir=str(tmp_path), grace_s=1)
    log = EventLog(sqlite_store, "r1")
    agents = (AgentSpec(id="x"), AgentSpec(id="y"))
    # The first orchestrator stopped both agents and died before it wrote run_finished.
    for event in (
        RunStarted(run_id="r1", plan=plan, config=config, agents=agents),
        TaskReady(task_id="a"),
        TaskReady(task_id="b"),
        RunCancelling(reason="cancel requested"),
        TaskCancelled(task_id="a", reason="run cancelled: its agent was stopped"),
        TaskCancelled(task_id="b", reason="run cancelled: its agent was stopped"),
    ):
        await log.append(event)
    state = await asyncio.wait_for(Orchestrator(sqlite_store, plan, config, run_id="r1").resume(), 30)
    assert state.status is RunStatus.CANCELLED  # not "failed" with an empty summary
    assert {task.state for task in state.tasks.values()} == {TaskState.CANCELLED}
    assert state.summary.startswith("cancelled: 2 task(s) did not finish")
    assert "2 cancelled by the run's previous orchestrator" in state.summary


async def test_a_cancel_counts_running_and_waiting_tasks(sqlite_store: Store, tmp_path: Path) -> None:
    plan = Plan(
        name="c",
        tasks=(
            TaskSpec(id="a", command="sleep 30"),
            TaskSpec(id="b", command="sleep 30"),
            TaskSpec(id="c", command="true", depends_on=("a",)),
        ),
    )
    orchestrator = Orchestrator(sqlite_store, plan, RunConfig(agents=2, workdir=str(tmp_path), grace_s=1))

    def cancel_once_both_run(_event_id: str, _event: object, state: object) -> None:
        tasks = orchestrator.state.tasks
        if all(tasks[t].state is TaskState.RUNNING for t in "ab"):
            orchestrator.request_cancel()

    orchestrator.hooks.append(cancel_once_both_run)  # type: ignore[arg-type]
    state = await asyncio.wait_for(orchestrator.run(), 30)
    assert state.status is RunStatus.CANCELLED
    assert state.summary.startswith(
        "cancelled: 3 task(s) did not finish (2 stopped while running, 1 not started)"
    )
