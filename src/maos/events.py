"""The event log: append, read, replay, and the reducer that folds events into ``RunState``.

Every state change of a run is an event appended to the run's stream in the store
(``store.keys.events``). ``RunState`` is nothing but ``fold(apply, events)``: the orchestrator
builds its own view by reading the log back, so a replay of a finished run's log yields
exactly the state the run ended with.

``apply`` is deterministic and does no I/O; for speed on 10,000-task plans it updates the
given state in place and returns it (callers that need the old state keep a copy).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import assert_never

from maos.errors import IllegalTransition, RunNotFound, StoreDataError
from maos.model import (
    AgentAnomaly,
    AgentApiRetry,
    AgentOutput,
    AgentStats,
    CheckpointTaken,
    CircuitChanged,
    ConsensusDecided,
    ConsensusVote,
    DoorRefused,
    Event,
    MessagesAcked,
    MessageSent,
    MessagesRead,
    ResultPublished,
    RunCancelling,
    RunDraining,
    RunFinished,
    RunStarted,
    RunState,
    RunStatus,
    StateWritten,
    TaskAdded,
    TaskAddRefused,
    TaskAddRequested,
    TaskAssigned,
    TaskCancelled,
    TaskFailed,
    TaskReady,
    TaskRequeued,
    TaskRetried,
    TaskRun,
    TaskSkipped,
    TaskStarted,
    TaskState,
    TaskSucceeded,
    TaskWarning,
    TopicSubscribed,
    Usage,
    event_from_json,
    event_to_json,
)
from maos.store import keys
from maos.store.base import Entry, Store

log = logging.getLogger("maos.events")


def _move(state: RunState, task_id: str, new: TaskState) -> TaskRun:
    try:
        task = state.tasks[task_id]
    except KeyError:
        raise IllegalTransition(f"event for unknown task {task_id!r}") from None
    task.state.check(new)
    task.state = new
    return task


def _task(state: RunState, task_id: str) -> TaskRun:
    try:
        return state.tasks[task_id]
    except KeyError:
        raise IllegalTransition(f"event for unknown task {task_id!r}") from None


def _add_usage(total: Usage | None, more: Usage | None) -> Usage | None:
    if more is None:
        return total
    return more if total is None else total + more


def _stale(state: RunState, task_id: str, attempt: int) -> bool:
    """An event of an attempt that is no longer the task's current one.

    Delivery is at-least-once: a worker presumed dead may still report an old attempt after
    the task was handed to someone else. Such reports change nothing (``task_id:attempt`` is
    the idempotency key), so a task succeeds exactly once in the state.
    """
    task = state.tasks.get(task_id)
    return task is not None and attempt != task.attempts


def apply(state: RunState, event: Event, event_id: str | None = None) -> RunState:
    """Fold one event into ``state`` (in place) and return it."""
    if isinstance(
        event, TaskStarted | TaskSucceeded | TaskFailed | TaskRequeued | TaskWarning | AgentApiRetry
    ) and _stale(state, event.task_id, event.attempt):
        log.debug("ignoring %s of stale attempt %d of %s", event.type, event.attempt, event.task_id)
    else:
        _apply(state, event)
    state.event_count += 1
    if event_id is not None:
        state.last_event_id = event_id
    return state


def _apply(state: RunState, event: Event) -> None:
    match event:
        case RunStarted():
            state.run_id = event.run_id
            state.plan = event.plan
            state.config = event.config
            state.agents = {agent.id: agent for agent in event.agents}
            state.tasks = {task.id: TaskRun() for task in event.plan.tasks}
            state.status = RunStatus.RUNNING
            state.started_at = event.ts
        case TaskReady():
            task = _move(state, event.task_id, TaskState.READY)
            task.ready_at = event.ts
            task.retry_at = None
            task.agent_id = None
        case TaskAssigned():
            task = _move(state, event.task_id, TaskState.ASSIGNED)
            task.agent_id = event.agent_id
            task.attempts = event.attempt
        case TaskStarted():
            task = _move(state, event.task_id, TaskState.RUNNING)
            task.pid = event.pid
            task.worker = event.worker
            task.started_at = event.ts
            if event.session_id is not None:
                task.session_id = event.session_id
        case AgentOutput():
            pass  # transcripts are read from the log directly (maos logs, dashboard)
        case TaskWarning():
            _task(state, event.task_id).warnings.append(event.text)
        case AgentApiRetry():
            _task(state, event.task_id).api_retries += 1
        case TaskSucceeded():
            task = _move(state, event.task_id, TaskState.SUCCEEDED)
            task.finished_at = event.ts
            task.duration_s = event.duration_s
            task.exit_code = event.exit_code
            task.output_path = event.output_path
            task.pid = None
            task.reason = ""
            task.usage = _add_usage(task.usage, event.usage)
        case TaskFailed():
            assert state.plan is not None
            spec = state.plan.task(event.task_id)
            task = state.tasks[event.task_id]
            exhausted = event.final or task.failures + 1 >= spec.max_attempts
            task = _move(state, event.task_id, TaskState.FAILED if exhausted else TaskState.RETRY_WAIT)
            task.failures += 1
            task.finished_at = event.ts
            task.duration_s = event.duration_s
            task.exit_code = event.exit_code
            task.reason = event.reason
            task.stderr_tail = event.stderr_tail
            task.pid = None
            task.retry_at = None
            task.usage = _add_usage(task.usage, event.usage)
        case AgentStats():
            task = state.tasks[event.task_id]
            if task.attempts == event.attempt:
                task.cpu_percent = event.cpu_percent
                task.rss_bytes = event.rss_bytes
        case AgentAnomaly():
            state.tasks[event.task_id].anomalies.append(f"{event.kind}: {event.detail} ({event.action})")
        case TaskRetried():
            task = state.tasks[event.task_id]
            if task.state is not TaskState.RETRY_WAIT:
                raise IllegalTransition(f"task_retried for {event.task_id!r} in state {task.state.value}")
            task.retry_at = event.retry_at
        case TaskRequeued():
            task = _move(state, event.task_id, TaskState.READY)
            task.ready_at = event.ts
            task.agent_id = None
            task.pid = None
            task.reason = event.reason
        case TaskSkipped():
            task = _move(state, event.task_id, TaskState.SKIPPED)
            task.reason = event.because
            task.finished_at = event.ts
        case TaskCancelled():
            task = _move(state, event.task_id, TaskState.CANCELLED)
            task.reason = event.reason
            task.finished_at = event.ts
            task.pid = None
        case ConsensusVote():
            pass  # the votes are audit: the decision event carries the outcome
        case ConsensusDecided():
            state.tasks[event.task_id].consensus = f"{event.strategy}: {event.winner}"
        case CheckpointTaken():
            pass  # audit and the dashboard's list; the checkpoints themselves are in blob storage
        case CircuitChanged():
            pass  # audit: the orchestrator keeps its breakers; a resume starts them closed
        case TaskAddRequested() | TaskAddRefused():
            pass  # the request and the refusal are audit; only an accepted task changes the run
        case TaskAdded():
            assert state.plan is not None
            blocked = set(event.blocks)
            tasks = tuple(
                spec.model_copy(update={"depends_on": (*spec.depends_on, event.task.id)})
                if spec.id in blocked
                else spec
                for spec in state.plan.tasks
            )
            state.plan = state.plan.model_copy(update={"tasks": (*tasks, event.task)})
            state.tasks[event.task.id] = TaskRun()
        case RunDraining():
            if state.status is RunStatus.RUNNING:
                state.status = RunStatus.DRAINING
                state.drain_reason = event.reason
        case RunCancelling():
            if not state.status.finished:
                state.status = RunStatus.CANCELLING
        case RunFinished():
            state.status = event.status
            state.summary = event.summary
            state.finished_at = event.ts
        case (
            StateWritten()
            | MessageSent()
            | TopicSubscribed()
            | MessagesRead()
            | MessagesAcked()
            | ResultPublished()
            | DoorRefused()
        ):
            pass  # the door's audit trail: read from the log directly, not part of RunState
        case _:
            assert_never(event)


def fold(events: Iterable[tuple[str, Event]], state: RunState | None = None) -> RunState:
    """Apply ``(event_id, event)`` pairs in order, starting from ``state`` or an empty one."""
    result = state if state is not None else RunState()
    for event_id, event in events:
        apply(result, event, event_id)
    return result


def decode(entry: Entry) -> Event:
    try:
        return event_from_json(entry.record)
    except ValueError as exc:
        raise StoreDataError(f"event {entry.id} cannot be decoded: {exc}") from exc


class EventLog:
    """One run's event stream in the store."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.stream = keys.events(run_id)

    async def append(self, event: Event) -> str:
        """Append and return the event id; the event is durable when this returns."""
        return await self.store.append(self.stream, event_to_json(event))

    async def read(
        self, after: str = "0", *, count: int = 1000, block_s: float | None = None
    ) -> list[tuple[str, Event]]:
        entries = await self.store.read(self.stream, after, count=count, block_s=block_s)
        return [(entry.id, decode(entry)) for entry in entries]

    async def iterate(self, after: str = "0", *, batch: int = 5000) -> AsyncIterator[tuple[str, Event]]:
        """Every event after ``after`` that exists now, oldest first."""
        while True:
            chunk = await self.read(after, count=batch)
            for item in chunk:
                yield item
            if len(chunk) < batch:
                return
            after = chunk[-1][0]

    async def replay(self, state: RunState | None = None) -> RunState:
        """Fold the whole log (or the part after ``state.last_event_id``)."""
        result = state if state is not None else RunState()
        async for event_id, event in self.iterate(result.last_event_id):
            apply(result, event, event_id)
        if not result.run_id:
            raise RunNotFound(f"no run {self.run_id!r} in store {self.store.url}")
        return result

    async def follow(self, after: str = "0", *, poll_s: float = 1.0) -> AsyncIterator[tuple[str, Event]]:
        """Every event after ``after``, then new ones as they are appended, until the run ends."""
        while True:
            chunk = await self.read(after, block_s=poll_s)
            for event_id, event in chunk:
                yield event_id, event
                after = event_id
                if isinstance(event, RunFinished):
                    return
