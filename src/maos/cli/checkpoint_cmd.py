"""``maos checkpoint list|show|restore``: look at a run's checkpoints and verify what a resume
would start from. Reading never changes or deletes a checkpoint.

The key comes from ``MAOS_KEY`` or ``.maos/key`` here (``MAOS_OLD_KEYS`` for older ones);
these commands never create one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from maos.cli._app import app
from maos.cli._common import EXIT_FAILED, JsonOption, S3EndpointOption, err_console, fail
from maos.cli._ids import match_id

if TYPE_CHECKING:
    from maos.checkpoint.checkpointer import Checkpointer, Restored
    from maos.checkpoint.codec import Checkpoint

T = TypeVar("T")

checkpoint_app = typer.Typer(help="List, inspect and verify a run's checkpoints.", no_args_is_help=True)
app.add_typer(checkpoint_app, name="checkpoint")

CheckpointsOption = Annotated[
    str | None,
    typer.Option(
        "--checkpoints",
        envvar="MAOS_CHECKPOINTS",
        help="Where checkpoints are: a directory (default .maos/checkpoints here) or s3://BUCKET/PREFIX. "
        "Also MAOS_CHECKPOINTS.",
        show_default=False,
    ),
]
RunArgument = Annotated[str, typer.Argument(metavar="RUN", help="Run id or a unique start of one.")]
IdArgument = Annotated[
    str | None, typer.Argument(metavar="ID", help="Checkpoint id (default: the newest).", show_default=False)
]


def _run(
    location: str | None, endpoint: str | None, action: Callable[[Checkpointer], Awaitable[T]], *, key: bool
) -> T:
    """Open the blob store and a checkpointer, run ``action``, close."""
    from maos import security
    from maos.blobs import open_blob_store
    from maos.checkpoint.checkpointer import Checkpointer
    from maos.paths import state_dir

    async def main() -> T:
        blobs = open_blob_store(location, workdir=Path.cwd(), endpoint_url=endpoint)
        try:
            info = security.load_or_create_key(state_dir(Path.cwd()), create=False) if key else None
            # The run id only scopes writes; reads name their run explicitly.
            return await action(Checkpointer("cli", blobs, info))
        finally:
            await blobs.close()

    return asyncio.run(main())


async def _resolved(checkpointer: Checkpointer, given: str) -> str:
    """The run ``given`` names among those with checkpoints: an id or a unique start of one
    (the resolver of every command, ``maos.cli._ids``)."""
    if await checkpointer.list(given):
        return given
    known = await checkpointer.runs()
    return match_id(
        given, known, kind="run", where=f"the checkpoints in {checkpointer.blobs.url}", prefixes=True
    )


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _covers(item: Checkpoint) -> str:
    if item.event_count is None:
        return ""
    if item.events is not None:
        return f"{item.events} events, to #{item.event_count}"
    return f"{item.tasks} tasks, to #{item.event_count}"


@checkpoint_app.command("list")
def list_checkpoints(
    run_id: Annotated[
        str | None,
        typer.Argument(metavar="RUN", help="Run id (default: list the runs that have checkpoints)."),
    ] = None,
    checkpoints: CheckpointsOption = None,
    s3_endpoint: S3EndpointOption = None,
    verify: Annotated[
        bool,
        typer.Option("--verify/--no-verify", help="Decrypt each checkpoint and report whether it is usable."),
    ] = True,
    json_output: JsonOption = False,
) -> None:
    """List a run's checkpoints, oldest first (or, without RUN, the runs that have some)."""
    from rich.console import Console
    from rich.table import Table

    from maos.errors import CheckpointError

    if run_id is None:
        runs = _run(checkpoints, s3_endpoint, lambda checkpointer: checkpointer.runs(), key=False)
        if json_output:
            typer.echo(json.dumps(runs, indent=2))
            return
        table = Table(box=None, header_style="bold")
        table.add_column("run")
        table.add_column("checkpoints", justify="right")
        for name, number in runs.items():
            table.add_row(name, str(number))
        Console(highlight=False).print(table if runs else "no checkpoints")
        return

    async def collect(checkpointer: Checkpointer) -> list[tuple[Checkpoint, str]]:
        rows: list[tuple[Checkpoint, str]] = []
        run = await _resolved(checkpointer, run_id)
        for item in await checkpointer.list(run):
            if not verify:
                rows.append((item, "not verified"))
                continue
            try:
                rows.append((await checkpointer.inspect(run, item.id), "ok"))
            except CheckpointError as exc:
                rows.append((item, str(exc).removeprefix(f"checkpoint {item.id} ")))
        return rows

    rows = _run(checkpoints, s3_endpoint, collect, key=verify)
    if json_output:
        typer.echo(json.dumps([{**item.to_json(), "status": status} for item, status in rows], indent=2))
        return
    if not rows:
        fail(f"no checkpoints of run {run_id}", EXIT_FAILED)
    table = Table(box=None, header_style="bold", title_justify="left")
    table.add_column("id (UTC time, kind)", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    for column in ("covers", "last event", "status"):
        table.add_column(column)
    for item, status in rows:
        style = "green" if status == "ok" else "dim" if status == "not verified" else "red"
        table.add_row(
            item.id,
            _size(item.size),
            _covers(item),
            item.last_event_id or "",
            f"[{style}]{status}[/]",
        )
    Console(highlight=False).print(table)


def _restored_json(restored: Restored, *, with_state: bool) -> dict[str, Any]:
    document: dict[str, Any] = {
        "run_id": restored.state.run_id,
        "checkpoint": restored.checkpoint.to_json(),
        "base": restored.base.id if restored.base is not None else None,
        "segments": [item.id for item in restored.segments],
        "warnings": list(restored.warnings),
        "last_event_id": restored.state.last_event_id,
        "event_count": restored.state.event_count,
        "status": restored.state.status.value,
        "counts": {name: number for name, number in restored.state.counts().items() if number},
        "agents": {agent: session.model_dump() for agent, session in restored.agents.items()},
    }
    if with_state:
        document["state"] = restored.state.model_dump(mode="json")
    return document


def _load(run_id: str, checkpoint_id: str | None) -> Callable[[Checkpointer], Awaitable[Restored]]:
    async def load(checkpointer: Checkpointer) -> Restored:
        run = await _resolved(checkpointer, run_id)
        if checkpoint_id is None:
            return await checkpointer.load_latest(run)
        return await checkpointer.load(run, checkpoint_id)

    return load


def _warn(restored: Restored) -> None:
    console = err_console()
    for warning in restored.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}", soft_wrap=True)


@checkpoint_app.command("show")
def show(
    run_id: RunArgument,
    checkpoint_id: IdArgument = None,
    checkpoints: CheckpointsOption = None,
    s3_endpoint: S3EndpointOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one checkpoint (default: the newest): its metadata and the run's task counts then."""
    from rich.console import Console

    async def load(checkpointer: Checkpointer) -> Restored:
        run = await _resolved(checkpointer, run_id)
        chosen = checkpoint_id
        if chosen is None:
            listed = await checkpointer.list(run)
            if not listed:
                from maos.errors import CheckpointError

                raise CheckpointError(f"no checkpoints of run {run} in {checkpointer.blobs.url}")
            chosen = listed[-1].id
        return await checkpointer.load(run, chosen)

    restored = _run(checkpoints, s3_endpoint, load, key=True)
    if json_output:
        typer.echo(json.dumps(_restored_json(restored, with_state=False), indent=2))
        return
    _warn(restored)
    item = restored.checkpoint
    console = Console(highlight=False)
    console.print(
        f"checkpoint [bold]{item.id}[/] of run [bold]{restored.state.run_id}[/] ({item.kind.value})"
    )
    console.print(f"  created      {_when(item.created_at)}")
    console.print(f"  size         {_size(item.size)} (compressed, encrypted)")
    console.print(f"  covers       events to #{item.event_count}, last event id {item.last_event_id}")
    if restored.base is not None and restored.base.id != item.id:
        console.print(f"  built on     {restored.base.id} + {len(restored.segments)} segment(s)")
    _print_state(console, restored)


def _print_state(console: Any, restored: Restored) -> None:
    counts = ", ".join(f"{name} {number}" for name, number in restored.state.counts().items() if number)
    console.print(f"  run status   {restored.state.status.value}")
    console.print(f"  tasks        {len(restored.state.tasks)} ({counts or 'none'})")
    for agent, session in sorted(restored.agents.items()):
        console.print(
            f"  agent        {agent}: session {session.session_id or '-'}, branch {session.branch or '-'}"
        )


@checkpoint_app.command("restore")
def restore(
    run_id: RunArgument,
    checkpoint_id: IdArgument = None,
    checkpoints: CheckpointsOption = None,
    s3_endpoint: S3EndpointOption = None,
    json_output: JsonOption = False,
) -> None:
    """Verify and print what a resume would start from (with --json: the restored state).

    Without ID: the newest usable full snapshot plus the segments after it, falling back past
    damaged checkpoints with a warning. Nothing is changed; `maos resume RUN` continues a run.
    """
    from rich.console import Console

    restored = _run(checkpoints, s3_endpoint, _load(run_id, checkpoint_id), key=True)
    _warn(restored)
    if json_output:
        typer.echo(json.dumps(_restored_json(restored, with_state=True), indent=2))
        return
    console = Console(highlight=False)
    base = restored.base.id if restored.base is not None else "the start of the run"
    console.print(
        f"run [bold]{restored.state.run_id}[/] restores from {base} + {len(restored.segments)} segment(s), "
        f"up to event {restored.state.last_event_id} (#{restored.state.event_count})"
    )
    _print_state(console, restored)
