"""Run and task ids as the user types them: the one resolver every command uses.

A run id may be given in full or as a unique prefix (``maos logs 20250101-12``); a prefix
that starts several runs is refused listing them, and an id that names nothing is refused
with the closest id, if one is close. Every refusal is a ``RunNotFound`` whose text starts
``no run …`` or ``no task …``; the commands exit with ``EXIT_USAGE`` (2) for it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from maos.errors import RunNotFound

if TYPE_CHECKING:
    from maos.store.base import Store

_CANDIDATES_SHOWN = 10


def match_id(given: str, known: Iterable[str], *, kind: str, where: str, prefixes: bool) -> str:
    """``given`` if it is one of ``known``, else the one id it is a prefix of (``prefixes``);
    ``RunNotFound`` naming the ``kind`` of id and ``where`` it was looked for otherwise."""
    ids = sorted(set(known))
    if given in ids:
        return given
    if prefixes and given:
        starting = [candidate for candidate in ids if candidate.startswith(given)]
        if len(starting) == 1:
            return starting[0]
        if starting:
            listed = ", ".join(starting[:_CANDIDATES_SHOWN])
            hidden = len(starting) - _CANDIDATES_SHOWN
            more = f" and {hidden} more" if hidden > 0 else ""
            raise RunNotFound(
                f"no {kind} {given!r} in {where}: it is the start of {len(starting)} {kind} ids "
                f"({listed}{more}); give more of the id"
            )
    close = difflib.get_close_matches(given, ids, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise RunNotFound(f"no {kind} {given!r} in {where}{hint}")


def _plain(given: str, kind: str) -> None:
    """An id typed by a person is a plain id (``maos.identity.ID_RULE``) before it is looked
    up: not a path, not bytes that are no text."""
    from maos.identity import ID_RE, ID_RULE

    if ID_RE.fullmatch(given) is None:
        shown = given.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:200]
        raise RunNotFound(f"{shown!r} is not a {kind} id: {ID_RULE}")


async def resolve_run_id(store: Store, given: str | None) -> str:
    """The run ``given`` names (an id or a unique prefix); without one, the newest run."""
    from maos.store import keys

    if given is None:
        from maos.liveness import run_records

        records = await run_records(store)
        if not records:
            raise RunNotFound(f"no runs in store {store.url}")
        return records[0].run_id
    _plain(given, "run")
    if await store.length(keys.events(given)) > 0:
        return given  # also a run whose index entry is missing
    from maos.liveness import run_records

    known = [record.run_id for record in await run_records(store)]
    return match_id(given, known, kind="run", where=f"store {store.url}", prefixes=True)


def task_id_in(given: str, known: Iterable[str], run_id: str) -> str:
    """``given`` if the run has such a task; task ids are matched in full (no prefixes)."""
    _plain(given, "task")
    return match_id(given, known, kind="task", where=f"run {run_id}", prefixes=False)
