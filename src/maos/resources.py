"""Resource dependencies (FR-1.2): tasks that must not use the same thing at once.

A plan declares its resources and their capacities (``resources: {db: 1, gpu: {capacity: 2,
shared: true}}``; ``maos run --resource db=1`` sets them too) and each task the units one of
its attempts holds (``resources: {db: 1}``). An attempt holds its units **from its
``task_assigned`` to the event that ends it** — success, failure (an agent killed with
SIGKILL fails its attempt), a lost worker's failure, a requeue after an orchestrator failover,
a cancel, a deadline or a deadlock resolution: whatever the end, the task leaves ASSIGNED or
RUNNING in the fold and its units are free again. Holdings are therefore never stored for a
run's own resources: ``held`` derives them from ``RunState``, so a replay or a resume sees
exactly what was held (ADR 0013).

Two more sources of "held":

- attempts the orchestrator stopped (a deadline, a deadlock victim, a resume requeueing the
  previous owner's attempts) still hold their units until their agent is known to be gone
  (``Stopping``): the end event moves the task on at once, the process takes up to its grace
  period to die.
- a **shared** resource's capacity is shared by every run on the store: the semaphore in
  ``maos.semaphore`` (``SharedPool``).

Everything here is pure: no I/O, no store (``tests/test_layers.py``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from maos.errors import PlanError
from maos.model import (
    MAX_RESOURCE_UNITS,
    RESOURCE_NAME_PATTERN,
    Plan,
    ResourceLimit,
    RunState,
    TaskSpec,
    TaskState,
)

log = logging.getLogger("maos.resources")

__all__ = [
    "LIVE",
    "Stopping",
    "capacities",
    "check_plan",
    "critical_path",
    "free_units",
    "held",
    "holders",
    "parse_limit",
    "shortfall",
    "unsatisfiable",
    "with_limits",
]

LIVE = frozenset({TaskState.ASSIGNED, TaskState.RUNNING})


# --------------------------------------------------------------------------- pure parts


def capacities(plan: Plan) -> dict[str, int]:
    """Resource name -> capacity, as the plan declares them."""
    return {name: limit.capacity for name, limit in plan.resources.items()}


def held(
    state: RunState, specs: Mapping[str, TaskSpec], stopping: Iterable[Mapping[str, int]] = ()
) -> dict[str, int]:
    """Units held now: by every ASSIGNED or RUNNING task, plus ``stopping`` attempts' units."""
    result: dict[str, int] = {}
    for task_id, run in state.tasks.items():
        if run.state in LIVE:
            spec = specs.get(task_id)
            if spec is not None:
                for name, units in spec.resources.items():
                    result[name] = result.get(name, 0) + units
    for units_of in stopping:
        for name, units in units_of.items():
            result[name] = result.get(name, 0) + units
    return result


def holders(state: RunState, specs: Mapping[str, TaskSpec], names: Iterable[str]) -> list[str]:
    """Live tasks holding any of ``names``, in id order."""
    wanted = set(names)
    return sorted(
        task_id
        for task_id, run in state.tasks.items()
        if run.state in LIVE and (spec := specs.get(task_id)) is not None and wanted & spec.resources.keys()
    )


def free_units(limits: Mapping[str, int], in_use: Mapping[str, int]) -> dict[str, int]:
    return {name: max(0, capacity - in_use.get(name, 0)) for name, capacity in limits.items()}


def shortfall(need: Mapping[str, int], free: Mapping[str, int]) -> dict[str, int]:
    """The resources of ``need`` that ``free`` cannot cover now (name -> units needed);
    empty when the attempt may start. An undeclared resource is never free."""
    return {name: units for name, units in need.items() if free.get(name, 0) < units}


def unsatisfiable(plan: Plan) -> list[tuple[str, str, str]]:
    """``(task id, resource, why)`` for every need the plan's capacities can never meet:
    more units than the capacity, or a resource the plan does not declare."""
    result: list[tuple[str, str, str]] = []
    for task in plan.tasks:
        for name, units in task.resources.items():
            limit = plan.resources.get(name)
            if limit is None:
                declared = ", ".join(sorted(plan.resources)) or "none"
                result.append(
                    (
                        task.id,
                        name,
                        f"resource {name!r} is not declared in the plan's resources (declared: "
                        f"{declared}); add it, or set it with maos run --resource {name}=N",
                    )
                )
            elif units > limit.capacity:
                result.append(
                    (
                        task.id,
                        name,
                        f"needs {units} unit(s) of {name!r} but its capacity is "
                        f"{limit.capacity}: it could never start",
                    )
                )
    return result


def parse_limit(text: str) -> tuple[str, ResourceLimit]:
    """``NAME=N`` (or ``NAME=N:shared``) from the command line; ``ValueError`` saying what is
    expected."""
    name, sep, rest = text.partition("=")
    count, _, flag = rest.partition(":")
    shown = repr(text) if len(text) <= 80 else f"{text[:77]!r}..."
    if not sep or not re.fullmatch(RESOURCE_NAME_PATTERN, name) or flag not in ("", "shared"):
        raise ValueError(f"{shown}: expected NAME=N or NAME=N:shared, e.g. db=1")
    wrong = f"{shown}: N must be a whole number from 1 to {MAX_RESOURCE_UNITS}"
    if not re.fullmatch("[0-9]{1,7}", count):  # int() takes other scripts' digits, " 1" and "1_0" too
        raise ValueError(wrong)
    try:
        return name, ResourceLimit(capacity=int(count), shared=flag == "shared")
    except ValidationError:
        raise ValueError(wrong) from None


def with_limits(plan: Plan, limits: Mapping[str, ResourceLimit]) -> Plan:
    """``plan`` with ``limits`` added to (or replacing) its declared resources."""
    if not limits:
        return plan
    return plan.model_copy(update={"resources": {**plan.resources, **limits}})


def critical_path(specs: Mapping[str, TaskSpec], children: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
    """Task id -> the number of tasks on the longest chain from it to the end of the DAG
    (itself included): what ``decide`` prefers among tasks competing for a resource. Tasks on
    a cycle (never valid in a plan) count as chains of their own length so far."""
    depth: dict[str, int] = {}
    for root in specs:
        if root in depth:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        on_path: set[str] = set()
        while stack:
            task_id, next_child = stack.pop()
            kids = children.get(task_id, ())
            if next_child == 0:
                on_path.add(task_id)
            while next_child < len(kids) and (kids[next_child] in depth or kids[next_child] in on_path):
                next_child += 1
            if next_child < len(kids):
                stack.append((task_id, next_child + 1))
                stack.append((kids[next_child], 0))
                continue
            depth[task_id] = 1 + max((depth.get(kid, 0) for kid in kids), default=0)
            on_path.discard(task_id)
    return depth


def check_plan(plan: Plan, source: str) -> None:
    """``PlanError`` naming each task and resource whose need can never be met."""
    problems = [
        f"{source}: task {task_id!r}: field 'resources': {why}" for task_id, _name, why in unsatisfiable(plan)
    ]
    if problems:
        raise PlanError(problems)


@dataclass
class Stopping:
    """Attempts stopped by the orchestrator whose agents may still run: their units stay
    held until the attempt's own end report arrives or ``until`` passes (grace + lease)."""

    attempts: dict[str, tuple[int, dict[str, int], float]] = field(default_factory=dict)

    def add(self, task_id: str, attempt: int, units: Mapping[str, int], until: float) -> None:
        if units:
            self.attempts[task_id] = (attempt, dict(units), until)

    def ended(self, task_id: str, attempt: int) -> None:
        """The attempt's own end report arrived (stale, but proof its agent has stopped)."""
        current = self.attempts.get(task_id)
        if current is not None and current[0] == attempt:
            del self.attempts[task_id]

    def units(self, now: float) -> list[dict[str, int]]:
        for task_id in [t for t, (_a, _u, until) in self.attempts.items() if until <= now]:
            del self.attempts[task_id]
        return [units for _attempt, units, _until in self.attempts.values()]
