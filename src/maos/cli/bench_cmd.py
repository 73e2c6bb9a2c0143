"""``maos bench …``: benchmarks that print ratios measured side by side in one run."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from maos.cli._app import app
from maos.cli._choices import BusBackend
from maos.cli._common import (
    DEFAULT_REDIS_URL,
    EXIT_FAILED,
    DoorTransportOption,
    JsonOption,
    RedisUrlOption,
    StoreOption,
    fail,
)

if TYPE_CHECKING:
    from rich.console import Console

bench_app = typer.Typer(help="Measure MAOS (figures go in docs/benchmarks.md).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.callback()
def _as_installed() -> None:
    # Every benchmark measures MAOS as installed: its modules byte-compiled (an editable
    # checkout may lack the bytecode, and then every `maos` process it starts compiles).
    from maos.bench.machine import byte_compile_maos

    byte_compile_maos()


@bench_app.command("parallel")
def parallel(
    json_output: JsonOption = False,
    sequential: Annotated[
        bool, typer.Option("--sequential/--no-sequential", help="Also run each plan with --agents 1.")
    ] = True,
    only: Annotated[
        str | None, typer.Option("--only", help="Run only cases whose name contains this.")
    ] = None,
) -> None:
    """Makespan vs the DAG's lower bound, speedup vs --agents 1, overhead per task."""
    from rich.console import Console
    from rich.table import Table

    from maos.bench.parallel import Result, cases, run_case

    selected = [case for case in cases() if only is None or only in case.name]
    console = Console(stderr=json_output, highlight=False)
    results: list[Result] = []
    for case in selected:
        console.print(f"running {case.name} ({len(case.plan.tasks)} tasks, {case.agents} agents)…")
        results.append(asyncio.run(run_case(case, sequential=sequential)))
    if json_output:
        rows = [
            {
                "case": r.case,
                "tasks": r.tasks,
                "agents": r.agents,
                "makespan_s": r.makespan_s,
                "lower_bound_s": r.lower_bound_s,
                "makespan_over_lower_bound": r.ratio,
                "sequential_s": r.sequential_s,
                "speedup_vs_1_agent": r.speedup,
                "overhead_ms_per_task": r.overhead_ms_per_task,
                "failed_tasks": r.failed,
            }
            for r in results
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="maos bench parallel", header_style="bold")
    for column in (
        "plan",
        "tasks",
        "agents",
        "makespan",
        "lower bound",
        "ratio",
        "1 agent",
        "speedup",
        "overhead/task",
    ):
        table.add_column(column, justify="right" if column != "plan" else "left")
    for r in results:
        table.add_row(
            r.case,
            str(r.tasks),
            str(r.agents),
            f"{r.makespan_s:.3f}s",
            f"{r.lower_bound_s:.3f}s",
            f"{r.ratio:.3f}x" if r.lower_bound_s else "-",
            f"{r.sequential_s:.2f}s" if r.sequential_s else "-",
            f"{r.speedup:.1f}x" if r.speedup else "-",
            f"{r.overhead_ms_per_task:.2f} ms",
        )
    Console(highlight=False).print(table)
    if any(r.failed for r in results):
        raise typer.Exit(EXIT_FAILED)


@bench_app.command("bus")
def bus(
    json_output: JsonOption = False,
    backend: Annotated[
        list[BusBackend] | None,
        typer.Option("--backend", help="Repeat the option for both (the default)."),
    ] = None,
    duration_s: Annotated[
        float, typer.Option("--duration-s", min=0.5, help="Length of each measurement.")
    ] = 5.0,
    messages_per_s: Annotated[
        float, typer.Option("--messages-per-s", min=1, help="Messages per second in total (latency).")
    ] = 1000.0,
    agents: Annotated[int, typer.Option("--agents", min=2, help="Agents sending and reading.")] = 20,
    writers: Annotated[int, typer.Option("--writers", min=1, help="CAS writers on one key.")] = 20,
    processes: Annotated[
        int, typer.Option("--processes", min=1, help="OS processes the agents are spread over.")
    ] = 2,
    redis_url: RedisUrlOption = DEFAULT_REDIS_URL,
    repeat: Annotated[
        int, typer.Option("--repeat", min=1, help="Runs in a row (the machine's load varies).")
    ] = 1,
    doc: Annotated[
        str, typer.Option("--doc", help="Write the results as a section of this file ('' to skip).")
    ] = "docs/benchmarks.md",
) -> None:
    """Bus latency p50/p99 at a fixed rate, maximum throughput, CAS throughput with conflicts;
    on Redis also raw XADD, pipelined XADD and a Lua CAS in the same run, with MAOS's share."""
    import sys

    from rich.console import Console
    from rich.table import Table

    from maos.bench.bus import (
        SECTION,
        BackendResult,
        Settings,
        floors_line,
        run_backend,
        section,
        to_json,
        write_section,
    )

    backends = tuple(name.value for name in backend or BusBackend)
    settings = Settings(
        agents=agents,
        rate=messages_per_s,
        seconds=duration_s,
        processes=processes,
        writers=writers,
        redis_url=redis_url,
    )
    console = Console(stderr=json_output, highlight=False)
    runs: list[list[BackendResult]] = []
    for n in range(repeat):
        if repeat > 1:
            console.print(f"run {n + 1} of {repeat}")
        runs.append([run_backend(name, settings, progress=console.print) for name in backends])
    results = [r for run in runs for r in run]
    if doc:
        _write_doc(
            console, doc, SECTION, write_section, section(runs, settings, "maos " + " ".join(sys.argv[1:]))
        )
    if json_output:
        typer.echo(json.dumps([to_json(r) for r in results], indent=2))
    else:
        table = Table(
            title=f"maos bench bus ({agents} agents over {processes} processes, {duration_s:g} s each)",
            header_style="bold",
        )
        for column in (
            "backend",
            f"p50 @ {messages_per_s:g}/s",
            f"p99 @ {messages_per_s:g}/s",
            "max",
            "achieved",
            "p99 target",
            "max throughput",
            f"CAS ({writers} writers)",
            "CAS conflicts",
        ):
            table.add_column(column, justify="left" if column == "backend" else "right")
        for r in results:
            lat = r.latency
            table.add_row(
                r.backend,
                f"{lat.p50_ms:.2f} ms",
                f"{lat.p99_ms:.2f} ms",
                f"{lat.max_ms:.1f} ms",
                f"{lat.achieved_rate:.0f}/s ({lat.received}/{lat.sent})",
                f"{r.p99_target_ms:g} ms {'ok' if lat.p99_ms <= r.p99_target_ms else 'MISSED'}",
                f"{r.throughput.per_s:,.0f} msg/s",
                f"{r.cas.per_s:,.0f} ops/s",
                f"{r.cas.conflicts:,}",
            )
        Console(highlight=False).print(table)
        for r in results:
            for line in (floors_line(r), *(f"{r.backend}: missed: {what}" for what in r.missed)):
                if line:
                    typer.echo(line)
    if not all(r.meets_target for r in results):
        raise typer.Exit(EXIT_FAILED)


@bench_app.command("checkpoint")
def checkpoint(
    json_output: JsonOption = False,
    saves: Annotated[int, typer.Option("--saves", min=2, help="Saves per state (the 50 MB one: half).")] = 20,
    only: Annotated[
        str | None, typer.Option("--only", help="Run only cases whose name contains this.")
    ] = None,
    write: Annotated[
        str | None,
        typer.Option(
            "--write", help="Also write the figures into this file's '## maos bench checkpoint' section."
        ),
    ] = None,
    recovery: Annotated[
        bool,
        typer.Option(
            "--recovery/--no-recovery",
            help="Also measure scheduling latency with checkpoints on and off, and MTTR over 20 agent kills.",
        ),
    ] = True,
) -> None:
    """Checkpoint save time (p50/p99), size, restore time and event-loop stall per state size;
    then scheduling latency with checkpoints on/off and MTTR (as `bench latency` and `bench mttr`)."""
    from rich.console import Console
    from rich.table import Table

    from maos.bench.checkpoint import Result, cases, markdown, run_case, write_section

    selected = [case for case in cases(saves) if only is None or only in case.name]
    console = Console(stderr=json_output, highlight=False)
    results: list[Result] = []
    for case in selected:
        console.print(f"checkpointing {case.name} ({case.saves} saves)…")
        results.append(asyncio.run(run_case(case)))
    if write is not None:
        write_section(Path(write), markdown(results))
        console.print(f"wrote the figures into {write}")
    latency_rows = _latency_rows(300) if recovery else []
    mttr_figures = _mttr_figures(20) if recovery else None
    if json_output:
        document: dict[str, object] = {"saves": [vars(r) for r in results]}
        if recovery:
            document.update(scheduling_latency=latency_rows, mttr=mttr_figures)
        typer.echo(json.dumps(document, indent=2))
        return
    table = Table(title="maos bench checkpoint", header_style="bold")
    columns = (
        "state",
        "JSON",
        "stored",
        "save p50",
        "save p99",
        "CPU p50",
        "segment p99",
        "restore",
        "stall",
        "idle",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "state" else "right")
    for r in results:
        table.add_row(
            r.case,
            f"{r.json_bytes / 1e6:.2f} MB",
            f"{r.stored_bytes / 1e6:.2f} MB",
            f"{r.save_p50_ms:.1f} ms",
            f"{r.save_p99_ms:.1f} ms",
            f"{r.save_cpu_p50_ms:.1f} ms",
            f"{r.segment_p99_ms:.1f} ms",
            f"{r.restore_ms:.0f} ms",
            f"{r.stall_max_ms:.1f} ms",
            f"{r.idle_stall_max_ms:.1f} ms",
        )
    Console(highlight=False).print(table)
    for row in latency_rows:
        typer.echo(_latency_line(row))
    if mttr_figures is not None:
        typer.echo(_mttr_line(mttr_figures))


@bench_app.command("dashboard")
def dashboard(
    json_output: JsonOption = False,
    clients: Annotated[int, typer.Option("--clients", min=1, help="SSE clients following the run.")] = 20,
    client_procs: Annotated[
        int, typer.Option("--client-procs", min=1, help="Processes the SSE clients run in.")
    ] = 2,
    agents: Annotated[int, typer.Option("--agents", min=1, help="Agents printing at once.")] = 10,
    lines_per_s: Annotated[
        float, typer.Option("--lines-per-s", min=1, help="Output lines per second of each agent.")
    ] = 100.0,
    browser: Annotated[
        bool, typer.Option("--browser/--no-browser", help="Also time a headless Chromium page.")
    ] = True,
    doc: Annotated[
        str, typer.Option("--doc", help="Write the results as a section of this file ('' to skip).")
    ] = "docs/benchmarks.md",
) -> None:
    """Delay from event append to SSE receipt, 20 clients, a run appending ~1,000 events/s."""
    from rich.console import Console

    from maos.bench.dashboard import SECTION, Settings, run, section, write_section

    settings = Settings(
        clients=clients,
        client_procs=client_procs,
        agents=agents,
        tasks=2 * agents,  # two waves of 500 lines each: ~10 s at the defaults
        lines_per_s=lines_per_s,
        browser=browser,
    )
    console = Console(stderr=json_output, highlight=False)
    console.print(
        f"running {settings.tasks} tasks on {agents} agents at {agents * lines_per_s:g} lines/s "
        f"with {clients} SSE clients…"
    )
    result = asyncio.run(run(settings))
    text = section(result)
    if json_output:
        figures = {
            name: {
                "clients": len(delays.per_client),
                "complete": result.complete(delays),
                "p50_ms": delays.percentile(50) * 1000,
                "p90_ms": delays.percentile(90) * 1000,
                "p99_ms": delays.percentile(99) * 1000,
                "max_ms": max(delays.samples, default=float("nan")) * 1000,
            }
            for name, delays in (("sse", result.sse), ("browser", result.browser))
            if delays is not None
        }
        typer.echo(
            json.dumps(
                {"events_per_s": result.rate_per_s, "log_events": result.log_events, **figures}, indent=2
            )
        )
    else:
        Console(highlight=False).print(text)
    if doc:
        _write_doc(console, doc, SECTION, write_section, text)
    if not result.complete(result.sse) or (
        result.browser is not None and not result.complete(result.browser)
    ):
        raise typer.Exit(EXIT_FAILED)


@bench_app.command("spawn")
def spawn(
    json_output: JsonOption = False,
    agents: Annotated[
        int, typer.Option("--agents", min=1, max=100, help="Warm agents, and chain tasks.")
    ] = 20,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="CLI starts at a time while warming up.")
    ] = 2,
    cold: Annotated[
        bool, typer.Option("--cold/--no-cold", help="Also run the chain without the pool (--warm 0).")
    ] = True,
    doc: Annotated[
        str, typer.Option("--doc", help="Write the results as a section of this file ('' to skip).")
    ] = "docs/benchmarks.md",
) -> None:
    """Claude Code agent cold start vs warm assignment with each primer (p50/p99), and RSS."""
    from rich.console import Console

    from maos.bench.spawn import SECTION, Settings, run, section, to_json, write_section

    settings = Settings(agents=agents, concurrency=concurrency, cold=cold)
    console = Console(stderr=json_output, highlight=False)
    console.print(
        f"twice (model primer, then local primer): warming {agents} Claude Code agents "
        f"({concurrency} at a time), then a chain of {2 * agents} tasks"
        + (f"; then a chain of {agents} tasks without the pool…" if cold else "…")
    )
    result = asyncio.run(run(settings))
    text = section(result)
    if json_output:
        typer.echo(json.dumps(to_json(result), indent=2))
    else:
        Console(highlight=False).print(text)
    if doc:
        _write_doc(console, doc, SECTION, write_section, text)
    if result.problems or not result.meets_target:
        raise typer.Exit(EXIT_FAILED)


def _mttr_figures(kills: int) -> dict[str, float | int]:
    from maos.bench.recovery import measure_mttr

    result = asyncio.run(measure_mttr(kills))
    return {
        "kills": result.kills,
        "recovered": len(result.samples_s),
        "p50_s": result.p50,
        "p99_s": result.p99,
    }


def _mttr_line(figures: dict[str, float | int]) -> str:
    return (
        f"MTTR over {figures['kills']} agent kills (SIGKILL; retry backoff 0.5-1 s): "
        f"p50 {figures['p50_s']:.2f} s, p99 {figures['p99_s']:.2f} s ({figures['recovered']} recovered)"
    )


def _latency_rows(tasks: int) -> list[dict[str, float | int | bool]]:
    from maos.bench.recovery import scheduling_latency

    rows: list[dict[str, float | int | bool]] = []
    for on in (False, True):
        result = asyncio.run(scheduling_latency(checkpoints=on, tasks=tasks))
        rows.append(
            {
                "checkpoints": on,
                "samples": len(result.samples_s),
                "p50_ms": result.percentile(0.5) * 1000,
                "p99_ms": result.percentile(0.99) * 1000,
            }
        )
    return rows


def _latency_line(row: dict[str, float | int | bool]) -> str:
    return (
        f"scheduling hand-off, checkpoints {'on ' if row['checkpoints'] else 'off'}: "
        f"{row['samples']} hand-offs, "
        f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms"
    )


@bench_app.command("failover")
def failover(
    kills: Annotated[
        int, typer.Option("--kills", min=1, max=100, help="Orchestrators killed (one run each).")
    ] = 5,
    losses: Annotated[
        int, typer.Option("--losses", min=0, max=20, help="Times Redis restarts empty (one run each).")
    ] = 3,
    lease_s: Annotated[float, typer.Option("--lease-s", min=0.5, max=600, help="Lease of the runs.")] = 10.0,
    json_output: JsonOption = False,
    doc: Annotated[
        str | None,
        typer.Option("--doc", help="Write the figures into this file's section (docs/benchmarks.md)."),
    ] = None,
) -> None:
    """Orchestrator SIGKILLed -> its run progressing under a supervisor (p50/p99 over N kills);
    a Redis restarted empty -> the run rebuilt from its checkpoint and progressing again."""
    from rich.console import Console

    from maos.bench.failover import SECTION, measure_failover, section, write_section

    console = Console(highlight=False, stderr=json_output)
    result = asyncio.run(measure_failover(kills, lease_s=lease_s, losses=losses))
    text = section(result)
    if json_output:
        figures = {
            "kills": result.kills,
            "recovered": len(result.samples_s),
            "lease_s": result.lease_s,
            "separate_hosts": result.separate_hosts,
            "samples_s": result.samples_s,
            "p50_s": result.p50,
            "p99_s": result.p99,
            "target_s": result.target_s,
            "store_loss": {
                "rebuilt_s": result.store_loss.rebuilt_s,
                "progressing_s": result.store_loss.progressing_s,
                "skipped": result.store_loss.skipped,
            },
            "problems": result.problems,
        }
        typer.echo(json.dumps(figures, indent=2))
    else:
        console.print(text)
    if doc:
        _write_doc(console, doc, SECTION, write_section, text)
    if result.problems or not result.meets_target:
        raise typer.Exit(EXIT_FAILED)


@bench_app.command("mttr")
def mttr(
    kills: Annotated[int, typer.Option("--kills", min=1, max=200, help="Agents killed (one per task).")] = 20,
    json_output: JsonOption = False,
) -> None:
    """Agent killed with SIGKILL -> its task running again: p50/p99 over N kills (default backoff)."""
    figures = _mttr_figures(kills)
    typer.echo(json.dumps(figures, indent=2) if json_output else _mttr_line(figures))


@bench_app.command("latency")
def latency(
    tasks: Annotated[int, typer.Option("--tasks", min=10, help="Length of the chain of no-op tasks.")] = 300,
    json_output: JsonOption = False,
) -> None:
    """Scheduling latency (a task's success -> its child's agent running), checkpoints on and off."""
    rows = _latency_rows(tasks)
    typer.echo(json.dumps(rows, indent=2) if json_output else "\n".join(_latency_line(row) for row in rows))


def _write_doc(
    console: Console, doc: str, heading: str, write: Callable[[Path, str], None], text: str
) -> None:
    """Write ``text`` as the ``heading`` section of the file ``doc`` (``--doc``), saying so on
    ``console``; a file whose directory does not exist is skipped with a warning."""
    target = Path(doc)
    if target.parent.is_dir():
        write(target, text)
        console.print(f"wrote the '{heading}' section of {target}")
    else:
        console.print(f"[yellow]not writing {target}: no directory {target.parent}[/]")


@bench_app.command("peers")
def peers(
    json_output: JsonOption = False,
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, max=20, help="Rounds; each runs every pair back to back.")
    ] = 3,
    quick: Annotated[
        bool, typer.Option("--quick", help="One round of tiny sizes (what the test runs); writes no docs.")
    ] = False,
    fanout: Annotated[
        bool, typer.Option("--fanout/--no-fanout", help="(a) Claude Code subagents vs MAOS fan-out.")
    ] = True,
    langgraph: Annotated[
        bool, typer.Option("--langgraph/--no-langgraph", help="(b) LangGraph vs MAOS process tasks.")
    ] = True,
    doc: Annotated[
        str | None,
        typer.Option(
            "--doc",
            help="Write the '## maos bench peers' section of this file ('' to skip; default: "
            "docs/benchmarks.md, none with --quick).",
            show_default=False,
        ),
    ] = None,
    comparison: Annotated[
        str | None,
        typer.Option(
            "--comparison",
            help="Write this comparison page ('' to skip; default: docs/comparison.md, none with --quick).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """MAOS vs Claude Code's own subagents (fan-out) and vs LangGraph (process tasks), side by
    side in one run; prints each pair's ratio. Needs the peers extra for LangGraph."""
    from rich.console import Console

    from maos.bench import peers as bench

    if langgraph and (missing := bench.missing_peers()):
        fail(
            f"maos bench peers: LangGraph side missing ({', '.join(missing)}): {bench.INSTALL_HINT}; "
            "or run only the fan-out part with --no-langgraph"
        )
    if not (fanout or langgraph):
        fail("maos bench peers: nothing to run (--no-fanout and --no-langgraph)")
    if quick:
        settings = bench.quick_settings(fanout=fanout, langgraph=langgraph)
    else:
        settings = bench.Settings(rounds=rounds, fanout=fanout, langgraph=langgraph)
    console = Console(stderr=json_output, highlight=False)
    result = asyncio.run(bench.run(settings, progress=console.print))
    text = bench.section(result)
    if json_output:
        typer.echo(json.dumps(bench.to_json(result), indent=2))
    else:
        typer.echo(text)
    doc = doc if doc is not None else ("" if quick else "docs/benchmarks.md")
    if doc:
        _write_doc(console, doc, bench.SECTION, bench.write_section, text)
    comparison = comparison if comparison is not None else ("" if quick else bench.COMPARISON_DOC)
    if comparison:
        target = Path(comparison)
        target.write_text(bench.comparison(result))
        console.print(f"wrote {target}")
    if result.problems:
        raise typer.Exit(EXIT_FAILED)


@bench_app.command("scale")
def scale(
    json_output: JsonOption = False,
    commands: Annotated[
        int, typer.Option("--commands", min=0, max=1000, help="Command agents alive at once (0: skip).")
    ] = 1000,
    claude: Annotated[
        int, typer.Option("--claude", min=0, max=1000, help="Claude Code agents, on workers (0: skip).")
    ] = 40,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=100, help="`maos worker` processes of the Claude agents.")
    ] = 2,
    model_delay_s: Annotated[
        float,
        typer.Option("--model-delay-s", min=0, max=60, help="Wait of the scripted model before each answer."),
    ] = 0.5,
    store: StoreOption = None,
    door_transport: DoorTransportOption = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="20 command agents, 4 Claude agents (what the test runs); writes no docs."
        ),
    ] = False,
    doc: Annotated[
        str | None,
        typer.Option(
            "--doc",
            help="Write the '## maos bench scale' section of this file ('' to skip; default: "
            "docs/benchmarks.md, none with --quick).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """1,000 command agents at once on one machine, and Claude Code agents over `maos worker`
    processes (the scripted model): MAOS's own CPU-s and peak RSS per agent. The Claude agents'
    workers use --store (default: MAOS_STORE, else redis://127.0.0.1:6379)."""
    from rich.console import Console

    from maos.bench import scale as bench

    url = store or os.environ.get("MAOS_STORE") or bench.DEFAULT_STORE
    if quick:
        settings = bench.quick_settings(url, door_transport, commands=commands > 0, claude=claude > 0)
    else:
        settings = bench.Settings(
            commands=commands,
            claude=claude,
            workers=workers,
            model_delay_s=model_delay_s,
            store=url,
            door_transport=door_transport,
        )
    if not (settings.commands or settings.claude):
        fail("maos bench scale: nothing to run (--commands 0 and --claude 0)")
    console = Console(stderr=json_output, highlight=False)
    result = asyncio.run(bench.run(settings, progress=console.print))
    text = bench.section(result)
    if json_output:
        typer.echo(json.dumps(bench.to_json(result), indent=2))
    else:
        typer.echo(text)
    doc = doc if doc is not None else ("" if quick else "docs/benchmarks.md")
    if doc:
        _write_doc(console, doc, bench.SECTION, bench.write_section, text)
    if not result.complete:
        raise typer.Exit(EXIT_FAILED)
