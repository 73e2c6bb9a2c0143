"""``maos bench bus``: message latency, maximum throughput and CAS contention, per backend.

Three measurements on each backend (SQLite in a temporary file, Redis on loopback):

- **latency at a fixed rate**: ``agents`` agents (default 20), each sending to random other
  agents at ``rate / agents`` messages per second (1,000 msg/s in total, evenly phased) for
  ``seconds``, and each reading its inbox with blocking reads and acknowledging what it got.
  Latency = the moment a receiver's ``read`` returned the message minus the moment the
  message was due to be sent by the pacing schedule, so a sender that falls behind counts
  against the latency (CLOCK_MONOTONIC, which is system-wide on Linux, so it compares
  across processes). Reported: p50, p99, max, and the rate actually achieved.
  The first ``warmup_s`` (1 s) of traffic, while connection pools fill up, is not counted.
- **maximum throughput**: the same agents sending as fast as they can for ``seconds``;
  messages received per second.
- **CAS throughput**: ``writers`` writers (default 20) incrementing one kv key by
  get + compare-and-set, retrying a conflict after an exponential backoff with jitter
  (0.5 ms doubling to 20 ms); increments per second and the number of conflicts.

Agents are spread over ``processes`` OS processes (default 2, the core count of the
reference machine): MAOS agents are separate processes whose door talks to the store. Each
process uses its own store connection and its own ``Bus``, and freezes its start-up heap
before the measurement like ``maos mcp`` does (``maos.heap``). Keys of the bench run are
deleted from Redis afterwards. ``section`` renders results as the ``## maos bench bus``
section of docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import multiprocessing.synchronize
import os
import platform
import queue
import random
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from maos.bench import docs
from maos.bus import Bus
from maos.heap import freeze_startup_heap
from maos.store import open_store

Mode = Literal["latency", "throughput", "cas"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
SECTION = "## maos bench bus"
READ_BLOCK_S = 1.0


@dataclass(frozen=True)
class Settings:
    agents: int = 20
    rate: float = 1000.0
    seconds: float = 5.0
    processes: int = 2
    writers: int = 20
    redis_url: str = DEFAULT_REDIS_URL
    warmup_s: float = 1.0
    """Paced traffic before the latency measurement starts; not counted."""
    drain_s: float = 2.0
    """How long receivers keep reading after the senders stopped."""


@dataclass(frozen=True)
class Latency:
    target_rate: float
    achieved_rate: float
    sent: int
    received: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class Throughput:
    sent: int
    received: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Cas:
    writers: int
    increments: int
    conflicts: int
    seconds: float
    final_value: int

    @property
    def per_s(self) -> float:
        return self.increments / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class BackendResult:
    backend: str
    url: str
    latency: Latency
    throughput: Throughput
    cas: Cas
    load_before: float  # 1-minute load average: the machine may be shared with other jobs
    load_after: float

    @property
    def p99_target_ms(self) -> float:
        return 10.0 if self.backend == "redis" else 25.0

    @property
    def meets_target(self) -> bool:
        return self.latency.p99_ms <= self.p99_target_ms and self.latency.received == self.latency.sent


# ---------------------------------------------------------------------------- one process


@dataclass(frozen=True)
class _Job:
    """What one worker process does."""

    mode: Mode
    url: str
    run_id: str
    all_agents: tuple[str, ...]
    my_agents: tuple[str, ...]  # agents (or writers) this process hosts
    rate_per_agent: float  # 0: unpaced
    seconds: float
    warmup_s: float = 0.0
    drain_s: float = 0.0
    phase: dict[str, float] = field(default_factory=dict)  # agent -> start offset (s)


@dataclass
class _Report:
    latencies_ns: list[int] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    measure_from_ns: int = 0
    first_send_ns: int = 0
    last_send_ns: int = 0
    last_receive_ns: int = 0
    increments: int = 0
    conflicts: int = 0


def _worker(job: _Job, barrier: multiprocessing.synchronize.Barrier, results: Any) -> None:
    """Entry point of a worker process: run ``job`` and put its ``_Report`` on ``results``."""
    try:
        report = asyncio.run(_run_job(job, barrier))
    except BaseException as exc:
        barrier.abort()
        results.put(f"{type(exc).__name__}: {exc}")
        raise
    results.put(report)


async def _run_job(job: _Job, barrier: multiprocessing.synchronize.Barrier) -> _Report:
    store = await open_store(job.url)
    try:
        if job.mode == "cas":
            return await _cas_job(job, store, barrier)
        return await _bus_job(job, Bus(store, job.run_id), barrier)
    finally:
        await store.close()


async def _bus_job(job: _Job, bus: Bus, barrier: multiprocessing.synchronize.Barrier) -> _Report:
    report = _Report()
    for agent in job.my_agents:
        await bus.read(agent)  # opens the reader: its consumer groups
    freeze_startup_heap()  # as `maos mcp`, the door process of a Claude Code agent, does
    await asyncio.to_thread(barrier.wait)
    start = time.monotonic() + 0.2  # the barrier released every process at about the same time
    warmup_s = job.warmup_s
    measure_from_ns = report.measure_from_ns = int((start + warmup_s) * 1e9)
    send_until = start + warmup_s + job.seconds
    read_until = send_until + job.drain_s

    async def receive(agent: str) -> None:
        while time.monotonic() < read_until:
            got = await bus.read(agent, count=100, block_s=READ_BLOCK_S)
            if not got:
                continue
            now_ns = time.monotonic_ns()
            for delivery in got:
                content = delivery.message.content
                assert isinstance(content, dict)
                sent_ns = content["t"]
                assert isinstance(sent_ns, int)
                # The sender says whether it counts (warm-up or not): processes share the
                # clock, but their measure_from_ns differ by a few milliseconds.
                if content["m"]:
                    report.latencies_ns.append(now_ns - sent_ns)
                    report.received += 1
                    report.last_receive_ns = now_ns
            await bus.ack(agent, got)

    async def send(agent: str) -> None:
        rng = random.Random(agent)
        others = [a for a in job.all_agents if a != agent]
        interval = 1.0 / job.rate_per_agent if job.rate_per_agent > 0 else 0.0
        first = start + job.phase.get(agent, 0.0)
        n = 0
        await _sleep_until(first)
        while True:
            if interval:
                due = first + n * interval
                if due >= send_until:
                    return
                await _sleep_until(due)
                # Stamped with when it was due, not when the sender got round to it: a
                # sender that falls behind shows up in the latency (no coordinated omission).
                t_ns = int(due * 1e9)
            elif time.monotonic() >= send_until:
                return
            else:
                t_ns = time.monotonic_ns()
            measured = t_ns >= measure_from_ns
            await bus.send(agent, rng.choice(others), {"t": t_ns, "n": n, "m": measured})
            if measured:
                report.first_send_ns = min(report.first_send_ns or t_ns, t_ns)
                report.last_send_ns = time.monotonic_ns()
                report.sent += 1
            n += 1

    async with asyncio.TaskGroup() as tg:
        for agent in job.my_agents:
            tg.create_task(receive(agent))
            tg.create_task(send(agent))
    return report


async def _cas_job(job: _Job, store: Any, barrier: multiprocessing.synchronize.Barrier) -> _Report:
    report = _Report()
    key = f"{{run:{job.run_id}}}:bench:counter"
    await asyncio.to_thread(barrier.wait)
    start = time.monotonic() + 0.2
    until = start + job.seconds

    async def write(writer: str) -> None:
        rng = random.Random(writer)
        await _sleep_until(start)
        while time.monotonic() < until:
            delay_s = 0.0005
            while True:
                current = await store.get(key)
                value, version = (0, 0) if current is None else (int(current.value), current.version)
                result = await store.cas(key, version, str(value + 1).encode())
                if result.ok:
                    report.increments += 1
                    break
                report.conflicts += 1
                await asyncio.sleep(rng.uniform(0, delay_s))
                delay_s = min(delay_s * 2, 0.02)

    async with asyncio.TaskGroup() as tg:
        for writer in job.my_agents:
            tg.create_task(write(writer))
    report.first_send_ns = int(start * 1e9)
    report.last_receive_ns = time.monotonic_ns()
    return report


async def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


# ---------------------------------------------------------------------------- orchestration


def _spread(items: list[str], parts: int) -> list[tuple[str, ...]]:
    return [tuple(items[i::parts]) for i in range(parts) if items[i::parts]]


def _run_processes(jobs: list[_Job]) -> list[_Report]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(jobs))
    results: Any = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(job, barrier, results), daemon=True) for job in jobs]
    for proc in procs:
        proc.start()
    reports: list[_Report] = []
    errors: list[str] = []
    deadline = time.monotonic() + max(job.seconds + job.warmup_s + job.drain_s for job in jobs) + 120
    try:
        while len(reports) + len(errors) < len(procs):
            try:
                item = results.get(timeout=0.5)
            except queue.Empty:
                crashed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if crashed and results.empty():
                    errors.append(f"a worker process exited with code {crashed[0]}")
                    break
                if time.monotonic() > deadline:
                    errors.append("timed out waiting for the worker processes")
                    break
                continue
            if isinstance(item, _Report):
                reports.append(item)
            else:
                errors.append(str(item))
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    if errors:
        raise RuntimeError("bench worker failed: " + "; ".join(errors))
    return reports


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index] / 1e6


def _bus_jobs(mode: Mode, url: str, run_id: str, settings: Settings) -> list[_Job]:
    agents = [f"agent-{n:02d}" for n in range(1, settings.agents + 1)]
    paced = mode == "latency"
    rate_per_agent = settings.rate / settings.agents if paced else 0.0
    # Evenly phased: agent k starts k / rate after the first, so sends are spread in time.
    phase = {agent: k / settings.rate for k, agent in enumerate(agents)} if paced else {}
    return [
        _Job(
            mode,
            url,
            run_id,
            tuple(agents),
            mine,
            rate_per_agent,
            settings.seconds,
            warmup_s=settings.warmup_s if paced else 0.0,
            drain_s=settings.drain_s,
            phase=phase,
        )
        for mine in _spread(agents, settings.processes)
    ]


def measure_latency(url: str, settings: Settings, run_id: str) -> Latency:
    reports = _run_processes(_bus_jobs("latency", url, run_id, settings))
    latencies = sorted(ns for r in reports for ns in r.latencies_ns)
    sent = sum(r.sent for r in reports)
    # Sends per second from the start of the measurement until the last send returned:
    # below the target when the senders could not keep up with the schedule.
    sending_s = (max(r.last_send_ns for r in reports) - min(r.measure_from_ns for r in reports)) / 1e9
    return Latency(
        target_rate=settings.rate,
        achieved_rate=sent / max(sending_s, settings.seconds),
        sent=sent,
        received=sum(r.received for r in reports),
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
        max_ms=latencies[-1] / 1e6 if latencies else math.nan,
    )


def measure_throughput(url: str, settings: Settings, run_id: str) -> Throughput:
    reports = _run_processes(_bus_jobs("throughput", url, run_id, settings))
    first = min(r.first_send_ns for r in reports if r.first_send_ns)
    last = max(r.last_receive_ns for r in reports)
    return Throughput(
        sent=sum(r.sent for r in reports),
        received=sum(r.received for r in reports),
        seconds=max(0.0, (last - first) / 1e9),
    )


def measure_cas(url: str, settings: Settings, run_id: str) -> Cas:
    writers = [f"writer-{n:02d}" for n in range(1, settings.writers + 1)]
    jobs = [
        _Job("cas", url, run_id, tuple(writers), mine, 0.0, settings.seconds)
        for mine in _spread(writers, settings.processes)
    ]
    reports = _run_processes(jobs)
    final = asyncio.run(_read_counter(url, f"{{run:{run_id}}}:bench:counter"))
    first = min(r.first_send_ns for r in reports)
    last = max(r.last_receive_ns for r in reports)
    return Cas(
        writers=settings.writers,
        increments=sum(r.increments for r in reports),
        conflicts=sum(r.conflicts for r in reports),
        seconds=(last - first) / 1e9,
        final_value=final,
    )


async def _read_counter(url: str, key: str) -> int:
    store = await open_store(url)
    try:
        current = await store.get(key)
        return 0 if current is None else int(current.value)
    finally:
        await store.close()


async def _delete_redis_runs(url: str, run_ids: list[str]) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        for run_id in run_ids:
            found = [key async for key in client.scan_iter(match=f"*{{run:{run_id}}}*", count=1000)]
            for start in range(0, len(found), 500):
                await client.delete(*found[start : start + 500])
    finally:
        await client.aclose()


def run_backend(backend: str, settings: Settings, *, progress: Any = None) -> BackendResult:
    """All three measurements on one backend; temporary data is removed afterwards."""

    def say(text: str) -> None:
        if progress is not None:
            progress(f"{backend}: {text}")

    tmp: Path | None = None
    if backend == "sqlite":
        tmp = Path(tempfile.mkdtemp(prefix="maos-bench-bus-"))
        url = f"sqlite:///{tmp / 'bus.db'}"
    elif backend == "redis":
        url = settings.redis_url
    else:
        raise ValueError(f"unknown backend {backend!r}: expected sqlite or redis")
    run_ids = [f"bench-bus-{uuid.uuid4().hex[:12]}" for _ in range(3)]  # one per measurement
    load_before = os.getloadavg()[0]
    try:
        say(f"latency at {settings.rate:g} msg/s, {settings.agents} agents, {settings.seconds:g} s…")
        latency = measure_latency(url, settings, run_ids[0])
        say("maximum throughput…")
        throughput = measure_throughput(url, settings, run_ids[1])
        say(f"CAS with {settings.writers} writers on one key…")
        cas = measure_cas(url, settings, run_ids[2])
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if backend == "redis":
            asyncio.run(_delete_redis_runs(url, run_ids))
    return BackendResult(
        backend,
        url if backend == "redis" else "sqlite (temporary file)",
        latency,
        throughput,
        cas,
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )


def to_json(result: BackendResult) -> dict[str, Any]:
    lat, thr, cas = result.latency, result.throughput, result.cas
    return {
        "backend": result.backend,
        "store": result.url,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": round(result.load_before, 2),
            "load_average_after": round(result.load_after, 2),
            "python": platform.python_version(),
        },
        "latency": {
            "target_rate_msgs_per_s": lat.target_rate,
            "achieved_rate_msgs_per_s": round(lat.achieved_rate, 1),
            "sent": lat.sent,
            "received": lat.received,
            "p50_ms": round(lat.p50_ms, 3),
            "p99_ms": round(lat.p99_ms, 3),
            "max_ms": round(lat.max_ms, 3),
            "p99_target_ms": result.p99_target_ms,
            "meets_target": result.meets_target,
        },
        "max_throughput": {
            "sent": thr.sent,
            "received": thr.received,
            "seconds": round(thr.seconds, 3),
            "msgs_per_s": round(thr.per_s, 1),
        },
        "cas": {
            "writers": cas.writers,
            "increments": cas.increments,
            "conflicts": cas.conflicts,
            "seconds": round(cas.seconds, 3),
            "increments_per_s": round(cas.per_s, 1),
            "final_value": cas.final_value,
        },
    }


def section(runs: list[list[BackendResult]], settings: Settings, command: str) -> str:
    """The ``## maos bench bus`` section of docs/benchmarks.md: every run, one row per backend."""
    rows = [
        f"| run | backend | load | p50 @ {settings.rate:,.0f}/s | p99 @ {settings.rate:,.0f}/s | max "
        f"| received | p99 target | max throughput | CAS ({settings.writers} writers) | CAS conflicts |",
        "|---:|---|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    met: dict[str, int] = {}
    for n, results in enumerate(runs, 1):
        for r in results:
            lat = r.latency
            met[r.backend] = met.get(r.backend, 0) + int(r.meets_target)
            verdict = "met" if r.meets_target else "**missed**"
            rows.append(
                f"| {n} | {r.backend} | {r.load_before:.1f} | {lat.p50_ms:.2f} ms | {lat.p99_ms:.2f} ms "
                f"| {lat.max_ms:.1f} ms | {lat.received:,}/{lat.sent:,} | {r.p99_target_ms:g} ms: {verdict} "
                f"| {r.throughput.per_s:,.0f} msg/s | {r.cas.per_s:,.0f} ops/s | {r.cas.conflicts:,} |"
            )
    summary = "; ".join(f"{backend}: target met in {k} of {len(runs)} runs" for backend, k in met.items())
    return "\n".join(
        [
            SECTION,
            "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M')} with `{command}` on {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}; Redis on loopback, SQLite in a "
            f"temporary file. {settings.agents} agents over {settings.processes} processes, each "
            f"sending to random others at {settings.rate:,.0f} msg/s in total for {settings.seconds:g} s "
            f"after a {settings.warmup_s:g} s warm-up, and reading its inbox with blocking reads and "
            "acknowledging what it got; then unpaced for the maximum throughput; then "
            f"{settings.writers} writers incrementing one key by get + compare-and-set. Load = the "
            "1-minute load average before the run (the machine may be shared with other jobs).",
            "",
            "Latency = when the receiver's `read` returned the message minus when the pacing schedule "
            "said to send it, so a sender that falls behind counts against it. Targets: p99 ≤ 10 ms on "
            "Redis, ≤ 25 ms on SQLite, with every message received.",
            "",
            *rows,
            "",
            f"{summary}.",
            "",
            "A message costs three store round trips: the send (one transaction: the lane's sequence "
            "counter and the append), the read (one `read_groups` over the agent's streams, which also "
            "waits) and the acknowledgement (one transaction with the seen-table); see ADR 0009. Each "
            "process freezes its start-up heap before measuring, as `maos mcp` does (`maos.heap`): "
            "otherwise each full garbage collection stops all of its agents for about 25 ms.",
            "",
        ]
    )


def write_section(path: Path, text: str) -> None:
    """Replace (or append) this benchmark's section of ``path``, leaving the others alone."""
    docs.write_section(path, SECTION, text)
