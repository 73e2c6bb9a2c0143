"""What the dashboard page starts from: a run's log folded into one JSON document.

``run_snapshot`` replays the whole log (``EventLog.iterate`` and ``maos.events.apply``, like
``maos status``) and adds what ``RunState`` leaves out because the run loop does not need
it: each agent's current task, each task's last output time, events per second for the
throughput chart, and the plan's levels and critical path (``maos.plan.analyze_plan``), and
what the page needs to tell that a task needs attention (its warnings and model-API retries
in the current attempt, its last output). An agent's ``runtime`` is that of its current or
last task (an agent slot runs whatever its task needs: a command, Claude Code, a consensus);
the critical path is weighed with measured durations and never runs through a skipped or
cancelled task (``critical_path``). The page then applies the live events after
``last_event_id`` itself (``static/app.js`` mirrors ``apply`` for the fields it shows).
Every number comes from an event; what no event reports (CPU and RSS, checkpoints; cost and
tokens of runtimes that report no usage) is ``null`` and the page shows a dash.

``status`` is the log's, or ``interrupted`` when no live orchestrator holds the run's lease
(``maos.liveness``; with ``interrupted_since`` and a ``hint``): no event says so, since a dead
orchestrator writes none, so the page asks for a new snapshot when its run goes quiet.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from maos.eventlog import EventLog, decode
from maos.events import (
    AgentApiRetry,
    AgentOutput,
    AgentStats,
    CheckpointTaken,
    Event,
    EventUnreadable,
    RunStarted,
    TaskAdded,
    TaskAssigned,
    TaskCancelled,
    TaskFailed,
    TaskReady,
    TaskRequeued,
    TaskStarted,
    TaskSucceeded,
    TaskWarning,
    apply,
)
from maos.liveness import INTERRUPTED, run_view
from maos.model import Plan, RunState, TaskState, Usage
from maos.plan import analyze_plan
from maos.store.base import Store

THROUGHPUT_SERIES: dict[str, str] = {"agent_output": "output", "message_sent": "messages"}
"""Event type -> throughput series on the dashboard. The page reads this mapping from the
snapshot, so a new kind of traffic is one line here: when the message bus logs its events,
add e.g. ``"message_sent": "messages"``."""
TRANSCRIPT_LINES = 2_000


@dataclass
class _Agent:
    task_id: str | None = None
    last_task_id: str | None = None  # the task it was last given (its runtime labels the card)
    attempt: int = 0
    state: str = "idle"  # idle | assigned | running
    since: float | None = None
    succeeded: int = 0
    failed: int = 0
    last_output: str = ""
    last_output_at: float | None = None
    cost_usd: float | None = None  # None until one of its attempts reports usage
    cpu_percent: float | None = None  # the latest agent_stats sample of its running attempt
    rss_bytes: int | None = None


@dataclass
class _Task:
    last_output_at: float | None = None
    output_lines: int = 0
    attempt_warnings: int = 0  # task_warning events of the current attempt
    last_api_retry: dict[str, Any] | None = None  # the current attempt's latest agent_api_retry


def usage_json(usage: Usage | None) -> dict[str, Any] | None:
    return None if usage is None else usage.model_dump(mode="json")


@dataclass
class _Extras:
    agents: dict[str, _Agent] = field(default_factory=dict)
    tasks: dict[str, _Task] = field(default_factory=dict)
    throughput: dict[str, dict[int, int]] = field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)

    def _free(self, task_id: str, ts: float) -> None:
        for agent in self.agents.values():
            if agent.task_id == task_id:
                agent.task_id, agent.state, agent.since = None, "idle", ts

    def observe(self, event: Event, state: RunState) -> None:
        """Called after ``apply(state, event)``."""
        series = THROUGHPUT_SERIES.get(event.type)
        if series is not None:
            buckets = self.throughput.setdefault(series, {})
            second = int(event.ts)
            buckets[second] = buckets.get(second, 0) + 1
        if isinstance(event, CheckpointTaken):
            self.checkpoints.append(event.model_dump(mode="json") | {"id": state.last_event_id})
            return
        if not state.applied:
            return  # a stale report or a rejected event: apply() changed nothing either
        task_id: str | None = getattr(event, "task_id", None)
        extra = self.tasks.setdefault(task_id, _Task()) if task_id is not None else _Task()
        match event:
            case AgentOutput():
                extra.last_output_at = event.ts
                extra.output_lines += 1
                agent = self.agents.setdefault(event.agent_id, _Agent())
                if event.text.strip():
                    agent.last_output = event.text.strip()[:300]
                agent.last_output_at = event.ts
            case TaskAssigned():
                agent = self.agents.setdefault(event.agent_id, _Agent())
                agent.task_id, agent.attempt, agent.state, agent.since = (
                    event.task_id,
                    event.attempt,
                    "assigned",
                    event.ts,
                )
                agent.last_task_id = event.task_id
                agent.last_output = ""
                extra.attempt_warnings, extra.last_api_retry = 0, None
            case TaskStarted():
                agent = self.agents.setdefault(event.agent_id, _Agent())
                agent.task_id, agent.attempt, agent.state, agent.since = (
                    event.task_id,
                    event.attempt,
                    "running",
                    event.ts,
                )
                agent.last_task_id = event.task_id
            case AgentStats():
                agent = self.agents.setdefault(event.agent_id, _Agent())
                agent.cpu_percent, agent.rss_bytes = event.cpu_percent, event.rss_bytes
            case TaskWarning():
                extra.attempt_warnings += 1
            case AgentApiRetry():
                extra.last_api_retry = {
                    "ts": event.ts,
                    "api_attempt": event.api_attempt,
                    "max_retries": event.max_retries,
                    "error_status": event.error_status,
                    "error": event.error,
                }
            case TaskSucceeded() | TaskFailed():
                agent = self.agents.setdefault(event.agent_id, _Agent())
                if isinstance(event, TaskSucceeded):
                    agent.succeeded += 1
                else:
                    agent.failed += 1
                if event.usage is not None:
                    agent.cost_usd = (agent.cost_usd or 0.0) + event.usage.cost_usd
                if agent.task_id == event.task_id:
                    agent.task_id, agent.state, agent.since = None, "idle", event.ts
            case TaskReady() | TaskRequeued() | TaskCancelled():
                self._free(event.task_id, event.ts)  # a lost, abandoned or cancelled assignment
            case _:
                pass


OFF_PATH = frozenset({TaskState.SKIPPED, TaskState.CANCELLED})
"""States a critical path never runs through: those tasks did not run and will not."""


def measured_durations(state: RunState, now: float) -> dict[str, float]:
    """Each task's weight on the critical path, in seconds: what it took when it ended (its
    last attempt's ``duration_s``), how long it has run so far when it runs, else an estimate:
    the median of the ended tasks' durations (1 s before any has ended)."""
    ended = {
        task_id: task.duration_s
        for task_id, task in state.tasks.items()
        if task.duration_s is not None and task.state is not TaskState.RUNNING
    }
    estimate = statistics.median(ended.values()) if ended else 1.0
    weights: dict[str, float] = {}
    for task_id, task in state.tasks.items():
        if task.state is TaskState.RUNNING and task.started_at is not None:
            weights[task_id] = max(0.0, now - task.started_at)
        else:
            weights[task_id] = ended.get(task_id, estimate)
    return weights


def critical_path(
    order: Sequence[str],
    depends_on: Mapping[str, Sequence[str]],
    weights: Mapping[str, float],
    off_path: AbstractSet[str] = frozenset(),
) -> list[str]:
    """The heaviest dependency chain through the tasks not in ``off_path``.

    ``order`` lists every task, dependencies first (``PlanAnalysis.order``); ties go to the
    earlier task in it. A chain is cut where it meets an ``off_path`` task: the tasks after
    it start a chain of their own.
    """
    heaviest: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for task_id in order:
        if task_id in off_path:
            continue
        best: str | None = None
        for dep in depends_on.get(task_id, ()):
            if dep in heaviest and (best is None or heaviest[dep] > heaviest[best]):
                best = dep
        via[task_id] = best
        heaviest[task_id] = weights.get(task_id, 0.0) + (heaviest[best] if best is not None else 0.0)
    if not heaviest:
        return []
    step: str | None = max(heaviest, key=heaviest.__getitem__)  # the first of equal maxima
    path: list[str] = []
    while step is not None:
        path.append(step)
        step = via[step]
    return path[::-1]


def _levels_and_path(plan: Plan, state: RunState, now: float) -> tuple[list[list[str]], list[str]]:
    """The plan's levels, and its critical path on measured durations (``measured_durations``)."""
    analysis = analyze_plan(plan)  # the reducer rejects a plan it cannot lay out
    off = {task_id for task_id, task in state.tasks.items() if task.state in OFF_PATH}
    path = critical_path(
        analysis.order,
        {spec.id: spec.depends_on for spec in plan.tasks},
        measured_durations(state, now),
        off,
    )
    return [list(level) for level in analysis.levels], path


async def run_snapshot(store: Store, run_id: str) -> dict[str, Any] | None:
    """The run as the page shows it, or None when the store has no such run (yet)."""
    state = RunState()
    extras = _Extras()
    last_event_at: float | None = None
    async for event_id, event in EventLog(store, run_id).iterate():
        apply(state, event, event_id)
        extras.observe(event, state)
        if not isinstance(event, EventUnreadable):
            last_event_at = event.ts
    plan = state.plan
    if not state.run_id or plan is None:
        return None
    view = await run_view(store, run_id, state.status, last_event_at=last_event_at)
    now = time.time()
    levels, critical = _levels_and_path(plan, state, now)
    level_of = {task_id: n for n, level in enumerate(levels) for task_id in level}
    on_path = set(critical)
    tasks = []
    for spec in plan.tasks:
        task = state.tasks[spec.id]  # the reducer keeps the plan's tasks and the run's the same
        extra = extras.tasks.get(spec.id, _Task())
        tasks.append(
            {
                "id": spec.id,
                "title": spec.title,
                "role": spec.role,
                "depends_on": list(spec.depends_on),
                "max_attempts": spec.max_attempts,
                "idle_timeout_s": spec.idle_timeout_s,
                "runtime": spec.runtime,
                "level": level_of[spec.id],
                "critical": spec.id in on_path,
                "state": view.task_state(task.state),  # interrupted: its agent is gone
                "logged_state": task.state.value,
                "attempts": task.attempts,
                "failures": task.failures,
                "agent_id": task.agent_id,
                "ready_at": task.ready_at,
                "started_at": task.started_at,
                "finished_at": task.finished_at,
                "duration_s": task.duration_s,
                "exit_code": task.exit_code,
                "reason": task.reason,
                "retry_at": task.retry_at,
                "warnings": list(task.warnings),
                "attempt_warnings": extra.attempt_warnings,
                "api_retries": task.api_retries,
                "last_api_retry": extra.last_api_retry,
                "last_output_at": extra.last_output_at,
                "output_lines": extra.output_lines,
                "usage": usage_json(task.usage),
                "stalled": task.stalled if task.state is TaskState.READY else "",
                "fitness": task.fitness.model_dump() if task.fitness else None,
            }
        )
    agents = []
    specs = plan.by_id()
    for agent_id, spec_agent in state.agents.items():
        seen = extras.agents.get(agent_id, _Agent())
        shown = seen.task_id or seen.last_task_id
        agents.append(
            {
                "id": agent_id,
                "role": spec_agent.role,
                "capabilities": list(spec_agent.capabilities),
                "lost": state.lost_agents.get(agent_id),
                # the runtime of its current or last task; none before its first task
                "runtime": specs[shown].runtime if shown is not None and shown in specs else None,
                "last_task_id": seen.last_task_id,
                "state": INTERRUPTED if view.interrupted and seen.state != "idle" else seen.state,
                "task_id": seen.task_id,
                "attempt": seen.attempt,
                "since": seen.since,
                "succeeded": seen.succeeded,
                "failed": seen.failed,
                "last_output": seen.last_output,
                "last_output_at": seen.last_output_at,
                # Measured by the agent host (agent_stats events); None until sampled.
                "cpu_percent": seen.cpu_percent if seen.state == "running" else None,
                "rss_bytes": seen.rss_bytes if seen.state == "running" else None,
                "cost_usd": seen.cost_usd,
            }
        )
    return {
        "run_id": state.run_id,
        "plan": {"name": plan.name, "description": plan.description},
        # "interrupted" when no orchestrator drives the run (maos.liveness); never in the log
        **view.as_json(),
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "summary": state.summary,
        "agents_limit": state.config.agents if state.config else None,
        "last_event_id": state.last_event_id,
        "event_count": state.event_count,
        "server_time": now,
        "counts": view.task_counts(state),
        "tasks": tasks,
        "agents": agents,
        "dag": {"levels": levels, "critical_path": critical},
        "throughput": {
            "kinds": THROUGHPUT_SERIES,
            "series": {
                name: {str(second): count for second, count in sorted(buckets.items())}
                for name, buckets in extras.throughput.items()
            },
        },
        "checkpoints": extras.checkpoints[-50:],  # checkpoint_taken events so far; more arrive live
        # the run's usage: summed over the attempts that reported one; null if none did
        "usage": usage_json(state.usage())
        if any(t.usage is not None for t in state.tasks.values())
        else None,
    }


async def task_transcript(
    store: Store, run_id: str, task_id: str, *, limit: int = TRANSCRIPT_LINES
) -> dict[str, Any] | None:
    """The task's ``agent_output`` lines (the newest ``limit``) and the log position read to,
    or None when the run's log has no such task (yet): not in its plan, never added.

    Each line carries the ``attempt`` it belongs to (the task's latest ``task_assigned``
    before it), so the page can separate the attempts of a retried task."""
    needle = json.dumps(task_id).encode()
    lines: list[dict[str, Any]] = []
    total = 0
    attempt = 0
    after = "0"
    known = False  # the task is in the run's plan, was added to it, or was given to an agent
    async for entry in EventLog(store, run_id).entries():
        after = entry.id
        record = entry.record
        if needle not in record:
            continue
        adds = not known and (b'"run_started"' in record or b'"task_added"' in record)
        if not adds and b'"agent_output"' not in record and b'"task_assigned"' not in record:
            continue
        event = decode(entry)
        if isinstance(event, RunStarted):
            known = known or any(task.id == task_id for task in event.plan.tasks)
        elif isinstance(event, TaskAdded):
            known = known or event.task.id == task_id
        elif isinstance(event, TaskAssigned) and event.task_id == task_id:
            known = True  # also in a log rebuilt from a checkpoint (run_restored, no run_started)
            attempt = max(attempt, event.attempt)
        elif isinstance(event, AgentOutput) and event.task_id == task_id:
            known = True
            total += 1
            lines.append(
                {
                    "id": entry.id,
                    "ts": event.ts,
                    "agent_id": event.agent_id,
                    "attempt": attempt or None,
                    "stream": event.stream,
                    "text": event.text,
                }
            )
            if len(lines) > 2 * limit:
                del lines[:limit]
    if not known:
        return None
    kept = lines[-limit:]
    return {
        "task_id": task_id,
        "lines": kept,
        "omitted": total - len(kept),
        "attempts": attempt,
        "last_event_id": after,
    }
