"""Dynamic subtasks: running agents add tasks through the door; MAOS validates and schedules them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maos.eventlog import EventLog
from maos.events import TaskAdded, TaskAddRefused
from maos.model import Plan, RunConfig, RunStatus, TaskSpec, TaskState
from maos.orchestrator import Orchestrator
from maos.permissions import Grants
from maos.store.base import Store

SHELL = Grants(add_task_runtimes=("claude-code", "command"))
"""These agents add command tasks: their role must grant it (maos.permissions)."""
ADD_FOLLOW_UP = json.dumps({"id": "follow-up", "command": "echo follow-up ran", "depends_on": ["lead"]})
ADD_CYCLE = json.dumps({"id": "loop", "command": "true", "depends_on": ["second"]})
ADD_BAD = json.dumps({"id": "bad", "command": "true", "priority": "high"})


async def test_agents_add_tasks_and_bad_ones_are_refused_with_reasons(
    sqlite_store: Store, tmp_path: Path
) -> None:
    lead = (
        f"maos task add '{ADD_FOLLOW_UP}' > added.txt; "
        f"maos task add '{ADD_CYCLE}' --blocks second 2> cycle.txt; echo cycle-exit=$? >> cycle.txt; "
        f"maos task add '{ADD_BAD}' 2> bad.txt; "
        'maos task add \'{"id": "late", "command": "true"}\' --blocks lead 2> late.txt; true'
    )
    plan = Plan(
        name="dynamic",
        tasks=(
            TaskSpec(id="lead", command=lead, grants=SHELL),
            TaskSpec(id="second", depends_on=("lead",), command="echo second"),
        ),
    )
    orchestrator = Orchestrator(sqlite_store, plan, RunConfig(agents=2, workdir=str(tmp_path)))
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert (tmp_path / "added.txt").read_text().strip() == "added task follow-up"
    assert state.tasks["follow-up"].state is TaskState.SUCCEEDED
    assert Path(state.tasks["follow-up"].output_path).read_text() == "follow-up ran\n"
    assert state.tasks["follow-up"].started_at > state.tasks["lead"].finished_at  # type: ignore[operator]
    cycle = (tmp_path / "cycle.txt").read_text()
    assert "task 'loop' refused: " in cycle
    assert "dependency cycle second -> loop -> second" in cycle
    assert "cycle-exit=1" in cycle
    assert "field 'priority'" in (tmp_path / "bad.txt").read_text()
    assert "cannot make task 'lead' wait: it is already running" in (tmp_path / "late.txt").read_text()
    assert "loop" not in state.tasks
    events = [e async for _, e in EventLog(sqlite_store, orchestrator.run_id).iterate()]
    assert [e.task.id for e in events if isinstance(e, TaskAdded)] == ["follow-up"]
    assert len([e for e in events if isinstance(e, TaskAddRefused)]) == 3
    replayed = await EventLog(sqlite_store, orchestrator.run_id).replay()
    assert replayed == state


ADD_SCRIPT = """
rules:
  - name: after-valid
    match: {tool_result: 'added.*true'}
    reply: {text: "added the docs task"}
  - name: try-valid
    match: {tool_result: 'cycle'}
    reply:
      tool_calls:
        - name: mcp__maos__add_task
          input: {task: {id: docs, command: "echo docs written", depends_on: [work]}}
  - name: try-cycle
    match: {agent: '.*', tool_result: false}
    reply:
      tool_calls:
        - name: mcp__maos__add_task
          input: {task: {id: loop, command: "true", depends_on: [later]}, blocks: [later]}
"""


@pytest.mark.claude
async def test_a_claude_agent_is_told_why_its_cycle_is_refused(
    cli: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    from tests.claude.conftest import run_plan

    run = await run_plan(
        sqlite_store,
        tmp_path / "work",
        ADD_SCRIPT,
        TaskSpec(id="work", prompt="plan the follow-ups", grants=SHELL),
        TaskSpec(id="later", depends_on=("work",), command="echo later"),
    )
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    assert run.state.tasks["docs"].state is TaskState.SUCCEEDED
    assert "loop" not in run.state.tasks
    rules = [r["rule_name"] for r in run.requests if r["path"].startswith("/v1/messages")]
    assert rules == ["try-cycle", "try-valid", "after-valid"]
    refused = [e for e in run.events if isinstance(e, TaskAddRefused)]
    assert len(refused) == 1
    assert "dependency cycle" in refused[0].reason
