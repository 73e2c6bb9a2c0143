"""``maos bench peers``: MAOS side by side with what a user would pick instead, in one run.

**(a) Fan-out of tiny Claude tasks** — root → N → join, on one scripted model server (its own
process, ``maos model-server``) that answers every model call after ``model_delay_s``:

- *native*: one ``claude -p`` (the CLI MAOS runs, found by ``find_claude_cli``) whose first
  model turn calls the ``Agent`` tool N times; each subagent makes one model call; the
  parent's second turn joins. Background subagents are turned off
  (``CLAUDE_CODE_DISABLE_BACKGROUND_TASKS=1``), so the parent waits for the N results in one
  turn: N + 2 model calls, like the DAG below. The CLI runs the N subagents at once.
- *MAOS*: ``maos run PLAN --agents N`` of the same DAG as Claude Code tasks (root, N tasks
  that depend on it, a join that depends on them): N + 2 model calls; cold agents, the
  per-run warm pool (``--warm N``), and the pool that outlives runs: ``maos serve --warm N
  --warm-primer model`` started in the run's directory before the timed run, as a user would
  have it running, and ready (its N agents idle, each past one model turn, as after a first
  run) when the clock starts; ``maos run --serve`` sends the tasks to it.
  Its CPU time is the run's plus what the serve process and its agents used meanwhile.

Both are timed as a user would see them: from starting the command to its exit; the model
server's log is checked for exactly the N + 2 scripted calls of each run.

**(b) Process tasks against LangGraph** — the same subprocesses at the same concurrency, each
measurement in a fresh Python process (``maos.bench._peer_runs``, whose docstring says what
is timed): 20 independent ``sleep 1`` tasks at once, 1,000 ``true`` tasks 20 at a time, and a
chain of 300 ``true`` tasks. LangGraph with ``AsyncSqliteSaver`` and ``durability="sync"``;
MAOS with its SQLite store and the checkpoints ``maos run`` takes by default.

Fair by construction and repeated: every round runs each pair back to back, the order of the
two sides alternating from round to round, and the report gives the median and the range
over the rounds, and the ratio MAOS ÷ peer of the medians (and its range over the rounds).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from maos.agents.claude_cli import find_claude_cli
from maos.agents.process import stop_process
from maos.bench import docs
from maos.bench.machine import cpu_model, dist_version, load_average
from maos.bench.model_server import model_server_process

SECTION = "## maos bench peers"
COMPARISON_DOC = "docs/comparison.md"
# (module to import, distribution to install) for part (b)
PEER_MODULES = (
    ("langgraph", "langgraph"),
    ("langgraph.checkpoint.sqlite", "langgraph-checkpoint-sqlite"),
    ("aiosqlite", "aiosqlite"),
)
INSTALL_HINT = "pip install 'maos[peers]' (or: pip install langgraph langgraph-checkpoint-sqlite aiosqlite)"
NOT_AVAILABLE = "not available"
_RUN_TIMEOUT_S = 600.0
SETTLE_AGE_S = 15.0
"""A persistent pool's CLIs are this old before a timed run: a Claude Code CLI does one-time
work about 12 s after it starts (~0.07 CPU-s each, measured with CLI 2.1.332), which a pool
that has been up for a while did long ago."""
SETTLE_QUIET_CPU_S = 0.02
"""...and the pool has used at most this much CPU per process over the last second."""
SETTLE_MAX_S = 90.0


@dataclass(frozen=True)
class Settings:
    rounds: int = 3
    fanout_sizes: tuple[int, ...] = (10, 20)
    model_delay_s: float = 1.0
    independent: int = 20
    independent_s: float = 1.0
    noop: int = 1000
    chain: int = 300
    fanout: bool = True  # part (a)
    langgraph: bool = True  # part (b)
    quick: bool = False
    settle_age_s: float = SETTLE_AGE_S  # how old a persistent pool's CLIs are before a run


def quick_settings(*, fanout: bool = True, langgraph: bool = True) -> Settings:
    """The small version a test runs: one round, tiny sizes, 0.2 s per model call or sleep."""
    return Settings(
        rounds=1,
        fanout_sizes=(2,),
        model_delay_s=0.2,
        independent=4,
        independent_s=0.2,
        noop=40,
        chain=10,
        settle_age_s=1.0,
        fanout=fanout,
        langgraph=langgraph,
        quick=True,
    )


def missing_peers() -> list[str]:
    """The distributions of the peers extra that cannot be imported here."""
    missing = []
    for module, dist in PEER_MODULES:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(dist)
    return missing


def persistent_pool() -> str | None:
    """The command of a warm pool that outlives a run, if this build has one."""
    import typer

    from maos.cli import _app

    _app._register(["maos"])  # every command module, as `maos` itself loads them
    group: Any = typer.main.get_command(_app.app)
    commands: dict[str, Any] = dict(getattr(group, "commands", {}))
    if "serve" in commands:
        return "maos serve"
    worker = commands.get("worker")
    if worker is not None and any(param.name == "warm" for param in worker.params):
        return "maos worker --warm"
    return None


# --------------------------------------------------------------------------- results


@dataclass
class Pair:
    """One row: the same work on a peer and on MAOS. Each side keeps (seconds, CPU seconds)
    per round; only rounds where both sides succeeded count, so each ratio is of one round."""

    work: str
    peer: str
    maos: str
    peer_runs: dict[int, tuple[float, float]] = field(default_factory=dict)
    maos_runs: dict[int, tuple[float, float]] = field(default_factory=dict)
    unavailable: str = ""  # why the MAOS side was not measured

    @property
    def rounds(self) -> list[int]:
        return sorted(self.peer_runs.keys() & self.maos_runs.keys())

    @property
    def peer_s(self) -> list[float]:
        return [self.peer_runs[n][0] for n in self.rounds]

    @property
    def maos_s(self) -> list[float]:
        return [self.maos_runs[n][0] for n in self.rounds]

    @property
    def peer_cpu_s(self) -> list[float]:
        return [self.peer_runs[n][1] for n in self.rounds]

    @property
    def maos_cpu_s(self) -> list[float]:
        return [self.maos_runs[n][1] for n in self.rounds]

    @property
    def ratios(self) -> list[float]:
        return [m / p for m, p in zip(self.maos_s, self.peer_s, strict=True) if p > 0]

    @property
    def ratio(self) -> float:
        if not self.rounds:
            return float("nan")
        return statistics.median(self.maos_s) / statistics.median(self.peer_s)


@dataclass
class Result:
    settings: Settings
    pairs: list[Pair] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    load_before: float = float("nan")
    load_after: float = float("nan")
    cpus: int = 0
    cpu_model: str = ""
    started: str = ""
    seconds: float = 0.0
    loads: list[float] = field(default_factory=list)  # 1-minute load average after each run
    native_spread_s: list[float] = field(default_factory=list)  # per native run: subagent calls' spread
    # per fan-out side (native, cold, warm, persistent): each run's mean input tokens per model call
    input_tokens: dict[str, list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the run


async def run(settings: Settings, progress: Callable[[str], object] = print) -> Result:
    result = Result(
        settings,
        load_before=load_average(),
        cpus=os.cpu_count() or 0,
        cpu_model=cpu_model(),
        started=time.strftime("%Y-%m-%d %H:%M"),
    )
    result.versions = {
        "MAOS": dist_version("maos"),
        "Python": platform.python_version(),
    }
    began = time.perf_counter()
    if settings.fanout:
        await _fanout(settings, result, progress)
    if settings.langgraph:
        result.versions["LangGraph"] = dist_version("langgraph")
        result.versions["langgraph-checkpoint-sqlite"] = dist_version("langgraph-checkpoint-sqlite")
        await _langgraph(settings, result, progress)
    result.seconds = time.perf_counter() - began
    result.load_after = load_average()
    return result


# ---- (a) fan-out


def fanout_script(sizes: tuple[int, ...], delay_s: float) -> str:
    """One model-server script for both sides: rule names tell the calls apart."""
    lines = [
        "rules:",
        "  - name: sub",
        '    match: {last_user: "PEERS-SUBTASK"}',
        f'    reply: {{text: "ok", delay_s: {delay_s:g}}}',
    ]
    for size in sizes:
        lines += [
            f"  - name: native-fanout-{size}",
            f'    match: {{user: "PEERS-FANOUT-{size}\\\\b", tool_result: false}}',
            "    reply:",
            f"      delay_s: {delay_s:g}",
            "      tool_calls:",
        ]
        for n in range(size):
            lines += [
                "        - name: Agent",
                f'          input: {{description: "subtask {n}", prompt: "PEERS-SUBTASK {n}: reply ok", '
                "subagent_type: general-purpose}",
            ]
    lines += [
        "  - name: native-join",
        '    match: {user: "PEERS-FANOUT-", tool_result: true}',
        f'    reply: {{text: "joined", delay_s: {delay_s:g}}}',
        "  - name: maos-root",
        '    match: {user: "PEERS-ROOT"}',
        f'    reply: {{text: "planned", delay_s: {delay_s:g}}}',
        "  - name: maos-join",
        '    match: {user: "PEERS-JOIN"}',
        f'    reply: {{text: "joined", delay_s: {delay_s:g}}}',
        "max_turn: 4",
        'default: {text: "(not part of the benchmark)"}',
    ]
    return "\n".join(lines) + "\n"


def fanout_plan(size: int) -> str:
    """root → ``size`` tasks → join, all Claude Code tasks (YAML)."""
    subtasks = [f"s{n:02d}" for n in range(size)]
    lines = ["name: peers-fanout", "tasks:", "  - id: root", '    prompt: "PEERS-ROOT: plan the fan-out"']
    for n, task_id in enumerate(subtasks):
        lines += [
            f"  - id: {task_id}",
            f'    prompt: "PEERS-SUBTASK {n}: reply ok"',
            "    depends_on: [root]",
        ]
    lines += ["  - id: join", '    prompt: "PEERS-JOIN: combine the results"']
    lines += ["    depends_on: [" + ", ".join(subtasks) + "]"]
    return "\n".join(lines) + "\n"


async def _last_request_id(client: httpx.AsyncClient) -> int:
    records = (await client.get("/requests")).json()["requests"]
    return max((int(r["id"]) for r in records), default=0)


async def _calls_since(client: httpx.AsyncClient, since: int) -> tuple[dict[str, int], float, float]:
    """Model calls per rule since request ``since``, the spread of the subtasks' calls (last
    received minus first: near 0 when the N subtasks ran at once), and the mean size of a
    call: the server's estimate of its input tokens (the JSON of its system prompt, messages
    and tools)."""
    records = (await client.get("/requests", params={"since": since})).json()["requests"]
    counts: dict[str, int] = {}
    for record in records:
        name = str(record.get("rule_name") or "unscripted")
        counts[name] = counts.get(name, 0) + 1
    subs = [float(r["received_at"]) for r in records if r.get("rule_name") == "sub"]
    sizes = [int(r["input_tokens"]) for r in records if r.get("input_tokens")]
    return counts, (max(subs) - min(subs)) if subs else 0.0, statistics.fmean(sizes) if sizes else 0.0


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class _Exit:
    seconds: float  # wall clock from start to exit
    cpu_s: float  # CPU time of the process and of the descendants it waited for
    code: int
    out: bytes


async def _timed(argv: list[str], cwd: Path, env: dict[str, str]) -> _Exit:
    """Run ``argv`` to its end (one at a time: the CPU time of children is per process)."""
    cpu = _children_cpu_s()
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), _RUN_TIMEOUT_S)
    except TimeoutError:
        out = b"timed out"
    finally:
        if proc.returncode is None:
            await stop_process(proc, 2.0)
    seconds = time.perf_counter() - started
    code = -1 if out == b"timed out" else proc.returncode or 0
    return _Exit(seconds, _children_cpu_s() - cpu, code, out)


def _native_argv(cli: Path, size: int) -> list[str]:
    prompt = f"PEERS-FANOUT-{size}: run {size} subagents, then combine their results"
    return [
        str(cli),
        *("-p", prompt, "--output-format", "stream-json", "--verbose"),
        *("--setting-sources", "", "--max-turns", "4"),
    ]


def _native_env(url: str, config_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"):
        env.pop(name, None)
    env.update(
        ANTHROPIC_BASE_URL=url,
        ANTHROPIC_API_KEY="maos-scripted",
        CLAUDE_CONFIG_DIR=str(config_dir),
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_TELEMETRY="1",
        DISABLE_AUTOUPDATER="1",
        # The parent waits for its subagents' results (no background tasks, no notifications).
        CLAUDE_CODE_DISABLE_BACKGROUND_TASKS="1",
    )
    return env


def _maos_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["MAOS_ANTHROPIC_BASE_URL"] = url
    env.pop("MAOS_KEY", None)  # each run creates its own key in its own directory
    return env


def _native_ok(out: bytes) -> str | None:
    """None if the stream's ``result`` line is a success, else what went wrong."""
    for line in reversed(out.splitlines()):
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict) and message.get("type") == "result":
                if message.get("is_error") or message.get("terminal_reason") not in (None, "completed"):
                    return (
                        f"result {message.get('subtype')}, terminal_reason {message.get('terminal_reason')}"
                    )
                return None
    return "no result line"


async def _fanout(settings: Settings, result: Result, progress: Callable[[str], object]) -> None:
    cli = find_claude_cli()
    if cli is None:
        result.problems.append(
            "no Claude Code CLI (pip install claude-agent-sdk bundles one): part (a) skipped"
        )
        return
    from maos.agents.claude_cli import claude_cli_version

    result.versions["Claude Code CLI"] = await claude_cli_version(cli) or str(cli)
    pool = persistent_pool()
    pairs: dict[tuple[int, str], Pair] = {}
    for size in settings.fanout_sizes:
        title = f"fan-out N={size}: root → {size} → join, {settings.model_delay_s:g} s per model call"
        peer = "Claude Code subagents (one `claude -p`)"
        for variant, label in (
            ("cold", "`maos run`, cold agents"),
            ("warm", f"`maos run --warm {size}` (per-run pool)"),
            ("persistent", "persistent pool (`maos serve` / `maos worker --warm`)"),
        ):
            pair = Pair(title, peer, label)
            if variant == "persistent" and pool is None:
                pair.unavailable = NOT_AVAILABLE
            pairs[size, variant] = pair
            result.pairs.append(pair)
    result.commands["native"] = (
        "CLAUDE_CODE_DISABLE_BACKGROUND_TASKS=1 ANTHROPIC_BASE_URL=<model server> "
        "claude -p 'PEERS-FANOUT-N: …' --output-format stream-json --verbose --setting-sources '' "
        "--max-turns 4"
    )
    result.commands["maos"] = (
        "MAOS_ANTHROPIC_BASE_URL=<model server> maos run fanout.yaml --agents N [--warm N]; "
        "persistent pool: maos serve --warm N --warm-primer model, then "
        "maos run fanout.yaml --agents N --serve"
    )
    with tempfile.TemporaryDirectory(prefix="maos-bench-peers-") as tmp:
        root = Path(tmp)
        script = root / "script.yaml"
        script.write_text(fanout_script(settings.fanout_sizes, settings.model_delay_s))
        async with model_server_process(script) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            runs = 0
            for round_no in range(settings.rounds):
                for size in settings.fanout_sizes:
                    sides: list[str] = ["native", "cold", "warm"] + (["persistent"] if pool else [])
                    shift = round_no % len(sides)
                    for side in sides[shift:] + sides[:shift]:
                        runs += 1
                        work = root / f"run-{runs}"
                        work.mkdir()
                        since = await _last_request_id(client)
                        if side == "native":
                            argv = _native_argv(cli, size)
                            (work / "claude-config").mkdir()
                            env = _native_env(url, work / "claude-config")
                        else:
                            (work / "fanout.yaml").write_text(fanout_plan(size))
                            argv = [sys.executable, "-m", "maos", "run", "fanout.yaml", "--agents", str(size)]
                            argv += ["--store", f"sqlite:///{work / 'maos.db'}"]
                            if side == "warm":
                                argv += ["--warm", str(size)]
                            env = _maos_env(url)
                        if side == "persistent":
                            try:
                                done, since = await _timed_with_serve(
                                    argv, work, env, size, client, settings.settle_age_s
                                )
                            except RuntimeError as exc:
                                where = f"fan-out N={size} persistent, round {round_no + 1}"
                                result.problems.append(f"{where}: {exc}")
                                continue
                        else:
                            done = await _timed(argv, work, env)
                        result.loads.append(load_average())
                        calls, spread_s, tokens = await _calls_since(client, since)
                        problem = _fanout_problem(side, size, done.code, done.out, calls)
                        progress(
                            f"round {round_no + 1}/{settings.rounds}: fan-out N={size} {side}: "
                            f"{done.seconds:.2f} s, {done.cpu_s:.1f} CPU-s, load {result.loads[-1]:.1f}"
                            + (f" — PROBLEM: {problem}" if problem else "")
                        )
                        if problem:
                            result.problems.append(
                                f"fan-out N={size} {side}, round {round_no + 1}: {problem}"
                            )
                            continue
                        result.input_tokens.setdefault(side, []).append(tokens)
                        if side == "native":
                            result.native_spread_s.append(spread_s)
                            for variant in ("cold", "warm", "persistent"):
                                pairs[size, variant].peer_runs[round_no] = (done.seconds, done.cpu_s)
                        else:
                            pairs[size, side].maos_runs[round_no] = (done.seconds, done.cpu_s)
                        shutil.rmtree(work, ignore_errors=True)


async def _timed_with_serve(
    argv: list[str],
    work: Path,
    env: dict[str, str],
    size: int,
    client: httpx.AsyncClient,
    settle_age_s: float,
) -> tuple[_Exit, int]:
    """``argv --serve`` timed with a ready ``maos serve --warm SIZE``; its CPU time counted.
    Also the model server's last request id before the run (after the agents' warm-up turns)."""
    async with _serving(work, size, env, settle_age_s) as serve_cpu_s:
        since = await _last_request_id(client)
        done = await _timed([*argv, "--serve"], work, env)
        return _Exit(done.seconds, done.cpu_s + serve_cpu_s(), done.code, done.out), since


@contextlib.asynccontextmanager
async def _serving(
    work: Path, size: int, env: dict[str, str], settle_age_s: float = SETTLE_AGE_S
) -> AsyncIterator[Callable[[], float]]:
    """``maos serve --warm SIZE`` in ``work`` on its store, its agents idle when the block
    starts; yields a function giving the CPU seconds the serve and its agents used since then.
    SIGTERM at the end (its agents stopped). The agents are primed with one model turn
    (``--warm-primer model``): a pool that outlives runs has served some, and a CLI's first
    real turn does one-time work (about 0.2 CPU-s here) that later turns skip."""
    import psutil

    from maos.cli.serve_cmd import _live_serve

    argv = [sys.executable, "-m", "maos", "serve", "--warm", str(size), "--capacity", str(size)]
    argv += ["--warm-primer", "model"]
    argv += ["--store", f"sqlite:///{work / 'maos.db'}", "--name", f"bench-{os.getpid()}"]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=work,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + _RUN_TIMEOUT_S
        while True:
            found = await _live_serve(f"sqlite:///{work / 'maos.db'}", work)
            if found is not None and found.idle >= size:
                break
            if proc.returncode is not None or time.monotonic() > deadline:
                code = proc.returncode
                raise RuntimeError(f"maos serve --warm {size} did not get ready (exit code {code})")
            await asyncio.sleep(0.2)
        serve = psutil.Process(proc.pid)

        def cpu_s() -> float:
            total = 0.0
            for each in [serve, *serve.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = each.cpu_times()
                    total += times.user + times.system
            return total

        await _settled(serve, cpu_s, settle_age_s)
        before = cpu_s()
        yield lambda: cpu_s() - before
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                await stop_process(proc, 2.0)


async def _settled(serve: Any, cpu_s: Callable[[], float], age_s: float) -> None:
    """Wait until the pool looks like one that has been up for a while: its newest process is
    ``age_s`` old and the pool was quiet over the last second, with the same processes at its
    start and end (its warm-up turns' last work done), for at most ``SETTLE_MAX_S``. What a
    CLI does once after its start is the start's cost, which a persistent pool pays before its
    runs, not in them. ``RuntimeError`` when the serve is gone or never settles."""
    import psutil

    deadline = time.monotonic() + SETTLE_MAX_S
    while time.monotonic() < deadline:
        try:
            tree = [serve, *serve.children(recursive=True)]
            youngest = max(each.create_time() for each in tree)
            if time.time() - youngest < age_s:
                await asyncio.sleep(min(age_s - (time.time() - youngest), 1.0))
                continue
            before = cpu_s()
            await asyncio.sleep(1.0)
            after = [serve, *serve.children(recursive=True)]
            if after == tree and cpu_s() - before <= SETTLE_QUIET_CPU_S * len(tree):
                return
        except psutil.Error:  # one of its processes went away while looked at
            if not serve.is_running():
                raise RuntimeError("maos serve exited while its pool was settling") from None
            await asyncio.sleep(0.2)
    raise RuntimeError(f"maos serve's pool was not quiet within {SETTLE_MAX_S:g} s")


def _fanout_problem(side: str, size: int, code: int, out: bytes, calls: dict[str, int]) -> str | None:
    if code != 0:
        tail = out.decode(errors="replace").strip().splitlines()[-3:]
        return f"exit code {code}: {' | '.join(tail)}"
    if side == "native":
        if (bad := _native_ok(out)) is not None:
            return bad
        expected = {f"native-fanout-{size}": 1, "sub": size, "native-join": 1}
    else:
        expected = {"maos-root": 1, "sub": size, "maos-join": 1}
    scripted = {name: count for name, count in calls.items() if name in expected}
    if scripted != expected:
        return f"model calls {calls}, expected {expected}"
    return None


# ---- (b) LangGraph


async def _langgraph(settings: Settings, result: Result, progress: Callable[[str], object]) -> None:
    workloads = (
        ("independent", settings.independent, settings.independent_s,
         f"{settings.independent} independent `sleep {settings.independent_s:g}` tasks, all at once"),
        ("noop", settings.noop, 0.0, f"{settings.noop:,} no-op (`true`) tasks, 20 at a time"),
        ("chain", settings.chain, 0.0, f"chain of {settings.chain} no-op (`true`) tasks"),
    )  # fmt: skip
    pairs = {
        name: Pair(
            label,
            "LangGraph, AsyncSqliteSaver, durability sync",
            "MAOS command tasks, SQLite store, default checkpoints",
        )
        for name, _, _, label in workloads
    }
    result.pairs.extend(pairs.values())
    result.commands["langgraph"] = (
        "python -m maos.bench._peer_runs {langgraph|maos} WORKLOAD SIZE SECONDS DIR"
    )
    for round_no in range(settings.rounds):
        for name, size, seconds, _ in workloads:
            order = ("langgraph", "maos") if round_no % 2 == 0 else ("maos", "langgraph")
            for system in order:
                with tempfile.TemporaryDirectory(prefix="maos-bench-peers-") as tmp:
                    argv = [sys.executable, "-m", "maos.bench._peer_runs", system, name, str(size)]
                    argv += [f"{seconds:g}", tmp]
                    done = await _timed(argv, Path(tmp), dict(os.environ))
                result.loads.append(load_average())
                measured, cpu_s, problem = _child_result(done.code, done.out)
                progress(
                    f"round {round_no + 1}/{settings.rounds}: {name} ({size}) {system}: "
                    + (
                        f"{measured:.3f} s, {cpu_s:.2f} CPU-s, load {result.loads[-1]:.1f}"
                        if problem is None
                        else f"PROBLEM: {problem}"
                    )
                )
                if problem is not None:
                    result.problems.append(f"{name} on {system}, round {round_no + 1}: {problem}")
                elif system == "maos":
                    pairs[name].maos_runs[round_no] = (measured, cpu_s)
                else:
                    pairs[name].peer_runs[round_no] = (measured, cpu_s)


def _child_result(code: int, out: bytes) -> tuple[float, float, str | None]:
    """(seconds, CPU seconds, problem) from a ``_peer_runs`` process's last line."""
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        figures: dict[str, Any] = json.loads(lines[-1])
        seconds, cpu_s = float(figures["seconds"]), float(figures["cpu_s"])
    except (IndexError, ValueError, KeyError, TypeError):
        return 0.0, 0.0, f"exit code {code}: {' | '.join(lines[-3:]) or 'no output'}"
    if code != 0 or not figures.get("ok"):
        return seconds, cpu_s, f"exit code {code}: {figures.get('detail')}"
    return seconds, cpu_s, None


# --------------------------------------------------------------------------- the report


def _span(samples: list[float]) -> str:
    if not samples:
        return "–"
    median = statistics.median(samples)
    if len(samples) == 1:
        return f"{median:.2f} s"
    return f"{median:.2f} s ({min(samples):.2f}–{max(samples):.2f})"


def _ratio(pair: Pair) -> str:
    if pair.unavailable:
        return "–"
    ratios = pair.ratios
    if not ratios:
        return "–"
    text = f"**{pair.ratio:.2f}×**"
    if len(ratios) > 1:
        text += f" ({min(ratios):.2f}–{max(ratios):.2f})"
    return text


def _cpu(samples: list[float]) -> str:
    if not samples:
        return "–"
    median = statistics.median(samples)
    return f"{median:.2f}" if median < 10 else f"{median:.1f}"


def table(result: Result) -> list[str]:
    lines = [
        "| work | peer | peer: median (range) | MAOS | MAOS: median (range) | MAOS ÷ peer "
        "| CPU-s peer / MAOS |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for pair in result.pairs:
        maos = pair.unavailable or _span(pair.maos_s)
        cpu = "–" if pair.unavailable else f"{_cpu(pair.peer_cpu_s)} / {_cpu(pair.maos_cpu_s)}"
        # A row without MAOS figures still shows the peer's (every round it ran).
        peer = pair.peer_s if pair.rounds else [seconds for seconds, _ in pair.peer_runs.values()]
        lines.append(
            f"| {pair.work} | {pair.peer} | {_span(peer)} | {pair.maos} | {maos} | {_ratio(pair)} | {cpu} |"
        )
    return lines


def command_line(settings: Settings) -> str:
    words = ["maos bench peers"]
    if settings.quick:
        words.append("--quick")
    elif settings.rounds != Settings.rounds:
        words.append(f"--rounds {settings.rounds}")
    if not settings.fanout:
        words.append("--no-fanout")
    if not settings.langgraph:
        words.append("--no-langgraph")
    return " ".join(words)


def _machine(result: Result) -> str:
    return f"{result.cpu_model}, {result.cpus} CPUs, Linux {platform.release()}"


def _versions(result: Result) -> str:
    return ", ".join(f"{name} {version}" for name, version in result.versions.items())


def _rounds(rounds: int) -> str:
    return f"{rounds} round" + ("s" if rounds != 1 else "")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _shared_note(result: Result) -> str:
    busy = max(result.load_before, result.load_after) >= 0.5 * max(result.cpus, 1)
    during = (
        f", {min(result.loads):.1f}–{max(result.loads):.1f} after each measurement" if result.loads else ""
    )
    note = (
        f"Load average (1 min): {result.load_before:.1f} before the run, {result.load_after:.1f} "
        f"after it ({_duration(result.seconds)}){during}."
    )
    busy = busy or any(load >= 0.5 * max(result.cpus, 1) for load in result.loads)
    if busy:
        note += (
            " Much of that load is the benchmark's own (a MAOS fan-out starts its N agents at "
            "once); any beyond it is other jobs on the machine. Absolute times are inflated and "
            "noisy; the ratios, measured pair by pair in the same rounds, and the CPU-s are the "
            "figures to compare."
        )
    return note


def section(result: Result) -> str:
    """The ``## maos bench peers`` section of docs/benchmarks.md."""
    settings = result.settings
    lines = [
        SECTION,
        "",
        f"Measured {result.started} with `{command_line(settings)}` on {_machine(result)}; "
        f"{_versions(result)}. {_rounds(settings.rounds)}, each pair back to back in every round "
        "(the order alternating); median and range over the rounds; MAOS ÷ peer is the ratio of "
        "the medians (range: the per-round ratios). What each side runs, and why it is fair: "
        "[comparison.md](comparison.md).",
        "",
        *table(result),
        "",
        _shared_note(result),
        "",
    ]
    lines += _availability(result)
    for problem in result.problems:
        lines += [f"Problem: {problem}", ""]
    return "\n".join(lines)


def _availability(result: Result) -> list[str]:
    missing = [pair for pair in result.pairs if pair.unavailable]
    if not missing:
        return []
    return (
        [
            "Persistent pool: " + missing[0].unavailable + " — this build has no warm pool that outlives "
            "a run (`maos serve` or `maos worker --warm`), so only cold agents and the per-run pool "
            "(`--warm N`, started when the run starts) were measured.",
            "",
        ]
        if missing[0].unavailable == NOT_AVAILABLE
        else [f"Persistent pool: {missing[0].unavailable}.", ""]
    )


def comparison(result: Result) -> str:
    """The whole of docs/comparison.md."""
    settings = result.settings
    delay = f"{settings.model_delay_s:g} s"
    lines = [
        "# MAOS compared with what you would use instead",
        "",
        "<!-- Written by `maos bench peers` (src/maos/bench/peers.py); run it again to refresh. -->",
        "",
        "Every figure below comes from one run of",
        "",
        "```sh",
        "pip install 'maos[peers]'   # LangGraph, its SQLite checkpointer, aiosqlite",
        command_line(settings),
        "```",
        "",
        f"on {result.started}: {_machine(result)}. Versions: {_versions(result)}.",
        "",
        *table(result),
        "",
        f"{_rounds(settings.rounds)}; in each, every pair ran back to back, the order of the sides "
        "alternating from round to round. Median (range) over the rounds; MAOS ÷ peer is the "
        "ratio of the two medians, in brackets the range of the per-round ratios. Below 1 MAOS "
        "is faster.",
        "",
        "*CPU-s* is the median CPU time (user + system) of one run. Fan-out: of the command and "
        "every process it waited for — the CLI with its in-process subagents; `maos run` (which "
        "also serves its agents' door over HTTP) with its agents' CLIs — the model server left "
        "out. Process "
        "tasks: of the timed span, the measuring process and its task processes. Unlike wall "
        "time it hardly grows with other load on the machine, and on 2 cores it is what "
        "limits a fan-out.",
        "",
        _shared_note(result),
        "",
        "## Fan-out of tiny Claude tasks: Claude Code's own subagents vs MAOS",
        "",
        f"One scripted model server (`maos model-server`, its own process) answers every model "
        f"call after {delay}, for both sides; its request log is checked after every run for "
        "exactly the scripted calls (N + 2 per run).",
        "",
        f"- **Claude Code subagents**: one `claude -p` (Claude Code "
        f"{result.versions.get('Claude Code CLI', '?')}, the CLI bundled in the claude-agent-sdk "
        "wheel, which MAOS runs too). Its first model turn calls the `Agent` tool N times "
        "(`subagent_type: general-purpose`), each subagent makes one model call, then the "
        "parent's second turn joins: N + 2 model calls. Background subagents are off "
        "(`CLAUDE_CODE_DISABLE_BACKGROUND_TASKS=1`) so the parent waits for the N results in "
        f"that turn. {_spread(result)} Environment as MAOS gives its agents: own "
        "`CLAUDE_CONFIG_DIR`, no settings files, non-essential traffic off.",
        f"  Command: `{result.commands.get('native', '')}`.",
        "- **MAOS**: the same DAG as a plan of Claude Code tasks — `root`, N tasks depending on "
        "it, `join` depending on all of them: N + 2 model calls — run by "
        f"`{result.commands.get('maos', '')}` in a fresh directory that is not a git repository "
        "(no worktrees: the subagents do not get any either), SQLite store, default checkpoints. "
        "Each MAOS agent is one CLI process; `maos run` serves their door's MCP endpoint "
        "(ADR 0015); cold "
        "agents start when their task is ready, `--warm N` starts N agents when the run starts "
        "and gives them tasks as they come.",
        "- Both are timed as a user sees them: from starting the command to its exit. MAOS "
        "runs byte-compiled, as `pip install` leaves it (`maos bench` compiles missing "
        "bytecode before it measures).",
        "",
        "Where the difference comes from: native subagents live inside the one CLI process, so "
        "a subagent costs a model request; a MAOS agent is a new CLI process, and N of them "
        f"start at once on {result.cpus} cores. "
        f"{_cpu_per_agent(result)} {_request_size(result)} "
        "The per-run pool starts the same processes when the run starts, "
        "so on a machine this size it moves the cost rather than removing it; the persistent "
        "pool (`maos serve`) starts them before the run, so the run pays only their turns (its "
        "agents are primed with one model turn, `--warm-primer model`, as a pool that has served "
        "a run is: a CLI's first real turn does one-time work that later turns skip; and the "
        f"timed run starts once its CLIs are {result.settings.settle_age_s:g} s old and the pool "
        "is quiet, since "
        "a CLI also does one-time work about 12 s after it starts). Each of its N agents is "
        "still a CLI process of its own, and a CLI's turn costs that process about 0.05 CPU-s "
        "before its request goes out (measured one turn at a time): with N of them at once on "
        f"{result.cpus} cores, the last of the N requests leaves later than the native "
        "subagents' from one process. What was tried to make a turn cheaper, and why each MAOS "
        "agent stays a CLI process run as Claude Code runs by default: "
        "[ADR 0024](adr/0024-one-cli-process-per-agent-and-the-fan-out-floor.md).",
        "",
        "## Process tasks: LangGraph vs MAOS",
        "",
        f"LangGraph {result.versions.get('LangGraph', '?')} with its SQLite checkpointer "
        f"(langgraph-checkpoint-sqlite {result.versions.get('langgraph-checkpoint-sqlite', '?')}, "
        '`AsyncSqliteSaver` on a file) in `durability="sync"` mode, against MAOS with command '
        "tasks, its SQLite store (a file) and the checkpoints `maos run` takes by default (a "
        "full encrypted snapshot every 30 s and a segment at every task completion). The same "
        "processes on both sides, one real subprocess per task (`sleep` or `true`), at the same "
        "concurrency (20):",
        "",
        "- independent tasks: LangGraph maps one node over the tasks with `Send` "
        "(`max_concurrency` 20); MAOS runs a plan of independent tasks with 20 agents;",
        "- no-op tasks 20 at a time: the same, with `true`;",
        "- the chain: LangGraph has one node per step, edge to edge (one checkpoint per step); "
        "MAOS a plan where each task depends on the one before.",
        "",
        "Each measurement runs in a fresh Python process "
        f"(`{result.commands.get('langgraph', '')}`); the clock covers opening the store and "
        "checkpointer, the run and closing them, not the interpreter's start or the imports.",
        "",
        "Both sides start their processes the same way, through asyncio's subprocess support (a "
        "fork and an exec each). MAOS's also carry "
        "their host's guard token in their environment, so that they and all they start die with "
        "the host if it is killed (ADR 0010, 0022); LangGraph's outlive an orchestrator that is "
        "killed.",
        "",
    ]
    lines += _availability(result)
    if result.problems:
        lines += ["## Problems in this run", ""]
        lines += [f"- {problem}" for problem in result.problems]
        lines.append("")
    return "\n".join(lines)


def _request_size(result: Result) -> str:
    """How big the model calls of each side were, from the model server's estimate."""
    native, maos = (
        result.input_tokens.get("native"),
        result.input_tokens.get("persistent") or result.input_tokens.get("cold"),
    )
    if not native or not maos:
        return ""
    return (
        "Request size (the model server's estimate of input tokens per model call, from the JSON "
        f"of its system prompt, messages and tools; mean over a run, median over the runs): "
        f"native {statistics.median(native):,.0f}, MAOS {statistics.median(maos):,.0f}. Every "
        "MAOS agent's requests carry the door's tools in full; the built-in tools a task "
        "rarely needs wait behind ToolSearch on both sides (ADR 0020)."
    )


def _spread(result: Result) -> str:
    if not result.native_spread_s:
        return ""
    return (
        "The CLI ran the N subagents at once: in every native run the model server received "
        f"their N requests within {max(result.native_spread_s):.2f} s of each other."
    )


def _cpu_per_agent(result: Result) -> str:
    """CPU-s per agent of the cold runs against per native subagent, from the CPU-s column."""
    parts = []
    for size in result.settings.fanout_sizes:
        cold = next(
            (p for p in result.pairs if p.maos.endswith("cold agents") and f"N={size}:" in p.work), None
        )
        if cold is None or not cold.rounds:
            continue
        maos = statistics.median(cold.maos_cpu_s) / (size + 2)
        native = statistics.median(cold.peer_cpu_s) / (size + 2)
        parts.append(f"N={size}: {maos:.2f} CPU-s per MAOS cold agent, {native:.2f} per native subagent")
    if not parts:
        return ""
    return "Measured here (CPU-s of a run ÷ its N + 2 agents): " + "; ".join(parts) + "."


def write_section(path: Path, text: str) -> None:
    docs.write_section(path, SECTION, text)


def to_json(result: Result) -> dict[str, Any]:
    return {
        "started": result.started,
        "versions": result.versions,
        "cpus": result.cpus,
        "cpu_model": result.cpu_model,
        "load_before": result.load_before,
        "load_after": result.load_after,
        "loads": result.loads,
        "native_subagent_spread_s": result.native_spread_s,
        "input_tokens_per_call": result.input_tokens,
        "rounds": result.settings.rounds,
        "pairs": [
            {
                "work": pair.work,
                "peer": pair.peer,
                "maos": pair.maos,
                "peer_s": pair.peer_s,
                "maos_s": pair.maos_s,
                "peer_cpu_s": pair.peer_cpu_s,
                "maos_cpu_s": pair.maos_cpu_s,
                "ratio": None if pair.unavailable or not pair.ratios else pair.ratio,
                "round_ratios": pair.ratios,
                "unavailable": pair.unavailable or None,
            }
            for pair in result.pairs
        ],
        "problems": result.problems,
    }
