"""Optimistic read-modify-write of one key: the one retry loop for compare-and-set updates.

``cas_update(store, key, change)`` reads ``key``, asks ``change(current)`` for the new value
and writes it with a compare-and-set; when another writer won in between it sleeps a random
time in ``[0, min(max_backoff_s, backoff_s * 2**n)]`` ("full jitter": writers that collided
do not collide again in lock-step) and tries again, ``attempts`` times in all, then raises
``StateConflict`` with the caller's ``what``. Used by shared state (``SharedState.update``)
and the outcome history (``maos.history``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from maos.errors import StateConflict
from maos.store.base import Store, Versioned

__all__ = ["CasUpdated", "cas_update"]


@dataclass(frozen=True, slots=True)
class CasUpdated:
    """What ``cas_update`` wrote: the value, its new version, and the attempts lost before."""

    value: bytes
    version: int
    conflicts: int


async def cas_update(
    store: Store,
    key: str,
    change: Callable[[Versioned | None], bytes | None],
    *,
    what: str,
    attempts: int = 11,
    backoff_s: float = 0.005,
    max_backoff_s: float = 0.5,
    rng: random.Random | None = None,
) -> CasUpdated | None:
    """Replace ``key``'s value by ``change(current)`` (``current`` None when absent) with a
    compare-and-set, retried with jittered exponential backoff. ``change`` may run once per
    attempt and must not have side effects; returning None leaves the key as it is (and
    ``cas_update`` returns None). ``StateConflict`` after ``attempts`` lost compare-and-sets,
    its message starting with ``what`` (e.g. "state key 'a'")."""
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, not {attempts}")
    draw = (rng or random).uniform
    for attempt in range(attempts):
        found = await store.get(key)
        value = change(found)
        if value is None:
            return None
        result = await store.cas(key, 0 if found is None else found.version, value)
        if result.ok:
            return CasUpdated(value, result.version, attempt)
        if attempt + 1 < attempts:
            await asyncio.sleep(draw(0.0, min(max_backoff_s, backoff_s * 2**attempt)))
    raise StateConflict(
        f"{what} changed under {attempts} attempts in a row to update it: other writers kept winning",
        key=key,
        attempts=attempts,
    )
