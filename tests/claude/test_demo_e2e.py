"""End to end, as `make demo` runs it: a task in words, the planner, six Claude Code agents
(four at once) writing real files in their worktrees, shared state and a message through the
door, a tester running pytest through Bash, merges into the integration branch."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from maos.eventlog import EventLog
from maos.events import MessageSent, MessagesRead, StateWritten, TaskStarted, TaskSucceeded
from maos.modelserver import load_script, running_model_server
from maos.store import open_store

ROOT = Path(__file__).resolve().parents[2]
TASK = "Create a small Python package with a module, its tests and its docs"
FILES = {
    "design": "DESIGN.md",
    "module": "textstats/core.py",
    "tests": "tests/test_core.py",
    "cli": "textstats/__main__.py",
    "docs": "README.md",
    "review": "REVIEW.md",
    "synthesize": "SYNTHESIS.md",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def overlapping_agents(requests: list[dict[str, Any]]) -> set[str]:
    """Agents with a model request in flight while another agent's was."""
    spans = [
        (r["received_at"], r["answered_at"], r["agent"]) for r in requests if r["agent"] and r["answered_at"]
    ]
    found: set[str] = set()
    for start, end, agent in spans:
        for other_start, other_end, other in spans:
            if other != agent and other_start < end and start < other_end:
                found |= {agent, other}
    return found


async def run_demo(tmp_path: Path, *options: str) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    """`maos run TASK --agents 6 OPTIONS` in a fresh git project against the demo's script:
    the project, the run's JSON summary and the model server's request log."""
    work = tmp_path / "project"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "README.md").write_text("# textstats\n")
    git(work, "add", "README.md")
    git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "empty")
    async with running_model_server(load_script(ROOT / "src/maos/examples/demo/model-script.yaml")) as url:
        env = {**os.environ, "MAOS_ANTHROPIC_BASE_URL": url}
        env.pop("ANTHROPIC_API_KEY", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "maos", "run", TASK, "--agents", "6", "--json", *options,
            cwd=work, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 240)
        async with httpx.AsyncClient(base_url=url) as client:
            requests = (await client.get("/requests")).json()["requests"]
    assert proc.returncode == 0, err.decode()[-3000:]
    summary = json.loads(out)
    assert summary["counts"] == {"succeeded": 8}
    return work, summary, requests


@pytest.mark.claude
async def test_the_demo_team_builds_a_tested_package(cli: Path, tmp_path: Path) -> None:
    work, summary, requests = await run_demo(tmp_path)
    run_id = summary["run_id"]

    # the planner answered first, then the team; four agents worked at once
    assert requests[0]["agent"] == "maos-planner"
    agents = {task["agent"] for task in summary["tasks"].values()}
    assert len(agents) == 6
    assert len(overlapping_agents(requests[1:])) >= 4

    # every agent's work was merged into the integration branch, file by file; the task
    # branches were deleted once merged (one branch per run is left)
    history = git(work, "log", "--format=%s", f"maos/{run_id}")
    for task_id in FILES:
        assert f"maos: merge {task_id}" in history
    merged = git(work, "ls-tree", "-r", "--name-only", f"maos/{run_id}").split()
    assert set(FILES.values()) <= set(merged)
    assert not git(work, "branch", "--list", f"maos/tasks/{run_id}/*").strip()
    assert not (work / "textstats").exists()  # the user's checkout is untouched

    # the tester really ran pytest on the merged code through Bash
    assert summary["tasks"]["test-run"]["state"] == "succeeded"
    test_run = [r for r in requests if r["rule_name"] == "test-run-passed"]
    assert len(test_run) == 1

    store = await open_store(f"sqlite:///{work / '.maos/maos.db'}")
    try:
        events = [e async for _, e in EventLog(store, run_id).iterate()]
    finally:
        await store.close()
    agent_of = {task_id: task["agent"] for task_id, task in summary["tasks"].items()}
    # shared state: the designer wrote 'api', the implementer read it through the door
    assert [(e.agent_id, e.key) for e in events if isinstance(e, StateWritten)] == [
        (agent_of["design"], "api")
    ]
    module_read = [r for r in requests if r["rule_name"] == "module-2"]
    assert module_read
    assert module_read[0]["tool_result"]
    # a message: docs -> the review task, read by the review agent
    [sent] = [e for e in events if isinstance(e, MessageSent)]
    assert (sent.agent_id, sent.to) == (agent_of["docs"], "task@review")
    assert [e.agent_id for e in events if isinstance(e, MessagesRead)] == [agent_of["review"]]
    review = git(work, "show", f"maos/{run_id}:REVIEW.md")
    assert "Docs ready: please check README.md against DESIGN.md." in review
    # each task's session id, cost and tokens are in the log
    started = {e.task_id: e for e in events if isinstance(e, TaskStarted)}
    for task_id in FILES:
        assert started[task_id].session_id
        [done] = [e for e in events if isinstance(e, TaskSucceeded) and e.task_id == task_id]
        assert done.usage is not None
        assert done.usage.cost_usd > 0
        assert done.usage.input_tokens > 0
        assert done.usage.output_tokens > 0
    report = (work / ".maos" / "runs" / run_id / "REPORT.md").read_text()
    assert "pytest: 3 passed." in report


@pytest.mark.claude
async def test_the_demo_runs_the_same_with_warm_agents(cli: Path, tmp_path: Path) -> None:
    """With --warm, agents get tasks as messages in one long conversation: the demo's script
    (rules keyed on `task` and `turn`) must still drive every task."""
    work, summary, requests = await run_demo(tmp_path, "--warm", "6", "--warm-primer", "model")
    run_id = summary["run_id"]
    assert [r["rule_name"] for r in requests].count("warm_up") == 6
    team = [r for r in requests if r["agent"] != "maos-planner" and r["rule_name"] != "warm_up"]
    assert all(r["rule_name"] is not None for r in team), [r for r in team if r["rule_name"] is None]
    assert [r["rule_name"] for r in team].count("test-run-passed") == 1
    merged = git(work, "ls-tree", "-r", "--name-only", f"maos/{run_id}").split()
    assert set(FILES.values()) <= set(merged)
    report = (work / ".maos" / "runs" / run_id / "REPORT.md").read_text()
    assert "pytest: 3 passed." in report
