"""What happens in a run, and what it does to the run's state: the domain's spine, with no I/O.

Every state change of a run is an event: a frozen pydantic model with a ``type``
discriminator (``Event`` is their union), appended to the run's log (``maos.eventlog``) as
JSON (``event_to_json``; ``event_from_json`` reads it back). ``RunState`` (``maos.model``) is
nothing but ``fold(apply, events)``: the orchestrator builds its own view by reading the log
back, so a replay of a finished run's log yields exactly the state the run ended with. This
module imports nothing from ``maos.store`` (``tests/test_layers.py``).

``apply`` is deterministic and does no I/O; for speed on 10,000-task plans it updates the
given state in place and returns it (callers that need the old state keep a copy). It never
raises for what a log holds: an event that does not apply raises ``Rejected`` inside the
reducer, before it changes anything, and ``apply`` records it in one place (ADR 0011).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Annotated, Any, Literal, assert_never

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from pydantic_core import PydanticSerializationError

from maos.errors import IllegalTransition, PlanError
from maos.model import (
    MAX_REJECTIONS,
    RETRYABLE_TASK_STATES,
    AgentSpec,
    FitnessScores,
    Plan,
    Rejection,
    ResourceName,
    RunConfig,
    RunState,
    RunStatus,
    TaskRun,
    TaskSpec,
    TaskState,
    Usage,
    now,
)
from maos.numbers import MAX_FLOAT, MAX_TIMESTAMP_S
from maos.sanitize import storable

log = logging.getLogger("maos.events")


# --------------------------------------------------------------------------- the events


Seconds = Annotated[float, Field(ge=0, le=MAX_FLOAT)]
"""A duration or a delay."""
Timestamp = Annotated[float, Field(ge=0, le=MAX_TIMESTAMP_S)]
"""A time (Unix seconds) that can be shown as a date."""


class _Event(BaseModel):
    # No NaN or infinity in any number, and times and durations in range: they are added to
    # (deadlines, delays after a success), bucketed by second, shown as clock times and dates
    # and exported to /metrics. A log entry with another is unreadable (``maos.eventlog.decode``),
    # not a reader's crash or a duration of "inf s".
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    ts: Timestamp = Field(default_factory=now)


class RunStarted(_Event):
    type: Literal["run_started"] = "run_started"
    run_id: str
    plan: Plan
    config: RunConfig
    agents: tuple[AgentSpec, ...]

    @field_validator("agents", mode="before")
    @classmethod
    def _before_teams(cls, value: Any) -> Any:
        """A run logged before teams gave every agent ``runtime: "command"`` (and no ``model``
        key), which restricted nothing then: read it as "any runtime", as it ran."""
        if isinstance(value, list | tuple):
            return [
                {key: item for key, item in agent.items() if key != "runtime"}
                if isinstance(agent, dict) and "model" not in agent and agent.get("runtime") == "command"
                else agent
                for agent in value
            ]
        return value


class TaskReady(_Event):
    type: Literal["task_ready"] = "task_ready"
    task_id: str


class TaskAssigned(_Event):
    type: Literal["task_assigned"] = "task_assigned"
    task_id: str
    agent_id: str
    attempt: int
    score: float = 0.0
    epoch: int = Field(default=0, ge=0, description="the orchestrator's lease epoch (0: before epochs)")
    fitness: FitnessScores | None = None  # the parts of ``score``; None in logs before teams


class TaskStarted(_Event):
    type: Literal["task_started"] = "task_started"
    task_id: str
    agent_id: str
    attempt: int
    pid: int
    worker: str = "local"
    session_id: str | None = None  # claude-code: the CLI session (``--resume`` continues it)


class AgentOutput(_Event):
    type: Literal["agent_output"] = "agent_output"
    task_id: str
    agent_id: str
    stream: Literal["stdout", "stderr", "text", "tool"]
    text: str


class TaskSucceeded(_Event):
    type: Literal["task_succeeded"] = "task_succeeded"
    task_id: str
    agent_id: str
    attempt: int
    exit_code: int = 0
    duration_s: Seconds
    output_path: str = ""
    usage: Usage | None = None  # None: the runtime reports none (command) or did not get it


class TaskFailed(_Event):
    """An attempt failed. With attempts left the task waits for a retry (``task_retried``
    sets when); with none left it has failed for good."""

    type: Literal["task_failed"] = "task_failed"
    task_id: str
    agent_id: str
    attempt: int
    reason: str
    exit_code: int | None = None
    stderr_tail: str = ""
    duration_s: Seconds = 0.0
    usage: Usage | None = None
    final: bool = False  # no retry whatever attempts are left (an anomaly policy said "fail")
    lost_worker: str | None = None  # the worker whose lease expired with the attempt (a missed heartbeat)


class TaskWarning(_Event):
    """Something the user should know about an attempt that does not fail it by itself
    (a tool the agent was denied, a failed MCP server, a rate-limit warning)."""

    type: Literal["task_warning"] = "task_warning"
    task_id: str
    agent_id: str
    attempt: int
    text: str


class AgentApiRetry(_Event):
    """The agent's CLI retries a failed model API call (overloaded, rate-limited, server
    error); the attempt goes on. ``api_attempt`` is the CLI's retry number, 1 for the first."""

    type: Literal["agent_api_retry"] = "agent_api_retry"
    task_id: str
    agent_id: str
    attempt: int
    api_attempt: int
    max_retries: int | None = None
    error_status: int | None = None  # HTTP status; None for a connection error
    error: str = ""
    retry_delay_ms: float | None = Field(default=None, ge=0, le=MAX_FLOAT)


class AgentStats(_Event):
    """A sample of an agent's process group: measured, never estimated."""

    type: Literal["agent_stats"] = "agent_stats"
    task_id: str
    agent_id: str
    attempt: int
    pid: int
    cpu_percent: float = Field(ge=0, le=MAX_FLOAT)  # of one core, summed over the group
    rss_bytes: int  # summed over the group
    processes: int
    idle_s: Seconds  # since the agent last printed anything


class AgentAnomaly(_Event):
    """An agent over its memory limit or silent past its idle timeout, and what was done.
    The ``*_outlier`` kinds: its RSS, CPU or idle time is far from its peers' in the run
    (a robust z-score, ``maos.health.outliers``); only ever a warning."""

    type: Literal["agent_anomaly"] = "agent_anomaly"
    task_id: str
    agent_id: str
    attempt: int
    kind: Literal["memory", "idle", "rss_outlier", "cpu_outlier", "idle_outlier"]
    detail: str
    action: Literal["warn", "restart", "fail"]


class TaskRetried(_Event):
    """The orchestrator's backoff decision for a failed attempt: READY again at ``retry_at``."""

    type: Literal["task_retried"] = "task_retried"
    task_id: str
    retry_at: Timestamp
    delay_s: Seconds


class TaskRequeued(_Event):
    """An attempt abandoned through no fault of its own (the orchestrator restarted): the
    task is READY again and the attempt does not count against ``max_attempts``."""

    type: Literal["task_requeued"] = "task_requeued"
    task_id: str
    attempt: int
    reason: str


class TaskSkipped(_Event):
    type: Literal["task_skipped"] = "task_skipped"
    task_id: str
    because: str


class TaskCancelled(_Event):
    type: Literal["task_cancelled"] = "task_cancelled"
    task_id: str
    reason: str


class TaskStalled(_Event):
    """A READY task that no agent of the run can take (none has its capabilities or runtime,
    or those that had were lost): it needs attention now, and is cancelled after the run's
    ``stall_timeout_s`` unless an agent for it turns up."""

    type: Literal["task_stalled"] = "task_stalled"
    task_id: str
    reason: str
    timeout_s: float = Field(ge=0, description="seconds until it is cancelled")


class AgentLost(_Event):
    """An agent the run gives up on (its process died twice in a row): no task goes to it again."""

    type: Literal["agent_lost"] = "agent_lost"
    agent_id: str
    reason: str


class RunDraining(_Event):
    type: Literal["run_draining"] = "run_draining"
    reason: str


class RunCancelling(_Event):
    type: Literal["run_cancelling"] = "run_cancelling"
    reason: str


class RunFinished(_Event):
    type: Literal["run_finished"] = "run_finished"
    status: RunStatus
    summary: str = ""


class RunResumed(_Event):
    """A new orchestrator took the run over after the previous one died (``maos resume``)."""

    type: Literal["run_resumed"] = "run_resumed"
    owner: str = Field(description="the new orchestrator: host, pid and a nonce")
    epoch: int = Field(default=0, ge=0, description="its lease epoch: no event of an older one follows")


class RunRestored(_Event):
    """The store lost the run's data (a Redis restarted without persistence, a flushed
    database): its orchestrator rebuilt the run from its newest checkpoint. The log starts
    again here; ``state_json`` is the checkpoint's ``RunState``, which this event replaces
    the fold with (ADR 0012)."""

    type: Literal["run_restored"] = "run_restored"
    run_id: str
    checkpoint_id: str
    covers_events: int = Field(ge=0, description="events of the lost log the checkpoint covers")
    lost: str = Field(description="what was lost, for people: events after the checkpoint, tasks re-run")
    rerun: tuple[str, ...] = Field(default=(), description="tasks that had succeeded and run again")
    state_json: str = Field(repr=False)


class RunRetried(_Event):
    """``maos retry``: a finished run is opened again for these tasks (failed, cancelled or
    skipped ones: they become PENDING, keeping their attempt numbers); every other task
    keeps its result. ``plan`` is the fixed plan when the user gave one (same tasks and
    dependencies; only the retried tasks' settings may differ)."""

    type: Literal["run_retried"] = "run_retried"
    task_ids: tuple[str, ...]
    plan: Plan | None = None


class ConsensusVote(_Event):
    """One replica's answer as a consensus counted it (``answer`` is its normalized digest)."""

    type: Literal["consensus_vote"] = "consensus_vote"
    task_id: str
    attempt: int
    replica: str
    answer: str
    weight: float
    score: float | None = None  # judge strategy: the judge's score


class ConsensusDecided(_Event):
    type: Literal["consensus_decided"] = "consensus_decided"
    task_id: str
    attempt: int
    strategy: str
    winner: str  # the replica whose answer was picked
    tally: dict[str, float]


class CheckpointTaken(_Event):
    """A full checkpoint of the run was written (segments at each completion are not logged)."""

    type: Literal["checkpoint_taken"] = "checkpoint_taken"
    checkpoint_id: str
    bytes: int
    duration_s: Seconds
    covers_events: int | None = None
    location: str = ""


class CircuitChanged(_Event):
    """A backend's circuit breaker changed state (see ``maos.breaker``)."""

    type: Literal["circuit_changed"] = "circuit_changed"
    runtime: str
    state: Literal["closed", "open", "half_open"]
    reason: str


class TaskAddRequested(_Event):
    """A running agent asks for a new task (FR-1.2 dynamic dependencies). The orchestrator
    answers with ``task_added`` or ``task_add_refused`` carrying the same ``request_id``."""

    type: Literal["task_add_requested"] = "task_add_requested"
    request_id: str
    agent_id: str
    by_task: str  # the requesting agent's task
    spec: dict[str, Any]  # validated by the orchestrator, not here: a bad spec gets an answer
    blocks: tuple[str, ...] = ()  # tasks not started yet that must also wait for the new one


class TaskAdded(_Event):
    type: Literal["task_added"] = "task_added"
    request_id: str
    task: TaskSpec
    blocks: tuple[str, ...] = ()


class TaskAddRefused(_Event):
    type: Literal["task_add_refused"] = "task_add_refused"
    request_id: str
    reason: str


# --------------------------------------------------------------------------- door events
# What agents do through the door (``maos.door``): the audit trail of shared state and
# messages. They name the agent's task ``task``, not ``task_id``: it is what the agent's
# environment claims (MAOS_TASK_ID, which the token does not cover), and readers of the log
# treat an event with a ``task_id`` as a change of that task. No message contents and no
# state values beyond a short preview: the log stays small.

DOOR_PREVIEW_CHARS = 200


class StateWritten(_Event):
    """An agent wrote a key of shared state (set, or a successful compare-and-set)."""

    type: Literal["state_written"] = "state_written"
    agent_id: str
    task: str = ""
    key: str
    version: int
    size_bytes: int
    preview: str = Field(default="", description="the start of the JSON value")
    cas_conflicts: int = Field(default=0, ge=0, description="compare-and-sets lost to other writers first")


class StateCasFailed(_Event):
    """An agent's compare-and-set of shared state found the key at another version: nothing
    was written (the agent reads the key again and retries)."""

    type: Literal["state_cas_failed"] = "state_cas_failed"
    agent_id: str
    task: str = ""
    key: str
    expected_version: int
    version: int = Field(description="the key's version when the compare-and-set was refused")


class MessageSent(_Event):
    """An agent sent a message to an agent (``to``) or broadcast it on a ``topic``."""

    type: Literal["message_sent"] = "message_sent"
    agent_id: str
    task: str = ""
    message_id: str
    to: str | None = None
    topic: str | None = None
    priority: Literal["high", "normal", "low"] = "normal"
    seq: int
    size_bytes: int
    cas_conflicts: int = Field(default=0, ge=0, description="seq compare-and-sets lost to other senders")


class TopicSubscribed(_Event):
    type: Literal["topic_subscribed"] = "topic_subscribed"
    agent_id: str
    task: str = ""
    topic: str


class MessagesRead(_Event):
    """An agent read messages (only logged when there were some); ``acked``: at once."""

    type: Literal["messages_read"] = "messages_read"
    agent_id: str
    task: str = ""
    count: int = Field(ge=0)
    message_ids: tuple[str, ...] = ()
    acked: bool = False
    latency_s: tuple[float, ...] = Field(
        default=(), description="send -> this read, of each message delivered for the first time"
    )


class MessagesAcked(_Event):
    """An agent acknowledged messages it had read: ``acked`` of ``count`` receipts were pending."""

    type: Literal["messages_acked"] = "messages_acked"
    agent_id: str
    task: str = ""
    count: int
    acked: int


class ResultPublished(_Event):
    """An agent published its task's result (the full text is in the store: keys.task_result)."""

    type: Literal["result_published"] = "result_published"
    agent_id: str
    task: str
    summary: str = Field(description="the start of the summary")
    files: tuple[str, ...] = ()


class TaskWaiting(_Event):
    """A running agent waits for another task to end (``maos task wait``; ``waiting`` False:
    it stopped waiting). The orchestrator's wait-for graph has the edge while the waiting
    attempt is current (``maos.deadlock``)."""

    type: Literal["task_waiting"] = "task_waiting"
    agent_id: str
    task: str = Field(description="the waiting agent's task")
    attempt: int = Field(default=0, ge=0, description="its attempt (0: unknown, the current one)")
    on: str = Field(description="the task it waits for")
    waiting: bool = True


class ResourceWait(_Event):
    """A READY task cannot start because the resources it needs are held (by the tasks in
    ``held_by``; other runs' for a shared resource). Logged once per wait; the wait ends with
    its ``task_assigned`` (``maos_resource_wait_seconds``)."""

    type: Literal["resource_wait"] = "resource_wait"
    task_id: str
    resources: dict[ResourceName, int] = Field(description="the units it needs that are not free")
    held_by: tuple[str, ...] = Field(default=(), description="tasks of this run holding them")


class TaskDeadlinePassed(_Event):
    """A task was not finished at its deadline (``deadline_s`` after the run started): it
    failed or was skipped, as its ``on_deadline`` says (a running attempt is stopped)."""

    type: Literal["task_deadline_passed"] = "task_deadline_passed"
    task_id: str
    deadline_at: Timestamp
    action: Literal["fail", "skip"]


class DeadlockFound(_Event):
    """A wait-for cycle among the run's tasks (dependencies, resources held and wanted, agents
    waiting on tasks), or a resource wait that can never be satisfied, and how it was resolved:
    ``fail_task`` (the victim fails for good), ``requeue_task`` (its running attempt is stopped
    and it waits again, releasing what it held) or ``fail_run`` (``--on-deadlock fail``)."""

    type: Literal["deadlock_found"] = "deadlock_found"
    cycle: tuple[str, ...] = Field(description="the tasks on the cycle, each waiting for the next")
    edges: tuple[str, ...] = Field(default=(), description="why each waits for the next, in cycle order")
    victim: str | None = None
    action: Literal["fail_task", "requeue_task", "fail_run"]
    detail: str = ""


class EventUnreadable(_Event):
    """Stands in for a log entry that cannot be decoded (corrupt or hostile store contents).

    Never appended: ``maos.eventlog.decode`` makes one so that every reader of the log goes on
    and the reducer records the entry as rejected instead of failing on it."""

    type: Literal["event_unreadable"] = "event_unreadable"
    error: str
    size_bytes: int


class DoorRefused(_Event):
    """The door refused a caller: a token that is not its own (agent or task attempt), or an
    action its role is not granted (``action``, ``resource``; ``maos.permissions``)."""

    type: Literal["door_refused"] = "door_refused"
    claimed_agent: str
    task: str = ""
    reason: str
    via: str = Field(default="", description="cli, mcp (stdio) or mcp-http")
    token_owner: str | None = Field(default=None, description="the agent the token belongs to, if known")
    action: str = Field(default="", description="the door action refused, e.g. state.write")
    resource: str = Field(default="", description="what it was refused on: a key, a recipient, a task")
    verified: bool = Field(
        default=False,
        description="the call's task token was valid for the attempt that runs the task: the refusal "
        "counts against that attempt's door budget",
    )


DOOR_CALL_EVENTS = (
    StateWritten,
    StateCasFailed,
    MessageSent,
    TopicSubscribed,
    MessagesRead,
    MessagesAcked,
    ResultPublished,
    TaskWaiting,
    DoorRefused,
)
"""What a door call appends to the log naming the caller's task (``task``): each counts against
the door budget of that task's attempt (``RunConfig.door_calls_per_attempt``, ``maos.door``),
as does a ``task_add_requested`` (which names it ``by_task``); a ``door_refused`` only when
``verified``."""

Event = Annotated[
    RunStarted
    | TaskReady
    | TaskAssigned
    | TaskStarted
    | AgentOutput
    | TaskWarning
    | AgentApiRetry
    | TaskSucceeded
    | TaskFailed
    | TaskRetried
    | AgentStats
    | AgentAnomaly
    | TaskRequeued
    | TaskSkipped
    | TaskCancelled
    | TaskStalled
    | AgentLost
    | RunDraining
    | RunCancelling
    | RunFinished
    | RunResumed
    | RunRestored
    | RunRetried
    | ConsensusVote
    | ConsensusDecided
    | CheckpointTaken
    | CircuitChanged
    | TaskAddRequested
    | TaskAdded
    | TaskAddRefused
    | StateWritten
    | StateCasFailed
    | MessageSent
    | TopicSubscribed
    | MessagesRead
    | MessagesAcked
    | ResultPublished
    | DoorRefused
    | TaskWaiting
    | ResourceWait
    | TaskDeadlinePassed
    | DeadlockFound
    | EventUnreadable,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def event_to_json(event: Event) -> bytes:
    """The event as JSON. Text that UTF-8 cannot encode (lone surrogates, e.g. from an agent's
    ``"\\ud800"``) is stored with U+FFFD in its place instead of failing the append."""
    try:
        return event.model_dump_json().encode()
    except PydanticSerializationError:
        return json.dumps(_storable(event.model_dump(mode="json")), ensure_ascii=False).encode()


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def event_from_json(data: bytes | str) -> Event:
    """The event ``event_to_json`` wrote; raises ``ValueError`` for anything else (a reader of
    the log uses ``maos.eventlog.decode``, which never raises). An entry without its time is
    not one MAOS wrote: it would get the reader's clock, another at every read."""
    event = _ADAPTER.validate_json(data)
    if "ts" not in event.model_fields_set:
        raise ValueError("the entry has no time ('ts')")
    return event


# --------------------------------------------------------------------------- the reducer


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
    """An event that cannot be applied, and why: raised inside the reducer before it changes
    anything, and handled in one place, ``apply``, which records it.

    ``stale``: the event is about an attempt that is no longer the task's current one.
    """

    def __init__(self, reason: str, *, stale: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stale = stale


def _few(task_ids: list[str]) -> str:
    shown = ", ".join(repr(task_id) for task_id in task_ids[:5])
    return shown + (f" and {len(task_ids) - 5} more" if len(task_ids) > 5 else "")


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


def _check_layout(plan: Plan, tasks: Iterable[str] | None = None) -> None:
    """Reject a plan no reader can lay out: duplicate ids, a dependency on an unknown task or
    on itself, a cycle (what ``maos.plan.analyze_plan`` refuses: the dashboard draws the plan
    with it, the scheduler indexes it). With ``tasks``: also a plan whose tasks are not those.
    """
    # Imported here: the agents' door commands import this module and never fold a plan.
    from maos.plan.analysis import analyze_plan

    try:
        analyze_plan(plan)
    except PlanError as exc:
        raise Rejected(str(exc)) from None
    if tasks is not None:
        differ = set(tasks).symmetric_difference(spec.id for spec in plan.tasks)
        if differ:
            shown = ", ".join(sorted(differ)[:5])
            raise Rejected(f"the plan's tasks are not the run's (they differ in {shown})")


def _check_addition(state: RunState, plan: Plan, event: TaskAdded) -> None:
    """``_check_layout`` for one added task, without laying out the whole plan again."""
    new = event.task.id
    if new in state.tasks:
        raise Rejected(f"task {new!r} exists already")
    for name, field in (("depends_on", event.task.depends_on), ("blocks", event.blocks)):
        unknown = [task_id for task_id in field if task_id not in state.tasks]
        if unknown:
            raise Rejected(f"task_added {new!r}: {name} names unknown task(s) {', '.join(unknown[:5])}")
    if not event.blocks:
        return
    specs = plan.by_id()
    before: set[str] = set()  # every task the new one waits for, directly or not
    todo = list(event.task.depends_on)
    while todo:
        task_id = todo.pop()
        spec = specs.get(task_id)
        if spec is not None and task_id not in before:
            before.add(task_id)
            todo.extend(spec.depends_on)
    cycle = before.intersection(event.blocks)
    if cycle:
        raise Rejected(f"task_added {new!r} would wait for {min(cycle)!r}, which it blocks: a cycle")


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


def _check_current(state: RunState, event: Event) -> None:
    """Reject an event about an attempt that is not its task's current one (``stale_reason``)."""
    if isinstance(event, ATTEMPT_EVENTS):
        reason = stale_reason(state, event.task_id, event.attempt)
        if reason is not None:
            raise Rejected(reason, stale=True)


def _reject(state: RunState, event: Event, event_id: str | None, reason: str, *, stale: bool) -> None:
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
    transition the lifecycle forbids, an event for an unknown task, a plan no reader can lay
    out, an unreadable entry) is recorded in ``state.rejections`` and changes nothing else;
    ``state.applied`` tells the caller which it was. A reader of the log (``maos status``,
    ``maos resume``, the dashboard, a checkpoint) therefore never fails on the log's contents.
    """
    state._applied = True
    try:
        _check_current(state, event)
        _apply(state, event)
    except Rejected as exc:
        state._applied = False
        if exc.stale and not isinstance(event, REPORTS):
            # a late sample, warning or vote of an attempt that ended: worth nothing, and
            # too common (an agent's stats arrive until it is reaped) to count as rejected
            log.debug("ignoring %s: %s", event.type, exc.reason)
        else:
            _reject(state, event, event_id, exc.reason, stale=exc.stale)
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
            _check_layout(event.plan)
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
            _task(state, event.task_id)  # transcripts are read from the log (maos logs, dashboard)
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
            _task(state, event.task_id)  # the votes are audit: the decision event carries the outcome
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
            _check_addition(state, plan, event)
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
            # The orchestrator ends a run only once nothing runs (it stops or waits for every
            # agent first) and calls it succeeded only once every task is done: a forged or
            # confused end would otherwise hide work that never finished (resume would refuse).
            running = [task_id for task_id, task in state.tasks.items() if task.state in _LIVE]
            if running:
                raise Rejected(f"the run cannot end while task(s) {_few(running)} run")
            unfinished = [task_id for task_id, task in state.tasks.items() if not task.state.terminal]
            if event.status is RunStatus.SUCCEEDED and unfinished:
                raise Rejected(f"the run cannot succeed while task(s) {_few(unfinished)} have not finished")
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
            _apply_wait(state, event)
        case ResourceWait():
            _task(state, event.task_id)  # audit and metrics: the scheduler derives holdings from states
        case EventUnreadable():
            raise Rejected(f"unreadable entry ({event.size_bytes} bytes): {event.error}")
        case _:
            assert_never(event)


def _apply_wait(state: RunState, event: TaskWaiting | TaskDeadlinePassed | DeadlockFound) -> None:
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
    _check_layout(restored.plan, restored.tasks)
    for name in RunState.model_fields:
        setattr(state, name, getattr(restored, name))
    state.interruptions += 1


def _retry(state: RunState, event: RunRetried) -> None:
    if not state.status.finished:
        raise Rejected(f"run_retried while the run is {state.status.value}")
    retried = {task_id: _task(state, task_id) for task_id in event.task_ids}
    for task_id, task in retried.items():
        if task.state not in RETRYABLE_TASK_STATES:
            raise Rejected(
                f"task {task_id!r} is {task.state.value}: only failed, cancelled or skipped tasks are retried"
            )
    if event.plan is not None:
        _check_layout(event.plan, state.tasks)
        state.plan = event.plan
    for task_id, old in retried.items():
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
