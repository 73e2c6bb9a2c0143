"""Private files and folders: what MAOS writes under ``.maos/`` is its owner's only.

The store (it holds each run's token secret), outputs, transcripts, prompts, reports and
checkpoints are readable by the user who runs MAOS and nobody else, whatever the umask:
folders MAOS creates are 0700 and files 0600. ``mkdir``/``open`` honour the umask (a umask
of 000 would give 0777/0666, one of 077 would be fine), so modes are set explicitly
(``os.open(..., 0o600)`` then ``fchmod``; ``mkdir`` then ``chmod``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Literal, TextIO, overload

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "loose_mode",
    "open_private",
    "private_dir",
    "tighten",
    "touch_private",
    "write_private",
]

DIR_MODE = 0o700
FILE_MODE = 0o600
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def private_dir(path: Path) -> Path:
    """``path`` as a folder (``mkdir -p``): every folder created here is 0700. Folders that
    exist already keep their mode (``maos doctor`` warns about a loose ``.maos/``)."""
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.stat(path).st_mode):
            return path  # the usual case (asked at every agent start): one stat
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            os.mkdir(folder, DIR_MODE)
            os.chmod(folder, DIR_MODE)  # mkdir honours the umask
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a folder")
    return path


@overload
def open_private(path: Path, mode: Literal["wb", "ab"]) -> BinaryIO: ...
@overload
def open_private(path: Path, mode: Literal["w", "a"]) -> TextIO: ...
def open_private(path: Path, mode: Literal["wb", "ab", "w", "a"]) -> BinaryIO | TextIO:
    """``open(path, mode)`` for writing, the file 0600 (also one that existed with other bits).
    Nothing found at ``path`` is written through: ``"w"``/``"wb"`` make a new file, removing
    what was there first (a file, a symlink, a hard link to another file), and ``"a"``/``"ab"``
    replace a symlink by the file. So an agent that plants a link where MAOS will write (its
    next attempt's output, or this attempt's before its first byte) cannot make MAOS truncate
    or fill another file."""
    flags = os.O_WRONLY | os.O_CREAT | _CLOEXEC | _NOFOLLOW
    if mode[0] == "a":
        flags |= os.O_APPEND
        try:
            fd = os.open(path, flags, FILE_MODE)
        except OSError as exc:
            if exc.errno != errno.ELOOP or not os.path.islink(path):
                raise
            os.unlink(path)
            fd = os.open(path, flags | os.O_EXCL, FILE_MODE)
    else:
        flags |= os.O_EXCL
        try:
            fd = os.open(path, flags, FILE_MODE)
        except FileExistsError:
            os.unlink(path)  # a folder there is an error (IsADirectoryError), as before
            fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    # os.open made the file; open() only wraps the descriptor (its mode letters must be literal).
    if mode == "wb":
        return open(fd, "wb", closefd=True)
    if mode == "ab":
        return open(fd, "ab", closefd=True)
    return open(fd, "a" if mode == "a" else "w", encoding="utf-8", closefd=True)


def write_private(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` (0600), replacing it atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open_private(tmp, "wb") as file:
            file.write(data.encode() if isinstance(data, str) else data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def touch_private(path: Path) -> Path:
    """Create ``path`` empty (0600) if it does not exist; an existing file is left alone."""
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
        finally:
            os.close(fd)
    return path


def tighten(root: Path) -> None:
    """Make every folder under ``root`` (itself included) 0700 and every regular file 0600:
    for what other programs wrote there with their umask (the Claude Code CLI's transcripts
    in an agent's ``CLAUDE_CONFIG_DIR``). No symlink is followed, ``root`` included (an agent
    that replaces its config folder by a link to elsewhere must not have MAOS chmod that
    tree): each chmod is an ``fchmod`` of what ``O_NOFOLLOW`` opened. Errors are ignored."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        if not _chmod_unfollowed(folder, DIR_MODE, directory=True):
            dirs[:] = []  # a link (or gone): nothing under it is ours
            continue
        for name in files:
            _chmod_unfollowed(os.path.join(folder, name), FILE_MODE, directory=False)
        dirs[:] = [name for name in dirs if not os.path.islink(os.path.join(folder, name))]


def _chmod_unfollowed(path: str, mode: int, *, directory: bool) -> bool:
    """chmod ``path`` to ``mode`` if it is a folder (``directory``) or a regular file and not a
    symlink; whether it was."""
    flags = os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK | _CLOEXEC | (os.O_DIRECTORY if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        kind = os.fstat(fd).st_mode
        if stat.S_ISDIR(kind) if directory else stat.S_ISREG(kind):
            os.fchmod(fd, mode)
            return True
        return False
    except OSError:
        return False
    finally:
        os.close(fd)


def loose_mode(path: Path) -> int | None:
    """The group/other permission bits of ``path`` when it has any, else None (also when it
    does not exist)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    bits = stat.S_IMODE(mode) & 0o077
    return bits or None
