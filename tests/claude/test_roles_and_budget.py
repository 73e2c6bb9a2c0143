"""Agent roles from .claude/agents and the run's cost budget, with the real Claude Code CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from maos.model import RunStatus, TaskSpec, TaskState
from maos.store.base import Store
from tests.claude.conftest import run_plan

REVIEWER = """---
name: reviewer
description: Reviews changes for correctness.
tools: Read, Grep
model: sonnet
---
You are a meticulous reviewer. Report every defect with its file and line.
"""

TEXT_SCRIPT = """
rules:
  - match: {}
    reply:
      text: "done by ${agent}"
      usage: {input_tokens: 100000, output_tokens: 10000}
"""


@pytest.mark.claude
async def test_a_plan_task_runs_as_the_reviewer_role(cli: Path, sqlite_store: Store, tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / ".claude" / "agents").mkdir(parents=True)
    (work / ".claude" / "agents" / "reviewer.md").write_text(REVIEWER)
    run = await run_plan(
        sqlite_store, work, TEXT_SCRIPT, TaskSpec(id="review", role="reviewer", prompt="review the change")
    )
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    [request] = [r for r in run.requests if r["path"].startswith("/v1/messages")]
    assert "You are a meticulous reviewer." in request["system_tail"]
    assert "Read" in request["tools"]
    assert "Grep" in request["tools"]
    assert "Write" not in request["tools"]
    assert "Bash" not in request["tools"]
    assert request["model"].startswith("claude-sonnet")


@pytest.mark.claude
async def test_max_cost_stops_starting_tasks_and_says_so(
    cli: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    from maos.model import Plan, RunConfig
    from maos.orchestrator import Orchestrator

    work = tmp_path / "work"
    work.mkdir()
    chain = [TaskSpec(id="t0", prompt="go")] + [
        TaskSpec(id=f"t{n}", prompt="go", depends_on=(f"t{n - 1}",)) for n in range(1, 4)
    ]
    # One task costs the same each time; find it, then allow a little more than one task's worth.
    probe = await run_plan(sqlite_store, work / "probe", TEXT_SCRIPT, chain[0])
    one = probe.state.usage().cost_usd
    assert one > 0

    from maos.agents.claude_code import ClaudeCodeRuntime
    from maos.modelserver import parse_script, running_model_server

    config = RunConfig(agents=1, workdir=str(work), max_cost_usd=one * 1.5)
    async with running_model_server(parse_script(TEXT_SCRIPT)) as url:
        runtimes = {"claude-code": ClaudeCodeRuntime(base_url=url)}
        state = await Orchestrator(
            sqlite_store, Plan(name="budget", tasks=tuple(chain)), config, runtimes=runtimes
        ).run()
    assert state.status is RunStatus.CANCELLED
    assert [state.tasks[f"t{n}"].state for n in range(4)] == [
        TaskState.SUCCEEDED,
        TaskState.SUCCEEDED,
        TaskState.CANCELLED,
        TaskState.CANCELLED,
    ]
    assert "budget reached" in state.summary
    assert "2 task(s) did not run" in state.summary
    assert state.usage().cost_usd >= one * 1.5
