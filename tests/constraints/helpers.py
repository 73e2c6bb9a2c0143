"""Reading a run's log back: when each attempt held its resources."""

from __future__ import annotations

from dataclasses import dataclass

from maos.eventlog import EventLog
from maos.events import (
    DeadlockFound,
    Event,
    TaskAssigned,
    TaskCancelled,
    TaskDeadlinePassed,
    TaskFailed,
    TaskRequeued,
    TaskSucceeded,
)
from maos.store.base import Store


@dataclass(frozen=True)
class Held:
    """One attempt's hold: from its ``task_assigned`` to the event that ended it (as applied)."""

    task_id: str
    attempt: int
    start: float
    end: float


async def events(store: Store, run_id: str) -> list[Event]:
    return [event async for _, event in EventLog(store, run_id).iterate()]


def holds(log: list[Event]) -> list[Held]:
    """Every attempt's hold, from the log: from its ``task_assigned`` to the later of the
    event that ended it and its agent's own end report (a stopped agent reports late; an
    attempt still open ends at +inf)."""
    starts: dict[tuple[str, int], float] = {}
    ends: dict[tuple[str, int], float] = {}
    current: dict[str, int] = {}

    def end(key: tuple[str, int], ts: float) -> None:
        ends[key] = max(ends.get(key, ts), ts)

    for event in log:
        if isinstance(event, TaskAssigned):
            starts[(event.task_id, event.attempt)] = event.ts
            current[event.task_id] = event.attempt
        elif isinstance(event, TaskSucceeded | TaskFailed | TaskRequeued):
            end((event.task_id, event.attempt), event.ts)
        elif isinstance(event, TaskCancelled | TaskDeadlinePassed) and event.task_id in current:
            end((event.task_id, current[event.task_id]), event.ts)
        elif isinstance(event, DeadlockFound) and event.victim in current:
            end((event.victim, current[event.victim]), event.ts)
    return [
        Held(task, attempt, start, ends.get((task, attempt), float("inf")))
        for (task, attempt), start in starts.items()
    ]


def overlapping(intervals: list[Held]) -> list[tuple[Held, Held]]:
    ordered = sorted(intervals, key=lambda held: held.start)
    return [
        (first, second)
        for n, first in enumerate(ordered)
        for second in ordered[n + 1 :]
        if second.start < first.end
    ]
