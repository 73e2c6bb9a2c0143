"""``maos bench parallel``: how close MAOS gets to a DAG's ideal makespan with real processes.

Every task is a real agent process that sleeps a known time (``sleep S``) or does nothing
(``true``). For each plan, measured in one run:

- makespan ÷ lower bound, where the lower bound is max(critical path, total work ÷ agents);
- speedup versus the same plan with ``--agents 1``;
- scheduling overhead per task = (makespan - lower bound) / tasks, i.e. what MAOS added.

The resource-contended plans (``resources: {db: N}``) are bound by the resource too: their
lower bound also counts each resource's work ÷ its capacity. One of them lists last a chain
whose head needs the resource: only a scheduler that prefers the critical path meets the bound.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from maos.model import Plan, RunConfig, RunStatus, TaskSpec
from maos.orchestrator import Orchestrator
from maos.store import open_store


@dataclass(frozen=True)
class Case:
    name: str
    plan: Plan
    durations: dict[str, float]
    agents: int
    sequential: bool = True  # also run with --agents 1


@dataclass(frozen=True)
class Result:
    case: str
    tasks: int
    agents: int
    makespan_s: float
    lower_bound_s: float
    sequential_s: float | None
    failed: int

    @property
    def ratio(self) -> float:
        return self.makespan_s / self.lower_bound_s if self.lower_bound_s else float("nan")

    @property
    def speedup(self) -> float | None:
        return self.sequential_s / self.makespan_s if self.sequential_s else None

    @property
    def overhead_ms_per_task(self) -> float:
        return max(0.0, self.makespan_s - self.lower_bound_s) / self.tasks * 1000


def _task(
    task_id: str, seconds: float, deps: Sequence[str] = (), resources: dict[str, int] | None = None
) -> TaskSpec:
    command: tuple[str, ...] = ("sleep", f"{seconds:g}") if seconds > 0 else ("true",)
    return TaskSpec(
        id=task_id, command=command, depends_on=tuple(deps), max_attempts=1, resources=resources or {}
    )


def _case(
    name: str,
    specs: list[TaskSpec],
    durations: dict[str, float],
    agents: int,
    *,
    sequential: bool = True,
    resources: dict[str, int] | None = None,
) -> Case:
    plan = Plan(name=name, tasks=tuple(specs), resources=resources or {})  # type: ignore[arg-type]
    return Case(name, plan, durations, agents, sequential)


def cases(seed: int = 7) -> list[Case]:
    result: list[Case] = []
    specs = [_task(f"t{n:02d}", 1.0) for n in range(20)]
    result.append(_case("20 independent x 1s", specs, {s.id: 1.0 for s in specs}, 20))

    diamond = [
        _task("top", 0.5),
        _task("left", 0.5, ["top"]),
        _task("right", 0.5, ["top"]),
        _task("bottom", 0.5, ["left", "right"]),
    ]
    result.append(_case("diamond x 0.5s", diamond, {s.id: 0.5 for s in diamond}, 4))

    layers: list[TaskSpec] = []
    for layer in range(5):
        for n in range(10):
            deps = [f"l{layer - 1}-{m}" for m in range(10)] if layer else []
            layers.append(_task(f"l{layer}-{n}", 0.3, deps))
    result.append(_case("5 layers x 10 x 0.3s", layers, {s.id: 0.3 for s in layers}, 10))

    rng = random.Random(seed)
    random_specs: list[TaskSpec] = []
    durations: dict[str, float] = {}
    for n in range(200):
        deps = sorted({f"r{rng.randrange(n)}" for _ in range(rng.randint(0, 3))}) if n else []
        seconds = round(rng.uniform(0.05, 0.25), 3)
        durations[f"r{n}"] = seconds
        random_specs.append(_task(f"r{n}", seconds, deps))
    result.append(_case("random DAG of 200", random_specs, durations, 20))

    noop = [_task(f"n{n:04d}", 0.0) for n in range(1000)]
    result.append(_case("1000 no-op", noop, {s.id: 0.0 for s in noop}, 20))
    result += contended_cases()
    return result


def contended_cases() -> list[Case]:
    """Plans whose makespan a resource bounds (``resources: {db: N}``)."""
    result: list[Case] = []
    shared = [_task(f"db{n:02d}", 0.25, resources={"db": 1}) for n in range(16)]
    free = [_task(f"free{n:02d}", 0.25) for n in range(16)]
    specs = shared + free
    result.append(
        _case("db:2 contended, 16 of 32 x 0.25s", specs, {s.id: 0.25 for s in specs}, 8, resources={"db": 2})
    )
    # A chain whose head needs the db, listed last: the scheduler must start it first (the
    # critical path), or the chain's 0.6 s run after the other db tasks.
    head = [_task(f"side{n}", 0.2, resources={"db": 1}) for n in range(6)]
    chain = [
        _task("head", 0.2, resources={"db": 1}),
        _task("c1", 0.2, ["head"]),
        _task("c2", 0.2, ["c1"]),
        _task("c3", 0.2, ["c2"]),
    ]
    specs = head + chain
    result.append(
        _case("db:1, chain head listed last", specs, {s.id: 0.2 for s in specs}, 4, resources={"db": 1})
    )
    return result


def lower_bound(case: Case, agents: int) -> float:
    """max(critical path by known durations, total work / agents, and each resource's work
    (duration x units of the tasks holding it) / its capacity)."""
    finish: dict[str, float] = {}
    for task in case.plan.tasks:  # plans above list every task after its dependencies
        finish[task.id] = case.durations[task.id] + max((finish[d] for d in task.depends_on), default=0.0)
    critical = max(finish.values(), default=0.0)
    bound = max(critical, sum(case.durations.values()) / agents)
    for name, limit in case.plan.resources.items():
        work = sum(case.durations[t.id] * t.resources.get(name, 0) for t in case.plan.tasks)
        bound = max(bound, work / limit.capacity)
    return bound


async def _makespan(plan: Plan, agents: int, workdir: Path) -> tuple[float, int]:
    store = await open_store(f"sqlite:///{workdir / f'bench-{agents}.db'}")
    try:
        config = RunConfig(agents=agents, workdir=str(workdir), retry_base_s=0.0, grace_s=1.0)
        orchestrator = Orchestrator(store, plan, config)
        started = time.perf_counter()
        state = await orchestrator.run()
        elapsed = time.perf_counter() - started
        failed = 0 if state.status is RunStatus.SUCCEEDED else len(state.tasks) - state.counts()["succeeded"]
        return elapsed, failed
    finally:
        await store.close()


async def run_case(case: Case, *, sequential: bool = True) -> Result:
    with tempfile.TemporaryDirectory(prefix="maos-bench-") as tmp:
        workdir = Path(tmp)
        makespan, failed = await _makespan(case.plan, case.agents, workdir)
        seq: float | None = None
        if sequential and case.sequential:
            seq, seq_failed = await _makespan(case.plan, 1, workdir)
            failed += seq_failed
    return Result(
        case=case.name,
        tasks=len(case.plan.tasks),
        agents=case.agents,
        makespan_s=makespan,
        lower_bound_s=lower_bound(case, case.agents),
        sequential_s=seq,
        failed=failed,
    )
