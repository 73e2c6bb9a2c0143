"""``maos bench bus``: message latency, maximum throughput and CAS contention, per backend,
side by side with the floors of raw Redis measured in the same run.

Measurements on each backend (SQLite in a temporary file, Redis on loopback):

- **latency at a fixed rate**: ``agents`` agents (default 20), each sending to random other
  agents at ``rate / agents`` messages per second (1,000 msg/s in total, evenly phased) for
  ``seconds``, and each reading its inbox with blocking reads and acknowledging what it got.
  Latency = the moment a receiver's ``read`` returned the message minus the moment the send
  began (CLOCK_MONOTONIC, which is system-wide on Linux, so it compares across processes).
  A sender that falls behind its schedule still counts against the latency (no coordinated
  omission): a message due while the sender was still busy with its previous send is timed
  from when it was due. Only the lateness of the pacing timer itself (asyncio's timers fire
  up to a millisecond or more late: epoll waits in whole milliseconds) is left out; it is
  reported as ``timer lag``, and the latency counted from the schedule as ``p99 from due``.
  Reported: p50, p99, max, and the rate actually achieved. The first ``warmup_s`` (1 s) of
  traffic, while connection pools fill up, is not counted.
- **maximum throughput**: the same agents sending as fast as they can for ``seconds``;
  messages received per second, and whether every message sent was received.
- **CAS throughput**: ``writers`` writers (default 20) incrementing one kv key with
  ``maos.store.cas.cas_update`` (the read-modify-write of shared state and of the outcome
  history); increments per second, the compare-and-sets lost to other writers, and lost
  updates (increments that returned but are missing from the final value: must be 0).
- **floors** (Redis only): raw redis-py on the same server with the same concurrency,
  nothing of MAOS: XADD one at a time per agent, XADD in pipelines of ``PIPELINE``, and a
  server-side increment in one Lua call per writer (a compare-and-set update with no
  conflict possible). The bus and CAS figures are printed as a share of these.

Agents are spread over ``processes`` OS processes (default 2, the core count of the
reference machine): MAOS agents are separate processes whose door talks to the store. Each
process uses its own store connection and its own ``Bus``, and freezes its start-up heap
before the measurement like ``maos mcp`` does (``maos.heap``). Keys of the bench run are
deleted from Redis afterwards. ``section`` renders results as the ``## maos bench bus``
section of docs/benchmarks.md.

Targets (``BackendResult.missed``): every message received; p99 at 1,000 msg/s <= 2 ms on
Redis and <= 5 ms on SQLite; on Redis, >= 10,000 msg/s maximum throughput and >= 5,000 CAS
updates/s with 20 writers; no lost update anywhere.
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
from maos.errors import StateConflict
from maos.heap import freeze_startup_heap
from maos.store import Store, open_store
from maos.store.base import Versioned
from maos.store.cas import cas_update

Mode = Literal["latency", "throughput", "cas", "floor-xadd", "floor-pipeline", "floor-cas"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
SECTION = "## maos bench bus"
READ_BLOCK_S = 1.0
PIPELINE = 100
"""XADDs per pipeline in the pipelined floor."""
FLOOR_RECORD = b"x" * 300
"""About the size of a sealed bench message."""

P99_TARGET_MS = {"redis": 2.0, "sqlite": 5.0}
THROUGHPUT_TARGET = {"redis": 10_000.0}
CAS_TARGET = {"redis": 5_000.0}

# A compare-and-set update done by the server: read, compare, write, in one Lua call.
_LUA_INCREMENT = """
local ver = tonumber(redis.call('HGET', KEYS[1], 'ver')) or 0
local value = tonumber(redis.call('HGET', KEYS[1], 'v')) or 0
redis.call('HSET', KEYS[1], 'v', value + 1, 'ver', ver + 1)
return ver + 1
"""


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
    floors: bool = True
    """On Redis, also measure raw redis-py (XADD, pipelined XADD, a Lua increment)."""


@dataclass(frozen=True)
class Latency:
    target_rate: float
    achieved_rate: float
    sent: int
    received: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    p99_from_due_ms: float
    """The p99 counted from when each message was due by the schedule (timer lag included)."""
    timer_lag_p99_ms: float
    """How late the senders' pacing timers fired (p99), when the sender was idle."""


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
    gave_up: int = 0
    """Updates that raised ``StateConflict`` (other writers won every attempt)."""

    @property
    def per_s(self) -> float:
        return self.increments / self.seconds if self.seconds > 0 else 0.0

    @property
    def lost_updates(self) -> int:
        """Increments that returned but are not in the final value."""
        return self.increments - self.final_value


@dataclass(frozen=True)
class Floors:
    """Raw redis-py on the same server, same concurrency, nothing of MAOS: operations/s."""

    xadd_per_s: float
    xadd_pipelined_per_s: float
    lua_cas_per_s: float


@dataclass(frozen=True)
class BackendResult:
    backend: str
    url: str
    latency: Latency
    throughput: Throughput
    cas: Cas
    load_before: float  # 1-minute load average: the machine may be shared with other jobs
    load_after: float
    floors: Floors | None = None

    @property
    def p99_target_ms(self) -> float:
        return P99_TARGET_MS[self.backend]

    @property
    def throughput_target(self) -> float | None:
        return THROUGHPUT_TARGET.get(self.backend)

    @property
    def cas_target(self) -> float | None:
        return CAS_TARGET.get(self.backend)

    @property
    def missed(self) -> list[str]:
        """The targets this run missed, in words (empty: all met)."""
        lat, thr, cas = self.latency, self.throughput, self.cas
        out: list[str] = []
        if lat.received != lat.sent:
            out.append(f"latency run: {lat.received} of {lat.sent} messages received")
        if not lat.p99_ms <= self.p99_target_ms:
            out.append(f"p99 {lat.p99_ms:.2f} ms > {self.p99_target_ms:g} ms")
        if thr.received != thr.sent:
            out.append(f"throughput run: {thr.received} of {thr.sent} messages received")
        if self.throughput_target is not None and thr.per_s < self.throughput_target:
            out.append(f"throughput {thr.per_s:,.0f} < {self.throughput_target:,.0f} msg/s")
        if cas.lost_updates:
            out.append(f"{cas.lost_updates} lost CAS updates")
        if self.cas_target is not None and cas.per_s < self.cas_target:
            out.append(f"CAS {cas.per_s:,.0f} < {self.cas_target:,.0f} ops/s")
        return out

    @property
    def meets_target(self) -> bool:
        return not self.missed


def floors_line(result: BackendResult) -> str | None:
    """One line with the raw Redis floors of this run and MAOS's share of them."""
    floors = result.floors
    if floors is None:
        return None
    return (
        f"{result.backend} floors (raw redis-py, same run): XADD {floors.xadd_per_s:,.0f}/s, "
        f"pipelined XADD {floors.xadd_pipelined_per_s:,.0f}/s, Lua CAS {floors.lua_cas_per_s:,.0f}/s "
        f"with {result.cas.writers} writers; bus throughput = "
        f"{_ratio(result.throughput.per_s, floors.xadd_per_s)} of XADD, "
        f"{_ratio(result.throughput.per_s, floors.xadd_pipelined_per_s)} of pipelined XADD; "
        f"CAS updates = {_ratio(result.cas.per_s, floors.lua_cas_per_s)} of the Lua CAS"
    )


def _ratio(value: float, floor: float) -> str:
    return f"{value / floor:.2f}x" if floor > 0 else "-"


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
    from_due_ns: list[int] = field(default_factory=list)
    timer_lag_ns: list[int] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    measure_from_ns: int = 0
    first_send_ns: int = 0
    last_send_ns: int = 0
    last_receive_ns: int = 0
    increments: int = 0
    conflicts: int = 0
    gave_up: int = 0
    operations: int = 0  # floors


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
    if job.mode.startswith("floor-"):
        return await _floor_job(job, barrier)
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
    # The schedule is whole nanoseconds after ``start``: which sends fall in the measured span
    # is then exact arithmetic (float sums put a send on a boundary in or out by chance).
    start_ns = int(start * 1e9)
    warmup_ns = round(job.warmup_s * 1e9)
    end_ns = warmup_ns + round(job.seconds * 1e9)  # offset of the end of sending
    measure_from_ns = report.measure_from_ns = start_ns + warmup_ns
    send_until = start + job.warmup_s + job.seconds
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
                sent_ns, due_ns = content["t"], content["d"]
                assert isinstance(sent_ns, int)
                assert isinstance(due_ns, int)
                # The sender says whether it counts (warm-up or not): processes share the
                # clock, but their measure_from_ns differ by a few milliseconds.
                if content["m"]:
                    report.latencies_ns.append(now_ns - sent_ns)
                    report.from_due_ns.append(now_ns - due_ns)
                    report.received += 1
                    report.last_receive_ns = now_ns
            await bus.ack(agent, got)

    async def send(agent: str) -> None:
        rng = random.Random(agent)
        others = [a for a in job.all_agents if a != agent]
        interval_ns = round(1e9 / job.rate_per_agent) if job.rate_per_agent > 0 else 0
        phase_ns = round(job.phase.get(agent, 0.0) * 1e9)
        n = 0
        await _sleep_until((start_ns + phase_ns) / 1e9)
        while True:
            if interval_ns:
                offset_ns = phase_ns + n * interval_ns
                if offset_ns >= end_ns:
                    return
                due_ns = start_ns + offset_ns
                due = due_ns / 1e9
                idle = time.monotonic() < due  # the previous send was done before this one was due
                await _sleep_until(due)
                # Timed from when the send began if the sender was idle when it fell due (the
                # timer's own lateness is not the bus's), else from when it was due: a sender
                # that falls behind counts against the latency (no coordinated omission).
                woke_ns = time.monotonic_ns()
                t_ns = woke_ns if idle else due_ns
                if idle and due_ns >= measure_from_ns:
                    report.timer_lag_ns.append(woke_ns - due_ns)
            elif time.monotonic() >= send_until:
                return
            else:
                t_ns = due_ns = time.monotonic_ns()
            measured = due_ns >= measure_from_ns
            await bus.send(agent, rng.choice(others), {"t": t_ns, "d": due_ns, "n": n, "m": measured})
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


def _counter_key(run_id: str) -> str:
    return f"{{run:{run_id}}}:bench:counter"


async def _cas_job(job: _Job, store: Store, barrier: multiprocessing.synchronize.Barrier) -> _Report:
    report = _Report()
    key = _counter_key(job.run_id)
    freeze_startup_heap()
    await asyncio.to_thread(barrier.wait)
    start = time.monotonic() + 0.2
    until = start + job.seconds

    def increment(current: Versioned | None) -> bytes:
        return str(1 + (0 if current is None else int(current.value))).encode()

    async def write() -> None:
        await _sleep_until(start)
        while time.monotonic() < until:
            try:
                updated = await cas_update(store, key, increment, what="the bench counter")
            except StateConflict as exc:
                report.gave_up += 1
                report.conflicts += exc.attempts
                continue
            assert updated is not None
            report.increments += 1
            report.conflicts += updated.conflicts

    async with asyncio.TaskGroup() as tg:
        for _ in job.my_agents:
            tg.create_task(write())
    report.first_send_ns = int(start * 1e9)
    report.last_receive_ns = time.monotonic_ns()
    return report


async def _floor_job(job: _Job, barrier: multiprocessing.synchronize.Barrier) -> _Report:
    """Raw redis-py, the way an application without MAOS would use it."""
    import redis.asyncio

    report = _Report()
    client = redis.asyncio.Redis.from_url(job.url)
    try:
        increment = client.register_script(_LUA_INCREMENT)
        await client.ping()
        await asyncio.to_thread(barrier.wait)
        start = time.monotonic() + 0.2
        until = start + job.seconds
        tag = f"{{run:{job.run_id}}}"

        async def loop(name: str) -> None:
            stream = f"{tag}:floor:{name}"
            await _sleep_until(start)
            while time.monotonic() < until:
                if job.mode == "floor-xadd":
                    await client.xadd(stream, {"d": FLOOR_RECORD})
                    report.operations += 1
                elif job.mode == "floor-pipeline":
                    async with client.pipeline(transaction=False) as pipe:
                        for _ in range(PIPELINE):
                            pipe.xadd(stream, {"d": FLOOR_RECORD})
                        await pipe.execute()
                    report.operations += PIPELINE
                else:
                    await increment(keys=[f"{tag}:floor:counter"])
                    report.operations += 1

        async with asyncio.TaskGroup() as tg:
            for name in job.my_agents:
                tg.create_task(loop(name))
        report.first_send_ns = int(start * 1e9)
        report.last_receive_ns = time.monotonic_ns()
    finally:
        await client.aclose()
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
    from_due = sorted(ns for r in reports for ns in r.from_due_ns)
    timer_lag = sorted(ns for r in reports for ns in r.timer_lag_ns)
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
        p99_from_due_ms=_percentile(from_due, 0.99),
        timer_lag_p99_ms=_percentile(timer_lag, 0.99),
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


def _writer_jobs(mode: Mode, url: str, run_id: str, settings: Settings, count: int) -> list[_Job]:
    names = [f"writer-{n:02d}" for n in range(1, count + 1)]
    return [
        _Job(mode, url, run_id, tuple(names), mine, 0.0, settings.seconds)
        for mine in _spread(names, settings.processes)
    ]


def measure_cas(url: str, settings: Settings, run_id: str) -> Cas:
    reports = _run_processes(_writer_jobs("cas", url, run_id, settings, settings.writers))
    final = asyncio.run(_read_counter(url, _counter_key(run_id)))
    first = min(r.first_send_ns for r in reports)
    last = max(r.last_receive_ns for r in reports)
    return Cas(
        writers=settings.writers,
        increments=sum(r.increments for r in reports),
        conflicts=sum(r.conflicts for r in reports),
        seconds=(last - first) / 1e9,
        final_value=final,
        gave_up=sum(r.gave_up for r in reports),
    )


def measure_floors(url: str, settings: Settings, run_id: str) -> Floors:
    """Raw redis-py: XADD by ``agents`` clients one at a time, then in pipelines, then a Lua
    increment by ``writers`` clients; operations per second of each."""

    def rate(mode: Mode, count: int) -> float:
        reports = _run_processes(_writer_jobs(mode, url, run_id, settings, count))
        seconds = (max(r.last_receive_ns for r in reports) - min(r.first_send_ns for r in reports)) / 1e9
        return sum(r.operations for r in reports) / seconds if seconds > 0 else 0.0

    return Floors(
        xadd_per_s=rate("floor-xadd", settings.agents),
        xadd_pipelined_per_s=rate("floor-pipeline", settings.agents),
        lua_cas_per_s=rate("floor-cas", settings.writers),
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
    """Every measurement on one backend; temporary data is removed afterwards."""

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
    run_ids = [f"bench-bus-{uuid.uuid4().hex[:12]}" for _ in range(4)]  # one per measurement
    load_before = os.getloadavg()[0]
    floors: Floors | None = None
    try:
        say(f"latency at {settings.rate:g} msg/s, {settings.agents} agents, {settings.seconds:g} s…")
        latency = measure_latency(url, settings, run_ids[0])
        say("maximum throughput…")
        throughput = measure_throughput(url, settings, run_ids[1])
        say(f"CAS with {settings.writers} writers on one key…")
        cas = measure_cas(url, settings, run_ids[2])
        if backend == "redis" and settings.floors:
            say("floors: raw XADD, pipelined XADD, Lua CAS…")
            floors = measure_floors(url, settings, run_ids[3])
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
        floors=floors,
    )


def to_json(result: BackendResult) -> dict[str, Any]:
    lat, thr, cas, floors = result.latency, result.throughput, result.cas, result.floors
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
            "p99_from_due_ms": round(lat.p99_from_due_ms, 3),
            "timer_lag_p99_ms": round(lat.timer_lag_p99_ms, 3),
            "p99_target_ms": result.p99_target_ms,
        },
        "max_throughput": {
            "sent": thr.sent,
            "received": thr.received,
            "seconds": round(thr.seconds, 3),
            "msgs_per_s": round(thr.per_s, 1),
            "target_msgs_per_s": result.throughput_target,
        },
        "cas": {
            "writers": cas.writers,
            "increments": cas.increments,
            "conflicts": cas.conflicts,
            "gave_up": cas.gave_up,
            "seconds": round(cas.seconds, 3),
            "increments_per_s": round(cas.per_s, 1),
            "final_value": cas.final_value,
            "lost_updates": cas.lost_updates,
            "target_per_s": result.cas_target,
        },
        "floors": None
        if floors is None
        else {
            "xadd_per_s": round(floors.xadd_per_s, 1),
            "xadd_pipelined_per_s": round(floors.xadd_pipelined_per_s, 1),
            "lua_cas_per_s": round(floors.lua_cas_per_s, 1),
            "throughput_over_xadd": round(thr.per_s / floors.xadd_per_s, 3) if floors.xadd_per_s else None,
            "throughput_over_pipelined_xadd": round(thr.per_s / floors.xadd_pipelined_per_s, 3)
            if floors.xadd_pipelined_per_s
            else None,
            "cas_over_lua_cas": round(cas.per_s / floors.lua_cas_per_s, 3) if floors.lua_cas_per_s else None,
        },
        "meets_target": result.meets_target,
        "missed": result.missed,
    }


def section(runs: list[list[BackendResult]], settings: Settings, command: str) -> str:
    """The ``## maos bench bus`` section of docs/benchmarks.md: every run, one row per backend."""
    rate = f"{settings.rate:,.0f}/s"
    rows = [
        f"| run | backend | load | p50 @ {rate} | p99 @ {rate} | p99 from due | max | received "
        f"| max throughput | CAS ({settings.writers} writers) | CAS conflicts | lost updates | targets |",
        "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    floor_rows: list[str] = []
    met: dict[str, int] = {}
    for n, results in enumerate(runs, 1):
        for r in results:
            lat, thr, cas = r.latency, r.throughput, r.cas
            met[r.backend] = met.get(r.backend, 0) + int(r.meets_target)
            verdict = "met" if r.meets_target else "**missed**: " + "; ".join(r.missed)
            rows.append(
                f"| {n} | {r.backend} | {r.load_before:.1f} | {lat.p50_ms:.2f} ms | {lat.p99_ms:.2f} ms "
                f"| {lat.p99_from_due_ms:.2f} ms | {lat.max_ms:.1f} ms | {lat.received:,}/{lat.sent:,} "
                f"| {thr.per_s:,.0f} msg/s ({thr.received:,}/{thr.sent:,}) | {cas.per_s:,.0f} ops/s "
                f"| {cas.conflicts:,} | {cas.lost_updates} | {verdict} |"
            )
            if r.floors is not None:
                f = r.floors
                floor_rows.append(
                    f"| {n} | {f.xadd_per_s:,.0f}/s | {f.xadd_pipelined_per_s:,.0f}/s "
                    f"| {f.lua_cas_per_s:,.0f}/s | {_ratio(thr.per_s, f.xadd_per_s)} "
                    f"| {_ratio(thr.per_s, f.xadd_pipelined_per_s)} | {_ratio(cas.per_s, f.lua_cas_per_s)} |"
                )
    summary = "; ".join(f"{backend}: targets met in {k} of {len(runs)} runs" for backend, k in met.items())
    floors = (
        [
            "Floors: raw redis-py on the same server in the same run, same processes and concurrency, "
            f"nothing of MAOS: XADD one at a time per agent, XADD in pipelines of {PIPELINE}, and a "
            "compare-and-set update done by the server (one Lua call reading, comparing and "
            "writing; no conflict possible). Ratios: MAOS's figure over the floor.",
            "",
            "| run | XADD | pipelined XADD | Lua CAS | bus / XADD | bus / pipelined | CAS / Lua CAS |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            *floor_rows,
            "",
        ]
        if floor_rows
        else []
    )
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
            f"{settings.writers} writers incrementing one key with `cas_update` (read, compare-and-set, "
            "retry on conflict). Load = the 1-minute load average before the run (the machine may be "
            "shared with other jobs).",
            "",
            "Latency = when the receiver's `read` returned the message minus when the send began; a "
            "message due while its sender was still busy is timed from when it was due, so a sender "
            'that falls behind counts against it. "p99 from due" also counts the pacing timer\'s own '
            "lateness (asyncio timers fire up to a millisecond or more late). Targets: every message "
            "received; p99 ≤ 2 ms on Redis, ≤ 5 ms on SQLite; on Redis ≥ 10,000 msg/s maximum "
            "throughput and ≥ 5,000 CAS updates/s; no lost update.",
            "",
            *rows,
            "",
            f"{summary}.",
            "",
            *floors,
            "A message costs three store round trips, shared with whatever else the process does at "
            "the same moment: the send (one transaction: the lane's sequence counter and the append), "
            "the read (one `read_groups` over the agent's streams, which also waits) and the "
            "acknowledgement (one transaction with the seen-table). On Redis, transactions submitted "
            "while one is in flight go out together in one script call, each still all or nothing; a "
            "CAS update is one round trip when its process knows the key's version, and a conflict "
            "returns the current value (ADR 0009). Each process freezes its start-up heap before "
            "measuring, as `maos mcp` does (`maos.heap`).",
            "",
        ]
    )


def write_section(path: Path, text: str) -> None:
    """Replace (or append) this benchmark's section of ``path``, leaving the others alone."""
    docs.write_section(path, SECTION, text)
