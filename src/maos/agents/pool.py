"""Warm pool: long-lived Claude Code agents started ahead of their tasks (``maos run --warm N``).

One CLI start costs ~1 s of CPU on a 2-core machine (FACTS.md); a warm agent pays it before
its task is ready. ADR 0005 records the decisions; in short:

- **A warm agent** is one CLI process of one MAOS agent (``AgentSpec``), started with
  ``--input-format stream-json`` and stdin kept open. It is primed with the local command
  ``/cost`` (answered by the CLI itself, no model call): its ``system/init`` line says the
  start-up is over, so "ready" is observed, not guessed. With ``primer="model"`` (``maos run
  --warm-primer model``) it then gets one real model turn, ``WARM_UP_MESSAGE`` (from
  ``maos.markers``); a warm-up turn that ends in an error fails the start like any failed
  start. Why: a CLI's first real turn does one-time work that ``/cost`` never reaches (skills
  attachment, the first request build, JIT of the request and SSE code), ~70 ms of an agent's
  first task (``maos bench spawn``); the price is one short model request per CLI start,
  replacements included (``maos model-server`` answers it by itself). Either way the primer
  ends with one more ``/cost`` (``PRIMER_END``): a CLI's second turn, whatever it is, does
  one-time work too (measured with CLI 2.1.332, CPU of the process per turn: model turns
  530, 137, 67, 63 ms; a model turn, ``/cost``, then model turns 522, 116, 73, 67 ms), which
  a local command takes for free. The agent is ready at the primer's last ``result`` line,
  within ``start_timeout_s``. The default is ``"local"``. The pool warms the run's first N
  agents (``size``) when the run starts, at most ``start_concurrency`` CLI starts at a time
  (start-up is CPU-bound), and does not delay the run: a task whose agent is still starting
  waits for that start instead of paying a second one.
- **Fixed at start**: cwd, environment (``CLAUDE_CONFIG_DIR``, ``MAOS_RUN_ID``,
  ``MAOS_AGENT_ID``, ``MAOS_AGENT_TOKEN``, ``MAOS_STORE``), the appended system prompt,
  permission mode, model, max turns, tools, MCP config and the session id. **Per task**: the
  prompt, sent as one stream-json user message that starts with ``[MAOS task <id>, attempt
  <n>]``; and ``MAOS_TASK_ID``, ``MAOS_ATTEMPT``, ``MAOS_TASK``, ``MAOS_INPUTS``, which a
  running process cannot change: the pool writes them to a file per agent before each task,
  and the agent's ``CLAUDE_ENV_FILE`` (which the CLI runs before every Bash command) sources
  it; and it writes the task id to the agent's ``MAOS_TASK_FILE``, which the door reads at
  every call (``maos state …`` in Bash as well as the door's MCP endpoint, where the agent
  is admitted once for the process: ``maos.mcp_http``; or its ``maos mcp`` server, started
  once with the process). The token identifies the agent, which never changes. The process's own
  ``MAOS_TASK_ID`` is the placeholder ``warm``; another MCP server (from the runtime's
  static ``mcp_config``) keeps the environment of the start.
- **Compatibility key**: where the warm agent works (the run's directory, or "a worktree"),
  its identity environment, and the CLI's whole command line as built by
  ``ClaudeCodeRuntime.argv`` with a task-free system note (role prompt and tools, permission
  mode, model, max turns, allowed tools, MCP config, settings sources). A task uses its
  agent's warm process only when the keys are equal ("where the spec allows"); otherwise that
  process is replaced by one started for the task (which then stays warm for the next task of
  its kind). Not served warm: tasks with ``max_budget_usd`` (the CLI counts the budget over
  the whole process), an attempt that continues its session after a restart (``--resume``),
  tasks of agents outside the warm set, and anything when the pool is not serving the job's
  run — those run as before, one process per attempt.
- **Worktrees**: a warm agent of a worktree task has its own persistent worktree
  (``.maos/worktrees/<run>/_warm/<agent>``). Per task it is checked out (detached, ``-f``,
  ``git clean -fdx``) at the commit of the task's fresh worktree, which
  ``Workspaces.prepare`` made from the integration branch's tip as usual; after a successful
  task its changes are committed there and the task's branch is fast-forwarded to that
  commit, so ``Workspaces.finish`` merges them as usual. The task's own worktree only carries
  the branch.
- **Session reuse**: a warm agent keeps its session across tasks: a same-role chain sees its
  earlier tasks (a feature; the first line of each message says which task is current).
  Per-task cost is the difference of the CLI's running ``total_cost_usd`` from a baseline
  of 0, so an agent's first task also carries the warm-up turn's cost (nothing is hidden).
  Tokens are per turn already (the ``result`` line's ``usage`` is its turn's): the warm-up
  turn's tokens are in no task's usage, only its cost is. An agent is replaced (in the
  background, same key) after ``max_tasks_per_agent`` tasks in one conversation, when its
  last turn used more than ``max_context_tokens``, or after a failed task (the retry gets a
  fresh session). A lasting pool's ``/clear`` starts a new conversation and the count again:
  its agents are not replaced every few runs, a start that on a small machine would compete
  with the run being served (about 1 CPU-s each). What bounds such a process's life instead
  is ``max_tasks_per_process`` (100): past it, the agent is replaced when a run is over, in
  place of its clear, not in the middle of a run.
- **A turn** is one task: the user message goes in, the ``result`` line ends it and the CLI
  waits for the next. The turn is the cold runtime's (``maos.agents.claude_turn``: its files,
  lines, watchdog with idle and wall-clock timeouts, and verdict), watched with
  ``until_result=True``.
- **A pool that outlives its runs** (``lasting(WarmHome)``: ``maos worker --warm N``,
  ``maos serve``; ADR 0017): ``size`` warm agents named ``warm-1`` … ``warm-N``, started when
  the host starts for its directory with a plain Claude task's settings, serve the tasks of
  any run. Nothing of a run is fixed in such a process: its environment has no ``MAOS_*``
  variable, its system note names no agent and no run (``maos.markers.lasting_note``), its
  ``CLAUDE_CONFIG_DIR`` is the warm agent's own (``<files>/<name>/claude``), and its door
  entry is a token the host's endpoint lends it (``DoorEndpoint.lend``). Per task, the
  endpoint binds that token to the task's identity (``bind``) and the pool writes all the
  task's ``MAOS_*`` variables (identity and tokens included) to the agent's ``task.env``;
  when the task ends the token is unbound (refused until the next task) and ``task.env``
  emptied. A task of another run than the agent's last one gets a fresh conversation first
  (``/clear``, a local command): no run sees another's messages. The host clears an idle
  agent as soon as its run is over (``clear_finished``, asked every second), so that a new
  run's first tasks do not wait for it; a task that comes meanwhile waits for the clear, as
  for a start, rather than replace the agent. The compatibility key is
  the per-run pool's without the run: the directory, the environment without ``MAOS_*``,
  and the command line with a run-free note and the door entry's shape. A task takes an
  idle agent of its key, else one of its key still starting, else replaces an idle agent of
  another key (which then stays warm for tasks like it), else runs cold.
- **Teardown**: an agent that dies (noticed at its exit, not when its pipes close; the rest
  of its process group is killed), hangs, or is stopped by the watchdog is reaped
  (terminate, grace, kill, wait) and replaced in the background; its task fails and is
  retried as usual. A cancelled turn (the run, the health monitor) is reaped and replaced
  only when the agent gets its next task. An agent whose warm processes keep dying while
  idle is given up after ``MAX_IDLE_DEATHS``. ``close()`` reaps every warm agent, also when
  cancelled, and ``serving()`` (the orchestrator's hook) calls it when the run ends. One
  agent never has two live CLIs (they would share ``CLAUDE_CONFIG_DIR``): a replacement
  starts after the old process is reaped. If MAOS itself dies, idle agents see EOF on stdin
  and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maos.agents.claude_code import ClaudeCodeRuntime, agent_config_dir
from maos.agents.claude_turn import (
    STDOUT_LINE_LIMIT_BYTES,
    TurnFiles,
    failure_reason,
    send_message,
)
from maos.agents.environment import pass_through
from maos.agents.primer import Primer
from maos.agents.process import PIPE_DRAIN_S, CappedSink, spawn, stop_process
from maos.agents.runtime import AgentJob, AgentResult, Reporter
from maos.agents.stream_json import ApiRetryLine, InitLine, ResultLine, StreamJsonError, parse_line
from maos.agents.task_env import (
    ENV_TASK_FILE,
    ENV_TASK_ID,
    ENV_TASK_TOKEN,
    PER_TASK_ENV,
    agent_path,
    agent_store_url,
    identity_env,
)
from maos.agents.workspace import Workspaces, git
from maos.errors import AgentError, MaosError, describe_error
from maos.filemodes import open_private, private_dir, tighten, write_private
from maos.markers import WARM_UP_MESSAGE, lasting_note, task_message, warm_note
from maos.model import AgentRole, AgentSpec, TaskSpec
from maos.paths import outputs_dir, warm_files_dir, warm_worktree
from maos.security import data_key_env, ensure_run_secret, issue_token
from maos.store.base import Store, connect_url

if TYPE_CHECKING:
    from maos.mcp_http import DoorEndpoint

__all__ = [
    "PRIME_MESSAGE",
    "Primer",
    "StartTiming",
    "WarmHome",
    "WarmPool",
    "WarmRun",
    "WarmStats",
]

log = logging.getLogger("maos.agents.pool")

WARM_TASK_ID = "warm"
"""``MAOS_TASK_ID`` in a warm process's own environment (its door reads ``MAOS_TASK_FILE``)."""
PRIME_MESSAGE = "/cost"
"""The first message of a warm agent: a local command the CLI answers without the model."""
PRIMER_END = PRIME_MESSAGE
"""The last message of a warm agent's primer: the CLI's second turn is dearer than the rest
(module docstring), so a free local command takes it."""
CLEAR_MESSAGE = "/clear"
"""Starts a fresh conversation (a local command): a lasting agent's first task of a run."""
CLEAR_AHEAD_TIMEOUT_S = 60.0
"""How long a lasting agent's ``/clear`` between runs may take before the agent is replaced."""
LASTING_NAME = "warm-{n}"
"""The names of a lasting pool's agents (``WarmPool.lasting``)."""
MAX_IDLE_DEATHS = 3
"""Warm processes of one agent that may die while idle before the pool stops replacing them."""


class WarmState(enum.StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    RETIRED = "retired"


@dataclass(frozen=True)
class WarmRun:
    """What the pool needs to know about the run it serves (``Orchestrator`` builds it)."""

    run_id: str
    store: Store
    workdir: Path
    grace_s: float
    agents: Sequence[AgentSpec]
    tasks: Sequence[TaskSpec]  # the plan: its Claude Code tasks say what to warm agents for
    role_of: Callable[[TaskSpec, AgentSpec], AgentRole | None]
    workspaces: Workspaces | None = None
    pass_env: Sequence[str] = ()  # the run's --pass-env names (RunConfig.pass_env)
    door: DoorEndpoint | None = None  # the door's MCP endpoint its agents use (None: `maos mcp`)


@dataclass(frozen=True)
class WarmHome:
    """What a pool that outlives its runs needs (``WarmPool.lasting``; ``maos worker --warm``)."""

    workdir: Path  # the directory its agents start in; tasks of another one replace them
    door: DoorEndpoint  # the host's endpoint: it binds each agent's token to its current task
    files: Path  # the agents' own files: <files>/<name>/ (task.env, session.env, claude/)
    grace_s: float = 5.0


@dataclass(frozen=True)
class StartTiming:
    """One CLI start of the pool: process start -> ``system/init`` line -> primed."""

    agent_id: str
    pid: int
    started_at: float  # time.time() just before the process was created
    init_s: float  # to the system/init line
    ready_s: float  # to the primer's last result line


@dataclass
class WarmStats:
    starts: list[StartTiming] = field(default_factory=list)
    failed_starts: int = 0
    reused: int = 0  # tasks handed to a running, idle warm agent
    waited: int = 0  # tasks that waited for their agent's start (warm-up or refill in progress)
    replaced: int = 0  # tasks whose agent had another key: a process was started for them
    cold: int = 0  # tasks run by the one-process-per-attempt runtime
    retired: int = 0


@dataclass(eq=False)
class _Agent:
    """One warm CLI process of one agent."""

    job: AgentJob  # the job it was started for: key, identity and settings
    place: str  # "worktree" or the directory it works in
    key: tuple[str, ...]
    name: str  # the agent's id; in a lasting pool, its own name (warm-<n>)
    files: Path  # task.env, session.env, the log of each warm process
    config_dir: Path  # its CLAUDE_CONFIG_DIR
    reserved: bool = False  # a task is waiting for it (a lasting pool)
    run_id: str = ""  # the run of its last task (a lasting pool: a new run clears the conversation)
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: WarmState = WarmState.STARTING
    cwd: Path | None = None
    repo: Path | None = None  # the repository whose worktree ``cwd`` is (place "worktree")
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    starter: asyncio.Task[None] | None = None
    pump: asyncio.Task[None] | None = None  # its stderr
    tasks_done: int = 0  # in its current conversation (``/clear`` starts a new one)
    tasks_lived: int = 0  # in its process's life
    cost_usd: float = 0.0  # the CLI's running total_cost_usd so far
    sink: tuple[CappedSink, Reporter] | None = None  # the current task's stderr file and reporter

    @property
    def agent_id(self) -> str:
        return self.name

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class WarmPool:
    """The ``claude-code`` runtime with warm agents: ``WarmPool(ClaudeCodeRuntime(), size=N)``.

    Serves one run at a time through ``serving(WarmRun)``; outside it (or for a job it may
    not serve warm) it runs the job with ``runtime`` like ``ClaudeCodeRuntime`` does.
    ``size``: agents kept warm (the run's first ``size``). ``start_concurrency``: CLI starts
    at once (default: the number of cores). ``max_tasks_per_agent`` (in one conversation),
    ``max_context_tokens``: when an agent is replaced by a fresh one; ``max_tasks_per_process``:
    when a lasting pool's agent is, between runs. ``start_timeout_s``: how long a start may take,
    priming included. ``primer``: ``"local"`` (``/cost``, free) or ``"model"`` (then one real
    model turn, ``WARM_UP_MESSAGE``, for every CLI start: see the module docstring).
    """

    name = "claude-code"

    def __init__(
        self,
        runtime: ClaudeCodeRuntime | None = None,
        *,
        size: int,
        start_concurrency: int | None = None,
        max_tasks_per_agent: int = 10,
        max_context_tokens: int = 100_000,
        max_tasks_per_process: int = 100,
        start_timeout_s: float = 120.0,
        primer: Primer | str = Primer.LOCAL,
    ) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        if primer not in tuple(Primer):
            choices = " or ".join(repr(p.value) for p in Primer)
            raise ValueError(f"primer must be {choices}, got {primer!r}")
        self.primer = Primer(primer)
        self.runtime = runtime if runtime is not None else ClaudeCodeRuntime()
        self.size = size
        self.start_concurrency = max(1, start_concurrency or os.cpu_count() or 2)
        self.max_tasks_per_agent = max_tasks_per_agent
        self.max_context_tokens = max_context_tokens
        self.max_tasks_per_process = max_tasks_per_process
        self.start_timeout_s = start_timeout_s
        self.stats = WarmStats()
        self._slots: asyncio.Semaphore | None = None
        self._run: WarmRun | None = None
        self._home: WarmHome | None = None
        self._closed = True
        self._warm_ids: set[str] = set()
        self._agents: dict[str, _Agent] = {}  # agent id -> its current warm process
        self._procs: set[asyncio.subprocess.Process] = set()  # every live process of the pool
        self._tasks: set[asyncio.Task[None]] = set()  # starters, pumps, watchers: ours to end
        self._idle_deaths: dict[str, int] = {}  # agent id -> warm processes that died idle

    # ------------------------------------------------------------------ lifecycle
    @contextlib.asynccontextmanager
    async def serving(self, run: WarmRun) -> AsyncIterator[WarmPool]:
        """Warm agents for ``run`` (started in the background) until the block ends; then
        every warm agent is reaped, also on error or cancellation."""
        if self._run is not None or self._home is not None:
            raise AgentError("the warm pool is serving already")
        self._run = run
        self._closed = False
        self._slots = asyncio.Semaphore(self.start_concurrency)
        self.stats = WarmStats()
        self._idle_deaths = {}
        try:
            try:
                await self._warm_up(run)
            except MaosError as exc:  # the run goes on; its tasks start their own CLIs
                log.warning("run %s: no warm agents: %s", run.run_id, exc)
            yield self
        finally:
            try:
                await self.close()
            finally:
                self._run = None

    @contextlib.asynccontextmanager
    async def lasting(self, home: WarmHome) -> AsyncIterator[WarmPool]:
        """Keep ``size`` warm agents for the tasks of any run until the block ends (a worker's
        life), started now in the background for ``home.workdir`` with a plain Claude task's
        settings; then every warm agent is reaped and its files removed, also on error or
        cancellation."""
        if self._run is not None or self._home is not None:
            raise AgentError("the warm pool is serving already")
        self._home = home
        self._closed = False
        self._slots = asyncio.Semaphore(self.start_concurrency)
        self.stats = WarmStats()
        self._idle_deaths = {}
        try:
            private_dir(home.files)
            template = _template(home)
            try:
                for n in range(1, self.size + 1):
                    self._spawn(template, str(home.workdir.resolve()), name=LASTING_NAME.format(n=n))
            except AgentError as exc:  # no CLI: every task will say so when it runs
                log.warning("no warm agents: %s", exc)
            else:
                log.info(
                    "warming %d agents for %s, %d CLI starts at a time",
                    self.size,
                    home.workdir,
                    self.start_concurrency,
                )
            yield self
        finally:
            try:
                await self.close()
            finally:
                self._home = None
                shutil.rmtree(home.files, ignore_errors=True)  # tokens of a closed endpoint, logs

    async def close(self) -> None:
        """Reap every warm agent (terminate, grace, kill, wait) and end the pool's tasks."""
        self._closed = True
        grace_s = self._grace_s(5.0)
        procs = list(self._procs)
        for task in self._tasks:
            task.cancel()
        try:
            await asyncio.gather(*(stop_process(proc, grace_s) for proc in procs))
            if self._tasks:
                await asyncio.wait(list(self._tasks))
        finally:
            # Even if this close is cancelled half way: no process outlives the pool.
            for proc in [*procs, *self._procs]:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
            self._agents.clear()
            self._warm_ids.clear()

    async def wait_ready(self) -> None:
        """Wait until no warm agent is starting (each is ready, or its start failed)."""
        while starting := [a for a in self._agents.values() if a.state is WarmState.STARTING]:
            for agent in starting:
                await agent.ready.wait()

    async def clear_finished(self, run_over: Callable[[str], Awaitable[bool]]) -> int:
        """Start clearing (``/clear``) each idle agent of a lasting pool whose last task's run
        is over (``run_over(run_id)``, asked once per run): the next run's first task finds a
        fresh conversation instead of waiting for one. Returns the clears started."""
        if self._home is None or self._closed:
            return 0
        over: dict[str, bool] = {}
        started = 0
        for agent in list(self._agents.values()):
            if agent.state is not WarmState.IDLE or agent.reserved or not agent.alive or not agent.run_id:
                continue
            run_id = agent.run_id
            if run_id not in over:
                over[run_id] = await run_over(run_id)
            # Asking may have taken a while: the agent may have been claimed meanwhile.
            proc = agent.proc
            still_idle = agent.state is WarmState.IDLE and not agent.reserved and agent.run_id == run_id
            if over[run_id] and still_idle and proc is not None:
                agent.state = WarmState.STARTING  # a task that claims it now waits, as for a start
                agent.ready.clear()
                self._own(self._clear_ahead(agent, proc, run_id), f"maos-warm-clear-{agent.agent_id}")
                started += 1
        return started

    async def _clear_ahead(self, agent: _Agent, proc: asyncio.subprocess.Process, run_id: str) -> None:
        try:
            if agent.tasks_lived >= self.max_tasks_per_process:  # no run is using it now
                log.info(
                    "warm agent %s (pid %d): replacing it between runs: %d tasks over its life",
                    agent.name,
                    proc.pid,
                    agent.tasks_lived,
                )
                await self._retire(agent, refill=True)
                return
            async with asyncio.timeout(CLEAR_AHEAD_TIMEOUT_S):  # a task may be waiting for it
                await _clear(agent, proc)
        except asyncio.CancelledError:
            await self._retire(agent, refill=False)
            raise
        except Exception as exc:  # whatever it was, the agent must not stay "starting"
            why = describe_error(exc) if str(exc) else f"no answer in {CLEAR_AHEAD_TIMEOUT_S:g}s"
            log.warning("warm agent %s: clearing its conversation failed (%s); replacing it", agent.name, why)
            await self._retire(agent, refill=True)
        else:
            agent.run_id = ""
            if agent.state is WarmState.STARTING:
                agent.state = WarmState.IDLE
            log.info(
                "warm agent %s cleared its conversation, run %s being over: session %s",
                agent.name,
                run_id,
                agent.session_id,
            )
        finally:
            agent.ready.set()

    def warm_agents(self) -> dict[str, int]:
        """Agent id -> pid of each live warm process (for benchmarks and tests)."""
        return {a.agent_id: a.proc.pid for a in self._agents.values() if a.proc is not None and a.alive}

    def advert(self) -> dict[str, Any]:
        """What a lasting pool tells the store about its agents (``maos worker --warm``): its
        directory, and per compatibility key (a digest) how many agents are live and idle."""
        keys: dict[str, dict[str, int]] = {}
        for agent in self._agents.values():
            if agent.alive and agent.state is not WarmState.RETIRED:
                entry = keys.setdefault(key_digest(agent.key), {"live": 0, "idle": 0})
                entry["live"] += 1
                entry["idle"] += agent.state is WarmState.IDLE and not agent.reserved
        workdir = str(self._home.workdir) if self._home is not None else ""
        return {"size": self.size, "workdir": workdir, "keys": keys}

    def _grace_s(self, default: float) -> float:
        if self._run is not None:
            return self._run.grace_s
        if self._home is not None:
            return self._home.grace_s
        return default

    async def _warm_up(self, run: WarmRun) -> None:
        templates = [task for task in run.tasks if task.runtime == "claude-code" and _warmable(task)]
        if not templates or self.size == 0:
            log.info("run %s: no agent to warm (no Claude Code task can use one)", run.run_id)
            return
        templates.sort(key=lambda task: bool(task.depends_on))  # the first ready tasks first
        secret = await ensure_run_secret(run.store, run.run_id)
        for n, agent in enumerate(run.agents[: self.size]):
            task = templates[n % len(templates)]
            path = agent_path(os.environ.get("PATH"))
            job = AgentJob(
                run_id=run.run_id,
                task=task,
                agent=agent,
                attempt=1,
                cwd=run.workdir,
                env={  # as AgentHost._job builds it, without the per-task variables
                    **pass_through((*run.pass_env, *task.pass_env)),
                    **({"PATH": path} if path is not None else {}),
                    **identity_env(
                        run_id=run.run_id,
                        agent_id=agent.id,
                        store_url=agent_store_url(connect_url(run.store)),
                        agent_token=issue_token(secret, run.run_id, agent.id),
                    ),
                    **data_key_env(run.store.url, run.run_id),  # values at rest (maos.security)
                },
                output_dir=outputs_dir(run.workdir, run.run_id),
                grace_s=run.grace_s,
                role=run.role_of(task, agent),
                door=run.door,
            )
            place = "worktree" if run.workspaces is not None and task.wants_worktree else str(run.workdir)
            self._warm_ids.add(agent.id)
            try:
                self._spawn(job, place)
            except AgentError as exc:  # no CLI: every task will say so when it runs
                log.warning("run %s: cannot warm agents: %s", run.run_id, exc)
                return
        log.info(
            "run %s: warming %d agents, %d CLI starts at a time",
            run.run_id,
            len(self._warm_ids),
            self.start_concurrency,
        )

    # ------------------------------------------------------------------ the runtime
    async def run(self, job: AgentJob, reporter: Reporter) -> AgentResult:
        if self._home is not None:
            return await self._run_lasting(job, reporter)
        run = self._run
        place = self._place(job, run)
        if run is None or self._closed or place is None or job.agent.id not in self._warm_ids:
            return await self._cold(job, reporter)
        try:
            key = self._key(job, place)
        except AgentError as exc:
            return AgentResult(ok=False, duration_s=0.0, reason=str(exc))
        for _ in range(3):  # a warm agent may die between "ready" and its use: take the next
            agent = self._agents.get(job.agent.id)
            if agent is None or agent.key != key or agent.state is WarmState.RETIRED:
                if agent is not None and agent.state is WarmState.BUSY:
                    return await self._cold(job, reporter)  # not ours to interrupt
                if agent is not None:
                    log.info(
                        "task %s: warm agent %s has other settings; starting one for this task",
                        job.task.id,
                        job.agent.id,
                    )
                    await self._retire(agent, refill=False)
                self.stats.replaced += 1
                agent = self._spawn(job, place)
            elif agent.state is WarmState.STARTING:
                self.stats.waited += 1
            else:
                self.stats.reused += 1
            await agent.ready.wait()
            if agent.state is WarmState.IDLE and agent.alive and not self._closed:
                return await self._turn(agent, job, reporter, place)
        return await self._cold(job, reporter)

    async def _run_lasting(self, job: AgentJob, reporter: Reporter) -> AgentResult:
        """A task of any run: an agent of its key takes it (see the module docstring)."""
        if self._closed or not _warmable(job.task) or job.resume_session or not job.cwd.is_dir():
            return await self._cold(job, reporter)
        place = str(job.cwd.resolve())
        try:
            key = self._key(job, place)
        except AgentError as exc:
            return AgentResult(ok=False, duration_s=0.0, reason=str(exc))
        for _ in range(3):  # a warm agent may die between "ready" and its use: take the next
            agent = self._claim(key)
            if agent is None:
                other = next(
                    (a for a in self._agents.values() if a.state is WarmState.IDLE and not a.reserved),
                    None,
                )
                free = [LASTING_NAME.format(n=n) for n in range(1, self.size + 1)]
                free = [name for name in free if name not in self._agents]
                if other is not None:
                    log.info(
                        "task %s: warm agent %s has other settings; starting one for this task",
                        job.task.id,
                        other.name,
                    )
                    other.reserved = True
                    await self._retire(other, refill=False)
                    name = other.name
                elif free:  # an agent whose start failed or that died: start it again
                    name = free[0]
                else:
                    return await self._cold(job, reporter)  # every agent is busy
                self.stats.replaced += 1
                agent = self._spawn(job, place, name=name)
                agent.reserved = True
            try:
                await agent.ready.wait()  # its start, or the clear after its last run
            except BaseException:
                agent.reserved = False  # cancelled while waiting: the agent is not ours to keep
                raise
            if agent.state is WarmState.IDLE and agent.alive and not self._closed:
                return await self._turn(agent, job, reporter, place)
            agent.reserved = False
        return await self._cold(job, reporter)

    def _claim(self, key: tuple[str, ...]) -> _Agent | None:
        """An agent of ``key`` no other task has: an idle one, else one still starting."""
        for state in (WarmState.IDLE, WarmState.STARTING):
            for agent in self._agents.values():
                if agent.key == key and agent.state is state and not agent.reserved:
                    agent.reserved = True
                    if state is WarmState.IDLE:
                        self.stats.reused += 1
                    else:
                        self.stats.waited += 1
                    return agent
        return None

    async def _cold(self, job: AgentJob, reporter: Reporter) -> AgentResult:
        """One process for this attempt (``ClaudeCodeRuntime.run``). A warm process of the same
        agent is put away first and brought back after: two CLIs must not share its config
        (a lasting pool's agents have configs of their own)."""
        self.stats.cold += 1
        if self._home is not None:
            return await self.runtime.run(job, reporter)
        previous = self._agents.get(job.agent.id)
        if previous is None or previous.state is WarmState.BUSY:
            return await self.runtime.run(job, reporter)
        await self._retire(previous, refill=False)
        try:
            return await self.runtime.run(job, reporter)
        finally:
            if not self._closed and job.agent.id not in self._agents:
                self._spawn(previous.job, previous.place)

    def _place(self, job: AgentJob, run: WarmRun | None) -> str | None:
        """Where ``job`` works, as a key: its directory, "worktree", or None (not warmable: also
        an attempt that continues a session after a restart, which needs ``--resume``)."""
        if run is None or job.run_id != run.run_id or not _warmable(job.task) or job.resume_session:
            return None
        if job.cwd == run.workdir:
            return str(job.cwd)
        if run.workspaces is not None and job.cwd == run.workspaces.path(job.task.id):
            return "worktree"
        return None

    def _key(self, job: AgentJob, place: str) -> tuple[str, ...]:
        if self._home is not None:
            return self._lasting_key(job, place, self._home)
        stable = _stable(job)
        identity = json.dumps(sorted(stable.env.items()))
        # A warm agent of worktree tasks works in a worktree of its own (its permission mode
        # follows from that), whatever directory the job that started it named.
        argv = self.runtime.argv(
            stable,
            "",
            note=warm_note(agent_id=job.agent.id, run_id=job.run_id),
            own_worktree=place == "worktree",
        )
        return (place, identity, *argv)

    def _lasting_key(self, job: AgentJob, place: str, home: WarmHome) -> tuple[str, ...]:
        """The key without the run: directory, environment without ``MAOS_*``, and the command
        line with a run-free note and the door entry's shape (its file's text, not its path)."""
        unbound = _unbound(job)
        shape = {"type": "http", "url": home.door.url, "headers": {"Authorization": "Bearer <warm agent>"}}
        argv = self.runtime.argv(
            unbound, "", note=lasting_note(), own_worktree=False, door=shape, config_dir=home.files / "shapes"
        )
        if "--mcp-config" in argv:
            at = argv.index("--mcp-config") + 1
            argv[at] = Path(argv[at]).read_text()
        return (place, json.dumps(sorted(unbound.env.items())), *argv)

    # ------------------------------------------------------------------ one task
    async def _turn(self, agent: _Agent, job: AgentJob, reporter: Reporter, place: str) -> AgentResult:
        proc, cwd = agent.proc, agent.cwd
        assert proc is not None
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert cwd is not None
        agent.state = WarmState.BUSY
        agent.reserved = False
        files = TurnFiles.of(job)
        turn = self.runtime.turn(job, reporter)
        started = time.monotonic()
        home = self._home
        try:
            try:
                if home is not None:
                    if agent.run_id and agent.run_id != job.run_id:
                        await _clear(agent, proc)  # no run sees another's conversation
                    agent.run_id = job.run_id
                    _write_lasting_env(agent.files, job)
                    home.door.bind(agent.name, job.env)
                else:
                    _write_task_env(agent.files, job)
                if place == "worktree":
                    assert agent.repo is not None
                    await _checkout(agent.repo, cwd, job.cwd)
            except (OSError, MaosError) as exc:
                self._unbind(agent)
                agent.state = WarmState.IDLE
                return AgentResult(
                    ok=False, duration_s=0.0, reason=f"cannot hand the task to warm agent: {exc}"
                )
            async with files.open(reporter) as (transcript, stderr):
                agent.sink = (stderr, reporter)
                try:
                    where = f"(warm, task {agent.tasks_done + 1} of this conversation)"
                    await turn.started(proc.pid, agent.session_id, where=where)
                    message = task_message(
                        task_id=job.task.id, title=job.task.title, attempt=job.attempt, prompt=job.task.prompt
                    )
                    await send_message(proc.stdin, message)
                    await turn.watch(proc.stdout, transcript, until_result=True)
                    keep = turn.answered and agent.alive
                    if not keep:
                        # Dead, hung or stopped by the watchdog: reap it and warm another; what
                        # it printed on stderr last (why it died) goes to the task's file.
                        await self._retire(agent, refill=True)
                        if agent.pump is not None:
                            await asyncio.wait([agent.pump], timeout=PIPE_DRAIN_S)
                finally:
                    agent.sink = None
                    self._unbind(agent)
        except BaseException:
            self._unbind(agent)
            # Cancelled (the run, or the health monitor stopping the task) or broken: reap it.
            # No replacement now: the agent's next task, if any, starts one (a lasting pool
            # has no "next task of this agent": it starts one now).
            await self._retire(agent, refill=self._home is not None)
            raise
        tighten(agent.config_dir)  # the CLI's own files (its transcripts) follow the umask
        result = turn.judge(None if keep else proc.returncode, time.monotonic() - started, files)
        result = self._task_usage(agent, turn.result, result)
        if not keep:
            return result
        agent.tasks_done += 1
        agent.tasks_lived += 1
        if result.ok and place == "worktree":
            try:
                assert agent.repo is not None
                await _commit_to_task_branch(agent.repo, cwd, job)
            except AgentError as exc:
                result = replace(result, ok=False, reason=f"cannot hand the work to the task's branch: {exc}")
        why = self._why_replace(agent, result, turn.result)
        if why:
            log.info("warm agent %s (pid %d): replacing it: %s", agent.agent_id, proc.pid, why)
            await self._retire(agent, refill=True)
        else:
            agent.state = WarmState.IDLE
        return result

    def _unbind(self, agent: _Agent) -> None:
        """A lasting agent's task is over: its token acts for no one, its task.env is empty."""
        if self._home is not None:
            self._home.door.unbind(agent.name)
            with contextlib.suppress(OSError):
                _write_lasting_env(agent.files, None)

    def _task_usage(self, agent: _Agent, line: ResultLine | None, result: AgentResult) -> AgentResult:
        """The CLI's ``total_cost_usd`` counts the whole process: the task's is the increase."""
        if line is None or result.usage is None or line.total_cost_usd is None:
            return result
        spent = max(0.0, line.total_cost_usd - agent.cost_usd)
        agent.cost_usd = line.total_cost_usd
        return replace(result, usage=result.usage.model_copy(update={"cost_usd": spent}))

    def _why_replace(self, agent: _Agent, result: AgentResult, line: ResultLine | None) -> str:
        if not result.ok:
            return "its task failed (the retry gets a fresh session)"
        if agent.tasks_done >= self.max_tasks_per_agent:
            return f"{agent.tasks_done} tasks done"
        usage = line.usage if line is not None else None
        if usage is not None:
            context = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
            if context > self.max_context_tokens:
                return f"its context reached {context} tokens"
        return ""

    # ------------------------------------------------------------------ starting and reaping
    def _spawn(self, job: AgentJob, place: str, *, name: str | None = None) -> _Agent:
        """Register a starting warm agent for ``job.agent`` (in a lasting pool: agent ``name``,
        for no run) and start it in the background."""
        key = self._key(job, place)
        if self._home is not None and name is not None:
            files = self._home.files / name
            agent = _Agent(
                job=_unbound(job), place=place, key=key, name=name, files=files, config_dir=files / "claude"
            )
        else:
            agent = _Agent(
                job=job,
                place=place,
                key=key,
                name=job.agent.id,
                files=_warm_dir(job),
                config_dir=agent_config_dir(job),
            )
        self._agents[agent.agent_id] = agent
        agent.starter = self._own(self._start(agent), f"maos-warm-start-{agent.agent_id}")
        return agent

    def _own(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start a background task of the pool: kept here, cancelled and awaited by ``close``."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("warm pool task %s failed", task.get_name(), exc_info=exc)

    async def _start(self, agent: _Agent) -> None:
        assert self._slots is not None
        try:
            async with self._slots:
                if agent.state is not WarmState.STARTING:
                    return
                await self._launch(agent)
        except asyncio.CancelledError:
            await self._retire(agent, refill=False)
            raise
        except Exception as exc:
            # A start that fails costs its tasks nothing but the fallback to a cold start.
            self.stats.failed_starts += 1
            log.warning("warm agent %s did not start: %s", agent.name, exc)
            await self._retire(agent, refill=False)
        finally:
            agent.ready.set()

    async def _launch(self, agent: _Agent) -> None:
        job = agent.job
        cwd = job.cwd
        if agent.place == "worktree":
            assert self._run is not None
            assert self._run.workspaces is not None
            cwd = await _agent_worktree(self._run.workspaces, job.agent.id)
            agent.repo = self._run.workspaces.repo
        agent.cwd = cwd
        config_dir = private_dir(agent.config_dir)
        warm_dir = private_dir(agent.files)
        home = self._home
        if home is not None:
            _write_lasting_env(warm_dir, None)
            stable = job  # _unbound already: nothing of a run
        else:
            _write_task_env(warm_dir, None)
            stable = _stable(job)
        env = self.runtime.environment(stable, config_dir)
        session_env = warm_dir / "session.env"
        # The CLI reads this file once; what it sources is read again before each Bash command.
        sourced = [env["CLAUDE_ENV_FILE"]] if env.get("CLAUDE_ENV_FILE") else []
        sourced.append(str(warm_dir / "task.env"))
        write_private(session_env, "".join(f". {shlex.quote(path)}\n" for path in sourced))
        env["CLAUDE_ENV_FILE"] = str(session_env)
        if home is not None:
            argv = self.runtime.argv(
                stable,
                agent.session_id,
                note=lasting_note(),
                own_worktree=False,
                door=home.door.lend(agent.name),
                config_dir=config_dir,
            )
        else:
            argv = self.runtime.argv(
                stable,
                agent.session_id,
                note=warm_note(agent_id=job.agent.id, run_id=job.run_id),
                own_worktree=agent.place == "worktree",
            )
        started_at = time.time()
        started = time.monotonic()
        # The CLI and all it starts die with this process (maos.agents.guard).
        proc, exited = await spawn(argv, cwd=cwd, env=env, limit_bytes=STDOUT_LINE_LIMIT_BYTES)
        agent.proc = proc
        self._procs.add(proc)
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        agent.pump = self._own(
            self._pump_stderr(agent, proc.stderr, warm_dir), f"maos-warm-stderr-{proc.pid}"
        )
        self._own(self._watch_life(agent, proc, exited), f"maos-warm-life-{proc.pid}")
        messages = [PRIME_MESSAGE, *([WARM_UP_MESSAGE] if self.primer is Primer.MODEL else []), PRIMER_END]
        init_s: float | None = None
        async with asyncio.timeout(self.start_timeout_s):
            with open_private(warm_dir / f"{agent.session_id}.jsonl", "ab") as log_file:
                for message in messages:
                    await send_message(proc.stdin, message)
                    result: ResultLine | None = None
                    last_retry: ApiRetryLine | None = None
                    while result is None:
                        line = await proc.stdout.readline()
                        if not line:
                            raise AgentError(f"the CLI exited (code {await proc.wait()}) while starting")
                        log_file.write(line)
                        try:
                            record = parse_line(line)
                        except StreamJsonError:
                            continue
                        if isinstance(record, InitLine) and init_s is None:
                            init_s = time.monotonic() - started
                        elif isinstance(record, ApiRetryLine):
                            last_retry = record
                        elif isinstance(record, ResultLine):
                            result = record
                    if message == WARM_UP_MESSAGE and result.is_error:
                        raise AgentError(
                            f"its warm-up turn failed: {failure_reason(job, result, last_retry)}"
                        )
        ready_s = time.monotonic() - started
        self.stats.starts.append(
            StartTiming(agent.name, proc.pid, started_at, init_s if init_s is not None else ready_s, ready_s)
        )
        if agent.state is WarmState.STARTING:
            agent.state = WarmState.IDLE
        log.info(
            "warm agent %s ready (%s primer): pid %d session %s in %s, init after %.3fs",
            agent.name,
            self.primer.value,
            proc.pid,
            agent.session_id,
            cwd,
            init_s if init_s is not None else ready_s,
        )

    async def _retire(self, agent: _Agent, *, refill: bool) -> None:
        """Reap the agent's process; with ``refill``, start a replacement (same key) after."""
        if agent.state is WarmState.RETIRED:
            return
        agent.state = WarmState.RETIRED
        self.stats.retired += 1
        if self._agents.get(agent.agent_id) is agent:
            del self._agents[agent.agent_id]
        starter = agent.starter
        if starter is not None and starter is not asyncio.current_task() and not starter.done():
            starter.cancel()
            await asyncio.wait([starter])  # it reaps what it started before it ends
        if agent.proc is not None:
            await stop_process(agent.proc, self._grace_s(agent.job.grace_s))
        if self._home is not None and not refill:
            self._home.door.forget(agent.name)  # a replacement gets a token of its own
        if refill and not self._closed and agent.agent_id not in self._agents:
            self._spawn(agent.job, agent.place, name=agent.name)

    async def _watch_life(
        self, agent: _Agent, proc: asyncio.subprocess.Process, exited: asyncio.Future[None]
    ) -> None:
        """When the process ends: forget it; an idle agent that died is replaced. Its exit is
        noticed at once (``process.py``): whatever is left of its group goes too, so that a
        child holding its stdout cannot keep a task's reader waiting."""
        await asyncio.shield(exited)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        code = await proc.wait()
        self._procs.discard(proc)
        if agent.state is WarmState.IDLE:
            deaths = self._idle_deaths[agent.agent_id] = self._idle_deaths.get(agent.agent_id, 0) + 1
            log.warning("warm agent %s (pid %d) exited while idle (code %s)", agent.agent_id, proc.pid, code)
            await self._retire(agent, refill=deaths < MAX_IDLE_DEATHS)

    async def _pump_stderr(self, agent: _Agent, reader: asyncio.StreamReader, warm_dir: Path) -> None:
        """The process's stderr: to its own file, and to the current task's while it has one."""
        with open_private(warm_dir / f"{agent.session_id}.err", "ab") as own:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:
                    continue
                if not line:
                    return
                own.write(line)
                own.flush()
                if agent.sink is not None:
                    sink, reporter = agent.sink
                    sink.write(line)
                    sink.flush()
                    text = line.decode(errors="replace").rstrip("\n")
                    if text.strip():
                        try:
                            await reporter.output("stderr", text)
                        except Exception:  # the task's reporter failing must not end the pump
                            log.exception("warm agent %s: stderr line not reported", agent.agent_id)


def _warmable(task: TaskSpec) -> bool:
    """The CLI's ``--max-budget-usd`` counts the whole process, so budgeted tasks run cold."""
    return task.max_budget_usd is None


def _warm_dir(job: AgentJob) -> Path:
    """The agent's pool files: task.env, session.env, and the log of each warm process."""
    return warm_files_dir(job.output_dir, job.agent.id)


def _stable(job: AgentJob) -> AgentJob:
    """``job`` as a warm process of its agent sees it: no per-task variables; the door reads
    the current task from ``MAOS_TASK_FILE``."""
    env = {name: value for name, value in job.env.items() if name not in PER_TASK_ENV}
    env.update({ENV_TASK_ID: WARM_TASK_ID, ENV_TASK_FILE: str(_warm_dir(job) / "task")})
    return replace(job, env=env)


def _unbound(job: AgentJob) -> AgentJob:
    """``job`` as a lasting warm process sees it: no ``MAOS_*`` variable (they are a run's)."""
    env = {name: value for name, value in job.env.items() if not name.startswith("MAOS_")}
    return replace(job, env=env)


def _template(home: WarmHome) -> AgentJob:
    """The job a lasting pool's agents are started for: a plain Claude task in its directory,
    no run (the settings a run gives a task that sets none)."""
    path = agent_path(os.environ.get("PATH"))
    return AgentJob(
        run_id="",
        task=TaskSpec(id="warm", prompt="(no task yet)"),
        agent=AgentSpec(id="warm"),
        attempt=1,
        cwd=home.workdir,
        env={"PATH": path} if path is not None else {},
        output_dir=home.files,
        grace_s=home.grace_s,
        door=home.door,
    )


def key_digest(key: Sequence[str]) -> str:
    """A compatibility key as the store shows it (``WarmPool.advert``)."""
    return hashlib.sha256(json.dumps(list(key)).encode()).hexdigest()[:16]


def _write_lasting_env(warm_dir: Path, job: AgentJob | None) -> None:
    """A lasting agent's ``task.env``: every ``MAOS_*`` variable of its current task (who it
    is, its tokens, its task), sourced before each of its Bash commands; empty between tasks."""
    env: Mapping[str, str] = job.env if job is not None else {}
    lines = [
        f"export {name}={shlex.quote(value)}\n" for name, value in env.items() if name.startswith("MAOS_")
    ]
    write_private(warm_dir / "task.env", "".join(lines))


async def _clear(agent: _Agent, proc: asyncio.subprocess.Process) -> None:
    """Start a fresh conversation (``/clear``, answered by the CLI itself, with no model call;
    the CLI gives it a new session id: verified with CLI 2.1.332)."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    await send_message(proc.stdin, CLEAR_MESSAGE)
    with open_private(agent.files / f"{agent.session_id}.jsonl", "ab") as log_file:
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise AgentError(f"the CLI exited (code {await proc.wait()}) while clearing its conversation")
            log_file.write(line)
            try:
                record = parse_line(line)
            except StreamJsonError:
                continue
            if isinstance(record, InitLine) and record.session_id:
                agent.session_id = record.session_id  # /clear starts a session of its own
            elif isinstance(record, ResultLine):
                # The running cost the next task's is counted from (the new session's).
                agent.cost_usd = record.total_cost_usd or 0.0
                agent.tasks_done = 0  # what max_tasks_per_agent bounds: one conversation's tasks
                return


def _write_task_env(warm_dir: Path, job: AgentJob | None) -> None:
    """The current task for the agent's door (``task``) and its per-task variables as a shell
    file (``task.env``, sourced before each of the agent's Bash commands)."""
    env: Mapping[str, str] = job.env if job is not None else {}
    lines = [f"export {name}={shlex.quote(env[name])}\n" for name in PER_TASK_ENV if name in env]
    task_id = job.task.id if job is not None else WARM_TASK_ID
    # The door's task file: the task id, then its attempt's token (maos.door, 0600).
    task = f"{task_id}\n{env.get(ENV_TASK_TOKEN, '')}\n"
    for name, text in (("task.env", "".join(lines)), ("task", task)):
        write_private(warm_dir / name, text)


async def _agent_worktree(spaces: Workspaces, agent_id: str) -> Path:
    """The agent's persistent worktree (detached at the integration branch's tip at first)."""
    path = warm_worktree(spaces.repo, spaces.run_id, agent_id)
    if not (path / ".git").exists():
        private_dir(path.parent)
        await git(spaces.repo, "worktree", "add", "--detach", "-q", str(path), spaces.integration_branch)
    return path


async def _checkout(repo: Path, cwd: Path, task_worktree: Path) -> None:
    """Put the agent's worktree at the task worktree's commit, with nothing else in it."""
    _, head = await git(task_worktree, "rev-parse", "HEAD", worktree_of=repo)
    await git(cwd, "checkout", "-q", "-f", "--detach", head.strip(), worktree_of=repo)
    await git(cwd, "clean", "-q", "-f", "-d", "-x", worktree_of=repo)


async def _commit_to_task_branch(repo: Path, cwd: Path, job: AgentJob) -> None:
    """Commit what the agent changed and fast-forward the task's branch (in its worktree) to it.
    Both worktrees are the agent's to tamper with: git is pointed at their records in ``repo``."""
    await git(cwd, "add", "-A", worktree_of=repo)
    code, _ = await git(cwd, "diff", "--cached", "--quiet", check=False, worktree_of=repo)
    if code != 0:
        message = f"maos: {job.task.id} (attempt {job.attempt})\n\n{job.task.title}"
        await git(cwd, "commit", "-q", "-m", message, worktree_of=repo)
    _, head = await git(cwd, "rev-parse", "HEAD", worktree_of=repo)
    await git(job.cwd, "merge", "-q", "--ff-only", head.strip(), worktree_of=repo)
