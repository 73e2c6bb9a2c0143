"""``maos import claude-flow DIR``: a Claude Flow project as a MAOS plan, team and shared state.

    maos import claude-flow ~/my-project                 # writes ~/my-project/maos-import/
    maos import claude-flow ~/my-project --out ./imported --json

Writes ``plan.yaml`` (its ``agents:`` is the team), ``state.json`` (shared state to seed:
key -> JSON value) and ``import-report.json``, and prints what became of every file found.
A missing or unreadable DIR, or a file that is not what its name claims, is exit code 2 with
a line naming it; nothing is written then. See docs/import-claude-flow.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from maos.cli._app import app
from maos.cli._common import EXIT_FAILED, EXIT_USAGE, JsonOption, fail

if TYPE_CHECKING:
    from maos.importers.claude_flow import ImportResult

import_app = typer.Typer(help="Bring another tool's project into MAOS (Claude Flow).", no_args_is_help=True)
app.add_typer(import_app, name="import")

OUT_DIR_NAME = "maos-import"
PLAN_FILE = "plan.yaml"
STATE_FILE = "state.json"
REPORT_FILE = "import-report.json"
_OUTPUTS = (PLAN_FILE, STATE_FILE, REPORT_FILE)
_MARK = {
    "converted": "converted",
    "partly converted": "partly",
    "not converted": "not converted",
    "error": "ERROR",
}


@import_app.command("claude-flow")
def claude_flow(
    directory: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="The Claude Flow project folder (.claude-flow/, .swarm/ ...)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help=f"Where to write (default: DIR/{OUT_DIR_NAME}).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the files of an earlier import.")] = False,
) -> None:
    """Import a Claude Flow project: its agent records become a team, its sessions' objectives,
    tasks and workflows a plan, its memory shared state; every file found is listed with what
    became of it (converted into what, or why not). Nothing in DIR is changed or run."""
    from maos.errors import ImportSourceError
    from maos.importers.claude_flow import import_claude_flow

    result = import_claude_flow(directory)  # ImportSourceError: a missing or unreadable DIR (exit 2)
    target = out if out is not None else directory / OUT_DIR_NAME
    if result.errors:
        _print(result, target, written=False, as_json=as_json)
        count = len(result.errors)
        raise ImportSourceError(
            [*result.errors, f"{count} file(s) are not what their names claim: nothing written"]
        )
    _check_out(target, force)
    plan = _plan_file(result, target)
    _write(result, target, plan)
    _print(result, target, written=True, as_json=as_json)


def _check_out(target: Path, force: bool) -> None:
    if target.is_symlink():
        # DIR/maos-import lies in the project being imported, which could point it anywhere.
        fail(
            f"{target}: a symbolic link: the import is not written through it; remove it, or pass "
            "--out a folder",
            EXIT_USAGE,
        )
    if target.exists() and not target.is_dir():
        fail(f"--out {target}: exists and is not a folder", EXIT_USAGE)
    existing = [name for name in _OUTPUTS if os.path.lexists(target / name)]
    if existing and not force:
        fail(
            f"{target} already holds {', '.join(existing)} from an earlier import: pass --force to replace "
            "them, or --out another folder",
            EXIT_USAGE,
        )


def _plan_file(result: ImportResult, target: Path) -> str:
    """The text of plan.yaml, loaded back as ``maos plan validate`` loads it: a plan MAOS
    would refuse is never written (``PlanError``, exit 2)."""
    from maos.cli.plan_cmd import plan_text
    from maos.errors import PlanError
    from maos.plan import parse_plan_text, plan_from_data

    text = _plan_header(result) + plan_text(result.plan)
    source = str(target / PLAN_FILE)
    try:
        plan_from_data(parse_plan_text(text, source), source)
    except PlanError as exc:
        raise PlanError(
            [*exc.problems, "the imported plan would be refused by MAOS: nothing written"]
        ) from exc
    return text


def _write(result: ImportResult, target: Path, plan: str) -> None:
    from maos.filemodes import private_dir, write_private

    try:
        private_dir(target)
        write_private(target / PLAN_FILE, plan)
        write_private(target / STATE_FILE, json.dumps(result.state, indent=2, ensure_ascii=False) + "\n")
        write_private(target / REPORT_FILE, json.dumps(_document(result, target, True), indent=2) + "\n")
    except OSError as exc:
        fail(f"cannot write to {target}: {exc.strerror or exc}", EXIT_FAILED)


def _plan_header(result: ImportResult) -> str:
    lines = [f"# Imported by `maos import claude-flow` from {result.source}"]
    if result.placeholder:
        lines.append("# No objective was found: task 'objective' is a placeholder that fails. Replace it.")
    return "".join(f"{_safe(line)}\n" for line in lines)


def _next_steps(result: ImportResult, target: Path) -> list[str]:
    from maos.importers.claude_flow import state_loading_line

    plan = target / PLAN_FILE
    steps = [f"cd {result.source} && maos plan validate {plan}"]
    if result.placeholder:
        steps.append(f'maos run "TASK" --team {plan}   (the imported team on a task in words)')
    else:
        steps.append(f"maos run {plan}   (from {result.source}, so that its .claude/agents roles load)")
    if result.state:
        steps.append(
            f"{STATE_FILE} holds {len(result.state)} shared-state keys; MAOS has no state seeding of its "
            "own: load them in a run with a first command task running: "
            + state_loading_line(str(target / STATE_FILE))
        )
    return steps


def _document(result: ImportResult, target: Path, written: bool) -> dict[str, Any]:
    from maos.importers.claude_flow import state_loading_line

    document = result.to_json()
    document["out"] = str(target)
    document["written"] = [str(target / name) for name in _OUTPUTS] if written else []
    document["team_file"] = str(target / PLAN_FILE) if result.plan.agents else None
    document["state_file"] = str(target / STATE_FILE) if written else None
    document["state_loading"] = state_loading_line(str(target / STATE_FILE))
    document["next"] = _next_steps(result, target) if written else []
    return document


def _print(result: ImportResult, target: Path, *, written: bool, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(_document(result, target, written), indent=2))
        return
    typer.echo(f"Claude Flow project {_safe(str(result.source))}: {len(result.files)} files")
    width = max(len(mark) for mark in _MARK.values())
    for report in result.files:
        prefix = "" if not report.became else "not converted: "
        lines = [*(report.became), *(f"{prefix}{why}" for why in report.not_converted)]
        if report.error is not None:
            lines = [f"error: {report.error}"]
        head = f"  {_MARK[report.outcome]:<{width}}  {_safe(report.path)} ({report.kind})"
        if len(lines) == 1:
            typer.echo(f"{head}: {_safe(lines[0])}")
            continue
        typer.echo(head)
        for line in lines:
            typer.echo(f"  {'':<{width}}    {_safe(line)}")
    for note in result.notes:
        typer.echo(f"note: {_safe(note)}")
    counts: dict[str, int] = {}
    for report in result.files:
        counts[report.outcome] = counts.get(report.outcome, 0) + 1
    typer.echo(", ".join(f"{count} {outcome}" for outcome, count in counts.items()))
    agents = sum(member.count for member in result.plan.agents)
    typer.echo(
        f"plan: {len(result.plan.tasks)} task(s){' (a placeholder)' if result.placeholder else ''}; "
        f"team: {agents} agent(s) in {len(result.plan.agents)} member(s); "
        f"shared state: {len(result.state)} key(s)"
    )
    if not written:
        return
    typer.echo(f"wrote {_safe(str(target))}/: {', '.join(_OUTPUTS)}")
    for step in _next_steps(result, target):
        typer.echo(f"next: {_safe(step)}")


def _safe(text: str) -> str:
    from maos.sanitize import printable

    return printable(text)
