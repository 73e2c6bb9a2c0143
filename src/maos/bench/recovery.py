"""``maos bench mttr``: time to recover from a killed agent, measured on real processes.

A run of N long tasks (``sleep``) with N agents; once all run, their agent processes are
killed with SIGKILL one by one. MTTR of a kill = from the kill to the task's next
``task_started`` (its retry's agent process running), with the default retry backoff.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from maos.events import Event, TaskStarted
from maos.model import Plan, RunConfig, RunState, TaskSpec
from maos.orchestrator import Orchestrator
from maos.store import open_store


@dataclass(frozen=True)
class MttrResult:
    kills: int
    samples_s: tuple[float, ...]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)


async def measure_mttr(kills: int = 20, *, retry_base_s: float = 1.0) -> MttrResult:
    with tempfile.TemporaryDirectory(prefix="maos-mttr-") as tmp:
        workdir = Path(tmp)
        store = await open_store(f"sqlite:///{workdir / 'maos.db'}")
        try:
            plan = Plan(
                name="mttr",
                tasks=tuple(
                    TaskSpec(id=f"t{n:02d}", command="sleep 4", max_attempts=3) for n in range(kills)
                ),
            )
            config = RunConfig(agents=kills, workdir=str(workdir), retry_base_s=retry_base_s)
            orchestrator = Orchestrator(store, plan, config)
            started: dict[tuple[str, int], tuple[float, int]] = {}

            def hook(event_id: str, event: Event, state: RunState) -> None:
                if isinstance(event, TaskStarted):
                    started[(event.task_id, event.attempt)] = (time.time(), event.pid)

            orchestrator.hooks.append(hook)
            running = asyncio.create_task(orchestrator.run())
            while sum(1 for task_id, attempt in started if attempt == 1) < kills:
                await asyncio.sleep(0.01)
            killed_at: dict[str, float] = {}
            for (task_id, _), (_, pid) in sorted(started.items()):
                killed_at[task_id] = time.time()
                os.kill(pid, signal.SIGKILL)
                await asyncio.sleep(0.05)
            await running
            samples = tuple(
                started[(task_id, 2)][0] - at for task_id, at in killed_at.items() if (task_id, 2) in started
            )
            return MttrResult(kills=kills, samples_s=samples)
        finally:
            await store.close()


@dataclass(frozen=True)
class LatencyResult:
    checkpoints: bool
    samples_s: tuple[float, ...]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def scheduling_latency(*, checkpoints: bool, tasks: int = 300) -> LatencyResult:
    """A chain of no-op tasks: from each task's success to its child's agent process
    running (decide, assign, spawn) — with checkpoints (every 1 s and at each completion)
    or without."""
    from maos.blobs import LocalBlobStore
    from maos.checkpoint.checkpointer import Checkpointer
    from maos.events import TaskSucceeded
    from maos.paths import state_dir
    from maos.security import load_or_create_key

    with tempfile.TemporaryDirectory(prefix="maos-latency-") as tmp:
        workdir = Path(tmp)
        store = await open_store(f"sqlite:///{workdir / 'maos.db'}")
        try:
            plan = Plan(
                name="chain",
                tasks=tuple(
                    TaskSpec(id=f"t{n}", command="true", depends_on=(f"t{n - 1}",) if n else ())
                    for n in range(tasks)
                ),
            )
            checkpointer = None
            if checkpoints:
                key = load_or_create_key(state_dir(workdir), env={})
                checkpointer = Checkpointer(
                    "bench", LocalBlobStore(workdir / "checkpoints"), key, every_s=1.0
                )
            orchestrator = Orchestrator(
                store,
                plan,
                RunConfig(agents=4, workdir=str(workdir)),
                run_id="bench",
                checkpointer=checkpointer,
            )
            done: dict[str, float] = {}
            samples: list[float] = []

            def hook(event_id: str, event: Event, state: RunState) -> None:
                if isinstance(event, TaskSucceeded):
                    done[event.task_id] = event.ts
                elif isinstance(event, TaskStarted) and event.task_id != "t0":
                    parent = f"t{int(event.task_id[1:]) - 1}"
                    samples.append(event.ts - done[parent])

            orchestrator.hooks.append(hook)
            await orchestrator.run()
            if checkpointer is not None:
                await checkpointer.blobs.close()
            return LatencyResult(checkpoints=checkpoints, samples_s=tuple(samples))
        finally:
            await store.close()
