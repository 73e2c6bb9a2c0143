"""``maos bench spawn``: what starting a Claude Code agent costs, and what the warm pool saves.

The real CLI against the scripted model server (its own process, one trivial text reply), in
real MAOS runs (``Orchestrator``, SQLite store) — one with a warm pool, one without:

- **cold start**: process start → its ``system/init`` line, for each of the ``agents`` CLIs
  the warm pool starts when the run begins, ``concurrency`` at a time (start-up is
  CPU-bound; the pool's default is one per core);
- **warm assignment**: a task's ``task_ready`` event → the model server receives that task's
  first request. The plan is a chain of twice ``agents`` Claude Code tasks behind a command task
  that waits until every agent is warm; the scheduler spreads the chain over the agents
  (least-loaded first), so the first ``agents`` tasks are each the first task of another idle
  warm agent, and the next ``agents`` each an agent's second task (its session continues).
  One task at a time: the latency of an assignment, not of a machine busy with others;
- **without the pool**: a chain of ``agents`` tasks with ``--warm 0`` (every task starts a CLI);
- **memory**: each warm agent's process tree (the CLI and its door MCP server): RSS with all
  agents idle, and peak RSS (the sum of each process's ``VmHWM``, read from ``/proc`` just
  before the run ends, so the tasks' turns are included); and the MAOS process's own RSS with
  every agent warm, and its peak.

Timestamps: ``task_ready.ts`` and the server's ``received_at`` are both ``time.time()`` on one
machine. A chain ends with a command task that waits for the final memory reading.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shlex
import sys
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
from maos.agents.process import stop_process
from maos.agents.runtime import AgentRuntime
from maos.bench import docs
from maos.errors import MaosError
from maos.events import EventLog
from maos.model import Plan, RunConfig, RunStatus, TaskReady, TaskSpec, TaskStarted
from maos.orchestrator import Orchestrator
from maos.store import open_store
from maos.store.base import Store

SECTION = "## maos bench spawn"
TARGET_P99_S = 0.100
SCRIPT = "default: {text: hi}\n"
MB = 1 << 20


@dataclass(frozen=True)
class Settings:
    agents: int = 20
    concurrency: int = 2
    cold: bool = True  # also run the chain without the pool


@dataclass
class Result:
    settings: Settings
    cold_start_s: list[float] = field(default_factory=list)  # process start -> init, per agent
    warmup_wall_s: float = 0.0  # first start -> last agent ready
    warm_assign_s: list[float] = field(default_factory=list)  # an agent's first task
    reuse_assign_s: list[float] = field(default_factory=list)  # an agent's next tasks
    handover_s: list[float] = field(default_factory=list)  # task_ready -> task_started, warm run
    cold_assign_s: list[float] = field(default_factory=list)  # the same, without the pool
    served_by: int = 0  # distinct warm agents that served the chain
    agent_rss: list[int] = field(default_factory=list)  # bytes, per agent tree, all idle
    agent_peak_rss: list[int] = field(default_factory=list)  # bytes, per agent tree, sum of VmHWM
    maos_rss: int = 0  # this process with every agent warm
    maos_peak_rss: int = 0
    cli_version: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def meets_target(self) -> bool:
        """Every warm assignment (first and next tasks of agents) counts."""
        samples = self.warm_assign_s + self.reuse_assign_s
        return bool(samples) and percentile(samples, 99) <= TARGET_P99_S


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
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "maos", "model-server", "--script", str(root / "script.yaml"), "--port", "0", "--quiet"),
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            assert server.stdout is not None
            first = (await server.stdout.readline()).decode().strip()
            url = first.rsplit(" ", 1)[-1]
            if not url.startswith("http://"):
                raise MaosError(f"the model server did not start: {first!r}")
            store = await open_store(f"sqlite:///{root / 'maos.db'}")
            try:
                await _warm_run(store, root / "warm", url, result)
                if settings.cold:
                    await _cold_run(store, root / "cold", url, result)
            finally:
                await store.close()
        finally:
            await stop_process(server, 2.0)
    return result


async def _warm_run(store: Store, work: Path, url: str, result: Result) -> None:
    settings = result.settings
    work.mkdir()
    plan = chain(2 * settings.agents, work / "GATE", work / "END")
    pool = WarmPool(
        ClaudeCodeRuntime(base_url=url), size=settings.agents, start_concurrency=settings.concurrency
    )
    runtimes: dict[str, AgentRuntime] = {"command": CommandRuntime(), "claude-code": pool}
    config = RunConfig(agents=settings.agents, workdir=str(work), grace_s=2.0)
    orchestrator = Orchestrator(store, plan, config, runtimes=runtimes)
    running = asyncio.create_task(orchestrator.run(), name="maos-bench-spawn-warm")
    try:
        while len(pool.stats.starts) + pool.stats.failed_starts < settings.agents:
            if running.done():
                break
            await asyncio.sleep(0.05)
        await pool.wait_ready()
        starts = pool.stats.starts
        result.cold_start_s = [start.init_s for start in starts]
        if starts:
            result.warmup_wall_s = max(s.started_at + s.ready_s for s in starts) - min(
                s.started_at for s in starts
            )
        if pool.stats.failed_starts:
            result.problems.append(f"{pool.stats.failed_starts} warm agent(s) did not start")
        pids = pool.warm_agents()
        result.agent_rss = [_tree_rss(pid) for pid in pids.values()]
        result.maos_rss = psutil.Process().memory_info().rss
        (work / "GATE").touch()
        last = plan.tasks[-2].id
        while not running.done() and not orchestrator.state.tasks[last].state.terminal:
            await asyncio.sleep(0.05)
        result.agent_peak_rss = [_tree_peak_rss(pid) for pid in pool.warm_agents().values()]
        (work / "END").touch()
        state = await running
    finally:
        if not running.done():
            running.cancel()
    result.maos_peak_rss = _peak_rss(os.getpid())
    if state.status is not RunStatus.SUCCEEDED:
        result.problems.append(f"the warm run {state.status.value}: {state.summary}")
    measured = await _assignments(store, orchestrator.run_id, url)
    result.warm_assign_s, result.reuse_assign_s = measured.first, measured.later
    result.handover_s = measured.handover
    result.served_by = len(measured.sessions)


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


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (``VmHWM``), in bytes; 0 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _tree_peak_rss(pid: int) -> int:
    return sum(_peak_rss(proc.pid) for proc in _tree(pid))


# --------------------------------------------------------------------------- the report


def _ms(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value >= 1 else f"{value * 1000:.1f} ms"


def section(result: Result) -> str:
    settings = result.settings
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = [
        (
            f"cold start: process start → `system/init` ({settings.concurrency} at a time)",
            result.cold_start_s,
        ),
        ("warm assignment, an agent's first task: `task_ready` → first model request", result.warm_assign_s),
        ("warm assignment, an agent's next task (same session)", result.reuse_assign_s),
        ("of which MAOS: `task_ready` → `task_started` (the message goes to stdin next)", result.handover_s),
    ]
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
        "SQLite store. Each agent is the CLI plus the door's MCP server (`maos mcp`) it starts.",
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
    if result.cold_start_s:
        lines.append(
            f"Warming {len(result.cold_start_s)} agents took {result.warmup_wall_s:.1f} s of wall clock "
            f"({result.warmup_wall_s / len(result.cold_start_s):.2f} s per agent at "
            f"{settings.concurrency} starts at a time). The chain's "
            f"{len(result.warm_assign_s) + len(result.reuse_assign_s)} tasks went to "
            f"{result.served_by} warm agents, one task at a time."
        )
        lines.append("")
    if result.warm_assign_s and result.cold_assign_s:
        lines.append(
            "The pool takes the CLI start off the critical path; what remains of a warm assignment "
            "is the CLI's own work on a turn before its request. An agent's first turn does more "
            "than its next ones (the CLI's debug log shows the skills attachment and a longer "
            "request build on a process's first turn only; the `/cost` primer, a local command, "
            "does not get that far). Outliers follow the machine's load: its cores are shared "
            "with other jobs."
        )
        lines.append("")
    if result.agent_peak_rss:
        peak = sorted(result.agent_peak_rss)
        idle = sorted(result.agent_rss) or [0]
        idle_p50 = percentile([float(v) for v in idle], 50)
        peak_p50 = percentile([float(v) for v in peak], 50)
        lines.append(
            f"Memory: one warm agent (CLI + MCP server) holds {idle_p50 / MB:.0f} MB "
            f"RSS idle (p50; max {idle[-1] / MB:.0f} MB); peak RSS per agent, tasks included, p50 "
            f"{peak_p50 / MB:.0f} MB, max {peak[-1] / MB:.0f} MB; "
            f"{len(peak)} agents: {sum(peak) / MB / 1024:.1f} GB at peak. The MAOS process itself: "
            f"{result.maos_rss / MB:.0f} MB RSS with {len(idle)} agents warm, peak "
            f"{result.maos_peak_rss / MB:.0f} MB."
        )
        lines.append("")
    if result.warm_assign_s:
        p99 = percentile(result.warm_assign_s + result.reuse_assign_s, 99)
        verdict = "met" if result.meets_target else "NOT met"
        lines.append(
            f"Target: warm assignment p99 ≤ {TARGET_P99_S * 1000:.0f} ms — {verdict} ({_ms(p99)} over all "
            f"{len(result.warm_assign_s) + len(result.reuse_assign_s)} warm assignments; first tasks "
            f"{_ms(percentile(result.warm_assign_s, 99))}, next tasks "
            f"{_ms(percentile(result.reuse_assign_s, 99))})."
        )
        lines.append("")
    for problem in result.problems:
        lines.append(f"Problem: {problem}")
        lines.append("")
    return "\n".join(lines)


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

    return {
        "agents": result.settings.agents,
        "concurrency": result.settings.concurrency,
        "cold_start": figures(result.cold_start_s),
        "warm_assignment_first_task": figures(result.warm_assign_s),
        "warm_assignment_next_task": figures(result.reuse_assign_s),
        "maos_handover": figures(result.handover_s),
        "without_pool": figures(result.cold_assign_s),
        "warmup_wall_s": result.warmup_wall_s,
        "served_by": result.served_by,
        "agent_rss_mb": [v / MB for v in result.agent_rss],
        "agent_peak_rss_mb": [v / MB for v in result.agent_peak_rss],
        "maos_rss_mb": result.maos_rss / MB,
        "maos_peak_rss_mb": result.maos_peak_rss / MB,
        "meets_target": result.meets_target,
        "problems": result.problems,
    }
