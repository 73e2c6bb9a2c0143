"""Domain types: what a plan is, what a task goes through, what an agent is, what happened.

Everything here is data. Lifecycles are ``str`` enums whose legal transitions live in one
table each (``TASK_TRANSITIONS``); ``TaskState.check(new)`` raises ``IllegalTransition`` for
anything else. Events are frozen pydantic models with a ``type`` discriminator; ``RunState``
is what folding them yields (see ``maos.events``).
"""

from __future__ import annotations

import enum
import re
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from maos.errors import IllegalTransition

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_TASK_ID_RE = re.compile(TASK_ID_PATTERN)
MAX_PLAN_TASKS = 10_000


def now() -> float:
    """Wall-clock seconds; the one clock events are stamped with."""
    return time.time()


# --------------------------------------------------------------------------- plans


class TaskSpec(BaseModel):
    """One node of the DAG, as written in a plan file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=TASK_ID_PATTERN, description="unique within the plan")
    title: str = ""
    prompt: str = ""
    role: str = "general"
    kind: str = Field(default="", description="task kind for history matching; defaults to role")
    capabilities: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    priority: int = Field(default=0, description="higher runs first among ready tasks")
    timeout_s: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    max_attempts: int = Field(default=3, ge=1, le=100)
    command: str | tuple[str, ...] | None = Field(
        default=None, description="command runtime: a string runs with sh -c, a list runs as is"
    )
    isolation: Literal["auto", "worktree", "none"] = Field(
        default="auto",
        description="worktree: own git worktree and branch, merged on success; auto: worktree for "
        "Claude Code tasks when the run's directory is a git repository",
    )

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, value: str | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
        if value is not None and len(value) == 0:
            raise ValueError("must not be empty")
        return value

    @property
    def task_kind(self) -> str:
        return self.kind or self.role

    @property
    def wants_worktree(self) -> bool:
        return self.isolation == "worktree" or (self.isolation == "auto" and self.command is None)

    @property
    def runtime(self) -> Literal["command", "claude-code"]:
        """Which agent runtime runs this task: ``command`` when it has one, else Claude Code."""
        return "command" if self.command is not None else "claude-code"

    @property
    def argv(self) -> list[str] | None:
        """The command as an argv list (``sh -c`` for a string), or None."""
        if self.command is None:
            return None
        if isinstance(self.command, str):
            return ["sh", "-c", self.command]
        return list(self.command)


class Plan(BaseModel):
    """A named DAG of tasks. Structural checks live in ``maos.plan.validate``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    tasks: tuple[TaskSpec, ...]

    def task(self, task_id: str) -> TaskSpec:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)

    def by_id(self) -> dict[str, TaskSpec]:
        return {task.id: task for task in self.tasks}


def is_valid_task_id(value: str) -> bool:
    return bool(_TASK_ID_RE.match(value))


# --------------------------------------------------------------------------- lifecycles


class TaskState(enum.StrEnum):
    PENDING = "pending"  # waiting for its own dependencies
    READY = "ready"  # dependencies succeeded; waiting for an agent
    ASSIGNED = "assigned"  # handed to an agent, process not yet started
    RUNNING = "running"  # its agent process runs
    RETRY_WAIT = "retry_wait"  # an attempt failed; waiting for the backoff before READY again
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # attempts exhausted
    SKIPPED = "skipped"  # a dependency failed, was skipped or cancelled
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_TASK_STATES

    def check(self, new: TaskState) -> None:
        """Raise ``IllegalTransition`` unless ``self -> new`` is in the lifecycle table."""
        if new not in TASK_TRANSITIONS[self]:
            raise IllegalTransition(f"task state {self.value} -> {new.value} is not allowed")


TERMINAL_TASK_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED}
)

TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.PENDING: frozenset({TaskState.READY, TaskState.SKIPPED, TaskState.CANCELLED}),
    TaskState.READY: frozenset({TaskState.ASSIGNED, TaskState.SKIPPED, TaskState.CANCELLED}),
    # ASSIGNED -> READY: the assignment was lost (agent or worker died before starting it).
    TaskState.ASSIGNED: frozenset(
        {TaskState.RUNNING, TaskState.READY, TaskState.RETRY_WAIT, TaskState.FAILED, TaskState.CANCELLED}
    ),
    TaskState.RUNNING: frozenset(
        {TaskState.SUCCEEDED, TaskState.RETRY_WAIT, TaskState.FAILED, TaskState.READY, TaskState.CANCELLED}
    ),
    TaskState.RETRY_WAIT: frozenset({TaskState.READY, TaskState.CANCELLED, TaskState.SKIPPED}),
    TaskState.SUCCEEDED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.SKIPPED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    DRAINING = "draining"  # no new tasks start; running ones finish
    CANCELLING = "cancelling"  # running agents are being stopped
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


# --------------------------------------------------------------------------- agents


class AgentSpec(BaseModel):
    """An agent slot the scheduler can assign tasks to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    role: str = "general"
    runtime: Literal["command", "claude-code"] = "command"
    capabilities: tuple[str, ...] = ()


class RunConfig(BaseModel):
    """How a run was started; recorded in ``run_started`` so a resume uses the same settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: int = Field(default=4, ge=1, le=1000)
    workdir: str
    retry_base_s: float = Field(default=1.0, ge=0)
    retry_max_s: float = Field(default=60.0, ge=0)
    grace_s: float = Field(default=5.0, ge=0)


# --------------------------------------------------------------------------- events


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ts: float = Field(default_factory=now)


class RunStarted(_Event):
    type: Literal["run_started"] = "run_started"
    run_id: str
    plan: Plan
    config: RunConfig
    agents: tuple[AgentSpec, ...]


class TaskReady(_Event):
    type: Literal["task_ready"] = "task_ready"
    task_id: str


class TaskAssigned(_Event):
    type: Literal["task_assigned"] = "task_assigned"
    task_id: str
    agent_id: str
    attempt: int
    score: float = 0.0


class TaskStarted(_Event):
    type: Literal["task_started"] = "task_started"
    task_id: str
    agent_id: str
    attempt: int
    pid: int
    worker: str = "local"


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
    duration_s: float
    output_path: str = ""


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
    duration_s: float = 0.0


class TaskRetried(_Event):
    """The orchestrator's backoff decision for a failed attempt: READY again at ``retry_at``."""

    type: Literal["task_retried"] = "task_retried"
    task_id: str
    retry_at: float
    delay_s: float


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


Event = Annotated[
    RunStarted
    | TaskReady
    | TaskAssigned
    | TaskStarted
    | AgentOutput
    | TaskSucceeded
    | TaskFailed
    | TaskRetried
    | TaskRequeued
    | TaskSkipped
    | TaskCancelled
    | RunDraining
    | RunCancelling
    | RunFinished,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


# --------------------------------------------------------------------------- run state


class TaskRun(BaseModel):
    """What the event log says about one task so far."""

    model_config = ConfigDict(extra="forbid")

    state: TaskState = TaskState.PENDING
    attempts: int = 0  # attempts started so far (the number of the current one)
    failures: int = 0  # failed attempts; the task fails for good at max_attempts
    agent_id: str | None = None
    pid: int | None = None
    worker: str | None = None
    ready_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    exit_code: int | None = None
    reason: str = ""
    stderr_tail: str = ""
    retry_at: float | None = None
    output_path: str = ""
    warnings: list[str] = Field(default_factory=list)


class RunState(BaseModel):
    """The fold of a run's events. Built only by ``maos.events.apply``."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = ""
    plan: Plan | None = None
    config: RunConfig | None = None
    agents: dict[str, AgentSpec] = Field(default_factory=dict)
    status: RunStatus = RunStatus.RUNNING
    tasks: dict[str, TaskRun] = Field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    summary: str = ""
    last_event_id: str = "0"
    event_count: int = 0

    def count(self, state: TaskState) -> int:
        return sum(1 for task in self.tasks.values() if task.state is state)

    def counts(self) -> dict[str, int]:
        result = {state.value: 0 for state in TaskState}
        for task in self.tasks.values():
            result[task.state.value] += 1
        return result


class RunRecord(BaseModel):
    """A run's entry in the run index; a summary of its log, written at start and end."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    name: str
    tasks: int
    workdir: str
    started_at: float
    status: RunStatus
    finished_at: float | None = None


class Assignment(BaseModel):
    """One attempt handed to a worker: everything it needs without reading the plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    task: TaskSpec
    agent: AgentSpec
    attempt: int
    inputs: dict[str, str] = Field(default_factory=dict)  # parent task id -> output path
    workdir: str
    grace_s: float = 5.0

    @property
    def key(self) -> str:
        """Idempotency key of the attempt."""
        return f"{self.task.id}:{self.attempt}"


def event_to_json(event: Event) -> bytes:
    return event.model_dump_json().encode()


def event_from_json(data: bytes | str) -> Event:
    return EVENT_ADAPTER.validate_json(data)


def jsonable(value: Any) -> Any:
    """Plain-JSON form of a model, for ``--json`` outputs."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value
