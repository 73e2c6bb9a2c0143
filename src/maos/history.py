"""Outcomes of agent roles on task kinds, kept in the store across runs.

This is where the 0.3 *history* part of the fitness score (``scheduler.History``) comes from:
the orchestrator loads it when a run starts (``load_history``) and, when the run has finished,
adds the run's attempts to it (``record_outcomes``).

**What counts.** Every attempt that ended in the run's log: a ``task_succeeded`` is a success,
a ``task_failed`` (retried later or not) a failure, with the attempt's ``duration_s``. Attempts
of a stale report (an attempt that is no longer the task's current one), attempts given back
with ``task_requeued`` (abandoned through no fault of the agent) and attempts still in flight
when the run was cancelled count for nothing.

**Whose outcome.** The role of the agent that ran the attempt (``task_*.agent_id`` looked up
in the run's agents), also when that agent is a generalist (``role: general``) standing in for
a specialist, and the task's ``task_kind``. That is exactly the pair the scheduler scores
(``History.success_rate(agent.role, task.task_kind)``), so every outcome recorded moves the
score of the agents that produced it, and a specialist's record is never mixed with what
generalists did in its place.

**Stored as** one JSON document under ``keys.HISTORY``: the history and the ids of the runs
already recorded (the newest ``MAX_RECORDED_RUNS``). Recording reads it, adds the run, and
writes it back with compare-and-set, retrying with exponential backoff and jitter when another
orchestrator wrote in between; a run already in the list is not counted again. One document
keeps the outcomes and the "already recorded" mark in one atomic write: neither can land
without the other.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maos.errors import StoreDataError
from maos.eventlog import EventLog
from maos.events import (
    Event,
    RunRestored,
    RunStarted,
    TaskAdded,
    TaskAssigned,
    TaskFailed,
    TaskRequeued,
    TaskSucceeded,
)
from maos.model import AgentSpec, RunState, TaskState
from maos.scheduler import History, Outcomes
from maos.store import keys
from maos.store.base import Store, Versioned
from maos.store.cas import cas_update

__all__ = [
    "MAX_RECORDED_RUNS",
    "Attempt",
    "AttemptCounter",
    "HistoryRecord",
    "attempts_from_state",
    "load_history",
    "load_record",
    "merge_attempts",
    "record_outcomes",
    "summary_rows",
]

log = logging.getLogger("maos.history")

MAX_RECORDED_RUNS = 1000
"""Run ids remembered for idempotency (~25 bytes each). Recording a run again is only a
concern for recent runs (a resume of a finished run, a retry after a crash)."""

_CAS_ATTEMPTS = 30
_BACKOFF_BASE_S = 0.005
_BACKOFF_MAX_S = 0.5


class HistoryRecord(BaseModel):
    """The stored document: the history and the runs it already contains."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    history: History = Field(default_factory=History)
    runs: tuple[str, ...] = Field(default=(), description="recorded run ids, oldest first")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One finished attempt: the role that ran it, the task's kind, and how it went."""

    role: str
    kind: str
    succeeded: bool
    duration_s: float


@dataclass
class AttemptCounter:
    """Folds a run's events into its finished attempts (see the module docstring).

    Same staleness rule as ``maos.events.apply``: an outcome counts only for the task's
    current attempt (the last ``task_assigned``), and each attempt counts once.
    """

    agents: dict[str, AgentSpec] = field(default_factory=dict)
    """Agent id -> spec; ``run_started`` adds the run's agents."""
    attempts: list[Attempt] = field(default_factory=list, init=False)
    started: bool = field(default=False, init=False)
    """Whether a ``run_started`` (or a rebuild's ``run_restored``) was seen (False: the log is
    missing)."""
    unknown_agents: set[str] = field(default_factory=set, init=False)
    _kinds: dict[str, str] = field(default_factory=dict, init=False)
    _current: dict[str, int] = field(default_factory=dict, init=False)
    _done: set[tuple[str, int]] = field(default_factory=set, init=False)

    def observe(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.started = True
            self.agents.update((agent.id, agent) for agent in event.agents)
            self._kinds.update((task.id, task.task_kind) for task in event.plan.tasks)
        elif isinstance(event, RunRestored):  # the log starts again from a checkpoint (ADR 0012)
            try:
                restored = RunState.model_validate_json(event.state_json)
            except ValueError:
                return
            self.started = True
            self.agents.update(restored.agents)
            if restored.plan is not None:
                self._kinds.update((task.id, task.task_kind) for task in restored.plan.tasks)
            # what the lost log told, as far as the checkpoint's state can
            finished = {task_id for task_id, task in restored.tasks.items() if task.state.terminal}
            self._done.update((task_id, restored.tasks[task_id].attempts) for task_id in finished)
            self.attempts.extend(attempts_from_state(restored))
        elif isinstance(event, TaskAdded):
            self._kinds[event.task.id] = event.task.task_kind
        elif isinstance(event, TaskAssigned):
            self._current[event.task_id] = event.attempt
        elif isinstance(event, TaskRequeued):
            self._done.add((event.task_id, event.attempt))
        elif isinstance(event, TaskSucceeded | TaskFailed):
            attempt = (event.task_id, event.attempt)
            if self._current.get(event.task_id) != event.attempt or attempt in self._done:
                return
            self._done.add(attempt)
            kind = self._kinds.get(event.task_id)
            agent = self.agents.get(event.agent_id)
            if kind is None or agent is None:
                self.unknown_agents.add(event.agent_id)
                return
            self.attempts.append(
                Attempt(agent.role, kind, isinstance(event, TaskSucceeded), max(event.duration_s, 0.0))
            )


def attempts_from_state(state: RunState) -> list[Attempt]:
    """The attempts a finished ``RunState`` alone can tell, when its log is not available.

    An approximation: the state keeps only each task's last agent and last duration, so all
    of a task's failed attempts are put on that agent's role, and only the last attempt has
    a duration (the others count 0 s).
    """
    if state.plan is None:
        return []
    kinds = {task.id: task.task_kind for task in state.plan.tasks}
    found: list[Attempt] = []
    for task_id, run in state.tasks.items():
        agent = state.agents.get(run.agent_id) if run.agent_id is not None else None
        if agent is None or task_id not in kinds:
            continue
        last_s = max(run.duration_s or 0.0, 0.0)
        succeeded = run.state is TaskState.SUCCEEDED
        for number in range(run.failures):
            is_last = not succeeded and number == run.failures - 1
            found.append(Attempt(agent.role, kinds[task_id], False, last_s if is_last else 0.0))
        if succeeded:
            found.append(Attempt(agent.role, kinds[task_id], True, last_s))
    return found


def merge_attempts(history: History, attempts: Iterable[Attempt]) -> History:
    """``history`` with ``attempts`` added (one pass, one new ``History``)."""
    totals: dict[tuple[str, str], tuple[int, int, float]] = {
        (item.role, item.kind): (item.successes, item.attempts, item.total_duration_s)
        for item in history.outcomes
    }
    for attempt in attempts:
        key = (attempt.role, attempt.kind)
        successes, count, duration_s = totals.get(key, (0, 0, 0.0))
        totals[key] = (successes + int(attempt.succeeded), count + 1, duration_s + attempt.duration_s)
    return History(
        outcomes=tuple(
            Outcomes(role=role, kind=kind, successes=s, attempts=n, total_duration_s=d)
            for (role, kind), (s, n, d) in totals.items()
        )
    )


# --------------------------------------------------------------------------- store


def _decode(value: bytes) -> HistoryRecord:
    try:
        return HistoryRecord.model_validate_json(value)
    except ValidationError as exc:
        raise StoreDataError(f"the history under {keys.HISTORY!r} cannot be decoded: {exc}") from exc


async def load_record(store: Store) -> HistoryRecord:
    """The stored document (empty when nothing was recorded yet)."""
    found = await store.get(keys.HISTORY)
    return HistoryRecord() if found is None else _decode(found.value)


async def load_history(store: Store) -> History:
    """The outcomes recorded so far, for ``scheduler.decide``; empty on a new store.

    Raises ``StoreDataError`` if the stored document is corrupt (it is never silently reset).
    """
    return (await load_record(store)).history


async def _attempts_of_run(store: Store, state: RunState) -> list[Attempt]:
    counter = AttemptCounter(agents=dict(state.agents))
    async for _, event in EventLog(store, state.run_id).iterate():
        counter.observe(event)
    if not counter.started:
        log.warning("run %s: no event log in the store; history from the run state", state.run_id)
        return attempts_from_state(state)
    if counter.unknown_agents:
        log.warning(
            "run %s: outcomes of unknown agents not recorded: %s",
            state.run_id,
            ", ".join(sorted(counter.unknown_agents)),
        )
    return counter.attempts


async def record_outcomes(
    store: Store,
    state: RunState,
    *,
    counted: AttemptCounter | None = None,
    rng: random.Random | None = None,
) -> History:
    """Add the attempts of the finished run ``state`` to the stored history; return the result.

    ``counted``: a counter that observed the run's whole log from its ``run_started`` (the
    orchestrator that started the run keeps one), so the log need not be read again. Without
    one, reads the run's log from ``store`` (falling back on ``attempts_from_state`` when the
    log is gone). Idempotent per run id; safe to call from several processes at once. Raises
    ``ValueError`` for a run that has not finished, ``StoreDataError`` for a corrupt stored
    document and ``StateConflict`` if other writers kept winning for ``_CAS_ATTEMPTS`` tries.
    """
    if not state.run_id:
        raise ValueError("the run state has no run id (no run_started event was applied)")
    if not state.status.finished:
        raise ValueError(f"run {state.run_id} has not finished (status {state.status.value})")
    if counted is not None and counted.started:
        attempts = counted.attempts
    else:
        attempts = await _attempts_of_run(store, state)
    return await _record(store, state.run_id, attempts, rng or random.Random())


async def _record(store: Store, run_id: str, attempts: list[Attempt], rng: random.Random) -> History:
    seen: list[History] = []

    def change(found: Versioned | None) -> bytes | None:
        record = HistoryRecord() if found is None else _decode(found.value)
        if run_id in record.runs:
            seen[:] = [record.history]
            return None  # recorded already: nothing to write
        history = merge_attempts(record.history, attempts)
        seen[:] = [history]
        return (
            HistoryRecord(history=history, runs=(*record.runs, run_id)[-MAX_RECORDED_RUNS:])
            .model_dump_json()
            .encode()
        )

    written = await cas_update(
        store,
        keys.HISTORY,
        change,
        what=f"run {run_id}: the outcome history {keys.HISTORY!r}",
        attempts=_CAS_ATTEMPTS,
        backoff_s=_BACKOFF_BASE_S,
        max_backoff_s=_BACKOFF_MAX_S,
        rng=rng,
    )
    if written is None:
        log.info("run %s: outcomes already in the history", run_id)
    else:
        log.info("run %s: %d attempt(s) added to the history", run_id, len(attempts))
    return seen[0]


def summary_rows(history: History) -> list[dict[str, object]]:
    """One row per (role, kind), sorted, for ``maos agents stats``: raw and scored rates."""
    return [
        {
            "role": item.role,
            "kind": item.kind,
            "attempts": item.attempts,
            "successes": item.successes,
            "success_rate": item.successes / item.attempts if item.attempts else None,
            "mean_duration_s": item.mean_duration_s,
            "history_score": item.success_rate,
        }
        for item in history.outcomes
    ]
