"""Helpers shared by the command modules: options, errors, console."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console


def _check_store(value: str | None) -> str | None:
    """Refuse a malformed ``--store`` (or ``MAOS_STORE``) while parsing: exit 2 naming it,
    before any store is opened or any folder created (``maos.store.check_store_url``)."""
    from maos.errors import StoreError
    from maos.store import check_store_url

    url = value or os.environ.get("MAOS_STORE") or None
    if url is not None:
        try:
            check_store_url(url)
        except StoreError as exc:
            source = "" if value else " (from MAOS_STORE)"
            raise typer.BadParameter(f"{exc}{source}") from None
    return value


StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Store URL: sqlite:///PATH (default .maos/maos.db here), redis://HOST:PORT, "
        "redis+cluster://HOST:PORT. Also MAOS_STORE.",
        show_default=False,
        callback=_check_store,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON document.")]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130


def store_url(option: str | None) -> str | None:
    return option or os.environ.get("MAOS_STORE") or None


def err_console() -> Console:
    from rich.console import Console  # not at import: door commands start without rich

    return Console(stderr=True, highlight=False)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code``."""
    from rich.markup import escape

    # The message may quote agent output or a user's file: never read it as markup.
    err_console().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(code)
