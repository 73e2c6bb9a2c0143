"""Deadlocks: a wait-for graph from the run's events; a cycle (agents waiting on tasks that
need what they hold) is found at once and resolved by priority, or fails the run with
``--on-deadlock fail``; the log names the cycle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maos import deadlock, scheduler
from maos.events import apply
from maos.model import (
    AgentSpec,
    DeadlockFound,
    Plan,
    RunConfig,
    RunStarted,
    RunState,
    RunStatus,
    TaskAdded,
    TaskAssigned,
    TaskReady,
    TaskSpec,
    TaskStarted,
    TaskState,
    TaskWaiting,
)
from maos.orchestrator import Orchestrator
from maos.permissions import Grants
from maos.store.base import Store

from .helpers import events, holds, overlapping

AGENTS = tuple(AgentSpec(id=f"agent-{n}") for n in range(1, 5))


def _run(state: RunState, task_id: str, agent: str) -> None:
    apply(state, TaskReady(task_id=task_id))
    apply(state, TaskAssigned(task_id=task_id, agent_id=agent, attempt=1))
    apply(state, TaskStarted(task_id=task_id, agent_id=agent, attempt=1, pid=1))


def _cycle_state() -> tuple[RunState, scheduler.PlanIndex]:
    """a holds db and waits for x; x needs gpu, held by b; b waits for y; y needs db."""
    plan = Plan(
        name="p",
        resources={"db": 1, "gpu": 1},
        tasks=(
            TaskSpec(id="a", command="true", resources={"db": 1}, priority=1),
            TaskSpec(id="b", command="true", resources={"gpu": 1}, priority=2),
        ),
    )
    state = RunState()
    apply(state, RunStarted(run_id="r", plan=plan, config=RunConfig(workdir="/tmp"), agents=AGENTS))
    _run(state, "a", "agent-1")
    _run(state, "b", "agent-2")
    for new, needs in (("y", "db"), ("x", "gpu")):
        apply(
            state,
            TaskAdded(
                request_id=new, task=TaskSpec(id=new, command="true", resources={needs: 1}, priority=5)
            ),
        )
        apply(state, TaskReady(task_id=new))
    assert state.plan is not None
    return state, scheduler.PlanIndex.build(state.plan)


def test_no_waits_no_deadlock_and_a_resource_cycle_is_found() -> None:
    state, index = _cycle_state()
    assert deadlock.find(state, index, free_resources={"db": 0, "gpu": 0}, free_agents=2) is None
    apply(state, TaskWaiting(agent_id="agent-1", task="a", on="x"))
    assert deadlock.find(state, index, free_resources={"db": 0, "gpu": 0}, free_agents=2) is None
    apply(state, TaskWaiting(agent_id="agent-2", task="b", on="y"))
    found = deadlock.find(state, index, free_resources={"db": 0, "gpu": 0}, free_agents=2)
    assert found is not None
    assert found.cycle == ("a", "x", "b", "y")
    assert found.edges == ("a waits for x", "x needs gpu held by b", "b waits for y", "y needs db held by a")
    assert found.describe().startswith("a -> x -> b -> y -> a (")
    # the lowest priority on the cycle is a (1); it runs, so it is requeued
    resolution = deadlock.resolve(found, state, index, on_deadlock="resolve", requeues={})
    assert resolution == deadlock.Resolution("a", "requeue_task")
    assert (
        deadlock.resolve(found, state, index, on_deadlock="resolve", requeues={"a": 3}).action == "fail_task"
    )
    assert deadlock.resolve(found, state, index, on_deadlock="fail", requeues={}).action == "fail_run"
    # the requeue ends a's attempt: its wait no longer counts, the cycle is gone
    apply(state, DeadlockFound(cycle=found.cycle, victim="a", action="requeue_task"))
    assert state.applied
    assert state.tasks["a"].state is TaskState.READY
    assert deadlock.live_waits(state) == {"b": ["y"]}
    assert deadlock.find(state, index, free_resources={"db": 1, "gpu": 0}, free_agents=2) is None


def test_waiting_agents_holding_every_agent_deadlock_without_resources() -> None:
    state, index = _cycle_state()
    apply(state, TaskWaiting(agent_id="agent-1", task="a", on="x"))
    apply(state, TaskWaiting(agent_id="agent-2", task="b", on="y"))
    found = deadlock.find(state, index, free_resources={"db": 1, "gpu": 1}, free_agents=0)
    assert found is not None
    assert found.cycle[:2] == ("a", "x")
    assert "x needs an agent; a holds one" in found.edges


def test_a_need_no_capacity_meets_is_a_deadlock_of_one() -> None:
    state, index = _cycle_state()
    plan = index.plan.model_copy(
        update={"tasks": (*index.plan.tasks, TaskSpec(id="huge", command="true", resources={"db": 2}))}
    )
    state.plan = plan
    state.tasks["huge"] = state.tasks["a"].model_copy(update={"state": TaskState.READY, "attempts": 0})
    found = deadlock.find(state, scheduler.PlanIndex.build(plan), free_resources={}, free_agents=1)
    assert found == deadlock.Deadlock(("huge",), ("huge needs db:2 but the capacity of db is 1",))


def test_events_of_waits_and_deadlocks_never_raise() -> None:
    state, _ = _cycle_state()
    for event in (
        TaskWaiting(agent_id="agent-1", task="nope", on="x"),
        TaskWaiting(agent_id="agent-1", task="a", on="nope"),
        DeadlockFound(cycle=("a",), victim="nope", action="fail_task"),
        DeadlockFound(cycle=("x",), victim="x", action="requeue_task"),  # x is not running
    ):
        apply(state, event)
        assert not state.applied
    assert state.rejected == 4


SHELL = Grants(add_task_runtimes=("claude-code", "command"))


def _agent(adds: str, needs: str, waits_for: str) -> str:
    spec = json.dumps({"id": adds, "command": f"echo {adds}", "resources": {needs: 1}, "priority": 5})
    return (
        f"maos task add '{spec}' && touch {adds}.added; "
        f"while [ ! -f {waits_for}.added ]; do sleep 0.05; done; "
        f"maos task wait {waits_for} --timeout 60"
    )


@pytest.mark.parametrize("on_deadlock", ["resolve", "fail"])
async def test_a_dynamic_deadlock_is_found_and_resolved_by_priority(
    sqlite_store: Store, tmp_path: Path, on_deadlock: str
) -> None:
    # Agent a (db) adds y, which needs db, and waits for x; agent b (gpu) adds x, which needs
    # gpu, and waits for y: a -> x -> b -> y -> a.
    plan = Plan(
        name="deadlock",
        resources={"db": 1, "gpu": 1},
        tasks=(
            TaskSpec(id="a", command=_agent("y", "db", "x"), resources={"db": 1}, priority=1, grants=SHELL),
            TaskSpec(id="b", command=_agent("x", "gpu", "y"), resources={"gpu": 1}, priority=2, grants=SHELL),
        ),
    )
    config = RunConfig(agents=4, workdir=str(tmp_path), grace_s=1.0, on_deadlock=on_deadlock)  # type: ignore[arg-type]
    orchestrator = Orchestrator(sqlite_store, plan, config)
    state = await orchestrator.run()
    log = await events(sqlite_store, orchestrator.run_id)
    found = [e for e in log if isinstance(e, DeadlockFound)]
    assert len(found) == 1, found
    assert found[0].cycle == ("a", "x", "b", "y")
    assert "a -> x -> b -> y -> a" in found[0].detail
    closed = max(e.ts for e in log if isinstance(e, TaskWaiting) and e.waiting)
    assert found[0].ts - closed < 1.0  # found at once: on the orchestrator's next turn
    if on_deadlock == "fail":
        assert found[0].action == "fail_run"
        assert state.status is RunStatus.FAILED
        assert state.summary.startswith("deadlock: a -> x -> b -> y -> a")
        return
    assert (found[0].victim, found[0].action) == ("a", "requeue_task")
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert state.tasks["a"].attempts == 2  # requeued, then ran to its end
    assert state.tasks["a"].failures == 0
    held = holds(log)
    for resource, users in (("db", {"a", "y"}), ("gpu", {"b", "x"})):
        assert overlapping([h for h in held if h.task_id in users]) == [], resource
