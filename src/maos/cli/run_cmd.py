"""``maos run PLAN|TASK``: run a plan (a file, or planned from a task in words) with live progress.

First Ctrl-C drains (no new task starts, running ones finish); a second one cancels (running
agents are stopped: terminate, grace, kill, wait). SIGTERM cancels. Exit code 0 only when
the run succeeded; 1 when it failed; 130 when it was cancelled; 2 for bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import json
import math
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

from maos.agents.primer import Primer
from maos.cli._app import app
from maos.cli._choices import OnAnomaly, OnBudget, OnDeadlock, PermissionMode
from maos.cli._common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_USAGE,
    AuditOption,
    DoorTransportOption,
    JsonOption,
    S3EndpointOption,
    StoreOption,
    err_console,
    fail,
    shown,
    store_url,
)
from maos.cli.plan_cmd import TemplateOption

if TYPE_CHECKING:
    from rich.console import Console

    from maos.checkpoint.checkpointer import Checkpointer
    from maos.model import AgentSpec, Plan, RunConfig, RunState, TeamMember
    from maos.orchestrator import Orchestrator
    from maos.store.base import Store


@app.command()
def run(
    target: Annotated[
        str,
        typer.Argument(
            metavar="PLAN|TASK",
            help='A plan file (YAML or JSON), or a task in words ("Add a login endpoint"): it is '
            "planned first, as `maos plan` does.",
        ),
    ],
    agents: Annotated[
        int | None,
        typer.Option(
            "--agents",
            "-n",
            min=1,
            max=1000,
            help="Agents running at once: that many generalists, or at most that many of the team. "
            "Default: the team's size, else 4.",
            show_default=False,
        ),
    ] = None,
    agent: Annotated[
        list[str] | None,
        typer.Option(
            "--agent",
            metavar="ROLE[:N]",
            help="N agents (default 1) of ROLE (.claude/agents/ROLE.md gives its prompt, tools and "
            "model; its capabilities come from them) in the run's team (repeatable). Replaces the "
            "plan's agents:.",
            show_default=False,
        ),
    ] = None,
    team: Annotated[
        Path | None,
        typer.Option(
            "--team",
            metavar="FILE",
            help="The run's team from a file (YAML or JSON: a list of agents, or a plan's agents:); "
            "replaces the plan's agents:. With --agent, those agents are added.",
            show_default=False,
        ),
    ] = None,
    stall_timeout_s: Annotated[
        float,
        typer.Option(
            "--stall-timeout-s",
            min=0.1,
            max=7 * 86400,
            help="A ready task no agent of the run can take is reported at once, and cancelled after "
            "this many seconds (the run then fails, naming it).",
        ),
    ] = 300.0,
    door_calls_per_attempt: Annotated[
        int | None,
        typer.Option(
            "--door-calls-per-attempt",
            metavar="N",
            help="Door calls one attempt of a task may make (state writes, messages, reads of its "
            "inbox, added tasks, refusals); past it the door refuses its calls. Default: 100,000.",
            show_default=False,
        ),
    ] = None,
    door_bytes_per_attempt: Annotated[
        int | None,
        typer.Option(
            "--door-bytes-per-attempt",
            metavar="BYTES",
            help="Bytes of state values, messages and added tasks one attempt of a task may write "
            "through the door; past it the door refuses its calls. Default: 1 GiB.",
            show_default=False,
        ),
    ] = None,
    store: StoreOption = None,
    json_output: JsonOption = False,
    retry_base_s: Annotated[
        float, typer.Option("--retry-base-s", min=0, help="First retry backoff; doubles per attempt.")
    ] = 1.0,
    grace_s: Annotated[
        float,
        typer.Option("--grace-s", min=0, help="Seconds between SIGTERM and SIGKILL when stopping an agent."),
    ] = 5.0,
    workers_only: Annotated[
        bool,
        typer.Option("--workers-only", help="Run no agent here: hand every task to `maos worker` processes."),
    ] = False,
    use_serve: Annotated[
        bool | None,
        typer.Option(
            "--serve/--no-serve",
            help="Send the tasks to the live `maos serve` of this directory (its warm agents). "
            "Default: if one runs on this store, and no task needs a git worktree.",
            show_default=False,
        ),
    ] = None,
    lease_s: Annotated[
        float,
        typer.Option("--lease-s", min=0.5, max=3600, help="Heartbeat lease of orchestrator and workers."),
    ] = 15.0,
    max_cost_usd: Annotated[
        float | None,
        typer.Option("--max-cost-usd", min=0, help="Model spend limit in USD: at it, no new task starts."),
    ] = None,
    on_budget: Annotated[
        OnBudget, typer.Option("--on-budget", help="At the limit: let running tasks finish, or stop them.")
    ] = OnBudget.FINISH,
    memory_limit_mb: Annotated[
        float, typer.Option("--memory-limit-mb", min=1, help="An agent above this RSS is an anomaly.")
    ] = 500.0,
    on_anomaly: Annotated[
        OnAnomaly, typer.Option("--on-anomaly", help="What to do with an agent over its limits.")
    ] = OnAnomaly.WARN,
    warm: Annotated[
        int,
        typer.Option(
            "--warm", min=0, max=1000, help="Start N Claude Code agents ahead and reuse them (ADR 0005)."
        ),
    ] = 0,
    warm_primer: Annotated[
        Primer,
        typer.Option(
            "--warm-primer",
            help="How warm agents are primed: 'local' (/cost, free) or 'model': one short model "
            "request per warm agent, which takes ~70 ms off each agent's first task (with prompt "
            "caching the first task then reads the cached prefix).",
        ),
    ] = Primer.LOCAL,
    permission_mode: Annotated[
        PermissionMode | None,
        typer.Option(
            "--permission-mode",
            help="Claude Code permission mode of tasks whose plan and role set none. Default: "
            "acceptEdits for a task in its own git worktree (file edits there), the CLI's default "
            "elsewhere (edits denied).",
            show_default=False,
        ),
    ] = None,
    allowed_tools: Annotated[
        str | None,
        typer.Option(
            "--allowed-tools",
            metavar="TOOL,...",
            help="Tools Claude Code agents may use without asking, for tasks that list none "
            "(allowed_tools), e.g. 'Bash(git *),Write'.",
            show_default=False,
        ),
    ] = None,
    strict_permissions: Annotated[
        bool,
        typer.Option(
            "--strict-permissions",
            help="A denied tool call fails its task (not retried) instead of a warning.",
        ),
    ] = False,
    pass_env: Annotated[
        list[str] | None,
        typer.Option(
            "--pass-env",
            metavar="NAME[,NAME]",
            help="Environment variables every agent gets too (repeatable). Agents get only PATH, "
            "HOME, locale, their MAOS_* and, for Claude Code, model access (docs/door.md); never "
            "MAOS_KEY, MAOS_OLD_KEYS or MAOS_DASHBOARD_TOKEN.",
            show_default=False,
        ),
    ] = None,
    words: Annotated[
        bool, typer.Option("--words", help="The argument is a task in words, even if a file has that name.")
    ] = False,
    task: Annotated[bool, typer.Option("--task", hidden=True, help="Old name of --words.")] = False,
    template: TemplateOption = None,
    keep_branches: Annotated[
        bool,
        typer.Option(
            "--keep-branches", help="Keep each task's branch after a successful merge (default: deleted)."
        ),
    ] = False,
    dashboard: DashboardOption = False,
    dashboard_host: DashboardHostOption = "127.0.0.1",
    dashboard_port: DashboardPortOption = 8765,
    dashboard_linger: DashboardLingerOption = None,
    metrics_port: MetricsPortOption = None,
    checkpoint_every: CheckpointEveryOption = 30.0,
    checkpoints: CheckpointsOption = None,
    s3_endpoint: S3EndpointOption = None,
    keep_checkpoints: KeepOption = 10,
    audit: AuditOption = None,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            help="Start the run and return at once: a `maos supervisor` on the same store drives it.",
        ),
    ] = False,
    resource: Annotated[
        list[str] | None,
        typer.Option(
            "--resource",
            metavar="NAME=N[:shared]",
            help="Capacity of a resource tasks hold (their resources:), e.g. db=1; ':shared': every "
            "run on the store shares it. Repeatable; overrides the plan's resources: entry.",
            show_default=False,
        ),
    ] = None,
    on_deadlock: Annotated[
        OnDeadlock,
        typer.Option(
            "--on-deadlock",
            help="A wait-for cycle among tasks: 'resolve' (fail or requeue its lowest-priority "
            "task) or 'fail' the run naming the cycle.",
        ),
    ] = OnDeadlock.RESOLVE,
    door_transport: DoorTransportOption = None,
) -> None:
    """Run PLAN: every task a real agent process, as parallel as its dependencies allow.

    A task in words (an argument with spaces that is no file, or --words) is planned first
    like `maos plan "TASK"` does; the plan is shown, saved under .maos/plans/, then run."""
    from pydantic import ValidationError
    from rich.console import Console

    from maos.cli.plan_cmd import is_task_text, plan_task, print_overview
    from maos.model import RunConfig
    from maos.orchestrator import Orchestrator, new_run_id
    from maos.plan import analyze_plan, load_plan

    serve = _serving(dashboard, dashboard_host, dashboard_port, metrics_port, linger_s=dashboard_linger)
    saving = Saving(checkpoint_every, checkpoints, s3_endpoint, keep_checkpoints)
    try:
        config = RunConfig.model_validate(
            {
                "agents": agents or 4,
                "stall_timeout_s": stall_timeout_s,
                **(
                    {"door_calls_per_attempt": door_calls_per_attempt}
                    if door_calls_per_attempt is not None
                    else {}
                ),
                **(
                    {"door_bytes_per_attempt": door_bytes_per_attempt}
                    if door_bytes_per_attempt is not None
                    else {}
                ),
                "workdir": str(Path.cwd()),
                "retry_base_s": retry_base_s,
                "grace_s": grace_s,
                "max_cost_usd": max_cost_usd or None,
                "on_budget": on_budget.value,
                "memory_limit_mb": memory_limit_mb,
                "on_anomaly": on_anomaly.value,
                "keep_branches": keep_branches,
                "permission_mode": _permission_mode(permission_mode),
                "allowed_tools": _tool_list(allowed_tools),
                "strict_permissions": strict_permissions,
                "pass_env": tuple(
                    name.strip() for option in pass_env or () for name in option.split(",") if name.strip()
                ),
                "workers_only": workers_only,
                "on_deadlock": on_deadlock.value,
            }
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = str(problem["loc"][0]) if problem["loc"] else ""
        fail(f"--{field.replace('_', '-')}: {problem['msg']} (got {problem.get('input')!r})", EXIT_USAGE)
    if task:  # `logs --task` and `retry --task` take a task id: this switch is --words now
        err_console().print("[yellow]--task is deprecated here: use --words[/]")
    if words or task or is_task_text(target):
        # Planning may call a model: only once the other options are known to be good.
        from maos.paths import plans_dir

        plan = plan_task(target, template=template, record_dir=plans_dir(Path.cwd()))
        print_overview(Console(stderr=json_output, highlight=False), plan, analyze_plan(plan))
    else:
        if template is not None:
            fail(f"--template is for a task in words, and {target!r} is a plan file")
        plan = load_plan(Path(target))
    members = team_members(agent, team)
    if members:
        plan = plan.model_copy(update={"agents": members})
    crew = checked_team(plan, target if not (words or task or is_task_text(target)) else "plan", agents)
    config = config.model_copy(update={"agents": agents or len(crew)})
    in_words = words or task or is_task_text(target)
    plan = with_resource_options(plan, resource, "plan" if in_words else target)
    if not workers_only and not detach:
        workers_only = _to_serve(plan, store_url(store), use_serve, warm=warm, json_output=json_output)
        config = config.model_copy(update={"workers_only": workers_only})
    _preflight(plan, config, workers_only=workers_only)
    from maos.security import encrypts_by_default

    encrypts_by_default(store_url(store) or "sqlite")  # a bad MAOS_ENCRYPT: exit 2 before the run exists
    if detach:
        _detach(plan, config, store_url(store), lease_s=lease_s, json_output=json_output)
        return
    state = asyncio.run(
        _drive(
            lambda store: Orchestrator(
                store,
                plan,
                config,
                run_id=(run_id := new_run_id()),
                agents=crew,
                workers_only=workers_only,
                lease_s=lease_s,
                warm=warm,
                warm_primer=warm_primer,
                door_transport=door_transport,
                checkpointer=saving.checkpointer(run_id),
            ),
            store_url(store),
            json_output=json_output,
            start=lambda orchestrator: orchestrator.run(),
            verb="run",
            serve=serve,
            audit=audit,
        )
    )
    _exit_for(state)


def _to_serve(plan: Plan, url: str | None, use_serve: bool | None, *, warm: int, json_output: bool) -> bool:
    """Whether the run's tasks go to a live ``maos serve`` of this directory (ADR 0017): with
    ``--serve``, or by default when one runs on this store, the run asks for no pool of its
    own (``--warm``) and no task needs a git worktree (a serve runs tasks in the directory)."""
    if use_serve is False or (use_serve is None and warm):
        return False
    from maos.cli.serve_cmd import live_serve

    cwd = Path.cwd()
    worktrees = any(task.wants_worktree for task in plan.tasks) and any(
        (folder / ".git").exists() for folder in (cwd, *cwd.parents)
    )
    found = live_serve(url, cwd)
    if use_serve is None and (found is None or worktrees):
        return False
    if found is None:
        fail(f"--serve: no live `maos serve` (or `maos worker --warm`) of {cwd} on this store", EXIT_USAGE)
    note = (
        f"sending the tasks to maos serve {found.worker} ({found.size} warm Claude agents, "
        f"{found.idle} idle); --no-serve runs them here"
    )
    if worktrees:
        note += " (tasks run in the directory itself, not in git worktrees)"
    err_console().print(note, style="dim", highlight=False, markup=False)
    return True


def _detach(plan: Plan, config: RunConfig, url: str | None, *, lease_s: float, json_output: bool) -> None:
    """``run --detach``: record the run's start, hand it to the supervisors, say where it is."""
    from maos.orchestrator import Orchestrator, new_run_id
    from maos.store import open_store
    from maos.supervisor import live_supervisors

    async def start() -> tuple[str, list[str]]:
        opened = await open_store(url)
        try:
            orchestrator = Orchestrator(opened, plan, config, run_id=new_run_id(), lease_s=lease_s)
            await orchestrator.start_detached()
            return orchestrator.run_id, await live_supervisors(opened)
        finally:
            await opened.close()

    run_id, supervisors = asyncio.run(start())
    if json_output:
        typer.echo(json.dumps({"run_id": run_id, "status": "detached", "supervisors": supervisors}))
    else:
        typer.echo(f"run {run_id} started detached: `maos status {run_id}` follows it")
    if not supervisors:
        err_console().print(
            f"[yellow]no `maos supervisor` is running on this store: run one to drive {run_id} "
            f"(or `maos resume {run_id}`)[/]",
            soft_wrap=True,
        )


def with_resource_options(plan: Plan, options: list[str] | None, source: str) -> Plan:
    """``plan`` with the ``--resource`` capacities; exit 2 naming the option, or a
    ``PlanError`` naming each task and resource whose need no capacity meets."""
    from maos.resources import check_plan, parse_limit, with_limits

    limits = {}
    for option in options or ():
        try:
            name, limit = parse_limit(option)
        except ValueError as exc:
            fail(f"--resource {exc}", EXIT_USAGE)
        limits[name] = limit
    plan = with_limits(plan, limits)
    check_plan(plan, source)
    return plan


def team_members(agent_options: list[str] | None, team_file: Path | None) -> tuple[TeamMember, ...]:
    """The team given on the command line (``--team FILE`` then each ``--agent``); a
    ``PlanError`` naming the option and what is wrong (exit 2)."""
    from maos.errors import PlanError
    from maos.team import load_team_file, parse_agent_option

    members: list[TeamMember] = []
    if team_file is not None:
        try:
            members.extend(load_team_file(team_file))
        except PlanError as exc:
            raise PlanError([f"--team: {line}" for line in exc.problems]) from exc
    for option in agent_options or ():
        try:
            members.append(parse_agent_option(option))
        except ValueError as exc:
            raise PlanError(f"--agent: {exc}") from exc
    return tuple(members)


def checked_team(plan: Plan, source: str, agents: int | None) -> tuple[AgentSpec, ...]:
    """The run's agents: the plan's team (roles from ./.claude/agents and the user's), else
    ``--agents`` generalists. A ``PlanError`` names each task no agent of them can take, and
    why (exit 2)."""
    from maos.errors import PlanError
    from maos.orchestrator import default_agents
    from maos.team import plan_team, team_problems

    try:
        crew = plan_team(plan, Path.cwd()) or default_agents(agents or 4)
    except PlanError as exc:
        raise PlanError([f"{source}: {line}" for line in exc.problems]) from exc
    problems = team_problems(plan, crew, source)
    if problems:
        hint = "" if plan.agents else " (add them with --agent ROLE[:N], --team FILE or the plan's agents:)"
        raise PlanError([*problems, f"no agent of the run can take {len(problems)} task(s){hint}"])
    return crew


def _permission_mode(option: PermissionMode | None) -> str | None:
    """``--permission-mode``, checked before anything runs (exit 2): Claude Code refuses
    bypassPermissions to root."""
    if option is PermissionMode.BYPASS_PERMISSIONS and hasattr(os, "geteuid") and os.geteuid() == 0:
        fail("--permission-mode bypassPermissions: Claude Code refuses it when run as root", EXIT_USAGE)
    return None if option is None else option.value


def _tool_list(option: str | None) -> tuple[str, ...]:
    """``--allowed-tools A,B(x, y),C``: split at the commas outside parentheses."""
    if option is None:
        return ()
    tools: list[str] = []
    depth, current = 0, ""
    for char in option:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            tools.append(current.strip())
            current = ""
        else:
            current += char
    tools.append(current.strip())
    if not all(tools):
        fail(f"--allowed-tools {option!r}: an empty tool name", EXIT_USAGE)
    return tuple(tools)


def _preflight(plan: Plan, config: RunConfig, *, workers_only: bool) -> None:
    """Before any agent starts: Claude Code tasks need a model (exit 2 naming the ways to
    set one up); say what agents may do to the files they work on."""
    if workers_only or all(task.command is not None for task in plan.tasks):
        return  # command tasks need no model; `maos worker` processes bring their own
    from maos.agents.claude_code import NO_MODEL, model_access
    from maos.agents.workspace import in_repository

    if model_access() is None:
        fail(NO_MODEL, EXIT_USAGE)
    if config.permission_mode is not None:
        note = f"--permission-mode {config.permission_mode} for tasks and roles that set none"
    elif in_repository(Path(config.workdir)):
        note = (
            "Claude Code agents may edit files in their own worktrees (acceptEdits); other "
            "tools need allowed_tools, a role's tools or --allowed-tools"
        )
    else:
        note = (
            f"not a git repository, so agents work in {config.workdir} itself, with Claude Code's "
            "default permissions: file edits are denied there (--permission-mode acceptEdits "
            "allows them; in a git repository each task edits its own worktree)"
        )
    err_console().print(f"permissions: {note}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run to continue.")],
    store: StoreOption = None,
    json_output: JsonOption = False,
    workers_only: WorkersOnlyOption = False,
    lease_s: LeaseOption = 15.0,
    dashboard: DashboardOption = False,
    dashboard_host: DashboardHostOption = "127.0.0.1",
    dashboard_port: DashboardPortOption = 8765,
    dashboard_linger: DashboardLingerOption = None,
    metrics_port: MetricsPortOption = None,
    checkpoint_every: CheckpointEveryOption = 30.0,
    checkpoints: CheckpointsOption = None,
    s3_endpoint: S3EndpointOption = None,
    keep_checkpoints: KeepOption = 10,
    audit: AuditOption = None,
) -> None:
    """Continue a run whose orchestrator died: finished tasks stay finished, the rest run.

    It starts from the newest valid checkpoint (an older one if the newest is corrupt, and it
    says so) and the event log after it."""
    serve = _serving(dashboard, dashboard_host, dashboard_port, metrics_port, linger_s=dashboard_linger)
    saving = Saving(checkpoint_every, checkpoints, s3_endpoint, keep_checkpoints)

    async def reopen(opened: Store) -> Orchestrator:
        """The run's orchestrator, the run read once (``Orchestrator.resume_from``)."""
        from maos.cli._ids import resolve_run_id
        from maos.orchestrator import Orchestrator

        full_id = await resolve_run_id(opened, run_id)  # the full id of a prefix
        checkpointer = saving.checkpointer(full_id)
        try:
            orchestrator = await Orchestrator.resume_from(
                opened, full_id, checkpointer=checkpointer, workers_only=workers_only, lease_s=lease_s
            )
        except BaseException:
            await checkpointer.blobs.close()
            raise
        if orchestrator.state.status.finished:
            await checkpointer.blobs.close()
            raise _NothingToResume(orchestrator.state)
        return orchestrator

    try:
        result = asyncio.run(
            _drive(
                reopen,
                store_url(store),
                json_output=json_output,
                start=lambda orchestrator: orchestrator.resume(),
                verb="resuming",
                serve=serve,
                audit=audit,
            )
        )
    except _NothingToResume as finished:
        # Nothing to continue: say so instead of "resuming" and an old summary.
        state = finished.state
        if json_output:
            from maos.summary import run_summary

            typer.echo(json.dumps(run_summary(state), indent=2))
        err_console().print(
            f"run {state.run_id} has finished ({state.status.value}): nothing to resume. "
            f"`maos retry {state.run_id}` runs its failed, cancelled and skipped tasks again; "
            f"`maos status {state.run_id}` shows what happened.",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return
    _exit_for(result)


class _NothingToResume(Exception):
    """``resume`` of a finished run: ``state`` is where it ended."""

    def __init__(self, state: RunState) -> None:
        super().__init__(state.run_id)
        self.state = state


@app.command()
def retry(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The finished run to open again.")],
    failed: Annotated[
        bool, typer.Option("--failed", help="Every failed, cancelled or skipped task (the default).")
    ] = False,
    task_ids: Annotated[
        list[str] | None,
        typer.Option("--task", metavar="ID", help="This task (repeatable) and its skipped dependents."),
    ] = None,
    plan_file: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            help="The fixed plan: the same tasks and dependencies; only the retried tasks may change.",
        ),
    ] = None,
    store: StoreOption = None,
    json_output: JsonOption = False,
    workers_only: WorkersOnlyOption = False,
    lease_s: LeaseOption = 15.0,
    dashboard: DashboardOption = False,
    dashboard_host: DashboardHostOption = "127.0.0.1",
    dashboard_port: DashboardPortOption = 8765,
    dashboard_linger: DashboardLingerOption = None,
    metrics_port: MetricsPortOption = None,
    checkpoint_every: CheckpointEveryOption = 30.0,
    checkpoints: CheckpointsOption = None,
    s3_endpoint: S3EndpointOption = None,
    keep_checkpoints: KeepOption = 10,
    audit: AuditOption = None,
) -> None:
    """Run a finished run's failed, cancelled and skipped tasks again, after fixing the cause.

    Every task that succeeded keeps its result (and its merged work); the retried tasks keep
    counting attempts in the same log. With --plan, the fixed plan replaces the run's."""
    serve = _serving(dashboard, dashboard_host, dashboard_port, metrics_port, linger_s=dashboard_linger)
    saving = Saving(checkpoint_every, checkpoints, s3_endpoint, keep_checkpoints)
    from maos import scheduler
    from maos.consensus import expand_replicas
    from maos.plan import load_plan

    state = _replayed(store_url(store), run_id)
    run_id = state.run_id  # the full id (a unique prefix was given)
    if not state.status.finished:
        fail(f"run {run_id} is {state.status.value}, not finished: `maos resume {run_id}` continues it")
    assert state.plan is not None  # a replayed run has started
    if failed and task_ids:
        fail("--failed and --task: give one of them (--failed is the default)")
    try:
        chosen = scheduler.to_retry(state, scheduler.PlanIndex.build(state.plan), task_ids or ())
    except ValueError as exc:
        fail(f"--task: {exc}")
    if not chosen:
        err_console().print(f"nothing to retry: every task of run {run_id} succeeded", highlight=False)
        return
    fixed = None
    if plan_file is not None:
        fixed = expand_replicas(load_plan(plan_file))
        problems = scheduler.retry_plan_problems(state.plan, fixed, chosen)
        if problems:
            fail(f"--plan {plan_file}: " + "; ".join(problems))
    err_console().print(
        f"retrying {len(chosen)} task(s) of run {run_id}: {', '.join(chosen)} "
        "(the tasks that succeeded keep their results)",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    result = asyncio.run(
        _drive(
            lambda opened: reopened(
                opened, state, saving, workers_only=workers_only, lease_s=lease_s, plan=fixed
            ),
            store_url(store),
            json_output=json_output,
            start=lambda orchestrator: orchestrator.retry(chosen, fixed),
            verb="retrying",
            serve=serve,
            audit=audit,
        )
    )
    _exit_for(result)


def _replayed(url: str | None, run_id: str) -> RunState:
    """The run's state from its log; ``run_id`` may be a unique start of one (``RunNotFound``
    when it names no run)."""
    from maos.cli._ids import resolve_run_id
    from maos.eventlog import EventLog
    from maos.store import open_store

    async def load() -> RunState:
        opened = await open_store(url)
        try:
            return await EventLog(opened, await resolve_run_id(opened, run_id)).replay()
        finally:
            await opened.close()

    return asyncio.run(load())


def reopened(
    opened: Store,
    state: RunState,
    saving: Saving,
    *,
    workers_only: bool,
    lease_s: float,
    plan: Plan | None = None,
) -> Orchestrator:
    """The orchestrator that opens ``state``'s finished run again (retry) with its recorded
    settings; ``plan``: a fixed plan."""
    from maos.orchestrator import Orchestrator

    assert state.plan is not None  # a replayed run has started
    assert state.config is not None
    return Orchestrator(
        opened,
        plan or state.plan,
        state.config,
        run_id=state.run_id,
        agents=tuple(state.agents.values()),
        workers_only=workers_only,
        lease_s=lease_s,
        checkpointer=saving.checkpointer(state.run_id),
    )


WorkersOnlyOption = Annotated[
    bool, typer.Option("--workers-only", help="Hand every task to `maos worker` processes.")
]
LeaseOption = Annotated[float, typer.Option("--lease-s", min=0.5, max=3600, help="Heartbeat lease.")]
CheckpointEveryOption = Annotated[
    float,
    typer.Option("--checkpoint-every-s", min=1, help="Seconds between full checkpoints (also one per task)."),
]
CheckpointsOption = Annotated[
    str | None,
    typer.Option(
        "--checkpoints",
        help="Where checkpoints go: a directory (default .maos/checkpoints) or s3://BUCKET/PREFIX.",
    ),
]
KeepOption = Annotated[int, typer.Option("--keep-checkpoints", min=1, help="Full checkpoints kept per run.")]


@dataclass(frozen=True)
class Saving:
    every_s: float
    url: str | None
    s3_endpoint: str | None
    keep: int

    def checkpointer(self, run_id: str, workdir: Path | None = None) -> Checkpointer:
        """Encrypted checkpoints of the run (the key from MAOS_KEY or .maos/key, created once);
        relative places are taken from ``workdir`` (default: the current directory)."""
        from maos.blobs import open_blob_store
        from maos.checkpoint.checkpointer import Checkpointer
        from maos.paths import state_dir
        from maos.security import load_or_create_key

        workdir = workdir or Path.cwd()
        key = load_or_create_key(state_dir(workdir))
        if key.created:
            err_console().print(
                f"created the checkpoint key {key.source} (mode 0600); back it up: without it "
                "checkpoints cannot be read (or set MAOS_KEY)",
                soft_wrap=True,
            )
        url = self.url or os.environ.get("MAOS_CHECKPOINTS")
        blobs = open_blob_store(url, workdir=workdir, endpoint_url=self.s3_endpoint)
        return Checkpointer(run_id, blobs, key, every_s=self.every_s, keep=self.keep)


DashboardOption = Annotated[
    bool, typer.Option("--dashboard", help="Serve the live dashboard during the run.")
]
DashboardHostOption = Annotated[
    str, typer.Option("--dashboard-host", help="Dashboard address; not loopback needs MAOS_DASHBOARD_TOKEN.")
]
DashboardPortOption = Annotated[
    int, typer.Option("--dashboard-port", min=0, max=65535, help="Dashboard port.")
]
MetricsPortOption = Annotated[
    int | None,
    typer.Option("--metrics-port", min=0, max=65535, help="Serve Prometheus /metrics on this port."),
]
DashboardLingerOption = Annotated[
    float | None,
    typer.Option(
        "--dashboard-linger-s",
        min=0,
        max=7 * 86400,
        metavar="S",
        help="Keep the dashboard up S seconds after the run ends (Enter or Ctrl-C stops it sooner). "
        "Default: until Enter or Ctrl-C in a terminal, else stop at once.",
    ),
]


@dataclass(frozen=True)
class Serving:
    dashboard: bool
    host: str
    port: int
    metrics_port: int | None
    token: str | None
    linger_s: float | None = None  # after the run; None: until Enter/Ctrl-C on a terminal, else 0


def _serving(
    dashboard: bool, host: str, port: int, metrics_port: int | None, *, linger_s: float | None = None
) -> Serving:
    """Check the dashboard options before anything runs (a bad bind, ``InsecureBind``, is
    exit 2 at once)."""
    if linger_s is not None and not 0 <= linger_s <= 7 * 86400:  # NaN fails too
        fail(f"--dashboard-linger-s: expected seconds from 0 to {7 * 86400}, got {linger_s}", EXIT_USAGE)
    if not dashboard and metrics_port is None:
        return Serving(dashboard, host, port, metrics_port, None, linger_s)  # no web import (0.1 s)
    from maos.web.auth import TOKEN_ENV, check_bind

    token = os.environ.get(TOKEN_ENV) or None
    if dashboard:  # /metrics alone listens on loopback, which needs no token
        check_bind(host, token)
    return Serving(dashboard, host, port, metrics_port, token, linger_s)


@contextlib.asynccontextmanager
async def _servers(
    serve: Serving, store: Store, orchestrator: Orchestrator, console: Console
) -> AsyncIterator[None]:
    """The dashboard and /metrics of this run, for as long as it runs; then the dashboard
    lingers (``_linger``) so the final state can be looked at. As the server stops, the page
    says so (it long-polls ``/api/server``)."""
    if not serve.dashboard and serve.metrics_port is None:
        yield
        return
    from maos.metrics import MetricsObserver
    from maos.web import create_app, create_metrics_app, serve_in_background
    from maos.web.auth import allowed_hosts, hosts_from_env

    metrics = MetricsObserver()
    orchestrator.hooks.append(metrics.observe)
    dashboard_url: str | None = None
    async with contextlib.AsyncExitStack() as servers:
        if serve.dashboard:
            hosts = allowed_hosts(serve.host, hosts_from_env(os.environ))  # MAOS_DASHBOARD_HOSTS
            app = create_app(
                store, run_id=orchestrator.run_id, token=serve.token, metrics=metrics, allowed_hosts=hosts
            )
            server = await servers.enter_async_context(serve_in_background(app, serve.host, serve.port))
            dashboard_url = server.url
            console.print(f"dashboard: {server.url}")
        if serve.metrics_port is not None:
            app = create_metrics_app(metrics, token=serve.token)
            server = await servers.enter_async_context(
                serve_in_background(app, "127.0.0.1", serve.metrics_port)
            )
            console.print(f"metrics: {server.url}metrics")
        yield
        if dashboard_url is not None:  # the run ended (not an error): let its final state be seen
            await _linger(serve.linger_s, dashboard_url, console)


async def _linger(linger_s: float | None, url: str, console: Console) -> None:
    """Wait ``linger_s`` seconds, or for Enter (a terminal's stdin) or Ctrl-C / SIGTERM.

    ``None``: until Enter or Ctrl-C when someone is at a terminal (stdin and the console we
    print on are terminals), else not at all: a script or a test that captures the output
    is never left waiting. Ctrl-C here only ends the wait: the run has finished, there is
    nothing left to drain or cancel (these handlers replace the run's; ``_drive`` removes
    them after the servers stop).
    """
    interactive = _is_terminal(0) and _is_terminal(console.file)
    if linger_s is None:
        linger_s = math.inf if interactive else 0.0
    if linger_s <= 0:
        return
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reading = False
    if interactive:

        def on_input() -> None:
            with contextlib.suppress(OSError):
                os.read(0, 4096)  # a line (canonical mode) or b"" at end of input: both stop
            stop.set()

        try:
            loop.add_reader(0, on_input)
            reading = True
        except (OSError, ValueError, NotImplementedError):
            pass
    how = "press Enter to stop" if reading else "Ctrl-C stops it"
    until = "" if math.isinf(linger_s) else f" for {linger_s:g}s"
    console.print(f"dashboard still at {url}{until} — {how}", highlight=False)
    try:
        async with asyncio.timeout(None if math.isinf(linger_s) else linger_s):
            await stop.wait()
    except TimeoutError:
        pass
    finally:
        if reading:
            loop.remove_reader(0)
    console.print("dashboard stopping", highlight=False)


def _is_terminal(file: int | IO[str]) -> bool:
    try:
        return os.isatty(file if isinstance(file, int) else file.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


async def _drive(
    make: Callable[[Store], Orchestrator | Awaitable[Orchestrator]],
    url: str | None,
    *,
    json_output: bool,
    start: Callable[[Orchestrator], Awaitable[RunState]],
    verb: str,
    serve: Serving,
    audit: str | None = None,
) -> RunState:
    from rich.console import Console

    from maos.audit import AuditMirror, open_audit_sink
    from maos.cli.progress import ProgressView
    from maos.store import open_store

    store = await open_store(url)
    try:
        made = make(store)
        orchestrator = made if not inspect.isawaitable(made) else await made
        sink = await open_audit_sink(audit, workdir=Path(orchestrator.config.workdir))
        mirror = AuditMirror(sink, store, orchestrator.run_id)
        action = {"resuming": "resume", "retrying": "retry"}.get(verb, verb)
        plan = orchestrator.plan
        config = orchestrator.config
        console = Console(stderr=json_output, highlight=False)
        view = ProgressView(console)
        if not json_output:
            orchestrator.hooks.append(view.hook)
        interrupts = 0

        def on_interrupt() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts == 1:
                view.note(
                    "Ctrl-C: draining — no new task starts, running ones finish. "
                    "Press Ctrl-C again to cancel them.",
                    style="yellow",
                )
                orchestrator.request_drain()
            else:
                view.note("Ctrl-C again: cancelling — stopping the running agents", style="red")
                mirror.note("cancel", "requested", reason="Ctrl-C twice")
                orchestrator.request_cancel()

        def on_terminate() -> None:
            view.note("SIGTERM: cancelling — stopping the running agents", style="red")
            mirror.note("cancel", "requested", reason="SIGTERM")
            orchestrator.request_cancel()

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
        loop.add_signal_handler(signal.SIGTERM, on_terminate)
        try:
            async with _servers(serve, store, orchestrator, console), mirror.following():
                # named once its ports are bound: a busy port stops it before the run exists
                if not json_output:
                    console.print(
                        f"{verb} [bold]{orchestrator.run_id}[/]: plan {shown(repr(plan.name))}, "
                        f"{len(plan.tasks)} tasks, {config.agents} agents (store {shown(store.url)})"
                    )
                await mirror.command(action, "started")
                if not json_output:
                    view.start()
                try:
                    result = await start(orchestrator)
                except BaseException as exc:
                    mirror.note(action, "error", reason=str(exc)[:500] or type(exc).__name__)
                    raise
                finally:
                    view.stop()
                mirror.note(action, result.status.value, reason=result.summary[:500])
                # the final screen comes before a dashboard lingers on it
                _report(result, json_output=json_output)
                return result
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
            for warning in orchestrator.restore_warnings:
                err_console().print(f"[yellow]checkpoint: {warning}[/]", soft_wrap=True)
            if orchestrator.checkpointer is not None:
                await orchestrator.checkpointer.blobs.close()
            await sink.close()
    finally:
        await store.close()


def _where_the_work_went(result: RunState, workdir: Path) -> list[str]:
    """Lines naming where the agents' file changes are: the merge branch (and how to take
    it), or the run's directory itself when it is not a git repository."""
    from maos.agents.workspace import in_repository, integration_branch

    if result.plan is None or not any(task.wants_worktree for task in result.plan.tasks):
        return []
    branch = integration_branch(workdir, result.run_id)
    if branch is not None:
        return [
            f"work: merged into branch {branch} (your checkout is untouched); "
            f"see it with `git log --stat {branch}`, take it with `git merge {branch}`"
        ]
    if not in_repository(workdir):
        return [
            f"work: written straight into {workdir} (not a git repository: no worktrees, no merge "
            "branch; `git init` first to give each task its own)"
        ]
    return []


def _report(result: RunState, *, json_output: bool) -> None:
    """The final screen: the summary line, where the work went, denied tool calls and how
    to allow them, the report, and what failed (or one JSON document with ``--json``)."""
    from rich.console import Console

    from maos.model import RunStatus
    from maos.paths import report_file
    from maos.sanitize import printable
    from maos.summary import against_sequential, denials_line, run_summary

    summary = run_summary(result)
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
    else:
        counts = ", ".join(f"{name} {number}" for name, number in summary["counts"].items())
        makespan = summary["makespan_s"] or 0.0
        line = f"run {result.run_id} [bold]{result.status.value}[/] in {makespan:.2f}s: {counts}"
        if summary["cost_usd"]:
            line += (
                f"; ${summary['cost_usd']:.4f}, {summary['input_tokens'] + summary['output_tokens']} tokens"
            )
        if summary["speedup_vs_sequential"]:
            speed = against_sequential(summary["speedup_vs_sequential"])
            line += f"; {speed} than running the tasks one by one"
        out = Console(highlight=False)
        out.print(line)
        workdir = Path(result.config.workdir if result.config else ".")
        for where in _where_the_work_went(result, workdir):
            out.print(where, markup=False, soft_wrap=True)
        denials = denials_line(result)
        if denials:
            err_console().print(denials, style="yellow", markup=False, highlight=False, soft_wrap=True)
        report = report_file(workdir, result.run_id)
        if report.exists():
            out.print(f"report: {report}", markup=False, soft_wrap=True)
        if result.status is not RunStatus.SUCCEEDED and result.summary:
            # The summary quotes agents' stderr: escaped, never read as markup or escapes.
            err_console().print(
                printable(result.summary, keep_newlines=True),
                style="red",
                highlight=False,
                soft_wrap=True,
                markup=False,
            )


def _exit_for(result: RunState) -> None:
    """Exit 0 when the run succeeded, 130 when it was cancelled, 1 otherwise."""
    from maos.model import RunStatus

    if result.status is RunStatus.SUCCEEDED:
        return
    raise typer.Exit(EXIT_CANCELLED if result.status is RunStatus.CANCELLED else EXIT_FAILED)
