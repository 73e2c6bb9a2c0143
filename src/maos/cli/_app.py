"""The root Typer app and the registration of the command groups (only the door's for a door
command, which agents call many times per task)."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import traceback
from typing import Annotated, NoReturn

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
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the last line of defence: a user never sees a traceback
        _report_crash(exc)


def _report_crash(exc: Exception) -> NoReturn:
    """Say what went wrong in one line; a MAOS error (also from inside an exception group)
    is the user's to act on, anything else is a bug whose traceback goes to a private file."""
    from maos.cli._common import EXIT_FAILED, fail
    from maos.errors import MaosError, describe_error

    found = _first_maos_error(exc)
    if found is not None:
        fail(describe_error(found, limit=4000), EXIT_FAILED)
    where = ""
    try:
        fd, path = tempfile.mkstemp(prefix="maos-crash-", suffix=".txt")  # mode 0600
        with os.fdopen(fd, "w") as handle:
            handle.write(f"maos {' '.join(sys.argv[1:])}\n\n")
            traceback.print_exception(exc, file=handle)
        where = f"; the details are in {path}"
    except OSError:
        pass
    assert not isinstance(exc, MaosError)
    fail(f"internal error: {describe_error(exc)}{where} (please report it)", EXIT_FAILED)


def _first_maos_error(exc: BaseException) -> BaseException | None:
    from maos.errors import MaosError

    if isinstance(exc, MaosError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_maos_error(inner)
            if found is not None:
                return found
    return None
