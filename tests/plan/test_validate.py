"""Structural validation: every problem found, each naming the source, the task and the field."""

from __future__ import annotations

from typing import Any

import pytest

from maos.errors import CycleError, PlanError
from maos.model import MAX_PLAN_TASKS, Plan
from maos.plan import validate_plan

SOURCE = "plans/p.yaml"


def make_plan(*tasks: dict[str, Any]) -> Plan:
    return Plan.model_validate({"name": "p", "tasks": list(tasks)})


def problems_of(plan: Plan) -> list[str]:
    with pytest.raises(PlanError) as info:
        validate_plan(plan, SOURCE)
    return info.value.problems


def test_valid_plan_passes() -> None:
    validate_plan(make_plan({"id": "a"}, {"id": "b", "depends_on": ["a"]}), SOURCE)


def test_duplicate_id() -> None:
    plan = make_plan({"id": "a"}, {"id": "b"}, {"id": "a", "prompt": "again"})
    assert problems_of(plan) == [
        f"{SOURCE}: task 'a' (tasks[2]): field 'id': duplicate id 'a' (first used by tasks[0])"
    ]


def test_unknown_dependency_with_a_suggestion() -> None:
    plan = make_plan({"id": "design"}, {"id": "build", "depends_on": ["desgn"]})
    assert problems_of(plan) == [
        f"{SOURCE}: task 'build' (tasks[1]): field 'depends_on': unknown task 'desgn' (no task has this id); "
        "did you mean 'design'?"
    ]


def test_unknown_dependency_without_a_suggestion() -> None:
    plan = make_plan({"id": "design"}, {"id": "build", "depends_on": ["zzz"]})
    assert problems_of(plan) == [
        f"{SOURCE}: task 'build' (tasks[1]): field 'depends_on': unknown task 'zzz' (no task has this id)"
    ]


def test_self_dependency() -> None:
    plan = make_plan({"id": "a"}, {"id": "b", "depends_on": ["a", "b"]})
    with pytest.raises(PlanError) as info:
        validate_plan(plan, SOURCE)
    # A self-dependency is reported as such, not as a cycle of one.
    assert not isinstance(info.value, CycleError)
    assert info.value.problems == [
        f"{SOURCE}: task 'b' (tasks[1]): field 'depends_on': task 'b' depends on itself"
    ]


def test_cycle_is_printed_as_a_chain() -> None:
    plan = make_plan(
        {"id": "a", "depends_on": ["b"]},
        {"id": "b", "depends_on": ["c"]},
        {"id": "c", "depends_on": ["a"]},
        {"id": "d", "depends_on": ["a"]},
    )
    with pytest.raises(CycleError) as info:
        validate_plan(plan, SOURCE)
    assert info.value.cycle == ["a", "b", "c", "a"]
    assert info.value.problems == [
        f"{SOURCE}: task 'a' (tasks[0]): field 'depends_on': dependency cycle a -> b -> c -> a "
        "(each task depends on the next)"
    ]


def test_each_cycle_is_reported_once_starting_at_its_earliest_task() -> None:
    plan = make_plan(
        {"id": "x"},
        {"id": "e", "depends_on": ["f"]},
        {"id": "b", "depends_on": ["a"]},
        {"id": "a", "depends_on": ["b"]},
        {"id": "f", "depends_on": ["e", "x"]},
    )
    with pytest.raises(CycleError) as info:
        validate_plan(plan, SOURCE)
    assert info.value.cycle == ["e", "f", "e"]
    assert [line.split("dependency cycle ")[1] for line in info.value.problems] == [
        "e -> f -> e (each task depends on the next)",
        "b -> a -> b (each task depends on the next)",
    ]
    assert "task 'b' (tasks[2])" in info.value.problems[1]


def test_the_shortest_cycle_through_the_first_task_is_shown() -> None:
    # a -> b -> c -> d -> a and the shortcut a -> c: one component, shown via the shortcut.
    plan = make_plan(
        {"id": "a", "depends_on": ["b", "c"]},
        {"id": "b", "depends_on": ["c"]},
        {"id": "c", "depends_on": ["d"]},
        {"id": "d", "depends_on": ["a"]},
    )
    with pytest.raises(CycleError) as info:
        validate_plan(plan, SOURCE)
    assert info.value.cycle == ["a", "c", "d", "a"]
    assert len(info.value.problems) == 1


def test_empty_plan() -> None:
    assert problems_of(make_plan()) == [
        f"{SOURCE}: field 'tasks': the plan has no tasks; at least one is required"
    ]


def test_too_many_tasks() -> None:
    plan = make_plan(*({"id": f"t{i}"} for i in range(MAX_PLAN_TASKS + 1)))
    assert problems_of(plan) == [
        f"{SOURCE}: field 'tasks': the plan has {MAX_PLAN_TASKS + 1} tasks, "
        f"more than the limit of {MAX_PLAN_TASKS}"
    ]


def test_exactly_the_limit_is_fine() -> None:
    plan = make_plan(
        *({"id": f"t{i}", "depends_on": [f"t{i - 1}"] if i else []} for i in range(MAX_PLAN_TASKS))
    )
    validate_plan(plan, SOURCE)


def test_every_problem_at_once_and_a_cycle_among_them() -> None:
    plan = make_plan(
        {"id": "a", "depends_on": ["b", "nope"]},
        {"id": "b", "depends_on": ["a", "b"]},
        {"id": "a"},
    )
    with pytest.raises(CycleError) as info:
        validate_plan(plan, SOURCE)
    assert info.value.problems == [
        f"{SOURCE}: task 'a' (tasks[2]): field 'id': duplicate id 'a' (first used by tasks[0])",
        f"{SOURCE}: task 'a' (tasks[0]): field 'depends_on': unknown task 'nope' (no task has this id)",
        f"{SOURCE}: task 'b' (tasks[1]): field 'depends_on': task 'b' depends on itself",
        f"{SOURCE}: task 'a' (tasks[0]): field 'depends_on': dependency cycle a -> b -> a "
        "(each task depends on the next)",
    ]


def test_a_cycle_through_all_10000_tasks_needs_no_recursion() -> None:
    count = MAX_PLAN_TASKS
    plan = make_plan(*({"id": f"t{i}", "depends_on": [f"t{(i + 1) % count}"]} for i in range(count)))
    with pytest.raises(CycleError) as info:
        validate_plan(plan, SOURCE)
    assert info.value.cycle == [*(f"t{i}" for i in range(count)), "t0"]
    # The line stays readable: start and end of the cycle, the middle counted.
    (line,) = info.value.problems
    assert f"t44 -> ... ({count + 1 - 50} more) ... -> t9996" in line
    assert line.endswith("t9999 -> t0 (each task depends on the next)")
    assert len(line) < 1000


def test_spelling_suggestions_are_bounded() -> None:
    plan = make_plan({"id": "a"}, *({"id": f"t{i}", "depends_on": [f"missing{i}"]} for i in range(30)))
    problems = problems_of(plan)
    assert len(problems) == 30
    assert all("unknown task 'missing" in line for line in problems)
