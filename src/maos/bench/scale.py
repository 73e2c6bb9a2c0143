"""``maos bench scale``: many agents at once on one machine, and what MAOS itself costs per agent.

Two measured runs, of real processes started the way a user starts them:

- **Command agents**: ``maos run`` of N independent command tasks with ``--agents N``, its
  SQLite store in a file and the checkpoints it takes by default. Every task is ``cat GATE``,
  GATE a FIFO: each agent blocks opening it until this benchmark opens it for writing, which
  it does once it has seen all N agent processes alive at once (or, should that never happen,
  once no new one appeared for ``STALL_S``). So the N agents really are alive together
  however long starting them takes, and the run ends soon after. Reported: the wall time
  (start of ``maos run`` → its exit), when all N were alive, the most agent processes seen
  alive at once, and the most attempts running at once by the run's log.
- **Claude Code agents**: ``maos run --workers-only`` of M Claude Code tasks over W
  ``maos worker`` processes (capacity ⌈M / W⌉ each) on a shared store, Redis by default; the
  real CLI (bundled in the claude-agent-sdk wheel) against the scripted model server, its own
  process, answering every call after ``model_delay_s``. Even-numbered tasks answer after one
  door call (``mcp__maos__state_set``), the others at once. Checked: every task succeeded,
  the model server answered exactly the scripted calls (the door call's result included), and
  only this benchmark's workers ran the tasks. The run is purged from the store after
  (``maos.purge``); the workers' lease epochs and consumer names (``WORKER_NAME``) stay.

What each process used, by role, measured from outside:

- MAOS's own processes started here (``maos run``, each ``maos worker``): their own CPU time
  (user + system, without their children's) read from ``/proc/PID/stat`` once the process
  has exited and before it is reaped (``waitid(WNOWAIT)``), so it is exact, from its start to
  its exit; and their peak RSS (``VmHWM``), read every ``SAMPLE_S`` until they exit. Also
  exact: the CPU time of every process they reaped (``cutime + cstime``: the agents).
- The processes of the agents (each host's descendants) and the hosts' guards
  (``maos.agents.guard``), sampled every ``SAMPLE_S`` from ``/proc``: how many agents are
  alive, and per role — the Claude Code CLI, a ``maos mcp`` door process (an agent has one
  when its door is on stdio), a command task's own process — the CPU time and RSS last seen.
  For short-lived processes that is a lower bound (the last ``SAMPLE_S`` of each is missed).

Per agent: a figure divided by the run's agents (N or M). MAOS's own: the hosts, their guards
and the door processes, if any.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from maos.agents.claude_cli import claude_cli_version, find_claude_cli
from maos.bench import docs
from maos.bench.machine import cpu_model, dist_version, load_average, memory_gb, peak_rss
from maos.bench.model_server import model_server_process
from maos.errors import MaosError, describe_error
from maos.eventlog import EventLog
from maos.events import TaskFailed, TaskStarted, TaskSucceeded
from maos.paths import outputs_dir
from maos.purge import purge_run
from maos.store import keys, open_store, sqlite_path
from maos.store.base import Store

SECTION = "## maos bench scale"
DEFAULT_STORE = "redis://127.0.0.1:6379"
SAMPLE_S = 0.25
STALL_S = 60.0
"""Command agents: open the gate anyway once no new agent process appeared for this long."""
RUN_TIMEOUT_S = 1800.0
WORKER_START_TIMEOUT_S = 60.0
WORKER_NAME = "bench-scale"
"""The workers are ``bench-scale-1``, ``-2``…: the same names every time, so the store keeps
one fencing epoch and one consumer per worker, however often the benchmark runs."""
GRACE_S = 30.0
MB = 1 << 20
_TICK_S = 1 / os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MAOS = (sys.executable, "-m", "maos")

# process roles
RUN = "`maos run`"
RUN_WORKERS_ONLY = "`maos run --workers-only`"
WORKER = "`maos worker`"
GUARD = "guard (`maos.agents.guard`)"
DOOR = "door (`maos mcp`, one per agent)"
CLI = "Claude Code CLI"
COMMAND = "`cat GATE`, each task's command"
OTHER = "other processes"
MAOS_ROLES = (RUN, RUN_WORKERS_ONLY, WORKER, GUARD, DOOR)


@dataclass(frozen=True)
class Settings:
    commands: int = 1000  # command agents at once (0: skip that part)
    claude: int = 40  # Claude Code agents (0: skip that part)
    workers: int = 2
    model_delay_s: float = 0.5
    store: str = DEFAULT_STORE  # where the Claude agents' workers take their work
    door_transport: str | None = None  # the workers' --door-transport (None: their default)
    quick: bool = False


def quick_settings(
    store: str = DEFAULT_STORE,
    door_transport: str | None = None,
    *,
    commands: bool = True,
    claude: bool = True,
) -> Settings:
    """The small version a test runs: 20 command agents, 4 Claude agents over 2 workers."""
    return Settings(
        commands=20 if commands else 0,
        claude=4 if claude else 0,
        workers=2,
        model_delay_s=0.2,
        store=store,
        door_transport=door_transport,
        quick=True,
    )


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Role:
    """What the processes of one role used during a run."""

    name: str
    maos: bool  # MAOS's own (not the agents' programs)
    processes: int
    cpu_s: float
    exact: bool  # CPU read at exit (else sampled: a lower bound)
    peak_rss: int  # bytes: hosts, guards: the sum of each one's peak; agents' processes: the most at once
    rss_each: int = 0  # bytes: agents' processes: the median of each one's peak RSS


@dataclass
class Part:
    """One measured run."""

    name: str  # "commands" or "claude"
    title: str
    agents: int
    succeeded: int = 0
    wall_s: float = float("nan")
    all_alive_s: float | None = None  # commands: start → all N agent processes alive
    peak_alive: int = 0  # agent processes seen alive at once
    peak_running: int = 0  # attempts started and not ended at once, by the run's log
    roles: list[Role] = field(default_factory=list)
    reaped_cpu_s: float = 0.0  # every process the hosts reaped (the agents), exact
    by_worker: dict[str, int] = field(default_factory=dict)  # claude: tasks started per worker
    hosts_idle_rss: int = 0  # claude: the workers' RSS summed, up and idle, before the run
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.succeeded == self.agents and not self.problems

    @property
    def maos_cpu_s(self) -> float:
        return sum(role.cpu_s for role in self.roles if role.maos)

    @property
    def maos_peak_rss(self) -> int:
        return sum(role.peak_rss for role in self.roles if role.maos)

    @property
    def marginal_rss_per_agent(self) -> float | None:
        """Bytes per agent the workers grew by during the run (their peaks minus their RSS when
        up and idle): what one more agent costs MAOS beside its CLI, without the fixed cost
        of a worker process (its interpreter and imports), which the table's figure shares out."""
        workers = [role for role in self.roles if role.name == WORKER]
        if not self.hosts_idle_rss or not workers or not self.agents:
            return None
        return max(0, sum(role.peak_rss for role in workers) - self.hosts_idle_rss) / self.agents


@dataclass
class Result:
    settings: Settings
    parts: list[Part] = field(default_factory=list)
    started: str = ""
    machine: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    open_files: tuple[int, int] = (0, 0)  # this process's soft and hard limits
    load_before: float = float("nan")
    load_after: float = float("nan")
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return all(part.complete for part in self.parts)

    @property
    def problems(self) -> list[str]:
        return [f"{part.name}: {problem}" for part in self.parts for problem in part.problems]


# --------------------------------------------------------------------------- the plans


def command_plan(agents: int, gate: Path) -> str:
    """``agents`` independent tasks, each ``cat GATE`` (YAML)."""
    lines = ["name: scale-commands", "tasks:"]
    for n in range(agents):
        lines += [f"  - id: c{n:04d}", f"    command: ['cat', {json.dumps(str(gate))}]"]
    return "\n".join(lines) + "\n"


def claude_plan(agents: int) -> str:
    """``agents`` independent Claude Code tasks (YAML); the script answers by task id."""
    lines = ["name: scale-claude", "tasks:"]
    for n in range(agents):
        lines += [f"  - id: c{n:04d}", f'    prompt: "SCALE task {n}: reply done"']
    return "\n".join(lines) + "\n"


def claude_script(delay_s: float) -> str:
    """Even-numbered tasks call the door once, then answer; odd ones answer at once."""
    return (
        "\n".join(
            [
                "rules:",
                "  - name: door-call",
                "    match: {task: 'c[0-9]*[02468]', tool_result: false}",
                "    reply:",
                "      text: Recording it.",
                f"      delay_s: {delay_s:g}",
                "      tool_calls:",
                '        - {name: mcp__maos__state_set, input: {key: "scale-${task}", value: done}}',
                "  - name: after-door",
                "    match: {task: 'c[0-9]*[02468]', tool_result: '\"version\"'}",
                f"    reply: {{text: done, delay_s: {delay_s:g}}}",
                "  - name: direct",
                "    match: {task: 'c[0-9]*[13579]', tool_result: false}",
                f"    reply: {{text: done, delay_s: {delay_s:g}}}",
                "max_turn: 4",
                "default: {text: '(not part of the benchmark)'}",
            ]
        )
        + "\n"
    )


def expected_calls(agents: int) -> dict[str, int]:
    even = (agents + 1) // 2
    return {"door-call": even, "after-door": even, "direct": agents - even}


# --------------------------------------------------------------------------- /proc


@dataclass(frozen=True, slots=True)
class _Stat:
    ppid: int
    state: str
    start: int  # clock ticks after boot: with the pid, tells processes apart
    cpu_ticks: int  # user + system, its own
    children_ticks: int  # cutime + cstime: the children it reaped
    rss: int  # bytes
    comm: str


def _stat(pid: int) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    head, _, tail = raw.rpartition(b")")
    fields = tail.split()
    try:
        return _Stat(
            ppid=int(fields[1]),
            state=fields[0].decode(),
            start=int(fields[19]),
            cpu_ticks=int(fields[11]) + int(fields[12]),
            children_ticks=int(fields[13]) + int(fields[14]),
            rss=int(fields[21]) * _PAGE_BYTES,
            comm=head.partition(b"(")[2].decode(errors="replace"),
        )
    except (IndexError, ValueError):
        return None


def _processes() -> dict[int, _Stat]:
    table: dict[int, _Stat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (found := _stat(int(name))) is not None:
            table[int(name)] = found
    return table


def _argv(pid: int) -> tuple[str, ...]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def _guard_token(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(b"MAOS_GUARD="):
            return entry.partition(b"=")[2].decode(errors="replace")
    return None


class _Host:
    """A MAOS process started here, read exactly when it exits (before it is reaped)."""

    def __init__(self, role: str, argv: list[str], cwd: Path, env: dict[str, str], logs: Path) -> None:
        self.role = role
        stem = f"host-{secrets.token_hex(4)}"
        self.out_path, self.err_path = logs / f"{stem}.out", logs / f"{stem}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        self.started = time.perf_counter()
        self.ended: float | None = None
        self.cpu_s = 0.0
        self.reaped_cpu_s = 0.0
        self.peak_rss = 0
        self._terminated = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exited(self) -> bool:
        """Whether it has exited; the first time it has, its CPU is read, then it is reaped."""
        if self.ended is not None:
            return True
        if os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
            return False
        self.ended = time.perf_counter()
        final = _stat(self.pid)  # a zombie's stat still holds its times
        if final is not None:
            self.cpu_s = final.cpu_ticks * _TICK_S
            self.reaped_cpu_s = final.children_ticks * _TICK_S
        self.proc.wait()
        return True

    async def wait(self, timeout_s: float, sample: Callable[[], object] | None = None) -> bool:
        """Wait for its exit (sampling meanwhile); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not self.exited():
            if time.monotonic() > deadline:
                return False
            if sample is not None:
                sample()
            await asyncio.sleep(SAMPLE_S if sample is not None else 0.05)
        return True

    def terminate(self) -> None:
        """SIGTERM, once: a worker drains, a run is cancelled."""
        if not self._terminated and not self.exited():
            self._terminated = True
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    async def stop(self, sample: Callable[[], object] | None = None) -> None:
        """``terminate``, then SIGKILL if it has not exited after ``GRACE_S``."""
        self.terminate()
        if not await self.wait(GRACE_S, sample):
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.wait(GRACE_S)

    def output(self) -> str:
        with contextlib.suppress(OSError):
            return self.out_path.read_text(errors="replace")
        return ""

    def error_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.err_path.read_text(errors="replace").strip().splitlines()
            return " | ".join(lines[-3:])
        return ""


@dataclass
class _Seen:
    role: str
    cpu_ticks: int = 0
    peak_rss: int = 0


class _Watch:
    """Samples, every ``SAMPLE_S``, the hosts' peak RSS, their descendants and their guards."""

    def __init__(
        self, hosts: Iterable[_Host], agent_role: str, is_command: Callable[[tuple[str, ...]], bool]
    ) -> None:
        self.hosts = list(hosts)
        self.agent_role = agent_role
        self._is_command = is_command
        self._roles: dict[tuple[int, int, str], str] = {}  # (pid, start, comm) -> role ("" = not ours)
        self._tokens: set[str] = set()
        self.seen: dict[tuple[int, int], _Seen] = {}
        self.peak_alive = 0
        self.at_once: dict[str, int] = {}  # role -> most RSS of its processes at one moment

    def add(self, host: _Host) -> None:
        self.hosts.append(host)

    def sample(self) -> int:
        """One look; returns the agent processes alive now."""
        for host in self.hosts:
            if host.ended is None:
                host.peak_rss = max(host.peak_rss, peak_rss(host.pid))
        table = _processes()
        children: dict[int, list[int]] = {}
        for pid, stat in table.items():
            children.setdefault(stat.ppid, []).append(pid)
        alive = 0
        rss: dict[str, int] = {}
        stack = [host.pid for host in self.hosts if host.ended is None]
        while stack:
            for pid in children.get(stack.pop(), ()):
                stack.append(pid)
                stat = table[pid]
                role = self._role(pid, stat, descendant=True)
                if role and stat.state != "Z":
                    alive += role == self.agent_role
                    self._record(pid, stat, role, rss)
        if self._tokens:
            for pid, stat in table.items():
                if stat.comm.startswith("python") and self._role(pid, stat, descendant=False) == GUARD:
                    self._record(pid, stat, GUARD, rss)
        for role, total in rss.items():
            self.at_once[role] = max(self.at_once.get(role, 0), total)
        self.peak_alive = max(self.peak_alive, alive)
        return alive

    def _record(self, pid: int, stat: _Stat, role: str, rss: dict[str, int]) -> None:
        seen = self.seen.setdefault((pid, stat.start), _Seen(role))
        seen.role = role
        seen.cpu_ticks = max(seen.cpu_ticks, stat.cpu_ticks)
        seen.peak_rss = max(seen.peak_rss, peak_rss(pid) if role == GUARD else stat.rss)
        rss[role] = rss.get(role, 0) + stat.rss

    def _role(self, pid: int, stat: _Stat, *, descendant: bool) -> str:
        """The role of a process ("": not one of ours); looked up once per process and program
        (the comm changes at exec: setpriv → the agent's program)."""
        key = (pid, stat.start, stat.comm)
        if key in self._roles:
            return self._roles[key]
        argv = _argv(pid)
        if any(part.endswith("_guard_program.py") for part in argv):
            if not self._tokens & set(argv):
                return ""  # another host's guard, or ours before its token is known: not kept
            role = GUARD
        elif not descendant:
            role = ""
        elif stat.comm == "setpriv" or not argv or argv == _argv(stat.ppid):
            return ""  # not yet running what it will run (forked, not exec'd): look again later
        elif Path(argv[0]).name == "claude":
            role = CLI
        elif "mcp" in argv and any(Path(part).name == "maos" for part in argv[:3]):
            role = DOOR
        elif self._is_command(argv):
            role = COMMAND
        else:
            role = OTHER
        if role in (CLI, COMMAND) and (token := _guard_token(pid)) is not None:
            self._tokens.add(token)  # every agent of a host carries its guard's token
        self._roles[key] = role
        return role

    def roles(self) -> list[Role]:
        """The hosts (exact), then the sampled roles."""
        rows: list[Role] = []
        for name in sorted({host.role for host in self.hosts}, key=MAOS_ROLES.index):
            mine = [host for host in self.hosts if host.role == name]
            rows.append(
                Role(
                    name,
                    maos=True,
                    processes=len(mine),
                    cpu_s=sum(host.cpu_s for host in mine),
                    exact=True,
                    peak_rss=sum(host.peak_rss for host in mine),
                )
            )
        for name in (GUARD, DOOR, CLI, COMMAND, OTHER):
            seen = [s for s in self.seen.values() if s.role == name]
            if not seen:
                continue
            each = statistics.median(s.peak_rss for s in seen)
            rows.append(
                Role(
                    name,
                    maos=name in MAOS_ROLES,
                    processes=len(seen),
                    cpu_s=sum(s.cpu_ticks for s in seen) * _TICK_S,
                    exact=False,
                    peak_rss=sum(s.peak_rss for s in seen) if name == GUARD else self.at_once.get(name, 0),
                    rss_each=0 if name == GUARD else int(each),
                )
            )
        return rows


# --------------------------------------------------------------------------- the run


async def run(settings: Settings, progress: Callable[[str], object] = print) -> Result:
    began = time.perf_counter()
    result = Result(
        settings,
        started=time.strftime("%Y-%m-%d %H:%M"),
        machine=f"{cpu_model()}, {os.cpu_count()} CPUs, {memory_gb():.0f} GB, Linux {platform.release()}",
        open_files=resource.getrlimit(resource.RLIMIT_NOFILE),
        load_before=load_average(),
    )
    result.versions = {"MAOS": dist_version("maos"), "Python": platform.python_version()}
    if settings.commands:
        result.parts.append(await _commands(settings, progress))
    if settings.claude:
        result.parts.append(await _claude(settings, result, progress))
    result.load_after = load_average()
    result.seconds = time.perf_counter() - began
    return result


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("MAOS_KEY", "MAOS_STORE", "MAOS_CHECKPOINTS"):
        env.pop(name, None)  # each run keeps its key, store and checkpoints in its own directory
    return env


def _summary(host: _Host, part: Part) -> str | None:
    """The run id from ``maos run --json``'s summary; its succeeded count goes in ``part``."""
    try:
        summary = json.loads(host.output())
        part.succeeded = int(summary["counts"].get("succeeded", 0))
        return str(summary["run_id"])
    except (ValueError, KeyError, TypeError, AttributeError):
        part.problems.append(f"`maos run` exited {host.proc.returncode}: {host.error_tail() or 'no summary'}")
        return None


async def _log_figures(store: Store, run_id: str, part: Part) -> None:
    """The most attempts running at once, and the tasks each worker started, by the log."""
    running: set[tuple[str, int]] = set()
    async for _, event in EventLog(store, run_id).iterate():
        if isinstance(event, TaskStarted):
            running.add((event.task_id, event.attempt))
            part.by_worker[event.worker] = part.by_worker.get(event.worker, 0) + 1
            part.peak_running = max(part.peak_running, len(running))
        elif isinstance(event, TaskSucceeded | TaskFailed):
            running.discard((event.task_id, event.attempt))


def _open_gate(gate: Path) -> None:
    """Open the FIFO for writing and close it: every agent blocked opening it reads EOF."""
    try:
        fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # no reader at this moment (ENXIO)
    os.close(fd)


async def _commands(settings: Settings, progress: Callable[[str], object]) -> Part:
    size = settings.commands
    part = Part(
        "commands",
        f"{size:,} command agents at once: `maos run --agents {size}`, SQLite store",
        size,
    )
    with tempfile.TemporaryDirectory(prefix="maos-bench-scale-") as tmp:
        root = Path(tmp)
        gate = root / "gate"
        os.mkfifo(gate, 0o600)
        (root / "plan.yaml").write_text(command_plan(size, gate))
        store_url = f"sqlite:///{root / 'maos.db'}"
        argv = [*MAOS, "run", "plan.yaml", "--agents", str(size), "--store", store_url, "--json"]
        progress(f"commands: `maos run` of {size} tasks, --agents {size}…")
        host = _Host(RUN, argv, root, _env(), root)
        watch = _Watch([host], COMMAND, lambda argv: argv == ("cat", str(gate)))
        try:
            released = False
            most, last_new = 0, time.monotonic()
            while not host.exited():
                alive = watch.sample()
                now = time.monotonic()
                if alive > most:
                    most, last_new = alive, now
                if released or alive >= size or now - last_new > STALL_S:
                    if not released:
                        if alive >= size:
                            part.all_alive_s = time.perf_counter() - host.started
                        progress(f"commands: {alive} agents alive, opening the gate")
                    released = True
                    _open_gate(gate)  # again at every look: an agent that opens it late
                if time.perf_counter() - host.started > RUN_TIMEOUT_S:
                    part.problems.append(f"`maos run` still running after {RUN_TIMEOUT_S:g} s: stopped")
                    break
                await asyncio.sleep(SAMPLE_S)
        finally:
            await host.stop()
        part.wall_s = (host.ended or time.perf_counter()) - host.started
        part.peak_alive = watch.peak_alive
        part.roles = watch.roles()
        part.reaped_cpu_s = host.reaped_cpu_s
        run_id = _summary(host, part)
        if run_id is not None:
            store = await open_store(store_url)
            try:
                await _log_figures(store, run_id, part)
            finally:
                await store.close()
    if part.succeeded != size and not part.problems:
        part.problems.append(f"{part.succeeded} of {size} tasks succeeded")
    progress(
        f"commands: {part.succeeded} of {size} succeeded in {part.wall_s:.1f} s, "
        f"{part.peak_alive} alive at once"
    )
    return part


async def _claude(settings: Settings, result: Result, progress: Callable[[str], object]) -> Part:
    size, workers = settings.claude, settings.workers
    capacity = math.ceil(size / workers)
    part = Part(
        "claude",
        f"{size} Claude Code agents over {workers} `maos worker` processes (capacity {capacity} each)",
        size,
    )
    cli = find_claude_cli()
    if cli is None:
        part.problems.append("no Claude Code CLI (pip install claude-agent-sdk bundles one)")
        return part
    result.versions["Claude Code CLI"] = await claude_cli_version(cli) or str(cli)
    if settings.store.startswith("sqlite:"):  # the same file for the processes started elsewhere
        settings = replace(settings, store=f"sqlite:///{sqlite_path(settings.store)}")
    try:
        store = await open_store(settings.store)
    except MaosError as exc:
        part.problems.append(f"store {settings.store}: {describe_error(exc)}")
        return part
    names = [f"{WORKER_NAME}-{n + 1}" for n in range(workers)]
    try:
        with tempfile.TemporaryDirectory(prefix="maos-bench-scale-") as tmp:
            root = Path(tmp)
            (root / "script.yaml").write_text(claude_script(settings.model_delay_s))
            (root / "plan.yaml").write_text(claude_plan(size))
            async with model_server_process(root / "script.yaml") as url:
                env = _env() | {"MAOS_ANTHROPIC_BASE_URL": url}
                await _claude_run(settings, part, store, root, env, names, capacity, progress)
                if part.problems:
                    return part
                async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                    requests = (await client.get("/requests")).json()["requests"]
            calls: dict[str, int] = {}
            for record in requests:
                name = str(record.get("rule_name") or "unscripted")
                calls[name] = calls.get(name, 0) + 1
            expected = expected_calls(size)
            if {name: calls.get(name, 0) for name in expected} != expected:
                part.problems.append(f"model calls {calls}, expected {expected}")
    finally:
        await store.close()
    progress(
        f"claude: {part.succeeded} of {size} succeeded in {part.wall_s:.1f} s, "
        f"{part.peak_alive} CLIs alive at once"
    )
    return part


async def _claude_run(
    settings: Settings,
    part: Part,
    store: Store,
    root: Path,
    env: dict[str, str],
    names: list[str],
    capacity: int,
    progress: Callable[[str], object],
) -> None:
    door = ["--door-transport", settings.door_transport] if settings.door_transport else []
    progress(f"claude: starting {len(names)} workers (capacity {capacity}) on {settings.store}…")
    hosts = [
        _Host(
            WORKER,
            [*MAOS, "worker", "--store", settings.store, "--name", name, "--capacity", str(capacity), *door],
            root,
            env,
            root,
        )
        for name in names
    ]
    watch = _Watch(hosts, CLI, lambda _: False)
    run_id: str | None = None
    try:
        if not await _workers_up(store, hosts, names, watch):
            tails = "; ".join(
                f"{h.role} {n}: {h.error_tail() or 'no output'}" for h, n in zip(hosts, names, strict=True)
            )
            part.problems.append(f"the workers did not start within {WORKER_START_TIMEOUT_S:g} s ({tails})")
            return
        part.hosts_idle_rss = sum(stat.rss for host in hosts if (stat := _stat(host.pid)) is not None)
        argv = [
            *MAOS,
            "run",
            "plan.yaml",
            "--store",
            settings.store,
            "--workers-only",
            "--agents",
            str(part.agents),
        ]
        progress(f"claude: `maos run --workers-only` of {part.agents} Claude Code tasks…")
        orchestrator = _Host(RUN_WORKERS_ONLY, [*argv, "--json"], root, env, root)
        watch.add(orchestrator)
        try:
            if not await orchestrator.wait(RUN_TIMEOUT_S, watch.sample):
                part.problems.append(f"`maos run` still running after {RUN_TIMEOUT_S:g} s: stopped")
        finally:
            await orchestrator.stop()
        part.wall_s = (orchestrator.ended or time.perf_counter()) - orchestrator.started
        run_id = _summary(orchestrator, part)
    finally:
        for host in hosts:  # all drain at once, then each is waited for
            host.terminate()
        for host in hosts:
            await host.stop(watch.sample)
    part.peak_alive = watch.peak_alive
    part.roles = watch.roles()
    part.reaped_cpu_s = sum(host.reaped_cpu_s for host in hosts)
    if run_id is None:
        return
    await _log_figures(store, run_id, part)
    strangers = {worker: n for worker, n in part.by_worker.items() if worker not in names}
    if strangers:
        part.problems.append(
            f"workers not started here took tasks ({strangers}): use a store no other worker uses"
        )
    if part.succeeded != part.agents:
        part.problems.append(f"{part.succeeded} of {part.agents} tasks succeeded")
    part.problems += tool_errors(outputs_dir(root, run_id))
    try:
        report = await purge_run(store, run_id, workdir=root)
    except MaosError as exc:
        part.problems.append(f"the run's keys were not deleted: {describe_error(exc)}")
    else:
        if report.remaining:
            part.problems.append(f"left in the store after the purge: {report.remaining[:5]}")


def tool_errors(outputs: Path) -> list[str]:
    """One line per tool call that answered an agent with an error, from the transcripts
    (``<task>.<attempt>.jsonl``: the CLI's stream-json) of the attempts in ``outputs``."""
    found: list[str] = []
    for transcript in sorted(outputs.glob("*.jsonl")):
        with contextlib.suppress(OSError):
            for line in transcript.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError, AttributeError, TypeError):
                    message = json.loads(line)
                    if message.get("type") != "user":
                        continue
                    for block in message["message"]["content"]:
                        if (
                            isinstance(block, dict)
                            and block.get("type") == "tool_result"
                            and block.get("is_error")
                        ):
                            text = json.dumps(block.get("content"))[:300]
                            found.append(f"a tool call of {transcript.stem} answered with an error: {text}")
    return found


async def _workers_up(store: Store, hosts: list[_Host], names: list[str], watch: _Watch) -> bool:
    """Wait until every worker holds its lease (it takes work from then on)."""
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if any(host.exited() for host in hosts):
            return False
        held = [await store.holder(keys.worker_lease(name)) for name in names]
        if all(holder is not None for holder in held):
            return True
        watch.sample()
        await asyncio.sleep(SAMPLE_S)
    return False


# --------------------------------------------------------------------------- facts


# --------------------------------------------------------------------------- the report


def command_line(settings: Settings) -> str:
    words = ["maos bench scale"]
    defaults = quick_settings() if settings.quick else Settings()
    if settings.quick:
        words.append("--quick")
    for option, value, default in (
        ("--commands", settings.commands, defaults.commands),
        ("--claude", settings.claude, defaults.claude),
        ("--workers", settings.workers, defaults.workers),
        ("--model-delay-s", settings.model_delay_s, defaults.model_delay_s),
    ):
        if value != default:
            words.append(f"{option} {value:g}")
    if settings.store != DEFAULT_STORE:
        words.append(f"--store {_shown_store(settings.store)}")
    if settings.door_transport:
        words.append(f"--door-transport {settings.door_transport}")
    return " ".join(words)


def _cpu(seconds: float, exact: bool = True) -> str:
    text = f"{seconds:.2f}" if seconds < 10 else f"{seconds:.1f}"
    return text if exact else f"≥ {text}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _size(count: float) -> str:
    if count >= 10 * MB:
        return f"{count / MB:.0f} MB"
    if count >= MB:
        return f"{count / MB:.1f} MB"
    return f"{count / 1024:.0f} KB"


def table(part: Part) -> list[str]:
    lines = [
        "| process | processes | CPU-s | CPU per agent | peak RSS | RSS per agent |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    n = max(part.agents, 1)
    for role in part.roles:
        name = f"MAOS: {role.name}" if role.maos else f"agents: {role.name}"
        each = _size(role.rss_each) if role.rss_each else _size(role.peak_rss / n)
        lines.append(
            f"| {name} | {role.processes:,} | {_cpu(role.cpu_s, role.exact)} | {_ms(role.cpu_s / n)} "
            f"| {_size(role.peak_rss)} | {each} |"
        )
    if part.roles:
        exact = all(role.exact for role in part.roles if role.maos)
        lines.append(
            f"| **MAOS, in all** | {sum(r.processes for r in part.roles if r.maos):,} "
            f"| **{_cpu(part.maos_cpu_s, exact)}** | **{_ms(part.maos_cpu_s / n)}** "
            f"| **{_size(part.maos_peak_rss)}** | **{_size(part.maos_peak_rss / n)}** |"
        )
        lines.append(
            f"| agents: every process the hosts reaped | | {_cpu(part.reaped_cpu_s)} "
            f"| {_ms(part.reaped_cpu_s / n)} | | |"
        )
    return lines


def _part_text(part: Part) -> list[str]:
    done = f"{part.succeeded:,} of {part.agents:,} tasks succeeded in {part.wall_s:.1f} s"
    if part.name == "commands":
        alive = (
            f"all {part.agents:,} agent processes alive {part.all_alive_s:.1f} s after the start"
            if part.all_alive_s is not None
            else f"never all {part.agents:,} agent processes alive at once"
        )
        facts = (
            f"{done}; {alive}; at most {part.peak_alive:,} agent processes seen alive at once, and "
            f"{part.peak_running:,} attempts running at once in the run's log."
        )
    else:
        workers = ", ".join(f"{count}" for count in part.by_worker.values())
        facts = (
            f"{done} (`maos run` start → exit, the workers already up); at most {part.peak_alive} "
            f"CLI processes seen alive at once and {part.peak_running} attempts running at once in "
            f"the run's log; tasks per worker: {workers or '–'}."
        )
    lines = [f"**{part.title}.** {facts}", "", *table(part), ""]
    if (marginal := part.marginal_rss_per_agent) is not None:
        lines += [
            f"MAOS's own memory per Claude agent beside its CLI: **{_size(marginal)}** marginal (the "
            "workers' peak RSS minus their RSS when up and idle before the run, "
            f"{_size(part.hosts_idle_rss)} in all, per agent); the table's figure also shares out "
            "the fixed cost of each process (an interpreter and its imports). No agent has an MCP "
            "process of its own (ADR 0015).",
            "",
        ]
    lines += [f"Problem: {problem}" for problem in part.problems]
    if part.problems:
        lines.append("")
    return lines


def section(result: Result) -> str:
    """The ``## maos bench scale`` section of docs/benchmarks.md."""
    settings = result.settings
    soft, hard = result.open_files
    versions = ", ".join(f"{name} {version}" for name, version in result.versions.items())
    lines = [
        SECTION,
        "",
        f"Measured {result.started} with `{command_line(settings)}` on {result.machine}; {versions}. "
        f"Open files limit {soft} soft / {hard} hard (a host raises its soft limit to the hard one). "
        f"Load average (1 min) {result.load_before:.1f} before, {result.load_after:.1f} after "
        f"({result.seconds:.0f} s).",
        "",
        "How: the command agents are `maos run` of independent tasks that each block on a FIFO "
        "until all of them are seen alive; the Claude Code agents are `maos run --workers-only` "
        f"over `maos worker` processes on `{_shown_store(settings.store)}`, the real CLI against "
        f"the scripted model server (its own process, {settings.model_delay_s:g} s per answer; "
        "half the tasks make one door call first). MAOS's processes are read from `/proc` when "
        "they exit, so their CPU-s is exact and excludes their agents'; peak RSS is `VmHWM`. The "
        "agents' processes and the guards are sampled every "
        f"{SAMPLE_S:g} s (≥: a lower bound); for them peak RSS is the most at one moment and "
        "RSS per agent the median of each process's peak. Per agent: divided by the run's "
        "agents. Source: `src/maos/bench/scale.py`.",
        "",
    ]
    for part in result.parts:
        lines += _part_text(part)
    return "\n".join(lines).rstrip("\n") + "\n"


def _shown_store(url: str) -> str:
    return url.rsplit("@", maxsplit=1)[-1]  # no password in the docs


def write_section(path: Path, text: str) -> None:
    docs.write_section(path, SECTION, text)


def to_json(result: Result) -> dict[str, Any]:
    def part(p: Part) -> dict[str, Any]:
        n = max(p.agents, 1)
        return {
            "agents": p.agents,
            "succeeded": p.succeeded,
            "complete": p.complete,
            "wall_s": p.wall_s,
            "all_alive_s": p.all_alive_s,
            "peak_alive": p.peak_alive,
            "peak_running": p.peak_running,
            "by_worker": p.by_worker,
            "maos_cpu_s": p.maos_cpu_s,
            "maos_cpu_s_per_agent": p.maos_cpu_s / n,
            "maos_peak_rss_mb": p.maos_peak_rss / MB,
            "maos_peak_rss_mb_per_agent": p.maos_peak_rss / MB / n,
            "maos_marginal_rss_mb_per_agent": (
                None if p.marginal_rss_per_agent is None else p.marginal_rss_per_agent / MB
            ),
            "reaped_cpu_s": p.reaped_cpu_s,
            "roles": [
                {
                    "role": r.name,
                    "maos": r.maos,
                    "processes": r.processes,
                    "cpu_s": r.cpu_s,
                    "cpu_exact": r.exact,
                    "cpu_s_per_agent": r.cpu_s / n,
                    "peak_rss_mb": r.peak_rss / MB,
                    "rss_each_mb": r.rss_each / MB if r.rss_each else None,
                }
                for r in p.roles
            ],
            "problems": p.problems,
        }

    return {
        "started": result.started,
        "command": command_line(result.settings),
        "machine": result.machine,
        "versions": result.versions,
        "open_files": {"soft": result.open_files[0], "hard": result.open_files[1]},
        "load_before": result.load_before,
        "load_after": result.load_after,
        "seconds": result.seconds,
        **{p.name: part(p) for p in result.parts},
        "complete": result.complete,
        "problems": result.problems,
    }
