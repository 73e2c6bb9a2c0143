"""The ``maos`` program's standard streams and terminal width, made safe before a command runs
(``prepare``, the first thing ``maos.cli.main`` does).

- A standard file descriptor that was closed when the process started (``maos runs >&-``,
  ``2>&-``, ``<&-``) is opened on ``/dev/null``. Python had set that stream to None, and the
  first print, flush or ``isatty()`` failed with an AttributeError; and the first file MAOS
  opened (the audit log, a checkpoint) took that descriptor, so that what was meant for the
  terminal, or for an agent's stdout (children inherit 0-2), would have been written into it.
  This is what daemons do; making ``sys.stdout`` a Python object that drops everything would
  have left the descriptor free. What a command prints to a closed stream is lost, as on a
  closed pipe; ``stdin_closed()`` tells ``-`` arguments that there is nothing to read.
- stdout and stderr raise ``OutputError`` (exit 1: "cannot write to stdout: No space left on
  device") when a write fails for another reason than a closed pipe: a full disk
  (``> /dev/full``), EIO. It was a bare OSError, which the CLI reports as a bug.
- A terminal width (``COLUMNS``, typer's ``TERMINAL_WIDTH``) below ``MIN_COLUMNS`` is ignored.
"""

from __future__ import annotations

import errno
import io
import os
import sys
from typing import TextIO

from maos.errors import OutputError

MIN_COLUMNS = 40
"""The narrowest width the CLI lays text out in. rich takes ``COLUMNS=0`` for a console with
no room, and printed nothing at all (error messages included), ``COLUMNS=1`` one character a
line; typer's help and the tables of ``status``, ``runs`` and ``plan show`` are unreadable
below about 40 columns anyway (the help's option column alone takes 20). A smaller value is
taken for a mistake: rich then asks the terminal, else uses 80."""
_WIDTH_VARIABLES = ("COLUMNS", "TERMINAL_WIDTH")

_closed_at_start: set[int] = set()


def prepare() -> None:
    """Reopen closed standard descriptors on ``/dev/null``, install the stdout and stderr that
    raise ``OutputError``, and drop a terminal width that cannot be used. Once, at start."""
    for fd in (0, 1, 2):
        if _closed(fd) and _open_null(fd):
            _closed_at_start.add(fd)
    if sys.stdin is None and 0 in _closed_at_start:
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 (for the whole process)
    sys.stdout = _checked(sys.stdout, 1, "stdout")
    sys.stderr = _checked(sys.stderr, 2, "stderr")
    for name in _WIDTH_VARIABLES:
        value = os.environ.get(name)
        if value is not None and not (value.isascii() and value.isdigit() and int(value) >= MIN_COLUMNS):
            del os.environ[name]


def stdin_closed() -> bool:
    """Whether stdin was closed when the process started (it reads as empty now)."""
    return 0 in _closed_at_start


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        return exc.errno == errno.EBADF
    return False


def _open_null(fd: int) -> bool:
    """Open ``/dev/null`` as ``fd``; whether it could be (not in a chroot without /dev)."""
    try:
        null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
    except OSError:
        return False
    if null != fd:  # a lower descriptor was free: not when 0, 1, 2 are reopened in order
        os.dup2(null, fd)
        os.close(null)
    os.set_inheritable(fd, True)  # os.open's are not, and agents must inherit 0-2
    return True


class _CheckedOutput(io.TextIOWrapper):
    """A text stream on fd 1 or 2 whose failed writes raise ``OutputError`` naming it; a
    closed pipe stays a ``BrokenPipeError`` (``maos runs | head`` ends quietly)."""

    stream_name = "stdout"

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._error(exc) from exc

    def flush(self) -> None:
        try:
            super().flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: OSError) -> OutputError:
        return OutputError(f"cannot write to {self.stream_name}: {exc.strerror or exc}")


def _checked(stream: TextIO | None, fd: int, name: str) -> TextIO | None:
    """A ``_CheckedOutput`` on ``fd`` with ``stream``'s settings; ``stream`` itself when it is
    not Python's own (a program embedding MAOS replaced it) or ``fd`` could not be opened."""
    if stream is None and fd not in _closed_at_start:
        return None
    if stream is not None:
        if type(stream) is not io.TextIOWrapper:
            return stream
        try:
            stream.flush()
        except (OSError, ValueError):
            return stream
    raw = io.FileIO(fd, "w", closefd=False)
    raw.name = f"<{name}>"  # as Python names its own
    checked = _CheckedOutput(
        io.BufferedWriter(raw),
        encoding=stream.encoding if stream else "utf-8",
        errors=stream.errors if stream else "backslashreplace",
        line_buffering=stream.line_buffering if stream else False,
        write_through=stream.write_through if stream else False,
    )
    checked.stream_name = name
    return checked
