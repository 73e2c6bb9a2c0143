"""What the ``maos`` program does differently while it starts, until its command runs.

Imported first by ``maos.cli``, and only in the ``maos`` program itself (``maos`` or
``python -m maos``; not in a program or a test importing MAOS):

- **Ctrl-C exits 130 at once.** A command's modules take a few tenths of a second to load
  (typer, then the command's own), and a KeyboardInterrupt raised inside an import is printed
  by Python with its traceback. ``loaded()`` (the command's module is in) puts Python's own
  handler back, and commands handle KeyboardInterrupt as they always did.
- **The cyclic garbage collector is off.** Start-up creates a few hundred thousand objects
  that live as long as the process (modules, classes, pydantic's schemas) and hardly any
  garbage: the ~130 collections their creation triggered found next to nothing and took
  about 35 ms of the 0.36 s ``maos run`` needed to start a run (measured on the 2-core VM).
  ``working()`` (the command's own code begins) freezes what start-up left (``gc.freeze``:
  never scanned again, so each later full collection of a long ``maos run``, ``serve`` or
  ``worker`` walks only what was made since) and turns the collector back on. What start-up
  left as cyclic garbage, if anything, stays: Python's documented use of ``gc.freeze``
  (disable early, freeze, enable), without a ``gc.collect()`` that would cost what this saves.
"""

from __future__ import annotations

import gc
import os
import signal
import sys


def _while_starting(_signum: int, _frame: object) -> None:
    os._exit(130)


def _the_maos_program() -> bool:
    """Whether this process is ``maos`` or ``python -m maos`` (not a program importing it, nor
    a child that ``multiprocessing`` started with "spawn" from it: that child imports the
    ``maos`` script again as ``__mp_main__``, with its ``argv[0]``, but never runs a command)."""
    if "__mp_main__" in sys.modules:
        return False
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return (
        os.path.basename(sys.argv[0] if sys.argv else "") == "maos"
        or getattr(spec, "name", "") == "maos.__main__"
    )


_PROGRAM = _the_maos_program()
_INSTALLED = _PROGRAM and signal.getsignal(signal.SIGINT) is signal.default_int_handler
if _INSTALLED:  # not where SIGINT is ignored (a background job), nor in a program importing MAOS
    signal.signal(signal.SIGINT, _while_starting)
_COLLECTOR_PAUSED = _PROGRAM and gc.isenabled()
if _COLLECTOR_PAUSED:
    gc.disable()


def loaded() -> None:
    """The command is about to run: Ctrl-C raises KeyboardInterrupt again."""
    if _INSTALLED and signal.getsignal(signal.SIGINT) is _while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def working() -> None:
    """The command's own code begins: what start-up made is frozen, the collector is on
    again (once: later calls find it on and do nothing)."""
    if _COLLECTOR_PAUSED and not gc.isenabled():
        gc.freeze()
        gc.enable()
