"""``maos bench spawn``: what starting a Claude Code agent costs, and what the warm pool saves.

The real CLI against the scripted model server (its own process, one trivial text reply), in
real MAOS runs (``Orchestrator``, SQLite store) — two with a warm pool, one per primer
(``WarmPool(primer=...)``: the model primer's run first, so that a machine warmed up by the
first run helps the local one), and one without:

- **cold start**: process start → its ``system/init`` line, for each of the ``agents`` CLIs
  the warm pool starts when the run begins, ``concurrency`` at a time (start-up is
  CPU-bound; the pool's default is one per core); **primed**: process start → the primer's
  last ``result`` line (the closing ``/cost``'s, after the warm-up turn with the model
  primer);
- **warm assignment**: a task's ``task_ready`` event → the model server receives that task's
  first request. The plan is a chain of twice ``agents`` Claude Code tasks behind a command task
  that waits until every agent is warm; the scheduler spreads the chain over the agents
  (least-loaded first), so the first ``agents`` tasks are each the first task of another idle
  warm agent, and the next ``agents`` each an agent's second task (its session continues).
  One task at a time: the latency of an assignment, not of a machine busy with others. The
  target (p99 ≤ 100 ms over first and next tasks) is judged on the model primer; the local
  primer's figures are shown next to it;
- **without the pool**: a chain of ``agents`` tasks with ``--warm 0`` (every task starts a CLI);
- **memory**: each warm agent's process tree (the CLI; its door is the MAOS process's MCP
  endpoint, ``maos.mcp_http``): RSS with all agents idle, and peak RSS (the sum of each
  process's ``VmHWM``, read from ``/proc`` just before the run ends, so the tasks' turns are
  included); and the MAOS process's own RSS with every agent warm, and its peak.

Timestamps: ``task_ready.ts`` and the server's ``received_at`` are both ``time.time()`` on one
machine. A chain ends with a command task that waits for the final memory reading.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from maos.agents.claude_cli import find_claude_cli
from maos.agents.claude_code import ClaudeCodeRuntime
from maos.agents.command import CommandRuntime
from maos.agents.pool import WarmPool
from maos.agents.primer import Primer
from maos.agents.runtime import AgentRuntime
from maos.bench import docs
from maos.bench.machine import peak_rss
from maos.bench.model_server import model_server_process
from maos.errors import MaosError
from maos.eventlog import EventLog
from maos.events import TaskReady, TaskStarted
from maos.model import Plan, RunConfig, RunStatus, TaskSpec
from maos.orchestrator import Orchestrator
from maos.store import open_store
from maos.store.base import Store

SECTION = "## maos bench spawn"
TARGET_P99_S = 0.100
TARGET_PRIMER = Primer.MODEL
PRIMERS = (Primer.MODEL, Primer.LOCAL)  # measured in this order: a machine warmed up helps "local"
SCRIPT = "default: {text: hi}\n"
MB = 1 << 20


@dataclass(frozen=True)
class Settings:
    agents: int = 20
    concurrency: int = 2
    cold: bool = True  # also run the chain without the pool


@dataclass
class WarmFigures:
    """One warm run: its pool primes every agent with ``primer``."""

    primer: Primer
    cold_start_s: list[float] = field(default_factory=list)  # process start -> init, per agent
    ready_s: list[float] = field(default_factory=list)  # process start -> primed, per agent
    warmup_wall_s: float = 0.0  # first start -> last agent ready
    first_s: list[float] = field(default_factory=list)  # an agent's first task
    next_s: list[float] = field(default_factory=list)  # an agent's next tasks
    handover_s: list[float] = field(default_factory=list)  # task_ready -> task_started
    served_by: int = 0  # distinct warm agents that served the chain
    agent_rss: list[int] = field(default_factory=list)  # bytes, per agent tree, all idle
    agent_peak_rss: list[int] = field(default_factory=list)  # bytes, per agent tree, sum of VmHWM
    maos_rss: int = 0  # this process with every agent warm

    @property
    def assign_s(self) -> list[float]:
        return self.first_s + self.next_s

    @property
    def meets_target(self) -> bool:
        """Every warm assignment (first and next tasks of agents) counts."""
        return bool(self.assign_s) and percentile(self.assign_s, 99) <= TARGET_P99_S


@dataclass
class Result:
    settings: Settings
    warm: dict[Primer, WarmFigures] = field(default_factory=dict)  # in the order measured
    cold_assign_s: list[float] = field(default_factory=list)  # task_ready -> request, without the pool
    maos_peak_rss: int = 0
    cli_version: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def meets_target(self) -> bool:
        """Judged on the model primer, the setting that is meant to meet it."""
        measured = self.warm.get(TARGET_PRIMER)
        return measured is not None and measured.meets_target


def percentile(samples: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (with 20 samples p99 is near the max)."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def chain(tasks_count: int, gate: Path, end: Path) -> Plan:
    """``gate`` → t01 → … → tNN → ``end``: the command tasks wait for their files."""

    def wait_for(path: Path) -> tuple[str, ...]:
        return ("sh", "-c", f"while [ ! -e {shlex.quote(str(path))} ]; do sleep 0.01; done")

    tasks = [TaskSpec(id="gate", command=wait_for(gate), isolation="none")]
    for n in range(1, tasks_count + 1):
        tasks.append(TaskSpec(id=f"t{n:02d}", prompt="say hi", depends_on=(tasks[-1].id,), isolation="none"))
    tasks.append(TaskSpec(id="end", command=wait_for(end), depends_on=(tasks[-1].id,), isolation="none"))
    return Plan(name="bench-spawn", tasks=tuple(tasks))


async def run(settings: Settings) -> Result:
    cli = find_claude_cli()
    if cli is None:
        raise MaosError("no Claude Code CLI (pip install claude-agent-sdk bundles one)")
    result = Result(settings)
    version = cli.parent / "claude.version"
    result.cli_version = version.read_text().strip() if version.exists() else str(cli)
    with tempfile.TemporaryDirectory(prefix="maos-bench-spawn-") as tmp:
        root = Path(tmp)
        (root / "script.yaml").write_text(SCRIPT)
        async with model_server_process(root / "script.yaml") as url:
            store = await open_store(f"sqlite:///{root / 'maos.db'}")
            try:
                for primer in PRIMERS:
                    result.warm[primer] = await _warm_run(store, root / f"warm-{primer}", url, primer, result)
                if settings.cold:
                    await _cold_run(store, root / "cold", url, result)
            finally:
                await store.close()
    result.maos_peak_rss = peak_rss(os.getpid())
    return result


async def _warm_run(store: Store, work: Path, url: str, primer: Primer, result: Result) -> WarmFigures:
    settings = result.settings
    figures = WarmFigures(primer)
    work.mkdir()
    plan = chain(2 * settings.agents, work / "GATE", work / "END")
    pool = WarmPool(
        ClaudeCodeRuntime(base_url=url),
        size=settings.agents,
        start_concurrency=settings.concurrency,
        primer=primer,
    )
    runtimes: dict[str, AgentRuntime] = {"command": CommandRuntime(), "claude-code": pool}
    config = RunConfig(agents=settings.agents, workdir=str(work), grace_s=2.0)
    orchestrator = Orchestrator(store, plan, config, runtimes=runtimes)
    running = asyncio.create_task(orchestrator.run(), name=f"maos-bench-spawn-warm-{primer}")
    try:
        while len(pool.stats.starts) + pool.stats.failed_starts < settings.agents:
            if running.done():
                break
            await asyncio.sleep(0.05)
        await pool.wait_ready()
        starts = pool.stats.starts
        figures.cold_start_s = [start.init_s for start in starts]
        figures.ready_s = [start.ready_s for start in starts]
        if starts:
            figures.warmup_wall_s = max(s.started_at + s.ready_s for s in starts) - min(
                s.started_at for s in starts
            )
        if pool.stats.failed_starts:
            result.problems.append(
                f"{pool.stats.failed_starts} warm agent(s) did not start ({primer} primer)"
            )
        pids = pool.warm_agents()
        figures.agent_rss = [_tree_rss(pid) for pid in pids.values()]
        figures.maos_rss = psutil.Process().memory_info().rss
        (work / "GATE").touch()
        last = plan.tasks[-2].id
        while not running.done() and not orchestrator.state.tasks[last].state.terminal:
            await asyncio.sleep(0.05)
        figures.agent_peak_rss = [_tree_peak_rss(pid) for pid in pool.warm_agents().values()]
        (work / "END").touch()
        state = await running
    finally:
        if not running.done():
            running.cancel()
    if state.status is not RunStatus.SUCCEEDED:
        result.problems.append(f"the warm run ({primer} primer) {state.status.value}: {state.summary}")
    measured = await _assignments(store, orchestrator.run_id, url)
    figures.first_s, figures.next_s = measured.first, measured.later
    figures.handover_s = measured.handover
    figures.served_by = len(measured.sessions)
    return figures


async def _cold_run(store: Store, work: Path, url: str, result: Result) -> None:
    work.mkdir()
    (work / "GATE").touch()
    (work / "END").touch()
    plan = chain(result.settings.agents, work / "GATE", work / "END")
    runtimes: dict[str, AgentRuntime] = {
        "command": CommandRuntime(),
        "claude-code": ClaudeCodeRuntime(base_url=url),
    }
    config = RunConfig(agents=result.settings.agents, workdir=str(work), grace_s=2.0)
    orchestrator = Orchestrator(store, plan, config, runtimes=runtimes)
    state = await orchestrator.run()
    if state.status is not RunStatus.SUCCEEDED:
        result.problems.append(f"the run without the pool {state.status.value}: {state.summary}")
    measured = await _assignments(store, orchestrator.run_id, url)
    result.cold_assign_s = measured.first + measured.later


@dataclass
class _Measured:
    first: list[float] = field(default_factory=list)  # a session's first task
    later: list[float] = field(default_factory=list)  # its next tasks
    handover: list[float] = field(default_factory=list)  # task_ready -> task_started
    sessions: set[str] = field(default_factory=set)


async def _assignments(store: Store, run_id: str, url: str) -> _Measured:
    """Per Claude Code task, ``task_ready`` → the first request of its session after it."""
    ready: dict[str, float] = {}
    started: dict[str, TaskStarted] = {}
    async for _, event in EventLog(store, run_id).iterate():
        if isinstance(event, TaskReady) and event.task_id not in ready:
            ready[event.task_id] = event.ts
        elif isinstance(event, TaskStarted) and event.session_id and event.task_id not in started:
            started[event.task_id] = event  # in log order: a session's first task first
    async with httpx.AsyncClient(base_url=url) as client:
        requests = (await client.get("/requests")).json()["requests"]
    measured = _Measured()
    for task_id, event in started.items():
        times = [float(r["received_at"]) for r in requests if r["session"] == event.session_id]
        after = [t for t in times if t >= ready[task_id]]
        if after:
            later = event.session_id in measured.sessions
            (measured.later if later else measured.first).append(min(after) - ready[task_id])
            measured.handover.append(event.ts - ready[task_id])
        measured.sessions.add(event.session_id or "")
    return measured


def _tree(pid: int) -> list[psutil.Process]:
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.Error:
        return []


def _tree_rss(pid: int) -> int:
    total = 0
    for proc in _tree(pid):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def _tree_peak_rss(pid: int) -> int:
    return sum(peak_rss(proc.pid) for proc in _tree(pid))


# --------------------------------------------------------------------------- the report


def _ms(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value >= 1 else f"{value * 1000:.1f} ms"


def section(result: Result) -> str:
    settings = result.settings
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    runs = list(result.warm.values())
    rows = [
        (
            f"cold start: process start → `system/init` ({settings.concurrency} at a time; both runs)",
            [v for run in runs for v in run.cold_start_s],
        )
    ]
    rows += [(f"primed ({_label(run.primer)}): process start → primer answered", run.ready_s) for run in runs]
    for run in runs:
        rows += [
            (
                f"warm assignment, {_label(run.primer)}, an agent's first task: `task_ready` → "
                "first model request",
                run.first_s,
            ),
            (f"warm assignment, {_label(run.primer)}, an agent's next task (same session)", run.next_s),
        ]
    rows.append(
        (
            "of which MAOS: `task_ready` → `task_started` (the message goes to stdin next; both runs)",
            [v for run in runs for v in run.handover_s],
        )
    )
    if result.cold_assign_s:
        rows.append(
            ("without the pool (`--warm 0`): `task_ready` → first model request", result.cold_assign_s)
        )
    lines = [
        SECTION,
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `maos bench spawn --agents {settings.agents} "
        f"--concurrency {settings.concurrency}` on {platform.machine()}, {os.cpu_count()} CPU(s) "
        f"(load average {load:.1f} at the end), Python {platform.python_version()}, Claude Code "
        f"{result.cli_version}; the scripted model server in its own process, one text reply; "
        "SQLite store. Each agent is the CLI; the MAOS process serves their door's MCP endpoint "
        "(ADR 0015). "
        "Two warm runs, one per primer (`--warm-primer`), the model primer's first; then the chain "
        "without the pool.",
        "",
        "| measure | n | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, samples in rows:
        if samples:
            lines.append(
                f"| {name} | {len(samples)} | {_ms(percentile(samples, 50))} | "
                f"{_ms(percentile(samples, 99))} | {_ms(max(samples))} |"
            )
    lines.append("")
    for run in runs:
        if run.cold_start_s:
            lines.append(
                f"With the {_label(run.primer)}, warming {len(run.cold_start_s)} agents took "
                f"{run.warmup_wall_s:.1f} s of wall clock ({run.warmup_wall_s / len(run.cold_start_s):.2f} s "
                f"per agent at {settings.concurrency} starts at a time); the chain's {len(run.assign_s)} "
                f"tasks went to {run.served_by} warm agents, one task at a time."
            )
            lines.append("")
    if any(run.first_s for run in runs):
        lines.append(
            "The pool takes the CLI start off the critical path; what remains of a warm assignment "
            "is the CLI's own work on a turn before its request. A process's first real turn does "
            "more than its next ones (the CLI's debug log shows the skills attachment and a longer "
            "request build on a process's first turn only). With the local primer (`/cost`, a local "
            "command that does not get that far) an agent's first task pays it; the model primer pays "
            "it while warming up, with one short model request per agent. Outliers follow the "
            "machine's load: its cores are shared with other jobs."
        )
        lines.append("")
    memory = [run for run in runs if run.agent_peak_rss]
    if memory:
        parts = []
        for run in memory:
            idle = sorted(run.agent_rss) or [0]
            peak = sorted(run.agent_peak_rss)
            parts.append(
                f"with the {_label(run.primer)}, {percentile([float(v) for v in idle], 50) / MB:.0f} MB "
                f"RSS idle (p50; max {idle[-1] / MB:.0f} MB), peak RSS, tasks included, p50 "
                f"{percentile([float(v) for v in peak], 50) / MB:.0f} MB (max {peak[-1] / MB:.0f} MB; "
                f"{len(peak)} agents: {sum(peak) / MB / 1024:.1f} GB at peak)"
            )
        lines.append(
            "Memory of one warm agent (its CLI's process tree): "
            + "; ".join(parts)
            + f". The MAOS process itself: {memory[-1].maos_rss / MB:.0f} MB RSS with "
            f"{len(memory[-1].agent_rss)} agents warm, peak {result.maos_peak_rss / MB:.0f} MB."
        )
        lines.append("")
    for run in runs:
        if not run.assign_s:
            continue
        verdict = "met" if run.meets_target else "NOT met"
        judged = (
            f"Target: warm assignment p99 ≤ {TARGET_P99_S * 1000:.0f} ms, judged with the "
            f"{_label(run.primer)} (`--warm-primer {run.primer}`)"
            if run.primer is TARGET_PRIMER
            else f"With the {_label(run.primer)} (`--warm-primer {run.primer}`)"
        )
        lines.append(
            f"{judged}: {verdict} ({_ms(percentile(run.assign_s, 99))} over all {len(run.assign_s)} "
            f"warm assignments; first tasks {_ms(percentile(run.first_s, 99))}, next tasks "
            f"{_ms(percentile(run.next_s, 99))})."
        )
        lines.append("")
    for problem in result.problems:
        lines.append(f"Problem: {problem}")
        lines.append("")
    return "\n".join(lines)


def _label(primer: Primer) -> str:
    return f"{primer} primer"


def write_section(path: Path, text: str) -> None:
    """Replace (or append) this benchmark's section of ``path``, leaving the others alone."""
    docs.write_section(path, SECTION, text)


def to_json(result: Result) -> dict[str, Any]:
    def figures(samples: list[float]) -> dict[str, float | int]:
        return {
            "n": len(samples),
            "p50_ms": percentile(samples, 50) * 1000,
            "p99_ms": percentile(samples, 99) * 1000,
            "max_ms": max(samples, default=float("nan")) * 1000,
        }

    def warm(run: WarmFigures) -> dict[str, Any]:
        return {
            "cold_start": figures(run.cold_start_s),
            "primed": figures(run.ready_s),
            "warm_assignment_first_task": figures(run.first_s),
            "warm_assignment_next_task": figures(run.next_s),
            "maos_handover": figures(run.handover_s),
            "warmup_wall_s": run.warmup_wall_s,
            "served_by": run.served_by,
            "agent_rss_mb": [v / MB for v in run.agent_rss],
            "agent_peak_rss_mb": [v / MB for v in run.agent_peak_rss],
            "maos_rss_mb": run.maos_rss / MB,
            "meets_target": run.meets_target,
        }

    return {
        "agents": result.settings.agents,
        "concurrency": result.settings.concurrency,
        "primers": {str(primer): warm(run) for primer, run in result.warm.items()},
        "without_pool": figures(result.cold_assign_s),
        "maos_peak_rss_mb": result.maos_peak_rss / MB,
        "target_primer": str(TARGET_PRIMER),
        "meets_target": result.meets_target,
        "problems": result.problems,
    }
