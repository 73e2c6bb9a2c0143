"""The one exception tree of MAOS.

    MaosError
     ├── PlanError                 a plan file or plan object is invalid (exit code 2)
     │    └── CycleError           the dependency graph has a cycle
     ├── DocumentError             an outside YAML/JSON document is refused: not a regular file,
     │                             too large, too deep, too many aliases
     ├── IllegalTransition         a TaskState change the lifecycle does not allow
     ├── StoreError                the store failed or cannot be reached
     │    ├── StoreUnavailable     cannot connect (names the address)
     │    ├── StoreDataError       a stored record cannot be decoded
     │    └── NoSuchGroup          a consumer group read before it was created (or after the
     │                             store lost its data)
     ├── BusError                  the message bus refused a message
     │    └── MessageTooLarge
     ├── AgentError                an agent process failed
     │    ├── AgentTimeout
     │    └── AgentExited
     ├── CheckpointError           a checkpoint cannot be written, read or decrypted
     ├── BlobError                 blob storage (local directory, S3) failed; names where
     │    └── BlobNotFound         no blob with that name
     ├── KeyConfigError            MAOS_KEY, MAOS_OLD_KEYS or the key file is malformed or unsafe
     ├── DecryptionError           encrypted data is corrupt or was tampered with
     │    └── KeyMismatch          encrypted with a key that is not available (names key ids)
     ├── StateError                shared state refused an operation (bad key, value too big, not JSON)
     │    └── StateConflict        an update kept losing to other writers (retries exhausted)
     ├── DoorError                 the door refused a call: a missing MAOS_* variable, a bad argument
     ├── PermissionDenied          an agent tried something its identity does not allow
     ├── RunNotFound               no run with that id in the store
     ├── RunLocked                 another orchestrator drives that run
     ├── LeaseLost                 this process no longer holds its lease (a write was fenced,
     │                             renewal failed): it must stop what it does under it
     ├── ImportSourceError         a project to import (maos import) is missing, unreadable or not
     │                             what it claims; names the folder or file
     └── OutputError               stdout or stderr cannot be written (a full disk); names it

Third-party errors (sqlite3, redis, OSError from subprocesses) are translated at the edge
with ``raise ... from exc`` so callers only ever catch ``MaosError`` subclasses. The exit
code of each for the ``maos`` command is in one table, ``maos.cli._common.EXIT_CODES``.
"""

from __future__ import annotations


class MaosError(Exception):
    """Root of every error MAOS raises on purpose."""


MAX_PROBLEMS_SHOWN = 50
"""Problem lines an error keeps; the rest are counted in one last line."""
MAX_PROBLEM_CHARS = 1000
"""A problem line longer than this is cut (it may quote a value of the document)."""


def bounded_problems(problems: list[str] | str, *, more: int = 0) -> list[str]:
    """At most ``MAX_PROBLEMS_SHOWN`` lines of at most ``MAX_PROBLEM_CHARS`` each, then
    ``… and N more problems`` for the rest (``more``: problems the caller did not even
    build). A hostile document can have a million problems; the user reads the first."""
    items = [problems] if isinstance(problems, str) else problems
    shown = [
        line if len(line) <= MAX_PROBLEM_CHARS else f"{line[:MAX_PROBLEM_CHARS]}… (cut)"
        for line in items[:MAX_PROBLEMS_SHOWN]
    ]
    left = max(0, len(items) - MAX_PROBLEMS_SHOWN) + more
    if left:
        shown.append(f"… and {left} more problem{'s' if left > 1 else ''}")
    return shown


class PlanError(MaosError):
    """A plan is invalid. ``problems`` lists the problems found, one line each (bounded:
    ``bounded_problems``)."""

    def __init__(self, problems: list[str] | str, *, more: int = 0) -> None:
        self.problems: list[str] = bounded_problems(problems, more=more)
        super().__init__("\n".join(self.problems))


class CycleError(PlanError):
    """The dependency graph has a cycle; ``cycle`` lists it with the first id repeated at the end."""

    def __init__(self, problems: list[str] | str, cycle: list[str], *, more: int = 0) -> None:
        self.cycle = cycle
        super().__init__(problems, more=more)


class DocumentError(MaosError):
    """A document is refused: not a regular file, too large, too deep, too many aliases.

    The message names no file: the caller puts its own source (path, "plan") in front."""


class IllegalTransition(MaosError):
    """A state change that the lifecycle does not allow."""


class StoreError(MaosError):
    """The store failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached."""


class StoreDataError(StoreError):
    """A stored record cannot be decoded."""


class NoSuchGroup(StoreError):
    """A stream has no such consumer group: never created, or lost with the store's data."""


class BusError(MaosError):
    """The message bus refused an operation."""


class MessageTooLarge(BusError):
    """A message is larger than the bus allows."""


class AgentError(MaosError):
    """An agent process failed."""


class AgentTimeout(AgentError):
    """An agent ran past its timeout."""


class AgentExited(AgentError):
    """An agent process exited unexpectedly."""


class CheckpointError(MaosError):
    """A checkpoint cannot be written, read or decrypted."""


class NoUsableCheckpoint(CheckpointError):
    """Every checkpoint of a run is corrupt (or they do not reach back to its start); not a
    key that does not match, which is ``CheckpointError`` itself."""


class BlobError(MaosError):
    """Blob storage (a local directory or S3) failed; the message names the location."""


class BlobNotFound(BlobError):
    """No blob with that name."""


class KeyConfigError(MaosError):
    """``MAOS_KEY``, ``MAOS_OLD_KEYS`` or the key file is malformed or unsafe."""


class DecryptionError(MaosError):
    """Encrypted data cannot be decrypted: it is corrupt or was tampered with."""


class KeyMismatch(DecryptionError):
    """Encrypted with a key that is not available; names the key ids on both sides."""

    def __init__(self, message: str, *, written_key_id: str, available_key_ids: tuple[str, ...]) -> None:
        self.written_key_id = written_key_id
        self.available_key_ids = available_key_ids
        super().__init__(message)


class StateError(MaosError):
    """Shared state refused an operation: a bad key, a value that is too large or not JSON."""


class StateConflict(StateError):
    """A read-modify-write of shared state lost to other writers more times than allowed."""

    def __init__(self, message: str, *, key: str, attempts: int) -> None:
        self.key = key
        self.attempts = attempts
        super().__init__(message)


class DoorError(MaosError):
    """The agents' door refused a call: its environment lacks a ``MAOS_*`` variable (named),
    or an argument is malformed (named)."""


class PermissionDenied(MaosError):
    """An agent tried an action its identity does not allow."""


class RunNotFound(MaosError):
    """No run with that id exists in the store."""


class RunLocked(MaosError):
    """Another live orchestrator holds the run's lease."""


class LeaseLost(MaosError):
    """This process lost its lease: another owner may hold it now (ADR 0012)."""


class ImportSourceError(MaosError):
    """A project to import cannot be used: a missing or unreadable folder, or files that are
    not what their names claim (``maos.importers``; exit code 2). One line per problem."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems: list[str] = bounded_problems(problems)
        super().__init__("\n".join(self.problems))


class OutputError(MaosError):
    """The ``maos`` program cannot write to its stdout or stderr (a full disk, an I/O error;
    not a closed pipe); the message names the stream (``maos.cli._terminal``)."""


def describe_error(exc: BaseException, *, limit: int = 500) -> str:
    """One line a user can read for any exception: MAOS's own errors by their message,
    anything else (a bug, a library's error) with its type, never a traceback."""
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        # A task group's failure: what failed inside it is the news, not the group.
        more = len(exc.exceptions) - 1
        inner = describe_error(exc.exceptions[0], limit=limit)
        return _cut(f"{inner} (and {more} more)" if more else inner, limit)
    text = " ".join(str(exc).split()) if str(exc) else ""
    if not isinstance(exc, MaosError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return _cut(text, limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
