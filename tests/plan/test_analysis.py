"""DAG analysis: levels, critical path, width; random DAGs keep the invariants."""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maos.errors import PlanError
from maos.model import MAX_PLAN_TASKS, Plan
from maos.plan import PlanAnalysis, analyze_plan, validate_plan


def make_plan(*tasks: dict[str, Any]) -> Plan:
    return Plan.model_validate({"name": "p", "tasks": list(tasks)})


DIAMOND = make_plan(
    {"id": "fetch"},
    {"id": "lint", "depends_on": ["fetch"]},
    {"id": "test", "depends_on": ["fetch"]},
    {"id": "docs", "depends_on": ["fetch"]},
    {"id": "report", "depends_on": ["lint", "test", "docs"]},
)


def test_diamond() -> None:
    analysis = analyze_plan(DIAMOND)
    assert analysis.levels == (("fetch",), ("lint", "test", "docs"), ("report",))
    assert analysis.depth == 3
    assert analysis.max_width == 3
    assert analysis.roots == ("fetch",)
    assert analysis.leaves == ("report",)
    assert analysis.order == ("fetch", "lint", "test", "docs", "report")
    assert analysis.children["fetch"] == ("lint", "test", "docs")
    assert analysis.children["report"] == ()
    assert dict(analysis.level_of) == {"fetch": 0, "lint": 1, "test": 1, "docs": 1, "report": 2}
    # Ties go to the earliest task in plan order.
    assert analysis.critical_path == ("fetch", "lint", "report")
    assert analysis.critical_path_length == 3.0


def test_durations_choose_the_heaviest_chain() -> None:
    analysis = analyze_plan(DIAMOND, durations={"test": 10.0, "lint": 2.0, "not-in-plan": 99.0})
    assert analysis.critical_path == ("fetch", "test", "report")
    assert analysis.critical_path_length == 12.0  # fetch and report weigh 1 by default


def test_a_heavy_short_chain_beats_a_long_light_one() -> None:
    plan = make_plan(
        {"id": "a"},
        {"id": "b", "depends_on": ["a"]},
        {"id": "c", "depends_on": ["b"]},
        {"id": "big"},
    )
    assert analyze_plan(plan).critical_path == ("a", "b", "c")
    heavy = analyze_plan(plan, durations={"big": 5.0, "a": 0.5, "b": 0.5, "c": 0.5})
    assert heavy.critical_path == ("big",)
    assert heavy.critical_path_length == 5.0


def test_leaves_are_not_only_the_last_level() -> None:
    plan = make_plan({"id": "a"}, {"id": "side"}, {"id": "b", "depends_on": ["a"]})
    analysis = analyze_plan(plan)
    assert analysis.levels == (("a", "side"), ("b",))
    assert analysis.leaves == ("side", "b")
    assert analysis.roots == ("a", "side")


def test_level_is_the_longest_path_not_the_shortest() -> None:
    plan = make_plan(
        {"id": "a"},
        {"id": "b", "depends_on": ["a"]},
        {"id": "c", "depends_on": ["a", "b"]},
    )
    assert analyze_plan(plan).level_of["c"] == 2


def test_repeated_dependency_counts_once() -> None:
    plan = make_plan({"id": "a"}, {"id": "b", "depends_on": ["a", "a"]})
    analysis = analyze_plan(plan)
    assert analysis.children["a"] == ("b",)
    assert analysis.levels == (("a",), ("b",))


def test_to_dict_is_json_ready() -> None:
    assert analyze_plan(DIAMOND).to_dict() == {
        "tasks": 5,
        "levels": [["fetch"], ["lint", "test", "docs"], ["report"]],
        "depth": 3,
        "max_width": 3,
        "critical_path": ["fetch", "lint", "report"],
        "critical_path_length": 3.0,
        "roots": ["fetch"],
        "leaves": ["report"],
    }


def test_empty_plan_analyzes_to_nothing() -> None:
    analysis = analyze_plan(make_plan())
    assert analysis.levels == ()
    assert analysis.max_width == 0
    assert analysis.critical_path == ()
    assert analysis.critical_path_length == 0.0


@pytest.mark.parametrize(
    "tasks",
    [
        [{"id": "a", "depends_on": ["b"]}, {"id": "b", "depends_on": ["a"]}],
        [{"id": "a", "depends_on": ["nope"]}],
        [{"id": "a", "depends_on": ["a"]}],
        [{"id": "a"}, {"id": "a"}],
    ],
)
def test_invalid_plans_are_refused(tasks: list[dict[str, Any]]) -> None:
    with pytest.raises(PlanError, match="validate_plan"):
        analyze_plan(make_plan(*tasks))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_durations_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite number >= 0"):
        analyze_plan(DIAMOND, durations={"lint": bad})


def random_plan(rng: random.Random, count: int, max_deps: int) -> Plan:
    """A random DAG: task i depends only on tasks before it, then the plan order is shuffled."""
    tasks = []
    for i in range(count):
        deps = rng.sample(range(i), min(i, rng.randint(0, max_deps)))
        tasks.append({"id": f"t{i}", "depends_on": [f"t{j}" for j in deps]})
    rng.shuffle(tasks)
    return make_plan(*tasks)


def check_invariants(plan: Plan, analysis: PlanAnalysis) -> None:
    ids = [task.id for task in plan.tasks]
    by_id = plan.by_id()
    assert sorted(analysis.order) == sorted(ids)
    assert [task_id for level in analysis.levels for task_id in level] == list(analysis.order)
    seen: set[str] = set()
    for task_id in analysis.order:
        task = by_id[task_id]
        assert all(dep in seen for dep in task.depends_on)
        seen.add(task_id)
        level = analysis.level_of[task_id]
        # Every task sits above each dependency, and exactly one above its deepest one.
        assert all(level > analysis.level_of[dep] for dep in task.depends_on)
        assert level == max((analysis.level_of[dep] + 1 for dep in task.depends_on), default=0)
        for child in analysis.children[task_id]:
            assert task_id in by_id[child].depends_on
    assert analysis.roots == tuple(t.id for t in plan.tasks if not t.depends_on)
    assert analysis.leaves == tuple(t for t in ids if not analysis.children[t])
    assert analysis.max_width == max(len(level) for level in analysis.levels)
    # The critical path is a real chain and, with unit weights, as long as the DAG is deep.
    path = analysis.critical_path
    assert len(path) == analysis.depth == analysis.critical_path_length
    for dep, task_id in itertools.pairwise(path):
        assert dep in by_id[task_id].depends_on
    assert path[0] in analysis.roots
    assert path[-1] in analysis.leaves


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), count=st.integers(1, 60), max_deps=st.integers(0, 6))
def test_random_dags_keep_the_invariants(seed: int, count: int, max_deps: int) -> None:
    plan = random_plan(random.Random(seed), count, max_deps)
    validate_plan(plan, "random")
    check_invariants(plan, analyze_plan(plan))


@pytest.mark.parametrize("shape", ["chain", "random"])
def test_ten_thousand_tasks_within_100_ms(shape: str) -> None:
    if shape == "chain":
        plan = make_plan(
            *({"id": f"t{i}", "depends_on": [f"t{i - 1}"] if i else []} for i in range(MAX_PLAN_TASKS))
        )
    else:
        plan = random_plan(random.Random(7), MAX_PLAN_TASKS, 4)
    started = time.perf_counter()
    analysis = analyze_plan(plan)
    # Speed is a benchmark figure, not an assertion (tests never fail on a slow machine).
    print(f"analyze_plan({MAX_PLAN_TASKS} tasks, {shape}): {(time.perf_counter() - started) * 1000:.1f} ms")
    check_invariants(plan, analysis)
    if shape == "chain":
        assert analysis.depth == MAX_PLAN_TASKS
        assert analysis.max_width == 1
