"""A warm pool that outlives its runs (``maos serve``, ``maos worker --warm``; ADR 0017), with
the real Claude Code CLI against the scripted model server, every part its own process as a
user would run it: ``maos serve --warm 2``, then ``maos run`` twice in the same directory.

Lean on purpose: one serve, two CLI starts, two runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil

from maos.cli.serve_cmd import LiveServe, _live_serve
from maos.eventlog import EventLog
from maos.events import DoorRefused, Event, StateWritten, TaskStarted
from maos.modelserver import parse_script, running_model_server
from maos.store import keys, open_store
from tests.claude.conftest import assert_dead

MAOS = [sys.executable, "-m", "maos"]
RUN_ID = re.compile(r"run (\d{8}-\d{6}-[0-9a-f]{4}) (?:\x1b\[[0-9;]*m)*succeeded")  # bold if colour is forced

SCRIPT = r"""
rules:
  - name: stored
    match: {tool_result: '"version"'}
    reply: {text: "Stored it."}
  - name: store
    match: {last_user: 'store (?P<key>\S+)', tool_result: false}
    reply:
      tool_calls:
        - name: mcp__maos__state_set
          input: {key: "${key}", value: {task: "${task}"}}
"""

PLAN = """
name: lasting
tasks:
  - {id: one, prompt: "Please store seen/one", isolation: none, timeout_s: 120}
  - {id: two, prompt: "Please store seen/two", isolation: none, timeout_s: 120}
"""


async def maos_run(workdir: Path, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *MAOS, "run", "plan.yaml", "--agents", "2", cwd=workdir, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    return proc.returncode or 0, out.decode(errors="replace")


async def collect(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while line := await stream.readline():
        lines.append(line.decode(errors="replace"))


async def until_cleared(lines: list[str], run_id: str, count: int) -> set[str]:
    """The new sessions of the ``count`` agents serve clears once ``run_id`` is over (its log)."""
    pattern = re.compile(rf"cleared its conversation, run {run_id} being over: session (\S+)")
    for _ in range(600):
        sessions = {found.group(1) for line in lines if (found := pattern.search(line))}
        if len(sessions) >= count:
            return sessions
        await asyncio.sleep(0.1)
    raise AssertionError("serve did not clear its agents after the run:\n" + "".join(lines))


async def until_ready(workdir: Path, size: int) -> LiveServe:
    for _ in range(1200):
        found = await _live_serve(None, workdir)
        if found is not None and found.idle == size:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError("maos serve did not get its agents warm")


async def run_events(workdir: Path) -> dict[str, list[Event]]:
    """Every run's events in the directory's store, by run id."""
    store = await open_store(f"sqlite:///{workdir / '.maos' / 'maos.db'}")
    try:
        runs = [
            kv.key.removeprefix(keys.RUN_RECORD_PREFIX) for kv in await store.scan(keys.RUN_RECORD_PREFIX)
        ]
        return {run_id: [event async for _, event in EventLog(store, run_id).iterate()] for run_id in runs}
    finally:
        await store.close()


def environ_of(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


async def test_two_runs_share_the_warm_agents_of_serve_and_not_each_other(tmp_path: Path) -> None:
    workdir = tmp_path / "repo"
    workdir.mkdir()
    (workdir / "plan.yaml").write_text(PLAN)
    async with running_model_server(parse_script(SCRIPT)) as url:
        env = {**os.environ, "MAOS_ANTHROPIC_BASE_URL": url}
        env.pop("MAOS_STORE", None)
        serve = await asyncio.create_subprocess_exec(
            *MAOS, "-v", "serve", "--warm", "2", "--name", "lasting-test", "--lease-s", "3",
            cwd=workdir, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        assert serve.stderr is not None
        log_lines: list[str] = []
        reader = asyncio.create_task(collect(serve.stderr, log_lines))
        try:
            await until_ready(workdir, 2)
            warm_pids = {child.pid for child in psutil.Process(serve.pid).children()}
            assert len(warm_pids) == 2, warm_pids
            for pid in warm_pids:  # nothing of any run in the warm CLI's own environment
                run_bound = [v for v in environ_of(pid) if v.startswith(b"MAOS_") and b"MAOS_GUARD=" not in v]
                assert run_bound == [], pid

            code_a, out_a = await maos_run(workdir, env)
            assert code_a == 0, out_a
            assert "sending the tasks to maos serve lasting-test" in out_a
            # Between runs: the warm agents' tokens act for nobody, their task.env is empty.
            files = workdir / ".maos" / "warm" / "lasting-test"
            for task_env in files.glob("warm-*/task.env"):
                assert task_env.read_text() == ""
            entry: dict[str, Any] = json.loads(next(files.glob("warm-1/claude/mcp/*.json")).read_text())
            door = entry["mcpServers"]["maos"]
            async with httpx.AsyncClient() as client:  # the token still connects, acts for no one
                call = {"name": "state_get", "arguments": {"key": "seen/one"}}
                refused = await client.post(
                    door["url"],
                    headers={**door["headers"], "accept": "application/json, text/event-stream"},
                    json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call},
                )
            assert "has no task now" in refused.text, refused.text
            # Run A is over: serve clears both agents' conversations now, not at run B's tasks.
            run_a = RUN_ID.search(out_a)
            assert run_a is not None, out_a
            cleared = await until_cleared(log_lines, run_a.group(1), 2)

            code_b, out_b = await maos_run(workdir, env)
            assert code_b == 0, out_b
        finally:
            serve.send_signal(signal.SIGTERM)
            await asyncio.wait_for(serve.wait(), 60)
            await asyncio.wait_for(reader, 10)
        err = "".join(log_lines).encode()
        assert serve.returncode == 0, err.decode(errors="replace")
    for pid in warm_pids:  # SIGTERM left no CLI behind
        assert_dead(pid)
    assert "has no task now" in err.decode(errors="replace")  # the refusal is in serve's log
    assert not (workdir / ".maos" / "warm" / "lasting-test").exists()

    runs = await run_events(workdir)
    assert len(runs) == 2
    used: list[set[int]] = []
    for run_id, events in runs.items():
        started = {e.task_id: e for e in events if isinstance(e, TaskStarted)}
        assert set(started) == {"one", "two"}, run_id
        used.append({e.pid for e in started.values()})
        assert not [e for e in events if isinstance(e, DoorRefused)], run_id
        # Each door call acted as the run's own agent of that task (the bound identity).
        written = {e.key: e for e in events if isinstance(e, StateWritten)}
        assert set(written) == {"seen/one", "seen/two"}, run_id
        for task in ("one", "two"):
            assert written[f"seen/{task}"].task == task
            assert written[f"seen/{task}"].agent_id == started[task].agent_id
    # Both runs were served by the warm CLIs that were started before the first.
    assert used[0] <= warm_pids
    assert used[1] <= warm_pids
    # Run B's tasks started in the conversations cleared after run A: no /clear on their way.
    run_b = RUN_ID.search(out_b)
    assert run_b is not None, out_b
    sessions_b = {e.session_id for e in runs[run_b.group(1)] if isinstance(e, TaskStarted)}
    assert sessions_b == cleared, (sessions_b, cleared)
    store = await open_store(f"sqlite:///{workdir / '.maos' / 'maos.db'}")
    try:
        assert await store.get(keys.warm_agents("lasting-test")) is None  # it said it left
    finally:
        await store.close()


async def test_the_tasks_an_agent_is_replaced_after_are_counted_per_conversation(tmp_path: Path) -> None:
    """An agent is replaced after 10 tasks of one conversation (ADR 0005): in a lasting pool the
    ``/clear`` between runs starts a new one, so two runs of 6 tasks each are served by the same
    CLI. Counted over the process's life, it was replaced after run B's fourth task (a CLI start
    in the middle of the run it served)."""
    workdir = tmp_path / "repo"
    workdir.mkdir()
    chain = ["name: chain", "tasks:", "  - {id: t1, prompt: 'step 1', isolation: none, timeout_s: 120}"]
    chain += [
        f"  - {{id: t{n}, prompt: 'step {n}', isolation: none, timeout_s: 120, depends_on: [t{n - 1}]}}"
        for n in range(2, 7)
    ]
    (workdir / "plan.yaml").write_text("\n".join(chain) + "\n")
    async with running_model_server(parse_script('default: {text: "done"}\n')) as url:
        env = {**os.environ, "MAOS_ANTHROPIC_BASE_URL": url}
        env.pop("MAOS_STORE", None)
        serve = await asyncio.create_subprocess_exec(
            *MAOS, "serve", "--warm", "1", "--name", "chain-test", cwd=workdir, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            await until_ready(workdir, 1)
            for _ in range(2):
                code, out = await maos_run(workdir, env)
                assert code == 0, out
                assert "sending the tasks to maos serve chain-test" in out
        finally:
            serve.send_signal(signal.SIGTERM)
            await asyncio.wait_for(serve.wait(), 60)
    runs = await run_events(workdir)
    assert len(runs) == 2
    pids = {e.pid for events in runs.values() for e in events if isinstance(e, TaskStarted)}
    sessions = [{e.session_id for e in events if isinstance(e, TaskStarted)} for events in runs.values()]
    assert len(pids) == 1, pids  # one CLI served all 12 tasks
    assert [len(each) for each in sessions] == [1, 1], sessions  # one conversation per run
    assert sessions[0] != sessions[1]  # cleared in between
