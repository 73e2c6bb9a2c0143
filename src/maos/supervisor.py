"""``maos supervisor``: takes over every run whose orchestrator is gone (ADR 0012).

A supervisor watches the run index. A run that has not finished and whose lease has no live
holder (its orchestrator died, its machine died, it was partitioned away for longer than
the lease, or it was started with ``maos run --detach``) is taken over: the supervisor
acquires the run's lease (one winner among supervisors: the store's lease is atomic, and the
losers see ``RunLocked``), resumes it exactly as ``maos resume`` does, under a new epoch, and
drives it to its end. The old orchestrator, if it still runs somewhere, is fenced: its next
write is refused and it stops its agents.

Run one or more, on any machines that reach the store. Each one says it is alive in the store
(``keys.supervisor(name)``), so that ``maos run --detach`` can tell whether anyone will pick
its run up. On SIGTERM a supervisor lets go of its runs (their agents stop, their leases are
released) and another supervisor takes them over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from maos.errors import LeaseLost, MaosError, RunLocked, describe_error
from maos.liveness import live_orchestrator, run_records
from maos.model import RunRecord
from maos.orchestrator import Orchestrator
from maos.store import keys
from maos.store.base import Store

log = logging.getLogger("maos.supervisor")

MakeOrchestrator = Callable[[Store, RunRecord], Awaitable[Orchestrator]]
"""The orchestrator that resumes a run, from its entry in the run index: the run read once
(``Orchestrator.resume_from``), its checkpoints where its directory keeps them."""


@dataclass
class Adoption:
    """What a supervisor did with one run."""

    run_id: str
    epoch: int = 0
    status: str = ""  # the run's status when the supervisor was done with it
    error: str | None = None
    started_at: float = field(default_factory=time.time)


class Supervisor:
    """Watches every run's lease; takes over and drives the runs that have no live owner."""

    def __init__(
        self,
        store: Store,
        make: MakeOrchestrator,
        *,
        name: str | None = None,
        poll_s: float = 1.0,
        retry_after_s: float = 60.0,
    ) -> None:
        self.store = store
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.poll_s = poll_s
        self.retry_after_s = retry_after_s
        self._make = make
        self._driving: dict[str, asyncio.Task[None]] = {}
        self._failed_at: dict[str, float] = {}  # run -> when adopting it failed (not retried at once)
        self._stopping = asyncio.Event()
        self.adoptions: list[Adoption] = []

    def request_stop(self) -> None:
        """Adopt nothing more; let go of the runs being driven (another supervisor takes them)."""
        self._stopping.set()

    async def run(self) -> None:
        log.info("supervisor %s watching %s", self.name, self.store.url)
        try:
            async with asyncio.TaskGroup() as group:
                while not self._stopping.is_set():
                    await self._announce()
                    for record in await self._orphans():
                        self._driving[record.run_id] = group.create_task(
                            self._adopt(record), name=f"maos-adopt-{record.run_id}"
                        )
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_s):
                            await self._stopping.wait()
                for task in self._driving.values():
                    task.cancel()  # their orchestrators stop their agents and release the leases
        finally:
            with contextlib.suppress(MaosError):
                await self.store.delete(keys.supervisor(self.name))

    async def _announce(self) -> None:
        """Say we are alive (``maos run --detach`` looks)."""
        record = {"name": self.name, "host": socket.gethostname(), "pid": os.getpid(), "seen_at": time.time()}
        try:
            await self.store.set(keys.supervisor(self.name), json.dumps(record).encode())
        except MaosError as exc:
            log.warning("supervisor %s: store unreachable: %s", self.name, describe_error(exc))

    async def _orphans(self) -> list[RunRecord]:
        """Unfinished runs with no live orchestrator, that we do not drive yet."""
        try:
            records = await run_records(self.store)
        except MaosError as exc:
            log.warning("supervisor %s: cannot read the run index: %s", self.name, describe_error(exc))
            return []
        now = time.time()
        found: list[RunRecord] = []
        for record in records:
            run_id = record.run_id
            if record.status.finished or run_id in self._driving:
                continue
            if now - self._failed_at.get(run_id, -self.retry_after_s) < self.retry_after_s:
                continue
            try:
                if await live_orchestrator(self.store, run_id) is None:
                    found.append(record)
            except MaosError as exc:
                log.warning("supervisor %s: run %s: %s", self.name, run_id, describe_error(exc))
        return found

    async def _adopt(self, record: RunRecord) -> None:
        run_id = record.run_id
        adoption = Adoption(run_id)
        try:
            orchestrator = await self._orchestrator(record)
            if orchestrator.state.status.finished:
                return  # the record lagged behind the log: nothing to drive
            log.warning("supervisor %s: run %s has no live orchestrator: taking it over", self.name, run_id)
            self.adoptions.append(adoption)
            try:
                result = await orchestrator.resume()
            except RunLocked:
                self.adoptions.remove(adoption)  # another supervisor won the lease
                raise
            adoption.epoch = orchestrator.lease.epoch
            adoption.status = result.status.value
            log.warning("supervisor %s: run %s finished: %s", self.name, run_id, result.status.value)
        except RunLocked:
            log.info("supervisor %s: run %s was taken by another orchestrator first", self.name, run_id)
        except LeaseLost as exc:
            adoption.error = describe_error(exc)
            log.warning("supervisor %s: run %s: %s", self.name, run_id, adoption.error)
        except MaosError as exc:
            adoption.error = describe_error(exc)
            self._failed_at[run_id] = time.time()
            log.error(  # noqa: TRY400 (a user's problem, said in one line)
                "supervisor %s: cannot take run %s over: %s (tried again in %gs)",
                self.name,
                run_id,
                adoption.error,
                self.retry_after_s,
            )
        finally:
            self._driving.pop(run_id, None)

    async def _orchestrator(self, record: RunRecord) -> Orchestrator:
        if not Path(record.workdir).is_dir():  # its checkpoints and worktrees are there
            raise MaosError(f"its directory {record.workdir} is not on this machine")
        return await self._make(self.store, record)


async def live_supervisors(store: Store, *, within_s: float = 10.0) -> list[str]:
    """Names of the supervisors that said they were alive in the last ``within_s`` seconds."""
    alive: list[str] = []
    now = time.time()
    for item in await store.scan(keys.SUPERVISOR_PREFIX):
        try:
            record = json.loads(item.value)
            if now - float(record["seen_at"]) <= within_s:
                alive.append(str(record["name"]))
        except (ValueError, KeyError, TypeError):
            continue
    return alive
