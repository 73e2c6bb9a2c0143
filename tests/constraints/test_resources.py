"""Resource dependencies: tasks sharing ``resources: {db: 1}`` never overlap; a killed holder
releases; the scheduler never over-commits and prefers the critical path; a need no capacity
meets is refused before the run (exit 2 naming task and resource)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from maos import scheduler
from maos.dispatch import attempt_stops
from maos.events import ResourceWait, RunStarted, TaskAssigned, TaskReady, apply
from maos.metrics import MetricsObserver
from maos.model import AgentSpec, Plan, ResourceLimit, RunConfig, RunState, RunStatus, TaskSpec, TaskState
from maos.orchestrator import Orchestrator
from maos.semaphore import SHARED_KEY
from maos.store import keys
from maos.store.base import Store

from .helpers import events, holds, overlapping

AGENTS = tuple(AgentSpec(id=f"agent-{n}") for n in range(1, 5))


def _state(plan: Plan, ready: list[str], running: list[str] = ()) -> RunState:  # type: ignore[assignment]
    state = RunState()
    apply(state, RunStarted(run_id="r", plan=plan, config=RunConfig(workdir="/tmp"), agents=AGENTS), "1")
    for n, task_id in enumerate([*running, *ready]):
        apply(state, TaskReady(task_id=task_id, ts=100.0 + n))
    for n, task_id in enumerate(running):
        apply(state, TaskAssigned(task_id=task_id, agent_id=f"agent-{n + 1}", attempt=1))
    return state


def _decide(state: RunState, plan: Plan) -> list[str]:
    index = scheduler.PlanIndex.build(plan)
    busy = {run.agent_id for run in state.tasks.values() if run.agent_id}
    free = [agent for agent in AGENTS if agent.id not in busy]
    return [a.task_id for a in scheduler.decide(state, index, free, scheduler.History(), limit=len(free))]


def test_decide_never_over_commits_a_resource() -> None:
    plan = Plan(
        name="p",
        resources={"db": 2},
        tasks=tuple(TaskSpec(id=name, command="true", resources={"db": 1}) for name in "abcd"),
    )
    assert _decide(_state(plan, ["a", "b", "c", "d"]), plan) == ["a", "b"]
    assert _decide(_state(plan, ["b", "c", "d"], running=["a"]), plan) == ["b"]
    assert _decide(_state(plan, ["c", "d"], running=["a", "b"]), plan) == []


def test_decide_prefers_the_critical_path_and_lets_nobody_overtake() -> None:
    plan = Plan(
        name="p",
        resources={"db": 2, "gpu": 1},
        tasks=(
            TaskSpec(id="short", command="true", resources={"db": 1}),
            TaskSpec(id="long", command="true", resources={"db": 1}),
            TaskSpec(id="next", command="true", depends_on=("long",)),
            TaskSpec(id="last", command="true", depends_on=("next",)),
            TaskSpec(id="free", command="true"),
        ),
    )
    # One db unit free: the task heading the longer chain gets it, though listed second.
    assert _decide(
        _state(plan, ["short", "long"], running=[]),
        plan.model_copy(update={"resources": {"db": ResourceLimit(capacity=1)}}),
    ) == ["long"]
    # big needs both units; one is held: small (after big in the order) may not take the other.
    plan = Plan(
        name="p",
        resources={"db": 2},
        tasks=(
            TaskSpec(id="holder", command="true", resources={"db": 1}),
            TaskSpec(id="big", command="true", resources={"db": 2}, priority=1),
            TaskSpec(id="small", command="true", resources={"db": 1}),
            TaskSpec(id="other", command="true"),
        ),
    )
    assert _decide(_state(plan, ["big", "small", "other"], running=["holder"]), plan) == ["other"]


def maos(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maos", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"},
    )


def test_a_need_above_the_capacity_is_refused_before_the_run(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: p\nresources: {db: 1}\ntasks:\n"
        "  - {id: migrate, command: 'true', resources: {db: 2}}\n"
        "  - {id: other, command: 'true', resources: {gpu: 1}}\n"
    )
    result = maos("plan", "validate", plan, cwd=tmp_path)
    assert result.returncode == 2, result
    assert (
        "task 'migrate' (tasks[0]): field 'resources': needs 2 unit(s) of resource 'db', whose capacity is 1"
        in result.stderr
    )
    assert "task 'other' (tasks[1]): field 'resources': resource 'gpu' is not declared" in result.stderr
    assert "Traceback" not in result.stderr

    bare = tmp_path / "bare.yaml"
    bare.write_text("name: p\ntasks:\n  - {id: migrate, command: 'true', resources: {db: 2}}\n")
    result = maos("run", bare, "--resource", "db=1", cwd=tmp_path)
    assert result.returncode == 2, result
    assert "task 'migrate': field 'resources': needs 2 unit(s) of 'db' but its capacity is 1" in result.stderr
    result = maos("run", bare, "--resource", "db=many", cwd=tmp_path)
    assert result.returncode == 2
    assert "--resource 'db=many': N must be a whole number" in result.stderr
    result = maos("run", bare, cwd=tmp_path)
    assert result.returncode == 2
    assert "task 'migrate': field 'resources': resource 'db' is not declared" in result.stderr
    assert not (tmp_path / ".maos" / "maos.db").exists() or "Traceback" not in result.stderr


async def test_tasks_sharing_a_resource_never_overlap(sqlite_store: Store, tmp_path: Path) -> None:
    db_tasks = tuple(TaskSpec(id=f"db{n}", command="sleep 0.3", resources={"db": 1}) for n in range(4))
    plan = Plan(
        name="contended",
        resources={"db": 1},
        tasks=(*db_tasks, TaskSpec(id="free", command="sleep 0.3")),
    )
    orchestrator = Orchestrator(sqlite_store, plan, RunConfig(agents=5, workdir=str(tmp_path)))
    observer = MetricsObserver()
    orchestrator.hooks.append(observer.observe)
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    log = await events(sqlite_store, orchestrator.run_id)
    held = [h for h in holds(log) if h.task_id.startswith("db")]
    assert len(held) == 4
    assert overlapping(held) == []
    # the task without resources did not wait for them: it ran beside the first db task
    free = next(h for h in holds(log) if h.task_id == "free")
    assert overlapping([free, min(held, key=lambda h: h.start)])
    waits = [e for e in log if isinstance(e, ResourceWait)]
    assert {e.task_id for e in waits} == {"db1", "db2", "db3"}
    assert all(e.resources == {"db": 1} and len(e.held_by) == 1 for e in waits)
    # maos_resource_waits: three starts waited for db, each for about the tasks before it
    metrics = observer.render().decode()
    assert 'maos_resource_waits_total{resource="db"} 3.0' in metrics
    assert 'maos_resource_wait_seconds_count{resource="db"} 3.0' in metrics
    total = next(
        line
        for line in metrics.splitlines()
        if line.startswith('maos_resource_wait_seconds_sum{resource="db"}')
    )
    assert float(total.split()[-1]) >= 0.3 * (1 + 2 + 3) * 0.9


async def test_a_killed_holder_releases_its_resource(sqlite_store: Store, tmp_path: Path) -> None:
    # The holder's agent kills itself with SIGKILL on its first attempt: its units come back
    # with the failure, the waiter gets them, and the holder's retry waits for the waiter.
    holder = "if [ ! -f killed ]; then touch killed; sleep 0.2; kill -9 $$; fi; sleep 0.2"
    plan = Plan(
        name="killed",
        resources={"db": 1},
        tasks=(
            TaskSpec(id="holder", command=holder, resources={"db": 1}),
            TaskSpec(id="waiter", command="sleep 0.2", resources={"db": 1}),
        ),
    )
    config = RunConfig(agents=2, workdir=str(tmp_path), retry_base_s=1.0)  # the retry waits >= 0.5 s
    orchestrator = Orchestrator(sqlite_store, plan, config)
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert state.tasks["holder"].attempts == 2
    held = holds(await events(sqlite_store, orchestrator.run_id))
    assert [(h.task_id, h.attempt) for h in sorted(held, key=lambda h: h.start)] == [
        ("holder", 1),
        ("waiter", 1),
        ("holder", 2),
    ]
    assert overlapping(held) == []
    assert state.tasks["waiter"].state is TaskState.SUCCEEDED


@pytest.mark.parametrize("count", [1, 2])
def test_cli_resource_option_parses(count: int) -> None:
    from maos.resources import parse_limit

    assert parse_limit(f"db={count}") == ("db", ResourceLimit(capacity=count))
    assert parse_limit(f"gpu={count}:shared") == ("gpu", ResourceLimit(capacity=count, shared=True))
    with pytest.raises(ValueError, match="expected NAME=N"):
        parse_limit("db")


def test_an_agent_cannot_add_a_task_whose_need_no_capacity_meets() -> None:
    from collections import deque

    from maos.dynamic import decide_addition
    from maos.events import TaskAddRequested

    plan = Plan(name="p", resources={"db": 1}, tasks=(TaskSpec(id="a", command="true"),))
    state = _state(plan, ["a"])
    for spec, reason in (
        (
            {"id": "x", "command": "true", "resources": {"db": 2}},
            "needs 2 unit(s) of 'db', whose capacity is 1",
        ),
        (
            {"id": "y", "command": "true", "resources": {"gpu": 1}},
            "resource 'gpu' is not one of the run's (db)",
        ),
    ):
        request = TaskAddRequested(request_id="r", agent_id="agent-1", by_task="a", spec=spec)
        assert decide_addition(state, request, recent_adds=deque(), now=0.0) == f"field 'resources': {reason}"


def _holding(**fields: object) -> bytes:
    entry = {"run_id": "other", "task_id": "t", "attempt": 1, "units": {"db": 1}, "lease": "x", "epoch": 1}
    return json.dumps({"holders": {"other/t": {**entry, **fields}}}).encode()


HOSTILE_RECORDS = [
    b"[" * 100_000,  # json.loads: RecursionError
    b"\xff\xfe",
    b"1e400",
    _holding(lease="\udcff"),  # a string the store cannot take as a key
    _holding(lease="x" * 100_000),
    _holding(units={"db": -1000}),  # would make room that is not there
]


@pytest.mark.parametrize("record", HOSTILE_RECORDS, ids=range(len(HOSTILE_RECORDS)))
async def test_a_hostile_shared_resources_record_never_stops_a_run(
    sqlite_store: Store, tmp_path: Path, record: bytes
) -> None:
    # The cross-run semaphore is store contents: unreadable, it is started again.
    await sqlite_store.set(SHARED_KEY, record)
    plan = Plan(
        name="shared",
        resources={"db": ResourceLimit(capacity=1, shared=True)},
        tasks=tuple(TaskSpec(id=f"db{n}", command="sleep 0.1", resources={"db": 1}) for n in range(2)),
    )
    orchestrator = Orchestrator(sqlite_store, plan, RunConfig(agents=2, workdir=str(tmp_path)))
    state = await asyncio.wait_for(orchestrator.run(), 20)
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert overlapping(holds(await events(sqlite_store, orchestrator.run_id))) == []


@pytest.mark.parametrize("record", [*HOSTILE_RECORDS, b"[]", b'{"t:1": {"x": [1]}}'])
async def test_a_hostile_stop_list_reads_as_stops_or_none(sqlite_store: Store, record: bytes) -> None:
    # A worker reads the run's stop list (keys.run_stops) every third of its lease.
    await sqlite_store.set(keys.run_stops("r"), record)
    stops = attempt_stops(await sqlite_store.get(keys.run_stops("r")))
    assert all(isinstance(key, str) and isinstance(reason, str) for key, reason in stops.items())
