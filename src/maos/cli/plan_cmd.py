"""``maos plan validate|show`` (owned by the plan module work)."""

from __future__ import annotations

import typer

from maos.cli._app import app

plan_app = typer.Typer(help="Check and inspect plans.", no_args_is_help=True)
app.add_typer(plan_app, name="plan")
