"""Unit tests of the pure scheduler: RunState objects built by hand, no processes, no store."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Iterable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from maos.errors import PlanError
from maos.model import AgentSpec, Plan, RunState, RunStatus, TaskRun, TaskSpec, TaskState
from maos.scheduler import (
    History,
    Outcomes,
    Placement,
    PlanIndex,
    ReadyQueue,
    Skip,
    Unrunnable,
    decide,
    fitness,
    fitness_parts,
    load_from_state,
    newly_ready,
    next_wakeup,
    retry_due,
    to_skip,
    unrunnable,
)

S = TaskState
EMPTY = History()

# --------------------------------------------------------------------------- helpers


def task(
    task_id: str,
    *deps: str,
    priority: int = 0,
    role: str = "general",
    kind: str = "",
    caps: Iterable[str] = (),
) -> TaskSpec:
    return TaskSpec(
        id=task_id, depends_on=deps, priority=priority, role=role, kind=kind, capabilities=tuple(caps)
    )


def agent(agent_id: str, role: str = "general", caps: Iterable[str] = ()) -> AgentSpec:
    return AgentSpec(id=agent_id, role=role, capabilities=tuple(caps))


def run_state(
    tasks: Iterable[TaskSpec],
    states: Mapping[str, TaskState | TaskRun] | None = None,
    *,
    status: RunStatus = RunStatus.RUNNING,
) -> tuple[RunState, PlanIndex]:
    """A RunState for ``tasks``; ``states`` gives a state (or a whole TaskRun) per task id."""
    plan = Plan(name="test", tasks=tuple(tasks))
    runs: dict[str, TaskRun] = {}
    for spec in plan.tasks:
        given_state = (states or {}).get(spec.id, S.PENDING)
        if isinstance(given_state, TaskRun):
            runs[spec.id] = given_state
        elif given_state is S.READY:
            runs[spec.id] = TaskRun(state=S.READY, ready_at=0.0)
        else:
            runs[spec.id] = TaskRun(state=given_state)
    return RunState(run_id="r1", plan=plan, tasks=runs, status=status), PlanIndex.build(plan)


def pairs(assignments: list[Placement]) -> list[tuple[str, str]]:
    return [(item.task_id, item.agent_id) for item in assignments]


# --------------------------------------------------------------------------- plan index


def test_plan_index_children_deps_and_order() -> None:
    _, index = run_state([task("a"), task("b", "a"), task("c", "a", "a"), task("d", "c", "b")])
    assert index.children["a"] == ("b", "c")
    assert index.deps["c"] == ("a",)  # duplicate dependency collapsed
    assert index.deps["d"] == ("b", "c")  # plan order
    assert index.order["d"] == 3


def test_plan_index_rejects_unknown_dependency() -> None:
    plan = Plan(name="p", tasks=(task("a", "ghost"),))
    with pytest.raises(PlanError, match="ghost"):
        PlanIndex.build(plan)


# --------------------------------------------------------------------------- ready queue


def test_roots_are_ready_at_start() -> None:
    state, index = run_state([task("a"), task("b", "a"), task("c")])
    assert newly_ready(state, index) == ["a", "c"]


def test_child_of_fast_branch_is_ready_while_slow_sibling_runs() -> None:
    tasks = [task("fast"), task("slow"), task("after_fast", "fast"), task("join", "fast", "slow")]
    state, index = run_state(tasks, {"fast": S.SUCCEEDED, "slow": S.RUNNING})
    assert newly_ready(state, index) == ["after_fast"]
    assert newly_ready(state, index, changed=["fast"]) == ["after_fast"]


def test_diamond() -> None:
    tasks = [task("a"), task("b", "a"), task("c", "a"), task("d", "b", "c")]
    state, index = run_state(tasks, {"a": S.SUCCEEDED})
    assert newly_ready(state, index, changed=["a"]) == ["b", "c"]

    state, index = run_state(tasks, {"a": S.SUCCEEDED, "b": S.SUCCEEDED, "c": S.RUNNING})
    assert newly_ready(state, index, changed=["b"]) == []

    state, index = run_state(tasks, {"a": S.SUCCEEDED, "b": S.SUCCEEDED, "c": S.SUCCEEDED})
    assert newly_ready(state, index, changed=["c"]) == ["d"]
    assert newly_ready(state, index) == ["d"]


def test_newly_ready_only_returns_pending_tasks() -> None:
    state, index = run_state([task("a"), task("b", "a"), task("c", "a")], {"a": S.SUCCEEDED, "b": S.READY})
    assert newly_ready(state, index) == ["c"]


def test_newly_ready_with_changed_agrees_with_full_scan() -> None:
    rng = random.Random(7)
    tasks = [task("t0")]
    for i in range(1, 300):
        deps = sorted({f"t{rng.randrange(i)}" for _ in range(rng.randrange(4))})
        tasks.append(task(f"t{i}", *deps))
    done = {f"t{i}": S.SUCCEEDED for i in range(300) if rng.random() < 0.6}
    state, index = run_state(tasks, done)
    # Listing every succeeded task as changed finds every ready task that has dependencies;
    # tasks without any are found by the full scan at the start of a run.
    full = newly_ready(state, index)
    assert any(not index.deps[t] for t in full)
    assert newly_ready(state, index, changed=list(done)) == [t for t in full if index.deps[t]]


# --------------------------------------------------------------------------- skip propagation


def test_skip_propagates_transitively_naming_the_dependency() -> None:
    tasks = [task("a"), task("b", "a"), task("c", "b"), task("d"), task("e", "d", "c")]
    state, index = run_state(tasks, {"a": S.FAILED, "d": S.RUNNING})
    expected = [
        Skip("b", "dependency 'a' failed"),
        Skip("c", "dependency 'b' skipped (root cause: 'a' failed)"),
        Skip("e", "dependency 'c' skipped (root cause: 'a' failed)"),
    ]
    assert to_skip(state, index) == expected
    assert to_skip(state, index, changed=["a"]) == expected
    assert to_skip(state, index, changed=["d"]) == []  # d did not fail


def test_skip_lists_each_task_after_its_dooming_dependency() -> None:
    # e depends on both a (failed) and c (doomed through a): it must come after whatever it names.
    tasks = [task("a"), task("b", "a"), task("c", "b"), task("e", "c", "a")]
    state, index = run_state(tasks, {"a": S.FAILED})
    skips = to_skip(state, index)
    position = {item.task_id: n for n, item in enumerate(skips)}
    assert set(position) == {"b", "c", "e"}
    for item in skips:
        named = item.because.split("'")[1]
        assert named == "a" or position[named] < position[item.task_id]


@pytest.mark.parametrize("dead", [S.FAILED, S.SKIPPED, S.CANCELLED])
def test_skip_for_each_doomed_state(dead: TaskState) -> None:
    state, index = run_state(
        [task("a"), task("b", "a"), task("c", "a"), task("d", "a")],
        {"a": dead, "c": S.READY, "d": TaskRun(state=S.RETRY_WAIT, retry_at=5.0)},
    )
    assert to_skip(state, index) == [
        Skip("b", f"dependency 'a' {dead.value}"),
        Skip("c", f"dependency 'a' {dead.value}"),
        Skip("d", f"dependency 'a' {dead.value}"),
    ]


def test_already_skipped_tasks_are_not_listed_again() -> None:
    state, index = run_state([task("a"), task("b", "a"), task("c", "b")], {"a": S.FAILED, "b": S.SKIPPED})
    assert to_skip(state, index) == [Skip("c", "dependency 'b' skipped")]


# --------------------------------------------------------------------------- retries


def test_retry_due_and_next_wakeup() -> None:
    state, index = run_state(
        [task("a"), task("b"), task("c"), task("d"), task("e")],
        {
            "a": TaskRun(state=S.RETRY_WAIT, retry_at=20.0),
            "b": TaskRun(state=S.RETRY_WAIT, retry_at=10.0),
            "c": TaskRun(state=S.RETRY_WAIT, retry_at=None),  # backoff not decided yet
            "d": TaskRun(state=S.RETRY_WAIT, retry_at=10.0),
            "e": TaskRun(state=S.READY, retry_at=1.0),
        },
    )
    assert retry_due(state, index, now=5.0) == []
    assert retry_due(state, index, now=10.0) == ["b", "d"]
    assert retry_due(state, index, now=25.0) == ["b", "d", "a"]
    assert next_wakeup(state) == 10.0
    empty, _ = run_state([task("a")])
    assert next_wakeup(empty) is None


# --------------------------------------------------------------------------- decide: order and limits


def test_priorities_then_ready_time_then_plan_order() -> None:
    tasks = [task("low"), task("late", priority=5), task("early", priority=5), task("first"), task("second")]
    state, index = run_state(
        tasks,
        {
            "low": TaskRun(state=S.READY, ready_at=0.0, attempts=0),
            "late": TaskRun(state=S.READY, ready_at=2.0),
            "early": TaskRun(state=S.READY, ready_at=1.0),
            "first": TaskRun(state=S.READY, ready_at=0.5),
            "second": TaskRun(state=S.READY, ready_at=0.5),
        },
    )
    agents = [agent(f"a{i}") for i in range(5)]
    order = [item.task_id for item in decide(state, index, agents, EMPTY, limit=5)]
    assert order == ["early", "late", "low", "first", "second"]


def test_concurrency_limit_is_respected() -> None:
    state, index = run_state([task(f"t{i}") for i in range(6)], {f"t{i}": S.READY for i in range(6)})
    agents = [agent(f"a{i}") for i in range(5)]
    assert len(decide(state, index, agents, EMPTY, limit=2)) == 2
    assert decide(state, index, agents, EMPTY, limit=0) == []
    assert len(decide(state, index, agents, EMPTY, limit=100)) == 5  # one task per free agent


def test_only_ready_tasks_and_attempt_numbers() -> None:
    state, index = run_state(
        [task("p"), task("r"), task("again")],
        {"r": S.READY, "again": TaskRun(state=S.READY, ready_at=0.0, attempts=2)},
    )
    result = decide(state, index, [agent("a"), agent("b"), agent("c")], EMPTY, limit=3)
    assert {(item.task_id, item.attempt) for item in result} == {("r", 1), ("again", 3)}


def test_draining_run_starts_nothing() -> None:
    state, index = run_state([task("a")], {"a": S.READY}, status=RunStatus.DRAINING)
    assert decide(state, index, [agent("x")], EMPTY, limit=1) == []


def test_agent_busy_in_state_is_never_chosen() -> None:
    state, index = run_state(
        [task("a"), task("b")],
        {"a": TaskRun(state=S.RUNNING, agent_id="x"), "b": S.READY},
    )
    assert pairs(decide(state, index, [agent("x"), agent("y")], EMPTY, limit=2)) == [("b", "y")]


# --------------------------------------------------------------------------- fitness


def test_fitness_parts_and_weights() -> None:
    spec = task("t", role="coder", kind="build", caps=["py", "git"])
    history = EMPTY.record("coder", "build", succeeded=True).record("coder", "build", succeeded=True)
    load = {"a": 1, "b": 4}
    parts = fitness_parts(spec, agent("a", role="coder", caps=["py"]), load, history)
    assert parts.capability == pytest.approx(0.5)  # half the capabilities, exact role
    assert parts.workload == pytest.approx(1 - 1 / 4)
    assert parts.history == pytest.approx(3 / 4)  # (2 + 1) / (2 + 2)
    assert parts.total == pytest.approx(0.4 * 0.5 + 0.3 * 0.75 + 0.3 * 0.75)
    assert fitness(spec, agent("a", role="coder", caps=["py"]), load, history) == parts.total
    # a generalist with every capability stands in for the coder at half the role fit
    assert fitness_parts(spec, agent("g", caps=["py", "git"]), load, history).capability == 0.5
    # another specialist: no capability credit at all
    assert fitness_parts(spec, agent("r", role="reviewer", caps=["py", "git"]), load, history).capability == 0
    # a task that asks for nothing: full match for anyone
    assert fitness_parts(task("u"), agent("r", role="reviewer"), {}, EMPTY).capability == 1.0
    assert fitness_parts(task("u"), agent("r"), {}, EMPTY).total == pytest.approx(0.4 + 0.3 + 0.3 * 0.5)


def test_capability_decides() -> None:
    state, index = run_state([task("t", role="coder")], {"t": S.READY})
    agents = [agent("a-general"), agent("b-coder", role="coder"), agent("c-tester", role="tester")]
    [chosen] = decide(state, index, agents, EMPTY, limit=1)
    assert chosen.agent_id == "b-coder"
    assert chosen.score == pytest.approx(0.4 + 0.3 + 0.15)


def test_workload_decides() -> None:
    state, index = run_state([task("t")], {"t": S.READY})
    agents = [agent("a"), agent("b")]
    assert pairs(decide(state, index, agents, EMPTY, limit=1, load={"a": 3, "b": 1})) == [("t", "b")]
    assert pairs(decide(state, index, agents, EMPTY, limit=1, load={"a": 0, "b": 1})) == [("t", "a")]


def test_load_is_derived_from_state_by_default() -> None:
    tasks = [task("done1"), task("done2"), task("t")]
    state, index = run_state(
        tasks,
        {
            "done1": TaskRun(state=S.SUCCEEDED, agent_id="a"),
            "done2": TaskRun(state=S.SUCCEEDED, agent_id="a"),
            "t": S.READY,
        },
    )
    assert load_from_state(state) == {"a": 2}
    assert pairs(decide(state, index, [agent("a"), agent("b")], EMPTY, limit=1)) == [("t", "b")]


def test_history_decides() -> None:
    history = EMPTY
    for _ in range(4):
        history = history.record("alpha", "build", succeeded=False).record("beta", "build", succeeded=True)
    state, index = run_state([task("t", kind="build")], {"t": S.READY})
    agents = [agent("a", role="alpha"), agent("b", role="beta")]
    assert pairs(decide(state, index, agents, history, limit=1)) == [("t", "b")]
    # the same roles on another kind of task: no history, tie, smallest id
    state, index = run_state([task("t", kind="docs")], {"t": S.READY})
    assert pairs(decide(state, index, agents, history, limit=1)) == [("t", "a")]


def test_weights_idle_generalist_beats_loaded_specialist() -> None:
    # specialist: 0.4*1 + 0.3*0 + 0.15 = 0.55; generalist: 0.4*0.5 + 0.3*1 + 0.15 = 0.65
    state, index = run_state([task("t", role="coder")], {"t": S.READY})
    agents = [agent("coder", role="coder"), agent("gen")]
    [chosen] = decide(state, index, agents, EMPTY, limit=1, load={"coder": 2, "gen": 0})
    assert chosen.agent_id == "gen"
    assert chosen.score == pytest.approx(0.65)
    # decide's score is exactly what fitness() reports for the same inputs
    assert chosen.score == fitness(index.specs["t"], agents[1], {"coder": 2, "gen": 0}, EMPTY)
    # with a lighter load gap the specialist wins: 0.4 + 0.3*0.5 + 0.15 = 0.70 > 0.65
    [chosen] = decide(state, index, agents, EMPTY, limit=1, load={"coder": 1, "gen": 0, "x": 2})
    assert chosen.agent_id == "coder"


def test_history_changes_the_choice_after_recorded_outcomes() -> None:
    state, index = run_state([task("t", kind="test")], {"t": S.READY})
    agents = [agent("a1", role="alpha"), agent("b1", role="beta")]
    history = EMPTY
    assert pairs(decide(state, index, agents, history, limit=1)) == [("t", "a1")]  # tie -> id order
    history = history.record("alpha", "test", succeeded=False, duration_s=3.0)
    assert pairs(decide(state, index, agents, history, limit=1)) == [("t", "b1")]
    for _ in range(3):
        history = history.record("beta", "test", succeeded=False)
    history = history.record("alpha", "test", succeeded=True)
    # alpha 1/2 -> 0.5; beta 0/3 -> 0.2
    assert pairs(decide(state, index, agents, history, limit=1)) == [("t", "a1")]


def test_missing_required_capability_is_a_hard_filter() -> None:
    tasks = [task("gpu_job", priority=9, caps=["gpu"]), task("plain")]
    state, index = run_state(tasks, {"gpu_job": S.READY, "plain": S.READY})
    # the gpu job is passed over (no free agent may take it) without blocking the plain task
    assert pairs(decide(state, index, [agent("a", role="general")], EMPTY, limit=2)) == [("plain", "a")]
    result = decide(state, index, [agent("a"), agent("z", caps=["gpu"])], EMPTY, limit=2)
    assert pairs(result) == [("gpu_job", "z"), ("plain", "a")]


def test_one_call_equals_sequential_calls() -> None:
    tasks = [task(f"t{i}", role=["coder", "tester", "general"][i % 3], kind=f"k{i % 2}") for i in range(8)]
    history = EMPTY.record("coder", "k0", succeeded=True).record("tester", "k1", succeeded=False)
    agents = [agent("a", "coder"), agent("b", "tester"), agent("c"), agent("d", "coder")]
    readiness = {f"t{i}": TaskRun(state=S.READY, ready_at=float(i)) for i in range(8)}
    previous = {"done": TaskRun(state=S.SUCCEEDED, agent_id="c")}
    state, index = run_state([*tasks, task("done")], {**readiness, **previous})
    at_once = decide(state, index, agents, history, limit=3)

    one_by_one: list[Placement] = []
    free = list(agents)
    for _ in range(3):
        [item] = decide(state, index, free, history, limit=1)
        one_by_one.append(item)
        run = state.tasks[item.task_id]
        run.state, run.agent_id, run.attempts = S.ASSIGNED, item.agent_id, item.attempt
        free = [a for a in free if a.id != item.agent_id]
    assert at_once == one_by_one


def test_deterministic_tie_breaks() -> None:
    tasks = [task(f"t{i}", priority=i % 2) for i in range(10)]
    ready = {f"t{i}": S.READY for i in range(10)}
    agents = [agent(f"ag{i}", caps=["x"] if i % 2 else []) for i in range(6)]
    state, index = run_state(tasks, ready)
    first = decide(state, index, agents, EMPTY, limit=4)
    assert decide(state, index, agents, EMPTY, limit=4) == first
    rng = random.Random(3)
    for _ in range(20):
        shuffled_agents = rng.sample(agents, len(agents))
        items = list(state.tasks.items())
        rng.shuffle(items)
        shuffled_state = state.model_copy(update={"tasks": dict(items)})
        assert decide(shuffled_state, index, shuffled_agents, EMPTY, limit=4) == first
    # all agents score the same: the smallest ids win, in task order
    assert pairs(first) == [("t1", "ag0"), ("t3", "ag1"), ("t5", "ag2"), ("t7", "ag3")]


# --------------------------------------------------------------------------- stall diagnosis


def test_unrunnable() -> None:
    tasks = [
        task("gpu", caps=["gpu"]),
        task("both", caps=["py", "docker"]),
        task("ok", caps=["py"]),
        task("done", caps=["gpu"]),
        task("many", caps=["tpu", "fpga"]),
    ]
    state, index = run_state(tasks, {"done": S.SUCCEEDED})
    agents = [agent("a", caps=["py"]), agent("b", caps=["docker"])]
    assert unrunnable(state, index, agents) == [
        Unrunnable("gpu", "no agent has capability 'gpu'"),
        Unrunnable("both", "no single agent has all of 'docker', 'py'"),
        Unrunnable("many", "no agent has capabilities 'fpga', 'tpu'"),
    ]
    assert unrunnable(state, index, [*agents, agent("c", caps=["gpu", "docker", "py", "tpu", "fpga"])]) == []
    assert [item.task_id for item in unrunnable(state, index, [])] == ["gpu", "both", "ok", "many"]


# --------------------------------------------------------------------------- history


def test_history_laplace_and_immutability() -> None:
    assert EMPTY.success_rate("any", "thing") == 0.5
    one = EMPTY.record("r", "k", succeeded=True, duration_s=2.0)
    two = one.record("r", "k", succeeded=False, duration_s=4.0)
    assert EMPTY.success_rate("r", "k") == 0.5  # unchanged
    assert one.success_rate("r", "k") == pytest.approx(2 / 3)
    assert two.success_rate("r", "k") == pytest.approx(2 / 4)
    assert two.get("r", "k") == Outcomes(role="r", kind="k", successes=1, attempts=2, total_duration_s=6.0)
    assert two.get("r", "k").mean_duration_s == 3.0
    assert two.success_rate("r", "other") == 0.5


def test_history_serializes() -> None:
    history = EMPTY.record("b", "k", succeeded=True).record("a", "k", succeeded=False, duration_s=1.5)
    data = history.to_dict()
    assert [item["role"] for item in data["outcomes"]] == ["a", "b"]  # canonical order
    assert History.from_dict(data) == history
    assert History.model_validate_json(history.model_dump_json()) == history
    assert History.from_dict(data).success_rate("b", "k") == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "outcomes",
    [
        [{"role": "r", "kind": "k", "successes": 3, "attempts": 2}],
        [{"role": "r", "kind": "k", "attempts": -1}],
        [{"role": "r", "kind": "k"}, {"role": "r", "kind": "k"}],
    ],
)
def test_history_rejects_bad_data(outcomes: list[dict[str, object]]) -> None:
    with pytest.raises(ValidationError):
        History.from_dict({"outcomes": outcomes})


# --------------------------------------------------------------------------- property


@st.composite
def scheduling_inputs(draw: st.DrawFn) -> tuple[RunState, PlanIndex, list[AgentSpec], int]:
    capability_sets = st.lists(st.sampled_from(["x", "y", "z"]), max_size=2, unique=True)
    roles = st.sampled_from(["general", "coder", "tester"])
    n_tasks = draw(st.integers(min_value=0, max_value=12))
    specs = [
        task(
            f"t{i}",
            priority=draw(st.integers(0, 3)),
            role=draw(roles),
            caps=draw(capability_sets),
        )
        for i in range(n_tasks)
    ]
    agents = [agent(f"a{i}", draw(roles), draw(capability_sets)) for i in range(draw(st.integers(0, 6)))]
    states: dict[str, TaskState | TaskRun] = {}
    for spec in specs:
        task_state = draw(st.sampled_from(list(TaskState)))
        holder = (
            draw(st.sampled_from([None, *[a.id for a in agents]]))
            if task_state in {S.ASSIGNED, S.RUNNING}
            else None
        )
        states[spec.id] = TaskRun(
            state=task_state,
            agent_id=holder,
            attempts=draw(st.integers(0, 3)),
            ready_at=draw(st.sampled_from([None, 0.0, 1.0, 2.0])),
        )
    state, index = run_state(specs, states)
    free = draw(st.lists(st.sampled_from(agents), unique_by=lambda a: a.id)) if agents else []
    return state, index, free, draw(st.integers(0, 8))


@given(scheduling_inputs())
@settings(max_examples=200, deadline=None)
def test_decide_invariants(inputs: tuple[RunState, PlanIndex, list[AgentSpec], int]) -> None:
    state, index, free, limit = inputs
    result = decide(state, index, free, EMPTY, limit=limit)
    busy = {run.agent_id for run in state.tasks.values() if run.state in {S.ASSIGNED, S.RUNNING}}
    free_by_id = {a.id: a for a in free}
    assert len(result) <= limit
    assert len({item.task_id for item in result}) == len(result)
    assert len({item.agent_id for item in result}) == len(result)
    for item in result:
        run = state.tasks[item.task_id]
        assert run.state is S.READY
        assert item.agent_id in free_by_id
        assert item.agent_id not in busy
        assert set(index.specs[item.task_id].capabilities) <= set(free_by_id[item.agent_id].capabilities)
        assert item.attempt == run.attempts + 1
        assert 0.0 <= item.score <= 1.0
    # work-conserving: if a slot and an agent are left, no ready task was left that one could take
    used = {item.agent_id for item in result}
    left = [a for a in free if a.id not in used and a.id not in busy]
    if len(result) < limit and left:
        assigned = {item.task_id for item in result}
        for task_id, run in state.tasks.items():
            if run.state is S.READY and task_id not in assigned:
                required = set(index.specs[task_id].capabilities)
                assert not any(required <= set(a.capabilities) for a in left)


@given(scheduling_inputs(), st.data())
@settings(max_examples=200, deadline=None)
def test_a_ready_queue_kept_across_steps_decides_as_a_full_pass(
    inputs: tuple[RunState, PlanIndex, list[AgentSpec], int], data: st.DataObject
) -> None:
    """The orchestrator's queue has seen other READY sets before this step (tasks that left,
    tasks that came back): what it places is what a pass over the whole state places."""
    state, index, free, limit = inputs
    busy = {run.agent_id for run in state.tasks.values() if run.state in {S.ASSIGNED, S.RUNNING}}
    free = [a for a in free if a.id not in busy]  # what the orchestrator passes with a hint
    load = load_from_state(state)
    ready = {task_id for task_id, run in state.tasks.items() if run.state is S.READY}
    queue = ReadyQueue(index)
    for _ in range(data.draw(st.integers(0, 3))):  # earlier steps
        queue.sync(
            set(data.draw(st.lists(st.sampled_from(sorted(ready)), unique=True))) if ready else set(), state
        )
    queue.sync(ready, state)
    assert set(queue) == ready
    assert len(queue) == len(ready)
    full = decide(state, index, free, EMPTY, limit=limit, load=load)
    assert decide(state, index, free, EMPTY, limit=limit, load=load, ready=queue) == full
    assert decide(state, index, free, EMPTY, limit=limit, load=load, ready=ready) == full
    assert list(queue.ordered()) == sorted(
        ready,
        key=lambda t: (
            -index.specs[t].priority,
            float("inf") if state.tasks[t].ready_at is None else state.tasks[t].ready_at,
            index.order[t],
        ),
    )


def test_a_ready_queue_compacts_entries_of_tasks_that_left() -> None:
    specs = [task(f"t{i}") for i in range(300)]
    state, index = run_state(specs, {spec.id: S.READY for spec in specs})
    queue = ReadyQueue(index)
    for i in range(300):  # one task at a time comes and goes
        queue.sync({f"t{i}"}, state)
    assert list(queue.ordered()) == ["t299"]
    assert len(queue._heap) <= 2 * len(queue) + 64


# --------------------------------------------------------------------------- micro-benchmark


def _median_ms(fn: object, repeat: int) -> float:
    assert callable(fn)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def test_benchmark_10k_tasks_prints_timings(capsys: pytest.CaptureFixture[str]) -> None:
    """Asserts nothing about time; prints it (run with -s to see the figures)."""
    rng = random.Random(11)
    n = 10_000
    specs = [task("t0")]
    for i in range(1, n):
        deps = sorted({f"t{rng.randrange(max(0, i - 200), i)}" for _ in range(rng.randrange(1, 3))})
        specs.append(
            task(
                f"t{i}",
                *deps,
                priority=rng.randrange(3),
                role=rng.choice(["general", "coder", "tester"]),
                kind=rng.choice(["build", "test", "docs"]),
                caps=["gpu"] if i % 97 == 0 else [],
            )
        )
    states: dict[str, TaskState | TaskRun] = {}
    for i in range(n):
        if i < 4_000:
            states[f"t{i}"] = TaskRun(state=S.SUCCEEDED, agent_id=f"a{i % 20}")
        elif i < 5_000:
            states[f"t{i}"] = TaskRun(state=S.READY, ready_at=float(i % 50))
        elif i < 5_010:
            states[f"t{i}"] = TaskRun(state=S.RUNNING, agent_id=f"busy{i}")
    start = time.perf_counter()
    state, index = run_state(specs, states)
    build_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    PlanIndex.build(index.plan)
    index_ms = (time.perf_counter() - start) * 1000
    agents = [agent(f"a{i}", role=["general", "coder", "tester"][i % 3]) for i in range(20)]
    history = EMPTY
    for role in ("general", "coder", "tester"):
        for kind in ("build", "test", "docs"):
            history = history.record(role, kind, succeeded=rng.random() < 0.7, duration_s=1.0)
    load = load_from_state(state)

    decide_ms = _median_ms(lambda: decide(state, index, agents, history, limit=20), 50)
    decide_load_ms = _median_ms(lambda: decide(state, index, agents, history, limit=20, load=load), 50)
    ready_full_ms = _median_ms(lambda: newly_ready(state, index), 20)
    ready_changed_ms = _median_ms(lambda: newly_ready(state, index, changed=["t3999"]), 200)
    skip_full_ms = _median_ms(lambda: to_skip(state, index), 20)
    retry_ms = _median_ms(lambda: retry_due(state, index, 100.0), 20)
    assert len(decide(state, index, agents, history, limit=20)) == 20
    with capsys.disabled():
        print(
            f"\nscheduler on {n} tasks (1000 READY, 20 free agents): "
            f"RunState build {build_ms:.1f} ms, PlanIndex.build {index_ms:.1f} ms, "
            f"decide {decide_ms:.2f} ms (load given: {decide_load_ms:.2f} ms), "
            f"newly_ready full {ready_full_ms:.2f} ms / changed=1 {ready_changed_ms * 1000:.1f} µs, "
            f"to_skip full {skip_full_ms:.2f} ms, retry_due {retry_ms:.2f} ms"
        )
