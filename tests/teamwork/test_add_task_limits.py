"""Tasks added by agents are held to what execution needs, like plan tasks: refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maos.dynamic import wider_than_adder
from maos.model import Plan, RunConfig, RunStatus, TaskSpec, TaskState
from maos.orchestrator import Orchestrator
from maos.permissions import Grants
from maos.store.base import Store

ADD_NUL = json.dumps({"id": "nul", "command": "echo \u0000oops"})
ADD_NUL_ITEM = json.dumps({"id": "nul2", "command": ["echo", "a\u0000"]})
ADD_BAD_ID = json.dumps({"id": "x.lock", "command": "true"})
ADD_DEEP = '{"id": "deep", "command": "true", "capabilities": ' + "[" * 100 + "]" * 100 + "}"


async def test_add_task_with_a_nul_command_is_refused_with_the_reason(
    sqlite_store: Store, tmp_path: Path
) -> None:
    lead = "; ".join(
        f"maos task add '{spec}' 2> {name}.txt; echo exit=$? >> {name}.txt"
        for name, spec in (("nul", ADD_NUL), ("item", ADD_NUL_ITEM), ("id", ADD_BAD_ID), ("deep", ADD_DEEP))
    )
    shell = Grants(add_task_runtimes=("command",))  # agents may add command tasks only if granted
    plan = Plan(name="limits", tasks=(TaskSpec(id="lead", command=lead + "; true", grants=shell),))
    orchestrator = Orchestrator(sqlite_store, plan, RunConfig(agents=1, workdir=str(tmp_path)))
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert state.tasks["lead"].state is TaskState.SUCCEEDED
    assert set(state.tasks) == {"lead"}
    nul = (tmp_path / "nul.txt").read_text()
    assert "task 'nul' refused: " in nul
    assert "field 'command': must not contain a NUL byte" in nul
    assert "exit=1" in nul
    assert "field 'command': item 2: must not contain a NUL byte" in (tmp_path / "item.txt").read_text()
    assert "must not end in '.lock'" in (tmp_path / "id.txt").read_text()
    assert "nested more than 64 levels deep" in (tmp_path / "deep.txt").read_text()


async def test_a_task_an_agent_adds_cannot_do_more_than_the_adding_task(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``add_task`` is no way around a role's limits: a variable the adding task was not passed,
    a wider permission mode, more tools, or work outside the adding task's worktree are refused
    with the field named; the same task without them is added and runs."""
    monkeypatch.setenv("ORCHESTRATOR_SECRET", "s3cret")
    asks = {
        "env": {"id": "env", "command": "env > leaked.txt", "pass_env": ["ORCHESTRATOR_SECRET"]},
        "mode": {"id": "mode", "prompt": "x", "permission_mode": "bypassPermissions"},
        "tools": {"id": "tools", "prompt": "x", "allowed_tools": ["Bash"]},
        "ok": {"id": "ok", "command": "env > ok.txt", "pass_env": ["VISIBLE"]},
    }
    lead = "; ".join(
        f"maos task add '{json.dumps(spec)}' 2> {name}.txt; echo exit=$? >> {name}.txt"
        for name, spec in asks.items()
    )
    monkeypatch.setenv("VISIBLE", "fine")
    grants = Grants(add_task_runtimes=("command", "claude-code"))
    plan = Plan(
        name="wider",
        tasks=(TaskSpec(id="lead", command=lead + "; true", grants=grants, pass_env=("VISIBLE",)),),
    )
    orchestrator = Orchestrator(sqlite_store, plan, RunConfig(agents=2, workdir=str(tmp_path)))
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert set(state.tasks) == {"lead", "ok"}
    said = {name: (tmp_path / f"{name}.txt").read_text() for name in asks}
    assert "field 'pass_env': ORCHESTRATOR_SECRET not passed to the adding task 'lead'" in said["env"]
    assert "field 'permission_mode': 'bypassPermissions' is not the adding task's" in said["mode"]
    assert "field 'allowed_tools': Bash not allowed to the adding task 'lead'" in said["tools"]
    assert all("exit=1" in said[name] for name in ("env", "mode", "tools"))
    assert not (tmp_path / "leaked.txt").exists()
    assert "VISIBLE=fine" in (tmp_path / "ok.txt").read_text()


def test_a_worktree_task_cannot_add_one_that_works_in_the_run_directory() -> None:
    adder = TaskSpec(id="lead", prompt="x")  # a Claude task: in a worktree
    inside = TaskSpec(id="b", command="true", isolation="worktree")
    outside = TaskSpec(id="c", command="true")  # a command task: in the run's directory
    narrow = TaskSpec(id="d", prompt="x", permission_mode="plan")
    assert wider_than_adder(inside, adder) is None
    assert wider_than_adder(narrow, adder) is None
    assert "field 'isolation': the adding task 'lead' works in a git worktree" in str(
        wider_than_adder(outside, adder)
    )
    assert wider_than_adder(outside, TaskSpec(id="cmd", command="true")) is None
    assert wider_than_adder(outside, adder, worktrees=False) is None  # not a git repository


def test_a_claude_task_of_another_role_must_name_its_tools() -> None:
    """A task's tools and permission mode come from its role's file unless it lists them: a
    reviewer's agent adding a task for the coder role would hand its prompt to an agent with
    the coder's tools."""
    reviewer = TaskSpec(id="review", prompt="x", role="reviewer", allowed_tools=("Read", "Grep"))
    as_coder = TaskSpec(id="c", prompt="x", role="coder", isolation="worktree")
    said = str(wider_than_adder(as_coder, reviewer))
    assert "field 'role': 'coder' is not the adding task's role ('reviewer')" in said
    limited = as_coder.model_copy(update={"allowed_tools": ("Read",), "permission_mode": "plan"})
    assert wider_than_adder(limited, reviewer) is None
    same_role = TaskSpec(id="r2", prompt="x", role="reviewer", isolation="worktree")
    assert wider_than_adder(same_role, reviewer) is None
    command = TaskSpec(id="cmd", command="true", role="coder", isolation="worktree")
    assert wider_than_adder(command, reviewer) is None  # its grants are capped by the door
