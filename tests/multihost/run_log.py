"""A run's event log and the store's run index, read from inside a host's namespace.

The test process stays in the root namespace, which cannot reach the test's subnet: each
read runs on a thread that has entered a host's namespace (``netns.in_netns``), with an event
loop and a store connection of its own, opened and closed for that one read. The log is
folded here with MAOS's own reducer, event by event, so a test sees which events were
applied and which were refused (a stale report, an attempt assigned twice) exactly as
``maos status`` and a resuming orchestrator do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TypeVar

from maos.eventlog import EventLog
from maos.events import Event, RunFinished, apply
from maos.liveness import run_records
from maos.model import RunRecord, RunState, TaskState
from maos.store import open_store

from .netns import Host, in_netns

T = TypeVar("T")

MAX_EVENTS = 100_000
"""More than any test run writes: the log is read in one go."""


@dataclass(frozen=True, slots=True)
class Logged:
    """One entry of the log: its id, its event, and whether the reducer applied it."""

    id: str
    event: Event
    applied: bool


@dataclass(frozen=True, slots=True)
class RunLog:
    """A run's log as read at one moment, and its fold."""

    run_id: str
    entries: tuple[Logged, ...]
    state: RunState

    def of_type(self, kind: type[T], *, applied_only: bool = False) -> list[tuple[int, T]]:
        """``(position, event)`` of every event of type ``kind``, in log order."""
        return [
            (position, entry.event)
            for position, entry in enumerate(self.entries)
            if isinstance(entry.event, kind) and (entry.applied or not applied_only)
        ]

    @property
    def finished(self) -> RunFinished | None:
        """The run's ``run_finished`` (the applied one), or None while it runs."""
        found = self.of_type(RunFinished, applied_only=True)
        return found[0][1] if found else None

    def in_state(self, state: TaskState) -> set[str]:
        return {task_id for task_id, task in self.state.tasks.items() if task.state is state}


def read_log(host: Host, store_url: str, run_id: str) -> RunLog:
    """The whole log of ``run_id``, read from ``host``."""

    async def read() -> list[tuple[str, Event]]:
        store = await open_store(store_url)
        try:
            return await EventLog(store, run_id).read("0", count=MAX_EVENTS)
        finally:
            await store.close()

    events = in_netns(host.netns, lambda: asyncio.run(read()))
    state = RunState()
    entries: list[Logged] = []
    for event_id, event in events:
        apply(state, event, event_id)
        entries.append(Logged(event_id, event, state.applied))
    return RunLog(run_id, tuple(entries), state)


def run_index(host: Host, store_url: str) -> list[RunRecord]:
    """The store's run index (``maos runs``' records), newest first, read from ``host``."""

    async def read() -> list[RunRecord]:
        store = await open_store(store_url)
        try:
            return await run_records(store)
        finally:
            await store.close()

    return in_netns(host.netns, lambda: asyncio.run(read()))
