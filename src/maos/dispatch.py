"""How assignments reach agents: in this process, or through the store's work queue.

- ``LocalDispatcher`` hands each assignment to an ``AgentHost`` in the orchestrator's own
  process: no queue, no extra round trip (the default).
- ``QueueDispatcher`` appends assignments to the store's work queue (``keys.ASSIGNMENTS``),
  where ``maos worker`` processes on any machine take them (``--workers-only``). It also finds
  work lost with a dead worker: a task whose worker's lease has expired is reported failed
  (``worker … lost``), so the orchestrator retries it elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Protocol

from maos.documents import DocumentError, load_json
from maos.events import TaskFailed
from maos.model import Assignment, RunState, TaskState
from maos.store import keys
from maos.store.base import Store, Versioned

if TYPE_CHECKING:  # the agent host (and all it imports) only where agents run in this process
    from maos.worker import AgentHost

log = logging.getLogger("maos.dispatch")


def attempt_stops(record: Versioned | None) -> dict[str, str]:
    """The attempts a run's orchestrator asked to stop (``keys.run_stops``, written by
    ``QueueDispatcher.stop``, read by the workers): key -> reason."""
    if record is None:
        return {}
    try:
        stops = load_json(record.value.decode("utf-8"))
    except (ValueError, DocumentError):  # corrupt store contents: no stops
        return {}
    if not isinstance(stops, dict):
        return {}
    return {str(key): str(reason) for key, reason in stops.items()}


class Dispatcher(Protocol):
    async def dispatch(self, assignment: Assignment) -> None:
        """Hand the attempt over; durable (or running) when this returns."""
        ...

    async def cancel(self) -> None:
        """Stop every running attempt of the run."""
        ...

    async def wait_idle(self, timeout_s: float) -> None:
        """Wait until no attempt of the run runs any more (at most ``timeout_s``)."""
        ...

    async def lost(self, state: RunState) -> list[TaskFailed]:
        """Failures to report for attempts whose worker died (empty when that cannot happen)."""
        ...

    async def stop(self, task_id: str, attempt: int, reason: str) -> None:
        """Stop one attempt (a deadline passed, a deadlock victim); its agent is reaped."""
        ...


class LocalDispatcher:
    def __init__(self, host: AgentHost, run_id: str) -> None:
        self.host = host
        self.run_id = run_id

    async def dispatch(self, assignment: Assignment) -> None:
        self.host.submit(assignment)

    async def cancel(self) -> None:
        self.host.cancel(self.run_id)

    async def wait_idle(self, timeout_s: float) -> None:
        await self.host.wait_idle()

    async def lost(self, state: RunState) -> list[TaskFailed]:
        return []  # agents are our own children: their end is always observed

    async def stop(self, task_id: str, attempt: int, reason: str) -> None:
        self.host.stop(self.run_id, f"{task_id}:{attempt}", reason)


class QueueDispatcher:
    def __init__(self, store: Store, run_id: str, *, lease_s: float) -> None:
        self.store = store
        self.run_id = run_id
        self.lease_s = lease_s
        self._entries: dict[str, str] = {}  # task id -> queue entry id of its current attempt
        self._ready = False

    async def _ensure_group(self) -> None:
        if not self._ready:
            await self.store.create_group(keys.ASSIGNMENTS, keys.WORKERS_GROUP, start="0")
            self._ready = True

    async def dispatch(self, assignment: Assignment) -> None:
        await self._ensure_group()
        entry_id = await self.store.append(keys.ASSIGNMENTS, assignment.model_dump_json().encode())
        self._entries[assignment.task.id] = entry_id

    async def cancel(self) -> None:
        await self.store.set(keys.run_control(self.run_id), b"cancel")

    async def stop(self, task_id: str, attempt: int, reason: str) -> None:
        """Workers read the run's stop list every third of their lease time."""
        key = keys.run_stops(self.run_id)
        while True:
            current = await self.store.get(key)
            stops = attempt_stops(current)
            stops[f"{task_id}:{attempt}"] = reason[:500]
            version = current.version if current is not None else 0
            if (await self.store.cas(key, version, json.dumps(stops).encode())).ok:
                return

    async def wait_idle(self, timeout_s: float) -> None:
        """Wait until the workers have let go of our assignments (they leave them pending
        when they stop an agent for a cancel), then drop them from the queue."""
        deadline = time.monotonic() + timeout_s
        ours = set(self._entries.values())
        while ours and time.monotonic() < deadline:
            pending = {entry.id for entry in await self.store.pending(keys.ASSIGNMENTS, keys.WORKERS_GROUP)}
            if not ours & pending:
                break
            await asyncio.sleep(0.2)
        await self.store.ack(keys.ASSIGNMENTS, keys.WORKERS_GROUP, sorted(ours))

    async def lost(self, state: RunState) -> list[TaskFailed]:
        busy = {
            task_id: task
            for task_id, task in state.tasks.items()
            if task.state in (TaskState.ASSIGNED, TaskState.RUNNING)
        }
        if not busy:
            return []
        consumers = {
            entry.id: entry.consumer
            for entry in await self.store.pending(keys.ASSIGNMENTS, keys.WORKERS_GROUP)
        }
        alive: dict[str, bool] = {}
        failures: list[TaskFailed] = []
        for task_id, task in busy.items():
            entry_id = self._entries.get(task_id)
            worker = task.worker if task.state is TaskState.RUNNING else consumers.get(entry_id or "")
            if worker is None:
                continue  # not taken by any worker yet
            if worker not in alive:
                alive[worker] = await self.store.holder(keys.worker_lease(worker)) is not None
            if alive[worker]:
                continue
            log.warning("task %s attempt %d lost with worker %s", task_id, task.attempts, worker)
            failures.append(
                TaskFailed(
                    task_id=task_id,
                    agent_id=task.agent_id or "",
                    attempt=task.attempts,
                    reason=f"lost: worker {worker!r} stopped heartbeating (lease {self.lease_s:g}s)",
                    lost_worker=worker,
                )
            )
            if entry_id is not None:
                await self.store.ack(keys.ASSIGNMENTS, keys.WORKERS_GROUP, [entry_id])
        return failures
