"""Optimistic read-modify-write of one key: the one retry loop for compare-and-set updates.

``cas_update(store, key, change)`` reads ``key``, asks ``change(current)`` for the new value
and writes it with a compare-and-set; when another writer won in between it sleeps a random
time in ``[0, min(max_backoff_s, backoff_s * 2**n)]`` ("full jitter": writers that collided
do not collide again in lock-step) and tries again, ``attempts`` times in all, then raises
``StateConflict`` with the caller's ``what``. Used by shared state (``SharedState.update``)
and the outcome history (``maos.history``).

Round trips. A compare-and-set that loses returns the value it found (``CasResult.current``),
so a retry needs no read of its own. Updates of one key from one process (one ``Store``
object) take turns instead of racing: each waits for the one before it, and starts from the
value and version that one wrote or found, so it is a single round trip unless another
process wrote in between. So they never conflict with each other, and a conflict, with its
backoff, means another process really wrote the key. The turns exist only while updates of
the key are waiting or running; the first update after a pause reads the key.

After a backoff the value in hand is as old as the sleep: a compare-and-set that loses on it
is tried again at once with the value it found, and neither counts as an attempt nor sleeps
(it lost to the wait, not to a race). Without that, a process that keeps writing a key
starves another that backs off: every value the latter wakes up with is stale.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from maos.errors import StateConflict
from maos.store.base import Store, Versioned

__all__ = ["CasUpdated", "cas_update"]


@dataclass(frozen=True, slots=True)
class CasUpdated:
    """What ``cas_update`` wrote: the value, its new version, and the attempts lost before."""

    value: bytes
    version: int
    conflicts: int


@dataclass(eq=False)
class _Turns:
    """The updates of one key in this process: one at a time, each starting from what the
    last one saw (``known``, if ``fresh``)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    known: Versioned | None = None
    fresh: bool = False


_TURNS: weakref.WeakKeyDictionary[Store, dict[str, _Turns]] = weakref.WeakKeyDictionary()


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
    keys = _TURNS.setdefault(store, {})
    turns = keys.get(key)
    if turns is None:
        turns = keys[key] = _Turns()
    turns.users += 1
    try:
        async with turns.lock:
            return await _update(store, key, change, turns, what, attempts, backoff_s, max_backoff_s, rng)
    finally:
        turns.users -= 1
        if not turns.users and keys.get(key) is turns:
            del keys[key]


async def _update(
    store: Store,
    key: str,
    change: Callable[[Versioned | None], bytes | None],
    turns: _Turns,
    what: str,
    attempts: int,
    backoff_s: float,
    max_backoff_s: float,
    rng: random.Random | None,
) -> CasUpdated | None:
    draw = (rng or random).uniform
    found = turns.known if turns.fresh else await store.get(key)
    turns.fresh = False  # until this update knows what the key holds after it
    lost = 0  # compare-and-sets lost, all
    real = 0  # those lost on a value that was fresh: to another writer's write in between
    stale = False  # ``found`` was seen before a backoff sleep
    while True:
        value = change(found)
        if value is None:
            if stale:  # nothing to write, judging by what was there before the sleep: look again
                found, stale = await store.get(key), False
                continue
            turns.known, turns.fresh = found, True
            return None
        result = await store.cas(key, 0 if found is None else found.version, value)
        if result.ok:
            turns.known, turns.fresh = Versioned(value, result.version), True
            return CasUpdated(value, result.version, lost)
        lost += 1
        if stale:
            # Lost to a write made while it slept: what the compare found is fresh, go again.
            found, stale = result.current, False
            if found is None and result.version:
                found = await store.get(key)
            continue
        real += 1
        if real >= attempts:
            break
        await asyncio.sleep(draw(0.0, min(max_backoff_s, backoff_s * 2 ** (real - 1))))
        if result.current is None and result.version:  # a store that does not return the value
            found = await store.get(key)
        else:
            found, stale = result.current, True
    raise StateConflict(
        f"{what} changed under {attempts} attempts in a row to update it: other writers kept winning",
        key=key,
        attempts=attempts,
    )
