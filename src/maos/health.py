"""Agent health: measured CPU, memory and activity of every running agent, and anomalies.

``AgentMonitor`` samples each watched agent's whole process group with psutil every
``sample_every_s`` and reports an ``agent_stats`` event (CPU percent of one core and RSS,
summed over the group; seconds since its last output line). An agent over its memory limit
(default 500 MB) or silent past its idle timeout is flagged with an ``agent_anomaly`` event
and handled by policy:

- ``warn``: only the event (and the metric, via the event);
- ``restart``: the attempt is stopped (terminate, grace, kill, wait) and fails with the
  anomaly as reason, so the orchestrator retries it (on another agent after two failures);
- ``fail``: the same, and the task is marked to fail without further retries (reason says so).

Each anomaly is reported once per attempt and kind.

Beside these fixed limits, after each sampling pass the agents of one run are compared with
each other (``outliers``): an agent whose RSS, CPU or idle time is far from its peers' — a
robust z-score (median and MAD over the run's sampled agents) above ``OUTLIER_Z``, and at
least a minimum distance from the median so that small absolute differences never count —
is flagged with an ``agent_anomaly`` of kind ``rss_outlier``, ``cpu_outlier`` or
``idle_outlier``, action ``warn`` whatever the policy: being unusual is a reason to look, not
to stop an agent. Peers are the run's agents this monitor hosts (all of them with the default
in-process agents; those of one worker with ``maos worker``), and at least
``OUTLIER_MIN_AGENTS`` of them.

An agent stopped by a signal (SIGSTOP, SIGTSTP: state ``T``) prints nothing, so the idle check
catches it too, and says it is stopped. A stopped process acts on no SIGTERM until it is
continued, so before such an attempt is stopped its group gets SIGTERM then SIGCONT: it ends
at once instead of after the teardown's whole grace period (SIGKILL would reach it anyway).
A stopped agent is restarted even under ``warn``: it cannot be doing anything useful.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

import psutil

from maos.events import AgentAnomaly, AgentStats

log = logging.getLogger("maos.health")

Policy = Literal["warn", "restart", "fail"]
K = TypeVar("K")
AnomalyKind = Literal["memory", "idle", "rss_outlier", "cpu_outlier", "idle_outlier"]
MB = 1 << 20

OUTLIER_Z: Final = 3.5
"""Robust z-score above which a value is an outlier (Iglewicz and Hoaglin's cut-off)."""
OUTLIER_MIN_AGENTS: Final = 4
"""Fewer agents than this in a run: no "peers" to compare with."""
OUTLIER_MIN_GAP: Final = {"rss": 64.0 * MB, "cpu": 25.0, "idle": 60.0}
"""Least distance from the median (bytes, percent of a core, seconds) an outlier must have."""


@dataclass
class Watched:
    run_id: str
    task_id: str
    agent_id: str
    attempt: int
    pid: int
    idle_timeout_s: float
    stop: Callable[[str], None]  # stops the attempt, with the reason it fails with
    last_output: float = field(default_factory=time.monotonic)
    flagged: set[str] = field(default_factory=set)
    processes: dict[int, psutil.Process] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Sample:
    cpu_percent: float
    rss_bytes: int
    processes: int
    stopped: bool = False  # the agent's own process is stopped by a signal (state T)


def outliers(
    values: Mapping[K, float],
    *,
    min_gap: float,
    z_limit: float = OUTLIER_Z,
    min_count: int = OUTLIER_MIN_AGENTS,
) -> dict[K, float]:
    """The keys of ``values`` far from the others', with their robust z-scores.

    z = 0.6745 (x - median) / MAD, with MAD the median absolute deviation; when more than
    half the values are equal (MAD 0), the mean absolute deviation times 1.2533 stands in.
    A key is an outlier when ``|z| > z_limit`` and ``|x - median| >= min_gap``. Nothing is
    an outlier among fewer than ``min_count`` values, or when all deviations are zero.
    """
    if len(values) < max(min_count, 3):
        return {}
    median = statistics.median(values.values())
    deviations = {key: value - median for key, value in values.items()}
    mad = statistics.median(abs(d) for d in deviations.values())
    if mad > 0:
        scale = mad / 0.6745
    else:
        scale = 1.2533 * statistics.fmean(abs(d) for d in deviations.values())
        if scale == 0:
            return {}
    found: dict[K, float] = {}
    for key, deviation in deviations.items():
        z = deviation / scale
        if abs(z) > z_limit and abs(deviation) >= min_gap:
            found[key] = round(z, 1)
    return found


def _megabytes(rss_bytes: float) -> str:
    return f"RSS {rss_bytes / MB:.0f} MB"


def sample_group(watched: Watched) -> Sample | None:
    """CPU and RSS of the agent's process group (the agent and everything it spawned)."""
    try:
        leader = psutil.Process(watched.pid)
        members = [leader, *leader.children(recursive=True)]
        stopped = leader.status() == psutil.STATUS_STOPPED
    except psutil.Error:
        return None
    cpu = 0.0
    rss = 0
    alive: dict[int, psutil.Process] = {}
    for member in members:
        # Keep the Process objects: cpu_percent() measures since the previous call on the same one.
        process = watched.processes.get(member.pid, member)
        try:
            with process.oneshot():
                cpu += process.cpu_percent(None)
                rss += process.memory_info().rss
        except psutil.Error:
            continue
        alive[member.pid] = process
    watched.processes = alive
    return Sample(cpu_percent=cpu, rss_bytes=rss, processes=len(alive), stopped=stopped)


class AgentMonitor:
    """Samples watched agents; ``report`` appends an event to the agent's run log."""

    def __init__(
        self,
        report: Callable[[str, AgentStats | AgentAnomaly], Awaitable[None]],
        *,
        memory_limit_bytes: int = 500 * MB,
        policy: Policy = "warn",
        sample_every_s: float = 2.0,
    ) -> None:
        self._report = report
        self.memory_limit_bytes = memory_limit_bytes
        self.policy = policy
        self.sample_every_s = sample_every_s
        self._watched: dict[str, Watched] = {}

    def watch(self, key: str, watched: Watched) -> None:
        self._watched[key] = watched

    def unwatch(self, key: str) -> None:
        self._watched.pop(key, None)

    def touched(self, key: str) -> None:
        """The agent printed something: it is not idle."""
        watched = self._watched.get(key)
        if watched is not None:
            watched.last_output = time.monotonic()

    async def run(self) -> None:
        """Sample forever (cancel to stop). Time this process spent stopped (SIGSTOP, Ctrl-Z)
        is no agent's idle time: its agents were stopped with it (``maos.agents.guard``)."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.sample_every_s)
            lost = time.monotonic() - before - self.sample_every_s
            if lost > self.sample_every_s:
                for watched in self._watched.values():
                    watched.last_output += lost
            await self.check_all()

    async def check_all(self) -> None:
        """One pass: sample every watched agent, apply the fixed limits, then compare peers."""
        sampled: list[tuple[Watched, Sample, float]] = []
        for key, watched in list(self._watched.items()):
            with contextlib.suppress(Exception):  # a vanished process is not an error
                checked = await self._check(key, watched)
                if checked is not None:
                    sampled.append((watched, *checked))
        with contextlib.suppress(Exception):  # a report that cannot be written: the next pass
            await self._compare_peers(sampled)

    async def _compare_peers(self, sampled: list[tuple[Watched, Sample, float]]) -> None:
        """Flag the agents far from their peers in the same run (``outliers``)."""
        by_run: dict[str, list[tuple[Watched, Sample, float]]] = {}
        for item in sampled:
            by_run.setdefault(item[0].run_id, []).append(item)
        for items in by_run.values():
            measured: list[tuple[AnomalyKind, str, list[float], Callable[[float], str]]] = [
                ("rss_outlier", "rss", [float(s.rss_bytes) for _, s, _ in items], _megabytes),
                ("cpu_outlier", "cpu", [s.cpu_percent for _, s, _ in items], "CPU {:.0f}%".format),
                ("idle_outlier", "idle", [idle_s for _, _, idle_s in items], "idle {:.0f}s".format),
            ]
            for kind, gap, values, shown in measured:
                found = outliers(dict(enumerate(values)), min_gap=OUTLIER_MIN_GAP[gap])
                median = statistics.median(values) if found else 0.0
                for n, z in found.items():
                    if z < 0 and kind != "cpu_outlier":
                        # Less memory or less idle time than its peers is no fault (an agent
                        # that is just starting has almost no RSS yet). Little CPU is one: an
                        # agent that stopped working while its peers still do.
                        continue
                    detail = (
                        f"{shown(values[n])}, far from its {len(items) - 1} peers' "
                        f"(median {shown(median)}, robust z {z:+.1f})"
                    )
                    await self._flag(items[n][0], kind, detail, action="warn")

    async def _check(self, key: str, watched: Watched) -> tuple[Sample, float] | None:
        sample = await asyncio.to_thread(sample_group, watched)
        if sample is None or key not in self._watched:
            return None
        idle_s = time.monotonic() - watched.last_output
        await self._report(
            watched.run_id,
            AgentStats(
                task_id=watched.task_id,
                agent_id=watched.agent_id,
                attempt=watched.attempt,
                pid=watched.pid,
                cpu_percent=round(sample.cpu_percent, 1),
                rss_bytes=sample.rss_bytes,
                processes=sample.processes,
                idle_s=round(idle_s, 1),
            ),
        )
        if sample.rss_bytes > self.memory_limit_bytes:
            detail = (
                f"RSS {sample.rss_bytes / MB:.0f} MB over the limit of {self.memory_limit_bytes / MB:.0f} MB"
            )
            await self._flag(watched, "memory", detail)
        if idle_s > watched.idle_timeout_s:
            detail = f"no output for {idle_s:.0f}s (idle timeout {watched.idle_timeout_s:g}s)"
            if sample.stopped:
                detail = f"stopped by a signal (SIGSTOP, process state T); {detail}"
            await self._flag(watched, "idle", detail, stopped=sample.stopped)
        return sample, idle_s

    async def _flag(
        self,
        watched: Watched,
        kind: AnomalyKind,
        detail: str,
        *,
        stopped: bool = False,
        action: Policy | None = None,
    ) -> None:
        if kind in watched.flagged:
            return
        watched.flagged.add(kind)
        if action is None:
            # A stopped agent can do nothing until someone continues it: waiting (``warn``)
            # would only spend the attempt's whole timeout, so it is restarted under any policy.
            action = "restart" if stopped and self.policy == "warn" else self.policy
        log.warning("agent %s on task %s: %s -> %s", watched.agent_id, watched.task_id, detail, action)
        await self._report(
            watched.run_id,
            AgentAnomaly(
                task_id=watched.task_id,
                agent_id=watched.agent_id,
                attempt=watched.attempt,
                kind=kind,
                detail=detail,
                action=action,
            ),
        )
        if action != "warn":
            if stopped:
                _terminate_stopped(watched.pid)
            watched.stop(f"anomaly: {detail}")


def _terminate_stopped(pgid: int) -> None:
    """SIGTERM, then SIGCONT so that the stopped group acts on it now."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
        os.killpg(pgid, signal.SIGCONT)
