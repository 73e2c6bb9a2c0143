"""The root Typer app and the registration of the commands: only the invoked command's module
is imported (door commands, which agents call many times per task, among them)."""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import math
import os
import re
import sys
import threading
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from maos.cli import _startup, _terminal
from maos.cli._common import EXIT_FAILED, EXIT_USAGE, fail, report_error
from maos.errors import OutputError

HELP_PANELS: dict[str, tuple[str, ...]] = {
    "Run and inspect": ("run", "plan", "status", "runs", "logs", "resume", "retry", "dashboard", "agents"),
    "Operate": ("serve", "worker", "supervisor", "checkpoint", "doctor", "clean", "audit", "purge", "import"),
    "Rehearse and measure": ("examples", "model-server", "bench"),
    "Called by agents inside a run": ("state", "msg", "broadcast", "result", "task", "mcp"),
}
"""``maos --help`` in this order: what a user types first; what agents call last."""
_OTHER_PANEL = "Other commands"
_PANEL_OF = {name: panel for panel, names in HELP_PANELS.items() for name in names}
_RANK = {name: rank for rank, name in enumerate(_PANEL_OF)}


class _RootGroup(TyperGroup):
    """Lists the commands in ``HELP_PANELS`` order and groups, whatever order the modules
    registering them were imported in."""

    # ``ctx`` is the click Context typer vendors (private); see ``plan_cmd._PlanGroup``.
    def list_commands(self, ctx: Any) -> list[str]:
        return sorted(super().list_commands(ctx), key=lambda name: _RANK.get(name, len(_RANK)))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None and not getattr(command, "rich_help_panel", None):
            setattr(command, "rich_help_panel", _PANEL_OF.get(cmd_name, _OTHER_PANEL))  # noqa: B010
        if command is not None:
            _finite_floats(command)
            _working_when_invoked(command)
        return command

    def invoke(self, ctx: Any) -> Any:
        """Every command, and every error it raises through ``report_error``: the one place
        errors become messages and exit codes, however the app is called."""
        try:
            return super().invoke(ctx)
        except BaseException as exc:
            report_error(exc)


def _working_when_invoked(command: Any) -> None:
    """The command's own code starts once its options are parsed: ``_startup.working``."""
    invoke = command.invoke
    if getattr(invoke, "_maos_working", False):
        return

    def invoked(ctx: Any) -> Any:
        _startup.working()
        return invoke(ctx)

    invoked._maos_working = True  # type: ignore[attr-defined]
    command.invoke = invoked


def _finite_floats(command: Any) -> None:
    """Every number option of ``command`` (and of its subcommands) refuses ``nan`` and
    ``inf``, which click's float types take: ``--grace-s nan`` passes ``min=0`` (a NaN
    compares false), ``--duration-s inf`` would run a benchmark for ever."""
    for param in getattr(command, "params", ()):
        if _takes_float(param) and not getattr(param, "_maos_finite", False):
            param.callback = _finite_check(param.callback)
            param._maos_finite = True
    for sub in getattr(command, "commands", {}).values():
        _finite_floats(sub)


def _takes_float(param: Any) -> bool:
    described = getattr(param, "type_descriptor", None)  # typer's parameters
    annotation = getattr(described, "annotation", None)
    if annotation is not None:
        return annotation in (float, float | None, list[float])
    return getattr(getattr(param, "type", None), "name", "") in ("float", "float range")


def _finite_check(then: Any) -> Any:
    def check(ctx: Any, param: Any, value: Any) -> Any:
        values = value if isinstance(value, list | tuple) else (value,)
        if any(isinstance(item, float) and not math.isfinite(item) for item in values):
            raise typer.BadParameter(f"{value!r} is not a finite number")
        return then(ctx, param, value) if then is not None else value

    return check


app = typer.Typer(
    name="maos",
    cls=_RootGroup,
    help="MAOS: run many real AI coding agents in parallel on a DAG of tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if not value:
        return
    from maos import __version__

    typer.echo(f"maos {__version__}")
    raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        int,
        typer.Option("--verbose", "-v", count=True, help="More output (-vv: debug); also after the command."),
    ] = 0,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit."),
    ] = False,
) -> None:
    try:
        os.getcwd()
    except FileNotFoundError:
        fail("the current directory no longer exists (it was deleted): cd to one that does", EXIT_USAGE)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The door's MCP endpoint (maos.mcp_http) logs a line or two per tool call at INFO: -vv.
    for chatty in ("mcp", "uvicorn"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


COMMAND_MODULES: dict[str, str] = {
    "agents": "agents_cmd",
    "audit": "audit_cmd",
    "bench": "bench_cmd",
    "checkpoint": "checkpoint_cmd",
    "clean": "clean_cmd",
    "dashboard": "dashboard_cmd",
    "doctor": "doctor_cmd",
    "examples": "examples_cmd",
    "import": "import_cmd",
    "logs": "inspect_cmd",
    "model-server": "model_server_cmd",
    "plan": "plan_cmd",
    "purge": "purge_cmd",
    "resume": "run_cmd",
    "retry": "run_cmd",
    "run": "run_cmd",
    "runs": "inspect_cmd",
    "serve": "serve_cmd",
    "status": "inspect_cmd",
    "supervisor": "supervisor_cmd",
    "worker": "worker_cmd",
    # What agents call: these never load the rest.
    "broadcast": "door_cmd",
    "mcp": "mcp_cmd",
    "msg": "door_cmd",
    "result": "door_cmd",
    "state": "door_cmd",
    "task": "door_cmd",
}
"""The module (under ``maos.cli``) that registers each command. ``maos CMD …`` imports only
CMD's: importing all 19, and Typer building every command's parameters from its signature,
cost ``maos run`` about 0.06 s of CPU before it did anything (tested complete:
tests/door/test_door_cli.py)."""

DOOR_COMMANDS = frozenset(
    name for name, module in COMMAND_MODULES.items() if module in ("door_cmd", "mcp_cmd")
)
"""What agents call, often many times per task; their arguments are agents' data."""
_VERBOSE_RE = re.compile(r"-v+|--verbose")


def verbosity(ctx: typer.Context) -> int:
    """How many ``-v`` the user gave (before or after the command)."""
    return int(ctx.find_root().params.get("verbose") or 0)


def _hoist_global_options(args: list[str]) -> list[str]:
    """``maos run plan.yaml -v`` as ``maos -v run plan.yaml``: click takes a group's options
    only before the command, users put them anywhere. Door commands, whose arguments are
    agents' data, and anything after ``--`` are left alone."""
    command = next((n for n, arg in enumerate(args) if not arg.startswith("-")), None)
    if command is None or args[command] in DOOR_COMMANDS:
        return args
    end = command + args[command:].index("--") if "--" in args[command:] else len(args)
    hoisted = [arg for arg in args[command + 1 : end] if _VERBOSE_RE.fullmatch(arg)]
    if not hoisted:
        return args
    rest = [arg for arg in args[command + 1 : end] if not _VERBOSE_RE.fullmatch(arg)]
    return [*args[:command], *hoisted, args[command], *rest, *args[end:]]


def _register(argv: list[str]) -> None:
    """Import the modules that add the command of ``argv`` to ``app`` (a side effect of
    their import); every command module when there is none or it is unknown (``maos``,
    ``maos --help``, a typo: click lists them or suggests one)."""
    command = next((arg for arg in argv[1:] if not arg.startswith("-")), None)
    module = COMMAND_MODULES.get(command or "")
    for name in [module] if module else sorted(set(COMMAND_MODULES.values())):
        importlib.import_module(f"maos.cli.{name}")


def main() -> NoReturn:
    """The ``maos`` program: run the command of ``sys.argv``, then end the process."""
    _terminal.prepare()
    _register(sys.argv)
    _startup.loaded()
    sys.unraisablehook = _quiet_closed_loop
    try:
        try:
            app(args=_hoist_global_options(sys.argv[1:]))
        except BaseException as exc:  # the last line of defence: a user never sees a traceback
            report_error(exc)  # an error outside a command (the root group maps the commands')
    except SystemExit as done:
        _leave(done)
    sys.exit(0)  # app() always raises SystemExit; this is for the type checker


def _leave(done: SystemExit) -> NoReturn:
    """End the process with ``done``'s exit code without tearing the interpreter down.

    Once a command is over, CPython's finalization (freeing every module and object one by
    one) took 0.27 s of CPU on the 2-core VM after ``maos run``: paid by every ``maos``
    command, and by every door command an agent's script runs. What finalization does that
    matters is still done, in its order: wait for non-daemon threads (if one still runs, the
    normal exit is taken), the ``atexit`` handlers (logging's flush among them), the flush of
    stdout and stderr; then ``os._exit``."""
    code = done.code
    if not (code is None or isinstance(code, int)) or any(
        thread.is_alive() and not thread.daemon and thread is not threading.main_thread()
        for thread in threading.enumerate()
    ):
        raise done
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OutputError as exc:  # a full disk: what was left to print is lost
            if not code and stream is sys.stdout:
                with contextlib.suppress(OutputError, OSError, ValueError):
                    sys.stderr.write(f"error: {exc}\n")
            code = code or EXIT_FAILED
        except (OSError, ValueError):  # a closed pipe (maos … | head), a closed stream
            code = code or 120  # what CPython exits with when its final flush fails
    os._exit(code or 0)


_default_unraisable = sys.unraisablehook


def _quiet_closed_loop(unraisable: sys.UnraisableHookArgs) -> None:
    """asyncio's subprocess transports that are collected after ``asyncio.run`` closed its
    loop print "Exception ignored ... Event loop is closed" with a traceback; MAOS closes its
    transports itself (``maos.agents.process.close_transport``), and this catches the rest
    so that a user never sees that noise. Anything else goes to the default hook."""
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        logging.getLogger("maos.cli").debug("ignored at exit: %r in %r", exc, unraisable.object)
        return
    _default_unraisable(unraisable)
