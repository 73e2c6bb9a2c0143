"""Consensus over replicas: majority, weighted by history, quorum, determinism on replay."""

from __future__ import annotations

from pathlib import Path

import pytest

from maos.consensus import count_votes, expand_replicas, normalize, parse_scores
from maos.errors import PlanError
from maos.eventlog import EventLog
from maos.events import ConsensusDecided, ConsensusVote
from maos.model import AgentSpec, Plan, RunConfig, RunStatus, TaskSpec, TaskState
from maos.orchestrator import Orchestrator, RunOptions
from maos.scheduler import History
from maos.store.base import Store

BY_REPLICA = 'case "$MAOS_TASK_ID" in *.r1) echo "Paris";; *.r2) echo " paris. ";; *) echo "Lyon";; esac'
READ_PARENT = "import json,os; print(open(json.loads(os.environ['MAOS_INPUTS'])['capital']).read().strip())"
CHILD = ("python3", "-c", READ_PARENT)


def test_expansion_and_pure_voting() -> None:
    plan = expand_replicas(Plan(name="p", tasks=(TaskSpec(id="q", command="true", replicas=3),)))
    assert [t.id for t in plan.tasks] == ["q.r1", "q.r2", "q.r3", "q"]
    assert plan.tasks[-1].depends_on == ("q.r1", "q.r2", "q.r3")
    assert plan.tasks[-1].runtime == "consensus"
    assert expand_replicas(plan) == plan  # idempotent (a resumed run's plan)
    assert normalize("```\nParis.\n```") == "paris"
    decision = count_votes({"q.r1": "B", "q.r2": "A", "q.r3": "b"})
    assert decision.winner == "q.r1"
    assert decision.tally == {"b": 2.0, "a": 1.0}
    tie = count_votes({"q.r2": "x", "q.r1": "y"})
    assert tie.winner == "q.r1"  # ties go to the lowest replica, whatever the order given
    weighted = count_votes({"q.r1": "A", "q.r2": "B", "q.r3": "B"}, {"q.r1": 0.9, "q.r2": 0.2, "q.r3": 0.2})
    assert weighted.winner == "q.r1"
    assert parse_scores(
        'Here: {"scores": [{"proposal": 2, "score": 9}, {"proposal": 1, "score": 3}]}', 2
    ) == {
        2: 9.0,
        1: 3.0,
    }
    with pytest.raises(PlanError, match="field 'quorum': 4 is more than replicas"):
        expand_replicas(Plan(name="p", tasks=(TaskSpec(id="q", command="true", replicas=3, quorum=4),)))


async def test_majority_picks_the_agreeing_answers(sqlite_store: Store, tmp_path: Path) -> None:
    plan = Plan(
        name="vote",
        tasks=(
            TaskSpec(id="capital", prompt="Capital of France?", command=BY_REPLICA, replicas=3),
            TaskSpec(id="use", depends_on=("capital",), command=CHILD),
        ),
    )
    orchestrator = Orchestrator(sqlite_store, plan, RunConfig(agents=3, workdir=str(tmp_path)))
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert state.tasks["capital"].consensus == "majority: capital.r1"
    assert Path(state.tasks["use"].output_path).read_text().strip() == "Paris"
    events = [e async for _, e in EventLog(sqlite_store, orchestrator.run_id).iterate()]
    votes = [e for e in events if isinstance(e, ConsensusVote)]
    assert [(v.replica, v.answer) for v in votes] == [
        ("capital.r1", "paris"),
        ("capital.r2", "paris"),
        ("capital.r3", "lyon"),
    ]
    [decided] = [e for e in events if isinstance(e, ConsensusDecided)]
    assert decided.tally == {"paris": 2.0, "lyon": 1.0}
    replayed = await EventLog(sqlite_store, orchestrator.run_id).replay()
    assert replayed.tasks["capital"].consensus == state.tasks["capital"].consensus


async def test_a_failed_replica_is_outvoted_and_a_lost_quorum_fails(
    sqlite_store: Store, tmp_path: Path
) -> None:
    one_fails = 'case "$MAOS_TASK_ID" in *.r3) exit 1;; *) echo yes;; esac'
    two_fail = 'case "$MAOS_TASK_ID" in *.r1) echo yes;; *) exit 1;; esac'
    plan = Plan(
        name="quorum",
        tasks=(
            TaskSpec(id="ok", command=one_fails, replicas=3, max_attempts=1),
            TaskSpec(id="lost", command=two_fail, replicas=3, max_attempts=1),
        ),
    )
    state = await Orchestrator(sqlite_store, plan, RunConfig(agents=3, workdir=str(tmp_path))).run()
    assert state.tasks["ok"].state is TaskState.SUCCEEDED
    assert state.tasks["lost"].state is TaskState.FAILED
    assert state.tasks["lost"].reason == "quorum not reached: 1 of 3 replicas answered, 2 needed"
    assert state.status is RunStatus.FAILED  # because of 'lost', not of ok.r3
    assert "task 'lost' failed after 1 attempt(s): quorum not reached" in state.summary


async def test_weighted_follows_the_agents_history(sqlite_store: Store, tmp_path: Path) -> None:
    history = History()
    for _ in range(20):
        history = history.record("expert", "general", succeeded=True)
        history = history.record("novice", "general", succeeded=False)
    agents = (
        AgentSpec(id="e1", role="expert"),
        AgentSpec(id="n1", role="novice"),
        AgentSpec(id="n2", role="novice"),
    )
    by_agent = 'if [ "$MAOS_AGENT_ID" = e1 ]; then echo "A"; else echo "B"; fi'
    plan = Plan(
        name="weighted", tasks=(TaskSpec(id="q", command=by_agent, replicas=3, consensus="weighted"),)
    )
    orchestrator = Orchestrator(
        sqlite_store,
        plan,
        RunConfig(agents=3, workdir=str(tmp_path)),
        agents=agents,
        options=RunOptions(history=history),
    )
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    winner = state.tasks["q"].consensus or ""
    assert state.tasks[winner.split(": ")[1]].agent_id == "e1"
    assert Path(state.tasks["q"].output_path).read_text().strip() == "A"
    events = [e async for _, e in EventLog(sqlite_store, orchestrator.run_id).iterate()]
    weights = {e.replica: e.weight for e in events if isinstance(e, ConsensusVote)}
    assert max(weights.values()) > 0.9
    assert min(weights.values()) < 0.1
