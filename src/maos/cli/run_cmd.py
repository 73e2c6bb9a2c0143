"""``maos run PLAN|TASK``: run a plan (a file, or planned from a task in words) with live progress.

First Ctrl-C drains (no new task starts, running ones finish); a second one cancels (running
agents are stopped: terminate, grace, kill, wait). SIGTERM cancels. Exit code 0 only when
the run succeeded; 1 when it failed; 130 when it was cancelled; 2 for bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from maos.agents.primer import Primer
from maos.cli._app import app
from maos.cli._common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_USAGE,
    JsonOption,
    StoreOption,
    err_console,
    fail,
    store_url,
)
from maos.cli.plan_cmd import TemplateOption

if TYPE_CHECKING:
    from rich.console import Console

    from maos.checkpoint import Checkpointer
    from maos.model import RunState
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
        int, typer.Option("--agents", "-n", min=1, max=1000, help="Agents running at once.")
    ] = 4,
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
    lease_s: Annotated[
        float,
        typer.Option("--lease-s", min=0.5, max=3600, help="Heartbeat lease of orchestrator and workers."),
    ] = 15.0,
    max_cost: Annotated[
        float | None,
        typer.Option("--max-cost", min=0, help="Model spend limit in USD: at it, no new task starts."),
    ] = None,
    on_budget: Annotated[
        str, typer.Option("--on-budget", help="At the limit: 'finish' running tasks or 'stop' them.")
    ] = "finish",
    memory_limit_mb: Annotated[
        float, typer.Option("--memory-limit-mb", min=1, help="An agent above this RSS is an anomaly.")
    ] = 500.0,
    on_anomaly: Annotated[
        str, typer.Option("--on-anomaly", help="warn | restart | fail an agent over its limits.")
    ] = "warn",
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
    task: Annotated[
        bool, typer.Option("--task", help="The argument is a task in words, even if a file has that name.")
    ] = False,
    template: TemplateOption = None,
    dashboard: DashboardOption = False,
    dashboard_host: DashboardHostOption = "127.0.0.1",
    dashboard_port: DashboardPortOption = 8765,
    metrics_port: MetricsPortOption = None,
    checkpoint_every: CheckpointEveryOption = 30.0,
    checkpoints: CheckpointsOption = None,
    s3_endpoint: S3EndpointOption = None,
    keep_checkpoints: KeepOption = 10,
) -> None:
    """Run PLAN: every task a real agent process, as parallel as its dependencies allow.

    A task in words (an argument with spaces that is no file, or --task) is planned first
    like `maos plan "TASK"` does; the plan is shown, saved under .maos/plans/, then run."""
    from pydantic import ValidationError
    from rich.console import Console

    from maos.cli.plan_cmd import is_task_text, load_plan_file, plan_task, print_overview
    from maos.errors import MaosError
    from maos.model import RunConfig
    from maos.orchestrator import Orchestrator, new_run_id
    from maos.plan import analyze_plan

    serve = _serving(dashboard, dashboard_host, dashboard_port, metrics_port)
    saving = Saving(checkpoint_every, checkpoints, s3_endpoint, keep_checkpoints)
    if on_budget not in ("finish", "stop"):
        fail(f"--on-budget {on_budget!r}: expected 'finish' or 'stop'")
    if on_anomaly not in ("warn", "restart", "fail"):
        fail(f"--on-anomaly {on_anomaly!r}: expected 'warn', 'restart' or 'fail'")
    try:
        config = RunConfig.model_validate(
            {
                "agents": agents,
                "workdir": str(Path.cwd()),
                "retry_base_s": retry_base_s,
                "grace_s": grace_s,
                "max_cost_usd": max_cost or None,
                "on_budget": on_budget,
                "memory_limit_mb": memory_limit_mb,
                "on_anomaly": on_anomaly,
            }
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = str(problem["loc"][0]) if problem["loc"] else ""
        option = {"max_cost_usd": "--max-cost"}.get(field, "--" + field.replace("_", "-"))
        fail(f"{option}: {problem['msg']} (got {problem.get('input')!r})", EXIT_USAGE)
    if task or is_task_text(target):
        # Planning may call a model: only once the other options are known to be good.
        plan = plan_task(target, template=template, record_dir=Path.cwd() / ".maos" / "plans")
        print_overview(Console(stderr=json_output, highlight=False), plan, analyze_plan(plan))
    else:
        if template is not None:
            fail(f"--template is for a task in words, and {target!r} is a plan file")
        plan = load_plan_file(Path(target))
    try:
        state = asyncio.run(
            _drive(
                lambda store: Orchestrator(
                    store,
                    plan,
                    config,
                    run_id=(run_id := new_run_id()),
                    workers_only=workers_only,
                    lease_s=lease_s,
                    warm=warm,
                    warm_primer=warm_primer,
                    checkpointer=saving.checkpointer(run_id),
                ),
                store_url(store),
                json_output=json_output,
                resume=False,
                serve=serve,
            )
        )
    except MaosError as exc:
        fail(str(exc), EXIT_FAILED)
    _finish(state, json_output=json_output)


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run to continue.")],
    store: StoreOption = None,
    json_output: JsonOption = False,
    workers_only: Annotated[
        bool, typer.Option("--workers-only", help="Hand every task to `maos worker` processes.")
    ] = False,
    lease_s: Annotated[float, typer.Option("--lease-s", min=0.5, max=3600, help="Heartbeat lease.")] = 15.0,
    dashboard: DashboardOption = False,
    dashboard_host: DashboardHostOption = "127.0.0.1",
    dashboard_port: DashboardPortOption = 8765,
    metrics_port: MetricsPortOption = None,
    checkpoint_every: CheckpointEveryOption = 30.0,
    checkpoints: CheckpointsOption = None,
    s3_endpoint: S3EndpointOption = None,
    keep_checkpoints: KeepOption = 10,
) -> None:
    """Continue a run whose orchestrator died: finished tasks stay finished, the rest run.

    It starts from the newest valid checkpoint (an older one if the newest is corrupt, and it
    says so) and the event log after it."""
    serve = _serving(dashboard, dashboard_host, dashboard_port, metrics_port)
    saving = Saving(checkpoint_every, checkpoints, s3_endpoint, keep_checkpoints)
    from maos.errors import MaosError
    from maos.events import EventLog
    from maos.orchestrator import Orchestrator

    async def build(opened: Store) -> Orchestrator:
        state = await EventLog(opened, run_id).replay()
        assert state.plan is not None
        assert state.config is not None
        return Orchestrator(
            opened,
            state.plan,
            state.config,
            run_id=run_id,
            agents=tuple(state.agents.values()),
            workers_only=workers_only,
            lease_s=lease_s,
            checkpointer=saving.checkpointer(run_id),
        )

    try:
        result = asyncio.run(
            _drive(build, store_url(store), json_output=json_output, resume=True, serve=serve)
        )
    except MaosError as exc:
        fail(str(exc), EXIT_FAILED)
    _finish(result, json_output=json_output)


CheckpointEveryOption = Annotated[
    float,
    typer.Option("--checkpoint-every", min=1, help="Seconds between full checkpoints (also one per task)."),
]
CheckpointsOption = Annotated[
    str | None,
    typer.Option(
        "--checkpoints",
        help="Where checkpoints go: a directory (default .maos/checkpoints) or s3://BUCKET/PREFIX.",
    ),
]
S3EndpointOption = Annotated[str | None, typer.Option("--s3-endpoint", help="S3-compatible endpoint URL.")]
KeepOption = Annotated[int, typer.Option("--keep-checkpoints", min=1, help="Full checkpoints kept per run.")]


@dataclass(frozen=True)
class Saving:
    every_s: float
    url: str | None
    s3_endpoint: str | None
    keep: int

    def checkpointer(self, run_id: str) -> Checkpointer:
        """Encrypted checkpoints of the run (the key from MAOS_KEY or .maos/key, created once)."""
        from maos.blobs import open_blob_store
        from maos.checkpoint import Checkpointer
        from maos.security import load_or_create_key

        workdir = Path.cwd()
        key = load_or_create_key(workdir / ".maos")
        if key.created:
            err_console().print(
                f"created the checkpoint key {key.source} (mode 0600); back it up: without it "
                "checkpoints cannot be read (or set MAOS_KEY)"
            )
        url = self.url or os.environ.get("MAOS_CHECKPOINTS")
        endpoint = self.s3_endpoint or os.environ.get("MAOS_S3_ENDPOINT")
        blobs = open_blob_store(url, workdir=workdir, endpoint_url=endpoint)
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


@dataclass(frozen=True)
class Serving:
    dashboard: bool
    host: str
    port: int
    metrics_port: int | None
    token: str | None


def _serving(dashboard: bool, host: str, port: int, metrics_port: int | None) -> Serving:
    """Check the dashboard options before anything runs (a bad bind is exit 2, at once)."""
    from maos.web.auth import TOKEN_ENV, InsecureBind, check_bind

    token = os.environ.get(TOKEN_ENV) or None
    if dashboard:
        try:
            check_bind(host, token)
        except InsecureBind as exc:
            fail(str(exc), EXIT_USAGE)
    return Serving(dashboard, host, port, metrics_port, token)


@contextlib.asynccontextmanager
async def _servers(
    serve: Serving, store: Store, orchestrator: Orchestrator, console: Console
) -> AsyncIterator[None]:
    """The dashboard and /metrics of this run, for as long as it runs."""
    if not serve.dashboard and serve.metrics_port is None:
        yield
        return
    from maos.metrics import MetricsObserver
    from maos.web import create_app, create_metrics_app, serve_in_background

    metrics = MetricsObserver()
    orchestrator.hooks.append(metrics.observe)
    async with contextlib.AsyncExitStack() as servers:
        if serve.dashboard:
            app = create_app(store, run_id=orchestrator.run_id, token=serve.token, metrics=metrics)
            server = await servers.enter_async_context(serve_in_background(app, serve.host, serve.port))
            console.print(f"dashboard: {server.url}")
        if serve.metrics_port is not None:
            app = create_metrics_app(metrics, token=serve.token)
            server = await servers.enter_async_context(
                serve_in_background(app, "127.0.0.1", serve.metrics_port)
            )
            console.print(f"metrics: {server.url}metrics")
        yield


async def _drive(
    make: Callable[[Store], Orchestrator | Awaitable[Orchestrator]],
    url: str | None,
    *,
    json_output: bool,
    resume: bool,
    serve: Serving,
) -> RunState:
    from rich.console import Console

    from maos.cli.progress import ProgressView
    from maos.store import open_store

    store = await open_store(url)
    try:
        made = make(store)
        orchestrator = made if not inspect.isawaitable(made) else await made
        plan = orchestrator.plan
        config = orchestrator.config
        console = Console(stderr=json_output, highlight=False)
        view = ProgressView(console)
        if not json_output:
            orchestrator.hooks.append(view.hook)
            verb = "resuming" if resume else "run"
            console.print(
                f"{verb} [bold]{orchestrator.run_id}[/]: plan {plan.name!r}, {len(plan.tasks)} tasks, "
                f"{config.agents} agents (store {store.url})"
            )
        interrupts = 0

        def on_interrupt() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts == 1:
                err_console().print("[yellow]draining: no new tasks start; Ctrl-C again to cancel[/]")
                orchestrator.request_drain()
            else:
                err_console().print("[red]cancelling: stopping running agents[/]")
                orchestrator.request_cancel()

        def on_terminate() -> None:
            err_console().print("[red]SIGTERM: cancelling[/]")
            orchestrator.request_cancel()

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
        loop.add_signal_handler(signal.SIGTERM, on_terminate)
        try:
            async with _servers(serve, store, orchestrator, console):
                if not json_output:
                    view.start()
                return await (orchestrator.resume() if resume else orchestrator.run())
        finally:
            view.stop()
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
            for warning in orchestrator.restore_warnings:
                err_console().print(f"[yellow]checkpoint: {warning}[/]", soft_wrap=True)
            if orchestrator.checkpointer is not None:
                await orchestrator.checkpointer.blobs.close()
    finally:
        await store.close()


def _finish(result: RunState, *, json_output: bool) -> None:
    from rich.console import Console

    from maos.model import RunStatus
    from maos.sanitize import printable
    from maos.summary import run_summary

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
            line += f"; {summary['speedup_vs_sequential']:.2f}x faster than running the tasks one by one"
        Console(highlight=False).print(line)
        report = (
            Path(result.config.workdir if result.config else ".")
            / ".maos"
            / "runs"
            / result.run_id
            / "REPORT.md"
        )
        if report.exists():
            Console(highlight=False).print(f"report: {report}")
        if result.status is not RunStatus.SUCCEEDED and result.summary:
            # The summary quotes agents' stderr: escaped, never read as markup or escapes.
            err_console().print(
                printable(result.summary, keep_newlines=True),
                style="red",
                highlight=False,
                soft_wrap=True,
                markup=False,
            )
    if result.status is RunStatus.SUCCEEDED:
        return
    raise typer.Exit(EXIT_CANCELLED if result.status is RunStatus.CANCELLED else EXIT_FAILED)
