"""Ctrl-C while ``maos`` starts: exit 130, as any interrupted command does, not a traceback.

A command's modules take a few tenths of a second to load (typer, then the command's own), and
a KeyboardInterrupt raised inside an import is printed by Python with its traceback. Imported
first by ``maos.cli``: until ``loaded()``, SIGINT ends the process at once with 130; then
Python's own handler is back, and commands handle KeyboardInterrupt as they always did.
"""

from __future__ import annotations

import os
import signal
import sys


def _while_starting(_signum: int, _frame: object) -> None:
    os._exit(130)


def _the_maos_program() -> bool:
    """Whether this process is ``maos`` or ``python -m maos`` (not a program importing it)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return (
        os.path.basename(sys.argv[0] if sys.argv else "") == "maos"
        or getattr(spec, "name", "") == "maos.__main__"
    )


_INSTALLED = _the_maos_program() and signal.getsignal(signal.SIGINT) is signal.default_int_handler
if _INSTALLED:  # not where SIGINT is ignored (a background job), nor in a program importing MAOS
    signal.signal(signal.SIGINT, _while_starting)


def loaded() -> None:
    """The command is about to run: Ctrl-C raises KeyboardInterrupt again."""
    if _INSTALLED and signal.getsignal(signal.SIGINT) is _while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)
