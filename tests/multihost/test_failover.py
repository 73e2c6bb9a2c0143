"""Failover across simulated hosts (ADR 0012): in the middle of a run, the orchestrator is
killed or cut off from Redis, a worker is cut off, or Redis restarts (with its data, or empty).

Six hosts on one switch: ``redis``; ``worker-a`` and ``worker-b`` running ``maos worker``;
``orch`` running ``maos run --workers-only`` (no agent runs there); ``sup-a`` and ``sup-b``
running ``maos supervisor``. Each host has its own hostname, so a supervisor cannot tell that
the orchestrator died by looking at its own process table: it learns it from the run's lease,
as it would across real machines.

The plan's tasks are commands that sleep, then append ``TASK ATTEMPT HOST`` to their task's
ledger file (the namespaces share the filesystem): the side effect the tests count. A stopped
attempt dies in its sleep and leaves no line; an attempt that finished but no longer counts
(superseded, its worker cut off) may leave one, so lines are compared per attempt with what
the log says succeeded.

Faults are injected once the log shows the run mid-way (tasks succeeded, others running),
and every wait polls with a deadline; only how long a partition lasts is a fixed time.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from maos.errors import MaosError
from maos.events import (
    CheckpointTaken,
    Event,
    RunFinished,
    RunRestored,
    RunResumed,
    TaskAssigned,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)
from maos.model import RunState, RunStatus, TaskState

from .maos_cli import inspect_argv, maos_env, new_key, run_argv, supervisor_argv, worker_argv
from .netns import HOSTNAME, UNSHARE, Topology
from .polling import wait_until
from .processes import HostProcess, Processes
from .redis_node import RedisNode
from .run_log import RunLog, read_log, run_index

HOSTS = ("redis", "worker-a", "worker-b", "orch", "sup-a", "sup-b")
WORKERS = ("worker-a", "worker-b")
SUPERVISORS = ("sup-a", "sup-b")

LEASE_S = 2.0
"""Every lease: orchestrator, workers, and the runs supervisors take over."""
PARTITION_S = 2.5 * LEASE_S
"""How long a cut-off host stays cut off: well past its lease."""
SHORT_S = 1.0
LONG_S = 2 * LEASE_S
"""Long tasks are still running when a takeover or a lost worker's lease ends their attempt."""
RETRY_BASE_S = 0.2
CAPACITY = 2
"""Per worker: the run's four agents' work is spread over both workers."""
RUN_DEADLINE_S = 60.0
"""A run of PLAN ends within this, on a slow machine too (an assignment whose delivery a Redis
crash lost is taken up after `LOST_DELIVERY_S`-`2 x LOST_DELIVERY_S`)."""
POLL_S = 0.2

PLAN: Mapping[str, tuple[str, ...]] = {
    "a0": (), "a1": (), "a2": (), "a3": (), "a4": (), "a5": (),
    "b0": ("a0", "a1"), "b1": ("a2", "a3"), "b2": ("a4", "a5"), "b3": ("a0", "a5"),
    "c0": ("b0", "b1"), "c1": ("b2", "b3"), "c2": ("b1",), "c3": ("b0", "b2"),
    "d0": ("c0", "c1", "c2", "c3"), "d1": ("c1",),
}  # fmt: skip
"""16 tasks in four layers, ~10 s on four agents; the "b" layer's tasks are long."""
LONG = frozenset({"b0", "b1", "b2", "b3", "q0", "q1"})


def write_plan(
    path: Path, ledger: Path, tasks: Mapping[str, tuple[str, ...]], *, long: frozenset[str] = frozenset()
) -> Path:
    """A plan of command tasks that sleep (``LONG_S`` for the ``long`` ones, else ``SHORT_S``),
    then append ``TASK ATTEMPT HOST`` to ``ledger/TASK``."""
    record = (
        'sleep {seconds} && echo "$MAOS_TASK_ID $MAOS_ATTEMPT $(hostname)" '
        f'>> {shlex.quote(str(ledger))}/"$MAOS_TASK_ID"'
    )
    plan = {
        "name": path.stem,
        "tasks": [
            {
                "id": task,
                "command": record.format(seconds=LONG_S if task in long else SHORT_S),
                "depends_on": list(deps),
            }
            for task, deps in tasks.items()
        ],
    }
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


LOG_TAIL = 80
"""Events of a run's log shown when a test fails."""
NOISE = frozenset({"agent_output", "agent_stats"})


def summarize(event: Event) -> str:
    """One line of an event's type and the fields that matter here."""
    fields = ("task_id", "attempt", "epoch", "worker", "owner", "status", "reason")
    shown = " ".join(f"{name}={getattr(event, name)!r}" for name in fields if hasattr(event, name))
    return f"{event.type} {shown}"


def owner_host(owner: str) -> str:
    """The host of a lease owner ``orchestrator HOST:PID (nonce)``."""
    return owner.split()[1].rpartition(":")[0]


@dataclass(frozen=True, slots=True)
class Line:
    """One ledger line: an attempt of a task ran its side effect on a host."""

    task: str
    attempt: int
    host: str


@dataclass
class Cluster:
    """The six hosts with Redis, both workers and both supervisors running."""

    topology: Topology
    redis: RedisNode
    processes: Processes
    env: dict[str, str]
    root: Path
    workers: dict[str, HostProcess] = field(default_factory=dict)
    supervisors: dict[str, HostProcess] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)

    @property
    def ledger(self) -> Path:
        return self.root / "ledger"

    def home(self, host: str) -> Path:
        return self.root / "hosts" / host

    def describe(self) -> str:
        """The processes' states and log tails, and the tail of each run's log, for failures."""
        parts = [proc.describe() for proc in self.processes.all()]
        for run_id in self.runs:
            try:
                log = self.log(run_id, from_host="redis")
            except (MaosError, OSError) as exc:
                parts.append(f"run {run_id}: log not readable: {exc}")
                continue
            events = [
                f"{entry.id} {summarize(entry.event)}{'' if entry.applied else ' (rejected)'}"
                for entry in log.entries
                if entry.event.type not in NOISE
            ]
            parts.append(f"run {run_id}, last {LOG_TAIL} events:\n" + "\n".join(events[-LOG_TAIL:]))
        return "\n".join(parts)

    def start(self, host: str, argv: list[str], name: str) -> HostProcess:
        return self.processes.start(self.topology[host], argv, env=self.env, cwd=self.home(host), name=name)

    def plan(self, name: str, tasks: Mapping[str, tuple[str, ...]] = PLAN) -> Path:
        return write_plan(self.home("orch") / f"{name}.yaml", self.ledger, tasks, long=LONG)

    def start_run(self, plan: Path, *, checkpoint_every_s: float | None = None) -> tuple[HostProcess, str]:
        """``maos run PLAN`` on ``orch`` (full checkpoints every ``checkpoint_every_s``, into
        ``orch``'s home), and the run's id once it is in the run index."""
        argv = run_argv(
            plan.name,
            self.redis.url(),
            lease_s=LEASE_S,
            retry_base_s=RETRY_BASE_S,
            checkpoint_every_s=checkpoint_every_s,
        )
        run = self.start("orch", argv, "maos-run")
        found: list[str] = []

        def listed() -> bool:
            if not run.running():
                raise AssertionError(f"the run exited before it was listed:\n{run.describe()}")
            try:
                found[:] = [record.run_id for record in run_index(self.topology["sup-a"], self.redis.url())]
            except MaosError:
                return False
            return bool(found)

        wait_until(listed, timeout_s=20, what="the run in the run index", interval_s=POLL_S)
        assert len(found) == 1, found
        self.runs.append(found[0])
        return run, found[0]

    def log(self, run_id: str, *, from_host: str = "sup-b") -> RunLog:
        return read_log(self.topology[from_host], self.redis.url(), run_id)

    def wait_log(
        self,
        run_id: str,
        check: Callable[[RunLog], bool],
        *,
        what: str,
        timeout_s: float = RUN_DEADLINE_S,
        from_host: str = "sup-b",
    ) -> RunLog:
        """Poll the run's log until ``check`` holds; that log. A store that does not answer
        (Redis restarting) is polled again."""
        latest: list[RunLog] = []

        def holds() -> bool:
            try:
                latest[:] = [self.log(run_id, from_host=from_host)]
            except MaosError:
                return False
            return check(latest[0])

        wait_until(holds, timeout_s=timeout_s, what=what, interval_s=POLL_S, describe=self.describe)
        return latest[0]

    def wait_mid_run(self, run_id: str, *, running_on: str | None = None) -> RunLog:
        """The log once 4 tasks have succeeded and a long one runs (on worker ``running_on``)."""

        def mid_run(log: RunLog) -> bool:
            assert log.finished is None, "the run finished before the fault"
            running = {
                task_id
                for task_id, task in log.state.tasks.items()
                if task.state is TaskState.RUNNING and running_on in (None, task.worker)
            }
            return len(log.in_state(TaskState.SUCCEEDED)) >= 4 and bool(running & LONG)

        where = f" on {running_on}" if running_on else ""
        return self.wait_log(run_id, mid_run, what=f"the run mid-way (a long task running{where})")

    def wait_finished(self, run_id: str, *, from_host: str = "sup-b") -> RunLog:
        return self.wait_log(
            run_id, lambda log: log.finished is not None, what=f"run {run_id} finishing", from_host=from_host
        )

    def lines(self) -> list[Line]:
        found: list[Line] = []
        for path in sorted(self.ledger.iterdir()):
            for text in path.read_text().splitlines():
                task, attempt, host = text.split()
                assert task == path.name, (path, text)
                found.append(Line(task, int(attempt), host))
        return found

    def check_outcome(self, log: RunLog) -> list[Line]:
        """The run succeeded, every task exactly once in the log; its side effects: one line
        per succeeded attempt, at most one per attempt, all on worker hosts. The lines.

        A log rebuilt from a checkpoint (it starts with ``run_restored``) holds only the
        successes of tasks the checkpoint had not seen succeed. The tasks whose success was
        lost with the old log (``rerun``) ran again, possibly under an attempt number they
        had already run as: up to two lines per attempt for those."""
        restored = restored_from(log)
        succeeded_before = set() if restored is None else succeeded_in(restored_state(restored))
        rerun = set() if restored is None else set(restored.rerun)
        finished = log.finished
        assert finished is not None, self.describe()
        assert finished.status is RunStatus.SUCCEEDED, (finished, self.describe())
        assert len(log.of_type(RunFinished, applied_only=True)) == 1
        state = log.state
        assert state.counts() == {
            **{name.value: 0 for name in TaskState},
            "succeeded": len(state.tasks),
        }, state.counts()
        successes = Counter(event.task_id for _, event in log.of_type(TaskSucceeded, applied_only=True))
        # each task succeeded exactly once: in this log, or before the checkpoint it restarted from
        assert successes == Counter(sorted(set(state.tasks) - succeeded_before)), (
            successes,
            succeeded_before,
        )

        lines = self.lines()
        per_attempt = Counter((line.task, line.attempt) for line in lines)
        twice = {key: count for key, count in per_attempt.items() if count > (2 if key[0] in rerun else 1)}
        assert not twice, f"attempts whose side effect ran more than once: {twice} (rerun: {sorted(rerun)})"
        for task_id, task in state.tasks.items():
            assert 1 <= per_attempt[(task_id, task.attempts)] <= (2 if task_id in rerun else 1), (
                f"{task_id}: succeeded attempt {task.attempts} left "
                f"{per_attempt[(task_id, task.attempts)]} ledger lines: "
                f"{[line for line in lines if line.task == task_id]}"
            )
        assert {line.host for line in lines} <= set(WORKERS), lines  # no agent ran elsewhere
        return lines

    def check_inspection(self, run_id: str, *, from_host: str = "sup-b") -> None:
        """``maos status RUN --json`` and ``maos runs --json`` read the log: exit 0, the run
        succeeded, every task of it."""
        host = self.topology[from_host]
        status = self.processes.run(
            host,
            inspect_argv(self.redis.url(), "status", run_id),
            env=self.env,
            cwd=self.home(from_host),
            timeout_s=30,
            name="maos-status",
        )
        assert status.returncode == 0, status.describe()
        summary: dict[str, Any] = json.loads(status.stdout())
        assert summary["status"] == "succeeded", status.describe()
        assert summary["counts"] == {"succeeded": len(summary["tasks"])}, status.describe()
        runs = self.processes.run(
            host,
            inspect_argv(self.redis.url(), "runs"),
            env=self.env,
            cwd=self.home(from_host),
            timeout_s=30,
            name="maos-runs",
        )
        assert runs.returncode == 0, runs.describe()
        listed: list[dict[str, Any]] = json.loads(runs.stdout())
        records = {record["run_id"]: record for record in listed}
        assert records[run_id]["status"] == "succeeded", records

    def check_still_serving(self) -> None:
        for proc in (*self.workers.values(), *self.supervisors.values()):
            assert proc.running(), proc.describe()


@pytest.fixture
def make_cluster(
    make_topology: Callable[..., Topology],
    make_redis: Callable[..., RedisNode],
    processes: Processes,
    tmp_path: Path,
) -> Callable[..., Cluster]:
    """``make_cluster(persistent=False)``: the hosts, Redis, the workers and the supervisors."""
    if UNSHARE is None or HOSTNAME is None:
        pytest.skip("failover tests need `unshare` and `hostname` to give each host its own name")

    def make(*, persistent: bool = False) -> Cluster:
        topology = make_topology(*HOSTS)
        redis = make_redis(topology["redis"], persistent=persistent)
        cluster = Cluster(topology, redis, processes, maos_env(new_key()), tmp_path)
        cluster.ledger.mkdir()
        for name in HOSTS:
            cluster.home(name).mkdir(parents=True)
        url = redis.url()
        for name in WORKERS:
            argv = worker_argv(url, name, capacity=CAPACITY, lease_s=LEASE_S)
            cluster.workers[name] = cluster.start(name, argv, f"maos-{name}")
        for name in SUPERVISORS:
            cluster.supervisors[name] = cluster.start(name, supervisor_argv(url, name, lease_s=LEASE_S), name)
        # Ready once each has said so in Redis (RedisStore's keys): the lease of each worker,
        # the announcement of each supervisor.
        ready = [f"maos:lease:{{maos:worker:{name}}}" for name in WORKERS]  # a tag of its own
        ready += [f"maos:kv:maos:supervisor:{name}" for name in SUPERVISORS]
        wait_until(
            lambda: redis.command("EXISTS", *ready) == f":{len(ready)}\r\n".encode(),
            timeout_s=20,
            what="the workers and supervisors registered",
            interval_s=POLL_S,
            describe=cluster.describe,
        )
        return cluster

    return make


def restored_from(log: RunLog) -> RunRestored | None:
    """The ``run_restored`` a rebuilt log starts with (applied), or None."""
    found = log.of_type(RunRestored)
    if not found:
        return None
    assert [at for at, _ in found] == [0], f"run_restored is not the log's first event (only): {found}"
    assert log.entries[0].applied, log.state.rejections
    return found[0][1]


def restored_state(restored: RunRestored) -> RunState:
    """The checkpoint's state a ``run_restored`` carries."""
    return RunState.model_validate_json(restored.state_json)


def succeeded_in(state: RunState) -> set[str]:
    return {task_id for task_id, task in state.tasks.items() if task.state is TaskState.SUCCEEDED}


def wait_exit(proc: HostProcess, timeout_s: float, cluster: Cluster) -> int:
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{proc.name} still runs after {timeout_s} s:\n{cluster.describe()}") from None


@pytest.mark.slow
def test_a_supervisor_finishes_the_run_of_a_killed_orchestrator(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster()
    run, run_id = cluster.start_run(cluster.plan("killed"))
    cluster.wait_mid_run(run_id)

    cluster.processes.kill(run, signal.SIGKILL)
    assert wait_exit(run, 5, cluster) == -signal.SIGKILL

    log = cluster.wait_finished(run_id)
    lines = cluster.check_outcome(log)
    resumed = log.of_type(RunResumed)
    assert len(resumed) == 1, f"one supervisor takes over, not {len(resumed)}: {resumed}"
    takeover_at, takeover = resumed[0]
    assert owner_host(takeover.owner) in SUPERVISORS, takeover
    # Nothing that had succeeded before the takeover ran again: one line, no new assignment.
    done_before = {
        event.task_id for at, event in log.of_type(TaskSucceeded, applied_only=True) if at < takeover_at
    }
    assert done_before, "no task had succeeded before the takeover"
    for task_id in done_before:
        ran = [line.attempt for line in lines if line.task == task_id]
        assert ran == [log.state.tasks[task_id].attempts], f"{task_id} ran again: attempts {ran}"
    assigned_after = {event.task_id for at, event in log.of_type(TaskAssigned) if at > takeover_at}
    assert not assigned_after & done_before, assigned_after & done_before
    cluster.check_inspection(run_id)
    cluster.check_still_serving()


@pytest.mark.slow
def test_a_partitioned_orchestrator_is_taken_over_and_exits_without_writing(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    run, run_id = cluster.start_run(cluster.plan("partitioned-orchestrator"))
    cluster.wait_mid_run(run_id)

    cluster.topology.partition("orch")
    cut_at = time.monotonic()
    cluster.wait_log(run_id, lambda log: bool(log.of_type(RunResumed)), what="a supervisor's takeover")
    time.sleep(max(0.0, cut_at + PARTITION_S - time.monotonic()))
    assert run.running(), f"the old orchestrator exited while cut off:\n{run.describe()}"
    cluster.topology.heal("orch")

    code = wait_exit(run, 30, cluster)  # it learns it was taken over once it reaches Redis
    assert code not in (0, None), run.describe()
    assert "lost lease" in run.stderr() or "taken over" in run.stderr(), run.describe()

    log = cluster.wait_finished(run_id)
    cluster.check_outcome(log)
    resumed = log.of_type(RunResumed)
    assert len(resumed) == 1, resumed
    takeover_at, takeover = resumed[0]
    assert owner_host(takeover.owner) in SUPERVISORS, takeover
    assigned = log.of_type(TaskAssigned)
    old = {event.epoch for at, event in assigned if at < takeover_at}
    assert old, "nothing was assigned before the takeover"
    assert max(old) < takeover.epoch, (old, takeover)
    late = [(at, event) for at, event in assigned if at > takeover_at and event.epoch != takeover.epoch]
    assert not late, f"assignments of an older epoch after the takeover: {late}"

    cluster.check_inspection(run_id)
    # The old orchestrator did not overwrite the run's record either.
    (record,) = run_index(cluster.topology["redis"], cluster.redis.url())
    assert (record.owner, record.epoch) == (takeover.owner, takeover.epoch), record
    assert record.status is RunStatus.SUCCEEDED, record
    cluster.check_still_serving()


def lost_on(log: RunLog, worker: str) -> dict[tuple[str, int], int]:
    """``(task, attempt)`` of the attempts the orchestrator declared lost with ``worker``, and
    where in the log it did."""
    return {
        (event.task_id, event.attempt): at
        for at, event in log.of_type(TaskFailed, applied_only=True)
        if event.reason.startswith(f"lost: worker {worker!r}")
    }


@pytest.mark.slow
def test_the_tasks_of_a_partitioned_worker_move_and_it_rejoins(make_cluster: Callable[..., Cluster]) -> None:
    """worker-a is cut off mid-run: its attempts are declared lost and run again on worker-b.
    It comes back before the run ends, rejoins, and the run finishes with both workers."""
    cluster = make_cluster()
    run, run_id = cluster.start_run(cluster.plan("partitioned-worker"))
    cluster.wait_mid_run(run_id, running_on="worker-a")

    cluster.topology.partition("worker-a")
    cut_at = time.monotonic()

    def declared_lost(log: RunLog) -> bool:
        assert log.finished is None, "the run finished before worker-a's attempts were declared lost"
        return bool(lost_on(log, "worker-a"))

    cluster.wait_log(run_id, declared_lost, what="worker-a's attempts declared lost", from_host="orch")
    time.sleep(max(0.0, cut_at + PARTITION_S - time.monotonic()))
    worker = cluster.workers["worker-a"]
    seen = len(worker.stderr())
    at_heal = cluster.log(run_id, from_host="orch")  # whatever follows it was logged after the heal
    assert at_heal.finished is None, f"the run finished before the heal:\n{cluster.describe()}"
    cluster.topology.heal("worker-a")

    wait_until(
        lambda: "rejoined" in worker.stderr()[seen:],
        timeout_s=30,
        what="worker-a rejoining after the heal",
        interval_s=POLL_S,
        describe=worker.describe,
    )
    assert "cut off from the store" in worker.stderr()[:seen], worker.describe()
    assert wait_exit(run, RUN_DEADLINE_S, cluster) == 0, run.describe()
    log = cluster.log(run_id)  # with whatever worker-a reported late, after the heal
    lines = cluster.check_outcome(log)
    lost = lost_on(log, "worker-a")
    started_cut_off = {
        (event.task_id, event.attempt): event.worker
        for _, event in at_heal.of_type(TaskStarted, applied_only=True)
    }
    for task_id, attempt in lost:
        task = log.state.tasks[task_id]
        assert task.attempts > attempt, (task_id, task)
        # Run again on worker-b while worker-a was cut off; or, if still queued at the heal,
        # on either worker.
        assert started_cut_off.get((task_id, task.attempts), "worker-b") == "worker-b", (task_id, task)
        ran = [line.host for line in lines if (line.task, line.attempt) == (task_id, task.attempts)]
        assert ran == [task.worker], (task_id, ran)
    # Nothing of worker-a's reached the log while it was cut off, and it took work again.
    first_lost = min(lost_on(at_heal, "worker-a").values())
    cut_off_starts = {event.worker for at, event in at_heal.of_type(TaskStarted) if at > first_lost}
    assert cut_off_starts <= {"worker-b"}, cut_off_starts
    healed_at = len(at_heal.entries)
    after_heal = {
        event.worker for at, event in log.of_type(TaskStarted, applied_only=True) if at >= healed_at
    }
    assert "worker-a" in after_heal, f"worker-a took no work after it rejoined:\n{cluster.describe()}"
    # worker-a's late reports of its lost attempts, if any got through, changed nothing.
    for at, entry in enumerate(log.entries):
        report = entry.event
        if isinstance(report, TaskStarted | TaskSucceeded | TaskFailed):
            key = (report.task_id, report.attempt)
            if key in lost and at > lost[key]:
                assert not entry.applied, (report, log.state.rejections)
    reports = {"task_started", "task_succeeded", "task_failed", "task_requeued"}
    assert all(rejection.stale for rejection in log.state.rejections if rejection.type in reports), (
        log.state.rejections
    )
    cluster.check_inspection(run_id)
    cluster.check_still_serving()


class RunHung(AssertionError):
    """A run that should have finished is still running."""


@pytest.mark.slow
def test_a_worker_that_rejoins_runs_the_work_queued_while_it_was_cut_off(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Its first renewal after a long wait to take its lease back still goes out (and proves
    the lease is its own), and attempts it had to stop are reported lost, so they run again."""
    cluster = make_cluster()
    assert cluster.processes.stop(cluster.workers.pop("worker-b"), grace_s=15) == 0  # worker-a alone
    worker = cluster.workers["worker-a"]

    cluster.topology.partition("worker-a")
    cut_at = time.monotonic()
    wait_until(
        lambda: "cut off from the store" in worker.stderr(),
        timeout_s=20,
        what="worker-a losing its lease",
        interval_s=POLL_S,
        describe=worker.describe,
    )
    cut_off_at = time.monotonic()
    run, run_id = cluster.start_run(cluster.plan("queued", {"q0": (), "q1": ()}))
    cluster.wait_log(
        run_id, lambda log: len(log.of_type(TaskAssigned)) == 2, what="both tasks queued", from_host="orch"
    )
    # Long enough that its pending call to take its lease back outlasts a lease.
    heal_at = max(cut_at + PARTITION_S, cut_off_at + 1.5 * LEASE_S)
    time.sleep(max(0.0, heal_at - time.monotonic()))
    cluster.topology.heal("worker-a")

    try:
        run.wait(2 * LONG_S + 6)  # the rejoin at the heal, then one long task
    except subprocess.TimeoutExpired:
        raise RunHung(f"the run did not finish:\n{cluster.describe()}") from None
    assert run.returncode == 0, run.describe()
    lines = cluster.check_outcome(cluster.log(run_id))
    assert {line.host for line in lines} == {"worker-a"}, lines
    cluster.check_inspection(run_id)
    cluster.check_still_serving()


@pytest.mark.slow
def test_the_run_goes_on_across_a_restart_of_a_persistent_redis(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(persistent=True)
    run, run_id = cluster.start_run(cluster.plan("redis-restart"))
    cluster.wait_mid_run(run_id)

    cluster.redis.restart(crash=True)  # SIGKILL: appendfsync always had every reply on disk

    assert wait_exit(run, RUN_DEADLINE_S, cluster) == 0, run.describe()
    assert json.loads(run.stdout())["counts"] == {"succeeded": len(PLAN)}, run.describe()
    log = cluster.log(run_id)
    cluster.check_outcome(log)
    # Its lease (2 s) may run out while a loaded machine restarts Redis: then the orchestrator
    # takes its own run back (a run_resumed of its own). No other host may have to.
    taken = [owner_host(event.owner) for _, event in log.of_type(RunResumed)]
    assert set(taken) <= {"orch"}, f"the run was taken over by {taken}: the orchestrator should keep it"
    cluster.check_inspection(run_id)
    cluster.check_still_serving()


CHECKPOINT_EVERY_S = 1.0
"""The orchestrator's full checkpoints when Redis may come back empty: its minimum."""


@pytest.mark.slow
def test_a_run_is_rebuilt_from_its_checkpoint_when_redis_comes_back_empty(
    make_cluster: Callable[..., Cluster],
) -> None:
    """The orchestrator's lease goes with the data: it takes the run back, finds its log
    empty, starts it again from its newest checkpoint (``run_restored``), re-queues what was
    in flight and finishes the run. The work queue is created again and both workers rejoin;
    no supervisor takes the run."""
    cluster = make_cluster(persistent=False)
    run, run_id = cluster.start_run(cluster.plan("redis-lost"), checkpoint_every_s=CHECKPOINT_EVERY_S)
    cluster.wait_mid_run(run_id)

    def checkpointed(log: RunLog) -> bool:
        """A long task runs and a full checkpoint covers the last success."""
        assert log.finished is None, "the run finished before the fault"
        successes = log.of_type(TaskSucceeded, applied_only=True)
        covered = [event.covers_events or 0 for _, event in log.of_type(CheckpointTaken, applied_only=True)]
        long_running = log.in_state(TaskState.RUNNING) & LONG
        return bool(successes and long_running) and max(covered, default=0) > successes[-1][0]

    before = cluster.wait_log(run_id, checkpointed, what="a full checkpoint of the run mid-way")
    seen = {name: len(worker.stderr()) for name, worker in cluster.workers.items()}
    cluster.redis.restart(persistent=False)  # stop, start: the data is gone

    assert wait_exit(run, RUN_DEADLINE_S, cluster) == 0, run.describe()
    assert json.loads(run.stdout())["counts"] == {"succeeded": len(PLAN)}, run.describe()
    log = cluster.log(run_id)
    head = "\n".join(f"{entry.id} {summarize(entry.event)}" for entry in log.entries[:3])
    assert "took the run back" in run.stderr(), run.describe()
    assert "rebuilt from checkpoint" in run.stderr(), f"the log starts:\n{head}\n{cluster.describe()}"
    restored = restored_from(log)
    assert restored is not None, f"the log starts:\n{head}\n{cluster.describe()}"
    checkpoint = restored_state(restored)
    # Everything the log showed succeeded before the restart was in the checkpoint, ran once.
    done_before = before.in_state(TaskState.SUCCEEDED)
    assert done_before <= succeeded_in(checkpoint), (restored.lost, done_before - succeeded_in(checkpoint))
    lines = cluster.check_outcome(log)
    for task_id in done_before:
        ran = [line.attempt for line in lines if line.task == task_id]
        assert ran == [log.state.tasks[task_id].attempts], f"{task_id} ran again: attempts {ran}"

    # The orchestrator took the run back itself, under an epoch above the lost one.
    resumed = log.of_type(RunResumed)
    assert len(resumed) == 1, f"one resume, by the orchestrator, not {len(resumed)}: {resumed}"
    resumed_at, resume = resumed[0]
    assert owner_host(resume.owner) == "orch", resume
    between = [entry.event.type for entry in log.entries[1:resumed_at]]
    assert set(between) <= {"checkpoint_taken"}, f"events between run_restored and run_resumed: {between}"
    old_epochs = {event.epoch for _, event in before.of_type(TaskAssigned)}
    assert old_epochs, "nothing was assigned before the restart"
    assert max(old_epochs) < resume.epoch, (old_epochs, resume)
    new_epochs = {event.epoch for _, event in log.of_type(TaskAssigned)}
    assert new_epochs == {resume.epoch}, (new_epochs, resume)
    (record,) = run_index(cluster.topology["redis"], cluster.redis.url())
    assert (record.owner, record.epoch) == (resume.owner, resume.epoch), record
    assert record.status is RunStatus.SUCCEEDED, record

    # Both workers rejoined and took work from the queue again. Whoever reaches the lost
    # queue first creates it again: a worker ("the work queue is gone from the store") or the
    # orchestrator as it re-queues the run's tasks.
    after = {name: worker.stderr()[seen[name] :] for name, worker in cluster.workers.items()}
    assert all("rejoined" in text for text in after.values()), cluster.describe()
    ran_after = {event.worker for _, event in log.of_type(TaskStarted, applied_only=True)}
    assert ran_after == set(WORKERS), (ran_after, cluster.describe())
    cluster.check_inspection(run_id)
    cluster.check_still_serving()
