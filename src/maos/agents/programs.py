"""Where a program name resolves on a ``PATH``, remembered while that answer holds.

``exec`` of a bare name tries every ``PATH`` entry in turn (the child of ``subprocess``
calls ``execve`` once per entry until one works, while its parent waits), and ``shutil.which``
costs a few ``stat`` calls per entry: both at every agent start. ``find`` remembers where a
program was found together with the modification time of every ``PATH`` folder up to the
one that holds it; the answer is used again while none of those folders changed (a program
put in an earlier folder changes that folder) and the file can still be run. A program not
found is looked up again next time (a task may install it).
"""

from __future__ import annotations

import os
import shutil

__all__ = ["find"]

_MAX_REMEMBERED = 1024
# (program, PATH) -> (where, (folder, its st_mtime_ns or None when missing) up to where's)
_found: dict[tuple[str, str], tuple[str, tuple[tuple[str, int | None], ...]]] = {}


def find(program: str, path: str) -> str | None:
    """The absolute path ``exec`` would run for ``program`` (a bare name) with ``PATH`` =
    ``path``; None when it finds none, when ``program`` has a ``/``, or when ``path`` has a
    relative or empty entry (those resolve against the new process's directory, not this
    one's: left to ``exec``)."""
    if os.sep in program or not program:
        return None
    key = (program, path)
    known = _found.get(key)
    if known is not None:
        remembered, folders = known
        if all(_mtime(folder) == mtime for folder, mtime in folders) and os.access(remembered, os.X_OK):
            return remembered
    entries = path.split(os.pathsep)
    if any(not os.path.isabs(entry) for entry in entries):
        return None
    before = [(entry, _mtime(entry)) for entry in entries]
    where = shutil.which(program, path=path)
    if where is None:
        _found.pop(key, None)
        return None
    holder = os.path.dirname(where)
    upto = next((at for at, (entry, _) in enumerate(before) if os.path.normpath(entry) == holder), None)
    if upto is not None and all(_mtime(entry) == mtime for entry, mtime in before[: upto + 1]):
        if len(_found) >= _MAX_REMEMBERED:
            _found.clear()
        _found[key] = (where, tuple(before[: upto + 1]))
    return where


def _mtime(folder: str) -> int | None:
    try:
        return os.stat(folder).st_mtime_ns
    except OSError:
        return None
