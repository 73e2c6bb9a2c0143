"""Structural checks of a plan: the things a pydantic model cannot see one task at a time.

``validate_plan`` reports every problem it finds, one self-contained line each, in the same
shape as the loader's lines::

    plan.yaml: task 'build' (tasks[1]): field 'depends_on': unknown task 'desgn'; did you mean 'design'?

Cycles are found with Tarjan's strongly connected components (iterative, so 10,000 tasks in
one chain do not hit the recursion limit); each component with more than one task is
reported once, as its shortest cycle through its earliest task: ``a -> b -> c -> a``, where
each task depends on the next.
"""

from __future__ import annotations

import difflib
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime

from maos.errors import MAX_PROBLEMS_SHOWN, CycleError, PlanError
from maos.model import (
    MAX_PLAN_TASKS,
    MAX_START_DELAY_S,
    TASK_ID_MAX_CHARS,
    Plan,
    is_valid_task_id,
    utc_timestamp,
)

# Spelling suggestions cost O(number of tasks) each; past this many, stop offering them.
_MAX_SUGGESTIONS = 20
# A cycle longer than this is shown by its first and last tasks.
_MAX_CYCLE_SHOWN = 50
# The characters of a dependency that names no task shown in its problem line.
_MAX_DEP_SHOWN = 100


def _quoted(value: str) -> str:
    if len(value) <= _MAX_DEP_SHOWN:
        return repr(value)
    return f"{value[:_MAX_DEP_SHOWN]!r}… ({len(value)} characters)"


def problem_line(
    source: str,
    message: str,
    *,
    index: int | None = None,
    task_id: str | None = None,
    field: str | None = None,
) -> str:
    """One problem as one line: ``SOURCE: task 'ID' (tasks[I]): field 'F': MESSAGE``.

    Parts that do not apply are left out; a task without a usable id is named by its index.
    """
    parts = [source]
    if index is not None:
        parts.append(f"task '{task_id}' (tasks[{index}])" if task_id is not None else f"tasks[{index}]")
    if field is not None:
        parts.append(f"field '{field}'")
    parts.append(message)
    return ": ".join(parts)


def validate_plan(plan: Plan, source: str) -> None:
    """Raise ``PlanError`` listing every structural problem of ``plan``; return if there is none.

    Checks: at least one task, at most ``MAX_PLAN_TASKS``, unique ids, every dependency names
    a task of the plan, no task depends on itself, no dependency cycle. A cycle raises
    ``CycleError`` (a ``PlanError``) whose ``cycle`` is the first cycle found; its
    ``problems`` still list every other problem too. ``source`` names the plan in each line
    (usually the file path).
    """
    count = len(plan.tasks)
    if count == 0:
        raise PlanError(
            problem_line(source, "the plan has no tasks; at least one is required", field="tasks")
        )
    if count > MAX_PLAN_TASKS:
        raise PlanError(
            problem_line(
                source,
                f"the plan has {count} tasks, more than the limit of {MAX_PLAN_TASKS}",
                field="tasks",
            )
        )

    problems: list[str] = []
    first_index: dict[str, int] = {}
    folded: dict[str, int] = {}
    for index, task in enumerate(plan.tasks):
        first = first_index.setdefault(task.id, index)
        if first != index:
            problems.append(
                problem_line(
                    source,
                    f"duplicate id '{task.id}' (first used by tasks[{first}])",
                    index=index,
                    task_id=task.id,
                    field="id",
                )
            )
            continue
        # Branches and worktree folders are files: on a case-insensitive file system
        # (macOS, Windows) 'Build' and 'build' would be one.
        other = folded.setdefault(task.id.casefold(), index)
        if other != index:
            problems.append(
                problem_line(
                    source,
                    f"id '{task.id}' differs from '{plan.tasks[other].id}' (tasks[{other}]) only in "
                    "case; ids must differ in more than case (they name branches and folders)",
                    index=index,
                    task_id=task.id,
                    field="id",
                )
            )
    problems += _replica_problems(plan, first_index, source)

    suggestions_left = _MAX_SUGGESTIONS
    more = 0  # problems counted, not described: nobody reads a million lines
    edges: dict[str, list[str]] = {task_id: [] for task_id in first_index}
    for index, task in enumerate(plan.tasks):
        for dep in task.depends_on:
            if (dep == task.id or dep not in first_index) and len(problems) >= MAX_PROBLEMS_SHOWN:
                more += 1
            elif dep == task.id:
                problems.append(
                    problem_line(
                        source,
                        f"task '{task.id}' depends on itself",
                        index=index,
                        task_id=task.id,
                        field="depends_on",
                    )
                )
            elif dep not in first_index:
                hint = ""
                if suggestions_left > 0:
                    suggestions_left -= 1
                    close = difflib.get_close_matches(dep, list(first_index), n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else ""
                problems.append(
                    problem_line(
                        source,
                        f"unknown task {_quoted(dep)} (no task has this id){hint}",
                        index=index,
                        task_id=task.id,
                        field="depends_on",
                    )
                )
            else:
                edges[task.id].append(dep)

    problems += _resource_problems(plan, source)
    problems += _start_problems(plan, source)
    cycles = find_cycles(edges, first_index)
    for cycle in cycles:
        problems.append(
            problem_line(
                source,
                f"dependency cycle {_show_cycle(cycle)} (each task depends on the next)",
                index=first_index[cycle[0]],
                task_id=cycle[0],
                field="depends_on",
            )
        )
    if cycles:
        raise CycleError(problems, cycles[0], more=more)
    if problems:
        raise PlanError(problems, more=more)


def _start_problems(plan: Plan, source: str) -> list[str]:
    """A ``not_before`` time more than ``MAX_START_DELAY_S`` from now (year 9999 was taken, and
    the run then never ended)."""
    latest = time.time() + MAX_START_DELAY_S
    return [
        problem_line(
            source,
            f"{task.not_before.isoformat()} is more than {MAX_START_DELAY_S // 86400} days from now; "
            "start the run later instead",
            index=index,
            task_id=task.id,
            field="not_before",
        )
        for index, task in enumerate(plan.tasks)
        if isinstance(task.not_before, datetime) and utc_timestamp(task.not_before) > latest
    ]


def _resource_problems(plan: Plan, source: str) -> list[str]:
    """A task needing more units of a resource than its capacity could never start. An
    undeclared resource is a problem only when the plan declares some (else the capacities
    come from ``maos run --resource``, checked there)."""
    problems: list[str] = []
    for index, task in enumerate(plan.tasks):
        for name, units in task.resources.items():
            limit = plan.resources.get(name)
            if limit is None and plan.resources:
                declared = ", ".join(sorted(plan.resources))
                message = f"resource '{name}' is not declared in the plan's resources (declared: {declared})"
            elif limit is not None and units > limit.capacity:
                message = (
                    f"needs {units} unit(s) of resource '{name}', whose capacity is {limit.capacity}: "
                    "it could never start"
                )
            else:
                continue
            problems.append(problem_line(source, message, index=index, task_id=task.id, field="resources"))
    return problems


def _replica_problems(plan: Plan, index_of: Mapping[str, int], source: str) -> list[str]:
    """A task with ``replicas: N`` becomes tasks ``<id>.r1`` .. ``<id>.rN`` when the run
    starts (``maos.consensus``): those ids must be valid and not be other tasks' ids."""
    problems: list[str] = []
    for index, task in enumerate(plan.tasks):
        if task.quorum is not None and task.quorum > task.replicas:
            problems.append(
                problem_line(
                    source,
                    f"quorum {task.quorum} is more than replicas ({task.replicas})",
                    index=index,
                    task_id=task.id,
                    field="quorum",
                )
            )
        if task.replicas <= 1 or task.replica_of is not None:
            continue
        names = [f"{task.id}.r{number}" for number in range(1, task.replicas + 1)]
        if not is_valid_task_id(names[-1]):
            problems.append(
                problem_line(
                    source,
                    f"its replicas' ids ('{names[-1]}') would be longer than {TASK_ID_MAX_CHARS} "
                    "characters; shorten the id",
                    index=index,
                    task_id=task.id,
                    field="id",
                )
            )
            continue
        for name in names:
            other = index_of.get(name)
            if other is not None and plan.tasks[other].replica_of != task.id:
                problems.append(
                    problem_line(
                        source,
                        f"replica '{name}' of this task would have the id of tasks[{other}]; "
                        "rename one of them",
                        index=index,
                        task_id=task.id,
                        field="replicas",
                    )
                )
    return problems


def _show_cycle(cycle: list[str]) -> str:
    """``a -> b -> c -> a``; a very long cycle keeps its start and its end."""
    if len(cycle) > _MAX_CYCLE_SHOWN:
        hidden = len(cycle) - _MAX_CYCLE_SHOWN
        cycle = [*cycle[: _MAX_CYCLE_SHOWN - 5], f"... ({hidden} more) ...", *cycle[-5:]]
    return " -> ".join(cycle)


def find_cycles(edges: Mapping[str, Sequence[str]], order: Mapping[str, int]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one node, earliest first.

    ``edges`` maps each node to its successors (here: a task to its dependencies; self-loops
    are ignored); ``order`` gives each node's position, used to start each cycle at the
    component's earliest node and to sort the cycles. Each cycle repeats its first node at
    the end: ``["a", "b", "a"]``.
    """
    cycles: list[list[str]] = []
    for component in _strongly_connected(edges):
        if len(component) < 2:
            continue
        start = min(component, key=order.__getitem__)
        cycles.append(_shortest_cycle(edges, start, component))
    cycles.sort(key=lambda cycle: order[cycle[0]])
    return cycles


def _strongly_connected(edges: Mapping[str, Sequence[str]]) -> list[set[str]]:
    """Tarjan's algorithm without recursion."""
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    counter = 0
    for root in edges:
        if root in index_of:
            continue
        # Each frame: (node, position of the next successor to look at).
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index_of[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            successors = edges[node]
            descended = False
            while position < len(successors):
                succ = successors[position]
                position += 1
                if succ not in index_of:
                    work.append((node, position))
                    work.append((succ, 0))
                    descended = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index_of[succ])
            if descended:
                continue
            if low[node] == index_of[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def _shortest_cycle(edges: Mapping[str, Sequence[str]], start: str, component: set[str]) -> list[str]:
    """Breadth-first search inside ``component`` for the shortest way from ``start`` back to it."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in edges[node]:
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                path.reverse()
                return [*path, start]
            if succ in component and succ not in parent:
                parent[succ] = node
                queue.append(succ)
    raise AssertionError(f"no cycle through {start!r} in its own strongly connected component")
