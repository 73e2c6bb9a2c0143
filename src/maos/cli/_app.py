"""The root Typer app and the registration of every command group."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="maos",
    help="MAOS: run many real AI coding agents in parallel on a DAG of tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Imported for their side effect of adding commands to ``app``.
    from maos.cli import plan_cmd  # noqa: F401


def main() -> None:
    _register()
    app()
