"""The run loop: read events, fold them, decide, write decisions, drive the worker.

The orchestrator never keeps a second source of truth. It appends its decisions to the run's
event log and learns their effect by reading the log back, like every other reader
(``maos status``, the dashboard). Between a write and the moment the log has been read back
to it, it makes no new decision, so nothing is ever decided twice.

Shutdown has two modes: ``request_drain()`` (no new tasks; running ones finish) and
``request_cancel()`` (running agents are stopped: terminate, grace, kill, wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from maos import scheduler
from maos.agents.primer import Primer
from maos.agents.process import stop_orphans, use_pidfd_child_watcher
from maos.agents.roles import RoleCatalog, load_roles
from maos.agents.runtime import AgentRuntime
from maos.agents.workspace import Workspaces, repository_root
from maos.breaker import Circuit, CircuitBreaker
from maos.bus import Backlog, Bus
from maos.checkpoint.checkpointer import Checkpointer, Restored
from maos.checkpoint.codec import AgentSession, Checkpoint
from maos.checkpoint.writer import CheckpointWriter
from maos.consensus import expand_replicas
from maos.constraints import RunConstraints
from maos.dispatch import Dispatcher, LocalDispatcher, QueueDispatcher
from maos.door_transport import pick_door_transport
from maos.dynamic import decide_addition
from maos.errors import (
    AgentError,
    LeaseLost,
    MaosError,
    NoUsableCheckpoint,
    RunLocked,
    RunNotFound,
    StoreDataError,
    StoreError,
    StoreUnavailable,
    describe_error,
)
from maos.eventlog import EventLog
from maos.events import (
    CheckpointTaken,
    CircuitChanged,
    Event,
    RunCancelling,
    RunDraining,
    RunFinished,
    RunRestored,
    RunResumed,
    RunRetried,
    RunStarted,
    TaskAdded,
    TaskAddRefused,
    TaskAssigned,
    TaskCancelled,
    TaskFailed,
    TaskReady,
    TaskRequeued,
    TaskRetried,
    TaskSkipped,
    TaskSucceeded,
    apply,
)
from maos.history import AttemptCounter, load_history, record_outcomes
from maos.liveness import dead_here, same_host
from maos.model import (
    AgentSpec,
    Assignment,
    FitnessScores,
    Plan,
    RunConfig,
    RunRecord,
    RunState,
    RunStatus,
    TaskSpec,
    TaskState,
)
from maos.paths import make_state_dir, report_file
from maos.plan.validate import validate_plan
from maos.report import write_report
from maos.stalls import StallWatch, able_agents
from maos.store import keys
from maos.store.base import Store
from maos.store.lease import Fenced, Lease, cut_off
from maos.summary import failure_summary
from maos.team import plan_team
from maos.tracking import RunTracker

if TYPE_CHECKING:
    from maos.mcp_http import DoorEndpoint

# Where agents run in this process (not a run sent to workers, `--workers-only` or a `maos
# serve`) the runtimes, the warm pool, the door's endpoint and the agent host are imported
# when the run starts: a run sent to workers starts without them (about 0.07 s).

log = logging.getLogger("maos.orchestrator")

EventHook = Callable[[str, Event, RunState], None]

IDLE_POLL_S = 1.0
"""Longest wait for new events when nothing is scheduled to happen sooner."""
WRITE_BATCH = 500
"""Most events the orchestrator appends in one transaction (a 10,000-task plan's first step)."""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _record_epoch(raw: bytes) -> int:
    try:
        return RunRecord.model_validate_json(raw).epoch
    except ValueError:
        return 0  # unreadable: overwritten by a readable one


def _scores(choice: scheduler.Placement) -> FitnessScores | None:
    parts = choice.fitness
    if parts is None:
        return None
    return FitnessScores(
        capability=parts.capability,
        workload=parts.workload,
        history=parts.history,
        total=choice.score,
        candidates=choice.candidates,
    )


def default_agents(count: int) -> tuple[AgentSpec, ...]:
    width = len(str(count))
    return tuple(AgentSpec(id=f"agent-{n:0{width}d}") for n in range(1, count + 1))


async def _latest_checkpoint(
    checkpointer: Checkpointer | None, run_id: str, *, log_intact: bool = True
) -> Restored | None:
    """The newest valid checkpoint of run ``run_id`` (past corrupt ones, its warnings say
    which), or None when there is none (or no checkpointer): the whole log is replayed.

    When every checkpoint is corrupt and the log is intact, the log alone is the run: a
    warning, and None. A key that does not match the checkpoints raises (nothing deleted):
    the next checkpoints would be written with another key than the run's."""
    if checkpointer is None or not await checkpointer.list(run_id):
        return None
    try:
        return await checkpointer.load_latest(run_id)
    except NoUsableCheckpoint as exc:
        if not log_intact:
            raise
        log.warning("run %s: %s; replaying its log from the start instead", run_id, exc)
        return None


@dataclass
class _Pending:
    """Events written by the orchestrator but not yet read back from the log."""

    last_id: str | None = None
    written: int = 0


@dataclass
class RunOptions:
    """Knobs that are not part of the recorded ``RunConfig``."""

    history: scheduler.History | None = None  # None: the outcomes recorded in the store
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.time


class Orchestrator:
    """Drives one run from ``run_started`` to ``run_finished``.

    Its agents run in this process (``runtimes``, ``warm``, ``warm_primer`` and
    ``door_transport`` say how), or with ``workers_only`` in ``maos worker`` / ``maos serve``
    processes, which bring their own: then those four are not used."""

    def __init__(
        self,
        store: Store,
        plan: Plan,
        config: RunConfig,
        *,
        run_id: str | None = None,
        agents: Sequence[AgentSpec] | None = None,
        runtimes: Mapping[str, AgentRuntime] | None = None,
        options: RunOptions | None = None,
        workers_only: bool = False,
        lease_s: float = 15.0,
        warm: int = 0,
        warm_primer: Primer | str = Primer.LOCAL,
        checkpointer: Checkpointer | None = None,
        door_transport: str | None = None,
    ) -> None:
        self.plan = expand_replicas(plan)
        self.config = config
        self.run_id = run_id or new_run_id()
        self.agents = (
            tuple(agents)
            if agents is not None
            else plan_team(self.plan, Path(config.workdir)) or default_agents(config.agents)
        )
        self.workers_only = workers_only or config.workers_only
        self.runtimes: Mapping[str, AgentRuntime] = dict(runtimes or {})
        if not self.workers_only:
            from maos.agents.factory import run_runtimes

            self.runtimes = run_runtimes(config, runtimes, warm=warm, warm_primer=warm_primer)
        self.options = options or RunOptions()
        self.host_name = f"{socket.gethostname()}:{os.getpid()}"
        self.owner = f"orchestrator {self.host_name} ({secrets.token_hex(3)})"
        self.lease = Lease(store, keys.run_lease(self.run_id), self.owner, lease_s)
        # Every write to the run's keys is fenced by the lease: once another orchestrator
        # holds it, not one more event of ours lands (ADR 0012).
        self.store: Store = Fenced(store, self.lease, keys.run_prefix(self.run_id))
        self.events = EventLog(self.store, self.run_id)
        self.state = RunState()
        self.index = scheduler.PlanIndex.build(self.plan)
        self._queue = scheduler.ReadyQueue(self.index)  # the READY tasks in the order of work
        self.hooks: list[EventHook] = []
        self.lease_s = lease_s
        self.checkpointer = checkpointer
        # How local Claude agents reach the door: this process's MCP endpoint (maos.mcp_http),
        # or a `maos mcp` process each (default: $MAOS_DOOR_TRANSPORT, else http).
        self.door_transport = pick_door_transport(door_transport)
        self.restore_warnings: list[str] = []  # what a resume had to work around (corrupt checkpoints)
        self._role_catalog: RoleCatalog | None = None
        self._recent_adds: dict[str, deque[float]] = {}
        self._in_repository: bool | None = None  # whether tasks work in git worktrees
        self._breakers: dict[str, CircuitBreaker] = {}
        self._resume_sessions: dict[str, tuple[str, str]] = {}  # task -> (session, agent) to continue
        self._dead: list[str] = []  # failed for good, not yet dead-lettered
        self._failures_by_agent: dict[str, dict[str, int]] = {}  # task -> agent -> failed attempts
        self._avoid: dict[str, set[str]] = {}  # task -> agents its retries should not go to
        self._circuit_news: list[CircuitChanged] = []
        self._stalls = StallWatch(config.stall_timeout_s)  # lost agents, work no agent can take
        self._before_loss: tuple[RunState, int] | None = None  # the fold and epoch before a lost lease
        self._restored: Restored | None = None  # the checkpoint the run was read from (with its kv pairs)
        self._next_reclaim = 0.0
        self._pending = _Pending()
        self._tracker = RunTracker()
        # resources, timing and deadlocks (maos.constraints, ADR 0013)
        self.constraints = RunConstraints(
            store=self.store,
            run_id=self.run_id,
            lease=self.lease,
            config=config,
            write=self._write,
            lease_s=lease_s,
        )
        self.hooks.append(self.constraints.observe)
        # the attempts for the outcome history, counted as the log is read (a run this
        # orchestrator starts: from its first event; a resumed one reads its log at the end)
        self._attempts: AttemptCounter | None = None
        self._wake = asyncio.Event()
        self._drain_requested = False
        self._cancel_requested = False

    @classmethod
    async def resume_from(
        cls,
        store: Store,
        run_id: str,
        *,
        checkpointer: Checkpointer | None = None,
        runtimes: Mapping[str, AgentRuntime] | None = None,
        options: RunOptions | None = None,
        workers_only: bool = False,
        lease_s: float = 15.0,
    ) -> Orchestrator:
        """The orchestrator that continues run ``run_id`` of ``store``: the way to resume a run
        (``resume()`` then drives it).

        The run is read once, here: the newest valid checkpoint of ``checkpointer`` and the
        log's events after it. Its plan, settings and agents are the run's own; ``state`` is
        where it stands (a finished run is not driven again: ``resume()`` returns it as it
        is), and ``resume()`` goes on from it, reading only the events appended since.
        ``RunNotFound`` if the store has no such run.
        """
        intact = await store.length(keys.events(run_id)) > 0
        restored = await _latest_checkpoint(checkpointer, run_id, log_intact=intact)
        state = await EventLog(store, run_id).replay(restored.state if restored is not None else None)
        if state.plan is None or state.config is None:
            raise RunNotFound(f"no run {run_id!r} in store {store.url}: its log has no plan")
        orchestrator = cls(
            store,
            state.plan,
            state.config,
            run_id=run_id,
            agents=tuple(state.agents.values()),
            runtimes=runtimes,
            options=options,
            workers_only=workers_only,
            lease_s=lease_s,
            checkpointer=checkpointer,
        )
        orchestrator._restored_from(restored)
        orchestrator.state = state
        return orchestrator

    # ------------------------------------------------------------------ control
    def request_drain(self) -> None:
        """Start no new task; let running ones finish, then end the run as cancelled."""
        self._drain_requested = True
        self._wake.set()

    def request_cancel(self) -> None:
        """Stop running agents now and end the run as cancelled."""
        self._cancel_requested = True
        self._wake.set()

    # ------------------------------------------------------------------ the loop
    async def run(self) -> RunState:
        """Start the run and drive it to its end."""
        await self._hold_lease()
        return await self._owning(self._start)

    async def resume(self) -> RunState:
        """Continue a run from its log: finished tasks stay finished, attempts that were in
        flight when the previous orchestrator died are stopped and queued again. The run is
        read from its newest checkpoint and log unless ``resume_from`` has read it."""
        await self._hold_lease()
        return await self._owning(self._resume)

    async def retry(self, task_ids: Sequence[str], plan: Plan | None = None) -> RunState:
        """Open a finished run again for ``task_ids`` (failed, cancelled or skipped tasks,
        chosen with ``scheduler.to_retry``) and drive it to its end: every other task keeps
        its result. ``plan``: the fixed plan (checked with ``scheduler.retry_plan_problems``)."""
        await self._hold_lease()
        return await self._owning(lambda: self._retry(task_ids, plan))

    async def start_detached(self) -> None:
        """Write the run's start and let go of it: ``maos supervisor`` drives it (``run --detach``)."""
        await self._hold_lease()
        async with self.lease.held():
            await self._write(
                RunStarted(run_id=self.run_id, plan=self.plan, config=self.config, agents=self.agents)
            )
            await self._catch_up()
            await self._record_run()

    async def _owning(self, body: Callable[[], Awaitable[RunState]]) -> RunState:
        """Run ``body`` holding the run's lease. If the lease is lost to a store outage (or
        the store stays unreachable), the agents stop with it; once the store answers again
        and no other orchestrator has taken the run, it is taken back under a new epoch and
        continued from its log like a resume. Taken by another: ``LeaseLost``."""
        while True:
            try:
                async with self.lease.held():
                    return await body()
            except BaseException as exc:
                outage = cut_off(exc)
                if outage is None or not await self._take_back(outage):
                    raise
                body = self._resume

    async def _take_back(self, exc: LeaseLost | StoreUnavailable) -> bool:
        """After ``exc``: wait for the store, then hold the lease again if nobody else does."""
        log.warning("run %s: %s; its agents were stopped", self.run_id, describe_error(exc))
        epoch_before = self.lease.epoch
        delay = 0.5
        while True:
            try:
                holder = await self.store.holder(self.lease.name)
                if holder is not None and holder != self.owner:
                    raise LeaseLost(
                        f"run {self.run_id} was taken over by {holder} (epoch "
                        f"{await self.store.epoch(self.lease.name)}) while this orchestrator "
                        f"({self.owner}) had lost its lease; it stopped its agents and leaves the run to it"
                    ) from exc
                if await self.lease.acquire_above(epoch_before):
                    break
            except StoreUnavailable as waiting:
                log.warning("run %s: waiting for the store: %s", self.run_id, describe_error(waiting))
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
        log.warning(
            "run %s: took the run back (epoch %d); continuing from its log", self.run_id, self.lease.epoch
        )
        self._before_loss = (self.state, epoch_before)
        self.state = RunState()
        self._attempts = None  # continued like a resume: the history reads the log at the end
        self._tracker = RunTracker()
        self._pending = _Pending()
        self._dead.clear()
        return True

    async def _start(self) -> RunState:
        # The CLI checked the plan already; a caller of the Python API may not have. A plan the
        # reducer would reject (a cycle, an unknown dependency) must not open a run.
        validate_plan(self.plan, f"plan {self.plan.name!r}")
        counter = self._attempts = AttemptCounter()
        self.hooks.append(lambda _, event, __: counter.observe(event))
        async with self._checkpoints(None):
            await self._write(
                RunStarted(run_id=self.run_id, plan=self.plan, config=self.config, agents=self.agents)
            )
            await self._record_run()
            log.info("run %s started: plan %r, %d tasks", self.run_id, self.plan.name, len(self.plan.tasks))
            return await self._drive()

    async def _resume(self) -> RunState:
        await self._read_run()
        # The log's first event is its generation marker: without a run_started (or a
        # rebuild's run_restored) first, the store lost the run's log.
        first = await self.events.read("0", count=1)
        log_lost = not first or not isinstance(first[0][1], RunStarted | RunRestored)
        if self.state.status.finished:
            await self._record_history()  # idempotent: covers a crash right after the end
            return self.state
        if log_lost:
            if self._restored is None:
                raise MaosError(
                    f"run {self.run_id}: its data is gone from the store {self.store.url} (a Redis "
                    "restarted without persistence, or a flushed database) and it has no checkpoint "
                    "to rebuild it from: it cannot continue"
                )
            await self._rebuild(self.state)
        self._before_loss = None
        async with self._checkpoints(self.state):
            await self._write(RunResumed(owner=self.owner, epoch=self.lease.epoch))
            stop_orphans(
                self.run_id,
                {
                    task_id: task.attempts
                    for task_id, task in self.state.tasks.items()
                    if task.state in (TaskState.ASSIGNED, TaskState.RUNNING) and same_host(task.worker)
                },
            )
            for task_id, task in self.state.tasks.items():
                if task.state in (TaskState.ASSIGNED, TaskState.RUNNING):
                    await self._write(
                        TaskRequeued(task_id=task_id, attempt=task.attempts, reason="orchestrator restarted")
                    )
                    held = self.state.plan.by_id().get(task_id) if self.state.plan is not None else None
                    self.constraints.requeued(task_id, task.attempts, held, self.options.clock())
                    if task.session_id is not None and task.agent_id is not None:
                        self._resume_sessions[task_id] = (task.session_id, task.agent_id)
            await self._record_run()
            log.info(
                "run %s resumed at event %s (epoch %d)",
                self.run_id,
                self.state.last_event_id,
                self.lease.epoch,
            )
            return await self._drive()

    async def _rebuild(self, restored: RunState) -> None:
        """The store lost the run's log (the log's first event is its generation marker):
        start the log again from the newest checkpoint's state, under an epoch above any the
        run had (the store's epoch counter went with the data), and say what was lost."""
        assert self.checkpointer is not None  # restored is a checkpoint's state
        before = self._before_loss[0] if self._before_loss is not None else None
        rerun = (
            sorted(
                task_id
                for task_id, task in before.tasks.items()
                if task.state is TaskState.SUCCEEDED
                and (
                    task_id not in restored.tasks or restored.tasks[task_id].state is not TaskState.SUCCEEDED
                )
            )
            if before is not None
            else []
        )
        newest = (await self.checkpointer.list(self.run_id))[-1]
        missing = before.event_count - restored.event_count if before is not None else None
        lost_events = (
            "the events after it are lost"
            if missing is None
            else "no event after it was lost"
            if missing <= 0
            else f"{missing} event(s) after it are lost"
        )
        lost = (
            f"the store lost run {self.run_id}'s data; rebuilt from checkpoint {newest.id} "
            f"(event {restored.event_count}): {lost_events}"
            + (f"; tasks run again: {', '.join(rerun)}" if rerun else "")
        )
        pairs = dict(self._restored.store or {}) if self._restored is not None else {}
        backlog = pairs.pop(keys.bus_backlog(self.run_id), None)
        for key, value in pairs.items():
            if key.startswith(keys.run_prefix(self.run_id)):  # store contents are untrusted
                await self.store.set(key, value)
        if backlog is not None:
            try:
                bus = Bus(self.store, self.run_id, cipher=None)  # records go back sealed as they were
                put_back = await bus.restore(Backlog.from_bytes(backlog))
            except StoreDataError as exc:
                lost += f"; undelivered messages lost ({exc})"
            else:
                lost += f"; {put_back} undelivered message(s) put back"
        log.warning("run %s: %s", self.run_id, lost)
        self.restore_warnings.append(lost)
        await self._write(
            RunRestored(
                run_id=self.run_id,
                checkpoint_id=newest.id,
                covers_events=restored.event_count,
                lost=lost,
                rerun=tuple(rerun),
                state_json=restored.model_dump_json(),
            )
        )
        self.state = RunState()
        await self._catch_up()
        self._tracker.rebuild(self.state)
        # the new log's first checkpoint: later restores never reach back into the lost log
        await self.checkpointer.snapshot(self.state, self._sessions(), await self._run_pairs())
        self._before_loss = None

    async def _retry(self, task_ids: Sequence[str], plan: Plan | None) -> RunState:
        await self._read_run()
        if not self.state.status.finished:
            raise MaosError(
                f"run {self.run_id} is {self.state.status.value}, not finished: "
                f"`maos resume {self.run_id}` continues it"
            )
        async with self._checkpoints(self.state):
            await self._write(RunRetried(task_ids=tuple(task_ids), plan=plan))
            await self._catch_up()
            reopened = self.state.status
            if reopened.finished:  # the reducer refused it; it says why
                reason = self.state.rejections[-1].reason if self.state.rejections else "refused"
                raise MaosError(f"run {self.run_id} cannot be retried: {reason}")
            await self._record_run()
            log.info("run %s: retrying %s", self.run_id, ", ".join(task_ids))
            return await self._drive()

    async def _read_run(self) -> None:
        """``self.state`` from the newest valid checkpoint and the log's events after it; when
        ``resume_from`` has read the run, only the events appended since."""
        if not self.state.run_id:  # not read yet, or dropped with a lost lease
            intact = await self.store.length(keys.events(self.run_id)) > 0
            restored = await _latest_checkpoint(self.checkpointer, self.run_id, log_intact=intact)
            self._restored_from(restored)
            self.state = RunState() if restored is None else restored.state
        self.state = await self.events.replay(self.state)
        self._tracker.rebuild(self.state)

    def _restored_from(self, restored: Restored | None) -> None:
        """Note the checkpoint a resume starts from: the warnings it came with (corrupt
        checkpoints it fell back past), for the user, and the run's kv pairs it holds."""
        self._restored = restored
        if restored is None:
            return
        for warning in restored.warnings:
            log.warning("run %s: %s", self.run_id, warning)
        self.restore_warnings = list(restored.warnings)
        log.info("run %s: restoring from checkpoint %s", self.run_id, restored.checkpoint.id)

    @contextlib.asynccontextmanager
    async def _checkpoints(self, initial: RunState | None) -> AsyncIterator[None]:
        """Checkpoints for the time of the block: every ``every_s`` and at each completion,
        written in the background (never on the scheduling path); a final one at the end."""
        if self.checkpointer is None:
            yield
            return
        checkpointer = self.checkpointer

        async def announce(checkpoint: Checkpoint, duration_s: float) -> None:
            await self.events.append(
                CheckpointTaken(
                    checkpoint_id=checkpoint.id,
                    bytes=checkpoint.size,
                    duration_s=duration_s,
                    covers_events=checkpoint.event_count,
                    location=checkpointer.blobs.url,
                )
            )

        writer = CheckpointWriter(
            checkpointer, initial=initial, agents=self._sessions, on_snapshot=announce, store=self._run_pairs
        )
        await writer.start()
        self.hooks.insert(0, writer.observe)
        try:
            yield
        finally:
            self.hooks.remove(writer.observe)
            # After a lost lease the store may have lost the run's data: a final snapshot would
            # save its absence (a last segment still saves the events seen).
            await writer.close(final_snapshot=self.lease.lost is None)

    async def _run_pairs(self) -> dict[str, bytes]:
        """The run's kv pairs (shared state, published results and outputs, the bus's
        sequence numbers, the run's secret): saved with full checkpoints for a rebuild."""
        pairs = {item.key: item.value for item in await self.store.scan(keys.run_prefix(self.run_id))}
        started = any(task.attempts for task in self.state.tasks.values())
        if started and keys.run_secret(self.run_id) not in pairs:  # created before the first agent
            raise StoreDataError(f"run {self.run_id}'s data is missing from the store: not saved")
        # ... and the messages its agents (and task inboxes) have not acknowledged yet
        owed = await Bus(self.store, self.run_id, cipher=None).backlog()
        pairs[keys.bus_backlog(self.run_id)] = owed.to_bytes()
        return pairs

    def _sessions(self) -> dict[str, AgentSession]:
        """Each agent's latest runtime session and workspace branch, for checkpoints."""
        sessions: dict[str, AgentSession] = {}
        for task_id, task in self.state.tasks.items():
            if task.agent_id is None or (task.session_id is None and task.state is not TaskState.RUNNING):
                continue
            spec = self.index.specs.get(task_id)
            branch = f"maos/tasks/{self.run_id}/{task_id}" if spec is not None and spec.wants_worktree else ""
            sessions[task.agent_id] = AgentSession(session_id=task.session_id or "", branch=branch)
        return sessions

    async def _workspaces(self) -> Workspaces | None:
        """Worktree isolation when the run's directory is a git repository and a task wants it."""
        if self.workers_only or not any(task.wants_worktree for task in self.plan.tasks):
            return None
        repo = await repository_root(Path(self.config.workdir))
        if repo is None:
            return None
        spaces = Workspaces(repo, self.run_id)
        await spaces.start()
        log.info(
            "run %s: tasks work in worktrees; results merge into branch %s",
            self.run_id,
            spaces.integration_branch,
        )
        return spaces

    def _warm_pool(
        self, spaces: Workspaces | None, door: DoorEndpoint | None
    ) -> contextlib.AbstractAsyncContextManager[object]:
        """The warm pool's service for this run (``--warm``): its agents are reaped when it ends."""
        if self.workers_only:
            return contextlib.nullcontext()
        from maos.agents.pool import WarmPool, WarmRun

        pool = self.runtimes.get("claude-code")
        if not isinstance(pool, WarmPool):
            return contextlib.nullcontext()
        return pool.serving(
            WarmRun(
                run_id=self.run_id,
                store=self.store,
                workdir=Path(self.config.workdir),
                grace_s=self.config.grace_s,
                agents=self.agents,
                tasks=self.plan.tasks,
                role_of=lambda task, agent: self._roles().resolve(task.role, agent.role),
                workspaces=spaces,
                pass_env=self.config.pass_env,
                door=door,
            )
        )

    async def _load_history(self) -> scheduler.History:
        if self.options.history is None:
            try:
                self.options.history = await load_history(self.store)
            except MaosError as exc:
                log.warning("ignoring the recorded agent history: %s", exc)
                self.options.history = scheduler.History()
        return self.options.history

    async def _record_history(self) -> None:
        """Add this run's outcomes to the history matching uses; never fails the run."""
        try:
            await record_outcomes(self.store, self.state, counted=self._attempts)
        except MaosError as exc:
            log.warning("run %s: outcomes not recorded in the agent history: %s", self.run_id, exc)

    async def _drive(self) -> RunState:
        use_pidfd_child_watcher()
        make_state_dir(self.config.workdir)  # kept out of git: it holds the checkpoint key
        await self._load_history()
        spaces = await self._workspaces()
        door: DoorEndpoint | None = None
        host: contextlib.AbstractAsyncContextManager[object] = contextlib.nullcontext()
        dispatcher: Dispatcher
        if self.workers_only:  # the agents run in `maos worker` / `maos serve` processes
            dispatcher = QueueDispatcher(self.store, self.run_id, lease_s=self.lease_s)
        else:  # the agents run here
            from maos.health import MB
            from maos.mcp_http import DoorEndpoint
            from maos.worker import AgentHost

            door = DoorEndpoint() if self.door_transport == "http" else None
            local = AgentHost(
                self.store,
                self.runtimes,
                name=self.host_name,
                workspaces=spaces,
                memory_limit_bytes=int(self.config.memory_limit_mb * MB),
                anomaly_policy=self.config.on_anomaly,
                door=door,
            )
            host, dispatcher = local, LocalDispatcher(local, self.run_id)
        # The door's endpoint outlives every agent: the host and the pool reap theirs first.
        async with door or contextlib.nullcontext(), self._warm_pool(spaces, door), host:
            while not self.state.status.finished:
                await self._catch_up()
                if self._writing() or self.state.status.finished:
                    continue
                # CANCELLING here: a cancel the run's previous orchestrator did not finish.
                if self._cancel_requested or self.state.status is RunStatus.CANCELLING:
                    await self._cancel(dispatcher)
                    continue
                await self._step(dispatcher)
        # The run has finished (its log says so): what follows is tidying up, and a failure
        # in it (a full disk, a git error) is reported, not allowed to turn into a crash.
        try:
            report = await write_report(
                self.store,
                self.state,
                report_file(self.config.workdir, self.run_id),
                branch=spaces.integration_branch if spaces is not None else None,
            )
            log.info("run %s: report in %s", self.run_id, report)
        except (OSError, AgentError) as exc:
            log.warning("run %s: no REPORT.md: %s", self.run_id, describe_error(exc))
        if spaces is not None and self.state.status is RunStatus.SUCCEEDED:
            try:
                await spaces.remove()  # kept on failure, for inspection; `maos clean` removes them
                if not self.config.keep_branches:
                    # the work is on the integration branch: one branch per run is left
                    await spaces.delete_merged_branches()
            except (OSError, AgentError) as exc:
                log.warning("run %s: worktrees not removed: %s", self.run_id, describe_error(exc))
        await self._record_run()
        await self._record_history()
        try:
            await self.constraints.close()  # the shared resources' units it still holds
        except MaosError as exc:
            log.warning("run %s: shared resources not released (its lease frees them): %s", self.run_id, exc)
        log.info("run %s finished: %s", self.run_id, self.state.status.value)
        return self.state

    async def _hold_lease(self) -> None:
        """Become the one orchestrator of this run, or refuse naming the one that is."""
        name = self.lease.name
        if await self.lease.acquire():
            return
        holder = await self.store.holder(name)
        if holder is not None and dead_here(holder):
            # The previous orchestrator of this run died on this machine: no process is left
            # that could write under its lease (whatever lease time it used), so give it
            # back in its name instead of making the user wait for it to run out.
            log.warning("run %s: taking over the lease of dead %s", self.run_id, holder)
            if await self.lease.take_over(holder):
                return
        holder = await self.store.holder(name)
        raise RunLocked(
            f"run {self.run_id} is being driven by another orchestrator ({holder}); "
            f"wait for it to finish or stop it (its lease expires {self.lease_s:g}s after it dies)"
        )

    async def _record_run(self) -> None:
        """Update the run's entry in the run index (``maos runs``); the log stays the truth."""
        record = RunRecord(
            run_id=self.run_id,
            name=self.plan.name,
            tasks=len(self.plan.tasks),
            workdir=self.config.workdir,
            started_at=self.state.started_at or self.options.clock(),
            status=self.state.status,
            finished_at=self.state.finished_at,
            owner=self.owner,
            epoch=self.lease.epoch,
        )
        key = keys.run_record(self.run_id)
        while True:  # a compare-and-set that refuses to overwrite a newer owner's record
            current = await self.store.get(key)
            if current is not None and _record_epoch(current.value) > self.lease.epoch:
                self.lease.lose("a newer owner has written the run's record")
                raise LeaseLost(self.lease.lost_message())
            version = current.version if current is not None else 0
            if (await self.store.cas(key, version, record.model_dump_json().encode())).ok:
                return

    async def _catch_up(self) -> None:
        """Read the log; block only when there is nothing of ours to read back."""
        block_s: float | None
        if self._writing() or self._wake.is_set():
            block_s = None
        else:
            wakeup = scheduler.next_wakeup(self.state) if self._tracker.retry_waiting else None
            timed = self.constraints.wakeup(self.state, self.index)
            wakeup = timed if wakeup is None else wakeup if timed is None else min(wakeup, timed)
            block_s = (
                IDLE_POLL_S if wakeup is None else max(0.0, min(IDLE_POLL_S, wakeup - self.options.clock()))
            )
        self._wake.clear()
        for event_id, event in await self.events.read(self.state.last_event_id, count=5000, block_s=block_s):
            apply(self.state, event, event_id)
            self._tracker.observe(event, self.state)
            if not self.state.applied:
                rejections = self.state.rejections
                if rejections and rejections[-1].event_id == event_id:
                    log.warning(
                        "run %s: %s %s (%s): %s",
                        self.run_id,
                        "ignored late report" if rejections[-1].stale else "rejected event",
                        event_id,
                        event.type,
                        rejections[-1].reason,
                    )
            elif isinstance(event, TaskSucceeded | TaskFailed):
                self._observe_backend(event)
                self._stalls.observe(event, self.state)
                failed_for_good = self.state.tasks[event.task_id].state is TaskState.FAILED
                if isinstance(event, TaskFailed) and failed_for_good:
                    self._dead.append(event.task_id)
                elif isinstance(event, TaskFailed) and event.agent_id:
                    self._failed_on(event.task_id, event.agent_id)
            if event_id == self._pending.last_id:
                self._pending = _Pending()
            for hook in self.hooks:
                hook(event_id, event, self.state)

    def _replica_outvoted(self, task_id: str) -> bool:
        """A failed replica whose consensus succeeded without it does not fail the run."""
        parent = self.index.specs[task_id].replica_of
        return parent is not None and self.state.tasks[parent].state is TaskState.SUCCEEDED

    def _replica_weights(self, spec: TaskSpec) -> dict[str, float]:
        """Weighted consensus: each replica's vote counts its agent's historical success rate."""
        if spec.replicas <= 1 or spec.consensus != "weighted":
            return {}
        history = self.options.history or scheduler.History()
        weights: dict[str, float] = {}
        for replica in spec.depends_on:
            agent = self.state.agents.get(self.state.tasks[replica].agent_id or "")
            role = agent.role if agent is not None else spec.role
            weights[replica] = history.success_rate(role, spec.task_kind)
        return weights

    def _roles(self) -> RoleCatalog:
        """Agent roles from the project's and the user's ``.claude/agents`` (read once)."""
        if self._role_catalog is None:
            self._role_catalog = load_roles(Path(self.config.workdir))
            for problem in self._role_catalog.problems:
                log.warning("agent definition skipped: %s", problem)
        return self._role_catalog

    def _writing(self) -> bool:
        """Events of ours are in the log but not yet read back: no decisions until they are."""
        return self._pending.last_id is not None

    async def _write(self, event: Event) -> None:
        event_id = await self.events.append(event)
        self._pending.last_id = event_id
        self._pending.written += 1

    async def _write_all(self, events: Sequence[Event]) -> None:
        """``_write`` each of ``events``, in one transaction: one round trip for a step's
        decisions (the tasks a completion made ready, a batch of assignments)."""
        for start in range(0, len(events), WRITE_BATCH):
            ids = await self.events.append_all(events[start : start + WRITE_BATCH])
            self._pending.last_id = ids[-1]
            self._pending.written += len(ids)

    async def _step(self, dispatcher: Dispatcher) -> None:
        state = self.state
        tracker = self._tracker
        now = self.options.clock()
        if tracker.plan_changed and state.plan is not None:
            self.index = scheduler.PlanIndex.build(state.plan)
            tracker.plan_changed = False
        if tracker.add_requests:
            await self._answer_add_requests(now)
            return
        if self._dead:
            await self._dead_letter()
        if tracker.busy and now >= self._next_reclaim:
            self._next_reclaim = now + self.lease_s / 3
            for failure in await dispatcher.lost(state):
                await self._write(failure)
            if self._writing():
                return
        if self._drain_requested and state.status is RunStatus.RUNNING:
            await self._write(RunDraining(reason="drain requested (Ctrl-C): no new tasks start"))
            return
        limit = self.config.max_cost_usd
        if limit is not None and tracker.cost_usd >= limit and state.status is RunStatus.RUNNING:
            reason = f"budget reached: ${tracker.cost_usd:.4f} spent of --max-cost-usd ${limit:.4f}"
            log.warning("run %s: %s; on-budget %s", self.run_id, reason, self.config.on_budget)
            await self._write(RunDraining(reason=reason))
            if self.config.on_budget == "stop":
                self.request_cancel()
            return
        changed = tracker.take_changed()
        decided: list[Event] = [
            TaskSkipped(task_id=skip.task_id, because=skip.because)
            for skip in scheduler.to_skip(state, self.index, changed)
        ]
        for task_id in sorted(tracker.needs_backoff, key=self.index.order.__getitem__):
            delay = self._backoff(state.tasks[task_id].attempts)
            decided.append(TaskRetried(task_id=task_id, retry_at=now + delay, delay_s=delay))
        await self._write_all(decided)
        if self._writing():
            tracker.restore(changed)  # decide on them once the skips have landed
            return
        await self.constraints.before_ready(state, self.index, dispatcher, now)  # deadlines
        if self._writing():
            tracker.restore(changed)
            return
        ready_now = scheduler.newly_ready(state, self.index, changed)
        # not_before, after
        ready: list[Event] = [
            TaskReady(task_id=task_id)
            for task_id in self.constraints.split_ready(state, self.index, ready_now, now)
        ]
        if tracker.retry_waiting:
            ready += [TaskReady(task_id=task_id) for task_id in scheduler.retry_due(state, self.index, now)]
        await self._write_all(ready)
        for news in self._stalls.take_news():
            await self._write(news)
        if self._writing():
            return
        if state.status is RunStatus.RUNNING and (tracker.ready or state.waits):
            free_agents = len(self.agents) - len(set(tracker.busy.values()))
            deadlocked = await self.constraints.deadlocks(
                state, self.index, dispatcher, free_agents=free_agents, now=now
            )
            if deadlocked is not None:
                await self._fail_run(dispatcher, deadlocked)
                return
            if self._writing():
                return
        if state.status is RunStatus.RUNNING and tracker.ready:
            await self._assign(dispatcher)
        if not self._writing() and state.status is RunStatus.RUNNING and tracker.ready:
            for stall in self._stalls.check(state, self.index, tracker.ready, self.agents, now):
                await self._write(stall)
        if not self._writing():
            await self._maybe_finish(dispatcher)

    async def _answer_add_requests(self, now: float) -> None:
        """Decide on agents' requests for new tasks (see ``maos.dynamic``)."""
        for request in list(self._tracker.add_requests):
            if self.state.status is not RunStatus.RUNNING:
                answer: Event = TaskAddRefused(
                    request_id=request.request_id,
                    reason=f"the run is {self.state.status.value}: no new tasks",
                )
            else:
                recent = self._recent_adds.setdefault(request.agent_id, deque())
                if self._in_repository is None:  # asked once, at the run's first request
                    self._in_repository = await repository_root(Path(self.config.workdir)) is not None
                try:
                    decision = decide_addition(
                        self.state, request, recent_adds=recent, now=now, worktrees=self._in_repository
                    )
                except Exception as exc:  # an agent's request must never stop the run
                    decision = f"the request could not be checked: {describe_error(exc)}"
                if isinstance(decision, str):
                    log.info("run %s: refused task from %s: %s", self.run_id, request.agent_id, decision)
                    answer = TaskAddRefused(request_id=request.request_id, reason=decision)
                else:
                    recent.append(now)
                    answer = TaskAdded(request_id=request.request_id, task=decision, blocks=request.blocks)
            await self._write(answer)

    def _observe_backend(self, event: TaskSucceeded | TaskFailed) -> None:
        spec = self.index.specs.get(event.task_id)
        if spec is None:
            return
        breaker = self._breakers.setdefault(
            spec.runtime,
            CircuitBreaker(
                threshold=self.config.circuit_threshold, cooldown_s=self.config.circuit_cooldown_s
            ),
        )
        api_error = isinstance(event, TaskFailed) and event.reason.startswith("model API error")
        changed = breaker.record(
            ok=isinstance(event, TaskSucceeded), api_error=api_error, now=self.options.clock()
        )
        if changed is not None:
            why = (
                f"{breaker.failures} consecutive model API failures; "
                f"no {spec.runtime} task starts until a probe passes"
                if changed is Circuit.OPEN
                else "an attempt succeeded: the model API answers again"
            )
            self._circuit_news.append(CircuitChanged(runtime=spec.runtime, state=changed.value, reason=why))

    def _failed_on(self, task_id: str, agent_id: str) -> None:
        """After two failures of a task on one agent, its retries go to another agent (when
        the run has one)."""
        counts = self._failures_by_agent.setdefault(task_id, {})
        counts[agent_id] = counts.get(agent_id, 0) + 1
        if counts[agent_id] >= 2:
            avoided = self._avoid.setdefault(task_id, set())
            spec = self.index.specs[task_id]
            able = able_agents(spec.capabilities, spec.runtime, self.agents, self.state.lost_agents)
            if len([agent for agent in able if agent.id not in avoided]) > 1:  # another one may take it
                avoided.add(agent_id)

    def _startable(self, now: float) -> scheduler.ReadyQueue | set[str]:
        """READY tasks whose backend's circuit breaker lets them start."""
        held = {runtime for runtime, breaker in self._breakers.items() if not breaker.allows(now)}
        if not held:  # the usual case: no pass over every ready task at every step
            if self._queue.index is not self.index:  # the plan changed: places may too
                self._queue = scheduler.ReadyQueue(self.index)
            self._queue.sync(self._tracker.ready, self.state)
            return self._queue
        specs = self.index.specs
        return {task_id for task_id in self._tracker.ready if specs[task_id].runtime not in held}

    async def _dead_letter(self) -> None:
        """A task that exhausted its attempts leaves a record in the run's dead-letter stream."""
        for task_id in self._dead:
            task = self.state.tasks[task_id]
            record = {
                "task_id": task_id,
                "attempts": task.attempts,
                "reason": task.reason,
                "exit_code": task.exit_code,
                "stderr_tail": task.stderr_tail,
                "ts": task.finished_at,
            }
            await self.store.append(keys.dead_tasks(self.run_id), json.dumps(record).encode())
        self._dead.clear()

    async def _assign(self, dispatcher: Dispatcher) -> None:
        state = self.state
        for news in self._circuit_news:
            log.warning("run %s: %s circuit %s: %s", self.run_id, news.runtime, news.state, news.reason)
            await self._write(news)
        self._circuit_news.clear()
        busy = set(self._tracker.busy.values())
        limit = self.config.agents - len(busy)
        free = [agent for agent in self.agents if agent.id not in busy and agent.id not in state.lost_agents]
        if not free or limit <= 0:
            return
        tracker = self._tracker
        free_resources = await self.constraints.free_resources(state, self.index, self.options.clock())
        assigned: list[str] = []
        placed: list[tuple[TaskSpec, AgentSpec, TaskAssigned]] = []
        for choice in scheduler.decide(
            state,
            self.index,
            free,
            self.options.history or scheduler.History(),
            limit=limit,
            load=tracker.load,
            ready=self._startable(self.options.clock()),
            avoid=self._avoid,
            free_resources=free_resources,
        ):
            spec = self.index.specs[choice.task_id]
            breaker = self._breakers.get(spec.runtime)
            if breaker is not None:
                if not breaker.allows(self.options.clock()):
                    continue  # the half-open breaker's one probe went to an earlier task
                breaker.started()
            agent = next(agent for agent in free if agent.id == choice.agent_id)
            if not await self.constraints.admit(spec, choice.attempt):
                continue  # another run took the shared resource first
            assigned.append(choice.task_id)
            decision = TaskAssigned(
                task_id=choice.task_id,
                agent_id=choice.agent_id,
                attempt=choice.attempt,
                score=choice.score,
                epoch=self.lease.epoch,
                fitness=_scores(choice),
            )
            placed.append((spec, agent, decision))
        # One transaction for the step's assignments; each is dispatched once it is in the log.
        await self._write_all([decision for _, _, decision in placed])
        for spec, agent, decision in placed:
            try:
                assignment = self._assignment(spec, agent, decision.attempt)
                await dispatcher.dispatch(assignment)
            except StoreError:
                raise  # the store is gone: that is the run's problem, not this task's
            except Exception as exc:  # fault isolation: one task's problem is not the run's
                await self._write(self._not_dispatched(spec, agent, decision.attempt, exc))
        await self.constraints.log_waits(state, self.index, free_resources, assigned)

    async def _fail_run(self, dispatcher: Dispatcher, summary: str) -> None:
        """Stop the run as failed (``--on-deadlock fail``): its agents are stopped, the tasks
        not finished are cancelled, and ``summary`` says why."""
        await dispatcher.cancel()
        await dispatcher.wait_idle(self.config.grace_s + self.lease_s)
        await self._catch_up()
        for task_id, task in self.state.tasks.items():
            if not task.state.terminal:
                await self._write(TaskCancelled(task_id=task_id, reason=f"run stopped: {summary}"[:500]))
        failed = failure_summary(self.state)
        summary += f"\n{failed}" if failed else ""
        await self._write(RunFinished(status=RunStatus.FAILED, summary=summary))

    def _assignment(self, spec: TaskSpec, agent: AgentSpec, attempt: int) -> Assignment:
        resume = self._resume_sessions.pop(spec.id, None)
        return Assignment(
            run_id=self.run_id,
            task=spec,
            agent=agent,
            attempt=attempt,
            inputs={dep: self.state.tasks[dep].output_path for dep in spec.depends_on},
            workdir=self.config.workdir,
            grace_s=self.config.grace_s,
            role=self._roles().resolve(spec.role, agent.role) if spec.runtime != "command" else None,
            replica_weights=self._replica_weights(spec),
            resume_session=resume[0] if resume else None,
            resume_agent=resume[1] if resume else None,
            pass_env=self.config.pass_env,
            epoch=self.lease.epoch,
        )

    def _not_dispatched(self, spec: TaskSpec, agent: AgentSpec, attempt: int, exc: Exception) -> TaskFailed:
        reason = f"MAOS could not hand this attempt to an agent: {describe_error(exc)}"
        log.warning("run %s: task %s attempt %d: %s", self.run_id, spec.id, attempt, reason)
        return TaskFailed(task_id=spec.id, agent_id=agent.id, attempt=attempt, reason=reason, duration_s=0.0)

    async def _maybe_finish(self, dispatcher: Dispatcher) -> None:
        state = self.state
        tracker = self._tracker
        if state.status is RunStatus.DRAINING:
            if tracker.busy:
                return
            left = [task_id for task_id, task in state.tasks.items() if not task.state.terminal]
            # with those a previous orchestrator of the run cancelled before it died
            before = sum(1 for task in state.tasks.values() if task.state is TaskState.CANCELLED)
            for task_id in left:
                await self._write(TaskCancelled(task_id=task_id, reason="run drained before it ran"))
            why = state.drain_reason or "drained"
            failed = failure_summary(state)
            await self._write(
                RunFinished(
                    status=RunStatus.CANCELLED,
                    summary=f"{why}: {len(left) + before} task(s) did not run"
                    + (f"\n{failed}" if failed else ""),
                )
            )
            return
        if tracker.terminal == len(state.tasks):
            await dispatcher.wait_idle(self.config.grace_s)
            excused = self.constraints.excused(state, self.index)  # skipped by a deadline
            ok = all(
                task.state is TaskState.SUCCEEDED or self._replica_outvoted(task_id) or task_id in excused
                for task_id, task in state.tasks.items()
            )
            status = RunStatus.SUCCEEDED if ok else RunStatus.FAILED
            summary = self._stalls.summary(failure_summary(state))  # a stall's diagnosis first
            await self._write(RunFinished(status=status, summary=summary))
            return
        if tracker.busy or tracker.ready or tracker.retry_waiting or self.constraints.waiting():
            return
        # Unfinished tasks, nothing running, nothing runnable: say why instead of hanging.
        stuck = scheduler.unrunnable(state, self.index, self.agents)
        if stuck:
            diagnosis = "; ".join(f"task {item.task_id!r}: {item.reason}" for item in stuck[:20])
        else:
            waiting = [task_id for task_id, task in state.tasks.items() if task.state is TaskState.PENDING]
            diagnosis = f"tasks waiting on dependencies that cannot finish: {', '.join(waiting[:20])}"
        await self._write(RunFinished(status=RunStatus.FAILED, summary=f"stalled: {diagnosis}"))

    async def _cancel(self, dispatcher: Dispatcher) -> None:
        if self.state.status is not RunStatus.CANCELLING:
            await self._write(RunCancelling(reason="cancel requested"))
        await dispatcher.cancel()
        await dispatcher.wait_idle(self.config.grace_s + self.lease_s)
        await self._catch_up()
        # Tasks a previous orchestrator of the run cancelled before it died count too.
        before = sum(1 for task in self.state.tasks.values() if task.state is TaskState.CANCELLED)
        stopped = waiting = 0
        for task_id, task in self.state.tasks.items():
            if not task.state.terminal:
                running = task.state in (TaskState.ASSIGNED, TaskState.RUNNING)
                stopped, waiting = stopped + running, waiting + (not running)
                reason = "run cancelled: its agent was stopped" if running else "run cancelled before it ran"
                await self._write(TaskCancelled(task_id=task_id, reason=reason))
        why = self.state.drain_reason
        summary = f"{why}; cancelled" if why else "cancelled"
        failed = failure_summary(self.state)  # what had failed before the cancel
        await self._write(
            RunFinished(
                status=RunStatus.CANCELLED,
                summary=f"{summary}: {stopped + waiting + before} task(s) did not finish "
                f"({stopped} stopped while running, {waiting} not started"
                + (f", {before} cancelled by the run's previous orchestrator" if before else "")
                + ")"
                + (f"\n{failed}" if failed else ""),
            )
        )

    def _backoff(self, attempts: int) -> float:
        """Exponential backoff with jitter: base·2^(n-1), capped, times a factor in [0.5, 1]."""
        config = self.config
        delay = min(config.retry_max_s, config.retry_base_s * 2.0 ** max(0, attempts - 1))
        return delay * (0.5 + 0.5 * self.options.rng.random())
