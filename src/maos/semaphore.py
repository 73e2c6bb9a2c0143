"""The cross-run semaphore of a store's shared resources (``shared: true`` capacities).

A shared resource's capacity is shared by every run on the store: a semaphore in one kv
record (``SHARED_KEY``), changed by compare-and-set, whose entries each name the run lease
and epoch they were taken under. An entry whose lease is no longer held at that epoch (the
orchestrator died and its lease expired, or a supervisor took the run over) is dead and is
dropped by the next run that reads the record: a crashed holder's units come back within one
lease time, without anyone having to release them. The record is store contents, so it is
read as untrusted (bounded JSON, bounded fields; unreadable: reset). ADR 0013.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field

from maos.documents import DocumentError, load_json
from maos.model import ResourceName, ResourceUnits, RunState
from maos.resources import LIVE, free_units, shortfall
from maos.store.base import Store

log = logging.getLogger("maos.semaphore")

__all__ = ["SHARED_KEY", "SharedPool"]

SHARED_KEY = "maos:resources"
"""The cross-run semaphore record (kv, JSON ``{"holders": {...}}``): one key, so that taking
several resources at once is one compare-and-set (and one Redis Cluster slot)."""


class _Holding(BaseModel):
    """One attempt's units. Read from the store, so bounded: a lease name the store can be
    asked about (printable ASCII), units a task may hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    task_id: str
    attempt: int = Field(ge=0)
    units: dict[ResourceName, ResourceUnits]
    lease: str = Field(pattern=r"^[!-~]{1,512}$", description="the run lease the units were taken under")
    epoch: int = Field(ge=0)


class _Holdings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    holders: dict[str, _Holding] = Field(default_factory=dict)


class SharedPool:
    """The cross-run semaphore of the store's shared resources (module docstring).

    One orchestrator's view: it takes and gives back units for its own run's attempts,
    under its run lease's ``(lease, epoch)``. Every change is a compare-and-set of the one
    record, retried on a conflict; entries of dead holders are dropped on the way."""

    def __init__(self, store: Store, run_id: str, lease: str) -> None:
        self.store = store
        self.run_id = run_id
        self.lease = lease
        self.mine: dict[str, int] = {}  # task id -> attempt holding units here

    @staticmethod
    def _key(run_id: str, task_id: str) -> str:
        return f"{run_id}/{task_id}"

    async def _read(self) -> tuple[_Holdings, int]:
        current = await self.store.get(SHARED_KEY)
        if current is None:
            return _Holdings(), 0
        try:
            data = load_json(current.value.decode("utf-8"))
            return _Holdings.model_validate(data), current.version
        except (ValueError, DocumentError) as exc:  # corrupt store contents: start the record again
            log.warning("shared resources record unreadable (%s): reset", str(exc)[:200])
            return _Holdings(), current.version

    async def _live(self, holdings: _Holdings) -> _Holdings:
        """``holdings`` without the entries whose lease is no longer held at their epoch."""
        verdict: dict[tuple[str, int], bool] = {}
        alive: dict[str, _Holding] = {}
        for key, holding in holdings.holders.items():
            pair = (holding.lease, holding.epoch)
            if pair not in verdict:
                verdict[pair] = (
                    await self.store.epoch(holding.lease) == holding.epoch
                    and await self.store.holder(holding.lease) is not None
                )
            if verdict[pair]:
                alive[key] = holding
            else:
                log.info("shared resources: dropped %s (lease %s epoch %d is over)", key, *pair)
        return _Holdings(holders=alive)

    async def in_use_by_others(self) -> dict[str, int]:
        """Units of shared resources held by live attempts of other runs."""
        holdings = await self._live((await self._read())[0])
        result: dict[str, int] = {}
        for holding in holdings.holders.values():
            if holding.run_id != self.run_id:
                for name, units in holding.units.items():
                    result[name] = result.get(name, 0) + units
        return result

    async def acquire(
        self, task_id: str, attempt: int, units: Mapping[str, int], limits: Mapping[str, int], epoch: int
    ) -> dict[str, int]:
        """Take ``units`` for the attempt if every live holder's units plus them stay within
        ``limits``; ``{}`` when taken, else the shortfall (name -> units wanted)."""
        while True:
            holdings, version = await self._read()
            live = await self._live(holdings)
            in_use: dict[str, int] = {}
            for key, holding in live.holders.items():
                if key != self._key(self.run_id, task_id):
                    for name, count in holding.units.items():
                        in_use[name] = in_use.get(name, 0) + count
            short = shortfall(units, free_units(limits, in_use))
            if short:
                return short
            live.holders[self._key(self.run_id, task_id)] = _Holding(
                run_id=self.run_id,
                task_id=task_id,
                attempt=attempt,
                units=dict(units),
                lease=self.lease,
                epoch=epoch,
            )
            if (await self.store.cas(SHARED_KEY, version, live.model_dump_json().encode())).ok:
                self.mine[task_id] = attempt
                return {}

    async def release(self, task_ids: Iterable[str]) -> None:
        """Give back the units of these tasks' attempts (no-op for tasks holding none)."""
        keys = {self._key(self.run_id, task_id) for task_id in task_ids}
        if not keys:
            return
        while True:
            holdings, version = await self._read()
            if not keys & holdings.holders.keys():
                break
            for key in keys:
                holdings.holders.pop(key, None)
            if (await self.store.cas(SHARED_KEY, version, holdings.model_dump_json().encode())).ok:
                break
        for task_id in task_ids:
            self.mine.pop(task_id, None)

    async def release_ended(self, state: RunState) -> None:
        """Give back the units of our attempts that have ended (or are no longer current)."""
        ended = [
            task_id
            for task_id, attempt in self.mine.items()
            if (run := state.tasks.get(task_id)) is None or run.state not in LIVE or run.attempts != attempt
        ]
        if ended:
            await self.release(ended)
