"""``maos plan validate|show``: check a plan file and show the shape of its DAG.

An invalid plan prints every problem, one line each, on stderr and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from maos.cli._app import app

if TYPE_CHECKING:
    from maos.model import Plan
    from maos.plan.analysis import PlanAnalysis

plan_app = typer.Typer(help="Check and inspect plans.", no_args_is_help=True)
app.add_typer(plan_app, name="plan")

EXIT_INVALID_PLAN = 2
# In the human view a level lists at most this many ids; --json always lists them all.
_MAX_IDS_SHOWN = 40

PlanFile = Annotated[Path, typer.Argument(help="A plan file: .yaml, .yml or .json.", show_default=False)]


def _load(path: Path) -> tuple[Plan, PlanAnalysis]:
    """Load, validate and analyze; on any plan problem print them all and exit 2."""
    from maos.errors import PlanError
    from maos.plan import analyze_plan, load_plan

    try:
        plan = load_plan(path)
    except PlanError as exc:
        for line in exc.problems:
            typer.echo(line, err=True)
        raise typer.Exit(EXIT_INVALID_PLAN) from None
    return plan, analyze_plan(plan)


@plan_app.command("validate")
def validate(path: PlanFile) -> None:
    """Check a plan file; print every problem found (exit code 2) or a one-line summary."""
    plan, analysis = _load(path)
    typer.echo(f"OK: plan '{plan.name}', {len(plan.tasks)} tasks, {analysis.depth} levels")


@plan_app.command("show")
def show(
    path: PlanFile,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object instead.")] = False,
) -> None:
    """Show a plan's levels, critical path and maximum width."""
    plan, analysis = _load(path)
    if as_json:
        import json

        summary = {
            "file": str(path),
            "name": plan.name,
            "description": plan.description,
            "tasks": len(plan.tasks),
            "levels": [list(level) for level in analysis.levels],
            "depth": analysis.depth,
            "max_width": analysis.max_width,
            "critical_path": list(analysis.critical_path),
            # Every task weighs 1 here, so the length is a task count.
            "critical_path_length": len(analysis.critical_path),
            "roots": list(analysis.roots),
            "leaves": list(analysis.leaves),
        }
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    console.print(f"[bold]Plan '{escape(plan.name)}'[/bold] ({escape(str(path))})")
    if plan.description:
        console.print(escape(plan.description))
    console.print(
        f"{len(plan.tasks)} tasks, {analysis.depth} levels, max width {analysis.max_width}",
        highlight=False,
    )
    console.print(
        f"Critical path ({len(analysis.critical_path)} tasks): {' -> '.join(analysis.critical_path)}",
        highlight=False,
    )
    table = Table("Level", "Width", "Tasks", title="Levels", title_justify="left")
    for number, level in enumerate(analysis.levels):
        table.add_row(str(number), str(len(level)), _id_list(level))
    console.print(table)


def _id_list(ids: tuple[str, ...]) -> str:
    if len(ids) <= _MAX_IDS_SHOWN:
        return ", ".join(ids)
    return ", ".join(ids[:_MAX_IDS_SHOWN]) + f", ... ({len(ids) - _MAX_IDS_SHOWN} more)"
