"""The root Typer app and the registration of every command group."""

from __future__ import annotations

import logging
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


def _register() -> None:
    # Imported for their side effect of adding commands to ``app``.
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
    _register()
    app()
