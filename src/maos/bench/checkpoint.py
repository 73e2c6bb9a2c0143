"""``maos bench checkpoint``: what a checkpoint costs, and proof that it does not stall the loop.

For run states of 100, 1,000 and 10,000 tasks and one of ~50 MB (long prompts), built by
folding a realistic event log (a plan of TaskSpecs with prompts and dependencies; tasks
succeeded, failed after retries, running, ready, pending), measured in one process:

- full snapshot save time (serialize → zstd → AES-GCM → fsynced file, retention included),
  p50 and p99 over ``saves`` saves;
- the stored size next to the JSON size;
- segment save time for one task completion (the events of one attempt);
- restore time (``load_latest``);
- event-loop stall: the longest gap seen by a task that sleeps 1 ms in a loop while the saves
  run. Without the worker thread a 10,000-task save would stall it for its whole duration.
"""

from __future__ import annotations

import asyncio
import gc
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from maos import security
from maos.bench import docs
from maos.blobs import LocalBlobStore
from maos.checkpoint.checkpointer import Checkpointer
from maos.checkpoint.codec import state_json_parts
from maos.events import (
    Event,
    RunStarted,
    TaskAssigned,
    TaskFailed,
    TaskReady,
    TaskRetried,
    TaskStarted,
    TaskSucceeded,
    fold,
)
from maos.model import AgentSpec, Plan, RunConfig, TaskSpec
from maos.paths import attempt_file, outputs_dir

SECTION = "## maos bench checkpoint"
TARGET_MS_10K = 500.0
RUN_ID = "bench-checkpoint"

_WORDS = (  # noqa: SIM905 - a readable sentence, not a list of 40 lines
    "implement the endpoint and its tests refactor module parser cache invalidation schema migration "
    "review error handling retry with backoff document public api update changelog benchmark query "
    "index concurrency lock timeout agent task plan dependency output file function class interface"
).split()


@dataclass(frozen=True)
class Case:
    name: str
    tasks: int
    prompt_chars: int
    saves: int


@dataclass(frozen=True)
class Result:
    case: str
    tasks: int
    json_bytes: int
    stored_bytes: int
    save_p50_ms: float
    save_p99_ms: float
    save_cpu_p50_ms: float
    segment_p50_ms: float
    segment_p99_ms: float
    restore_ms: float
    stall_max_ms: float
    idle_stall_max_ms: float
    saves: int


def cases(saves: int = 20) -> list[Case]:
    return [
        Case("100 tasks", 100, 400, saves),
        Case("1,000 tasks", 1_000, 400, saves),
        Case("10,000 tasks", 10_000, 400, saves),
        Case("~50 MB state", 2_000, 25_000, max(5, saves // 2)),
    ]


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)


def build_events(case: Case, seed: int = 7) -> list[tuple[str, Event]]:
    """A run's log: RunStarted with the plan, then tasks in a mix of states."""
    rng = random.Random(seed)
    specs = []
    for n in range(case.tasks):
        deps = tuple(f"task-{d:05d}" for d in sorted(rng.sample(range(n), min(n, rng.randint(0, 3)))))
        specs.append(
            TaskSpec(
                id=f"task-{n:05d}",
                title=f"step {n}: {_text(rng, 40)}",
                prompt=_text(rng, case.prompt_chars),
                role=rng.choice(["coder", "tester", "reviewer", "writer"]),
                capabilities=("python",) if n % 3 else ("python", "sql"),
                depends_on=deps,
                priority=rng.randint(0, 5),
            )
        )
    plan = Plan(name=f"bench {case.name}", tasks=tuple(specs))
    agents = tuple(AgentSpec(id=f"agent-{n:02d}") for n in range(1, 21))
    ts = 1_800_000_000.0
    events: list[Event] = [
        RunStarted(ts=ts, run_id=RUN_ID, plan=plan, config=RunConfig(workdir="/work/bench"), agents=agents)
    ]
    for n, spec in enumerate(specs):
        roll = rng.random()
        if roll < 0.2:
            continue  # pending
        agent = agents[n % len(agents)].id
        events.append(TaskReady(ts=ts, task_id=spec.id))
        if roll < 0.3:
            continue  # ready
        events += [
            TaskAssigned(ts=ts, task_id=spec.id, agent_id=agent, attempt=1),
            TaskStarted(ts=ts, task_id=spec.id, agent_id=agent, attempt=1, pid=10_000 + n),
        ]
        if roll < 0.4:
            continue  # running
        if roll < 0.45:  # failed for good after max_attempts
            for attempt in range(1, spec.max_attempts + 1):
                if attempt > 1:
                    events += [
                        TaskReady(ts=ts, task_id=spec.id),
                        TaskAssigned(ts=ts, task_id=spec.id, agent_id=agent, attempt=attempt),
                        TaskStarted(ts=ts, task_id=spec.id, agent_id=agent, attempt=attempt, pid=n),
                    ]
                events.append(
                    TaskFailed(
                        ts=ts,
                        task_id=spec.id,
                        agent_id=agent,
                        attempt=attempt,
                        reason="exit code 1",
                        exit_code=1,
                        stderr_tail=_text(rng, 1_500),
                        duration_s=12.5,
                    )
                )
                if attempt < spec.max_attempts:
                    events.append(TaskRetried(ts=ts, task_id=spec.id, retry_at=ts + 2, delay_s=2.0))
            continue
        events.append(
            TaskSucceeded(
                ts=ts,
                task_id=spec.id,
                agent_id=agent,
                attempt=1,
                duration_s=30.0,
                output_path=str(attempt_file(outputs_dir(".", RUN_ID), spec.id, 1, ".out")),
            )
        )
        ts += 0.5
    return [(str(n), event) for n, event in enumerate(events, 1)]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


class _Ticker:
    """Sleeps 1 ms in a loop and records the longest gap beyond that."""

    def __init__(self) -> None:
        self.max_gap_s = 0.0
        self._stop = False

    async def run(self) -> None:
        last = time.perf_counter()
        while not self._stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.max_gap_s = max(self.max_gap_s, now - last - 0.001)
            last = now

    def stop(self) -> None:
        self._stop = True


async def _timed(
    action: Callable[[], Awaitable[object]], times: int, cpu: list[float] | None = None
) -> list[float]:
    """Wall-clock milliseconds per call; with ``cpu``, also the process's CPU milliseconds
    (all threads), which a busy machine does not inflate."""
    samples: list[float] = []
    for _ in range(times):
        started, started_cpu = time.perf_counter(), time.process_time()
        await action()
        samples.append((time.perf_counter() - started) * 1000)
        if cpu is not None:
            cpu.append((time.process_time() - started_cpu) * 1000)
    return samples


async def run_case(case: Case) -> Result:
    events = build_events(case)
    state = fold(events)
    completion = events[-3:]  # one attempt's events, for the segment saves
    del events  # a run holds its state, not its whole log: keep the collector's work alike
    gc.collect()
    json_bytes = sum(len(part) for part in state_json_parts(state))
    key = security.KeyInfo(security.generate_key(), "bench")
    with tempfile.TemporaryDirectory(prefix="maos-bench-") as directory:
        checkpointer = Checkpointer(RUN_ID, LocalBlobStore(Path(directory)), key)
        await checkpointer.snapshot(state)  # warm-up: imports, thread pool
        ticker = _Ticker()
        async with asyncio.TaskGroup() as group:
            group.create_task(ticker.run())
            await asyncio.sleep(0.01)
            cpu: list[float] = []
            saves = await _timed(lambda: checkpointer.snapshot(state), case.saves, cpu)
            ticker.stop()
        # The same ticker with nothing else running, as long: the noise floor of this machine.
        idle = _Ticker()
        async with asyncio.TaskGroup() as group:
            group.create_task(idle.run())
            await asyncio.sleep(sum(saves) / 1000)
            idle.stop()
        last = await checkpointer.snapshot(state)
        count = state.event_count
        segments = await _timed(lambda: checkpointer.segment(completion, start_count=count - 3), case.saves)
        restore = await _timed(lambda: checkpointer.load_latest(RUN_ID), 3)
    return Result(
        case=case.name,
        tasks=case.tasks,
        json_bytes=json_bytes,
        stored_bytes=last.size,
        save_p50_ms=statistics.median(saves),
        save_p99_ms=_percentile(saves, 0.99),
        save_cpu_p50_ms=statistics.median(cpu),
        segment_p50_ms=statistics.median(segments),
        segment_p99_ms=_percentile(segments, 0.99),
        restore_ms=statistics.median(restore),
        stall_max_ms=ticker.max_gap_s * 1000,
        idle_stall_max_ms=idle.max_gap_s * 1000,
        saves=case.saves,
    )


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def markdown(results: list[Result]) -> str:
    """The docs section for these results."""
    intro = " ".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')} with `maos bench checkpoint` on {platform.machine()},",
            f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f} at the end,",
            f"Python {platform.python_version()}; local directory store.",
            "A save is a full snapshot: JSON, zstd level 3, AES-256-GCM, temporary file, fsync,",
            "rename, then retention. *CPU* is the process CPU time of a save (all threads), which",
            "other load on the machine does not inflate. A segment is one task completion (3 events).",
            "*Stall* is the longest extra delay a 1 ms ticker task on the same event loop saw while",
            "the saves ran; *idle* is the same ticker, as long, with nothing else running (the",
            "machine's noise floor).",
        ]
    )
    lines = [
        SECTION,
        "",
        intro,
        "",
        "| state | JSON | stored | save p50 | save p99 | save CPU p50 | segment p50 | segment p99 "
        "| restore | stall max | idle |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cells = [
            f"{r.case} ({r.saves} saves)",
            _mb(r.json_bytes),
            _mb(r.stored_bytes),
            *(
                f"{value:.1f} ms"
                for value in (
                    r.save_p50_ms,
                    r.save_p99_ms,
                    r.save_cpu_p50_ms,
                    r.segment_p50_ms,
                    r.segment_p99_ms,
                )
            ),
            f"{r.restore_ms:.0f} ms",
            f"{r.stall_max_ms:.1f} ms",
            f"{r.idle_stall_max_ms:.1f} ms",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    ten_k = next((r for r in results if r.tasks == 10_000 and "tasks" in r.case), None)
    if ten_k is not None:
        verdict = "met" if ten_k.save_p99_ms <= TARGET_MS_10K else "NOT met"
        lines += [
            "",
            f"Target: save ≤ {TARGET_MS_10K:.0f} ms at 10,000 tasks — {verdict} "
            f"(p99 {ten_k.save_p99_ms:.0f} ms, CPU p50 {ten_k.save_cpu_p50_ms:.0f} ms).",
        ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace (or append) this benchmark's section of ``path``, leaving the others alone."""
    docs.write_section(path, SECTION, section)
