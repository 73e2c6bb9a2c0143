"""Where a program name resolves on a ``PATH``, remembered as a shell's command hash is.

``exec`` of a bare name tries every ``PATH`` entry in turn (the child of ``subprocess``
calls ``execve`` once per entry until one works, while its parent waits), and ``shutil.which``
costs a few ``stat`` calls per entry: both at every agent start. ``find`` answers from
memory once a program was found, after one ``access`` call to check the file is still
there; a program not found is looked up again next time (a task may install it).
"""

from __future__ import annotations

import os
import shutil

__all__ = ["find"]

_MAX_REMEMBERED = 1024
_found: dict[tuple[str, str], str] = {}


def find(program: str, path: str) -> str | None:
    """The absolute path ``exec`` would run for ``program`` (a bare name) with ``PATH`` =
    ``path``; None when it finds none, when ``program`` has a ``/``, or when ``path`` has a
    relative or empty entry (those resolve against the new process's directory, not this
    one's: left to ``exec``)."""
    if os.sep in program or not program:
        return None
    key = (program, path)
    known = _found.get(key)
    if known is not None and os.access(known, os.X_OK):
        return known
    if any(not os.path.isabs(entry) for entry in path.split(os.pathsep)):
        return None
    where = shutil.which(program, path=path)
    if where is None:
        _found.pop(key, None)
        return None
    if len(_found) >= _MAX_REMEMBERED:
        _found.clear()
    _found[key] = where
    return where
