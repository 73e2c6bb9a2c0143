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


async def _load_state(url: str | None, run_id: str | None) -> RunState:
    from maos.events import EventLog
    from maos.store import open_store

    store = await open_store(url)
    try:
        return await EventLog(store, await _resolve(store, run_id)).replay()
    finally:
        await store.close()


@app.command()
def status(run_id: RunArgument = None, store: StoreOption = None, json_output: JsonOption = False) -> None:
    """Show a run's state, rebuilt from its event log."""
    from rich.console import Console
    from rich.table import Table

    from maos.cli.progress import STATE_STYLES
    from maos.errors import MaosError
    from maos.summary import run_summary

    try:
        state = asyncio.run(_load_state(store_url(store), run_id))
    except MaosError as exc:
        fail(str(exc), EXIT_FAILED)
    summary = run_summary(state)
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
        return
    console = Console(highlight=False)
    counts = ", ".join(f"{name} {number}" for name, number in summary["counts"].items())
    console.print(
        f"run [bold]{state.run_id}[/] plan {summary['plan']!r}: [bold]{state.status.value}[/] ({counts})"
    )
    table = Table(box=None, header_style="bold")
    for column in ("task", "state", "attempts", "agent", "duration", "cost", "note"):
        table.add_column(column)
    for task_id, task in state.tasks.items():
        notes = [task.reason, *task.warnings[-2:]]
        if task.attention:
            notes.insert(0, f"[bold yellow]⚠ needs attention: {task.attention}[/]")
        table.add_row(
            task_id,
            f"[{STATE_STYLES[task.state]}]{task.state.value}[/]",
            str(task.attempts),
            task.agent_id or "",
            f"{task.duration_s:.2f}s" if task.duration_s is not None else "",
            f"${task.usage.cost_usd:.4f}" if task.usage else "",
            "; ".join(note for note in notes if note),
        )
    console.print(table)
    if state.summary:
        console.print(state.summary, highlight=False, soft_wrap=True)


@app.command()
def runs(
    store: StoreOption = None,
    json_output: JsonOption = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many runs.")] = 20,
) -> None:
    """List runs, newest first."""
    from rich.console import Console
    from rich.table import Table

    from maos.errors import MaosError
    from maos.store import open_store

    async def collect() -> list[RunRecord]:
        opened = await open_store(store_url(store))
        try:
            return (await _records(opened))[:limit]
        finally:
            await opened.close()

    try:
        records = asyncio.run(collect())
    except MaosError as exc:
        fail(str(exc), EXIT_FAILED)
    if json_output:
        typer.echo(json.dumps([record.model_dump(mode="json") for record in records], indent=2))
        return
    table = Table(box=None, header_style="bold")
    for column in ("run", "plan", "tasks", "status", "started", "duration"):
        table.add_column(column)
    for record in records:
        duration = f"{record.finished_at - record.started_at:.1f}s" if record.finished_at else ""
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started_at))
        table.add_row(record.run_id, record.name, str(record.tasks), record.status.value, started, duration)
    Console(highlight=False).print(table)


def _format(event: Event, started: float) -> str:
    from maos.model import AgentOutput

    stamp = f"{event.ts - started:9.3f}s"
    if isinstance(event, AgentOutput):
        return f"{stamp} [{event.task_id}] {event.stream}: {event.text}"
    fields = event.model_dump(mode="json", exclude={"ts", "type", "plan", "agents", "config"})
    detail = " ".join(f"{key}={value}" for key, value in fields.items() if value not in (None, "", []))
    return f"{stamp} {event.type} {detail}"


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
