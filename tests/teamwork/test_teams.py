"""Declared teams (``agents:``, ``--agent``, ``--team``) and work no agent can take: refused
before a run (exit 2), reported at once during one, and failed after ``--stall-timeout-s``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from maos.agents.roles import RoleCatalog, load_roles
from maos.errors import PlanError
from maos.eventlog import EventLog
from maos.events import (
    AgentLost,
    Event,
    RunFinished,
    RunStarted,
    TaskAssigned,
    TaskCancelled,
    TaskStalled,
    apply,
    event_from_json,
)
from maos.metrics import MetricsObserver
from maos.model import (
    AgentRole,
    AgentSpec,
    Plan,
    RunConfig,
    RunState,
    RunStatus,
    TaskSpec,
    TaskState,
    TeamMember,
)
from maos.orchestrator import Orchestrator
from maos.plan import plan_from_data
from maos.plan.reference import AGENT_FIELD_EXAMPLES
from maos.scheduler import History, PlanIndex, decide
from maos.store.base import Store
from maos.team import build_team, parse_agent_option, role_capabilities, team_problems

ROOT = Path(__file__).resolve().parents[2]
REVIEWER = """---
name: reviewer
description: Reviews changes for correctness.
tools: Read, Grep, Glob
---
You review.
"""


def maos(*args: str, cwd: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maos", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --------------------------------------------------------------------------- capabilities and ids


def test_capabilities_default_from_the_roles_tools_and_description(tmp_path: Path) -> None:
    (tmp_path / ".claude" / "agents").mkdir(parents=True)
    (tmp_path / ".claude" / "agents" / "reviewer.md").write_text(REVIEWER)
    roles = load_roles(tmp_path, user_dir=None)
    assert role_capabilities(roles.get("reviewer")) == ("read", "review")
    assert role_capabilities(None) == ("edit", "read", "shell", "web")  # no file: every tool
    bash_only = AgentRole(name="ops", tools=("Bash(git *)",), description="Debugs CI", source=tmp_path)
    assert role_capabilities(bash_only) == ("debug", "shell")


def test_build_team_names_agents_and_refuses_clashing_ids(tmp_path: Path) -> None:
    team = build_team(
        (TeamMember(role="reviewer"), TeamMember(role="coder", count=3, capabilities=("python",))),
        RoleCatalog(),
    )
    assert [(agent.id, agent.role) for agent in team] == [
        ("reviewer", "reviewer"),
        ("coder-1", "coder"),
        ("coder-2", "coder"),
        ("coder-3", "coder"),
    ]
    assert team[1].capabilities == ("python",)
    with pytest.raises(PlanError) as caught:
        build_team((TeamMember(role="coder"), TeamMember(id="coder", role="tester")), RoleCatalog())
    assert caught.value.problems == [
        "agents[1]: field 'id': agent id 'coder' is also an agent of agents[0]; give one of them another 'id'"
    ]
    assert parse_agent_option("coder:3") == TeamMember(role="coder", count=3)
    # a role that is no agent id (Claude Flow's "Topology Optimizer") gets one made of it
    assert parse_agent_option("Topology Optimizer:2") == TeamMember(
        id="Topology-Optimizer", role="Topology Optimizer", count=2
    )
    for bad in ("coder:0", "coder:x", ":2"):
        with pytest.raises(ValueError, match=r"ROLE|count|agent id"):
            parse_agent_option(bad)


@pytest.mark.parametrize("name", sorted(AGENT_FIELD_EXAMPLES))
def test_every_agent_field_example_is_valid(name: str) -> None:
    value = yaml.safe_load(AGENT_FIELD_EXAMPLES[name])
    assert list(value) == [name]
    TeamMember.model_validate({"role": "coder"} | value)


def test_a_plan_team_entry_with_a_bad_field_is_named(tmp_path: Path) -> None:
    data = {"name": "p", "agents": [{"role": "coder", "count": 0}, {"rol": "x"}], "tasks": [{"id": "a"}]}
    with pytest.raises(PlanError) as caught:
        plan_from_data(data, "plan.yaml")
    assert caught.value.problems == [
        "plan.yaml: agents[0]: field 'count': Input should be greater than or equal to 1, got 0",
        "plan.yaml: agents[1]: unknown field 'rol'; did you mean 'role'?",
    ]


def test_runs_logged_before_teams_keep_every_agent_open_to_every_runtime() -> None:
    old = (
        '{"type":"run_started","ts":1.0,"run_id":"r","plan":{"name":"p","tasks":[{"id":"a"}]},'
        '"config":{"workdir":"."},"agents":[{"id":"agent-1","role":"general","runtime":"command",'
        '"capabilities":[]}]}'
    )
    event = event_from_json(old)
    assert isinstance(event, RunStarted)
    assert event.agents[0].runtime is None
    new = RunStarted.model_validate_json(event.model_dump_json())
    assert new.agents == event.agents


# --------------------------------------------------------------------------- the scheduler's filters


def test_runtime_is_a_hard_filter_and_the_fitness_parts_are_given() -> None:
    plan = Plan(name="p", tasks=(TaskSpec(id="claude"), TaskSpec(id="cmd", command="true")))
    state = RunState()
    agents = (AgentSpec(id="checker", runtime="command"), AgentSpec(id="writer", runtime="claude-code"))
    apply(state, RunStarted(run_id="r", plan=plan, config=RunConfig(workdir="."), agents=agents))
    from maos.events import TaskReady

    for task in plan.tasks:
        apply(state, TaskReady(task_id=task.id))
    choices = decide(state, PlanIndex.build(plan), list(agents), History(), limit=2)
    assert {(choice.task_id, choice.agent_id) for choice in choices} == {
        ("claude", "writer"),
        ("cmd", "checker"),
    }
    for choice in choices:
        assert choice.fitness is not None
        assert choice.candidates == 1
        assert choice.score == pytest.approx(
            0.4 * choice.fitness.capability + 0.3 * choice.fitness.workload + 0.3 * choice.fitness.history
        )
    assert decide(state, PlanIndex.build(plan), [agents[0]], History(), limit=2)[0].task_id == "cmd"
    problems = team_problems(plan, agents[:1], "plan.yaml")
    assert problems == [
        "plan.yaml: task 'claude' (tasks[0]): field 'command': no agent takes claude-code tasks "
        "(the agents' runtimes: command) (team: checker (no capabilities; command only))"
    ]


# --------------------------------------------------------------------------- before a run: exit 2


def test_plan_validate_and_run_refuse_a_task_no_agent_can_take(tmp_path: Path) -> None:
    plan = write(
        tmp_path / "plan.yaml",
        {
            "name": "gpu",
            "agents": [{"role": "coder", "count": 2, "capabilities": ["edit"]}],
            "tasks": [
                {"id": "build", "capabilities": ["edit"], "command": "true"},
                {"id": "train", "capabilities": ["gpu", "edit"], "command": "true", "depends_on": ["build"]},
            ],
        },
    )
    checked = maos("plan", "validate", str(plan), cwd=tmp_path)
    assert checked.returncode == 2
    assert checked.stderr.splitlines()[0] == (
        f"{plan}: task 'train' (tasks[1]): field 'capabilities': no agent has capability 'gpu' "
        "(team: coder-1..2 (edit))"
    )
    assert "Traceback" not in checked.stderr
    team = write(tmp_path / "team.yaml", [{"role": "trainer", "capabilities": ["gpu", "edit"]}])
    fine = maos("plan", "validate", str(plan), "--team", str(team), cwd=tmp_path)
    assert fine.returncode == 0, fine.stderr
    assert "team: trainer (edit, gpu)" in fine.stdout
    # --agent replaces the plan's team: generalist coders (every tool) still have no 'gpu'
    refused = maos("run", str(plan), "--agent", "coder:2", cwd=tmp_path)
    assert refused.returncode == 2
    assert "task 'train' (tasks[1]): field 'capabilities': no agent has capability 'gpu'" in refused.stderr
    # without a team, `maos run`'s generalists have no capabilities at all
    bare = write(tmp_path / "bare.yaml", {"name": "b", "tasks": [{"id": "a", "capabilities": ["edit"]}]})
    refused = maos("run", str(bare), "--agents", "2", cwd=tmp_path)
    assert refused.returncode == 2
    assert "task 'a' (tasks[0]): field 'capabilities': no agent has capability 'edit'" in refused.stderr
    assert "add them with --agent ROLE[:N], --team FILE or the plan's agents:" in refused.stderr
    assert not (tmp_path / ".maos" / "runs").exists()  # nothing ran
    bad = maos("run", str(plan), "--agent", "coder:none", cwd=tmp_path)
    assert (bad.returncode, "Traceback" in bad.stderr) == (2, False)
    assert "--agent: expected ROLE or ROLE:N" in bad.stderr


def test_huge_or_odd_team_options_get_exit_2_and_a_short_answer(tmp_path: Path) -> None:
    # Every value shown back is cut short; a team file or plan with more entries than a team
    # may have agents is refused in one line, before its entries are looked at.
    plan = write(tmp_path / "plan.yaml", {"name": "p", "tasks": [{"id": "a", "command": "true"}]})
    huge = write(
        tmp_path / "huge.yaml",
        [{"role": "x" * 100_000, "count": "y" * 100_000, "id": f"a{n}"} for n in range(3)],
    )
    many = write(tmp_path / "many.yaml", [{"id": f"c{n}", "count": "bad"} for n in range(10_000)])
    many_plan = write(
        tmp_path / "many-plan.yaml",
        {"name": "p", "tasks": [{"id": "a"}], "agents": [{"id": f"a{n}", "count": 0} for n in range(10_000)]},
    )
    cases = [
        (["plan", "validate", str(plan), "--team", str(huge)], "field 'role'"),
        (["plan", "validate", str(plan), "--team", str(many)], "10000 entries, more agents than the limit"),
        (["plan", "validate", str(many_plan)], "10000 entries, more agents than the limit"),
        (["plan", "validate", str(plan), "--agent", "r" * 100_000 + ":x"], "expected ROLE or ROLE:N"),
        (["run", str(plan), "--resource", "db=" + "9" * 5000], "N must be a whole number"),
        (["run", str(plan), "--resource", "db=\u0661"], "N must be a whole number"),  # an Arabic-Indic 1
    ]
    for args, words in cases:
        result = maos(*args, cwd=tmp_path)
        assert result.returncode == 2, (args[:3], result.stderr[-300:])
        assert words in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr) < 2000, (args[:3], len(result.stderr))
    assert not (tmp_path / ".maos" / "runs").exists()  # nothing ran


# --------------------------------------------------------------------------- runs


def test_the_team_example_places_each_task_on_an_agent_of_its_kind(tmp_path: Path) -> None:
    done = maos("run", str(ROOT / "src/maos/examples/plans/team.yaml"), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    tasks = summary["tasks"]
    assert tasks["review"]["agent"] == "reviewer"
    coders = {tasks[name]["agent"] for name in ("parser", "lexer", "cli")}
    assert coders == {"coder-1", "coder-2", "coder-3"}  # in parallel, one each
    shown = maos("status", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["tasks"]["review"]["fitness"]["candidates"] == 1
    assert status["tasks"]["parser"]["fitness"]["capability"] == 1.0
    assert status["agents"]["reviewer"]["capabilities"] == ["read", "review"]
    text = maos("status", cwd=tmp_path)
    assert "reviewer" in text.stdout
    assert "(1.00/" in text.stdout


async def test_the_only_capable_agent_is_not_avoided_after_two_failures(
    sqlite_store: Store, tmp_path: Path
) -> None:
    counter = tmp_path / "tries"
    flaky = f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; [ "$n" -ge 2 ]'
    plan = Plan(
        name="flaky",
        agents=(TeamMember(role="reviewer", capabilities=("review",)), TeamMember(role="coder", count=2)),
        tasks=(TaskSpec(id="review", capabilities=("review",), command=flaky, max_attempts=3),),
    )
    config = RunConfig(agents=3, workdir=str(tmp_path), retry_base_s=0.01, retry_max_s=0.02)
    state = await Orchestrator(sqlite_store, plan, config).run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert (state.tasks["review"].attempts, state.tasks["review"].agent_id) == (3, "reviewer")


async def test_a_task_whose_only_capable_agent_dies_stalls_then_fails_the_run(
    sqlite_store: Store, tmp_path: Path
) -> None:
    plan = Plan(
        name="stall",
        agents=(TeamMember(role="reviewer", capabilities=("review",)), TeamMember(role="coder", count=2)),
        tasks=(
            TaskSpec(id="code", command="true"),
            TaskSpec(id="review", capabilities=("review",), command="kill -9 $$", depends_on=("code",)),
            TaskSpec(id="ship", command="true", depends_on=("review",)),
        ),
    )
    config = RunConfig(
        agents=3, workdir=str(tmp_path), retry_base_s=0.01, retry_max_s=0.02, stall_timeout_s=1.5
    )
    metrics = MetricsObserver()
    stalled_seen: list[float] = []

    def sample(event_id: str, event: Event, state: RunState) -> None:
        metrics.observe(event_id, event, state)
        value = metrics.registry.get_sample_value("maos_stalled_tasks")
        stalled_seen.append(value if value is not None else -1.0)

    orchestrator = Orchestrator(sqlite_store, plan, config)
    orchestrator.hooks.append(sample)
    started = time.monotonic()
    state = await orchestrator.run()
    assert time.monotonic() - started < 30
    assert state.status is RunStatus.FAILED
    events = [event async for _, event in EventLog(sqlite_store, orchestrator.run_id).iterate()]
    [lost] = [event for event in events if isinstance(event, AgentLost)]
    assert lost.agent_id == "reviewer"
    assert "died 2 times in a row" in lost.reason
    [stalled] = [event for event in events if isinstance(event, TaskStalled)]
    assert stalled.task_id == "review"
    assert stalled.ts - lost.ts < 10  # reported within seconds of the loss
    assert "no agent has capability 'review' left (reviewer, which could take it, lost" in stalled.reason
    [cancelled] = [event for event in events if isinstance(event, TaskCancelled)]
    assert cancelled.task_id == "review"
    assert cancelled.ts - stalled.ts >= 1.5
    assert state.tasks["ship"].state is TaskState.SKIPPED
    [finished] = [event for event in events if isinstance(event, RunFinished)]
    assert finished.summary.startswith("task 'review' stalled: no agent could take it for 1.5s")
    assert state.lost_agents == {"reviewer": lost.reason}
    # no task went to the lost agent after it was lost
    after = events[events.index(lost) :]
    assert not [e for e in after if isinstance(e, TaskAssigned) and e.agent_id == "reviewer"]
    # the stall metric: 1 while the task waited, 0 once it was cancelled
    assert max(stalled_seen) == 1.0
    assert stalled_seen[-1] == 0.0


def test_maos_run_reports_a_stall_and_exits_non_zero_after_the_stall_timeout(tmp_path: Path) -> None:
    plan = write(
        tmp_path / "plan.yaml",
        {
            "name": "stall",
            "agents": [{"role": "reviewer", "capabilities": ["review"]}, {"role": "coder", "count": 2}],
            "tasks": [{"id": "review", "capabilities": ["review"], "command": "kill -9 $$"}],
        },
    )
    started = time.monotonic()
    done = maos("run", str(plan), "--retry-base-s", "0.05", "--stall-timeout-s", "2", cwd=tmp_path)
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert 2 <= took < 30
    out = done.stdout + done.stderr
    assert "lost      agent reviewer" in out
    assert "stalled   review: no agent can take it" in out
    assert "task 'review' stalled: no agent could take it for 2s" in out
    assert "Traceback" not in out


async def test_a_run_without_any_agent_stalls_instead_of_waiting_forever(
    sqlite_store: Store, tmp_path: Path
) -> None:
    # A resumed run takes its agents from its log's run_started, which may list none.
    plan = Plan(name="nobody", tasks=(TaskSpec(id="a", command="true"),))
    config = RunConfig(agents=1, workdir=str(tmp_path), stall_timeout_s=0.5)
    orchestrator = Orchestrator(sqlite_store, plan, config, agents=())
    state = await asyncio.wait_for(orchestrator.run(), 20)
    assert state.status is RunStatus.FAILED
    assert state.tasks["a"].state is TaskState.CANCELLED
    assert "the run has no agents" in state.summary
