"""Timing dependencies (FR-1.2): not before a time, a delay after a dependency, a deadline.

Pure: the run state and ``now`` in, decisions out; the orchestrator reads its clock and
does the writing. Three task fields (``maos.model.TaskSpec``):

- ``not_before``: a time (the task does not start before it), or ``{delay_s, task}``: that
  many seconds after dependency ``task`` succeeded (without ``task``: after the last of the
  task's dependencies succeeded, or after the run started for a task without any);
- ``after: [{task, delay_s}]``: each ``task`` is a dependency, and this one starts at least
  ``delay_s`` seconds after it succeeded;
- ``deadline_s`` with ``on_deadline``: the task must have finished ``deadline_s`` seconds
  after the run started. Past it, a task that has not finished fails for good (``fail``,
  the default) or is skipped (``skip``; tasks that depend on it are skipped too, and none of
  them fails the run: ``excused``). A running attempt is stopped.

A task whose dependencies have all succeeded but whose earliest start lies ahead stays
PENDING (it is not ready: it may not start) until ``due`` says it is; ``next_wakeup`` is the
earliest time something here changes, so the orchestrator's loop sleeps until then at most.
Times are wall-clock seconds, the clock events are stamped with: a dependency's success is
its ``task_succeeded``'s time, the run's start its ``run_started``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from maos.events import DEADLINE_REASON
from maos.model import RunState, StartDelay, TaskSpec, TaskState, utc_timestamp

__all__ = ["deadline_at", "due", "earliest_start", "excused", "expired", "has_timing", "next_wakeup"]


def has_timing(spec: TaskSpec) -> bool:
    return spec.not_before is not None or bool(spec.after) or spec.deadline_s is not None


def earliest_start(spec: TaskSpec, state: RunState) -> float | None:
    """When ``spec`` may start at the earliest, by its ``not_before`` and ``after``; None when
    it has no such constraint. Call it once its dependencies have all succeeded (it reads
    their success times); a dependency without one counts as just now (never earlier)."""
    times: list[float] = []
    tasks = state.tasks

    def succeeded_at(task_id: str) -> float:
        run = tasks.get(task_id)
        return run.finished_at if run is not None and run.finished_at is not None else float("inf")

    start = spec.not_before
    if isinstance(start, datetime):
        times.append(utc_timestamp(start))
    elif isinstance(start, StartDelay):
        if start.task is not None:
            base = succeeded_at(start.task)
        elif spec.depends_on:
            base = max(succeeded_at(dep) for dep in spec.depends_on)
        else:
            base = state.started_at if state.started_at is not None else float("inf")
        times.append(base + start.delay_s)
    for item in spec.after:
        times.append(succeeded_at(item.task) + item.delay_s)
    return max(times) if times else None


def deadline_at(spec: TaskSpec, state: RunState) -> float | None:
    if spec.deadline_s is None or state.started_at is None:
        return None
    return state.started_at + spec.deadline_s


def due(
    state: RunState, specs: Mapping[str, TaskSpec], candidates: Iterable[str], now: float
) -> tuple[list[str], dict[str, float]]:
    """Split PENDING ``candidates`` whose dependencies are done into those that may start now
    (in the given order) and those held back, with the time each may start."""
    ready: list[str] = []
    later: dict[str, float] = {}
    for task_id in candidates:
        spec = specs[task_id]
        at = earliest_start(spec, state) if has_timing(spec) else None
        if at is None or at <= now:
            ready.append(task_id)
        else:
            later[task_id] = at
    return ready, later


def expired(state: RunState, specs: Mapping[str, TaskSpec], timed: Iterable[str], now: float) -> list[str]:
    """Tasks among ``timed`` (those with a deadline) not finished at their deadline, in order."""
    result: list[str] = []
    for task_id in timed:
        run = state.tasks.get(task_id)
        at = deadline_at(specs[task_id], state)
        if run is not None and not run.state.terminal and at is not None and at <= now:
            result.append(task_id)
    return result


def next_wakeup(
    state: RunState, specs: Mapping[str, TaskSpec], held_back: Mapping[str, float], timed: Iterable[str]
) -> float | None:
    """The earliest time a held-back task may start or a deadline passes; None if none."""
    times = list(held_back.values())
    for task_id in timed:
        run = state.tasks.get(task_id)
        at = deadline_at(specs[task_id], state)
        if run is not None and not run.state.terminal and at is not None:
            times.append(at)
    return min(times) if times else None


def excused(state: RunState, order: Iterable[str], deps: Mapping[str, tuple[str, ...]]) -> set[str]:
    """Tasks that do not fail the run although they did not succeed: those a deadline
    skipped (``on_deadline: skip``), and those skipped only because of such tasks. ``order``
    must list every dependency before its dependents (plan order does)."""
    result: set[str] = set()
    for task_id in order:
        run = state.tasks.get(task_id)
        if run is None or run.state is not TaskState.SKIPPED:
            continue
        if run.reason == DEADLINE_REASON:
            result.add(task_id)
            continue
        missing = [dep for dep in deps.get(task_id, ()) if state.tasks[dep].state is not TaskState.SUCCEEDED]
        if missing and all(dep in result for dep in missing):
            result.add(task_id)
    return result
