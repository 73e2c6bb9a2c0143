"""The root Typer app and the registration of the command groups (only the door's for a door
command, which agents call many times per task)."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

app = typer.Typer(
    name="maos",
    help="MAOS: run many real AI coding agents in parallel on a DAG of tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv: debug).")
    ] = 0,
) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


DOOR_COMMANDS = frozenset({"state", "msg", "broadcast", "result", "task", "mcp"})
"""What agents call, often many times per task: these start without the other commands."""


def _register(argv: list[str]) -> None:
    # Imported for their side effect of adding commands to ``app``.
    if len(argv) > 1 and argv[1] in DOOR_COMMANDS:
        from maos.cli import door_cmd, mcp_cmd

        return
    from maos.cli import (  # noqa: F401
        agents_cmd,
        bench_cmd,
        checkpoint_cmd,
        clean_cmd,
        dashboard_cmd,
        doctor_cmd,
        door_cmd,
        inspect_cmd,
        mcp_cmd,
        model_server_cmd,
        plan_cmd,
        run_cmd,
        worker_cmd,
    )


def main() -> None:
    _register(sys.argv)
    app()
