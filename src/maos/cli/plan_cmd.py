"""``maos plan``: plan a task given in words, and check or inspect plan files.

    maos plan "Add a login endpoint" --template feature   # a template, no model call
    maos plan "Add a login endpoint"                       # the LLM planner, if a model is set up
    maos plan validate FILE | maos plan show FILE          # plan files
    maos plan fields                                       # the plan reference

``maos plan "TASK"`` is short for ``maos plan new "TASK"``, and ``maos plan FILE`` (an existing
file) for ``maos plan show FILE``. ``plan_task`` is also how ``maos run "TASK"`` gets its plan.
An invalid plan prints every problem, one line each, on stderr and exits with code 2.
"""

from __future__ import annotations

import functools
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from maos.cli._app import app
from maos.cli._choices import Template
from maos.cli._common import EXIT_FAILED, JsonOption, err_console, fail, shown
from maos.sanitize import printable

if TYPE_CHECKING:
    from rich.console import Console

    from maos.model import Plan
    from maos.plan.analysis import PlanAnalysis
    from maos.plan.planner import PlanAttempt


class _PlanGroup(TyperGroup):
    """Routes ``maos plan FILE`` to ``show`` and ``maos plan "TASK" ...`` to ``new``."""

    # ``ctx`` is the click Context typer vendors (``typer._click``, private); Any keeps the
    # override compatible without naming the private module.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["show" if Path(args[0]).is_file() else "new", *args]
        return super().parse_args(ctx, args)


plan_app = typer.Typer(
    cls=_PlanGroup,
    help='Plan a task given in words (maos plan "TASK" [--template NAME]); check and inspect plan files.',
    no_args_is_help=True,
)
app.add_typer(plan_app, name="plan")

# In the human view a level lists at most this many ids; --json always lists them all.
_MAX_IDS_SHOWN = 40
PLANNER_MODEL_ENV = "MAOS_PLANNER_MODEL"
PlanFile = Annotated[Path, typer.Argument(help="A plan file: .yaml, .yml or .json.", show_default=False)]
TemplateOption = Annotated[
    Template | None,
    typer.Option(
        "--template",
        "-t",
        help="Plan from this template without a model call; 'auto': chosen by the task's keywords.",
        show_default=False,
    ),
]
ResearchersOption = Annotated[
    int, typer.Option("--researchers", min=1, max=20, help="Parallel researchers of the research template.")
]
MaxTriesOption = Annotated[
    int, typer.Option("--max-tries", min=1, max=10, help="LLM planner: answers to try before giving up.")
]


def _load(path: Path) -> tuple[Plan, PlanAnalysis]:
    """Load, validate and analyze; a ``PlanError`` lists every problem (exit 2)."""
    from maos.plan import analyze_plan, load_plan

    plan = load_plan(path)
    return plan, analyze_plan(plan)


@plan_app.command("new")
def new(
    task: Annotated[str, typer.Argument(metavar="TASK", help="What the run should do, in words.")],
    template: TemplateOption = None,
    researchers: ResearchersOption = 3,
    max_tries: MaxTriesOption = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON instead of YAML.")] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Write the plan to this file (JSON for .json, else YAML).", show_default=False
        ),
    ] = None,
) -> None:
    """Plan TASK: print the plan (YAML) on stdout, its shape on stderr.

    With --template the plan comes from that template, without a model call. Otherwise the
    LLM planner (Claude Code, with the templates as examples) writes it when a model is set
    up (ANTHROPIC_API_KEY, or ANTHROPIC_BASE_URL / MAOS_ANTHROPIC_BASE_URL for a model
    server); without one the task's keywords choose a template. `maos plan "TASK"` is short
    for `maos plan new "TASK"`.
    """
    from rich.console import Console

    from maos.plan import analyze_plan

    if template is None and _names_a_plan_file(task):
        show(Path(task), as_json=as_json)  # `maos plan --json plan.yaml`
        return
    plan = plan_task(task, template=template, researchers=researchers, max_tries=max_tries)
    text = plan_text(plan, as_json=as_json or (out is not None and out.suffix.lower() == ".json"))
    if out is None:
        typer.echo(text, nl=False)
        print_overview(err_console(), plan, analyze_plan(plan))
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}", EXIT_FAILED)
    console = Console(highlight=False)
    print_overview(console, plan, analyze_plan(plan), source=str(out))
    console.print(f"wrote {out}; run it with: maos run {out}", soft_wrap=True)


@plan_app.command("validate")
def validate(
    path: PlanFile,
    team: Annotated[
        Path | None,
        typer.Option(
            "--team",
            metavar="FILE",
            help="Check against this team (a list of agents, or a plan's agents:) instead of the plan's.",
            show_default=False,
        ),
    ] = None,
    agent: Annotated[
        list[str] | None,
        typer.Option(
            "--agent",
            metavar="ROLE[:N]",
            help="Check against a team with these agents (repeatable).",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Check a plan file; print every problem found (exit code 2) or a one-line summary.

    Every task must be one some agent of the team can take (its capabilities and runtime):
    the team of --team/--agent, else the plan's agents:, else `maos run`'s 4 generalists.
    With --json the document says "ok" and lists the problems (still exit code 2)."""
    import json

    from maos.cli.run_cmd import checked_team, team_members
    from maos.errors import PlanError
    from maos.team import describe_team

    try:
        plan, analysis = _load(path)
        members = team_members(agent, team)
        if members:
            plan = plan.model_copy(update={"agents": members})
        crew = checked_team(plan, str(path), None)
    except PlanError as exc:
        if json_output:
            typer.echo(json.dumps({"file": str(path), "ok": False, "problems": exc.problems}, indent=2))
        raise
    # A plan that declares no resources takes their capacities from `maos run --resource`:
    # valid, but it runs only with them.
    needs = sorted({name for task in plan.tasks for name in task.resources} - set(plan.resources))
    notes = [
        f"resource '{name}' has no capacity in the plan: run it with --resource {name}=N" for name in needs
    ]
    if json_output:
        document = {
            "file": str(path),
            "ok": True,
            "problems": [],
            "notes": notes,
            "name": plan.name,
            "tasks": len(plan.tasks),
            "levels": analysis.depth,
            "team": describe_team(crew) if plan.agents else None,
            "agents": [member.model_dump(mode="json") for member in crew],
        }
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    typer.echo(printable(f"OK: plan '{plan.name}', {len(plan.tasks)} tasks, {analysis.depth} levels"))
    if plan.agents:
        typer.echo(printable(f"team: {describe_team(crew)}"))
    for note in notes:
        typer.echo(printable(f"note: {note}"))


@plan_app.command("show")
def show(
    path: PlanFile,
    as_json: JsonOption = False,
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

    print_overview(Console(), plan, analysis, source=str(path))


@plan_app.command("fields")
def fields(
    json_output: Annotated[bool, typer.Option("--json", help="Print the plan's JSON Schema.")] = False,
) -> None:
    """Print the plan reference: every plan and task field, its type, default and an example
    (the text of docs/plan-reference.md, generated from the model); with --json, the JSON
    Schema of a plan file, generated from the same model."""
    if json_output:
        import json

        from maos.model import Plan

        typer.echo(json.dumps(Plan.model_json_schema(), indent=2, ensure_ascii=False))
        return
    from maos.plan.reference import plan_reference

    typer.echo(plan_reference(), nl=False)


def print_overview(
    console: Console, plan: Plan, analysis: PlanAnalysis, *, source: str | None = None
) -> None:
    """The human view of a plan: name, size, critical path and a table of levels."""
    from rich.table import Table

    where = f" ({shown(source)})" if source else ""
    console.print(f"[bold]Plan '{shown(plan.name)}'[/bold]{where}")
    if plan.description:
        console.print(shown(plan.description, keep_newlines=True))
    console.print(
        f"{len(plan.tasks)} tasks, {analysis.depth} levels, max width {analysis.max_width}",
        highlight=False,
    )
    console.print(
        f"Critical path ({len(analysis.critical_path)} tasks): {' -> '.join(analysis.critical_path)}",
        highlight=False,
    )
    console.print(printable(_team_line(plan)), highlight=False, soft_wrap=True, markup=False)
    table = Table("Level", "Width", "Tasks", title="Levels", title_justify="left")
    for number, level in enumerate(analysis.levels):
        table.add_row(str(number), str(len(level)), _id_list(level))
    console.print(table)


def _team_line(plan: Plan) -> str:
    """The plan's team, or the one proposed for it (a role per task role, as many agents as
    its tasks of that role can run at once): ``maos run --agent`` takes it as written."""
    from maos.team import propose_team

    members = plan.agents or propose_team(plan)
    shown = ", ".join(f"{member.base_id} x{member.count}" for member in members)
    if plan.agents:
        return f"Team: {shown}"
    options = " ".join(f"--agent {shlex.quote(f'{member.role}:{member.count}')}" for member in members)
    return f"Team proposed: {shown} (maos run … {options}; or `agents:` in the plan)"


def _id_list(ids: tuple[str, ...]) -> str:
    if len(ids) <= _MAX_IDS_SHOWN:
        return ", ".join(ids)
    return ", ".join(ids[:_MAX_IDS_SHOWN]) + f", ... ({len(ids) - _MAX_IDS_SHOWN} more)"


# --------------------------------------------------------------------------- planning a task

_PLAN_SUFFIXES = (".yaml", ".yml", ".json")


def _names_a_plan_file(argument: str) -> bool:
    """An existing file, or one word ending like a plan file (``missing.yaml``: not found)."""
    if Path(argument).is_file():
        return True
    return not any(char.isspace() for char in argument) and argument.lower().endswith(_PLAN_SUFFIXES)


def is_task_text(argument: str) -> bool:
    """Whether ``maos run ARGUMENT`` means a task in words: no file of that name exists, it
    has whitespace, and it does not end like a plan file (a missing ``plans/x.yaml`` stays a
    missing file: exit code 2)."""
    return (
        any(char.isspace() for char in argument)
        and not argument.strip().lower().endswith(_PLAN_SUFFIXES)
        and not Path(argument).exists()
    )


def plan_task(
    task_text: str,
    *,
    template: Template | None = None,
    researchers: int = 3,
    max_tries: int = 3,
    record_dir: Path | None = None,
) -> Plan:
    """The plan for a task given in words; notes on stderr say how it was made.

    ``template``: a template name (no model call), ``auto`` (chosen by keywords, no model
    call) or None: the LLM planner when a model and the CLI are available, else the keyword
    choice (``feature`` when no keyword occurs). ``record_dir``: also save the plan there as
    YAML, and the planner's attempts as JSON lines next to it. Raises ``PlanError`` for an
    invalid plan (exit 2, every problem printed) and ``MaosError`` when the planner's CLI
    fails (exit 1); the attempts are recorded either way.
    """
    from maos.errors import MaosError
    from maos.plan.planner import model_available

    notes = err_console()
    attempts: list[PlanAttempt] = []
    if not task_text.strip():
        fail("the task text is empty; say what the run should do")
    try:
        if template is not None:
            plan = _from_template(task_text, template.value, researchers)
        elif not model_available():
            notes.print(
                "no model is set up (ANTHROPIC_API_KEY, or ANTHROPIC_BASE_URL / MAOS_ANTHROPIC_BASE_URL "
                "for a model server): planning from a template instead",
                soft_wrap=True,
            )
            plan = _from_template(task_text, "auto", researchers)
        else:
            plan = _with_model(task_text, max_tries=max_tries, researchers=researchers, attempts=attempts)
    except MaosError:
        _record(record_dir, None, attempts)
        raise
    saved = _record(record_dir, plan, attempts)
    if saved is not None:
        notes.print(f"plan saved to {saved}", soft_wrap=True)
    return plan


def _from_template(task_text: str, name: str, researchers: int) -> Plan:
    from maos.plan.templates import choose_template, keyword_matches, render_template

    notes = err_console()
    if name == "auto":
        chosen = choose_template(task_text)
        if chosen is None:
            notes.print("no template keyword in the task: using template 'feature'")
            name = "feature"
        else:
            found = keyword_matches(task_text)[chosen]
            words = ", ".join(f"'{word}'" for word in found)
            noun = "keywords" if len(found) > 1 else "keyword"
            notes.print(f"template '{chosen}' (chosen by the {noun} {words})", soft_wrap=True)
            name = chosen
        return render_template(name, task_text, researchers=researchers)
    plan = render_template(name, task_text, researchers=researchers)
    notes.print(f"template '{name}' (no model call)")
    return plan


def _with_model(task_text: str, *, max_tries: int, researchers: int, attempts: list[PlanAttempt]) -> Plan:
    import asyncio
    import tempfile

    from maos.agents.claude_cli import find_claude_cli
    from maos.plan.planner import plan_with_model, planner_environment
    from maos.plan.templates import choose_template

    notes = err_console()
    cli = find_claude_cli()
    if cli is None:
        notes.print(
            "no Claude Code CLI found (`pip install claude-agent-sdk` bundles one): planning from a "
            "template instead",
            soft_wrap=True,
        )
        return _from_template(task_text, "auto", researchers)
    hint = choose_template(task_text)
    example = f", template '{hint}' as the example" if hint else ""
    notes.print(f"planning with Claude Code{example} ...", soft_wrap=True)

    def report(attempt: PlanAttempt) -> None:
        attempts.append(attempt)
        if attempt.accepted:
            notes.print(f"planner try {attempt.number}: accepted ({attempt.duration_s:.1f}s)")
            return
        count = len(attempt.problems)
        notes.print(
            f"planner try {attempt.number}: rejected, {count} problem{'s' if count != 1 else ''}:",
            style="yellow",
        )
        for problem in attempt.problems:
            notes.print(f"  {problem}", soft_wrap=True)

    with tempfile.TemporaryDirectory(prefix="maos-planner-") as config_dir:
        return asyncio.run(
            plan_with_model(
                task_text,
                cli_path=cli,
                env=planner_environment(Path(config_dir)),
                cwd=Path.cwd(),
                template_hint=hint,
                max_tries=max_tries,
                model=os.environ.get(PLANNER_MODEL_ENV) or None,
                on_attempt=report,
            )
        )


def _record(record_dir: Path | None, plan: Plan | None, attempts: list[PlanAttempt]) -> Path | None:
    """Save the plan (YAML) and the planner's attempts (JSON lines) under ``record_dir``."""
    if record_dir is None or (plan is None and not attempts):
        return None
    import json
    import time

    from maos.filemodes import private_dir, write_private

    private_dir(record_dir)  # .maos/plans: its owner's only, like the rest of .maos/
    stem = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    if attempts:
        lines = "".join(json.dumps(attempt.to_dict(), ensure_ascii=False) + "\n" for attempt in attempts)
        write_private(record_dir / f"{stem}.attempts.jsonl", lines)
    if plan is None:
        return None
    path = record_dir / f"{stem}.yaml"
    write_private(path, plan_text(plan))
    return path


def plan_text(plan: Plan, *, as_json: bool = False) -> str:
    """A plan as a plan file: YAML (multi-line prompts as literal blocks) or JSON; fields
    left at their defaults are left out."""
    data = plan.model_dump(mode="json", exclude_defaults=True)
    if as_json:
        import json

        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    import yaml

    return yaml.dump(data, Dumper=_plan_dumper(), sort_keys=False, allow_unicode=True, width=100)


def _literal_str(dumper: Any, value: str) -> Any:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


@functools.cache
def _plan_dumper() -> type[Any]:
    """A safe YAML dumper writing multi-line strings as ``|`` blocks (built on first use:
    ``maos`` start-up does not import yaml)."""
    import yaml

    class PlanDumper(yaml.SafeDumper):
        pass

    PlanDumper.add_representer(str, _literal_str)
    return PlanDumper
