"""A declared team with real Claude Code agents: a reviewer and three coders, each task on an
agent of its kind, the fitness scores in ``maos status --json``, and a weighted consensus that
counts each agent's vote by its role's history."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from maos.agents.claude_code import ClaudeCodeRuntime
from maos.agents.command import CommandRuntime
from maos.agents.runtime import AgentRuntime
from maos.eventlog import EventLog
from maos.events import ConsensusDecided, ConsensusVote
from maos.model import Plan, RunConfig, RunStatus, TaskSpec, TeamMember
from maos.modelserver import parse_script, running_model_server
from maos.orchestrator import Orchestrator, RunOptions
from maos.scheduler import History
from maos.store.base import Store

REVIEWER = """---
name: reviewer
description: Reviews changes for correctness.
tools: Read, Grep
---
You are a meticulous reviewer.
"""
CODER = """---
name: coder
description: Implements features.
tools: Read, Write, Edit, Bash
---
You write code.
"""
SCRIPT = """
rules:
  - name: reviewer-answers
    match: {agent: reviewer}
    reply: {text: "Lyon"}
  - name: coder-answers
    match: {agent: 'coder-\\d'}
    reply: {text: "Paris"}
"""


def _history() -> History:
    """The reviewer role was right 9 times of 10 on this kind of question, coders once."""
    history = History()
    for role, wins in (("reviewer", 9), ("coder", 1)):
        for number in range(10):
            history = history.record(role, "answer", succeeded=number < wins, duration_s=1.0)
    return history


@pytest.mark.claude
async def test_a_team_places_tasks_by_role_and_weights_votes_by_history(
    cli: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    (work / ".claude" / "agents").mkdir(parents=True)
    (work / ".claude" / "agents" / "reviewer.md").write_text(REVIEWER)
    (work / ".claude" / "agents" / "coder.md").write_text(CODER)
    plan = Plan(
        name="team",
        agents=(TeamMember(role="reviewer"), TeamMember(role="coder", count=3)),
        tasks=(
            TaskSpec(id="code-a", role="coder", capabilities=("edit",), prompt="write a", isolation="none"),
            TaskSpec(id="code-b", role="coder", capabilities=("edit",), prompt="write b", isolation="none"),
            TaskSpec(
                id="review",
                role="reviewer",
                capabilities=("review",),
                depends_on=("code-a", "code-b"),
                prompt="review a and b",
                isolation="none",
            ),
            TaskSpec(
                id="capital",
                kind="answer",
                prompt="What is the capital of France?",
                depends_on=("review",),
                replicas=3,
                consensus="weighted",
                isolation="none",
            ),
        ),
    )
    config = RunConfig(agents=4, workdir=str(work), retry_base_s=0.05, retry_max_s=0.2, grace_s=1.0)
    async with running_model_server(parse_script(SCRIPT)) as url:
        runtimes: dict[str, AgentRuntime] = {
            "command": CommandRuntime(),
            "claude-code": ClaudeCodeRuntime(base_url=url),
        }
        orchestrator = Orchestrator(
            sqlite_store, plan, config, runtimes=runtimes, options=RunOptions(history=_history())
        )
        state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert [agent.id for agent in orchestrator.agents] == ["reviewer", "coder-1", "coder-2", "coder-3"]
    reviewer = state.agents["reviewer"]
    assert "review" in reviewer.capabilities
    assert "edit" not in reviewer.capabilities

    # Each task on an agent of its kind: capabilities are a hard filter.
    assert state.tasks["review"].agent_id == "reviewer"
    assert {state.tasks["code-a"].agent_id, state.tasks["code-b"].agent_id} <= {
        "coder-1",
        "coder-2",
        "coder-3",
    }

    # Weighted consensus: the reviewer's one vote (history 10/12) beats two coders' (2/12 each).
    events = [event async for _, event in EventLog(sqlite_store, orchestrator.run_id).iterate()]
    votes = {vote.replica: vote for vote in events if isinstance(vote, ConsensusVote)}
    by_agent = {state.tasks[replica].agent_id: vote for replica, vote in votes.items()}
    assert len(by_agent) == 3
    assert "reviewer" in by_agent
    assert by_agent["reviewer"].weight == pytest.approx(10 / 12)
    assert sorted(vote.weight for agent, vote in by_agent.items() if agent != "reviewer") == pytest.approx(
        [2 / 12, 2 / 12]
    )
    [decided] = [event for event in events if isinstance(event, ConsensusDecided)]
    assert decided.strategy == "weighted"
    assert state.tasks[decided.winner].agent_id == "reviewer"
    assert Path(state.tasks["capital"].output_path).read_text().strip() == "Lyon"

    # `maos status --json` says why each task went where it did.
    shown = subprocess.run(
        [sys.executable, "-m", "maos", "status", orchestrator.run_id, "--store", sqlite_store.url, "--json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=work,
    )
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    review = summary["tasks"]["review"]
    assert review["agent"] == "reviewer"
    fitness = review["fitness"]
    assert set(fitness) == {"capability", "workload", "history", "total", "candidates"}
    assert fitness["capability"] == 1.0
    assert fitness["candidates"] == 1
    assert fitness["total"] == pytest.approx(
        0.4 * fitness["capability"] + 0.3 * fitness["workload"] + 0.3 * fitness["history"]
    )
    assert summary["agents"]["coder-2"]["role"] == "coder"
    assert "edit" in summary["agents"]["coder-2"]["capabilities"]
