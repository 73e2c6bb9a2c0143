"""Holding a lease: the one place a lease is acquired, renewed and released (ADR 0012).

A ``Lease`` is one owner's claim on a named lease of the store. ``acquire`` takes it and
learns its **epoch** (it grows with every new holding); ``held()`` keeps it for the time of a
block: a renewal task renews it every ``ttl_s / 3`` and, the moment the lease is gone (the
store says another owner has it, or no renewal succeeded for ``ttl_s`` by this process's
clock, so another owner may have it), cancels the block, which then raises ``LeaseLost``. At
the end of the block the lease is released (kept for its epoch's sake: the next holder gets
a higher one). ``acquire_above`` takes a lease back under a higher epoch than a store that
lost its data would give; ``take_over`` takes it from a holder whose process is gone. The
orchestrator, the supervisor (through the orchestrators it resumes) and the workers hold
their leases this way only: nothing else acquires, renews or releases one.

``Fenced`` is the store seen through a lease: every write to a key or stream under the
lease's hash tag (the run's keys for a run lease) carries a ``FenceOp`` in the same atomic
store operation, so a holder that lost its lease cannot write one record more, however late
its write arrives. Writes elsewhere (the shared work queue, the run index) go through
unchanged: they are fenced where they are read (workers check an assignment's epoch; the run
record is written with a compare-and-set that refuses an older epoch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from maos.errors import LeaseLost, StoreError, StoreUnavailable, describe_error
from maos.store.base import (
    AckOp,
    AppendOp,
    CasOp,
    CasResult,
    Entry,
    FenceOp,
    KeyValue,
    PendingEntry,
    Store,
    TransactResult,
    Versioned,
    WriteOp,
    connect_url,
)

log = logging.getLogger("maos.store.lease")


def cut_off(exc: BaseException) -> LeaseLost | StoreUnavailable | None:
    """The lost lease or store outage that ``exc`` is (also inside a task group's exception
    group, beside the cancellations it caused), or None if it is anything else: what a
    holder rides out by waiting for the store and taking its lease again."""
    leaves = [exc]
    found: LeaseLost | StoreUnavailable | None = None
    while leaves:
        leaf = leaves.pop()
        if isinstance(leaf, BaseExceptionGroup):
            leaves.extend(leaf.exceptions)
        elif isinstance(leaf, LeaseLost | StoreUnavailable):
            found = found or leaf
        elif not isinstance(leaf, asyncio.CancelledError):
            return None
    return found


class Lease:
    """``owner``'s hold on lease ``name`` of ``store`` (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        name: str,
        owner: str,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.name = name
        self.owner = owner
        self.ttl_s = ttl_s
        self.epoch = 0
        self._clock = clock
        self._lost: str | None = None
        self._on_lost: Callable[[str], None] | None = None
        self._renewed_at = 0.0

    @property
    def lost(self) -> str | None:
        """Why the lease was lost, or None while it is held (or was never taken)."""
        return self._lost

    def fence(self) -> FenceOp:
        return FenceOp(self.name, self.epoch, self.owner)

    async def acquire(self) -> int:
        """Take the lease (or renew it, if ours); its epoch, or 0 if another owner holds it."""
        sent = self._clock()
        epoch = await self.store.acquire(self.name, self.owner, self.ttl_s)
        if epoch:
            self.epoch, self._lost, self._renewed_at = epoch, None, sent
        return epoch

    async def acquire_above(self, epoch: int) -> int:
        """Take the lease under an epoch above ``epoch``; its epoch, or 0 if another owner
        holds it. A store that lost its data, epoch counter included, starts again at 1, and
        late writes of the lost generation (reports of its assignments) would pass a fence at
        their old epoch: so the lease is given up and taken again, each holding bumping the
        epoch by one, until it is above ``epoch``."""
        while await self.acquire():
            if self.epoch > epoch:
                return self.epoch
            await self.store.release(self.name, self.owner)
        return 0

    async def take_over(self, holder: str) -> int:
        """Take the lease from ``holder``, whose process is known to be dead (it can never
        renew or write again): released in its name, then acquired. Its epoch, or 0 if
        another owner was quicker."""
        await self.store.release(self.name, holder)
        return await self.acquire()

    async def release(self) -> None:
        """Give the lease up (if still ours); never fails: an unreachable store lets it expire."""
        try:
            async with asyncio.timeout(min(self.ttl_s, 5.0)):  # unreachable: it expires anyway
                await self.store.release(self.name, self.owner)
        except (StoreError, TimeoutError) as exc:
            log.info(
                "lease %s not released (%s): it expires in %gs", self.name, describe_error(exc), self.ttl_s
            )

    def lose(self, reason: str) -> None:
        """Mark the lease lost (a write was fenced, renewal failed) and cancel its holder."""
        if self._lost is None:
            self._lost = reason
            log.error("lease %s lost: %s", self.name, reason)
            if self._on_lost is not None:
                self._on_lost(reason)

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[Lease]:
        """Keep the (acquired) lease while the block runs; ``LeaseLost`` when it is lost,
        the block cancelled at that moment. Released at the end of the block."""
        if not self.epoch:
            raise LeaseLost(f"lease {self.name} was never acquired by {self.owner}")
        task = asyncio.current_task()
        assert task is not None
        cancelled_by_us = False

        def cancel_holder(reason: str) -> None:
            nonlocal cancelled_by_us
            if not cancelled_by_us:
                cancelled_by_us = True
                task.cancel(f"lease lost: {reason}")

        self._on_lost = cancel_holder
        renewer = asyncio.create_task(self._renew(), name=f"maos-lease-{self.name}")
        try:
            yield self
        except asyncio.CancelledError:
            if cancelled_by_us and task.uncancel() == 0:
                raise LeaseLost(self.lost_message()) from None
            raise
        finally:
            self._on_lost = None
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if self._lost is None:
                await self.release()
        if self._lost is not None:  # lost as the block was ending: what it wrote last was refused
            raise LeaseLost(self.lost_message())

    async def _holder(self) -> str | None:
        try:
            return await self.store.holder(self.name)
        except StoreError:
            return None

    def lost_message(self) -> str:
        return f"{self.owner} lost lease {self.name} (epoch {self.epoch}): {self._lost}"

    async def _renew(self) -> None:
        """Renew every ``ttl_s / 3``; lose the lease when the store says it is gone or when
        no renewal got through before it would have expired."""
        while self._lost is None:
            await asyncio.sleep(self.ttl_s / 3)
            left = self._renewed_at + self.ttl_s - self._clock()
            sent = self._clock()
            try:
                # Past the lease by our clock (the acquire itself waited out an outage), one
                # renewal is still worth sending: the store checks the holder, so a renewal
                # that goes through proves nobody else has the lease.
                async with asyncio.timeout(max(left, self.ttl_s / 3)):
                    renewed = await self.store.renew(self.name, self.owner, self.ttl_s)
            except (TimeoutError, StoreError) as exc:
                if self._renewed_at + self.ttl_s <= self._clock():
                    why = "timed out" if isinstance(exc, TimeoutError) else describe_error(exc)
                    self.lose(f"no renewal got through for {self.ttl_s:g}s (the last one: {why})")
                else:
                    log.warning("lease %s: renewal failed (%s); trying again", self.name, describe_error(exc))
                continue
            if renewed:
                self._renewed_at = sent
            else:
                holder = await self._holder()
                self.lose(f"another owner holds it now ({holder})" if holder else "it expired")


class Fence(Protocol):
    """What ``Fenced`` writes under: a ``Lease``, or an ``EpochFence``."""

    @property
    def lost(self) -> str | None: ...

    def fence(self) -> FenceOp: ...

    def lose(self, reason: str) -> None: ...

    def lost_message(self) -> str: ...


class EpochFence:
    """The fence of work handed out under a lease's epoch (a worker's attempt): its writes
    count only while the lease is still at that epoch, whoever holds it. ``on_lost`` is called
    once, when the first write is refused."""

    def __init__(self, lease: str, epoch: int, on_lost: Callable[[str], None] | None = None) -> None:
        self.lease = lease
        self.epoch = epoch
        self._on_lost = on_lost
        self._lost: str | None = None

    @property
    def lost(self) -> str | None:
        return self._lost

    def fence(self) -> FenceOp:
        return FenceOp(self.lease, self.epoch)

    def lose(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
            if self._on_lost is not None:
                self._on_lost(reason)

    def lost_message(self) -> str:
        return f"epoch {self.epoch} of lease {self.lease} is over: {self._lost}"


class Fenced:
    """``store`` with every write under ``prefix`` fenced by ``lease`` (module docstring).

    A refused write raises ``LeaseLost`` and marks the fence lost (a ``Lease`` then cancels
    its holder)."""

    def __init__(self, store: Store, lease: Fence, prefix: str) -> None:
        self._store = store
        self._lease = lease
        self._prefix = prefix
        self.url = store.url
        self.connect_url = connect_url(store)

    def _ours(self, name: str) -> bool:
        return name.startswith(self._prefix)

    async def _fenced(self, ops: Sequence[WriteOp]) -> TransactResult:
        if self._lease.lost is not None:
            raise LeaseLost(self._lease.lost_message())
        result = await self._store.transact([self._lease.fence(), *ops])
        if result.fenced:
            self._lease.lose(f"a write was refused: epoch {self._lease.fence().epoch} is over")
            raise LeaseLost(self._lease.lost_message())
        return result

    # ------------------------------------------------------------------ kv
    async def get(self, key: str) -> Versioned | None:
        return await self._store.get(key)

    async def set(self, key: str, value: bytes) -> int:
        if not self._ours(key):
            return await self._store.set(key, value)
        current = await self._store.get(key)
        version = current.version if current is not None else 0
        while True:
            result = await self._fenced([CasOp(key, version, value)])
            if result.ok:
                return result.versions[0]
            version = result.versions[0]  # written meanwhile: an unconditional set wins anyway

    async def delete(self, key: str) -> bool:
        if self._ours(key) and self._lease.lost is not None:
            raise LeaseLost(self._lease.lost_message())
        return await self._store.delete(key)

    async def cas(self, key: str, expected_version: int, value: bytes) -> CasResult:
        if not self._ours(key):
            return await self._store.cas(key, expected_version, value)
        result = await self._fenced([CasOp(key, expected_version, value)])
        return CasResult(result.ok, result.versions[0])

    async def scan(self, prefix: str) -> list[KeyValue]:
        return await self._store.scan(prefix)

    async def transact(self, ops: Sequence[WriteOp]) -> TransactResult:
        names = [
            op.key if isinstance(op, CasOp) else op.lease if isinstance(op, FenceOp) else op.stream
            for op in ops
        ]
        if names and all(self._ours(name) for name in names):
            return await self._fenced(ops)
        return await self._store.transact(ops)

    # ------------------------------------------------------------------ streams
    async def append(self, stream: str, record: bytes, *, maxlen: int | None = None) -> str:
        if not self._ours(stream):
            return await self._store.append(stream, record, maxlen=maxlen)
        return (await self._fenced([AppendOp(stream, record, maxlen)])).ids[0]

    async def read(
        self, stream: str, after: str = "0", *, count: int = 1000, block_s: float | None = None
    ) -> list[Entry]:
        return await self._store.read(stream, after, count=count, block_s=block_s)

    async def last_id(self, stream: str) -> str:
        return await self._store.last_id(stream)

    async def length(self, stream: str) -> int:
        return await self._store.length(stream)

    async def trim(self, stream: str, maxlen: int) -> int:
        return await self._store.trim(stream, maxlen)

    async def create_group(self, stream: str, group: str, *, start: str = "0") -> bool:
        return await self._store.create_group(stream, group, start=start)

    async def read_group(
        self, stream: str, group: str, consumer: str, *, count: int = 100, block_s: float | None = None
    ) -> list[Entry]:
        return await self._store.read_group(stream, group, consumer, count=count, block_s=block_s)

    async def read_groups(
        self,
        streams: Sequence[str],
        group: str,
        consumer: str,
        *,
        count: int = 100,
        block_s: float | None = None,
    ) -> dict[str, list[Entry]]:
        return await self._store.read_groups(streams, group, consumer, count=count, block_s=block_s)

    async def ack(self, stream: str, group: str, ids: list[str]) -> int:
        if self._ours(stream):
            return (await self._fenced([AckOp(stream, group, tuple(ids))])).acked
        return await self._store.ack(stream, group, ids)

    async def pending(self, stream: str, group: str, *, count: int = 1000) -> list[PendingEntry]:
        return await self._store.pending(stream, group, count=count)

    async def unacknowledged(self, stream: str, group: str, *, count: int = 1000) -> list[Entry] | None:
        return await self._store.unacknowledged(stream, group, count=count)

    async def claim_stale(
        self, stream: str, group: str, consumer: str, *, min_idle_s: float, count: int = 100
    ) -> list[Entry]:
        return await self._store.claim_stale(stream, group, consumer, min_idle_s=min_idle_s, count=count)

    # ------------------------------------------------------------------ leases
    async def acquire(self, name: str, owner: str, ttl_s: float) -> int:
        return await self._store.acquire(name, owner, ttl_s)

    async def renew(self, name: str, owner: str, ttl_s: float) -> bool:
        return await self._store.renew(name, owner, ttl_s)

    async def release(self, name: str, owner: str) -> bool:
        return await self._store.release(name, owner)

    async def holder(self, name: str) -> str | None:
        return await self._store.holder(name)

    async def epoch(self, name: str) -> int:
        return await self._store.epoch(name)

    # ------------------------------------------------------------------ lifecycle
    async def close(self) -> None:
        """The store belongs to whoever opened it: closing the view closes nothing."""
