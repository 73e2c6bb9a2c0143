"""Deadlocks: a wait-for graph from the run's events; a cycle (agents waiting on tasks that
need what they hold) is found at once and resolved by priority, or fails the run with
``--on-deadlock fail``; the log names the cycle."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maos import deadlock, scheduler
from maos.events import (
    DeadlockFound,
    RunStarted,
    TaskAdded,
    TaskAssigned,
    TaskReady,
    TaskStarted,
    TaskWaiting,
    apply,
)
from maos.model import AgentSpec, Plan, RunConfig, RunState, RunStatus, TaskSpec, TaskState
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
        f"maos task wait {waits_for} --timeout-s 60"
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


async def test_a_victim_not_started_yet_fails_and_the_run_ends(sqlite_store: Store, tmp_path: Path) -> None:
    # a holds db, adds x (needs db, lower priority) and waits for it: a -> x -> a. The victim
    # is x, which never started: it fails for good, a's wait ends, and the run ends too
    # (the orchestrator's view of x must leave READY with it).
    spec = json.dumps({"id": "x", "command": "echo x", "resources": {"db": 1}, "priority": 1})
    plan = Plan(
        name="victim",
        resources={"db": 1},
        tasks=(
            TaskSpec(
                id="a",
                command=f"maos task add '{spec}' && maos task wait x --timeout-s 60; true",
                resources={"db": 1},
                priority=5,
                grants=SHELL,
            ),
        ),
    )
    config = RunConfig(agents=2, workdir=str(tmp_path), grace_s=1.0)
    orchestrator = Orchestrator(sqlite_store, plan, config)
    state = await asyncio.wait_for(orchestrator.run(), 30)
    found = [e for e in await events(sqlite_store, orchestrator.run_id) if isinstance(e, DeadlockFound)]
    assert [(e.cycle, e.victim, e.action) for e in found] == [(("a", "x"), "x", "fail_task")]
    assert state.tasks["a"].state is TaskState.SUCCEEDED
    assert state.tasks["x"].state is TaskState.FAILED
    assert state.status is RunStatus.FAILED


async def test_a_wait_that_can_never_end_is_refused_at_the_door(sqlite_store: Store, tmp_path: Path) -> None:
    # Waiting for yourself, or for a task that depends on you, is a certain deadlock: the
    # door says so at once instead of the orchestrator stopping the waiter again and again.
    child = json.dumps({"id": "child", "command": "true", "depends_on": ["a"]})
    script = (
        "maos task wait a --timeout-s 30 2>self.err; echo $? > self.rc; "
        f"maos task add '{child}' && maos task wait child --timeout-s 30 2>child.err; echo $? > child.rc"
    )
    plan = Plan(name="refused", tasks=(TaskSpec(id="a", command=script, grants=SHELL),))
    config = RunConfig(agents=2, workdir=str(tmp_path), grace_s=1.0)
    orchestrator = Orchestrator(sqlite_store, plan, config)
    state = await asyncio.wait_for(orchestrator.run(), 30)
    assert state.status is RunStatus.SUCCEEDED, state.summary
    log = await events(sqlite_store, orchestrator.run_id)
    assert not [e for e in log if isinstance(e, DeadlockFound | TaskWaiting)]
    workdir = next(tmp_path.rglob("self.rc")).parent  # the agent's workspace
    for name, words in (("self", "is this task"), ("child", "depends on this task")):
        assert (workdir / f"{name}.rc").read_text().strip() not in ("", "0")
        assert words in (workdir / f"{name}.err").read_text()


def test_the_wait_for_graph_of_a_big_run_is_searched_quickly() -> None:
    # One wait in a run of 5,000 ready tasks short of db, held by 500 busy ones: every ready
    # task waits for every holder. The search runs on each orchestrator turn, so it must not
    # cost ready x busy (it took seconds, and blocked the orchestrator's loop, before).
    tasks, busy = 5000, 500
    plan = Plan(
        name="big",
        resources={"db": busy},
        tasks=tuple(TaskSpec(id=f"t{n}", command="true", resources={"db": 1}) for n in range(tasks)),
    )
    state = RunState()
    agents = tuple(AgentSpec(id=f"agent-{n}") for n in range(busy))
    apply(state, RunStarted(run_id="r", plan=plan, config=RunConfig(workdir="/tmp"), agents=agents))
    for n in range(tasks):
        apply(state, TaskReady(task_id=f"t{n}"))
    for n in range(busy):
        apply(state, TaskAssigned(task_id=f"t{n}", agent_id=f"agent-{n}", attempt=1))
    apply(state, TaskWaiting(agent_id="agent-7", task="t7", on=f"t{tasks - 1}"))
    index = scheduler.PlanIndex.build(plan)
    started = time.perf_counter()
    for free_agents in (1, 0):  # short of db; short of db and of agents
        found = deadlock.find(state, index, free_resources={"db": 0}, free_agents=free_agents)
        assert found == deadlock.Deadlock(
            ("t7", f"t{tasks - 1}"), (f"t7 waits for t{tasks - 1}", f"t{tasks - 1} needs db held by t7")
        )
    assert time.perf_counter() - started < 1.0
    state.waits.clear()
    apply(state, TaskWaiting(agent_id="agent-7", task="t7", on="t600"))
    found = deadlock.find(state, index, free_resources={"db": 1}, free_agents=0)  # short of agents only
    assert found == deadlock.Deadlock(
        ("t7", "t600"), ("t7 waits for t600", "t600 needs an agent; t7 holds one")
    )


def _reference_edges(
    state: RunState, index: scheduler.PlanIndex, free: dict[str, int], free_agents: int
) -> set:  # type: ignore[type-arg]
    """The wait-for graph task to task, every edge spelled out (what ``find`` must agree with)."""
    waits = deadlock.live_waits(state)
    busy = {t for t, run in state.tasks.items() if run.state in (TaskState.ASSIGNED, TaskState.RUNNING)}
    edges = set()
    for task_id, run in state.tasks.items():
        spec = index.specs[task_id]
        if task_id in waits:
            edges |= {(task_id, on) for on in waits[task_id]}
        elif run.state is TaskState.PENDING:
            edges |= {(task_id, dep) for dep in spec.depends_on if not state.tasks[dep].state.terminal}
        elif run.state is TaskState.READY:
            short = {name for name, units in spec.resources.items() if free.get(name, 0) < units}
            if short:
                edges |= {(task_id, h) for h in busy if short & index.specs[h].resources.keys()}
            elif free_agents <= 0:
                edges |= {(task_id, h) for h in busy}
    return edges


def _has_cycle(edges: set) -> bool:  # type: ignore[type-arg]
    nodes = {a for a, _ in edges}
    while True:  # peel off nodes without out-edges to nodes left
        sinks = {a for a in nodes if not any(b in nodes for x, b in edges if x == a)}
        if not sinks:
            return bool(nodes)
        nodes -= sinks


@settings(max_examples=200, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["pending", "ready", "running"]), min_size=2, max_size=6),
    needs=st.lists(st.sets(st.sampled_from(["db", "gpu"])), min_size=6, max_size=6),
    waits=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=6),
    free_db=st.integers(0, 1),
    free_agents=st.integers(0, 1),
)
def test_find_agrees_with_the_wait_for_graph_spelled_out(
    kinds: list[str], needs: list[set[str]], waits: list[tuple[int, int]], free_db: int, free_agents: int
) -> None:
    ids = [f"t{n}" for n in range(len(kinds))]
    tasks = tuple(
        TaskSpec(
            id=task_id,
            command="true",
            resources=dict.fromkeys(sorted(needs[n]), 1),
            depends_on=(ids[n - 1],) if kind == "pending" and n else (),
        )
        for n, (task_id, kind) in enumerate(zip(ids, kinds, strict=True))
    )
    plan = Plan(name="g", resources={"db": 2, "gpu": 2}, tasks=tasks)
    state = RunState()
    apply(state, RunStarted(run_id="r", plan=plan, config=RunConfig(workdir="/tmp"), agents=AGENTS))
    for task_id, kind in zip(ids, kinds, strict=True):
        if kind != "pending":
            apply(state, TaskReady(task_id=task_id))
        if kind == "running":
            apply(state, TaskAssigned(task_id=task_id, agent_id="agent-1", attempt=1))
    for waiter, on in waits:
        if waiter < len(ids) and on < len(ids):
            apply(state, TaskWaiting(agent_id="agent-1", task=ids[waiter], on=ids[on]))
    index = scheduler.PlanIndex.build(plan)
    free = {"db": free_db, "gpu": 0}
    found = deadlock.find(state, index, free_resources=free, free_agents=free_agents, needs={})
    edges = _reference_edges(state, index, free, free_agents)
    assert (found is not None) == _has_cycle(edges)
    if found is not None:
        cycle = found.cycle
        assert all((cycle[n], cycle[(n + 1) % len(cycle)]) in edges for n in range(len(cycle)))
        assert len(found.edges) == len(cycle)
