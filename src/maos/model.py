"""Domain types: what a plan is, what a task goes through, what an agent is, what a run is now.

Everything here is data. Lifecycles are ``str`` enums whose legal transitions live in one
table each (``TASK_TRANSITIONS``); ``TaskState.check(new)`` raises ``IllegalTransition`` for
anything else. ``RunState`` is what folding a run's events yields; the events and the
reducer that folds them are ``maos.events``.
"""

from __future__ import annotations

import enum
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from maos.errors import IllegalTransition
from maos.numbers import MAX_FLOAT, MAX_INT64
from maos.permissions import Grants

# A task id names a git branch (``maos/tasks/<run>/<id>``), a worktree folder and output
# files, so it must be valid as all three: dots only between other characters (no ``..``,
# no trailing ``.``), 1-64 characters, not ending in ``.lock``; and it never holds ``@``,
# which retry branches use (``<id>@<n>``).
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$"
TASK_ID_MAX_CHARS = 64
TASK_ID_RULE = (
    "1-64 letters, digits, '_', '-' or '.', starting with a letter or digit; a '.' only "
    "between two other characters, and not ending in '.lock'"
)
_TASK_ID_RE = re.compile(TASK_ID_PATTERN)
MAX_ARG_BYTES = 64 * 1024
"""Largest single string a task puts on a command line (Linux refuses one over 128 KiB)."""
MAX_COMMAND_BYTES = 256 * 1024
"""Largest ``command`` list in all (Linux allows about 2 MiB of arguments and environment)."""
MAX_TITLE_BYTES = 4096
MAX_NAME_BYTES = 256  # role, kind, model, a capability
MAX_ALLOWED_TOOLS_BYTES = 64 * 1024
_TEXT_FIELDS = (
    "id", "title", "prompt", "role", "kind", "capabilities", "depends_on", "command", "model",
    "allowed_tools", "replica_of",
)  # fmt: skip
MAX_PLAN_TASKS = 10_000
NEVER_PASSED_ENV = ("MAOS_KEY", "MAOS_OLD_KEYS", "MAOS_DASHBOARD_TOKEN", "MAOS_AUDIT")
"""Variables no agent gets, even when a plan or ``--pass-env`` names them (``maos.agents.environment``)."""
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_env_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` if each is a variable name an agent may be given, else ``ValueError``."""
    for name in names:
        if not _ENV_NAME_RE.fullmatch(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        if name in NEVER_PASSED_ENV:
            raise ValueError(f"{name} is never passed to agents (a MAOS secret)")
    return names


PermissionMode = Literal["default", "manual", "acceptEdits", "auto", "bypassPermissions", "dontAsk", "plan"]
"""Claude Code's ``--permission-mode`` choices (CLI 2.1.332; ``default`` is the old name of ``manual``).
``bypassPermissions`` is refused by the CLI when it runs as root."""


def now() -> float:
    """Wall-clock seconds; the one clock events are stamped with."""
    return time.time()


# --------------------------------------------------------------------------- plans

RESOURCE_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
"""A resource name (``db``, ``gpu``, ``test-db``): a letter, then up to 63 letters, digits, '_', '.', '-'."""
MAX_RESOURCE_UNITS = 1_000_000
ResourceName = Annotated[str, Field(pattern=RESOURCE_NAME_PATTERN)]
ResourceUnits = Annotated[int, Field(ge=1, le=MAX_RESOURCE_UNITS)]


class ResourceLimit(BaseModel):
    """How many units of one resource may be held at once (``maos.resources``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    capacity: int = Field(ge=1, le=MAX_RESOURCE_UNITS, description="units that may be held at once")
    shared: bool = Field(
        default=False,
        description="true: the capacity is shared by every run on the store (a cross-run semaphore); "
        "false: it is this run's alone",
    )


class After(BaseModel):
    """``after: [{task, delay_s}]``: start only ``delay_s`` seconds after ``task`` succeeded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = Field(description="a task this one depends on (added to depends_on)")
    delay_s: float = Field(
        default=0.0, ge=0, le=30 * 86400, allow_inf_nan=False, description="seconds to wait"
    )


MAX_START_DELAY_S = 30 * 86400
"""The longest a task may be held back: ``not_before.delay_s``, or a ``not_before`` time ahead
of when the plan is checked (a run waits, holding nothing, but nobody waits years)."""


def utc_timestamp(moment: datetime) -> float:
    """Unix seconds of ``moment``; a time without a zone is UTC (as plans say)."""
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


class StartDelay(BaseModel):
    """``not_before: {delay_s, task}``: a delay after a dependency (or, without ``task``, after
    all of the task's dependencies succeeded; for a task without any, after the run started)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delay_s: float = Field(ge=0, le=MAX_START_DELAY_S, allow_inf_nan=False, description="seconds to wait")
    task: str | None = Field(
        default=None, description="the dependency the delay counts from (added to depends_on)"
    )


class TaskSpec(BaseModel):
    """One node of the DAG, as written in a plan file."""

    # A number for not_before is Unix seconds, however large (pydantic would read one above
    # 2e10 as milliseconds: 1e11, in the year 5138, as 1973).
    model_config = ConfigDict(extra="forbid", frozen=True, val_temporal_unit="seconds")

    id: str = Field(
        pattern=TASK_ID_PATTERN, max_length=TASK_ID_MAX_CHARS, description="unique within the plan"
    )
    title: str = Field(default="", description="a short human title, shown in reports and commit messages")
    prompt: str = Field(
        default="",
        description="the agent's instructions; a command gets them on stdin and in MAOS_TASK",
    )
    role: str = Field(
        default="general",
        description="the kind of agent; .claude/agents/<role>.md, if any, gives its prompt, tools, model",
    )
    kind: str = Field(default="", description="task kind for history matching; defaults to role")
    capabilities: tuple[str, ...] = Field(
        default=(), description="capabilities an agent must all have to take the task"
    )
    depends_on: tuple[str, ...] = Field(
        default=(),
        description="ids of the tasks that must succeed first; their answers reach this one in MAOS_INPUTS",
    )
    priority: int = Field(default=0, description="higher runs first among ready tasks")
    timeout_s: float = Field(
        default=600.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds an attempt may run before it is stopped",
    )
    max_attempts: int = Field(
        default=3, ge=1, le=100, description="attempts before the task fails; retries back off exponentially"
    )
    command: str | tuple[str, ...] | None = Field(
        default=None, description="command runtime: a string runs with sh -c, a list runs as is"
    )
    isolation: Literal["auto", "worktree", "none"] = Field(
        default="auto",
        description="worktree: own git worktree and branch, merged on success; auto: worktree for "
        "Claude Code tasks when the run's directory is a git repository",
    )
    # The claude-code runtime's settings (the command runtime ignores them).
    model: str | None = Field(default=None, description="claude-code: model name or alias (--model)")
    allowed_tools: tuple[str, ...] = Field(
        default=(),
        description="claude-code: tools allowed without asking (--allowedTools), e.g. 'Bash(git *)'",
    )
    permission_mode: PermissionMode | None = Field(
        default=None, description="claude-code: --permission-mode; None leaves the CLI's default"
    )
    max_turns: int | None = Field(default=None, ge=1, description="claude-code: --max-turns per attempt")
    max_budget_usd: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="claude-code: --max-budget-usd per attempt"
    )
    replicas: int = Field(default=1, ge=1, le=20, description="run on N agents in parallel and aggregate")
    consensus: Literal["majority", "weighted", "judge"] = Field(
        default="majority", description="how replicas' answers are aggregated"
    )
    quorum: int | None = Field(
        default=None, ge=1, description="answers needed; default: a majority of replicas"
    )
    replica_of: str | None = Field(default=None, description="set by MAOS on the replicas it creates")
    idle_timeout_s: float = Field(
        default=300.0,
        gt=0,
        allow_inf_nan=False,
        description="claude-code: stop an agent silent this long (timeout_s bounds the whole attempt)",
    )
    grants: Grants | None = Field(
        default=None,
        description="what the task's agent may do through the door (state keys, messages, results, "
        "add_task); unset fields come from its role's file, then the defaults (docs/door.md)",
    )
    pass_env: tuple[str, ...] = Field(
        default=(),
        description="variables of MAOS's environment the agent gets too (agents get PATH, HOME, locale, "
        "their MAOS_* and, for Claude Code, model access; see docs/door.md); never MAOS_KEY, "
        "MAOS_OLD_KEYS or MAOS_DASHBOARD_TOKEN",
    )
    # Resource and timing dependencies (maos.resources, maos.timing; ADR 0013).
    resources: dict[ResourceName, ResourceUnits] = Field(
        default_factory=dict,
        description="units of the plan's resources each attempt holds from its start to its end, "
        "e.g. {db: 1}; no two attempts hold more than a resource's capacity at once",
    )
    not_before: datetime | StartDelay | None = Field(
        default=None,
        description="do not start before: a time (ISO 8601, UTC unless it says otherwise, or Unix "
        "seconds; at most 30 days ahead), or {delay_s, task}: seconds after that dependency succeeded "
        "(without task: after all dependencies succeeded, or after the run started)",
    )
    after: tuple[After, ...] = Field(
        default=(),
        description="[{task, delay_s}]: each task becomes a dependency, and this one starts at least "
        "delay_s seconds after it succeeded",
    )
    deadline_s: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="seconds after the run started by which the task must have finished; past it "
        "on_deadline applies (a running attempt is stopped)",
    )
    on_deadline: Literal["fail", "skip"] = Field(
        default="fail",
        description="past deadline_s: fail (the task fails for good, and the run with it) or skip "
        "(the task and what depends on it are skipped; the run can still succeed)",
    )

    @model_validator(mode="before")
    @classmethod
    def _timing_tasks_are_dependencies(cls, data: Any) -> Any:
        """``after`` tasks and ``not_before.task`` are dependencies: add them to ``depends_on``."""
        if not isinstance(data, dict):
            return data
        # Anything malformed is left as it is: the fields' own validation says what is wrong.
        extra: list[str] = []
        after = data.get("after") or ()
        for item in after if isinstance(after, list | tuple) else ():
            task = item.get("task") if isinstance(item, dict) else getattr(item, "task", None)
            if isinstance(task, str):
                extra.append(task)
        start = data.get("not_before")
        task = start.get("task") if isinstance(start, dict) else getattr(start, "task", None)
        if isinstance(task, str):
            extra.append(task)
        if not extra:
            return data
        deps = data.get("depends_on") or ()
        if not isinstance(deps, list | tuple) or not all(isinstance(dep, str) for dep in deps):
            return data
        return {**data, "depends_on": tuple(dict.fromkeys((*deps, *extra)))}

    @field_validator("pass_env")
    @classmethod
    def _env_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_env_names(value)

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, value: str | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
        if value is not None and len(value) == 0:
            raise ValueError("must not be empty")
        if isinstance(value, tuple) and sum(len(_utf8(item)) + 1 for item in value) > MAX_COMMAND_BYTES:
            raise ValueError(f"the command is longer than {MAX_COMMAND_BYTES} bytes in all")
        return value

    @field_validator("id", "replica_of")
    @classmethod
    def _id_not_a_lock_file(cls, value: str | None) -> str | None:
        if value is not None and value.lower().endswith(".lock"):
            raise ValueError("a task id must not end in '.lock' (git refuses such branch names)")
        return value

    # What reaches a command line, the environment or a file name: text without NUL bytes
    # (no process can receive one), valid Unicode, and short enough for one argument.
    @field_validator(*_TEXT_FIELDS)
    @classmethod
    def _text_a_process_can_take(
        cls, value: str | tuple[str, ...] | None, info: ValidationInfo
    ) -> str | tuple[str, ...] | None:
        limit = _FIELD_BYTES.get(info.field_name or "")
        items = (value,) if isinstance(value, str) else value or ()
        for number, item in enumerate(items):
            where = "" if isinstance(value, str) else f"item {number + 1}: "
            if "\x00" in item:
                raise ValueError(f"{where}must not contain a NUL byte (\\0): no process can receive one")
            size = len(_utf8(item))
            if limit is not None and size > limit:
                raise ValueError(f"{where}{size} bytes, more than the limit of {limit}")
        if info.field_name == "allowed_tools" and sum(len(_utf8(item)) + 1 for item in value or ()) > (
            MAX_ALLOWED_TOOLS_BYTES
        ):
            raise ValueError(f"the tools are longer than {MAX_ALLOWED_TOOLS_BYTES} bytes in all")
        return value

    @property
    def task_kind(self) -> str:
        return self.kind or self.role

    @property
    def wants_worktree(self) -> bool:
        return self.isolation == "worktree" or (self.isolation == "auto" and self.command is None)

    @property
    def runtime(self) -> Literal["command", "claude-code", "consensus"]:
        """Which runtime runs this task: ``consensus`` aggregates the replicas of a task with
        ``replicas > 1``; else ``command`` when it has one, else Claude Code."""
        if self.replicas > 1:
            return "consensus"
        return "command" if self.command is not None else "claude-code"

    @property
    def needed(self) -> int:
        """Replica answers a consensus needs (the quorum)."""
        return self.quorum or self.replicas // 2 + 1

    @property
    def argv(self) -> list[str] | None:
        """The command as an argv list (``sh -c`` for a string), or None."""
        if self.command is None:
            return None
        if isinstance(self.command, str):
            return ["sh", "-c", self.command]
        return list(self.command)


AGENT_ID_MAX_CHARS = TASK_ID_MAX_CHARS  # of an entry's id; a count adds "-<n>"
MAX_TEAM_AGENTS = 1000  # agents of a team at most: as many as ``RunConfig.agents`` allows


class TeamMember(BaseModel):
    """One entry of a plan's ``agents:`` (or of ``--team FILE``, or one ``--agent ROLE[:N]``):
    ``count`` agents of one role. ``maos.team.build_team`` turns the entries into ``AgentSpec``s."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(
        default=None,
        pattern=TASK_ID_PATTERN,
        max_length=AGENT_ID_MAX_CHARS,
        description="the agent's id; with a count above 1 the agents are <id>-1 .. <id>-N; default: the role",
    )
    role: str = Field(
        default="general",
        min_length=1,
        description="the agents' role: .claude/agents/<role>.md, if any, gives their prompt, tools and model",
    )
    count: int = Field(default=1, ge=1, le=100, description="how many agents of this kind")
    capabilities: tuple[str, ...] | None = Field(
        default=None,
        description="what the agents can do: a task goes only to an agent that has every one of its "
        "capabilities; default: derived from the role's tools and description (docs/teams.md)",
    )
    runtime: Literal["claude-code", "command"] | None = Field(
        default=None, description="the only kind of task the agents take; default: both"
    )
    model: str | None = Field(
        default=None, description="claude-code: the agents' model for tasks that set none (--model)"
    )

    @field_validator("role", "model", "capabilities")
    @classmethod
    def _names(cls, value: str | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
        for item in (value,) if isinstance(value, str) else value or ():
            if not item.strip() or "\x00" in item or len(_utf8(item)) > MAX_NAME_BYTES:
                shown = repr(item) if len(item) <= 40 else f"{item[:37]!r}..."
                raise ValueError(f"{shown}: expected a non-empty name of at most {MAX_NAME_BYTES} bytes")
        return value

    @model_validator(mode="after")
    def _has_an_id(self) -> TeamMember:
        if self.id is None and (not _TASK_ID_RE.fullmatch(self.role) or len(self.role) > AGENT_ID_MAX_CHARS):
            raise ValueError(f"the role {self.role!r} is not a valid agent id: give the agents an 'id'")
        return self

    @property
    def base_id(self) -> str:
        return self.id or self.role

    @property
    def agent_ids(self) -> tuple[str, ...]:
        if self.count == 1:
            return (self.base_id,)
        return tuple(f"{self.base_id}-{n}" for n in range(1, self.count + 1))


class Plan(BaseModel):
    """A named DAG of tasks. Structural checks live in ``maos.plan.validate``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200, description="the plan's name, shown by maos runs")
    description: str = Field(default="", description="what the plan is for, in a sentence or two")
    tasks: tuple[TaskSpec, ...] = Field(description="the tasks: the nodes of the DAG")
    agents: tuple[TeamMember, ...] = Field(
        default=(),
        description="the team: the agents the run has, by role and count (default: `maos run "
        "--agents N` generalists); `maos run --agent`/`--team` replace it",
    )
    resources: dict[ResourceName, ResourceLimit] = Field(
        default_factory=dict,
        description="the run's resources and their capacities, e.g. {db: 1, gpu: {capacity: 2, "
        "shared: true}}; tasks hold units of them (maos run --resource NAME=N sets them too)",
    )

    @field_validator("resources", mode="before")
    @classmethod
    def _capacity_shorthand(cls, value: Any) -> Any:
        """``db: 1`` is short for ``db: {capacity: 1}``."""
        if isinstance(value, dict):
            return {
                name: {"capacity": limit} if isinstance(limit, int) and not isinstance(limit, bool) else limit
                for name, limit in value.items()
            }
        return value

    def task(self, task_id: str) -> TaskSpec:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)

    def by_id(self) -> dict[str, TaskSpec]:
        return {task.id: task for task in self.tasks}


def is_valid_task_id(value: str) -> bool:
    return (
        len(value) <= TASK_ID_MAX_CHARS
        and _TASK_ID_RE.fullmatch(value) is not None
        and not value.lower().endswith(".lock")
    )


_FIELD_BYTES: dict[str, int] = {
    "title": MAX_TITLE_BYTES,
    "role": MAX_NAME_BYTES,
    "kind": MAX_NAME_BYTES,
    "capabilities": MAX_NAME_BYTES,
    "model": MAX_NAME_BYTES,
    "command": MAX_ARG_BYTES,
    "allowed_tools": MAX_ARG_BYTES,
}


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8; ``ValueError`` for a lone surrogate (JSON's ``"\\ud800"``), which no
    file, command line or environment can carry."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None


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

RETRYABLE_TASK_STATES = frozenset({TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED})
"""Terminal states short of success: what ``maos retry`` sends back to PENDING (``run_retried``)."""

# -> FAILED before a start, and ASSIGNED/RUNNING -> SKIPPED: a deadline passed
# (``task_deadline_passed``) or a deadlock was resolved (``deadlock_resolved``).
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.PENDING: frozenset({TaskState.READY, TaskState.SKIPPED, TaskState.CANCELLED, TaskState.FAILED}),
    TaskState.READY: frozenset(
        {TaskState.ASSIGNED, TaskState.SKIPPED, TaskState.CANCELLED, TaskState.FAILED}
    ),
    # ASSIGNED -> READY: the assignment was lost (agent or worker died before starting it).
    TaskState.ASSIGNED: frozenset(
        {
            TaskState.RUNNING,
            TaskState.READY,
            TaskState.RETRY_WAIT,
            TaskState.FAILED,
            TaskState.CANCELLED,
            TaskState.SKIPPED,
        }
    ),
    TaskState.RUNNING: frozenset(
        {
            TaskState.SUCCEEDED,
            TaskState.RETRY_WAIT,
            TaskState.FAILED,
            TaskState.READY,
            TaskState.CANCELLED,
            TaskState.SKIPPED,
        }
    ),
    TaskState.RETRY_WAIT: frozenset(
        {TaskState.READY, TaskState.CANCELLED, TaskState.SKIPPED, TaskState.FAILED}
    ),
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
    # The only kind of task it takes (``TaskSpec.runtime``); None: any. Runs started before
    # teams recorded "command" here for every agent, when the field restricted nothing.
    runtime: Literal["command", "claude-code"] | None = None
    capabilities: tuple[str, ...] = ()
    model: str | None = None  # claude-code: its model for tasks that set none


class AgentRole(BaseModel):
    """One agent type, read from one definition file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    tools: tuple[str, ...] | None = Field(
        default=None, description="Claude Code tool names the role may use; None: all tools"
    )
    model: str | None = Field(default=None, description="sonnet | opus | haiku | inherit | a model id")
    permission_mode: PermissionMode | None = None
    max_turns: int | None = Field(default=None, ge=1)
    system_prompt: str = Field(default="", description="the file's body")
    source: Path
    scope: Literal["project", "user"] = "project"
    extra: dict[str, Any] = Field(default_factory=dict, description="front-matter keys MAOS does not use")


DOOR_CALLS_PER_ATTEMPT: Final = 100_000
"""Default of ``RunConfig.door_calls_per_attempt``: far more than an agent coordinating through
the door makes, far less than a loop can (each call is a log entry, kept for the run)."""
DOOR_BYTES_PER_ATTEMPT: Final = 1 << 30
"""Default of ``RunConfig.door_bytes_per_attempt`` (1 GiB: 4,096 state values at their cap)."""


class RunConfig(BaseModel):
    """How a run was started; recorded in ``run_started`` so a resume uses the same settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: int = Field(default=4, ge=1, le=1000)
    workdir: str
    retry_base_s: float = Field(default=1.0, ge=0, le=3600, allow_inf_nan=False)
    retry_max_s: float = Field(default=60.0, ge=0, le=86400, allow_inf_nan=False)
    grace_s: float = Field(default=5.0, ge=0, le=3600, allow_inf_nan=False)
    memory_limit_mb: float = Field(
        default=500.0, gt=0, allow_inf_nan=False, description="an agent above it is an anomaly"
    )
    max_cost_usd: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="the run's model spend limit"
    )
    on_budget: Literal["finish", "stop"] = "finish"  # at the limit: let running tasks finish, or stop them
    on_anomaly: Literal["warn", "restart", "fail"] = "warn"
    circuit_threshold: int = Field(default=5, ge=1, description="consecutive model API failures that open it")
    circuit_cooldown_s: float = Field(
        default=30.0, gt=0, le=86400, allow_inf_nan=False, description="first wait before a probe"
    )
    permission_mode: PermissionMode | None = Field(
        default=None,
        description="claude-code: --permission-mode of tasks whose plan and role set none; None: "
        "acceptEdits for a task in its own worktree, the CLI's default elsewhere",
    )
    allowed_tools: tuple[str, ...] = Field(
        default=(), description="claude-code: --allowedTools of tasks that list none"
    )
    strict_permissions: bool = Field(
        default=False, description="claude-code: a denied tool call fails the task, without a retry"
    )
    keep_branches: bool = Field(
        default=False, description="keep the task branches a successful run merged (default: deleted)"
    )
    pass_env: tuple[str, ...] = Field(
        default=(), description="variables of MAOS's environment every agent gets too (maos run --pass-env)"
    )
    workers_only: bool = Field(
        default=False, description="every task goes to `maos worker` processes (also after a takeover)"
    )
    stall_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=7 * 86400,
        allow_inf_nan=False,
        description="a task ready with no agent of the run able to take it is cancelled after this "
        "long, and the run fails naming it (it is reported at once)",
    )
    on_deadlock: Literal["resolve", "fail"] = Field(
        default="resolve",
        description="a wait-for cycle: resolve it (the lowest-priority task on it is failed or "
        "requeued) or fail the run naming the cycle (maos.deadlock)",
    )
    door_calls_per_attempt: int = Field(
        default=DOOR_CALLS_PER_ATTEMPT,
        ge=1,
        le=MAX_INT64,
        description="door calls one attempt of a task may make (state writes, messages, reads of "
        "its inbox, subscriptions, added tasks, refusals); past it the door refuses its calls (maos.door)",
    )
    door_bytes_per_attempt: int = Field(
        default=DOOR_BYTES_PER_ATTEMPT,
        ge=1,
        le=MAX_INT64,
        description="bytes of state values, messages and added tasks one attempt of a task may write "
        "through the door; past it the door refuses its calls (maos.door)",
    )

    @field_validator("pass_env")
    @classmethod
    def _env_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_env_names(value)


# --------------------------------------------------------------------------- run state


class FitnessScores(BaseModel):
    """Why a task went to its agent: the three parts of the fitness (each in [0, 1]) and the
    total ``0.4 capability + 0.3 workload + 0.3 history`` (``maos.scheduler``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    capability: float
    workload: float
    history: float
    total: float
    candidates: int = Field(default=1, ge=0, description="free agents that could take it then")


class Usage(BaseModel):
    """Model cost and tokens of an attempt (or, added up, of a task or a run)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Read back from logs (store contents): amounts, so never negative, NaN or infinite.
    cost_usd: float = Field(default=0.0, ge=0, le=MAX_FLOAT, allow_inf_nan=False)
    input_tokens: int = Field(default=0, ge=0)  # uncached prompt tokens
    output_tokens: int = Field(default=0, ge=0)
    cache_read_tokens: int = Field(default=0, ge=0)
    cache_creation_tokens: int = Field(default=0, ge=0)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            cost_usd=self.cost_usd + other.cost_usd,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_creation_tokens=self.cache_creation_tokens + other.cache_creation_tokens,
        )


class TaskRun(BaseModel):
    """What the event log says about one task so far."""

    model_config = ConfigDict(extra="forbid")

    state: TaskState = TaskState.PENDING
    attempts: int = 0  # attempts started so far (the number of the current one)
    failures: int = 0  # failed attempts; the task fails for good at max_attempts
    agent_id: str | None = None
    pid: int | None = None
    worker: str | None = None
    ready_at: float | None = None  # when it first became READY: a retried task keeps its place
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    exit_code: int | None = None
    reason: str = ""
    stderr_tail: str = ""
    retry_at: float | None = None
    output_path: str = ""
    warnings: list[str] = Field(default_factory=list)
    session_id: str | None = None  # of the latest attempt that reported one
    usage: Usage | None = None  # summed over the attempts that reported usage
    api_retries: int = 0  # model API calls its agents retried
    cpu_percent: float | None = None  # latest sample of the running attempt
    rss_bytes: int | None = None
    anomalies: list[str] = Field(default_factory=list)
    consensus: str | None = None  # "strategy: winning replica" once a consensus decided
    fitness: FitnessScores | None = None  # why its latest attempt went to its agent
    stalled: str = ""  # READY with no agent able to take it, and why ("" once assigned)

    @property
    def attention(self) -> str | None:
        """Why the agent on this running task looks blocked, or why no agent takes this ready
        task, or None (the "needs attention" mark)."""
        if self.stalled and self.state is TaskState.READY:
            return f"no agent can take it: {self.stalled}"
        if self.state not in (TaskState.ASSIGNED, TaskState.RUNNING):
            return None
        denials = sum(1 for warning in self.warnings if "denied" in warning.lower())
        if denials >= 2:
            return f"{denials} permission denials"
        if self.api_retries >= 3:
            return f"{self.api_retries} model API retries (rate limits or overload)"
        if any(note.startswith("idle:") for note in self.anomalies):
            return "no output past its idle timeout"
        return None


MAX_REJECTIONS = 100
"""Rejected events a ``RunState`` keeps in full (the newest); ``RunState.rejected`` counts all."""


class Rejection(BaseModel):
    """An event of the log that changed nothing, and why (see ``maos.events.apply``).

    Stale reports (an attempt that is no longer the task's current one: its worker was cut
    off, presumed dead, and the task moved on) and events the lifecycle does not allow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str
    type: str
    task_id: str | None = None
    attempt: int | None = None
    stale: bool = Field(description="a report of an attempt that is no longer current")
    reason: str
    ts: float


class RunState(BaseModel):
    """The fold of a run's events. Built only by ``maos.events.apply``, which keeps the plan's
    tasks and ``tasks`` the same and the plan one that can be laid out (no cycle)."""

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
    drain_reason: str = ""  # why no new task starts (Ctrl-C, budget reached)
    last_event_id: str = "0"
    event_count: int = 0
    interruptions: int = 0  # times the run was resumed or retried: its makespan includes waiting
    rejected: int = 0  # events that changed nothing (stale reports, illegal transitions, unreadable)
    stale_reports: int = 0  # of which: reports of attempts that were no longer current
    rejections: list[Rejection] = Field(default_factory=list)  # the newest MAX_REJECTIONS
    lost_agents: dict[str, str] = Field(default_factory=dict)  # agent id -> why it was lost
    waits: dict[str, list[str]] = Field(
        default_factory=dict, description="'task:attempt' -> tasks that attempt's agent waits for"
    )
    _applied: bool = PrivateAttr(default=True)

    @property
    def applied(self) -> bool:
        """Whether the event folded last changed the run (False: it was rejected or stale).
        Observers of the fold (metrics, the dashboard, the orchestrator's views) skip such
        events instead of repeating the reducer's rules."""
        return self._applied

    def count(self, state: TaskState) -> int:
        return sum(1 for task in self.tasks.values() if task.state is state)

    def counts(self) -> dict[str, int]:
        result = {state.value: 0 for state in TaskState}
        for task in self.tasks.values():
            result[task.state.value] += 1
        return result

    def usage(self) -> Usage:
        """Cost and tokens of the whole run so far."""
        return sum((task.usage for task in self.tasks.values() if task.usage is not None), Usage())


class RunRecord(BaseModel):
    """A run's entry in the run index; a summary of its log, written at start and end.

    Read from the store, which is untrusted: a time that is not a finite number (``1e999``,
    ``NaN``, ``Infinity``) makes the record unreadable, like any other bad field, so that no
    reader sorts by it, prints it or sends it as JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    run_id: str
    name: str
    tasks: int
    workdir: str
    started_at: float
    status: RunStatus
    finished_at: float | None = None
    owner: str | None = None  # the orchestrator that wrote this record, and its lease epoch
    epoch: int = 0


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
    role: AgentRole | None = None  # the .claude/agents definition the attempt runs as
    resume_session: str | None = None  # claude-code: continue this session (after a restart)
    resume_agent: str | None = None  # the agent whose CLAUDE_CONFIG_DIR holds its transcript
    replica_weights: dict[str, float] = Field(default_factory=dict)  # consensus: replica -> weight
    pass_env: tuple[str, ...] = ()  # the run's --pass-env names (the task's own are in task.pass_env)
    epoch: int = 0  # the orchestrator's lease epoch: a worker runs and reports it only while current

    @property
    def key(self) -> str:
        """Idempotency key of the attempt."""
        return f"{self.task.id}:{self.attempt}"
