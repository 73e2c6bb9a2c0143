"""The ``maos`` command: a thin layer over the Python API.

This package is the only place that configures logging or calls ``asyncio.run``. Each
sub-module registers one command group; heavy modules are imported inside commands so that
door commands called from agent scripts (``maos state …``) start fast.
"""

from __future__ import annotations

from maos.cli import _startup  # noqa: F401  (first: before typer and the command modules load)
from maos.cli._app import app, main

__all__ = ["app", "main"]
