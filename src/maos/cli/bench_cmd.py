"""``maos bench …``: benchmarks that print ratios measured side by side in one run."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from maos.cli._app import app
from maos.cli._common import JsonOption

bench_app = typer.Typer(help="Measure MAOS (figures go in docs/benchmarks.md).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


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
        raise typer.Exit(1)
