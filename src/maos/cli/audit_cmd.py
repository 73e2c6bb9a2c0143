"""``maos audit RUN``: the run's audit trail as its audit sink holds it (``maos.audit``)."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from maos.cli._app import app
from maos.cli._common import AuditOption, JsonOption


@app.command()
def audit(
    run_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[RUN]", help="The run (its id or a unique start of it); default: the newest."
        ),
    ] = None,
    sink_url: AuditOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show who did what in RUN: door actions, refusals and commands, from the audit sink.

    The sink lives outside the store, so a purged run's trail is still shown."""
    from maos.audit import AuditRecord, open_audit_sink
    from maos.cli._ids import match_id
    from maos.errors import RunNotFound

    async def load() -> tuple[str, str, list[AuditRecord]]:
        sink = await open_audit_sink(sink_url, workdir=Path.cwd())
        try:
            everything = await sink.read()
            known = {record.run for record in everything}
            if run_id is None:  # the run of the newest record, like `maos status` takes the newest run
                newest = max(everything, key=lambda record: record.time, default=None)
                if newest is None:
                    raise RunNotFound(f"no run in audit sink {sink.url}")
                given = newest.run
            else:
                given = run_id
            chosen = match_id(given, known, kind="run", where=f"audit sink {sink.url}", prefixes=True)
            return chosen, sink.url, [record for record in everything if record.run == chosen]
        finally:
            await sink.close()

    chosen, where, records = asyncio.run(load())
    if json_output:
        typer.echo(
            json.dumps({"run": chosen, "sink": where, "records": [asdict(r) for r in records]}, indent=2)
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"audit of run {chosen} ({where})", title_justify="left", show_edge=False)
    for column in ("time", "actor", "action", "resource", "outcome", "reason"):
        table.add_column(column, overflow="fold")
    for record in records:
        when = datetime.fromtimestamp(record.time).strftime("%Y-%m-%d %H:%M:%S")
        style = "red" if record.outcome in ("refused", "error") else None
        table.add_row(
            when, record.actor, record.action, record.resource, record.outcome, record.reason, style=style
        )
    # Not on a terminal (a pipe, a file): wide enough that lines are not folded.
    Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 240).print(table)
