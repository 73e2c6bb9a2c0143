"""Deadlock detection and resolution (FR-1.2): the run's wait-for graph and its cycles.

Plans are acyclic (``maos.plan.validate``) and so is every task an agent adds
(``maos.dynamic``), so dependencies alone never deadlock. What can: an agent that **waits**
at run time for another task (``maos task wait``: a ``task_waiting`` event) while its own
attempt holds an agent and resources. The wait-for graph is derived from the run's events
(its fold, ``RunState``), with an edge ``t -> u`` when ``t`` cannot go on until ``u`` ends:

- ``waits``: the running attempt of ``t`` waits for ``u`` (``task_waiting``);
- ``depends``: ``t`` is PENDING and ``u`` is one of its unfinished dependencies;
- ``resource``: ``t`` is READY and needs units of a resource that ``u``'s attempt holds,
  which the free units do not cover;
- ``agent``: ``t`` is READY, every agent of the run is busy and ``u`` holds one.

A cycle means none of its tasks can ever go on. So does a need no capacity can meet (more
units than the capacity, or a resource not declared): a one-task "cycle". ``find`` returns
the first one (deterministic: tasks in plan order); ``resolve`` says what to do, by
priority: the lowest-priority task on the cycle (on a tie, the one latest in the plan: the
most recently added) is the victim. A victim not started yet fails for good; a running one
has its attempt stopped and waits again (it is requeued: its agent and resources are freed,
and the attempt does not count against ``max_attempts``), unless it was requeued for a
deadlock ``MAX_REQUEUES`` times already, then it fails. With ``--on-deadlock fail`` the run
stops instead, naming the cycle.

Only live waits can close a cycle (dependencies are acyclic and READY tasks wait only on
live ones), so without any the search is one pass over the READY tasks for unmeetable needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from maos.model import RunState, TaskState
from maos.resources import LIVE, holders, shortfall
from maos.scheduler import PlanIndex

__all__ = ["MAX_REQUEUES", "Deadlock", "Resolution", "find", "live_waits", "resolve", "unmeetable_needs"]

MAX_REQUEUES = 3
"""Deadlock requeues of one task before it is failed instead (no livelock)."""


@dataclass(frozen=True, slots=True)
class Deadlock:
    """A cycle of the wait-for graph: ``cycle[i]`` waits for ``cycle[i + 1]`` (and the last
    for the first) because of ``edges[i]``. One task and one edge: a need never met."""

    cycle: tuple[str, ...]
    edges: tuple[str, ...]

    def describe(self) -> str:
        return " -> ".join((*self.cycle, self.cycle[0])) + " (" + "; ".join(self.edges) + ")"


@dataclass(frozen=True, slots=True)
class Resolution:
    victim: str | None
    action: Literal["fail_task", "requeue_task", "fail_run"]


def live_waits(state: RunState) -> dict[str, list[str]]:
    """Running attempts' waits on tasks that have not ended: waiter -> awaited."""
    result: dict[str, list[str]] = {}
    for key, on in state.waits.items():
        task_id, _, attempt = key.rpartition(":")
        run = state.tasks.get(task_id)
        if run is None or run.state not in LIVE or str(run.attempts) != attempt:
            continue
        pending = [
            item for item in on if (other := state.tasks.get(item)) is not None and not other.state.terminal
        ]
        if pending:
            result[task_id] = pending
    return result


def unmeetable_needs(index: PlanIndex) -> dict[str, str]:
    """Task -> why no capacity can ever meet its need (more units than the capacity, or an
    undeclared resource). Depends on the plan only: compute it once per plan index."""
    limits = {name: limit.capacity for name, limit in index.plan.resources.items()}
    result: dict[str, str] = {}
    for task_id in index.ids:
        for name, units in index.specs[task_id].resources.items():
            capacity = limits.get(name)
            if capacity is None:
                result[task_id] = f"{task_id} needs {name}:{units}, which is not a declared resource"
                break
            if units > capacity:
                result[task_id] = f"{task_id} needs {name}:{units} but the capacity of {name} is {capacity}"
                break
    return result


def _unmeetable(state: RunState, index: PlanIndex, needs: Mapping[str, str]) -> Deadlock | None:
    for task_id in sorted(needs, key=index.order.__getitem__):
        run = state.tasks.get(task_id)
        if run is not None and run.state in (TaskState.PENDING, TaskState.READY, TaskState.RETRY_WAIT):
            return Deadlock((task_id,), (needs[task_id],))
    return None


def find(
    state: RunState,
    index: PlanIndex,
    *,
    free_resources: Mapping[str, int],
    free_agents: int,
    needs: Mapping[str, str] | None = None,
) -> Deadlock | None:
    """The first deadlock of the run, or None. ``free_resources``: free units now (as
    ``scheduler.decide`` gets them); ``free_agents``: agents with no task; ``needs``:
    ``unmeetable_needs(index)``, if the caller keeps it."""
    if state.status.finished:
        return None
    if needs is None:
        needs = unmeetable_needs(index) if index.depth else {}
    unmeetable = _unmeetable(state, index, needs) if needs else None
    if unmeetable is not None:
        return unmeetable
    waits = live_waits(state)
    if not waits:
        return None
    # A READY task short of units of a resource waits for every holder of it, one short of
    # an agent for every busy task: such edges go through one node per resource (and one for
    # the agents), so that the graph has O(tasks) edges, not O(ready x busy).
    edges: dict[str, list[tuple[str, str]]] = {}
    busy = sorted(task_id for task_id, run in state.tasks.items() if run.state in LIVE)
    for task_id in index.ids:
        run = state.tasks.get(task_id)
        if run is None:
            continue
        out: list[tuple[str, str]] = []
        if task_id in waits:
            out += [(on, f"{task_id} waits for {on}") for on in waits[task_id]]
        elif run.state is TaskState.PENDING:
            out += [
                (dep, f"{task_id} depends on {dep}")
                for dep in index.deps[task_id]
                if not state.tasks[dep].state.terminal
            ]
        elif run.state is TaskState.READY:
            short = shortfall(index.specs[task_id].resources, free_resources)
            for name in sorted(short):
                node = f"{_NEED}{name}"
                if node not in edges:
                    edges[node] = [
                        (holder, f" held by {holder}") for holder in holders(state, index.specs, [name])
                    ]
                out.append((node, f"{task_id} needs {name}"))
            if not short and free_agents <= 0:
                if _AGENTS not in edges:
                    edges[_AGENTS] = [(holder, f"; {holder} holds one") for holder in busy]
                out.append((_AGENTS, f"{task_id} needs an agent"))
        if out:
            edges[task_id] = out
    found = _first_cycle(edges, index)
    return None if found is None else _without_needs(*found)


_NEED = "\x00"  # a node for what READY tasks need (never a task id: those have no NUL)
_AGENTS = f"{_NEED}agents"


def _without_needs(cycle: tuple[str, ...], reasons: tuple[str, ...]) -> Deadlock:
    """The cycle of tasks only: ``t -> (need) -> u`` is ``t -> u``, because ``t needs db held by u``."""
    first = next(n for n, node in enumerate(cycle) if not node.startswith(_NEED))
    cycle, reasons = cycle[first:] + cycle[:first], reasons[first:] + reasons[:first]
    tasks: list[str] = []
    why: list[str] = []
    for node, reason in zip(cycle, reasons, strict=True):
        if node.startswith(_NEED):
            why[-1] += reason  # a need is always entered from a task
        else:
            tasks.append(node)
            why.append(reason)
    return Deadlock(tuple(tasks), tuple(why))


def _first_cycle(
    edges: Mapping[str, list[tuple[str, str]]], index: PlanIndex
) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """Iterative depth-first search in plan order; the first back edge closes the cycle:
    its nodes and the reason of each one's edge to the next."""
    color: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in index.ids:
        if root not in edges or color.get(root):
            continue
        path: list[str] = []
        why: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, position = stack.pop()
            if position == 0:
                color[node] = 1
                path.append(node)
            out = edges.get(node, [])
            if position < len(out):
                stack.append((node, position + 1))
                target, reason = out[position]
                if color.get(target) == 1:
                    start = path.index(target)
                    return tuple(path[start:]), (*why[start:], reason)
                if not color.get(target):
                    why.append(reason)
                    stack.append((target, 0))
                continue
            color[node] = 2
            path.pop()
            if why and len(why) > len(path) - 1:
                why.pop()
    return None


def resolve(
    deadlock: Deadlock,
    state: RunState,
    index: PlanIndex,
    *,
    on_deadlock: Literal["resolve", "fail"],
    requeues: Mapping[str, int],
) -> Resolution:
    """What to do about ``deadlock`` (module docstring). ``requeues``: task -> deadlock
    requeues so far."""
    if on_deadlock == "fail":
        return Resolution(None, "fail_run")
    victim = min(deadlock.cycle, key=lambda task_id: (index.specs[task_id].priority, -index.order[task_id]))
    running = state.tasks[victim].state in LIVE
    if running and requeues.get(victim, 0) < MAX_REQUEUES:
        return Resolution(victim, "requeue_task")
    return Resolution(victim, "fail_task")
