"""``maos status``, ``maos runs`` and ``maos logs``: read a run's event log back."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Annotated

import typer

from maos.cli._app import app
from maos.cli._common import EXIT_FAILED, JsonOption, StoreOption, fail, store_url

if TYPE_CHECKING:
    from maos.liveness import RunView
    from maos.model import Event, RunRecord, RunState
    from maos.store.base import Store

RunArgument = Annotated[str | None, typer.Argument(metavar="RUN", help="Run id (default: the newest run).")]


async def _records(store: Store) -> list[RunRecord]:
    from maos.model import RunRecord
    from maos.store import keys

    found = [RunRecord.model_validate_json(item.value) for item in await store.scan(keys.RUN_RECORD_PREFIX)]
    return sorted(found, key=lambda record: record.started_at, reverse=True)


async def _resolve(store: Store, run_id: str | None) -> str:
    from maos.errors import RunNotFound

    if run_id:
        return run_id
    records = await _records(store)
    if not records:
        raise RunNotFound(f"no runs in store {store.url}")
    return records[0].run_id


async def _load_state(url: str | None, run_id: str | None) -> tuple[RunState, RunView]:
    """The run's fold, and its status now (``interrupted`` without a live orchestrator)."""
    from maos.events import EventLog
    from maos.liveness import run_view
    from maos.store import open_store

    store = await open_store(url)
    try:
        state = await EventLog(store, await _resolve(store, run_id)).replay()
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


@app.command()
def status(run_id: RunArgument = None, store: StoreOption = None, json_output: JsonOption = False) -> None:
    """Show a run's state, rebuilt from its event log."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from maos.cli.progress import STATE_STYLES
    from maos.errors import MaosError
    from maos.sanitize import printable
    from maos.summary import run_summary

    try:
        state, view = asyncio.run(_load_state(store_url(store), run_id))
    except MaosError as exc:
        fail(str(exc), EXIT_FAILED)
    summary = run_summary(state) | view.as_json()
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
    for column in ("task", "state", "attempts", "agent", "duration", "cost", "note"):
        table.add_column(column)
    for task_id, task in state.tasks.items():
        note = Text()
        if task.attention:
            note.append(f"⚠ needs attention: {printable(task.attention)}", style="bold yellow")
        for text in (task.reason, *task.warnings[-2:]):
            if text:
                note.append(("; " if note else "") + printable(text))
        table.add_row(
            Text(printable(task_id)),
            Text(task.state.value, style=STATE_STYLES[task.state]),
            str(task.attempts),
            Text(printable(task.agent_id or "")),
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

    from maos.errors import MaosError
    from maos.sanitize import printable
    from maos.store import open_store

    async def collect() -> list[tuple[RunRecord, RunView]]:
        from maos.liveness import run_view

        opened = await open_store(store_url(store))
        try:
            records = (await _records(opened))[:limit]
            return [(record, await run_view(opened, record.run_id, record.status)) for record in records]
        finally:
            await opened.close()

    try:
        rows = asyncio.run(collect())
    except MaosError as exc:
        fail(str(exc), EXIT_FAILED)
    if json_output:
        listed = [record.model_dump(mode="json") | view.as_json() for record, view in rows]
        typer.echo(json.dumps(listed, indent=2))
        return
    table = Table(box=None, header_style="bold")
    for column in ("run", "plan", "tasks", "status", "started", "duration"):
        table.add_column(column)
    for record, view in rows:
        duration = f"{record.finished_at - record.started_at:.1f}s" if record.finished_at else ""
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started_at))
        table.add_row(
            Text(printable(record.run_id)),
            Text(printable(record.name)),
            str(record.tasks),
            Text(view.status, style="yellow" if view.interrupted else ""),
            started,
            duration,
        )
    console = Console(highlight=False)
    console.print(table)
    for _, view in rows:
        if view.interrupted:
            console.print(Text(printable(_interrupted_note(view)), style="yellow"), soft_wrap=True)


def _format(event: Event, started: float) -> str:
    """One line per event, with agent text escaped (``maos.sanitize.printable``)."""
    from maos.model import AgentOutput
    from maos.sanitize import printable

    stamp = f"{event.ts - started:9.3f}s"
    if isinstance(event, AgentOutput):
        return printable(f"{stamp} [{event.task_id}] {event.stream}: {event.text}")
    fields = event.model_dump(mode="json", exclude={"ts", "type", "plan", "agents", "config"})
    detail = " ".join(f"{key}={value}" for key, value in fields.items() if value not in (None, "", []))
    return printable(f"{stamp} {event.type} {detail}")


@app.command()
def logs(
    run_id: RunArgument = None,
    task: Annotated[str | None, typer.Option("--task", help="Only this task's events and output.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")] = False,
    store: StoreOption = None,
) -> None:
    """Print a run's event log: state changes and the agents' output."""
    from maos.errors import MaosError
    from maos.events import EventLog
    from maos.store import open_store

    async def show() -> None:
        opened = await open_store(store_url(store))
        try:
            log = EventLog(opened, await _resolve(opened, run_id))
            started: float | None = None
            source = log.follow() if follow else log.iterate()
            async for _, event in source:
                if started is None:
                    started = event.ts
                if task is not None and getattr(event, "task_id", None) != task:
                    continue
                typer.echo(_format(event, started))
        finally:
            await opened.close()

    try:
        asyncio.run(show())
    except MaosError as exc:
        fail(str(exc), EXIT_FAILED)
