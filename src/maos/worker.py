"""Workers: host agent processes and report what they do as events in the run's log.

- ``AgentHost`` runs attempts in this process's event loop (one agent process each, through
  the task's runtime), streams their output into the run's event log and appends each
  attempt's outcome under ``asyncio.shield``, so that a cancellation arriving at the wrong
  moment cannot lose a result that already exists. The orchestrator uses one directly for
  local runs.
- ``StoreWorker`` is ``maos worker``: it registers under a lease, heartbeats, takes
  assignments from the store's work queue (a consumer group), runs them on its own
  ``AgentHost`` and acknowledges each once its outcome is in the log. SIGTERM drains: running
  attempts finish, no new ones are taken, then it leaves. With a warm pool as its
  ``claude-code`` runtime (``maos worker --warm N``, ``maos serve``) it keeps N Claude agents
  warm for its whole life, across runs (``WarmPool.lasting``, ADR 0017), and says so in the
  store (``keys.warm_agents``) while it lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from maos.agents.environment import pass_through
from maos.agents.guard import ensure_guard
from maos.agents.pool import WarmHome, WarmPool
from maos.agents.process import raise_open_files_limit
from maos.agents.roles import role_grants
from maos.agents.runtime import AgentJob, AgentResult, AgentRuntime, OutputStream
from maos.agents.task_env import agent_path, agent_store_url, attempt_env, identity_env, task_env
from maos.agents.workspace import Workspaces
from maos.context import parents_context
from maos.dispatch import attempt_stops
from maos.door_transport import pick_door_transport
from maos.errors import LeaseLost, NoSuchGroup, StoreError, describe_error
from maos.eventlog import EventLog
from maos.events import (
    AgentAnomaly,
    AgentApiRetry,
    AgentOutput,
    AgentStats,
    ConsensusDecided,
    ConsensusVote,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
    TaskWarning,
)
from maos.filemodes import private_dir, write_private
from maos.health import MB, AgentMonitor, Policy, Watched
from maos.mcp_http import DoorEndpoint
from maos.model import Assignment
from maos.numbers import MAX_FLOAT
from maos.paths import input_file, lasting_warm_dir, outputs_dir, prompts_dir
from maos.permissions import resolve
from maos.sanitize import storable
from maos.security import data_key_env, ensure_run_secret, issue_task_token, issue_token
from maos.store import keys
from maos.store.base import Entry, Store, connect_url
from maos.store.lease import EpochFence, Fenced, Lease, cut_off

log = logging.getLogger("maos.worker")

T = TypeVar("T")

MAX_LOGGED_LINES = 500
"""Output lines per attempt copied into the event log; the rest stays in the output files."""
MAX_LINE_CHARS = 2000
MAX_PUBLISHED_OUTPUT_BYTES = 1 << 20
"""Largest task output a worker publishes to the store for workers on other machines."""
_MAX_REMEMBERED = 4096
"""Entries an agent host keeps of what it worked out per run (folders, agent tokens)."""
LOST_DELIVERY_S = 5.0
"""How often a worker looks for assignments the store delivered to it whose reply never
arrived (a Redis that crashed or a connection cut after XREADGROUP ran), and how long such
an entry must have been pending before it is taken up again."""


async def _shielded(work: Awaitable[T]) -> T:
    """``asyncio.shield`` whose inner task's outcome is always retrieved: when the caller is
    cancelled the work goes on, and if it then fails (the store is gone) the error is logged
    once here instead of as asyncio's "Task exception was never retrieved" traceback."""
    inner = asyncio.ensure_future(work)
    inner.add_done_callback(_retrieve)
    return await asyncio.shield(inner)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.debug("shielded work failed after its caller was gone: %s", describe_error(exc))


class _EventReporter:
    def __init__(self, events: EventLog, job: AgentJob, worker: str, health: _Health | None = None) -> None:
        self._events = events
        self._job = job
        self._worker = worker
        self._health = health
        self._lines = 0

    async def started(self, pid: int, session_id: str | None = None) -> None:
        job = self._job
        await self._events.append(
            TaskStarted(
                task_id=job.task.id,
                agent_id=job.agent.id,
                attempt=job.attempt,
                pid=pid,
                worker=self._worker,
                session_id=session_id,
            )
        )
        if self._health is not None:
            self._health.started(pid)

    async def warning(self, text: str) -> None:
        job = self._job
        await self._events.append(
            TaskWarning(task_id=job.task.id, agent_id=job.agent.id, attempt=job.attempt, text=text)
        )

    async def api_retry(
        self,
        api_attempt: int,
        *,
        error_status: int | None,
        error: str,
        retry_delay_ms: float | None,
        max_retries: int | None,
    ) -> None:
        job = self._job
        await self._events.append(
            AgentApiRetry(
                task_id=job.task.id,
                agent_id=job.agent.id,
                attempt=job.attempt,
                api_attempt=api_attempt,
                max_retries=max_retries,
                error_status=error_status,
                error=error,
                # The CLI's number: one that is no delay (NaN, negative) is left out.
                retry_delay_ms=retry_delay_ms
                if retry_delay_ms is not None and 0 <= retry_delay_ms <= MAX_FLOAT
                else None,
            )
        )

    async def vote(self, replica: str, answer_digest: str, weight: float, score: float | None) -> None:
        job = self._job
        await self._events.append(
            ConsensusVote(
                task_id=job.task.id,
                attempt=job.attempt,
                replica=replica,
                answer=answer_digest,
                weight=weight,
                score=score,
            )
        )

    async def decided(self, strategy: str, winner: str, tally: dict[str, float]) -> None:
        job = self._job
        await self._events.append(
            ConsensusDecided(
                task_id=job.task.id, attempt=job.attempt, strategy=strategy, winner=winner, tally=tally
            )
        )

    async def output(self, stream: OutputStream, text: str) -> None:
        if self._health is not None:
            self._health.touched()
        self._lines += 1
        if self._lines > MAX_LOGGED_LINES:
            if self._lines != MAX_LOGGED_LINES + 1:
                return
            text = f"[maos] more than {MAX_LOGGED_LINES} lines: the rest is in the output files"
            stream = "stderr"
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + f" [maos: line truncated at {MAX_LINE_CHARS} characters]"
        text = storable(text)  # JSON-encodable whatever the agent printed (NULs are escaped)
        job = self._job
        await self._events.append(
            AgentOutput(task_id=job.task.id, agent_id=job.agent.id, stream=stream, text=text)
        )


@dataclass
class _Health:
    """Connects one running attempt to the host's ``AgentMonitor``."""

    monitor: AgentMonitor
    key: str
    job: AgentJob
    stop: Callable[[str], None]

    def started(self, pid: int) -> None:
        job = self.job
        self.monitor.watch(
            self.key,
            Watched(
                run_id=job.run_id,
                task_id=job.task.id,
                agent_id=job.agent.id,
                attempt=job.attempt,
                pid=pid,
                idle_timeout_s=job.task.idle_timeout_s,
                stop=self.stop,
            ),
        )

    def touched(self) -> None:
        self.monitor.touched(self.key)


class AgentHost:
    """Runs attempts of any run in this process. Use as ``async with``."""

    def __init__(
        self,
        store: Store,
        runtimes: Mapping[str, AgentRuntime],
        *,
        name: str = "local",
        publish_outputs: bool = False,
        workspaces: Workspaces | None = None,
        memory_limit_bytes: int = 500 * MB,
        anomaly_policy: Policy = "warn",
        door: DoorEndpoint | None = None,
    ) -> None:
        self._store = store
        self._door = door  # how its Claude agents reach the door (None: `maos mcp` each)
        self.monitor = AgentMonitor(
            self._report, memory_limit_bytes=memory_limit_bytes, policy=anomaly_policy
        )
        self._monitor_task: asyncio.Task[None] | None = None
        self._stop_reasons: dict[str, str] = {}  # attempt key -> why the host stopped it
        self.workspaces = workspaces
        self._runtimes = runtimes
        self.name = name
        self._publish_outputs = publish_outputs
        self._group = asyncio.TaskGroup()
        self._running: dict[str, asyncio.Task[None]] = {}  # attempt key -> its task
        self._runs: dict[str, str] = {}  # attempt key -> run id
        self._epochs: dict[str, int] = {}  # attempt key -> the epoch it was assigned under
        self._logs: dict[str, EventLog] = {}  # attempt key -> where its reports go
        self._abandoning = False
        # attempts stopped because the host left on an error (its worker was cut off from the
        # store), with their queue acknowledgement: report_abandoned() tells their runs
        self.abandoned: list[tuple[Assignment, Callable[[], Awaitable[None]] | None]] = []
        self._run_secrets: dict[str, bytes] = {}  # run id -> secret of its agent tokens
        self._data_keys: dict[str, dict[str, str]] = {}  # run id -> its data_key_env (a key file read)
        # Worked out once, not at every attempt (each was a visible part of a hand-off):
        self._agent_tokens: dict[tuple[str, str], str] = {}  # (run id, agent id) -> its door token
        self._folders: dict[tuple[str, str], tuple[Path, Path]] = {}  # (workdir, run) -> outputs, prompts
        self._agent_store_url: str | None = None

    async def __aenter__(self) -> AgentHost:
        raise_open_files_limit()  # a thousand agents need ~5,000 descriptors
        await self._group.__aenter__()
        self._monitor_task = self._group.create_task(self.monitor.run(), name="maos-agent-monitor")
        return self

    async def _report(self, run_id: str, event: AgentStats | AgentAnomaly) -> None:
        """A health sample or anomaly of a running attempt, written like its other reports
        (under its assignment's epoch); dropped once the attempt is over or no longer counts."""
        events = self._logs.get(f"{run_id}/{event.task_id}:{event.attempt}")
        if events is None:
            return
        with contextlib.suppress(LeaseLost):
            await events.append(event)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self._abandoning = True  # the attempts stopped now are reported by report_abandoned()
            self.cancel()
        if self._monitor_task is not None:
            await self.wait_idle()
            self._monitor_task.cancel()
        await self._group.__aexit__(exc_type, exc, tb)

    @property
    def running(self) -> int:
        return len(self._running)

    def submit(self, assignment: Assignment, on_done: Callable[[], Awaitable[None]] | None = None) -> None:
        """Start the attempt now; its events reach the run's log as they happen."""
        key = f"{assignment.run_id}/{assignment.key}"
        self._runs[key] = assignment.run_id
        self._epochs[key] = assignment.epoch
        self._running[key] = self._group.create_task(
            self._run(key, assignment, on_done), name=f"maos-task-{assignment.key}"
        )

    def cancel(self, run_id: str | None = None) -> None:
        """Stop running attempts (of one run, or all): their processes are reaped."""
        for key, running in self._running.items():
            if run_id is None or self._runs.get(key) == run_id:
                running.cancel()

    def run_ids(self) -> set[str]:
        return set(self._runs.values())

    def supersede(self, run_id: str, epoch: int) -> int:
        """Stop the attempts of ``run_id`` assigned under an epoch before ``epoch``: a newer
        orchestrator owns the run and has queued them again. Returns how many were stopped."""
        stale = [
            key for key, run in self._runs.items() if run == run_id and 0 < self._epochs.get(key, 0) < epoch
        ]
        for key in stale:
            self._stop(key, f"superseded: the run has a new orchestrator (epoch {epoch})")
        return len(stale)

    def stop(self, run_id: str, key: str, reason: str) -> bool:
        """Stop one attempt (``task:attempt``) of ``run_id`` if it runs here; its agent is
        reaped and its outcome reported if it still counts. True if it was running here."""
        host_key = f"{run_id}/{key}"
        if self._runs.get(host_key) != run_id:
            return False
        self._stop(host_key, reason)
        return True

    def _stop(self, key: str, reason: str) -> None:
        """Stop one attempt with ``reason`` (its outcome is reported, if it still counts)."""
        running = self._running.get(key)
        if running is not None and key not in self._stop_reasons:
            self._stop_reasons[key] = reason
            running.cancel()

    async def wait_idle(self) -> None:
        """Wait until every started attempt has ended (been reaped)."""
        while self._running:
            await asyncio.wait(list(self._running.values()))

    async def _inputs(self, assignment: Assignment) -> dict[str, str]:
        """Parent outputs as local files: the orchestrator's paths when they exist here,
        else the copy the parent's worker published to the store."""
        local: dict[str, str] = {}
        for parent, path in assignment.inputs.items():
            if not path:  # a parent that printed nothing has no output file anywhere
                local[parent] = os.devnull
                continue
            if Path(path).exists():
                local[parent] = path
                continue
            found = await self._store.get(keys.task_output(assignment.run_id, parent))
            target = input_file(assignment.workdir, assignment.run_id, parent)
            private_dir(target.parent)
            write_private(target, found.value if found is not None else b"")
            local[parent] = str(target)
        return local

    async def _job(self, assignment: Assignment) -> AgentJob:
        task = assignment.task
        outputs, prompts = self._run_folders(assignment.workdir, assignment.run_id)
        # The run folder and its files: 0700/0600 (made again if something removed it).
        output_dir = private_dir(outputs)
        inputs = await self._inputs(assignment) if assignment.inputs else {}
        cwd = Path(assignment.workdir)
        if self._isolated(assignment) and self.workspaces is not None:
            # A resumed session continues in the files it left: keep its worktree.
            cwd = await self.workspaces.prepare(
                task.id, assignment.attempt, keep=assignment.resume_session is not None
            )
        path = agent_path(os.environ.get("PATH"))  # so that agent scripts find `maos`
        if task.runtime == "claude-code" and inputs:
            task = task.model_copy(
                update={"prompt": task.prompt + await parents_context(self._store, assignment.run_id, inputs)}
            )
        return AgentJob(
            run_id=assignment.run_id,
            task=task,
            agent=assignment.agent,
            attempt=assignment.attempt,
            cwd=cwd,
            env={
                # Named by --pass-env or the task's pass_env; the rest of our environment is
                # not the agent's (maos.agents.environment).
                **pass_through((*assignment.pass_env, *task.pass_env)),
                **({"PATH": path} if path is not None else {}),
                # MAOS_TASK / MAOS_PROMPT_FILE, MAOS_INPUTS / MAOS_INPUTS_FILE: bounded for execve.
                **task_env(
                    prompts,
                    task.id,
                    assignment.attempt,
                    task.prompt,
                    inputs,
                    command=task.runtime == "command",
                ),
                **identity_env(
                    run_id=assignment.run_id,
                    agent_id=assignment.agent.id,
                    store_url=self._store_url(),
                    agent_token=await self._agent_token(assignment.run_id, assignment.agent.id),
                ),
                **attempt_env(
                    task_id=task.id, attempt=assignment.attempt, task_token=await self._task_token(assignment)
                ),
                **self._data_key_env(assignment.run_id),  # values at rest (maos.security)
            },
            output_dir=output_dir,
            grace_s=assignment.grace_s,
            role=assignment.role,
            replica_weights=assignment.replica_weights,
            door=self._door,
            resume_session=assignment.resume_session,
            resume_agent=assignment.resume_agent,
        )

    def _run_folders(self, workdir: str, run_id: str) -> tuple[Path, Path]:
        """The run's ``outputs_dir`` and ``prompts_dir`` under ``workdir``."""
        found = self._folders.get((workdir, run_id))
        if found is None:
            found = (outputs_dir(workdir, run_id), prompts_dir(workdir, run_id))
            if len(self._folders) >= _MAX_REMEMBERED:  # a worker that served many runs
                self._folders.clear()
            self._folders[workdir, run_id] = found
        return found

    def _store_url(self) -> str:
        """The store's URL as its agents get it (``MAOS_STORE``)."""
        if self._agent_store_url is None:
            self._agent_store_url = agent_store_url(connect_url(self._store))
        return self._agent_store_url

    def _data_key_env(self, run_id: str) -> dict[str, str]:
        """The run's ``data_key_env``, read once per run (it reads the key file)."""
        found = self._data_keys.get(run_id)
        if found is None:
            found = self._data_keys[run_id] = data_key_env(self._store.url, run_id)
        return found

    async def _run_secret(self, run_id: str) -> bytes:
        """The run's token secret: created on first use, then cached."""
        secret = self._run_secrets.get(run_id)
        if secret is None:
            secret = self._run_secrets[run_id] = await ensure_run_secret(self._store, run_id)
        return secret

    async def _agent_token(self, run_id: str, agent_id: str) -> str:
        """The agent's door token (the same for all its attempts in the run)."""
        found = self._agent_tokens.get((run_id, agent_id))
        if found is None:
            found = issue_token(await self._run_secret(run_id), run_id, agent_id)
            if len(self._agent_tokens) >= _MAX_REMEMBERED:
                self._agent_tokens.clear()
            self._agent_tokens[run_id, agent_id] = found
        return found

    async def _task_token(self, assignment: Assignment) -> str:
        """The token binding the agent to this attempt of its task, with the grants of the
        task's role (task, then role file, then defaults: ``maos.permissions``)."""
        secret = await self._run_secret(assignment.run_id)
        grants = resolve(assignment.task.grants, role_grants(assignment.role))
        return issue_task_token(
            secret,
            assignment.run_id,
            assignment.agent.id,
            assignment.task.id,
            assignment.attempt,
            grants.as_dict(),
        )

    def _isolated(self, assignment: Assignment) -> bool:
        return (
            self.workspaces is not None
            and assignment.run_id == self.workspaces.run_id
            and assignment.task.wants_worktree
        )

    async def _merge(self, assignment: Assignment, result: AgentResult) -> AgentResult:
        """Commit and merge an isolated task's work; a conflict fails the attempt."""
        if not result.ok or not self._isolated(assignment) or self.workspaces is None:
            return result
        task = assignment.task
        merged = await self.workspaces.finish(
            task.id, f"maos: {task.id} (attempt {assignment.attempt})\n\n{task.title}"
        )
        if merged.ok:
            return result
        branch = self.workspaces.branch(task.id)
        return AgentResult(
            ok=False,
            duration_s=result.duration_s,
            reason=f"merge conflict in {', '.join(merged.conflicts)} (the work stays on branch {branch})",
            usage=result.usage,
        )

    async def _execute(self, key: str, job: AgentJob, events: EventLog) -> AgentResult:
        """Run the attempt; the health monitor may stop it early with a reason."""
        attempt = asyncio.current_task()
        health = _Health(self.monitor, key, job, lambda reason: self._stop(key, reason))
        started = time.monotonic()
        try:
            return await self._call_runtime(job, _EventReporter(events, job, self.name, health))
        except asyncio.CancelledError:
            reason = self._stop_reasons.pop(key, None)
            if reason is None or attempt is None or attempt.uncancel() > 0:
                raise  # a real cancellation (run cancelled, host shutting down)
            final = self.monitor.policy == "fail"
            return AgentResult(ok=False, duration_s=time.monotonic() - started, reason=reason, final=final)
        finally:
            self.monitor.unwatch(key)
            if self._door is not None:
                self._door.release(job.env)  # the agent's door token is refused from now on

    async def _call_runtime(self, job: AgentJob, reporter: _EventReporter) -> AgentResult:
        runtime = self._runtimes.get(job.task.runtime)
        if runtime is None:
            return AgentResult(
                ok=False,
                duration_s=0.0,
                reason=f"no {job.task.runtime!r} runtime on worker {self.name} "
                f"(has: {', '.join(self._runtimes)})",
            )
        return await runtime.run(job, reporter)

    async def _run(
        self, key: str, assignment: Assignment, on_done: Callable[[], Awaitable[None]] | None
    ) -> None:
        events = self._logs[key] = self._events(key, assignment)
        task = assignment.task
        try:
            try:
                outcome: TaskSucceeded | TaskFailed | None = await self._attempt(key, assignment, events)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if self._stop_reasons.pop(key, None) is None or current is None or current.uncancel() > 0:
                    if self._abandoning:
                        self.abandoned.append((assignment, on_done))
                    raise
                outcome = None  # stopped before its agent started: nothing to report
            if outcome is not None:
                log.info(
                    "task %s attempt %d on %s/%s: %s in %.3fs",
                    task.id,
                    assignment.attempt,
                    self.name,
                    assignment.agent.id,
                    "ok" if isinstance(outcome, TaskSucceeded) else outcome.reason,
                    outcome.duration_s,
                )
                try:
                    await _shielded(events.append(outcome))
                except LeaseLost as exc:
                    log.warning(
                        "task %s attempt %d: outcome not reported, the attempt no longer counts (%s)",
                        task.id,
                        assignment.attempt,
                        describe_error(exc),
                    )
            if on_done is not None:
                await _shielded(on_done())
        finally:
            self._running.pop(key, None)
            self._runs.pop(key, None)
            self._epochs.pop(key, None)
            self._logs.pop(key, None)
            self._stop_reasons.pop(key, None)

    async def report_abandoned(self, why: str) -> int:
        """Report each attempt stopped when this host left on an error as failed (``why``),
        under its assignment's epoch, and acknowledge its queue entry, so that its run
        retries it. A report that no longer counts (the run moved on) is dropped."""
        reported = 0
        for assignment, on_done in self.abandoned:
            failed = TaskFailed(
                task_id=assignment.task.id,
                agent_id=assignment.agent.id,
                attempt=assignment.attempt,
                reason=f"lost: {why}; its agent was stopped",
            )
            try:
                await self._events(f"abandoned/{assignment.key}", assignment).append(failed)
                reported += 1
            except LeaseLost:
                pass  # the run has a newer owner, who queued it again
            except StoreError as exc:  # cut off again: its run declares it lost by the lease
                log.warning("task %s attempt %d not reported: %s", failed.task_id, failed.attempt, exc)
                continue
            if on_done is not None:
                with contextlib.suppress(StoreError):  # left pending: reclaimed like any other
                    await on_done()
        self.abandoned.clear()
        return reported

    def _events(self, key: str, assignment: Assignment) -> EventLog:
        """Where the attempt reports: the run's log, fenced by the epoch it was assigned
        under (ADR 0012). The first refused report stops the attempt: a newer orchestrator
        has queued it again, and its reports would count for nothing."""
        if assignment.epoch < 1:
            return EventLog(self._store, assignment.run_id)
        fence = EpochFence(
            keys.run_lease(assignment.run_id),
            assignment.epoch,
            on_lost=lambda reason: self._stop(key, f"superseded: {reason}"),
        )
        return EventLog(Fenced(self._store, fence, keys.run_prefix(assignment.run_id)), assignment.run_id)

    async def _attempt(
        self, key: str, assignment: Assignment, events: EventLog
    ) -> TaskSucceeded | TaskFailed:
        """Run one attempt and say how it ended. Whatever goes wrong while handling this one
        task (preparing its workspace, starting its process, reading its output, merging,
        publishing) is that task's failure, with the reason, never the host's: one bad task
        cannot stop the other agents or the run. Only cancellation passes through."""
        task, agent, attempt = assignment.task, assignment.agent, assignment.attempt
        started = time.monotonic()
        try:
            job = await self._job(assignment)
            result = await self._merge(assignment, await self._execute(key, job, events))
            if result.ok and self._publish_outputs and result.output_path:
                await self._publish(assignment, Path(result.output_path))
        except Exception as exc:  # fault isolation: see the docstring
            log.warning("task %s attempt %d on %s: %s", task.id, attempt, self.name, describe_error(exc))
            log.debug("task %s attempt %d: the error in full", task.id, attempt, exc_info=True)
            return TaskFailed(
                task_id=task.id,
                agent_id=agent.id,
                attempt=attempt,
                reason=f"MAOS could not run this attempt: {describe_error(exc)}",
                duration_s=time.monotonic() - started,
            )
        if result.ok:
            return TaskSucceeded(
                task_id=task.id,
                agent_id=agent.id,
                attempt=attempt,
                exit_code=result.exit_code or 0,
                duration_s=result.duration_s,
                output_path=result.output_path,
                usage=result.usage,
            )
        return TaskFailed(
            task_id=task.id,
            agent_id=agent.id,
            attempt=attempt,
            reason=result.reason,
            exit_code=result.exit_code,
            stderr_tail=result.stderr_tail[-2000:],
            duration_s=result.duration_s,
            usage=result.usage,
            final=result.final,
        )

    async def _publish(self, assignment: Assignment, path: Path) -> None:
        data = path.read_bytes()
        if len(data) > MAX_PUBLISHED_OUTPUT_BYTES:
            data = data[:MAX_PUBLISHED_OUTPUT_BYTES] + b"\n[maos: output cut at 1 MiB]\n"
        await self._store.set(keys.task_output(assignment.run_id, assignment.task.id), data)


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class StoreWorker:
    """``maos worker``: takes assignments from the store's work queue and runs them.

    It rides out store outages of any length: when its lease is lost (no renewal got
    through for ``lease_s``, so its tasks are being handed to other workers) it stops its
    agents, waits for the store, registers again and goes on taking work."""

    def __init__(
        self,
        store: Store,
        runtimes: Mapping[str, AgentRuntime],
        *,
        name: str | None = None,
        capacity: int = 4,
        lease_s: float = 15.0,
        door_transport: str | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.store = store
        self.name = name or default_worker_name()
        self.workdir = workdir if workdir is not None else Path.cwd()  # where warm agents start
        self.capacity = capacity
        self.lease_s = lease_s
        self._runtimes = runtimes
        # One MCP endpoint of the door for all our Claude agents (maos.mcp_http), unless
        # --door-transport stdio (default: $MAOS_DOOR_TRANSPORT, else http).
        http = pick_door_transport(door_transport) == "http"
        self._door = DoorEndpoint(store=store) if http else None
        pool = runtimes.get("claude-code")
        self.pool = pool if isinstance(pool, WarmPool) else None  # kept warm across runs
        if self.pool is not None and self._door is None:
            raise ValueError("a warm pool that outlives runs needs the door's HTTP endpoint, not stdio")
        self._host = AgentHost(store, runtimes, name=self.name, publish_outputs=True, door=self._door)
        self._lease = Lease(store, keys.worker_lease(self.name), self.name, lease_s)
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self.completed = 0
        self.rejoined = 0
        self._in_hand: set[str] = set()  # queue entries taken and not acknowledged yet
        self._session_since = 0.0  # when the lease of the current session was taken

    def request_stop(self) -> None:
        """Drain: take no new assignment, let running ones finish, then return from ``run``."""
        self._stopping.set()
        self._slot_freed.set()

    async def run(self) -> None:
        self._session_since = time.time()  # what is delivered to us from now on is ours
        if not await self._lease.acquire():
            raise StoreError(
                f"worker name {self.name!r} is in use by a live worker "
                f"({await self.store.holder(self._lease.name)}); choose another --name"
            )
        await self.store.create_group(keys.ASSIGNMENTS, keys.WORKERS_GROUP, start="0")
        # Our agents die with us, even by SIGKILL (ADR 0010): their guard is up before the first.
        ensure_guard()
        log.info("worker %s ready (capacity %d, store %s)", self.name, self.capacity, self.store.url)
        try:
            async with self._door or contextlib.nullcontext(), self._warm():
                while not await self._session():
                    cut_off_host = self._host
                    self._host = AgentHost(
                        self.store, self._runtimes, name=self.name, publish_outputs=True, door=self._door
                    )
                    if not await self._rejoin():
                        break  # asked to stop while waiting for the store
                    reported = await cut_off_host.report_abandoned(
                        f"worker {self.name} was cut off from the store"
                    )
                    if reported:
                        log.warning("worker %s: reported %d stopped attempt(s) as lost", self.name, reported)
        finally:
            if self.pool is not None:
                with contextlib.suppress(StoreError):
                    await self.store.delete(keys.warm_agents(self.name))
            log.info("worker %s left after %d attempts", self.name, self.completed)

    def _warm(self) -> contextlib.AbstractAsyncContextManager[object]:
        """Our warm agents, for our whole life (their files: ``.maos/warm/<name>``)."""
        if self.pool is None or self._door is None:
            return contextlib.nullcontext()
        files = lasting_warm_dir(self.workdir, self.name)
        return self.pool.lasting(WarmHome(self.workdir, self._door, files))

    async def _advertise(self) -> None:
        """What we keep warm, in the store, for orchestrators (``keys.warm_agents``):
        written now and again whenever it changes (checked every second)."""
        assert self.pool is not None
        last: dict[str, Any] | None = None
        while True:
            advert = {"worker": self.name, "store": self.store.url, **self.pool.advert()}
            if advert != last:
                record = {**advert, "pid": os.getpid(), "seen_at": time.time(), "lease_s": self.lease_s}
                await self.store.set(keys.warm_agents(self.name), json.dumps(record).encode())
                last = advert
            await self.pool.clear_finished(self._run_over)
            await asyncio.sleep(1.0)

    async def _run_over(self, run_id: str) -> bool:
        """Whether nobody holds ``run_id``'s lease (it finished, or its orchestrator died and
        the lease ran out). The lease alone: a holder judged dead by its pid could be alive
        in another PID namespace, and clearing a live run's agents would lose its context."""
        return await self.store.holder(keys.run_lease(run_id)) is None

    async def _session(self) -> bool:
        """Take work under the lease until asked to stop (True) or cut off from the store (False)."""
        try:
            async with self._lease.held(), self._host, asyncio.TaskGroup() as group:
                watcher = group.create_task(self._watch_runs())
                recoverer = group.create_task(self._recover_lost_deliveries())
                advertiser = group.create_task(self._advertise()) if self.pool is not None else None
                await self._take_assignments()
                await self._host.wait_idle()
                watcher.cancel()
                recoverer.cancel()
                if advertiser is not None:
                    advertiser.cancel()
            return True
        except BaseException as exc:
            if cut_off(exc) is None or self._stopping.is_set():
                raise
            log.warning(
                "worker %s: cut off from the store (%s); its agents were stopped, their tasks "
                "go to other workers",
                self.name,
                describe_error(exc),
            )
            return False

    async def _rejoin(self) -> bool:
        """Wait (as long as it takes) until the store answers and the lease is ours again;
        False if asked to stop meanwhile."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                self._session_since = time.time()
                if await self._lease.acquire():
                    self.rejoined += 1
                    log.warning(
                        "worker %s: the store answers again; rejoined (epoch %d)",
                        self.name,
                        self._lease.epoch,
                    )
                    return True
                log.warning("worker %s: its name is held by another process; waiting", self.name)
            except StoreError as exc:
                log.warning("worker %s: waiting for the store: %s", self.name, describe_error(exc))
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
        return False

    async def _take_assignments(self) -> None:
        while not self._stopping.is_set():
            free = self.capacity - self._host.running
            if free <= 0:
                self._slot_freed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._slot_freed.wait()
                continue
            try:
                entries = await self._unless_stopping(
                    self.store.read_group(
                        keys.ASSIGNMENTS, keys.WORKERS_GROUP, self.name, count=free, block_s=0.5
                    )
                )
            except NoSuchGroup:  # the store lost its data (a Redis restarted without persistence)
                log.warning("worker %s: the work queue is gone from the store; creating it again", self.name)
                await self.store.create_group(keys.ASSIGNMENTS, keys.WORKERS_GROUP, start="0")
                continue
            for entry in entries:
                if self._stopping.is_set():
                    break  # left pending: the orchestrator reassigns it after our lease ends
                await self._take(entry)

    async def _take(self, entry: Entry) -> None:
        """Run the assignment of queue entry ``entry``, or acknowledge it if it is not to run."""
        try:
            assignment = Assignment.model_validate_json(entry.record)
        except ValueError as exc:
            log.error("dropping undecodable assignment %s: %s", entry.id, exc)  # noqa: TRY400
            await self.store.ack(keys.ASSIGNMENTS, keys.WORKERS_GROUP, [entry.id])
            return
        if not await self._current(assignment):
            await self.store.ack(keys.ASSIGNMENTS, keys.WORKERS_GROUP, [entry.id])
            return
        self._in_hand.add(entry.id)
        self._host.submit(assignment, on_done=self._acker(entry.id))

    async def _recover_lost_deliveries(self) -> None:
        """Take up what the queue delivered to us in this session but never reached us.

        XREADGROUP marks entries pending for us before it replies; a Redis that crashed (or a
        connection cut) between the two loses the reply, the retried read asks only for new
        entries, and the task would wait, assigned, for as long as we live: nobody reassigns
        the work of a worker whose lease holds. Entries delivered before this session began
        (a former life under our name, or before we were cut off) are left alone: our lease
        ended then, and the orchestrator has queued their tasks again."""
        while True:
            await asyncio.sleep(LOST_DELIVERY_S)
            if self._stopping.is_set():
                return
            now = time.time()
            lost = {
                item.id
                for item in await self.store.pending(keys.ASSIGNMENTS, keys.WORKERS_GROUP)
                if item.consumer == self.name
                and item.id not in self._in_hand
                and item.idle_s >= LOST_DELIVERY_S
                and now - item.idle_s >= self._session_since
            }
            if not lost:
                continue
            owed = await self.store.unacknowledged(keys.ASSIGNMENTS, keys.WORKERS_GROUP) or []
            for entry in owed:
                if entry.id in lost and entry.id not in self._in_hand and not self._stopping.is_set():
                    log.warning(
                        "worker %s: assignment %s was delivered but lost on the way; taking it up",
                        self.name,
                        entry.id,
                    )
                    await self._take(entry)

    async def _unless_stopping(self, read: Awaitable[list[Entry]]) -> list[Entry]:
        """``read``, given up when a stop is requested: a worker asked to leave while the
        store is unreachable leaves at once instead of after the store's retries."""
        reading = asyncio.ensure_future(read)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            reading.cancel()
            raise
        finally:
            stopping.cancel()
        if reading.done():
            return reading.result()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, StoreError):
            await reading
        return []

    async def _current(self, assignment: Assignment) -> bool:
        """Whether the assignment was made by the run's current orchestrator (its epoch)."""
        if assignment.epoch < 1:
            return True
        epoch = await self.store.epoch(keys.run_lease(assignment.run_id))
        if epoch == assignment.epoch:
            return True
        log.warning(
            "run %s: dropped task %s attempt %d: assigned under epoch %d, the run is at epoch %d",
            assignment.run_id,
            assignment.task.id,
            assignment.attempt,
            assignment.epoch,
            epoch,
        )
        return False

    def _acker(self, entry_id: str) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            await self.store.ack(keys.ASSIGNMENTS, keys.WORKERS_GROUP, [entry_id])
            self._in_hand.discard(entry_id)
            self.completed += 1
            self._slot_freed.set()

        return ack

    async def _watch_runs(self) -> None:
        """Obey cancel orders for the runs we host; stop attempts a newer orchestrator
        of their run has queued again (an older epoch)."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            for run_id in self._host.run_ids():
                control = await self.store.get(keys.run_control(run_id))
                if control is not None and control.value == b"cancel":
                    log.info("run %s cancelled: stopping its agents", run_id)
                    self._host.cancel(run_id)
                for key, reason in attempt_stops(await self.store.get(keys.run_stops(run_id))).items():
                    if self._host.stop(run_id, key, reason):
                        log.info("run %s: stopped attempt %s: %s", run_id, key, reason)
                stopped = self._host.supersede(run_id, await self.store.epoch(keys.run_lease(run_id)))
                if stopped:
                    log.warning("run %s has a new orchestrator: stopped %d stale attempt(s)", run_id, stopped)
