"""Helpers shared by the command modules: options, the exit codes and the one mapping of
errors to them, console.

Exit codes, the same for every command:

    0    done (for ``run``, ``resume``, ``retry``: the run succeeded)
    1    the work failed, or MAOS could not do it (a store, blob or git failure, a run that
         failed, a compare-and-set conflict, a check that failed)
    2    bad input: an option, an argument, a file, a run or task id, a ``MAOS_*`` variable;
         the message names it
    3    refused: the calling agent's identity does not allow it (door commands, ``maos mcp``)
    70   an internal error (a bug): one line on stderr, the traceback in a private file
    130  cancelled (Ctrl-C, SIGTERM)

Commands raise; ``report_error`` (called for every command by the root group, and by ``main``
for anything left) is the only place that turns an exception into a message and a code.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import traceback
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_INTERNAL = 70  # EX_SOFTWARE of sysexits.h
EXIT_CANCELLED = 130

EXIT_CODES: dict[str, int] = {
    "maos.errors.MaosError": EXIT_FAILED,
    "maos.errors.PlanError": EXIT_USAGE,
    "maos.errors.DocumentError": EXIT_USAGE,
    "maos.errors.ImportSourceError": EXIT_USAGE,
    "maos.errors.RunNotFound": EXIT_USAGE,
    "maos.errors.DoorError": EXIT_USAGE,
    "maos.errors.StateError": EXIT_USAGE,
    "maos.errors.StateConflict": EXIT_FAILED,
    "maos.errors.BusError": EXIT_USAGE,
    "maos.errors.PermissionDenied": EXIT_REFUSED,
    "maos.errors.KeyConfigError": EXIT_USAGE,
    "maos.modelserver.script.ScriptError": EXIT_USAGE,
    "maos.web.auth.InsecureBind": EXIT_USAGE,
}
"""The exit code of each error class, by its qualified name (no import: door commands start
lean); an error takes the code of the nearest class of its MRO listed here. A test checks
that every name is a ``MaosError``."""

_PASSED_THROUGH = (SystemExit, typer.Exit, typer.Abort, typer.TyperException, BrokenPipeError)
"""Exits, typer's own usage errors (it prints them, exit 2) and a closed stdout (``maos logs |
head``: typer exits quietly)."""


def exit_code(exc: BaseException) -> int:
    """The exit code for ``exc`` (``EXIT_CODES``); in an exception group, that of the first
    MAOS error inside; ``EXIT_INTERNAL`` for anything that is no MAOS error."""
    from asyncio import CancelledError

    if isinstance(exc, KeyboardInterrupt | CancelledError):
        return EXIT_CANCELLED
    found = _first_maos_error(exc)
    if found is None:
        if isinstance(exc, BaseExceptionGroup) and all(
            isinstance(inner, KeyboardInterrupt | CancelledError) for inner in exc.exceptions
        ):
            return EXIT_CANCELLED
        return EXIT_INTERNAL
    for cls in type(found).__mro__:
        code = EXIT_CODES.get(f"{cls.__module__}.{cls.__qualname__}")
        if code is not None:
            return code
    return EXIT_FAILED  # unreachable: MaosError is listed


def report_error(exc: BaseException) -> NoReturn:
    """Say what went wrong and exit with ``exit_code(exc)``; never a traceback.

    A MAOS error is the user's to act on: its message in one line, or, for an error that
    lists its problems (a plan's, an import's, a model script's), one line per problem, each
    naming its file and field. Anything else is a bug: one line, and its traceback in a
    private file (mode 0600) named in that line."""
    if isinstance(exc, _PASSED_THROUGH):
        raise exc
    from maos.errors import OutputError, describe_error
    from maos.sanitize import without_passwords

    code = exit_code(exc)
    if code == EXIT_CANCELLED:
        sys.exit(code)
    found = _first_maos_error(exc)
    if found is not None:
        problems = getattr(found, "problems", None)
        if isinstance(problems, list) and problems:
            from maos.sanitize import printable

            with contextlib.suppress(OutputError, OSError):  # stderr full or gone, as in ``fail``
                sys.stderr.write("".join(printable(str(line)) + "\n" for line in problems))
                sys.stderr.flush()
            sys.exit(code)
        fail(describe_error(found, limit=4000), code)
    where = ""
    try:
        fd, path = tempfile.mkstemp(prefix="maos-crash-", suffix=".txt")  # mode 0600
        with os.fdopen(fd, "w", errors="backslashreplace") as handle:  # argv may be any bytes
            # The command line and the error may hold a store's or the audit sink's password.
            handle.write(f"maos {without_passwords(' '.join(sys.argv[1:]))}\n\n")
            handle.write(without_passwords("".join(traceback.format_exception(exc))))
        where = f"; the details are in {path}"
    except OSError:
        pass
    fail(f"internal error: {describe_error(exc)}{where} (please report it)", code)


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


def _check_redis_url(value: str) -> str:
    """Refuse a ``--redis-url`` that is no Redis URL, as ``--store`` is refused (exit 2)."""
    from maos.errors import StoreError
    from maos.store import check_store_url

    if not value.startswith(("redis://", "rediss://", "redis+cluster://")):
        raise typer.BadParameter(f"{value!r} is not a Redis URL: expected redis://HOST:PORT")
    try:
        check_store_url(value)
    except StoreError as exc:
        raise typer.BadParameter(str(exc)) from None
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
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
RedisUrlOption = Annotated[
    str,
    typer.Option(
        "--redis-url",
        metavar="URL",
        help="The Redis to use besides the store: redis://HOST:PORT (rediss://, redis+cluster://).",
        callback=_check_redis_url,
    ),
]


def _check_s3_endpoint(value: str | None) -> str | None:
    """``--s3-endpoint``, else ``MAOS_S3_ENDPOINT``, else None; one that is no http(s) URL is
    refused while parsing: exit 2 naming it (``maos.blobs.check_endpoint_url``)."""
    from maos.blobs import check_endpoint_url
    from maos.errors import BlobError

    return _checked(value, S3_ENDPOINT_ENV, check_endpoint_url, BlobError)


def _checked(
    value: str | None, env: str, check: Callable[[str], object], error: type[Exception]
) -> str | None:
    """``value``, else the variable ``env``, else None; ``check`` raising ``error`` on it is a
    ``BadParameter`` (exit 2) naming the variable when the value came from it."""
    given = value or os.environ.get(env) or None
    if given is not None:
        try:
            check(given)
        except error as exc:
            source = "" if value else f" (from {env})"
            raise typer.BadParameter(f"{exc}{source}") from None
    return given


S3_ENDPOINT_ENV = "MAOS_S3_ENDPOINT"
S3EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--s3-endpoint",
        metavar="URL",
        help="Endpoint URL of an S3-compatible server (MinIO, Ceph…). Also MAOS_S3_ENDPOINT.",
        show_default=False,
        callback=_check_s3_endpoint,
    ),
]


def _check_door_transport(value: str | None) -> str | None:
    """Refuse a bad ``--door-transport`` (or ``MAOS_DOOR_TRANSPORT``) while parsing: exit 2."""
    from maos.door_transport import pick_door_transport
    from maos.errors import DoorError

    try:
        chosen = pick_door_transport(value)
    except DoorError as exc:
        raise typer.BadParameter(str(exc)) from None
    return chosen if value else None


DoorTransportOption = Annotated[
    str | None,
    typer.Option(
        "--door-transport",
        metavar="http|stdio",
        help="How Claude agents reach the door: 'http', one MCP endpoint on 127.0.0.1 for all of "
        "this process's agents, each with a token of its own; or 'stdio', a `maos mcp` process "
        "per agent. Default: MAOS_DOOR_TRANSPORT, else http.",
        show_default=False,
        callback=_check_door_transport,
    ),
]


def _check_process_name(value: str | None) -> str | None:
    """A worker's or supervisor's ``--name`` is a key in the store and a folder name
    (``.maos/warm/NAME``): an id (``maos.identity.ID_RULE``), never a path."""
    from maos.identity import ID_RE, ID_RULE

    if value is not None and ID_RE.fullmatch(value) is None:
        raise typer.BadParameter(f"{value!r} is not a name: {ID_RULE}")
    return value


WorkerNameOption = Annotated[
    str | None,
    typer.Option("--name", help="Worker name (default: host-pid).", callback=_check_process_name),
]
SupervisorNameOption = Annotated[
    str | None,
    typer.Option("--name", help="Supervisor name (default: host-pid).", callback=_check_process_name),
]


def _check_audit(value: str | None) -> str | None:
    """Refuse an audit sink that can never work (``--audit`` or ``MAOS_AUDIT``) while parsing:
    exit 2 naming it. ``maos.audit.check_audit_url``: an unknown scheme, or a path that
    exists and is not a regular file (a folder, ``/dev/zero``, a FIFO)."""
    from maos.audit import AUDIT_ENV, AuditError, check_audit_url

    _checked(value, AUDIT_ENV, check_audit_url, AuditError)
    return value  # the variable is read again where the sink is opened


AuditOption = Annotated[
    str | None,
    typer.Option(
        "--audit",
        metavar="SINK",
        help="The audit sink of door actions and commands: postgresql://… or a file "
        "(default .maos/audit.jsonl; also MAOS_AUDIT).",
        show_default=False,
        callback=_check_audit,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON document.")]
JsonLinesOption = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON object per line, each as it happens (JSON lines)."),
]


def json_line(document: object) -> None:
    """One JSON object on one line of stdout, flushed (``JsonLinesOption`` commands)."""
    import json

    typer.echo(json.dumps(document, ensure_ascii=False))


def store_url(option: str | None) -> str | None:
    return option or os.environ.get("MAOS_STORE") or None


def err_console() -> Console:
    from rich.console import Console  # not at import: door commands start without rich

    return Console(stderr=True, highlight=False)


def shown(text: str, *, keep_newlines: bool = False) -> str:
    """Outside text (a plan's name, a role file's, agent output) for ``Console.print`` with
    markup: its control characters escaped (``maos.sanitize.printable``: no escape sequence
    reaches the terminal) and its square brackets never read as markup."""
    from rich.markup import escape

    from maos.sanitize import printable

    return escape(printable(text, keep_newlines=keep_newlines))


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code`` (default: bad input)."""
    from maos.errors import OutputError

    # stderr full or gone: the exit code is all that is left to say it.
    with contextlib.suppress(OutputError, OSError):
        # The message may quote agent output or a user's file: never read it as markup.
        err_console().print(f"[bold red]error:[/] {shown(message, keep_newlines=True)}", soft_wrap=True)
    sys.exit(code)
