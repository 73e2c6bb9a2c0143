"""Prometheus metrics of a run, each updated where the event it counts happens.

``MetricsObserver`` owns a dedicated ``CollectorRegistry`` (never the global one, so two
observers in one process, e.g. in tests, do not collide). Its ``observe(event_id, event,
state)`` has the signature of an orchestrator hook: append it to ``Orchestrator.hooks`` and
every event the run loop reads back from the log updates the metrics at once. A dashboard
that is not in the run's process feeds the same method from the log it follows.

Fed by ``observe`` (from the events in the log):

=================================  =====================================================
``maos_tasks{state}``              gauge: tasks of the current run in each ``TaskState``, or
                                   ``interrupted`` (its agent died with the orchestrator)
``maos_task_attempts_total``       counter by ``outcome`` (succeeded, failed)
``maos_task_duration_seconds``     histogram by ``outcome``: an attempt's run time
``maos_task_retries_total``        counter: backoff decisions (``task_retried``)
``maos_task_requeues_total``       counter: attempts abandoned by a restart (``task_requeued``)
``maos_task_warnings_total``       counter: ``task_warning`` (denied tools, failed MCP servers…)
``maos_agent_api_retries_total``   counter by HTTP ``status``: model API retries, e.g. rate limits
``maos_active_agents``             gauge: agents holding an assigned or running task (0
                                   while the run is interrupted: they died with their host)
``maos_run_interrupted``           gauge: 1 while the run has no live orchestrator though its
                                   log says it runs (``maos runs`` shows it interrupted); set
                                   at each scrape by a dashboard that follows the log
``maos_agent_spawn_seconds``       histogram: ``task_assigned`` -> ``task_started``
``maos_agent_output_lines_total``  counter by ``stream``: ``agent_output`` lines
``maos_cost_usd_total``            counter: ``usage.cost_usd`` of ended attempts
``maos_tokens_total{kind}``        counter: ``usage`` tokens of ended attempts
``maos_events_total``              counter by ``type``: every event read from the log
``maos_runs_started_total``        counter
``maos_runs_finished_total``       counter by ``status``
``maos_run_resumes_total``         counter: ``run_resumed`` (a new owner took the run's lease)
``maos_run_cost_usd``              gauge: the current run's cost so far
``maos_run_budget_usd``            gauge: the current run's ``--max-cost-usd`` (0: none)
``maos_messages_total``            counter by ``direction``: ``message_sent`` (sent) and the
                                   messages of ``messages_read`` (received)
``maos_message_latency_seconds``   histogram: bus send -> first delivery (``messages_read``)
``maos_message_backlog``           gauge: direct messages sent and not read yet
``maos_cas_conflicts_total``       counter by ``kind``: compare-and-sets lost to another
                                   writer; ``state``: ``state_written.cas_conflicts`` and
                                   ``state_cas_failed``; ``bus``: ``message_sent.cas_conflicts``
``maos_missed_heartbeats_total``   counter: workers whose lease expired (``task_failed`` with
                                   ``lost_worker``; once per loss of a worker)
``maos_agent_cpu_percent``         gauge by ``agent``: latest ``agent_stats`` of a busy agent
``maos_agent_rss_bytes``           gauge by ``agent``: idem (dropped when its task ends)
``maos_agent_idle_seconds``        gauge by ``agent``: idem
``maos_agent_anomalies_total``     counter by ``kind``: ``agent_anomaly`` (fixed limits and
                                   statistical outliers)
``maos_last_checkpoint_timestamp_seconds``  gauge: time of the newest ``checkpoint_taken``
=================================  =====================================================

The door (``maos state``/``maos msg``, the MCP server) runs in agents' processes and the
agent monitor in whichever process hosts the agent: what they measure reaches the process
that serves ``/metrics`` (``maos run``, ``maos dashboard``) as fields of the events they log,
never through a call into this module.

Events of an attempt that is no longer the task's current one (a late report from a worker
presumed dead) count in ``maos_events_total`` only, as ``maos.events.apply`` ignores them.

Fed by the ``record_*`` methods, which the components that see those things call (they
stay at zero until then; nothing here estimates them):

=====================================  ==========================  =============================
``maos_checkpoint_duration_seconds``   ``record_checkpoint``       ``checkpoint_taken`` (full);
                                                                   incremental: the writer
``maos_checkpoint_bytes``              ``record_checkpoint``       stored (compressed) size
``maos_resource_waits_total``          ``record_resource_wait``    the scheduler's resources
``maos_resource_wait_seconds``         ``record_resource_wait``    ready -> resource granted
``maos_stalled_tasks``                 ``set_stalled_tasks``       the stall detector
=====================================  ==========================  =============================

``record_cas_conflict`` and ``record_missed_heartbeat`` are what
``observe`` calls for the events above; a component that sees such a thing outside any run's
log may call them too.

``record_spawn``, ``record_cost`` and ``record_tokens`` are public too, but ``observe``
already calls them for every attempt (spawn: assigned -> started; cost and tokens: the
``usage`` of ``task_succeeded``/``task_failed``). Call them directly only for what is not in
the log, e.g. an agent pool spawning warm agents ahead of tasks; never for a task attempt.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric

from maos.events import (
    AgentAnomaly,
    AgentApiRetry,
    AgentOutput,
    AgentStats,
    CheckpointTaken,
    Event,
    MessageSent,
    MessagesRead,
    ResourceWait,
    RunFinished,
    RunResumed,
    RunStarted,
    StateCasFailed,
    StateWritten,
    TaskAssigned,
    TaskFailed,
    TaskRequeued,
    TaskRetried,
    TaskStarted,
    TaskSucceeded,
    TaskWarning,
)
from maos.model import RunState, RunStatus, TaskState, Usage

log = logging.getLogger("maos.metrics")

__all__ = ["CONTENT_TYPE", "TOKEN_KINDS", "MetricsObserver"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of ``MetricsObserver.render()`` (Prometheus text format 0.0.4)."""

TOKEN_KINDS = ("input", "output", "cache_read", "cache_creation")
CHECKPOINT_KINDS = ("full", "incremental")
CAS_KINDS = ("state", "bus")
ANOMALY_KINDS = ("memory", "idle", "rss_outlier", "cpu_outlier", "idle_outlier")
_MAX_UNREAD = 100_000  # message ids remembered for the backlog; the oldest are forgotten first

_DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_SPAWN_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)
_MESSAGE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_CHECKPOINT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
_BYTES_BUCKETS = tuple(float(4**n * 1024) for n in range(10))  # 1 KiB .. 256 MiB


INTERRUPTED_TASKS = "interrupted"
"""The ``maos_tasks`` state of a task the log says runs, in a run nobody drives (``maos.liveness``)."""


class MetricsObserver:
    """Every MAOS metric, in one registry, fed by run events and ``record_*`` calls."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tasks = Gauge("maos_tasks", "Tasks of the current run by state.", ["state"], registry=r)
        self.task_attempts = Counter(
            "maos_task_attempts", "Task attempts that ended, by outcome.", ["outcome"], registry=r
        )
        self.task_duration = Histogram(
            "maos_task_duration_seconds",
            "Run time of task attempts, by outcome.",
            ["outcome"],
            buckets=_DURATION_BUCKETS_S,
            registry=r,
        )
        self.retries = Counter("maos_task_retries", "Failed attempts scheduled for a retry.", registry=r)
        self.requeues = Counter(
            "maos_task_requeues", "Attempts abandoned through no fault of their own (restart).", registry=r
        )
        self.warnings = Counter(
            "maos_task_warnings", "Warnings about attempts (denied tools, failed MCP servers…).", registry=r
        )
        self.api_retries = Counter(
            "maos_agent_api_retries",
            "Model API calls agents retried (rate limits, overload), by HTTP status.",
            ["status"],
            registry=r,
        )
        self.active_agents = Gauge(
            "maos_active_agents", "Agents holding an assigned or running task.", registry=r
        )
        self.run_interrupted = Gauge(
            "maos_run_interrupted",
            "1 while the run has no live orchestrator though its log says it runs (interrupted).",
            registry=r,
        )
        self.spawn = Histogram(
            "maos_agent_spawn_seconds",
            "Agent spawn latency: from assignment to the agent process running.",
            buckets=_SPAWN_BUCKETS_S,
            registry=r,
        )
        self.output_lines = Counter(
            "maos_agent_output_lines",
            "Agent output lines in the event log, by stream.",
            ["stream"],
            registry=r,
        )
        self.events = Counter("maos_events", "Events read from the run's log, by type.", ["type"], registry=r)
        self.rejected = Counter(
            "maos_events_rejected",
            "Events that changed nothing: late reports of attempts no longer current (stale) "
            "or events the task lifecycle does not allow (invalid).",
            ["kind"],
            registry=r,
        )
        self.runs_started = Counter("maos_runs_started", "Runs started.", registry=r)
        self.runs_finished = Counter(
            "maos_runs_finished", "Runs finished, by status.", ["status"], registry=r
        )
        self.run_resumes = Counter(
            "maos_run_resumes",
            "Runs continued by a new orchestrator: the previous one stopped holding the run's lease.",
            registry=r,
        )
        self.run_cost_usd = Gauge("maos_run_cost_usd", "Model cost of the current run so far.", registry=r)
        self.run_budget_usd = Gauge(
            "maos_run_budget_usd", "The current run's cost limit (--max-cost-usd); 0: none.", registry=r
        )
        self.messages = Counter(
            "maos_messages",
            "Messages agents sent (direction=sent) and read (direction=received) through the bus.",
            ["direction"],
            registry=r,
        )
        self.message_latency = Histogram(
            "maos_message_latency_seconds",
            "Message latency from send to first delivery.",
            buckets=_MESSAGE_BUCKETS_S,
            registry=r,
        )
        self.message_backlog = Gauge(
            "maos_message_backlog", "Direct messages sent and not read yet (broadcasts excluded).", registry=r
        )
        self.checkpoint_duration = Histogram(
            "maos_checkpoint_duration_seconds",
            "Time to take a checkpoint (capture, compress, encrypt, store), by kind.",
            ["kind"],
            buckets=_CHECKPOINT_BUCKETS_S,
            registry=r,
        )
        self.checkpoint_bytes = Histogram(
            "maos_checkpoint_bytes",
            "Stored size of checkpoints, by kind.",
            ["kind"],
            buckets=_BYTES_BUCKETS,
            registry=r,
        )
        self.cas_conflicts = Counter(
            "maos_cas_conflicts",
            "Compare-and-set writes that lost to a concurrent write, by kind (state, bus).",
            ["kind"],
            registry=r,
        )
        self.missed_heartbeats = Counter(
            "maos_missed_heartbeats",
            "Workers whose heartbeats stopped: their lease expired with attempts on them.",
            registry=r,
        )
        self.agent_cpu = Gauge(
            "maos_agent_cpu_percent",
            "CPU of a busy agent's process group, percent of one core (latest sample).",
            ["agent"],
            registry=r,
        )
        self.agent_rss = Gauge(
            "maos_agent_rss_bytes",
            "RSS of a busy agent's process group (latest sample).",
            ["agent"],
            registry=r,
        )
        self.agent_idle = Gauge(
            "maos_agent_idle_seconds",
            "Seconds since a busy agent last printed anything (latest sample).",
            ["agent"],
            registry=r,
        )
        self.anomalies = Counter(
            "maos_agent_anomalies",
            "Agent anomalies: over a fixed limit (memory, idle) or far from their peers (*_outlier).",
            ["kind"],
            registry=r,
        )
        self.last_checkpoint = Gauge(
            "maos_last_checkpoint_timestamp_seconds",
            "Unix time of the newest full checkpoint of a run (0: none yet).",
            registry=r,
        )
        # Fed by the scheduler's resource dependencies and by the stall detector (built
        # alongside; they call record_resource_wait / set_stalled_tasks, or observe() their
        # events). Until then they stay at zero, which the alert rules read as "no problem".
        self.resource_waits = Counter(
            "maos_resource_waits",
            "Task starts that waited for a resource held by other tasks, by resource.",
            ["resource"],
            registry=r,
        )
        self.resource_wait = Histogram(
            "maos_resource_wait_seconds",
            "Time tasks waited for a resource, from ready to the resource granted.",
            ["resource"],
            buckets=_DURATION_BUCKETS_S,
            registry=r,
        )
        self.stalled_tasks = Gauge(
            "maos_stalled_tasks",
            "Tasks of the current run that are ready but that no agent can take (stalled).",
            registry=r,
        )
        self.cost_usd = Counter("maos_cost_usd", "Model cost reported by agents, in US dollars.", registry=r)
        self.tokens = Counter(
            "maos_tokens", "Model tokens reported by agents, by kind.", ["kind"], registry=r
        )

        # Create every known label value now so that each series exists (at 0) from the start.
        for state in TaskState:
            self.tasks.labels(state.value)
        for outcome in ("succeeded", "failed"):
            self.task_attempts.labels(outcome)
            self.task_duration.labels(outcome)
        for status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED):
            self.runs_finished.labels(status.value)
        for kind in CHECKPOINT_KINDS:
            self.checkpoint_duration.labels(kind)
            self.checkpoint_bytes.labels(kind)
        for kind in TOKEN_KINDS:
            self.tokens.labels(kind)
        for direction in ("sent", "received"):
            self.messages.labels(direction)
        for kind in CAS_KINDS:
            self.cas_conflicts.labels(kind)
        for kind in ANOMALY_KINDS:
            self.anomalies.labels(kind)

        self._task_state: dict[str, TaskState] = {}
        self._assigned_at: dict[str, float] = {}  # task id -> task_assigned ts of its attempt
        self._resource_waits: dict[str, dict[str, float]] = {}  # task -> resource -> waiting since
        self._busy_agents: dict[str, str] = {}  # agent id -> task id
        self._interrupted = False  # shown as interrupted (set_interrupted)
        self._sampled: dict[str, str] = {}  # agent id -> task id of its latest agent_stats
        self._unread: dict[str, None] = {}  # ids of direct messages sent, not read yet (ordered)
        self._stalled: set[str] = set()  # READY tasks reported stalled (task_stalled), not taken since
        self._lost_workers: set[str] = set()  # lost, and not seen starting an attempt since

    # ------------------------------------------------------------------ the hook
    def observe(self, event_id: str, event: Event, state: RunState) -> None:
        """Update the metrics for one event; ``state`` already includes it (orchestrator hook)."""
        self.events.labels(event.type).inc()
        if self._interrupted:  # someone drives the run again: the counts are the log's
            self.set_interrupted(False)
        if not state.applied:
            if state.rejections and state.rejections[-1].event_id == event_id:
                self.rejected.labels("stale" if state.rejections[-1].stale else "invalid").inc()
            return  # a stale report or a rejected event: apply() changed nothing either
        match event:
            case RunStarted():
                self.runs_started.inc()
                self._task_state = dict.fromkeys(state.tasks, TaskState.PENDING)
                self._assigned_at.clear()
                self._busy_agents.clear()
                for task_state in TaskState:
                    self.tasks.labels(task_state.value).set(0)
                self.tasks.labels(TaskState.PENDING.value).set(len(state.tasks))
                self.active_agents.set(0)
                self.run_cost_usd.set(0)
                self.run_budget_usd.set(event.config.max_cost_usd or 0)
                self.stalled_tasks.set(0)
                self._stalled.clear()
                for agent_id in list(self._sampled):
                    self._drop_samples(agent_id)
                return
            case RunResumed():
                self.run_resumes.inc()
                return
            case MessageSent():
                self.messages.labels("sent").inc()
                if event.cas_conflicts:
                    self.record_cas_conflict(event.cas_conflicts, kind="bus")
                if event.to is not None:
                    self._unread[event.message_id] = None
                    if len(self._unread) > _MAX_UNREAD:
                        del self._unread[next(iter(self._unread))]
                    self.message_backlog.set(len(self._unread))
                return
            case MessagesRead():
                self.messages.labels("received").inc(event.count)
                for latency_s in event.latency_s:
                    self.message_latency.observe(latency_s)
                for message_id in event.message_ids:
                    self._unread.pop(message_id, None)
                self.message_backlog.set(len(self._unread))
                return
            case StateWritten():
                if event.cas_conflicts:
                    self.record_cas_conflict(event.cas_conflicts, kind="state")
                return
            case StateCasFailed():
                self.record_cas_conflict(kind="state")
                return
            case AgentStats():
                self.agent_cpu.labels(event.agent_id).set(event.cpu_percent)
                self.agent_rss.labels(event.agent_id).set(event.rss_bytes)
                self.agent_idle.labels(event.agent_id).set(event.idle_s)
                self._sampled[event.agent_id] = event.task_id
                return
            case AgentAnomaly():
                self.anomalies.labels(event.kind).inc()
                return
            case RunFinished():
                self.runs_finished.labels(event.status.value).inc()
                return
            case AgentOutput():
                self.output_lines.labels(event.stream).inc()
                return
            case TaskAssigned():
                self._assigned_at[event.task_id] = event.ts
                for resource, since in self._resource_waits.pop(event.task_id, {}).items():
                    self.record_resource_wait(resource, max(0.0, event.ts - since))
            case ResourceWait():  # until its task_assigned (maos.constraints)
                waits = self._resource_waits.setdefault(event.task_id, {})
                for resource in event.resources:
                    waits.setdefault(resource, event.ts)
            case TaskStarted():
                self._lost_workers.discard(event.worker)
                assigned_at = self._assigned_at.pop(event.task_id, None)
                if assigned_at is not None:
                    self.record_spawn(max(0.0, event.ts - assigned_at))
            case TaskSucceeded():
                self.task_attempts.labels("succeeded").inc()
                self.task_duration.labels("succeeded").observe(event.duration_s)
                self._usage(event.usage)
            case TaskFailed():
                self.task_attempts.labels("failed").inc()
                self.task_duration.labels("failed").observe(event.duration_s)
                self._usage(event.usage)
                if event.lost_worker is not None and event.lost_worker not in self._lost_workers:
                    self._lost_workers.add(event.lost_worker)  # one loss, however many attempts
                    self.record_missed_heartbeat()
            case TaskRetried():
                self.retries.inc()
            case TaskRequeued():
                self.requeues.inc()
            case CheckpointTaken():
                self.record_checkpoint(event.duration_s, event.bytes, kind="full")
                self.last_checkpoint.set(event.ts)
            case TaskWarning():
                self.warnings.inc()
                return
            case AgentApiRetry():
                status = str(event.error_status) if event.error_status is not None else "connection"
                self.api_retries.labels(status).inc()
                return
            case _:
                pass
        task_id = getattr(event, "task_id", None)
        if task_id is not None:
            self._task_changed(task_id, state)

    def _usage(self, usage: Usage | None) -> None:
        if usage is None:
            return
        self.record_cost(usage.cost_usd)
        self.run_cost_usd.inc(max(0.0, usage.cost_usd))
        self.record_tokens(
            input=usage.input_tokens,
            output=usage.output_tokens,
            cache_read=usage.cache_read_tokens,
            cache_creation=usage.cache_creation_tokens,
        )

    def _task_changed(self, task_id: str, state: RunState) -> None:
        task = state.tasks.get(task_id)
        if task is None:
            return
        old = self._task_state.get(task_id)
        if old is not task.state:
            if old is not None:
                self.tasks.labels(old.value).dec()
            self.tasks.labels(task.state.value).inc()
            self._task_state[task_id] = task.state
        if task.state in (TaskState.ASSIGNED, TaskState.RUNNING) and task.agent_id:
            self._busy_agents[task.agent_id] = task_id
        else:
            for agent_id, busy_with in list(self._busy_agents.items()):
                if busy_with == task_id:
                    del self._busy_agents[agent_id]
            for agent_id, sampled_on in list(self._sampled.items()):
                if sampled_on == task_id:
                    self._drop_samples(agent_id)
            self._assigned_at.pop(task_id, None)
        self.active_agents.set(len(self._busy_agents))
        if task.stalled and task.state is TaskState.READY:  # the stall detector (maos.stalls)
            self._stalled.add(task_id)
        elif task_id in self._stalled:
            self._stalled.discard(task_id)
        else:
            return
        self.set_stalled_tasks(len(self._stalled))

    def set_interrupted(self, interrupted: bool) -> None:
        """Whether the run is interrupted now (``maos.liveness``: no live orchestrator holds
        it), for a dashboard that follows the log from outside the run. An interrupted run has
        no live agent, whatever its log said last: they died with their host. Its tasks the
        log says are assigned or running count as ``maos_tasks{state="interrupted"}``."""
        self.run_interrupted.set(1 if interrupted else 0)
        self._interrupted = interrupted
        counts = dict.fromkeys((*(state.value for state in TaskState), INTERRUPTED_TASKS), 0)
        for task_state in self._task_state.values():
            gone = interrupted and task_state in (TaskState.ASSIGNED, TaskState.RUNNING)
            counts[INTERRUPTED_TASKS if gone else task_state.value] += 1
        for label, count in counts.items():
            self.tasks.labels(label).set(count)
        if interrupted:
            self.active_agents.set(0)
            for agent_id in list(self._sampled):
                self._drop_samples(agent_id)
        else:
            self.active_agents.set(len(self._busy_agents))

    def _drop_samples(self, agent_id: str) -> None:
        """The agent's task ended: its last sample is no longer its current state."""
        del self._sampled[agent_id]
        for gauge in (self.agent_cpu, self.agent_rss, self.agent_idle):
            with contextlib.suppress(KeyError):
                gauge.remove(agent_id)

    # ------------------------------------------------------------------ fed by other components
    def record_spawn(self, seconds: float) -> None:
        """An agent process was spawned in ``seconds`` (``observe`` calls this per attempt)."""
        self.spawn.observe(seconds)

    def record_checkpoint(self, duration_s: float, size_bytes: int, *, kind: str = "full") -> None:
        """A checkpoint (``full`` or ``incremental``) of ``size_bytes`` took ``duration_s``."""
        if kind not in CHECKPOINT_KINDS:
            raise ValueError(f"checkpoint kind must be one of {', '.join(CHECKPOINT_KINDS)}, not {kind!r}")
        self.checkpoint_duration.labels(kind).observe(duration_s)
        self.checkpoint_bytes.labels(kind).observe(size_bytes)

    def record_cas_conflict(self, count: int = 1, *, kind: str = "state") -> None:
        """``count`` compare-and-set writes (of shared ``state`` or a ``bus`` sequence
        counter) found the version changed under them."""
        if kind not in CAS_KINDS:
            raise ValueError(f"CAS kind must be one of {', '.join(CAS_KINDS)}, not {kind!r}")
        self.cas_conflicts.labels(kind).inc(count)

    def record_missed_heartbeat(self, count: int = 1) -> None:
        """``count`` heartbeats were missed (a lease expired without renewal)."""
        self.missed_heartbeats.inc(count)

    def record_resource_wait(self, resource: str, seconds: float) -> None:
        """A task waited ``seconds`` for ``resource`` (held by others) before it could start."""
        if seconds < 0:
            raise ValueError(f"a wait must be >= 0 seconds, not {seconds}")
        self.resource_waits.labels(resource).inc()
        self.resource_wait.labels(resource).observe(seconds)

    def set_stalled_tasks(self, count: int) -> None:
        """``count`` tasks of the current run are stalled (ready, and no agent can take them)."""
        if count < 0:
            raise ValueError(f"stalled tasks must be >= 0, not {count}")
        self.stalled_tasks.set(count)

    def record_cost(self, usd: float) -> None:
        """An agent reported ``usd`` of model cost (``observe`` calls this per attempt)."""
        if usd < 0:
            raise ValueError(f"cost must be >= 0, not {usd}")
        self.cost_usd.inc(usd)

    def record_tokens(
        self, *, input: int = 0, output: int = 0, cache_read: int = 0, cache_creation: int = 0
    ) -> None:
        """An agent reported token usage (``observe`` calls this per attempt)."""
        for kind, count in (
            ("input", input),
            ("output", output),
            ("cache_read", cache_read),
            ("cache_creation", cache_creation),
        ):
            if count < 0:
                raise ValueError(f"{kind} tokens must be >= 0, not {count}")
            if count:
                self.tokens.labels(kind).inc(count)

    # ------------------------------------------------------------------ exposition
    def render(self) -> bytes:
        """The registry in the Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(_WithoutCreated(self.registry))


class _WithoutCreated:
    """The registry without ``*_created`` series: in the text format each would show up as a
    gauge family of its own, doubling the output for a timestamp nobody graphs."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():  # fresh Metric objects on every collect
            metric.samples = [sample for sample in metric.samples if not sample.name.endswith("_created")]
            yield metric
