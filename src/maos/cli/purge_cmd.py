"""``maos purge RUN`` and ``maos purge --older-than 30d``: erase runs everywhere (``maos.purge``)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from maos.cli._app import app
from maos.cli._common import (
    EXIT_FAILED,
    AuditOption,
    JsonOption,
    S3EndpointOption,
    StoreOption,
    fail,
    store_url,
)

if TYPE_CHECKING:
    from maos.purge import PurgeReport

_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.ASCII)


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` in seconds; ``ValueError`` otherwise."""
    found = _AGE_RE.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not an age: expected a number and s, m, h, d or w (e.g. 30d)")
    return float(found.group(1)) * _UNITS_S[found.group(2)]


@app.command()
def purge(
    run_id: Annotated[
        str | None, typer.Argument(metavar="[RUN]", help="The run to erase (its id or a unique start).")
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", metavar="AGE", help="Erase every run that finished more than AGE ago (30d)."
        ),
    ] = None,
    keep_branch: Annotated[
        bool, typer.Option("--keep-branch", help="Keep the run's merged work, the branch maos/RUN.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Also erase a run whose orchestrator is alive (holds its lease).")
    ] = False,
    checkpoints: Annotated[
        str | None,
        typer.Option(
            "--checkpoints",
            help="Also look for checkpoints here (a directory or s3://BUCKET/PREFIX); those the run's "
            "log names and .maos/checkpoints are always looked at.",
        ),
    ] = None,
    s3_endpoint: S3EndpointOption = None,
    store: StoreOption = None,
    sink_url: AuditOption = None,
    json_output: JsonOption = False,
) -> None:
    """Erase RUN: its events, state, messages, results, outputs, transcripts, checkpoints,
    worktrees and branches, and its record; then check that nothing naming it is left.

    The audit sink keeps its records of the run (and of this purge)."""
    import os

    from maos.audit import AuditRecord, open_audit_sink, operator
    from maos.cli._ids import resolve_run_id
    from maos.errors import RunLocked
    from maos.purge import finished_runs_older_than, purge_run
    from maos.store import open_store

    if (run_id is None) == (older_than is None):
        fail("give a RUN or --older-than AGE (one of them)")
    age_s = None
    if older_than is not None:
        try:
            age_s = parse_age(older_than)
        except ValueError as exc:
            fail(f"--older-than: {exc}")
    locations = [None, checkpoints or os.environ.get("MAOS_CHECKPOINTS")]
    workdir = Path.cwd()
    actor = operator()

    async def work() -> list[PurgeReport]:
        import time

        opened = await open_store(store_url(store))
        sink = await open_audit_sink(sink_url, workdir=workdir)
        try:
            if age_s is not None:
                runs = await finished_runs_older_than(opened, age_s)
            else:
                assert run_id is not None
                runs = [await resolve_run_id(opened, run_id)]
            reports: list[PurgeReport] = []
            for one in runs:
                try:
                    report = await purge_run(
                        opened,
                        one,
                        workdir=workdir,
                        checkpoints=[*dict.fromkeys(locations)],
                        s3_endpoint=s3_endpoint,
                        keep_branch=keep_branch,
                        force=force,
                    )
                except RunLocked as exc:
                    await sink.write(
                        [AuditRecord(time.time(), one, actor, "purge", f"run:{one}", "refused", str(exc))]
                    )
                    raise
                outcome = "ok" if report.clean else "incomplete"
                reason = f"removed {len(report.removed)} item(s); left {len(report.remaining)}"
                reason += "; kept the branch" if keep_branch else ""
                await sink.write(
                    [AuditRecord(time.time(), one, actor, "purge", f"run:{one}", outcome, reason)]
                )
                reports.append(report)
            return reports
        finally:
            await sink.close()
            await opened.close()

    reports = asyncio.run(work())
    _show(reports, json_output=json_output, older_than=older_than)
    if any(not report.clean for report in reports):
        raise typer.Exit(EXIT_FAILED)


def _show(reports: list[PurgeReport], *, json_output: bool, older_than: str | None) -> None:
    if json_output:
        typer.echo(json.dumps({"purged": [report.as_json() for report in reports]}, indent=2))
        return
    if older_than is not None and not reports:
        typer.echo(f"no run finished more than {older_than} ago")
    for report in reports:
        typer.echo(f"run {report.run_id}: removed")
        for line in report.removed or ["nothing (no trace of the run was found)"]:
            typer.echo(f"  - {line}")
        for line in report.kept:
            typer.echo(f"  kept: {line}")
        if report.clean:
            typer.echo("  checked: nothing naming the run is left in the store, on disk or in checkpoints")
        else:
            typer.echo("  LEFT (could not be erased):")
            for line in report.remaining:
                typer.echo(f"  ! {line}")
