"""Consensus with real Claude Code agents: majority over two agreeing answers, and a judge
agent that scores the proposals."""

from __future__ import annotations

from pathlib import Path

import pytest

from maos.events import ConsensusDecided, ConsensusVote
from maos.model import RunStatus, TaskSpec
from maos.store.base import Store
from tests.claude.conftest import run_plan

ANSWERS = """
rules:
  - name: judge
    match: {last_user: 'You are the judge'}
    reply:
      text: >-
        {"scores": [{"proposal": 1, "score": 4, "reason": "vague"},
        {"proposal": 2, "score": 9, "reason": "precise"}, {"proposal": 3, "score": 6, "reason": "ok"}]}
  - name: r1
    match: {system: 'working on task capital\\.r1[ ,]'}
    reply: {text: "Paris"}
  - name: r2
    match: {system: 'working on task capital\\.r2[ ,]'}
    reply: {text: "paris."}
  - name: r3
    match: {system: 'working on task capital\\.r3[ ,]'}
    reply: {text: "Lyon"}
"""


@pytest.mark.claude
async def test_majority_picks_the_two_agreeing_answers(
    cli: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    run = await run_plan(
        sqlite_store,
        tmp_path / "work",
        ANSWERS,
        TaskSpec(id="capital", prompt="What is the capital of France?", replicas=3, isolation="none"),
        agents=3,
    )
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    [decided] = run.of(ConsensusDecided)
    assert decided.strategy == "majority"
    assert decided.winner == "capital.r1"
    assert decided.tally == {"paris": 2.0, "lyon": 1.0}
    assert Path(run.state.tasks["capital"].output_path).read_text().strip() == "Paris"
    agents = {run.state.tasks[f"capital.r{n}"].agent_id for n in (1, 2, 3)}
    assert len(agents) == 3  # three agents answered, in parallel


@pytest.mark.claude
async def test_the_judge_picks_the_higher_scored_proposal(
    cli: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    run = await run_plan(
        sqlite_store,
        tmp_path / "work",
        ANSWERS,
        TaskSpec(
            id="capital",
            prompt="What is the capital of France?",
            replicas=3,
            consensus="judge",
            isolation="none",
        ),
        agents=3,
    )
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    [decided] = run.of(ConsensusDecided)
    assert (decided.strategy, decided.winner) == ("judge", "capital.r2")
    scores = {vote.replica: vote.score for vote in run.of(ConsensusVote)}
    assert scores == {"capital.r1": 4.0, "capital.r2": 9.0, "capital.r3": 6.0}
    assert Path(run.state.tasks["capital"].output_path).read_text().strip() == "paris."
    assert [r["rule_name"] for r in run.requests].count("judge") == 1
