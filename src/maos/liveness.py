"""Whether a run still has an orchestrator: ``interrupted`` is observed, never stored.

A run's log says ``running``, ``draining`` or ``cancelling`` until its orchestrator appends
``run_finished``. An orchestrator that dies (SIGKILL, a crashed machine) appends nothing, so the
log alone would show the run as running forever. The run's lease (``keys.run_lease``) tells the
truth: its orchestrator renews it every ``lease_s / 3``. A run whose log has not finished and
whose lease has no live holder is **interrupted**; ``maos resume RUN`` continues it. A holder
that is a dead process of this host counts as none, so a run killed here shows as interrupted
at once rather than when its lease runs out.

``run_view`` computes this when the run is read, for ``maos runs``, ``maos status`` and the
dashboard alike. It is never written to the log: it stops being true the moment someone resumes
the run. Since when: the time of the run's newest event, its last sign of life (a running agent
reports ``agent_stats`` every few seconds; the orchestrator died at or after that time).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maos.errors import RunNotFound
from maos.eventlog import EventLog, decode
from maos.events import EventUnreadable
from maos.model import RunRecord, RunState, RunStatus, TaskState
from maos.numbers import parse_int
from maos.store import keys
from maos.store.base import Entry, Store

log = logging.getLogger("maos.liveness")

INTERRUPTED = "interrupted"
_IN_FLIGHT = frozenset({TaskState.ASSIGNED, TaskState.RUNNING})
PID_MAX = 2**22
"""The largest process id Linux gives (``/proc/sys/kernel/pid_max`` is at most this)."""
_READ_BATCH = 5_000


def dead_here(owner: str) -> bool:
    """True if lease owner ``orchestrator HOST:PID (…)`` is a process of this host that is gone."""
    try:
        host, raw_pid = owner.split()[1].rsplit(":", 1)
        if host != socket.gethostname():
            return False
        # The owner is store contents: a pid that is none (0 and -1 name groups of processes,
        # a huge one overflows) is no process of this host, so not known to be dead.
        pid = parse_int(raw_pid, "pid", min_value=1, max_value=PID_MAX)
        os.kill(pid, 0)
        # A zombie (killed, not yet reaped by its parent) is dead too.
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return True
    except (IndexError, ValueError, PermissionError):
        return False


def same_host(worker: str | None) -> bool:
    """Whether a ``task_started.worker`` name (``HOST:PID`` for an orchestrator's own agents,
    ``HOST-PID`` for ``maos worker``) is a process of this host."""
    if not worker:
        return False
    host = socket.gethostname()
    return worker.rpartition(":")[0] == host or worker.rpartition("-")[0] == host


@dataclass(frozen=True, slots=True)
class RunView:
    """A run's status as shown to people: the log's, or ``interrupted``."""

    run_id: str
    status: str  # a RunStatus value, or "interrupted"
    logged_status: str  # what the log says
    orchestrator: str | None = None  # the live holder of the run's lease
    epoch: int = 0  # the lease's epoch (one per owner the run has had; 0: never held)
    interrupted_since: float | None = None  # the newest event's time (unknown: None)

    @property
    def interrupted(self) -> bool:
        return self.status == INTERRUPTED

    @property
    def hint(self) -> str | None:
        if not self.interrupted:
            return None
        return f"run `maos resume {self.run_id}` (a running `maos supervisor` takes it over by itself)"

    def as_json(self) -> dict[str, Any]:
        """The fields ``--json`` output and the dashboard carry (``status`` replaces the log's)."""
        return {
            "status": self.status,
            "logged_status": self.logged_status,
            "orchestrator": self.orchestrator,
            "orchestrator_epoch": self.epoch if self.orchestrator is not None else None,
            "interrupted_since": self.interrupted_since,
            "hint": self.hint,
        }

    def task_state(self, state: TaskState) -> str:
        """A task's state as shown now: ``interrupted`` for one the log says is assigned or
        running while the run is interrupted (its agent died with its host: ADR 0010; a
        resume runs it again), else the log's."""
        return INTERRUPTED if self.interrupted and state in _IN_FLIGHT else state.value

    def task_counts(self, run: RunState) -> dict[str, int]:
        """Tasks per state as shown now (``task_state``), states without tasks left out."""
        counts: dict[str, int] = {}
        for task in run.tasks.values():
            shown = self.task_state(task.state)
            counts[shown] = counts.get(shown, 0) + 1
        order = [*(state.value for state in TaskState), INTERRUPTED]
        return {name: counts[name] for name in order if name in counts}

    @property
    def owner(self) -> str:
        """Who drives the run, for a table: ``HOST:PID · epoch N``, ``none`` when interrupted."""
        if self.orchestrator is not None:
            where = self.orchestrator.removeprefix("orchestrator ").split(" (")[0]
            return f"{where} · epoch {self.epoch}"
        return "none" if self.interrupted else ""


async def run_records(store: Store) -> list[RunRecord]:
    """Every run in the store's run index, newest first. A record that does not decode
    (store contents are untrusted) is left out with a warning, never an error: the run's
    log is the truth, and ``maos status RUN`` still reads it."""
    found: list[RunRecord] = []
    for item in await store.scan(keys.RUN_RECORD_PREFIX):
        try:
            found.append(RunRecord.model_validate_json(item.value))
        except ValueError as exc:
            log.warning("run index entry %s cannot be read: %s", item.key, str(exc).splitlines()[0])
    return sorted(found, key=lambda record: record.started_at, reverse=True)


async def live_orchestrator(store: Store, run_id: str) -> str | None:
    """The holder of the run's lease if it is alive, else None."""
    holder = await store.holder(keys.run_lease(run_id))
    if holder is None or dead_here(holder):
        return None
    return holder


async def run_view(
    store: Store, run_id: str, logged: RunStatus, *, last_event_at: float | None = None
) -> RunView:
    """The run's status now. ``logged``: its status in the log, or in its run record; then the
    log is read for the newest event's time (and for a ``run_finished`` the record missed),
    unless ``last_event_at`` gives that time (a caller that folded the whole log)."""
    if logged.finished:
        return RunView(run_id, logged.value, logged.value)
    holder = await live_orchestrator(store, run_id)
    if holder is not None:
        epoch = await store.epoch(keys.run_lease(run_id))
        return RunView(run_id, logged.value, logged.value, orchestrator=holder, epoch=epoch)
    if last_event_at is None:
        last_event_at, final = await _newest(store, run_id)
        if final is not None:  # the record was not updated after the end: the log wins
            return RunView(run_id, final.value, final.value)
    return RunView(run_id, INTERRUPTED, logged.value, interrupted_since=last_event_at)


async def _newest(store: Store, run_id: str) -> tuple[float | None, RunStatus | None]:
    """The time of the run's newest event, and its final status if the log says it finished.

    Reads the records without decoding them, except the newest; a log that holds a
    ``run_finished`` (an orchestrator that died before it updated the run's record, or an
    entry someone forged) is folded, so that its status is the one ``maos status`` shows."""
    stream = keys.events(run_id)
    newest: Entry | None = None
    ends = False
    after = "0"
    while True:
        entries = await store.read(stream, after, count=_READ_BATCH)
        ends = ends or any(b'"run_finished"' in entry.record for entry in entries)
        if entries:
            newest = entries[-1]
            after = newest.id
        if len(entries) < _READ_BATCH:
            break
    final: RunStatus | None = None
    if ends:
        try:
            status = (await EventLog(store, run_id).replay()).status
        except RunNotFound:  # no run_started: nothing of it applies
            status = RunStatus.RUNNING
        final = status if status.finished else None
    if newest is None:
        return None, final
    event = decode(newest)
    return (None if isinstance(event, EventUnreadable) else event.ts), final
