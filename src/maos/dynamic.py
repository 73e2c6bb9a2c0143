"""Dynamic subtasks (FR-1.2): deciding on a running agent's request for a new task.

An agent asks through the door (``add_task``); the request is a ``task_add_requested`` event.
The orchestrator answers with ``task_added`` or ``task_add_refused`` and a reason the agent
sees as its tool result. A request is refused when:

- the spec is not a valid task (the field and what was expected are named): e.g. an id that
  cannot name a branch, a NUL byte in ``command`` or any text that reaches a process;
- its id is taken, or a dependency or a blocked task is unknown;
- a blocked task has already left PENDING (it may be running: it cannot wait any more);
- it needs a resource the run does not have, or more units than its capacity;
- the run would exceed its task limit, or the agent asks faster than its spawn rate;
- the new edges would close a cycle (printed ``a -> b -> a``);
- it would let its agent do more than the adding task's (``wider_than_adder``): variables the
  adding task was not passed, another permission mode, tools beyond the adding task's, or
  work outside a worktree when the adding task works in one. (Grants are capped by the door,
  ``Door._capped``.)

Pure: state and request in, decision out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from pydantic import ValidationError

from maos.documents import DocumentError, check_depth
from maos.errors import PlanError
from maos.events import TaskAddRequested
from maos.model import MAX_PLAN_TASKS, RunState, TaskSpec, TaskState
from maos.plan.validate import validate_plan

SPAWN_WINDOW_S = 60.0
NARROW_PERMISSION_MODES = frozenset({"default", "plan", "dontAsk"})
"""Permission modes a task added by an agent may ask for whatever the adding task's: each
lets the CLI run only what is allowed beforehand (or nothing, ``plan``)."""


@dataclass(frozen=True, slots=True)
class Quotas:
    max_tasks: int = MAX_PLAN_TASKS
    adds_per_minute: int = 30  # per requesting agent


def _spec_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "spec"
        parts.append(f"field {where!r}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def wider_than_adder(spec: TaskSpec, adder: TaskSpec, *, worktrees: bool = True) -> str | None:
    """Why ``spec``, asked for by an agent of task ``adder``, would let its own agent do more
    than that agent may (None when it would not): the way around a role's limits that
    ``add_task`` must not be. ``worktrees``: the run's directory is a git repository, so
    tasks that want a worktree get one."""
    extra_env = sorted(set(spec.pass_env) - set(adder.pass_env))
    if extra_env:
        return (
            f"field 'pass_env': {', '.join(extra_env)} not passed to the adding task {adder.id!r}; "
            "a task an agent adds gets only variables its own task gets"
        )
    mode = spec.permission_mode
    if mode is not None and mode != adder.permission_mode and mode not in NARROW_PERMISSION_MODES:
        return (
            f"field 'permission_mode': {mode!r} is not the adding task's "
            f"({adder.permission_mode or 'unset'}); allowed: that, or one of "
            f"{', '.join(sorted(NARROW_PERMISSION_MODES))}"
        )
    extra_tools = [tool for tool in spec.allowed_tools if tool not in adder.allowed_tools]
    if extra_tools:
        return (
            f"field 'allowed_tools': {', '.join(extra_tools)} not allowed to the adding task "
            f"{adder.id!r}; a task an agent adds may list only tools its own task lists"
        )
    if (
        spec.command is None
        and spec.role != adder.role
        and not (spec.allowed_tools and spec.permission_mode is not None)
    ):
        return (
            f"field 'role': {spec.role!r} is not the adding task's role ({adder.role!r}); a Claude "
            "task of another role takes its tools and permission mode from that role's file, so "
            "it must list allowed_tools and permission_mode itself (within the adding task's)"
        )
    if worktrees and adder.wants_worktree and not spec.wants_worktree:
        return (
            f"field 'isolation': the adding task {adder.id!r} works in a git worktree; a task it "
            "adds must too (isolation: worktree), not in the run's own directory"
        )
    return None


def decide_addition(
    state: RunState,
    request: TaskAddRequested,
    *,
    recent_adds: deque[float],
    now: float,
    quotas: Quotas = Quotas(),
    worktrees: bool = True,
) -> TaskSpec | str:
    """The task to add, or the reason for refusing. ``recent_adds`` holds the times of the
    requesting agent's accepted additions (updated by the caller); ``worktrees``: whether the
    run's tasks work in git worktrees (``wider_than_adder``)."""
    assert state.plan is not None
    try:
        check_depth(request.spec)
        spec = TaskSpec.model_validate(request.spec)
    except DocumentError as exc:
        return f"invalid task: {exc}"
    except ValidationError as exc:
        return f"invalid task: {_spec_errors(exc)}"
    if spec.id in state.tasks:
        return f"task id {spec.id!r} is already in the run"
    adder = next((task for task in state.plan.tasks if task.id == request.by_task), None)
    if adder is None:
        return f"the adding task {request.by_task!r} is not in the run"
    wider = wider_than_adder(spec, adder, worktrees=worktrees)
    if wider is not None:
        return wider
    for name, units in spec.resources.items():  # the run's capacities are all known now
        limit = state.plan.resources.get(name)
        if limit is None:
            declared = ", ".join(sorted(state.plan.resources)) or "none"
            return f"field 'resources': resource {name!r} is not one of the run's ({declared})"
        if units > limit.capacity:
            return f"field 'resources': needs {units} unit(s) of {name!r}, whose capacity is {limit.capacity}"
    unknown = [dep for dep in spec.depends_on if dep not in state.tasks]
    if unknown:
        return f"depends_on names unknown task(s): {', '.join(unknown)}"
    for blocked in request.blocks:
        task = state.tasks.get(blocked)
        if task is None:
            return f"blocks names unknown task {blocked!r}"
        if task.state is not TaskState.PENDING:
            return f"cannot make task {blocked!r} wait: it is already {task.state.value}"
    if len(state.tasks) + 1 > quotas.max_tasks:
        return f"the run already has {len(state.tasks)} tasks; the limit is {quotas.max_tasks}"
    while recent_adds and recent_adds[0] < now - SPAWN_WINDOW_S:
        recent_adds.popleft()
    if len(recent_adds) >= quotas.adds_per_minute:
        return (
            f"agent {request.agent_id} added {len(recent_adds)} tasks in the last minute; "
            f"the limit is {quotas.adds_per_minute}"
        )
    blocked_ids = set(request.blocks)
    tasks = tuple(
        old.model_copy(update={"depends_on": (*old.depends_on, spec.id)}) if old.id in blocked_ids else old
        for old in state.plan.tasks
    )
    try:
        validate_plan(state.plan.model_copy(update={"tasks": (*tasks, spec)}), "add_task")
    except PlanError as exc:
        return "; ".join(problem.removeprefix("add_task: ") for problem in exc.problems)
    return spec
