"""The in-process worker: hosts agent processes and reports what they do as events.

The orchestrator hands it assignments; the worker starts one agent process per attempt
through the task's runtime, streams its output into the event log, and appends the attempt's
outcome. Outcomes are written under ``asyncio.shield`` so that a cancellation arriving at the
wrong moment cannot lose a result that already exists.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from maos.agents.runtime import AgentJob, AgentResult, AgentRuntime, OutputStream
from maos.events import EventLog
from maos.model import AgentOutput, AgentSpec, TaskFailed, TaskSpec, TaskStarted, TaskSucceeded

log = logging.getLogger("maos.worker")

MAX_LOGGED_LINES = 500
"""Output lines per attempt copied into the event log; the rest stays in the output files."""
MAX_LINE_CHARS = 2000


class _EventReporter:
    def __init__(self, events: EventLog, job: AgentJob) -> None:
        self._events = events
        self._job = job
        self._lines = 0

    async def started(self, pid: int) -> None:
        job = self._job
        await self._events.append(
            TaskStarted(task_id=job.task.id, agent_id=job.agent.id, attempt=job.attempt, pid=pid)
        )

    async def output(self, stream: OutputStream, text: str) -> None:
        self._lines += 1
        if self._lines > MAX_LOGGED_LINES:
            if self._lines == MAX_LOGGED_LINES + 1:
                text = f"[maos] more than {MAX_LOGGED_LINES} lines: the rest is in the output files"
                stream = "stderr"
            else:
                return
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + " [maos: line truncated]"
        job = self._job
        await self._events.append(
            AgentOutput(task_id=job.task.id, agent_id=job.agent.id, stream=stream, text=text)
        )


class LocalWorker:
    """Runs assignments in this process's event loop. Use as ``async with``."""

    def __init__(
        self,
        events: EventLog,
        runtimes: Mapping[str, AgentRuntime],
        *,
        workdir: Path,
        run_dir: Path,
        grace_s: float,
        store_url: str,
    ) -> None:
        self._events = events
        self._runtimes = runtimes
        self._workdir = workdir
        self._output_dir = run_dir / "outputs"
        self._grace_s = grace_s
        self._store_url = store_url
        self._group = asyncio.TaskGroup()
        self._running: dict[str, asyncio.Task[None]] = {}

    async def __aenter__(self) -> LocalWorker:
        self._output_dir.mkdir(parents=True, exist_ok=True)
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.cancel_all()
        await self._group.__aexit__(exc_type, exc, tb)

    @property
    def running(self) -> int:
        return len(self._running)

    def submit(self, task: TaskSpec, agent: AgentSpec, attempt: int, inputs: Mapping[str, str]) -> None:
        """Start the attempt now; its events reach the log as they happen."""
        job = AgentJob(
            run_id=self._events.run_id,
            task=task,
            agent=agent,
            attempt=attempt,
            cwd=self._workdir,
            env={
                "MAOS_RUN_ID": self._events.run_id,
                "MAOS_TASK_ID": task.id,
                "MAOS_AGENT_ID": agent.id,
                "MAOS_ATTEMPT": str(attempt),
                "MAOS_TASK": task.prompt,
                "MAOS_INPUTS": json.dumps(dict(inputs)),
                "MAOS_STORE": self._store_url,
            },
            output_dir=self._output_dir,
            grace_s=self._grace_s,
        )
        self._running[task.id] = self._group.create_task(self._run(job), name=f"maos-task-{task.id}")

    def cancel_all(self) -> None:
        for running in self._running.values():
            running.cancel()

    async def wait_idle(self) -> None:
        """Wait until every started attempt has ended (been reaped)."""
        while self._running:
            await asyncio.wait(list(self._running.values()))

    async def _run(self, job: AgentJob) -> None:
        try:
            runtime = self._runtimes.get(job.task.runtime)
            if runtime is None:
                result = AgentResult(
                    ok=False,
                    duration_s=0.0,
                    reason=f"no {job.task.runtime!r} runtime here (has: {', '.join(self._runtimes)})",
                )
            else:
                result = await runtime.run(job, _EventReporter(self._events, job))
            if result.ok:
                outcome: TaskSucceeded | TaskFailed = TaskSucceeded(
                    task_id=job.task.id,
                    agent_id=job.agent.id,
                    attempt=job.attempt,
                    exit_code=result.exit_code or 0,
                    duration_s=result.duration_s,
                    output_path=result.output_path,
                )
            else:
                outcome = TaskFailed(
                    task_id=job.task.id,
                    agent_id=job.agent.id,
                    attempt=job.attempt,
                    reason=result.reason,
                    exit_code=result.exit_code,
                    stderr_tail=result.stderr_tail[-2000:],
                    duration_s=result.duration_s,
                )
            log.info(
                "task %s attempt %d on %s: %s in %.3fs",
                job.task.id,
                job.attempt,
                job.agent.id,
                "ok" if result.ok else result.reason,
                result.duration_s,
            )
            await asyncio.shield(self._events.append(outcome))
        finally:
            self._running.pop(job.task.id, None)
