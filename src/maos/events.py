"""The reducer that folds events into ``RunState``: the domain's spine, with no I/O.

Every state change of a run is an event appended to the run's log (``maos.eventlog``).
``RunState`` is nothing but ``fold(apply, events)``: the orchestrator builds its own view by
reading the log back, so a replay of a finished run's log yields exactly the state the run
ended with. This module imports nothing from ``maos.store`` (``tests/test_layers.py``).

``apply`` is deterministic and does no I/O; for speed on 10,000-task plans it updates the
given state in place and returns it (callers that need the old state keep a copy).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import assert_never

from maos.errors import IllegalTransition
from maos.model import (
    MAX_REJECTIONS,
    RETRYABLE_TASK_STATES,
    AgentAnomaly,
    AgentApiRetry,
    AgentLost,
    AgentOutput,
    AgentStats,
    CheckpointTaken,
    CircuitChanged,
    ConsensusDecided,
    ConsensusVote,
    DeadlockFound,
    DoorRefused,
    Event,
    EventUnreadable,
    MessagesAcked,
    MessageSent,
    MessagesRead,
    Plan,
    Rejection,
    ResourceWait,
    ResultPublished,
    RunCancelling,
    RunDraining,
    RunFinished,
    RunRestored,
    RunResumed,
    RunRetried,
    RunStarted,
    RunState,
    RunStatus,
    StateCasFailed,
    StateWritten,
    TaskAdded,
    TaskAddRefused,
    TaskAddRequested,
    TaskAssigned,
    TaskCancelled,
    TaskDeadlinePassed,
    TaskFailed,
    TaskReady,
    TaskRequeued,
    TaskRetried,
    TaskRun,
    TaskSkipped,
    TaskStalled,
    TaskStarted,
    TaskState,
    TaskSucceeded,
    TaskWaiting,
    TaskWarning,
    TopicSubscribed,
    Usage,
)

log = logging.getLogger("maos.events")


REPORTS = (TaskStarted, TaskSucceeded, TaskFailed, TaskRequeued)
"""Events that move an attempt along: applied only to the task's current, unfinished attempt."""

ATTEMPT_EVENTS = (
    *REPORTS,
    TaskWarning,
    AgentApiRetry,
    AgentStats,
    AgentAnomaly,
    ConsensusVote,
    ConsensusDecided,
)
"""Events about one attempt of a task (they carry ``task_id`` and ``attempt``)."""

_LIVE = (TaskState.ASSIGNED, TaskState.RUNNING)


class Rejected(Exception):
    """Raised inside the reducer for an event that cannot be applied; ``apply`` records it."""


def _task(state: RunState, task_id: str) -> TaskRun:
    try:
        return state.tasks[task_id]
    except KeyError:
        raise Rejected(f"event for unknown task {task_id!r}") from None


def _move(state: RunState, task_id: str, new: TaskState) -> TaskRun:
    task = _task(state, task_id)
    try:
        task.state.check(new)
    except IllegalTransition as exc:
        raise Rejected(str(exc)) from None
    task.state = new
    return task


def _plan(state: RunState) -> Plan:
    if state.plan is None:
        raise Rejected("event before run_started")
    return state.plan


def _add_usage(total: Usage | None, more: Usage | None) -> Usage | None:
    if more is None:
        return total
    return more if total is None else total + more


def stale_reason(state: RunState, task_id: str, attempt: int) -> str | None:
    """Why an event of attempt ``attempt`` of ``task_id`` is stale, or None if it is current.

    Delivery is at-least-once, and a worker cut off from the store may deliver its reports
    long after the task was declared lost and handed to someone else. Every assignment gets
    a new attempt number (``TaskRun.attempts + 1``, never reused), so an attempt is current
    only while it is the task's latest one and still ASSIGNED or RUNNING. Anything else is a
    late report: it changes nothing (``task_id:attempt`` is the idempotency key), so a task
    succeeds exactly once in the state and no late report can make the log unreadable.
    """
    task = state.tasks.get(task_id)
    if task is None:
        return None  # the reducer rejects it as an event for an unknown task
    if attempt != task.attempts:
        return f"attempt {attempt} is not the current attempt ({task.attempts}) of {task_id}"
    if task.state not in _LIVE:
        return f"attempt {attempt} of {task_id} already ended (the task is {task.state.value})"
    return None


def _reject(state: RunState, event: Event, event_id: str | None, reason: str, *, stale: bool) -> None:
    state._applied = False
    state.rejected += 1
    if stale:
        state.stale_reports += 1
    state.rejections.append(
        Rejection(
            event_id=event_id or "",
            type=event.type,
            task_id=getattr(event, "task_id", None),
            attempt=getattr(event, "attempt", None),
            stale=stale,
            reason=reason[:500],
            ts=event.ts,
        )
    )
    del state.rejections[:-MAX_REJECTIONS]
    log.info("event %s (%s) rejected: %s", event_id or "-", event.type, reason)


def apply(state: RunState, event: Event, event_id: str | None = None) -> RunState:
    """Fold one event into ``state`` (in place) and return it.

    Never raises for what a log holds: an event that cannot be applied (a stale report, a
    transition the lifecycle forbids, an event for an unknown task, an unreadable entry) is
    recorded in ``state.rejections`` and changes nothing else; ``state.applied`` tells the
    caller which it was. A reader of the log (``maos status``, ``maos resume``, the dashboard,
    a checkpoint) therefore never fails on the log's contents.
    """
    state._applied = True
    if isinstance(event, ATTEMPT_EVENTS):
        reason = stale_reason(state, event.task_id, event.attempt)
        if reason is not None:
            state._applied = False
            if isinstance(event, REPORTS):
                _reject(state, event, event_id, reason, stale=True)
            else:
                log.debug("ignoring %s: %s", event.type, reason)
    if state._applied:
        try:
            _apply(state, event)
        except Rejected as exc:
            _reject(state, event, event_id, str(exc), stale=False)
    state.event_count += 1
    if event_id is not None:
        state.last_event_id = event_id
    return state


def _apply(state: RunState, event: Event) -> None:
    """Apply one event; raise ``Rejected`` before changing anything if it cannot be applied."""
    match event:
        case RunStarted():
            if state.run_id:
                raise Rejected(f"run {state.run_id} has started already")
            state.run_id = event.run_id
            state.plan = event.plan
            state.config = event.config
            state.agents = {agent.id: agent for agent in event.agents}
            state.tasks = {task.id: TaskRun() for task in event.plan.tasks}
            state.status = RunStatus.RUNNING
            state.started_at = event.ts
        case TaskReady():
            task = _move(state, event.task_id, TaskState.READY)
            if task.ready_at is None:
                task.ready_at = event.ts
            task.retry_at = None
            task.agent_id = None
        case TaskAssigned():
            if event.attempt <= _task(state, event.task_id).attempts:
                raise Rejected(f"attempt {event.attempt} of {event.task_id} was assigned before")
            task = _move(state, event.task_id, TaskState.ASSIGNED)
            task.agent_id = event.agent_id
            task.attempts = event.attempt
            task.fitness = event.fitness
            task.stalled = ""
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
            task = _task(state, event.task_id)
            spec = _plan(state).by_id().get(event.task_id)
            exhausted = event.final or spec is None or task.failures + 1 >= spec.max_attempts
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
            task = _task(state, event.task_id)
            task.cpu_percent = event.cpu_percent
            task.rss_bytes = event.rss_bytes
        case AgentAnomaly():
            _task(state, event.task_id).anomalies.append(f"{event.kind}: {event.detail} ({event.action})")
        case TaskRetried():
            task = _task(state, event.task_id)
            if task.state is not TaskState.RETRY_WAIT:
                raise Rejected(f"task_retried for {event.task_id!r} in state {task.state.value}")
            task.retry_at = event.retry_at
        case TaskRequeued():
            task = _move(state, event.task_id, TaskState.READY)
            if task.ready_at is None:
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
        case TaskStalled():
            task = _task(state, event.task_id)
            if task.state is not TaskState.READY:
                raise Rejected(f"task_stalled for {event.task_id!r} in state {task.state.value}")
            task.stalled = event.reason
        case AgentLost():
            if event.agent_id not in state.agents:
                raise Rejected(f"agent_lost for unknown agent {event.agent_id!r}")
            state.lost_agents[event.agent_id] = event.reason
        case ConsensusVote():
            pass  # the votes are audit: the decision event carries the outcome
        case ConsensusDecided():
            _task(state, event.task_id).consensus = f"{event.strategy}: {event.winner}"
        case CheckpointTaken():
            pass  # audit and the dashboard's list; the checkpoints themselves are in blob storage
        case CircuitChanged():
            pass  # audit: the orchestrator keeps its breakers; a resume starts them closed
        case TaskAddRequested() | TaskAddRefused():
            pass  # the request and the refusal are audit; only an accepted task changes the run
        case TaskAdded():
            plan = _plan(state)
            if event.task.id in state.tasks:
                raise Rejected(f"task {event.task.id!r} exists already")
            blocked = set(event.blocks)
            tasks = tuple(
                spec.model_copy(update={"depends_on": (*spec.depends_on, event.task.id)})
                if spec.id in blocked
                else spec
                for spec in plan.tasks
            )
            state.plan = plan.model_copy(update={"tasks": (*tasks, event.task)})
            state.tasks[event.task.id] = TaskRun()
        case RunDraining():
            if state.status is RunStatus.RUNNING:
                state.status = RunStatus.DRAINING
                state.drain_reason = event.reason
        case RunCancelling():
            if not state.status.finished:
                state.status = RunStatus.CANCELLING
        case RunFinished():
            if state.status.finished:
                raise Rejected(f"the run has finished already ({state.status.value})")
            state.status = event.status
            state.summary = event.summary
            state.finished_at = event.ts
        case RunResumed():
            if state.status.finished:
                raise Rejected(f"the run has finished ({state.status.value}): nothing to resume")
            state.interruptions += 1
        case RunRetried():
            _retry(state, event)
            state.interruptions += 1
        case RunRestored():
            _restore(state, event)
        case (
            StateWritten()
            | StateCasFailed()
            | MessageSent()
            | TopicSubscribed()
            | MessagesRead()
            | MessagesAcked()
            | ResultPublished()
            | DoorRefused()
        ):
            pass  # the door's audit trail: read from the log directly, not part of RunState
        case TaskWaiting() | TaskDeadlinePassed() | DeadlockFound():
            apply_wait_event(state, event)
        case ResourceWait():
            _task(state, event.task_id)  # audit and metrics: the scheduler derives holdings from states
        case EventUnreadable():
            raise Rejected(f"unreadable entry ({event.size_bytes} bytes): {event.error}")
        case _:
            assert_never(event)


def apply_wait_event(state: RunState, event: TaskWaiting | TaskDeadlinePassed | DeadlockFound) -> None:
    """Waits, deadlines and deadlocks (``maos.timing``, ``maos.deadlock``; ADR 0013)."""
    match event:
        case TaskWaiting():
            task = _task(state, event.task)
            _task(state, event.on)
            key = f"{event.task}:{event.attempt or task.attempts}"
            on = state.waits.get(key, [])
            if event.waiting and event.on not in on:
                state.waits[key] = [*on, event.on]
            elif not event.waiting and event.on in on:
                rest = [item for item in on if item != event.on]
                if rest:
                    state.waits[key] = rest
                else:
                    del state.waits[key]
        case TaskDeadlinePassed():
            new = TaskState.FAILED if event.action == "fail" else TaskState.SKIPPED
            task = _move(state, event.task_id, new)
            task.reason = DEADLINE_REASON
            task.finished_at = event.ts
            task.pid = None
            task.retry_at = None
        case DeadlockFound():
            if not event.cycle:
                raise Rejected("deadlock_found without a cycle")
            if event.action == "fail_run" or event.victim is None:
                return  # the orchestrator stops the run; nothing changes here
            current = _task(state, event.victim).state
            if event.action == "requeue_task":
                if current not in _LIVE:
                    raise Rejected(f"cannot requeue {event.victim!r}: it is {current.value}, not running")
                task = _move(state, event.victim, TaskState.READY)
                task.agent_id = None
            else:
                task = _move(state, event.victim, TaskState.FAILED)
                task.finished_at = event.ts
                task.retry_at = None
            task.pid = None
            task.reason = f"deadlock: {' -> '.join((*event.cycle, event.cycle[0]))}"[:500]


DEADLINE_REASON = "deadline passed"
"""``TaskRun.reason`` of a task a deadline failed or skipped (``maos.timing.excused``)."""


def _restore(state: RunState, event: RunRestored) -> None:
    """The log starts again from a checkpoint's state (the store lost the run's data)."""
    if state.run_id and state.run_id != event.run_id:
        raise Rejected(f"a restore of run {event.run_id} in the log of run {state.run_id}")
    try:
        restored = RunState.model_validate_json(event.state_json)
    except ValueError as exc:
        raise Rejected(f"the restored state does not decode: {str(exc).splitlines()[0]}") from None
    if restored.run_id != event.run_id or restored.plan is None:
        raise Rejected("the restored state is not a started run of this id")
    for name in RunState.model_fields:
        setattr(state, name, getattr(restored, name))
    state.interruptions += 1


def _retry(state: RunState, event: RunRetried) -> None:
    if not state.status.finished:
        raise Rejected(f"run_retried while the run is {state.status.value}")
    for task_id in event.task_ids:
        if _task(state, task_id).state not in RETRYABLE_TASK_STATES:
            raise Rejected(
                f"task {task_id!r} is {state.tasks[task_id].state.value}: only failed, "
                "cancelled or skipped tasks are retried"
            )
    if event.plan is not None:
        state.plan = event.plan
    for task_id in event.task_ids:
        old = state.tasks[task_id]
        # A fresh start that keeps the attempt count: attempt numbers are never reused.
        state.tasks[task_id] = TaskRun(attempts=old.attempts, usage=old.usage)
    state.status = RunStatus.RUNNING
    state.summary = ""
    state.drain_reason = ""
    state.finished_at = None


def fold(events: Iterable[tuple[str, Event]], state: RunState | None = None) -> RunState:
    """Apply ``(event_id, event)`` pairs in order, starting from ``state`` or an empty one."""
    result = state if state is not None else RunState()
    for event_id, event in events:
        apply(result, event, event_id)
    return result
