"""How Claude agents reach the door (ADR 0015), with the real CLI through the real
orchestrator against the scripted model server: by default one MCP endpoint over HTTP that
the orchestrator serves to all its agents, each with a token of its own; with
``--door-transport stdio`` (``MAOS_DOOR_TRANSPORT=stdio``) a ``maos mcp`` process per agent."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from maos.eventlog import EventLog
from maos.events import DoorRefused, ResultPublished, StateWritten
from maos.model import TaskSpec
from maos.modelserver import parse_script, running_model_server
from maos.state import SharedState
from maos.store import open_store
from maos.store.base import Store
from tests.claude.conftest import Run, run_plan

pytestmark = pytest.mark.claude

MAOS = [sys.executable, "-m", "maos"]

SCRIPT = r"""
rules:
  - name: after-the-result
    match: {tool_result: '"files": ?0'}
    reply: {text: "Done, ${agent}."}
  - name: publish
    match: {tool_result: '"version": ?1'}
    reply:
      tool_calls:
        - name: mcp__maos__publish_result
          input: {summary: "stored by ${agent}"}
  - name: store
    match: {tools: 'mcp__maos__state_set', last_user: 'store your name', tool_result: false}
    reply:
      tool_calls:
        - name: mcp__maos__state_set
          input: {key: "names/${agent}", value: {from: "${agent}"}}
"""

TASKS = (
    TaskSpec(id="one", prompt="Please store your name", isolation="none", timeout_s=120),
    TaskSpec(id="two", prompt="Please store your name", isolation="none", timeout_s=120),
)


def door_entries(run: Run) -> list[dict[str, Any]]:
    """The door entry of each MCP config the run's agents got (0600 files)."""
    entries = []
    for path in sorted((run.workdir / ".maos").rglob("mcp/*.json")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        entries.append(json.loads(path.read_text())["mcpServers"]["maos"])
    return entries


def init_lines(run: Run) -> list[dict[str, Any]]:
    """The CLI's ``system/init`` line of each attempt: which MCP servers it connected to."""
    found = []
    for path in sorted((run.workdir / ".maos").rglob("outputs/*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("type") == "system" and record.get("subtype") == "init":
                found.append(record)
    return found


async def check_results(run: Run, store: Store) -> None:
    assert run.state.status.value == "succeeded", run.state.summary
    agents = {task_id: run.state.tasks[task_id].agent_id for task_id in ("one", "two")}
    assert sorted(agents.values()) == ["agent-1", "agent-2"]  # in parallel, one agent each
    written = sorted((e.agent_id, e.task, e.key) for e in run.of(StateWritten))
    assert written == sorted((agent, task, f"names/{agent}") for task, agent in agents.items())
    published = sorted((e.agent_id, e.task, e.summary) for e in run.of(ResultPublished))
    assert published == sorted((agent, task, f"stored by {agent}") for task, agent in agents.items())
    assert not run.of(DoorRefused)
    state = SharedState(store, run.run_id)
    for agent in agents.values():
        entry = await state.get(f"names/{agent}")
        assert entry is not None
        assert entry.value == {"from": agent}
    for init in init_lines(run):
        assert [(m["name"], m["status"]) for m in init["mcp_servers"]] == [("maos", "connected")]
    assert len(init_lines(run)) == 2
    # Tool search is on (ADR 0020): rarely used built-ins are deferred, the door's tools are
    # in every request in full (its entry says alwaysLoad), so the scripted direct calls above
    # reached the door.
    for request in run.requests:
        assert {"mcp__maos__state_set", "mcp__maos__publish_result", "ToolSearch"} <= set(request["tools"])
        assert "WebSearch" not in request["tools"]


async def test_agents_share_one_http_endpoint_each_with_its_own_token(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAOS_DOOR_TRANSPORT", raising=False)
    run = await run_plan(sqlite_store, tmp_path / "work", SCRIPT, *TASKS, agents=2)
    await check_results(run, sqlite_store)
    entries = door_entries(run)
    assert [entry["type"] for entry in entries] == ["http", "http"]
    assert [entry["alwaysLoad"] for entry in entries] == [True, True]
    assert len({entry["url"] for entry in entries}) == 1  # one endpoint
    assert len({entry["headers"]["Authorization"] for entry in entries}) == 2  # a token each
    # No agent had a door process of its own: nothing in its config starts one.
    assert not [entry for entry in entries if "command" in entry]


async def test_the_stdio_fallback_starts_a_door_process_per_agent(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAOS_DOOR_TRANSPORT", "stdio")
    run = await run_plan(sqlite_store, tmp_path / "work", SCRIPT, *TASKS, agents=2)
    await check_results(run, sqlite_store)
    entries = door_entries(run)
    assert [entry["args"] for entry in entries] == [["-m", "maos", "mcp"]] * 2
    assert [entry["alwaysLoad"] for entry in entries] == [True, True]
    assert sorted(entry["env"]["MAOS_AGENT_ID"] for entry in entries) == ["agent-1", "agent-2"]


async def test_a_worker_serves_the_door_to_its_own_agents(tmp_path: Path) -> None:
    """``maos run --workers-only`` hands the tasks to a ``maos worker``, whose agents reach
    the door through the worker's own endpoint."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: workers\ntasks:\n"
        + "".join(
            f"  - {{id: {task.id}, prompt: '{task.prompt}', isolation: none, timeout_s: 120}}\n"
            for task in TASKS
        )
    )
    store = f"sqlite:///{tmp_path / 'maos.db'}"
    async with running_model_server(parse_script(SCRIPT)) as url:
        env = {**os.environ, "MAOS_ANTHROPIC_BASE_URL": url}
        env.pop("MAOS_DOOR_TRANSPORT", None)
        bad = await asyncio.create_subprocess_exec(
            *MAOS, "worker", "--store", store, "--door-transport", "pigeon",
            env={**env, "COLUMNS": "200"}, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await bad.communicate()
        assert bad.returncode == 2
        assert "'--door-transport': door transport 'pigeon': expected http or stdio" in err.decode()
        worker = await asyncio.create_subprocess_exec(
            *MAOS, "worker", "--store", store, "--capacity", "2", "--door-transport", "http",
            env=env, cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            run = await asyncio.create_subprocess_exec(
                *MAOS, "run", "plan.yaml", "--store", store, "--workers-only", "--agents", "2", "--json",
                env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            async with asyncio.timeout(180):
                out, err = await run.communicate()
            assert run.returncode == 0, err.decode()[-2000:]
        finally:
            worker.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                _, worker_err = await worker.communicate()
        assert worker.returncode == 0, worker_err.decode()[-2000:]
    run_id = json.loads(out)["run_id"]
    opened = await open_store(store)
    try:
        events = [event async for _, event in EventLog(opened, run_id).iterate()]
        written = sorted((e.agent_id, e.key) for e in events if isinstance(e, StateWritten))
        assert written == [("agent-1", "names/agent-1"), ("agent-2", "names/agent-2")]
        assert not [e for e in events if isinstance(e, DoorRefused)]
    finally:
        await opened.close()
    entries = [json.loads(p.read_text())["mcpServers"]["maos"] for p in tmp_path.rglob("mcp/*.json")]
    assert [entry["type"] for entry in entries] == ["http", "http"]
    assert [entry["alwaysLoad"] for entry in entries] == [True, True]
