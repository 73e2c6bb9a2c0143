"""``maos agents types|stats``: the agent roles MAOS knows, and how each role has done.

``types`` lists the roles loaded from Claude Code's agent definition files (``.claude/agents``
of the project and of the user; ``maos.agents.roles``). A file that cannot be used is a
warning on stderr naming the file and the field; the command still lists the others and exits
0, except when problems left no role at all (exit 1) or ``--strict`` is given (any problem:
exit 1), so it doubles as a check of a project's agent files.

``stats`` shows the recorded outcomes per role and task kind (``maos.history``), with the
history score the scheduler puts into the fitness of an agent of that role for that kind.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from maos.cli._app import app
from maos.cli._common import EXIT_FAILED, JsonOption, StoreOption, err_console, shown, store_url

if TYPE_CHECKING:
    from maos.agents.roles import AgentRole
    from maos.history import HistoryRecord

agents_app = typer.Typer(help="Agent roles and their track record.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")


_TOOLS_SHOWN = 4  # the table names this many of a role's tools; --json lists them all


def _shown(path: Path, project_dir: Path) -> str:
    """``path`` relative to the project folder, or with the home folder written as ``~``."""
    for base, prefix in ((project_dir, ""), (Path.home(), "~/")):
        try:
            return prefix + path.relative_to(base).as_posix()
        except ValueError:
            continue
    return str(path)


def _tools_shown(tools: tuple[str, ...] | None) -> str:
    if tools is None:
        return "all"
    if not tools:
        return "none"
    more = len(tools) - _TOOLS_SHOWN
    return ", ".join(tools[:_TOOLS_SHOWN]) + (f" +{more} more" if more > 0 else "")


def _role_json(role: AgentRole) -> dict[str, Any]:
    data = role.model_dump(mode="json", exclude={"system_prompt"})
    data["prompt_chars"] = len(role.system_prompt)
    return data


@agents_app.command("types")
def types(
    project: Annotated[
        Path | None,
        typer.Option("--project", help="Project folder holding .claude/agents (default: here)."),
    ] = None,
    user_dir: Annotated[
        Path | None,
        typer.Option(
            "--user-dir",
            help="Claude Code's user folder holding agents/ (default: $CLAUDE_CONFIG_DIR or ~/.claude).",
        ),
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 if any file has a problem.")] = False,
    json_output: JsonOption = False,
) -> None:
    """List the agent roles from .claude/agents/**/*.md (project, then user) and their files."""
    from rich.console import Console
    from rich.table import Table

    from maos.agents.roles import agents_dirs, load_roles

    project_dir = _folder(project or Path.cwd(), "--project")
    user: Path | Literal["default"] = _folder(user_dir, "--user-dir") if user_dir is not None else "default"
    catalog = load_roles(project_dir, user)
    searched = [str(top) for _, top in agents_dirs(project_dir, user)]
    if json_output:
        document = {
            "roles": [_role_json(role) for role in catalog],
            "problems": catalog.problems,
            "overridden": {name: str(path) for name, path in sorted(catalog.overridden.items())},
            "searched": searched,
        }
        typer.echo(json.dumps(document, indent=2))
    elif len(catalog):
        table = Table(box=None, header_style="bold")
        for column in ("role", "model", "tools", "scope"):
            table.add_column(column, overflow="fold")
        table.add_column("source", no_wrap=True)
        for role in catalog:
            table.add_row(
                shown(role.name),
                shown(role.model or ""),
                shown(_tools_shown(role.tools)),
                role.scope,
                shown(_shown(role.source, project_dir)),
            )
        Console(highlight=False).print(table)
    errors = err_console()
    for name, path in sorted(catalog.overridden.items()):
        errors.print(f"note: project role {shown(name)!r} overrides {shown(str(path))}", soft_wrap=True)
    for problem in catalog.problems:
        errors.print(f"[yellow]warning: {shown(problem)}[/]", soft_wrap=True)
    if not len(catalog) and not catalog.problems and not json_output:
        errors.print(f"no agent definitions in {' or '.join(searched)}", soft_wrap=True)
    if catalog.problems and (strict or not len(catalog)):
        raise typer.Exit(EXIT_FAILED)


@agents_app.command("stats")
def stats(store: StoreOption = None, json_output: JsonOption = False) -> None:
    """Show the recorded outcomes per role and task kind, and the history score they give."""
    from rich.console import Console
    from rich.table import Table

    from maos.history import load_record, summary_rows
    from maos.store import open_store

    async def read() -> HistoryRecord:
        opened = await open_store(store_url(store))
        try:
            return await load_record(opened)
        finally:
            await opened.close()

    record = asyncio.run(read())
    rows = summary_rows(record.history)
    if json_output:
        typer.echo(json.dumps({"runs_recorded": len(record.runs), "outcomes": rows}, indent=2))
        return
    console = Console(highlight=False)
    if not rows:
        console.print("no outcomes recorded yet (they are recorded when a run finishes)")
        return
    table = Table(box=None, header_style="bold")
    for column in ("role", "kind", "attempts", "successes", "success rate", "mean duration", "score"):
        table.add_column(column, justify="left" if column in ("role", "kind") else "right")
    for row in rows:
        rate, mean_s = row["success_rate"], row["mean_duration_s"]
        table.add_row(
            shown(str(row["role"])),
            shown(str(row["kind"])),
            str(row["attempts"]),
            str(row["successes"]),
            f"{rate:.0%}" if isinstance(rate, float) else "",
            f"{mean_s:.2f}s" if isinstance(mean_s, float) else "",
            f"{row['history_score']:.3f}",
        )
    console.print(table)
    console.print(
        f"{len(record.runs)} run(s) recorded; score = (successes + 1) / (attempts + 2), "
        "the 0.3 history part of an agent's fitness"
    )


def _folder(path: Path, option: str) -> Path:
    """``path`` resolved, or exit 2 naming ``option``: a symlink loop, a name too long."""
    from maos.cli._common import fail

    try:
        resolved = path.expanduser().resolve()
        resolved.is_dir()  # ENAMETOOLONG and the like show here, not deep in the walk
    except (OSError, RuntimeError) as exc:  # RuntimeError: pathlib's "Symlink loop"
        shown = str(path) if len(str(path)) <= 80 else f"{str(path)[:77]}..."
        fail(f"{option}: {getattr(exc, 'strerror', None) or exc} ({shown})")
    return resolved
