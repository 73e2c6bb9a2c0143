"""The ``Store`` protocol: the one seam between MAOS and its storage backends.

Three parts (ARCHITECTURE §4), nothing else:

- **kv** with versions and compare-and-set. A key that does not exist has version 0; every
  successful write increments the version by one. ``cas(key, 0, value)`` creates a key only
  if it does not exist yet.
- **streams**: append-only logs of opaque byte records with ids that increase within a
  stream (ids are opaque strings; ``"0"`` means "before the first record"), plus consumer
  groups with per-consumer pending entries, acknowledgements, delivery counts and reclaiming
  of entries that stayed unacknowledged too long.
- **leases** with a time to live, held by one owner at a time. Each time a lease passes to
  an owner that did not hold it live, its **epoch** grows by one (it survives release and
  expiry), and a ``FenceOp`` in a ``transact`` makes writes conditional on the epoch (and
  owner) in the same atomic operation: an owner that lost its lease cannot write (ADR 0012).

Two calls combine these for the hot paths, each one round trip: ``transact`` applies several
writes (compare-and-sets, appends, acknowledgements) atomically, all or nothing, and
``read_groups`` reads one consumer group name on several streams at once, waiting until any
of them has a record. A backend may send calls made at the same moment in one round trip
(Redis does, for ``transact`` and reads that do not wait); each still has its own result
and applies as if alone, in the order the calls were made.

Every backend (``sqlite.py``, ``redis.py``) passes the same contract test suite,
``tests/store/contract.py``. Backend errors reach callers as ``StoreError`` subclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Versioned:
    """A kv value with its version (>= 1)."""

    value: bytes
    version: int


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    version: int


@dataclass(frozen=True, slots=True)
class CasResult:
    """Outcome of a compare-and-set. ``version`` is the key's version after the call.

    On a conflict ``current`` is what the compare found (None: the key does not exist), read
    in the same atomic step, so a retry needs no ``get``; None on success."""

    ok: bool
    version: int
    current: Versioned | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream record. ``deliveries`` counts deliveries to a consumer group (1 on first)."""

    id: str
    record: bytes
    deliveries: int = 0


@dataclass(frozen=True, slots=True)
class PendingEntry:
    id: str
    consumer: str
    idle_s: float
    deliveries: int


@dataclass(frozen=True, slots=True)
class CasOp:
    """In a ``transact``: write ``value`` to ``key`` if its version is ``expected_version``."""

    key: str
    expected_version: int
    value: bytes


@dataclass(frozen=True, slots=True)
class AppendOp:
    """In a ``transact``: append ``record`` to ``stream`` (``maxlen`` as in ``append``)."""

    stream: str
    record: bytes
    maxlen: int | None = None


@dataclass(frozen=True, slots=True)
class AckOp:
    """In a ``transact``: acknowledge pending records of ``group`` on ``stream``."""

    stream: str
    group: str
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FenceOp:
    """In a ``transact``: write nothing unless lease ``lease`` is at ``epoch`` and, when
    ``owner`` is given, held live by ``owner``. Checked first, with the other ops' keys."""

    lease: str
    epoch: int
    owner: str | None = None


WriteOp = CasOp | AppendOp | AckOp | FenceOp


@dataclass(frozen=True, slots=True)
class TransactResult:
    """Outcome of a ``transact``.

    ``ok`` False: nothing was written, because a ``FenceOp`` did not hold (``fenced`` True)
    or a ``CasOp`` found another version (``versions`` then holds the current version of
    each ``CasOp`` key, in op order, for a retry). ``ok``
    True: ``versions`` are the keys' new versions, ``ids`` the appended records' ids (in op
    order) and ``acked`` the number of records acknowledged that were pending.
    """

    ok: bool
    versions: tuple[int, ...] = ()
    ids: tuple[str, ...] = ()
    acked: int = 0
    fenced: bool = False


def connect_url(store: Store) -> str:
    """The URL a child process (an agent's ``MAOS_STORE``) opens ``store`` with: with its
    password, where ``store.url`` masks it for messages. Never print it."""
    found = getattr(store, "connect_url", None)
    return found if isinstance(found, str) else store.url


def check_maxlen(maxlen: int | None, what: str) -> None:
    """A stream bound is None (unbounded) or a count >= 0: anything else is the caller's bug,
    ``ValueError`` on every backend (checked before any I/O)."""
    if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 0):
        raise ValueError(f"{what}: maxlen must be None or an int >= 0, not {maxlen!r}")


def check_ops(ops: Sequence[WriteOp]) -> None:
    """Refuse what no backend may run: a key compared twice, a negative ``maxlen``."""
    keys: set[str] = set()
    for op in ops:
        if isinstance(op, CasOp):
            if op.key in keys:
                raise ValueError(f"transact: key {op.key!r} has more than one CasOp")
            keys.add(op.key)
        elif isinstance(op, AppendOp):
            check_maxlen(op.maxlen, f"transact: the append to {op.stream!r}")
        elif isinstance(op, FenceOp):
            if op.epoch < 1:
                raise ValueError(
                    f"transact: the epoch of the fence on {op.lease!r} must be >= 1, not {op.epoch}"
                )
        elif not isinstance(op, AckOp):
            raise TypeError(f"transact: {op!r} is not a CasOp, AppendOp, AckOp or FenceOp")


@runtime_checkable
class Store(Protocol):
    """Async storage used by every part of MAOS. Safe to share between tasks of one loop.

    Arguments mean the same on every backend: a ``count`` below 1 reads nothing (``[]``, or
    ``{}`` for ``read_groups``) and delivers nothing; a negative ``maxlen`` is ``ValueError``
    (``check_maxlen``), as is a malformed ``transact`` (``check_ops``)."""

    url: str

    # ------------------------------------------------------------------ kv
    async def get(self, key: str) -> Versioned | None:
        """The value and version of ``key``, or None if it does not exist."""
        ...

    async def set(self, key: str, value: bytes) -> int:
        """Write unconditionally; return the new version."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed. A later write starts again at version 1."""
        ...

    async def cas(self, key: str, expected_version: int, value: bytes) -> CasResult:
        """Write only if the current version equals ``expected_version`` (0: must not exist).
        One round trip, also on a conflict, which returns the key's value (``current``)."""
        ...

    async def scan(self, prefix: str) -> list[KeyValue]:
        """Every key starting with ``prefix``, sorted by key."""
        ...

    async def transact(self, ops: Sequence[WriteOp]) -> TransactResult:
        """Apply ``ops`` atomically in one round trip: every ``CasOp`` is checked first, and
        if one fails nothing is written; otherwise the ops are applied in order. A key may
        have at most one ``CasOp``. On Redis Cluster every key must share one hash tag (the
        keys of one run do)."""
        ...

    # ------------------------------------------------------------------ streams
    async def append(self, stream: str, record: bytes, *, maxlen: int | None = None) -> str:
        """Append a record and return its id. ``maxlen`` trims old records (approximately)."""
        ...

    async def read(
        self, stream: str, after: str = "0", *, count: int = 1000, block_s: float | None = None
    ) -> list[Entry]:
        """Records with id > ``after``, oldest first, at most ``count``.

        With ``block_s`` set and nothing to return, wait up to that long for a new record;
        a waiting reader wakes within a few milliseconds of an append, also one made by
        another process.
        """
        ...

    async def last_id(self, stream: str) -> str:
        """Id of the newest record, or ``"0"`` for an empty or missing stream."""
        ...

    async def length(self, stream: str) -> int: ...

    async def trim(self, stream: str, maxlen: int) -> int:
        """Keep the newest ``maxlen`` records; return how many were removed."""
        ...

    async def create_group(self, stream: str, group: str, *, start: str = "0") -> bool:
        """Create a consumer group reading records after ``start`` (``"$"``: only new ones).

        Creates the stream if needed. False if the group already existed (not an error).
        """
        ...

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int = 100,
        block_s: float | None = None,
    ) -> list[Entry]:
        """Deliver records never delivered to ``group`` before; they become pending for
        ``consumer`` until acknowledged. Blocks like ``read``. ``NoSuchGroup`` if the group
        does not exist."""
        ...

    async def read_groups(
        self,
        streams: Sequence[str],
        group: str,
        consumer: str,
        *,
        count: int = 100,
        block_s: float | None = None,
    ) -> dict[str, list[Entry]]:
        """``read_group`` of ``group`` on each of ``streams`` in one call: up to ``count``
        records per stream. With ``block_s``, waits until any of them has a record. Streams
        with nothing new are left out; the others come in the order of ``streams``. Every
        stream needs the group; on Redis Cluster all must share one hash tag."""
        ...

    async def ack(self, stream: str, group: str, ids: list[str]) -> int:
        """Acknowledge pending records; return how many were pending."""
        ...

    async def pending(self, stream: str, group: str, *, count: int = 1000) -> list[PendingEntry]:
        """Pending (delivered, unacknowledged) records of ``group``, oldest first."""
        ...

    async def unacknowledged(self, stream: str, group: str, *, count: int = 1000) -> list[Entry] | None:
        """What ``group`` still owes: its pending records (``deliveries`` as delivered so
        far), then the records never delivered to it (``deliveries`` 0), oldest first within
        each part, up to ``count`` in all; read in one atomic step, delivering nothing. None
        if the group (or the stream) does not exist. For a checkpoint of undelivered work."""
        ...

    async def claim_stale(
        self, stream: str, group: str, consumer: str, *, min_idle_s: float, count: int = 100
    ) -> list[Entry]:
        """Move pending records idle at least ``min_idle_s`` to ``consumer``; each claim is a
        new delivery (``deliveries`` incremented). Records trimmed away are dropped from the
        pending list and not returned."""
        ...

    # ------------------------------------------------------------------ leases
    async def acquire(self, name: str, owner: str, ttl_s: float) -> int:
        """Take the lease if free or expired (or already held by ``owner``, which renews it).

        Returns the epoch under which ``owner`` now holds it (>= 1), or 0 if another owner
        holds it. Taking a lease that ``owner`` did not hold live bumps the epoch; a renewal
        by the live holder keeps it."""
        ...

    async def renew(self, name: str, owner: str, ttl_s: float) -> bool:
        """Extend the lease if ``owner`` still holds it."""
        ...

    async def release(self, name: str, owner: str) -> bool:
        """Give the lease up if ``owner`` holds it."""
        ...

    async def holder(self, name: str) -> str | None:
        """The owner of an unexpired lease, or None."""
        ...

    async def epoch(self, name: str) -> int:
        """The lease's current epoch (held or not); 0 if it was never taken."""
        ...

    # ------------------------------------------------------------------ lifecycle
    async def close(self) -> None: ...
