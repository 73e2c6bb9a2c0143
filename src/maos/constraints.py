"""The orchestrator's side of resource and timing dependencies and of deadlocks (ADR 0013).

The decisions are pure and live elsewhere (``maos.resources``, ``maos.timing``,
``maos.deadlock``, ``maos.scheduler.decide``); this object keeps what one orchestrator needs
between its loop's turns and does the I/O those decisions call for:

- tasks held back by ``not_before`` / ``after`` until their time (they stay PENDING);
- deadlines: ``task_deadline_passed``, and the attempt stopped if one runs;
- the units of attempts it stopped, held until their agents are gone (``Stopping``);
- the store's shared resources (``maos.semaphore.SharedPool``): taken before ``task_assigned``, given
  back once the attempt has ended;
- ``resource_wait`` events (one per wait), which feed ``maos_resource_wait*``;
- deadlock detection each turn, and its resolution (``deadlock_found`` names the cycle).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol

from maos import deadlock, resources, timing
from maos.events import (
    DeadlockFound,
    Event,
    ResourceWait,
    TaskAssigned,
    TaskDeadlinePassed,
    TaskFailed,
    TaskSucceeded,
)
from maos.model import RunConfig, RunState, TaskSpec, TaskState
from maos.scheduler import PlanIndex
from maos.semaphore import SharedPool
from maos.store.base import Store
from maos.store.lease import Lease

log = logging.getLogger("maos.constraints")


class Stopper(Protocol):
    async def stop(self, task_id: str, attempt: int, reason: str) -> None: ...


class RunConstraints:
    def __init__(
        self,
        *,
        store: Store,
        run_id: str,
        lease: Lease,
        config: RunConfig,
        write: Callable[[Event], Awaitable[None]],
        lease_s: float,
    ) -> None:
        self.run_id = run_id
        self.config = config
        self.lease = lease
        self._write = write
        self._linger_s = config.grace_s + lease_s  # how long a stopped attempt's agent may live on
        self.held_back: dict[str, float] = {}  # PENDING task -> when it may start
        self.stopping = resources.Stopping()
        self.shared = SharedPool(store, run_id, lease.name)
        self._shared_others: dict[str, int] = {}
        self._waiting_logged: set[str] = set()  # READY tasks with a resource_wait logged
        self._requeues: dict[str, int] = {}
        self._indexed: PlanIndex | None = None
        self._timed: list[str] = []  # tasks with a deadline
        self._shared_limits: dict[str, int] = {}
        self._needs: dict[str, str] = {}  # tasks whose need no capacity meets

    # ------------------------------------------------------------------ bookkeeping
    def _reindex(self, index: PlanIndex) -> None:
        if self._indexed is not index:
            self._indexed = index
            self._timed = [task_id for task_id in index.ids if index.specs[task_id].deadline_s is not None]
            self._shared_limits = {
                name: limit.capacity for name, limit in index.plan.resources.items() if limit.shared
            }
            self._needs = deadlock.unmeetable_needs(index) if index.depth else {}

    def observe(self, event_id: str, event: Event, state: RunState) -> None:
        """Orchestrator hook, for every event read back (rejected ones too)."""
        if isinstance(event, TaskSucceeded | TaskFailed):
            self.stopping.ended(event.task_id, event.attempt)  # the stopped agent is gone
        elif isinstance(event, TaskAssigned):
            self._waiting_logged.discard(event.task_id)
        elif isinstance(event, DeadlockFound) and event.action == "requeue_task" and event.victim:
            self._requeues[event.victim] = self._requeues.get(event.victim, 0) + 1

    def waiting(self) -> bool:
        """Tasks wait for their time to start: the run is not stalled."""
        return bool(self.held_back)

    def requeued(self, task_id: str, attempt: int, spec: TaskSpec | None, now: float) -> None:
        """A previous orchestrator's attempt was requeued on resume: its agent may still run."""
        if spec is not None:
            self.stopping.add(task_id, attempt, spec.resources, now + self._linger_s)

    def wakeup(self, state: RunState, index: PlanIndex) -> float | None:
        self._reindex(index)
        return timing.next_wakeup(state, index.specs, self.held_back, self._timed)

    # ------------------------------------------------------------------ each turn
    async def before_ready(self, state: RunState, index: PlanIndex, stopper: Stopper, now: float) -> None:
        """Deadlines, and the shared units of attempts that have ended given back."""
        self._reindex(index)
        if self.shared.mine:
            await self.shared.release_ended(state)
        for task_id in timing.expired(state, index.specs, self._timed, now):
            spec = index.specs[task_id]
            run = state.tasks[task_id]
            if run.state in resources.LIVE:
                reason = f"deadline passed ({spec.deadline_s:g}s after the run started)"
                self.stopping.add(task_id, run.attempts, spec.resources, now + self._linger_s)
                await stopper.stop(task_id, run.attempts, reason)
            at = timing.deadline_at(spec, state) or now
            log.warning("run %s: task %s missed its deadline: %s", self.run_id, task_id, spec.on_deadline)
            await self._write(TaskDeadlinePassed(task_id=task_id, deadline_at=at, action=spec.on_deadline))

    def split_ready(
        self, state: RunState, index: PlanIndex, candidates: Iterable[str], now: float
    ) -> list[str]:
        """Of the PENDING tasks whose dependencies are done (``candidates``) and those held
        back before, the ones that may start now; the others are held back."""
        for task_id in [
            t
            for t in self.held_back
            if state.tasks.get(t) is None or state.tasks[t].state is not TaskState.PENDING
        ]:
            del self.held_back[task_id]
        ready, later = timing.due(state, index.specs, candidates, now)
        self.held_back.update(later)
        due_now = sorted((t for t, at in self.held_back.items() if at <= now), key=index.order.__getitem__)
        for task_id in due_now:
            del self.held_back[task_id]
        return list(dict.fromkeys((*ready, *due_now)))

    async def free_resources(self, state: RunState, index: PlanIndex, now: float) -> dict[str, int] | None:
        """Free units for ``decide``: capacities minus what live and stopping attempts hold,
        and for a shared resource also what other runs' live attempts hold. None: no resources."""
        self._reindex(index)
        if not index.depth:
            return None
        limits = resources.capacities(index.plan)
        in_use = resources.held(state, index.specs, self.stopping.units(now))
        if self._shared_limits:
            self._shared_others = await self.shared.in_use_by_others()
            for name, units in self._shared_others.items():
                in_use[name] = in_use.get(name, 0) + units
        return resources.free_units(limits, in_use)

    async def admit(self, spec: TaskSpec, attempt: int) -> bool:
        """Take the attempt's units of shared resources in the store (False: another run was
        faster; the task stays READY)."""
        units = {name: count for name, count in spec.resources.items() if name in self._shared_limits}
        if not units:
            return True
        short = await self.shared.acquire(spec.id, attempt, units, self._shared_limits, self.lease.epoch)
        if short:
            log.info("run %s: task %s waits for shared %s", self.run_id, spec.id, short)
        return not short

    async def log_waits(
        self, state: RunState, index: PlanIndex, free: Mapping[str, int] | None, assigned: Sequence[str]
    ) -> None:
        """One ``resource_wait`` per READY task the free units cannot cover (after this turn's
        assignments took theirs)."""
        if free is None:
            return
        left = dict(free)
        for task_id in assigned:
            for name, units in index.specs[task_id].resources.items():
                left[name] = left.get(name, 0) - units
        taken = set(assigned)
        held_by: dict[frozenset[str], list[str]] = {}  # one scan of the run per set of resources
        for task_id in index.ids:
            run = state.tasks.get(task_id)
            if (
                run is None
                or run.state is not TaskState.READY
                or task_id in taken
                or task_id in self._waiting_logged
            ):
                continue
            short = resources.shortfall(index.specs[task_id].resources, left)
            if short:
                self._waiting_logged.add(task_id)
                just = [t for t in assigned if short.keys() & index.specs[t].resources.keys()]
                names = frozenset(short)
                if names not in held_by:
                    held_by[names] = resources.holders(state, index.specs, names)
                holders = tuple(sorted({*held_by[names], *just}))
                await self._write(ResourceWait(task_id=task_id, resources=short, held_by=holders))

    async def deadlocks(
        self, state: RunState, index: PlanIndex, stopper: Stopper, *, free_agents: int, now: float
    ) -> str | None:
        """Find a deadlock and resolve it; the summary to fail the run with under
        ``--on-deadlock fail``, else None."""
        self._reindex(index)
        if not deadlock.live_waits(state) and not self._needs:
            return None
        free = await self.free_resources(state, index, now) or {}
        found = deadlock.find(state, index, free_resources=free, free_agents=free_agents, needs=self._needs)
        if found is None:
            return None
        decision = deadlock.resolve(
            found, state, index, on_deadlock=self.config.on_deadlock, requeues=self._requeues
        )
        described = found.describe()
        log.warning(
            "run %s: deadlock %s: %s %s", self.run_id, described, decision.action, decision.victim or ""
        )
        if decision.action == "requeue_task" and decision.victim is not None:
            run = state.tasks[decision.victim]
            spec = index.specs[decision.victim]
            self.stopping.add(decision.victim, run.attempts, spec.resources, now + self._linger_s)
            await stopper.stop(decision.victim, run.attempts, f"deadlock: {described}")
        elif decision.action == "fail_task" and decision.victim is not None:
            run = state.tasks[decision.victim]
            if run.state in resources.LIVE:
                spec = index.specs[decision.victim]
                self.stopping.add(decision.victim, run.attempts, spec.resources, now + self._linger_s)
                await stopper.stop(decision.victim, run.attempts, f"deadlock: {described}")
        await self._write(
            DeadlockFound(
                cycle=found.cycle,
                edges=found.edges,
                victim=decision.victim,
                action=decision.action,
                detail=described[:2000],
            )
        )
        return f"deadlock: {described}" if decision.action == "fail_run" else None

    def excused(self, state: RunState, index: PlanIndex) -> set[str]:
        return timing.excused(state, index.ids, index.deps)

    async def close(self) -> None:
        """Give back every shared unit this run still holds (the run has ended)."""
        if self.shared.mine:
            await self.shared.release(list(self.shared.mine))
