"""``maos status``, ``maos runs`` and ``maos logs``: read a run's event log back."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Annotated

import typer

from maos.cli._app import app
from maos.cli._common import JsonOption, StoreOption, err_console, store_url
from maos.cli._ids import resolve_run_id

FOLLOW_CHECK_S = 5.0
"""Seconds without new events after which ``logs --follow`` checks that the run still has
an orchestrator."""

if TYPE_CHECKING:
    from maos.events import Event
    from maos.liveness import RunView
    from maos.model import FitnessScores, RunRecord, RunState

RunArgument = Annotated[
    str | None,
    typer.Argument(metavar="RUN", help="Run id or a unique start of one (default: the newest run)."),
]


async def _load_state(url: str | None, run_id: str | None) -> tuple[RunState, RunView]:
    """The run's fold, and its status now (``interrupted`` without a live orchestrator)."""
    from maos.eventlog import EventLog
    from maos.liveness import run_view
    from maos.store import open_store

    store = await open_store(url)
    try:
        state = await EventLog(store, await resolve_run_id(store, run_id)).replay()
        return state, await run_view(store, state.run_id, state.status)
    finally:
        await store.close()


def _interrupted_note(view: RunView) -> str:
    since = "an unknown time"
    if view.interrupted_since is not None:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(view.interrupted_since))
    return (
        f"run {view.run_id} is interrupted since {since} (its last event): no orchestrator drives it "
        f"(its log says {view.logged_status}); {view.hint}"
    )


def _fitness_text(scores: FitnessScores | None) -> str:
    """Why the task went to its agent: ``0.93 (1.00/1.00/0.75)``, the fitness and its three
    parts: capability, workload, history (``maos.scheduler``)."""
    if scores is None:
        return ""
    return f"{scores.total:.2f} ({scores.capability:.2f}/{scores.workload:.2f}/{scores.history:.2f})"


@app.command()
def status(run_id: RunArgument = None, store: StoreOption = None, json_output: JsonOption = False) -> None:
    """Show a run's state, rebuilt from its event log."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from maos.cli.progress import STATE_STYLES
    from maos.liveness import INTERRUPTED
    from maos.sanitize import printable
    from maos.summary import run_summary

    state, view = asyncio.run(_load_state(store_url(store), run_id))
    summary = run_summary(state) | view.as_json()
    # an interrupted run's tasks that were running show as interrupted: their agents are gone
    summary["counts"] = view.task_counts(state)
    for task_id, task in state.tasks.items():
        summary["tasks"][task_id]["state"] = view.task_state(task.state)
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
        return
    # Task ids, reasons, warnings and stderr tails are agent bytes: shown escaped, never as
    # rich markup or terminal control sequences.
    console = Console(highlight=False)
    counts = ", ".join(f"{name} {number}" for name, number in summary["counts"].items())
    console.print(
        Text.assemble(
            "run ",
            (printable(state.run_id), "bold"),
            f" plan {printable(repr(summary['plan']))}: ",
            (view.status, "bold yellow" if view.interrupted else "bold"),
            f" ({counts})",
        )
    )
    if view.interrupted:
        console.print(Text(printable(_interrupted_note(view)), style="yellow"), soft_wrap=True)
    table = Table(box=None, header_style="bold")
    for column in ("task", "state", "attempts", "agent", "fit (cap/load/hist)", "duration", "cost", "note"):
        table.add_column(column)
    for task_id, task in state.tasks.items():
        shown_state = view.task_state(task.state)
        note = Text()
        if task.attention:
            note.append(f"⚠ needs attention: {printable(task.attention)}", style="bold yellow")
        for text in (task.reason, *task.warnings[-2:]):
            if text:
                note.append(("; " if note else "") + printable(text))
        table.add_row(
            Text(printable(task_id)),
            Text(shown_state, style="yellow" if shown_state == INTERRUPTED else STATE_STYLES[task.state]),
            str(task.attempts),
            Text(printable(task.agent_id or "")),
            _fitness_text(task.fitness),
            f"{task.duration_s:.2f}s" if task.duration_s is not None else "",
            f"${task.usage.cost_usd:.4f}" if task.usage else "",
            note,
        )
    console.print(table)
    if state.summary:
        console.print(Text(printable(state.summary, keep_newlines=True)), soft_wrap=True)


@app.command()
def runs(
    store: StoreOption = None,
    json_output: JsonOption = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many runs.")] = 20,
) -> None:
    """List runs, newest first."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from maos.sanitize import printable
    from maos.store import open_store

    async def collect() -> list[tuple[RunRecord, RunView]]:
        from maos.liveness import run_view

        opened = await open_store(store_url(store))
        try:
            from maos.liveness import run_records

            records = (await run_records(opened))[:limit]
            return [(record, await run_view(opened, record.run_id, record.status)) for record in records]
        finally:
            await opened.close()

    rows = asyncio.run(collect())
    if json_output:
        listed = [record.model_dump(mode="json") | view.as_json() for record, view in rows]
        typer.echo(json.dumps(listed, indent=2))
        return
    table = Table(box=None, header_style="bold")
    # A run id is what the user copies into the next command: never shortened or wrapped.
    widest = max((len(printable(record.run_id)) for record, _ in rows), default=3)
    table.add_column("run", no_wrap=True, min_width=widest)
    for column in ("plan", "tasks", "status", "owner", "started", "duration"):
        table.add_column(column)
    for record, view in rows:
        duration = f"{record.finished_at - record.started_at:.1f}s" if record.finished_at else ""
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started_at))
        table.add_row(
            Text(printable(record.run_id)),
            Text(printable(record.name)),
            str(record.tasks),
            Text(view.status, style="yellow" if view.interrupted else ""),
            Text(printable(view.owner), style="yellow" if view.interrupted else ""),
            started,
            duration,
        )
    console = Console(highlight=False)
    console.print(table)
    for _, view in rows:
        if view.interrupted:
            console.print(Text(printable(_interrupted_note(view)), style="yellow"), soft_wrap=True)


_SAMPLES = frozenset({"agent_stats"})
"""Events sampled every few seconds per agent: in ``maos logs`` only with ``-v`` (or ``--json``)."""
_NOT_SHOWN = frozenset({"ts", "type", "plan", "agents", "config"})


def _clock(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(seconds))


def _shown(key: str, value: object) -> str:
    """A field's value for people: times as HH:MM:SS, seconds to 2 decimals, no float noise."""
    if isinstance(value, float):
        if key.endswith("_at"):
            return _clock(value)
        if key.endswith("_s"):
            return f"{value:.2f}"
        if key.endswith("_ms"):
            return f"{value:.0f}"
        return f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, list | tuple):
        return ",".join(_shown(key, item) for item in value)
    if isinstance(value, str) and (not value or any(char.isspace() or char == '"' for char in value)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _fields(prefix: str, fields: dict[str, object]) -> list[str]:
    shown: list[str] = []
    for key, value in fields.items():
        if isinstance(value, dict):
            shown += _fields(f"{prefix}{key}.", value)
        else:
            shown.append(f"{prefix}{key}={_shown(key, value)}")
    return shown


def _format(event: Event) -> str:
    """One line per event: wall-clock time, type, and the fields not at their defaults;
    agent text escaped (``maos.sanitize.printable``), never raw agent bytes."""
    from maos.events import AgentOutput
    from maos.sanitize import printable

    stamp = _clock(event.ts)
    if isinstance(event, AgentOutput):
        return printable(f"{stamp} [{event.task_id}] {event.stream}: {event.text}")
    fields = event.model_dump(mode="json", exclude=set(_NOT_SHOWN), exclude_defaults=True)
    return printable(" ".join([stamp, event.type, *_fields("", fields)]))


def _as_json(event_id: str, event: Event) -> str:
    """Everything the log holds about an event, ``event_id`` first; escaped to ASCII."""
    return json.dumps({"event_id": event_id} | event.model_dump(mode="json"))


@app.command()
def logs(
    ctx: typer.Context,
    run_id: RunArgument = None,
    task: Annotated[
        str | None, typer.Option("--task", metavar="TASK", help="Only this task's events and output.")
    ] = None,
    tail: Annotated[
        int | None,
        typer.Option(
            "--tail", "-n", min=1, max=1_000_000_000, help="Only the last N lines (then --follow goes on)."
        ),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")] = False,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="One JSON object per line and event, with every field (and samples)."),
    ] = False,
    store: StoreOption = None,
) -> None:
    """Print a run's event log: state changes and the agents' output.

    Times are wall-clock (HH:MM:SS); fields at their defaults are left out, and the agents'
    resource samples (agent_stats) are shown only with -v. --json prints every event whole."""
    from collections import deque

    from maos.cli._app import verbosity
    from maos.cli._ids import task_id_in
    from maos.eventlog import EventLog
    from maos.events import RunFinished
    from maos.store import open_store

    samples = json_output or verbosity(ctx) > 0

    def line(event_id: str, event: Event) -> str | None:
        if task is not None and getattr(event, "task_id", None) != task:
            return None
        if json_output:
            return _as_json(event_id, event)
        return _format(event) if samples or event.type not in _SAMPLES else None

    async def follow_live(log: EventLog, start: str) -> None:
        """New events until the run ends, or until it has no orchestrator (interrupted): then
        say so instead of waiting for events that nobody will write."""
        from maos.liveness import live_orchestrator

        quiet_since, after = time.monotonic(), start
        while True:
            chunk = await log.read(after, block_s=1.0)
            for event_id, event in chunk:
                after = event_id
                if (text := line(event_id, event)) is not None:
                    typer.echo(text)
                if isinstance(event, RunFinished):
                    return
            if chunk:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= FOLLOW_CHECK_S:
                if await live_orchestrator(log.store, log.run_id) is None:
                    err_console().print(
                        f"run {log.run_id} is interrupted: no orchestrator drives it; "
                        f"`maos resume {log.run_id}` continues it",
                        markup=False,
                        highlight=False,
                        soft_wrap=True,
                    )
                    return
                quiet_since = time.monotonic()

    async def show() -> None:
        opened = await open_store(store_url(store))
        try:
            log = EventLog(opened, await resolve_run_id(opened, run_id))
            if task is not None:
                task_id_in(task, (await log.replay()).tasks, log.run_id)
            kept: deque[str] = deque(maxlen=tail)
            after, finished = "0", False
            async for after, event in log.iterate():
                finished = finished or isinstance(event, RunFinished)
                if (text := line(after, event)) is not None:
                    if tail is None:
                        typer.echo(text)
                    else:
                        kept.append(text)
            for text in kept:
                typer.echo(text)
            if follow and not finished:
                await follow_live(log, after)
        finally:
            await opened.close()

    asyncio.run(show())
