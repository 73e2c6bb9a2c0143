"""Timing dependencies: ``not_before``, ``after: [{task, delay_s}]``, ``deadline_s`` with
``on_deadline``. The pure decisions are checked with an injected ``now``; real runs are
checked by the order and timestamps of their events, never by sleeping to prove an absence."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from maos import timing
from maos.events import (
    RunStarted,
    TaskAddRefused,
    TaskAssigned,
    TaskDeadlinePassed,
    TaskReady,
    TaskSkipped,
    TaskStarted,
    TaskSucceeded,
    apply,
)
from maos.model import AgentSpec, Plan, RunConfig, RunState, RunStatus, TaskSpec, TaskState
from maos.orchestrator import Orchestrator
from maos.permissions import Grants
from maos.plan.loader import plan_from_data
from maos.store.base import Store

from .helpers import events


def _started(plan: Plan, at: float = 1000.0) -> RunState:
    state = RunState()
    agents = (AgentSpec(id="agent-1"),)
    apply(state, RunStarted(run_id="r", plan=plan, config=RunConfig(workdir="/tmp"), agents=agents, ts=at))
    return state


def _succeed(state: RunState, task_id: str, at: float) -> None:
    apply(state, TaskReady(task_id=task_id, ts=at - 3))
    apply(state, TaskAssigned(task_id=task_id, agent_id="agent-1", attempt=1, ts=at - 2))
    apply(state, TaskStarted(task_id=task_id, agent_id="agent-1", attempt=1, pid=1, ts=at - 1))
    apply(state, TaskSucceeded(task_id=task_id, agent_id="agent-1", attempt=1, duration_s=1, ts=at))


def test_after_and_not_before_become_dependencies_and_earliest_starts() -> None:
    plan = plan_from_data(
        {
            "name": "t",
            "tasks": [
                {"id": "a", "command": "true"},
                {"id": "b", "command": "true"},
                {
                    "id": "c",
                    "command": "true",
                    "after": [{"task": "a", "delay_s": 5}, {"task": "b", "delay_s": 1}],
                },
                {"id": "d", "command": "true", "not_before": {"delay_s": 30}},
                {
                    "id": "e",
                    "command": "true",
                    "depends_on": ["a"],
                    "not_before": {"delay_s": 2, "task": "b"},
                },
                {"id": "f", "command": "true", "not_before": "2026-01-01T00:00:10Z"},
            ],
        },
        "t.yaml",
    )
    specs = plan.by_id()
    assert specs["c"].depends_on == ("a", "b")
    assert specs["e"].depends_on == ("a", "b")
    state = _started(plan, at=1000.0)
    assert timing.earliest_start(specs["d"], state) == 1030.0  # no dependency: after the run started
    assert timing.earliest_start(specs["f"], state) == datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC).timestamp()
    _succeed(state, "a", 1010.0)
    _succeed(state, "b", 1012.0)
    assert timing.earliest_start(specs["c"], state) == 1015.0  # max(a + 5, b + 1)
    assert timing.earliest_start(specs["e"], state) == 1014.0
    # injected clock: held back before, due at the time
    ready, later = timing.due(state, specs, ["c", "e", "d"], now=1014.5)
    assert ready == ["e"]
    assert later == {"c": 1015.0, "d": 1030.0}
    assert timing.next_wakeup(state, specs, later, []) == 1015.0
    assert timing.due(state, specs, ["c", "d"], now=1030.0) == (["c", "d"], {})


def test_deadlines_by_an_injected_clock() -> None:
    plan = Plan(
        name="t",
        tasks=(
            TaskSpec(id="quick", command="true", deadline_s=10),
            TaskSpec(id="slow", command="true", deadline_s=20, on_deadline="skip"),
            TaskSpec(id="after-slow", command="true", depends_on=("slow",)),
            TaskSpec(id="none", command="true"),
        ),
    )
    specs = plan.by_id()
    state = _started(plan, at=1000.0)
    timed = ["quick", "slow"]
    assert timing.expired(state, specs, timed, now=1009.9) == []
    assert timing.next_wakeup(state, specs, {}, timed) == 1010.0
    assert timing.expired(state, specs, timed, now=1010.0) == ["quick"]
    _succeed(state, "quick", 1005.0)
    assert timing.expired(state, specs, timed, now=1030.0) == ["slow"]
    apply(state, TaskDeadlinePassed(task_id="slow", deadline_at=1020.0, action="skip"))
    assert state.applied
    assert state.tasks["slow"].state is TaskState.SKIPPED
    apply(state, TaskSkipped(task_id="after-slow", because="dependency 'slow' skipped"))
    assert timing.excused(state, [t.id for t in plan.tasks], {t.id: t.depends_on for t in plan.tasks}) == {
        "slow",
        "after-slow",
    }
    # a deadline for a task that has ended is rejected, never raised
    apply(state, TaskDeadlinePassed(task_id="quick", deadline_at=1010.0, action="fail"))
    assert not state.applied
    assert state.rejections[-1].type == "task_deadline_passed"
    assert state.tasks["quick"].state is TaskState.SUCCEEDED


def test_bad_timing_fields_are_named() -> None:
    from maos.errors import PlanError

    with pytest.raises(PlanError) as caught:
        plan_from_data(
            {
                "name": "t",
                "tasks": [{"id": "a", "command": "true", "deadline_s": -1, "after": [{"delay_s": 1}]}],
            },
            "t.yaml",
        )
    text = "\n".join(caught.value.problems)
    assert "deadline_s" in text
    assert "after" in text


def test_a_start_time_years_ahead_is_refused() -> None:
    """``not_before: 9999-12-31`` was taken and the run never ended, its task shown pending
    with no reason. A start time may be as far ahead as a start delay may be long."""
    from maos.errors import PlanError
    from maos.model import MAX_START_DELAY_S

    soon = datetime.now(UTC) + timedelta(seconds=MAX_START_DELAY_S - 3600)
    for far in ("9999-12-31T23:59:59-14:00", 253402300799, (soon + timedelta(days=2)).isoformat()):
        with pytest.raises(PlanError, match=r"not_before.*more than 30 days from now"):
            plan_from_data({"name": "t", "tasks": [{"id": "a", "command": "true", "not_before": far}]}, "t")
    plan_from_data(
        {"name": "t", "tasks": [{"id": "a", "command": "true", "not_before": soon.isoformat()}]}, "t"
    )


async def test_after_delay_and_not_before_order_the_events(sqlite_store: Store, tmp_path: Path) -> None:
    soon = datetime.now(UTC).timestamp() + 0.6
    plan = Plan(
        name="timed",
        tasks=(
            TaskSpec(id="a", command="true"),
            TaskSpec(id="b", command="true", after=({"task": "a", "delay_s": 0.5},)),  # type: ignore[arg-type]
            TaskSpec(id="c", command="true", not_before=soon),  # type: ignore[arg-type]
            TaskSpec(id="d", command="true"),
        ),
    )
    orchestrator = Orchestrator(sqlite_store, plan, RunConfig(agents=4, workdir=str(tmp_path)))
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    log = await events(sqlite_store, orchestrator.run_id)
    ready = {e.task_id: e.ts for e in log if isinstance(e, TaskReady)}
    done = {e.task_id: e.ts for e in log if isinstance(e, TaskSucceeded)}
    assert ready["b"] >= done["a"] + 0.5
    assert ready["c"] >= soon
    assert ready["d"] < soon  # the others did not wait


@pytest.mark.parametrize("on_deadline", ["fail", "skip"])
async def test_a_deadline_stops_fails_or_skips(sqlite_store: Store, tmp_path: Path, on_deadline: str) -> None:
    plan = Plan(
        name="deadline",
        tasks=(
            TaskSpec(id="slow", command="sleep 60", deadline_s=0.5, on_deadline=on_deadline),  # type: ignore[arg-type]
            TaskSpec(id="then", command="true", depends_on=("slow",)),
            TaskSpec(id="other", command="true"),
        ),
    )
    orchestrator = Orchestrator(sqlite_store, plan, RunConfig(agents=3, workdir=str(tmp_path), grace_s=1.0))
    state = await orchestrator.run()
    log = await events(sqlite_store, orchestrator.run_id)
    passed = [e for e in log if isinstance(e, TaskDeadlinePassed)]
    assert [(e.task_id, e.action) for e in passed] == [("slow", on_deadline)]
    started = next(e.ts for e in log if isinstance(e, RunStarted))
    assert passed[0].ts >= started + 0.5
    assert passed[0].ts < started + 10  # stopped at its deadline, not after its 60 s sleep
    assert state.tasks["other"].state is TaskState.SUCCEEDED
    assert state.tasks["then"].state is TaskState.SKIPPED
    if on_deadline == "fail":
        assert state.tasks["slow"].state is TaskState.FAILED
        assert state.status is RunStatus.FAILED
    else:
        assert state.tasks["slow"].state is TaskState.SKIPPED
        assert state.status is RunStatus.SUCCEEDED, state.summary
        # the summary says why each was skipped: not "a dependency failed" for the task itself
        assert "skipped because a dependency failed: then" in state.summary
        assert "task 'slow' skipped: deadline passed" in state.summary


@pytest.mark.parametrize(
    "extra",
    [
        {"after": 5},
        {"after": "a"},
        {"after": [{"task": "a"}], "depends_on": [{}]},
        {"not_before": {"task": ["a"]}},
        {"deadline_s": 1e308, "not_before": "not a time"},
    ],
)
async def test_a_malformed_timing_field_in_add_task_is_refused_and_the_run_goes_on(
    sqlite_store: Store, tmp_path: Path, extra: dict[str, object]
) -> None:
    spec = json.dumps({"id": "new", "command": "true", **extra})
    script = (
        f"maos task add '{spec}' --wait-s 20 2> answer.txt; "
        "test $? -eq 1 && grep -q 'invalid task' answer.txt"
    )
    grants = Grants(add_task_runtimes=("command",))
    plan = Plan(name="add", tasks=(TaskSpec(id="a", command=script, grants=grants),))
    orchestrator = Orchestrator(sqlite_store, plan, RunConfig(agents=1, workdir=str(tmp_path)))
    state = await asyncio.wait_for(orchestrator.run(), 30)
    assert state.status is RunStatus.SUCCEEDED, state.summary
    refused = [e for e in await events(sqlite_store, orchestrator.run_id) if isinstance(e, TaskAddRefused)]
    assert len(refused) == 1
    assert "new" not in state.tasks


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (253402300799, datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),  # Unix seconds, never ms
        (1e11, datetime(5138, 11, 16, 9, 46, 40, tzinfo=UTC)),
        (
            "9999-12-31T23:59:59-14:00",
            datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))),
        ),
        ("0001-01-01T00:00:00", datetime(1, 1, 1, tzinfo=UTC)),  # no zone: UTC
    ],
)
def test_not_before_far_away_or_without_a_zone_is_read_as_written(given: object, expected: datetime) -> None:
    plan = Plan.model_validate({"name": "t", "tasks": [{"id": "a", "command": "true", "not_before": given}]})
    state = _started(plan)
    assert timing.earliest_start(plan.tasks[0], state) == expected.timestamp()
    ready, later = timing.due(state, plan.by_id(), ["a"], now=2e9)
    assert (ready, later) == (([], {"a": expected.timestamp()}) if expected.year > 2100 else (["a"], {}))
