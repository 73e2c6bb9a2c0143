"""The warm pool (``maos run --warm N``) with the real Claude Code CLI against the model server.

Lean on purpose: each test starts two CLIs (a start costs ~1 CPU-second here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from maos.agents.claude_code import ClaudeCodeRuntime
from maos.agents.command import CommandRuntime
from maos.agents.pool import Primer, WarmPool
from maos.agents.runtime import AgentRuntime
from maos.eventlog import EventLog
from maos.events import TaskFailed, TaskReady, TaskStarted
from maos.markers import WARM_UP_MESSAGE
from maos.model import Plan, RunConfig, RunStatus, TaskSpec
from maos.modelserver import parse_script, running_model_server
from maos.orchestrator import Orchestrator
from maos.store.base import Store
from tests.claude.conftest import Run, assert_dead, processes_of_run

WRITE_SCRIPT = r"""
rules:
  - name: done
    match: {tool_result: true}
    reply: {text: "Wrote it, ${agent}."}
  - name: write
    match: {last_user: 'create (?P<path>\S+\.txt)'}
    reply:
      tool_calls:
        - name: Write
          input: {file_path: "${path}", content: "${path} by ${agent}\n"}
"""

HANG_SCRIPT = """
rules:
  - name: hang
    match: {last_user: 'hang'}
    times: 1
    reply: {text: "too late", delay_s: 60}
default: {text: "second attempt"}
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


async def requests_of(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url) as client:
        return list((await client.get("/requests")).json()["requests"])


async def until_requested(url: str, rule: str) -> None:
    """Wait until the model server has received a request answered by ``rule``."""
    while not any(r["rule_name"] == rule for r in await requests_of(url)):
        await asyncio.sleep(0.05)


def orchestrator_for(
    store: Store, workdir: Path, url: str, *tasks: TaskSpec, agents: int, warm: int, primer: str = "local"
) -> Orchestrator:
    workdir.mkdir(parents=True, exist_ok=True)
    config = RunConfig(agents=agents, workdir=str(workdir), retry_base_s=0.05, retry_max_s=0.2, grace_s=1.0)
    runtimes: dict[str, AgentRuntime] = {
        "command": CommandRuntime(),
        "claude-code": ClaudeCodeRuntime(base_url=url),
    }
    plan = Plan(name="warm", tasks=tasks)
    return Orchestrator(store, plan, config, runtimes=runtimes, warm=warm, warm_primer=primer)


def pool_of(orchestrator: Orchestrator) -> WarmPool:
    pool = orchestrator.runtimes["claude-code"]
    assert isinstance(pool, WarmPool)
    return pool


async def run_warm(
    store: Store,
    workdir: Path,
    script: str,
    *tasks: TaskSpec,
    agents: int,
    warm: int,
    primer: str = "local",
    during: Callable[[str, WarmPool], Awaitable[None]] | None = None,
) -> tuple[Run, WarmPool]:
    """Run ``tasks`` with ``--warm``; ``during(url, pool)`` runs alongside the run."""
    async with running_model_server(parse_script(script)) as url:
        orchestrator = orchestrator_for(store, workdir, url, *tasks, agents=agents, warm=warm, primer=primer)
        run_task = asyncio.create_task(orchestrator.run())
        try:
            if during is not None:
                await during(url, pool_of(orchestrator))
            state = await run_task
        finally:
            if not run_task.done():
                run_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run_task
        requests = await requests_of(url)
    events = [event async for _, event in EventLog(store, orchestrator.run_id).iterate()]
    return Run(state, events, requests, orchestrator.run_id, workdir), pool_of(orchestrator)


async def no_process_left(run_id: str) -> None:
    """Nothing of the run is alive. Killed group members the pool did not start itself (the
    CLI's MCP server) are reaped by init, a moment after the kill: allow that moment."""
    for _ in range(50):
        if not processes_of_run(run_id):
            return
        await asyncio.sleep(0.05)
    assert processes_of_run(run_id) == []


def warm_dir(workdir: Path, run_id: str) -> Path:
    """The pool's files of agent-1, with a log of what each of its warm processes printed
    while it was primed."""
    return workdir / ".maos" / "runs" / run_id / "agents" / "agent-1" / "warm"


def first_request_after(run: Run, session: str, ts: float) -> float:
    return min(
        float(r["received_at"]) for r in run.requests if r["session"] == session and r["received_at"] >= ts
    )


@pytest.mark.claude
async def test_warm_agents_serve_a_chain_in_a_git_repo_with_no_cli_start_in_between(
    cli: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "base.txt").write_text("base\n")
    git(work, "add", "base.txt")
    git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    run, pool = await run_warm(
        sqlite_store,
        work,
        WRITE_SCRIPT,
        TaskSpec(id="a", prompt="please create a.txt", permission_mode="acceptEdits"),
        TaskSpec(id="b", prompt="please create b.txt", permission_mode="acceptEdits"),
        TaskSpec(id="c", prompt="please create c.txt", depends_on=("a", "b"), permission_mode="acceptEdits"),
        agents=2,
        warm=2,
    )
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    # Two CLIs started, ahead of the tasks; all three tasks ran on them.
    assert len(pool.stats.starts) == 2
    started = {e.task_id: e for e in run.of(TaskStarted)}
    assert len({e.pid for e in started.values()}) == 2
    assert started["c"].session_id in {started["a"].session_id, started["b"].session_id}
    assert started["c"].pid in {started["a"].pid, started["b"].pid}
    assert pool.stats.cold == 0
    assert pool.stats.replaced == 0
    # One session served two tasks: c's first request continues the conversation of its
    # parent, and the model server's rules see each task's own turns.
    same = "a" if started["c"].session_id == started["a"].session_id else "b"
    turns = [(r["task"], r["turn"]) for r in run.requests if r["session"] == started[same].session_id]
    assert turns == [(same, 1), (same, 2), ("c", 1), ("c", 2)]
    # Handing c to a warm agent (task_started: its worktree is ready, the message goes in next)
    # is much faster than a CLI start measured in the same run; task_ready -> request too.
    handed_s = first_request_after(run, started["c"].session_id or "", started["c"].ts) - started["c"].ts
    ready_c = next(e.ts for e in run.of(TaskReady) if e.task_id == "c")
    ready_s = first_request_after(run, started["c"].session_id or "", ready_c) - ready_c
    cold_s = min(start.init_s for start in pool.stats.starts)
    assert handed_s < cold_s / 2, (handed_s, cold_s)
    assert ready_s < cold_s, (ready_s, cold_s)
    # Worktree tasks: each warm agent worked in its own worktree; the work merged as usual.
    branch = f"maos/{run.run_id}"
    assert git(work, "ls-tree", "--name-only", branch).split() == ["a.txt", "b.txt", "base.txt", "c.txt"]
    assert git(work, "show", f"{branch}:c.txt").startswith("c.txt by agent-")
    assert not (work / ".maos" / "worktrees" / run.run_id).exists()
    assert not (work / "a.txt").exists()
    # Per-task cost: the CLI's running total (the session's) is split between its tasks.
    costs = {task_id: t.usage.cost_usd if t.usage else 0.0 for task_id, t in run.state.tasks.items()}
    transcript = Path(run.state.tasks["c"].output_path).with_suffix(".jsonl").read_text().splitlines()
    session_total = json.loads(transcript[-1])["total_cost_usd"]
    assert costs[same] > 0
    assert costs["c"] > 0
    assert costs[same] + costs["c"] == pytest.approx(session_total)
    # The pool is closed: nothing of the run is left.
    for start in pool.stats.starts:
        assert_dead(start.pid)
    await no_process_left(run.run_id)


FIRST_TURN_SCRIPT = r"""
rules:
  - name: first-turn
    match: {turn: 1, last_user: '^\[MAOS task t, attempt 1\]'}
    reply: {text: "first turn of ${agent}"}
default: {text: "not a task's first turn"}
"""


@pytest.mark.claude
async def test_a_model_primed_warm_agent_serves_a_task_as_if_the_warm_up_never_happened(
    cli: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    run, pool = await run_warm(
        sqlite_store,
        tmp_path / "work",
        FIRST_TURN_SCRIPT,
        TaskSpec(id="t", prompt="say hi"),
        agents=1,
        warm=1,
        primer="model",
    )
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    assert pool.primer is Primer.MODEL
    assert (len(pool.stats.starts), pool.stats.failed_starts, pool.stats.cold) == (1, 0, 0)
    # The model server answered the warm-up turn itself, before the task's first request,
    # which the rules saw as turn 1 with the task's message as the last user text.
    [started] = run.of(TaskStarted)
    session = [r for r in run.requests if r["session"] == started.session_id]
    assert [(r["rule_name"], r["turn"]) for r in session] == [("warm_up", 1), ("first-turn", 1)]
    assert session[0]["last_user"].endswith(WARM_UP_MESSAGE)
    assert session[0]["received_at"] < started.ts < session[1]["received_at"]
    assert Path(run.state.tasks["t"].output_path).read_text() == "first turn of agent-1"
    # Its cost is the CLI's running total: the warm-up turn's cost included. Tokens are the
    # task's turn only (the result line's usage is per turn).
    warm_log = warm_dir(run.workdir, run.run_id) / f"{started.session_id}.jsonl"
    primed = [json.loads(line) for line in warm_log.read_text().splitlines()]
    # /cost, the warm-up turn, /cost again: the CLI's dear second turn is a free local one
    assert [line["type"] for line in primed].count("result") == 3
    primer_cost = [line for line in primed if line["type"] == "result"][-1]["total_cost_usd"]
    transcript = Path(run.state.tasks["t"].output_path).with_suffix(".jsonl").read_text().splitlines()
    task_line = json.loads(transcript[-1])
    usage = run.state.tasks["t"].usage
    assert usage is not None
    assert 0 < primer_cost < task_line["total_cost_usd"]
    assert usage.cost_usd == pytest.approx(task_line["total_cost_usd"])
    assert usage.input_tokens == task_line["usage"]["input_tokens"]
    await no_process_left(run.run_id)


@pytest.mark.claude
async def test_a_warm_agent_killed_with_sigkill_is_replaced_and_its_task_retried(
    cli: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    async def kill_it(url: str, pool: WarmPool) -> None:
        await until_requested(url, "hang")
        os.kill(pool.warm_agents()["agent-1"], signal.SIGKILL)

    run, pool = await run_warm(
        sqlite_store,
        tmp_path / "work",
        HANG_SCRIPT,
        TaskSpec(id="victim", prompt="hang on", max_attempts=2),
        agents=1,
        warm=1,
        during=kill_it,
    )
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    [failed] = run.of(TaskFailed)
    assert failed.attempt == 1
    assert "without a result line" in failed.reason
    first, second = run.of(TaskStarted)
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.pid != second.pid
    assert first.session_id != second.session_id
    # The replacement was started by the pool (not by a cold attempt).
    assert [start.pid for start in pool.stats.starts] == [first.pid, second.pid]
    assert pool.stats.cold == 0
    assert Path(run.state.tasks["victim"].output_path).read_text() == "second attempt"
    assert_dead(first.pid)
    assert_dead(second.pid)
    await no_process_left(run.run_id)


@pytest.mark.claude
async def test_cancelling_a_run_with_warm_agents_leaves_no_process(
    cli: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    async with running_model_server(parse_script(HANG_SCRIPT)) as url:
        orchestrator = orchestrator_for(
            sqlite_store, tmp_path / "work", url, TaskSpec(id="t", prompt="hang on"), agents=2, warm=2
        )
        pool = pool_of(orchestrator)
        run_task = asyncio.create_task(orchestrator.run())
        await until_requested(url, "hang")  # one agent busy, the other idle
        await pool.wait_ready()
        pids = pool.warm_agents()
        assert len(pids) == 2
        run_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run_task
    for pid in pids.values():
        assert_dead(pid)
    await no_process_left(orchestrator.run_id)


# --------------------------------------------------------------------------- a fake CLI

FAKE_CLI = r"""
import json, os, subprocess, sys
args = sys.argv[1:]
session = args[args.index("--session-id") + 1]
total = 0.0
for line in sys.stdin:
    text = json.loads(line)["message"]["content"]
    print(json.dumps({"type": "system", "subtype": "init", "session_id": session}), flush=True)
    if text != "/cost":
        total += 0.25
        print("fake stderr", file=sys.stderr, flush=True)
    if os.environ.get("FAKE_FAIL_ON", "\0") in text:  # as the CLI ends a turn after an API error
        print(json.dumps({
            "type": "result", "subtype": "success", "is_error": True, "session_id": session,
            "terminal_reason": "api_error", "api_error_status": 529,
            "result": "API Error: 529 Overloaded", "total_cost_usd": total,
        }), flush=True)
        continue
    if "die" in text:  # leaving a child that holds stdout and stderr open
        subprocess.Popen(["sleep", "60"])
        os._exit(3)
    task_file = os.environ.get("MAOS_TASK_FILE")  # warm; a cold process has MAOS_TASK_ID
    task = open(task_file).read().split()[0] if task_file else os.environ["MAOS_TASK_ID"]  # id, token
    print(json.dumps({
        "type": "result", "subtype": "success", "is_error": False, "session_id": session,
        "result": f"{task}|{os.getpid()}|{text.splitlines()[0]}", "total_cost_usd": total,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }), flush=True)
"""


def fake_cli(tmp_path: Path) -> Path:
    path = tmp_path / "fake-claude"
    path.write_text(f"#!{sys.executable}\n" + FAKE_CLI)
    path.chmod(0o755)
    return path


async def run_fake(
    store: Store,
    tmp_path: Path,
    *tasks: TaskSpec,
    warm: int = 1,
    primer: str = "local",
    env: dict[str, str] | None = None,
) -> tuple[Run, WarmPool]:
    work = tmp_path / "work"
    work.mkdir()
    config = RunConfig(agents=1, workdir=str(work), retry_base_s=0.01, retry_max_s=0.02, grace_s=1.0)
    runtime = ClaudeCodeRuntime(cli_path=fake_cli(tmp_path), env=env)
    plan = Plan(name="fake", tasks=tasks)
    orchestrator = Orchestrator(
        store, plan, config, runtimes={"claude-code": runtime}, warm=warm, warm_primer=primer
    )
    state = await orchestrator.run()
    events = [event async for _, event in EventLog(store, orchestrator.run_id).iterate()]
    return Run(state, events, [], orchestrator.run_id, work), pool_of(orchestrator)


def output(run: Run, task_id: str) -> list[str]:
    return Path(run.state.tasks[task_id].output_path).read_text().split("|")


async def test_a_warm_agent_serves_a_chain_its_door_follows_the_task_and_cost_is_split(
    sqlite_store: Store, tmp_path: Path
) -> None:
    run, pool = await run_fake(
        sqlite_store,
        tmp_path,
        TaskSpec(id="a", prompt="first"),
        TaskSpec(id="b", prompt="second", depends_on=("a",)),
    )
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    a, b = output(run, "a"), output(run, "b")
    assert (a[0], b[0]) == ("a", "b")  # MAOS_TASK_FILE named each task while it ran
    assert a[1] == b[1]  # one process
    assert (a[2], b[2]) == ("[MAOS task a, attempt 1]", "[MAOS task b, attempt 1]")
    assert [t.usage.cost_usd for t in run.state.tasks.values() if t.usage] == [0.25, 0.25]
    assert (pool.stats.waited, pool.stats.reused, pool.stats.cold, len(pool.stats.starts)) == (1, 1, 0, 1)
    assert_dead(int(a[1]))


async def test_other_settings_replace_the_warm_agent_and_a_budget_runs_cold(
    sqlite_store: Store, tmp_path: Path
) -> None:
    run, pool = await run_fake(
        sqlite_store,
        tmp_path,
        TaskSpec(id="a", prompt="first", model="sonnet"),
        TaskSpec(id="b", prompt="second", model="opus", depends_on=("a",)),
        TaskSpec(id="c", prompt="third", model="opus", depends_on=("b",), max_budget_usd=1.0),
        TaskSpec(id="d", prompt="fourth", model="opus", depends_on=("c",)),
    )
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    pids = {task_id: output(run, task_id)[1] for task_id in "abcd"}
    assert pids["a"] != pids["b"]  # another model: another process, started for b
    assert pids["c"] not in (pids["a"], pids["b"])  # the budgeted task ran in its own process
    assert pids["d"] not in (pids["a"], pids["b"], pids["c"])  # b's kind came back after c
    assert (pool.stats.replaced, pool.stats.cold) == (1, 1)
    assert len(pool.stats.starts) == 3  # a's (ahead), b's, and b's again after the cold c
    for pid in pids.values():
        assert_dead(int(pid))
    await no_process_left(run.run_id)


async def test_a_warm_agent_that_dies_in_a_task_is_reaped_at_once_and_its_last_words_kept(
    sqlite_store: Store, tmp_path: Path
) -> None:
    run, pool = await run_fake(sqlite_store, tmp_path, TaskSpec(id="x", prompt="die now", max_attempts=2))
    assert run.state.status is RunStatus.FAILED
    failed = run.of(TaskFailed)
    assert [e.attempt for e in failed] == [1, 2]
    assert all("exited (code 3) without a result line" in e.reason for e in failed)
    assert all(e.stderr_tail == "fake stderr" for e in failed)
    first, second = run.of(TaskStarted)
    assert first.pid != second.pid  # the retry ran on the replacement
    assert (pool.stats.waited, pool.stats.cold) == (2, 0)
    await no_process_left(run.run_id)


async def test_the_model_primer_s_cost_goes_to_the_agent_s_first_task(
    sqlite_store: Store, tmp_path: Path
) -> None:
    run, pool = await run_fake(
        sqlite_store,
        tmp_path,
        TaskSpec(id="a", prompt="first"),
        TaskSpec(id="b", prompt="second", depends_on=("a",)),
        primer="model",
    )
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    assert output(run, "a")[1] == output(run, "b")[1]  # one process, primed once
    # The fake CLI charges 0.25 per message that is not /cost: the warm-up turn is a's.
    assert [t.usage.cost_usd for t in run.state.tasks.values() if t.usage] == [0.5, 0.25]
    assert (len(pool.stats.starts), pool.stats.cold) == (1, 0)


async def test_a_warm_up_turn_that_fails_fails_the_start_and_the_task_runs_cold(
    sqlite_store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="maos.agents.pool"):
        run, pool = await run_fake(
            sqlite_store,
            tmp_path,
            TaskSpec(id="a", prompt="first"),
            primer="model",
            env={"FAKE_FAIL_ON": WARM_UP_MESSAGE},
        )
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    # The start ahead of the run and the two the task tried itself all failed; it ran cold.
    assert (len(pool.stats.starts), pool.stats.failed_starts, pool.stats.cold) == (0, 3, 1)
    assert output(run, "a")[0] == "a"  # a cold process: its MAOS_TASK_ID
    assert (
        "warm agent agent-1 did not start: its warm-up turn failed: model API error 529: "
        "API Error: 529 Overloaded"
    ) in caplog.messages
    await no_process_left(run.run_id)


def test_maos_run_warm_primer_model_reaches_the_pool(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: primed\ntasks:\n  - id: a\n    prompt: first\n")
    # A key, so the run's model check passes (the fake CLI calls no model).
    env = {**os.environ, "MAOS_CLAUDE_CLI": str(fake_cli(tmp_path)), "ANTHROPIC_API_KEY": "fake"}
    args = ["run", str(plan), "--warm", "1", "--warm-primer", "model", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "maos", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["tasks"]["a"]["cost_usd"] == 0.5  # the warm-up turn's 0.25 and its own
    [warm_log] = warm_dir(tmp_path, summary["run_id"]).glob("*.jsonl")
    results = [json.loads(line)["result"] for line in warm_log.read_text().splitlines() if '"result"' in line]
    assert [r.split("|")[2] for r in results] == ["/cost", WARM_UP_MESSAGE, "/cost"]


FAKE_LASTING_CLI = r"""
import json, os, sys, uuid
args = sys.argv[1:]
session = args[args.index("--session-id") + 1]
for line in sys.stdin:
    text = json.loads(line)["message"]["content"]
    if text == "/clear":
        session = str(uuid.uuid4())
    print(json.dumps({"type": "system", "subtype": "init", "session_id": session}), flush=True)
    print(json.dumps({
        "type": "result", "subtype": "success", "is_error": False, "session_id": session,
        "result": str(os.getpid()), "total_cost_usd": 0.0, "usage": {"input_tokens": 1, "output_tokens": 1},
    }), flush=True)
"""


async def test_a_lasting_agent_is_replaced_after_its_process_s_task_count_between_runs(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """``max_tasks_per_process``: a lasting pool's agent that has served that many tasks is
    replaced once its run is over (in place of its ``/clear``), not in the next run's middle."""
    from maos.worker import StoreWorker

    cli = tmp_path / "fake-claude"
    cli.write_text(f"#!{sys.executable}\n" + FAKE_LASTING_CLI)
    cli.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    pool = WarmPool(ClaudeCodeRuntime(cli_path=cli), size=1, max_tasks_per_process=2)
    worker = StoreWorker(sqlite_store, {"claude-code": pool}, name="lasting", capacity=1, workdir=work)
    serving = asyncio.create_task(worker.run())
    config = RunConfig(agents=1, workdir=str(work), workers_only=True, grace_s=1.0)
    pids: list[str] = []
    try:
        for n in range(3):
            orchestrator = Orchestrator(
                sqlite_store, Plan(name="one", tasks=(TaskSpec(id="t", prompt=f"run {n}"),)), config
            )
            state = await asyncio.wait_for(orchestrator.run(), 60)
            assert state.status is RunStatus.SUCCEEDED, state.summary
            pids.append(Path(state.tasks["t"].output_path).read_text())
            await asyncio.sleep(1.5)  # the worker clears (or replaces) the agent of a run that is over
    finally:
        worker.request_stop()
        await asyncio.wait_for(serving, 60)
    assert pids[0] == pids[1] != pids[2], pids  # two tasks on the first process, then its replacement
    assert (pool.stats.retired, len(pool.stats.starts)) == (1, 2)  # replaced once, between runs 2 and 3
    for pid in pids:
        assert_dead(int(pid))
