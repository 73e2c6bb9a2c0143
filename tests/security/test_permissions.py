"""The permission matrix (``maos.permissions``), task tokens (``maos.security``), grants in
role files (``maos:`` front matter) and the warm agent's task file: the pieces the attack
suite (``test_attacks.py``) exercises end to end."""

from __future__ import annotations

import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from maos.agents.pool import _write_task_env
from maos.agents.roles import load_roles, role_grants
from maos.door import Door
from maos.errors import PermissionDenied
from maos.events import DoorRefused
from maos.permissions import DEFAULT_GRANTS, Action, Grants, check, narrower, resolve
from maos.security import issue_task_token, read_task_token

from ..door.conftest import DoorRun

SECRET = bytes(range(32))


# --------------------------------------------------------------------------- the matrix


def test_the_defaults_let_agents_work_together_but_not_add_a_shell() -> None:
    for action, resource in (
        (Action.STATE_READ, "api"),
        (Action.STATE_WRITE, "team-a/progress"),
        (Action.MESSAGE_SEND, "agent-2"),
        (Action.MESSAGE_SEND, "task:review"),
        (Action.MESSAGE_BROADCAST, "releases"),
        (Action.TOPIC_SUBSCRIBE, "releases"),
        (Action.RESULT_READ, "design"),
        (Action.TASK_ADD, "claude-code"),
        (Action.MESSAGE_READ, "agent-1"),
    ):
        assert check(DEFAULT_GRANTS, action, resource) is None, (action, resource)
    reason = check(DEFAULT_GRANTS, Action.TASK_ADD, "command")
    assert reason is not None
    assert "add_task_runtimes: [command]" in reason


def test_patterns_are_exact_names_or_prefixes() -> None:
    grants = resolve(Grants(state_write=("api", "team-a/*"), send_to=("task:review",), add_task=False))
    assert check(grants, Action.STATE_WRITE, "api") is None
    assert check(grants, Action.STATE_WRITE, "team-a/x/y") is None
    assert check(grants, Action.STATE_WRITE, "api/v2") == (
        "writing state key 'api/v2' is not granted to this task's role (state_write: api, team-a/*)"
    )
    assert check(grants, Action.STATE_READ, "anything") is None  # not restricted: the default
    assert check(grants, Action.MESSAGE_SEND, "task:review") is None
    assert check(grants, Action.MESSAGE_SEND, "agent-1") is not None
    assert check(grants, Action.TASK_ADD, "claude-code") == (
        "adding tasks is not granted to this task's role (add_task: false)"
    )
    assert check(resolve(Grants(topics=())), Action.TOPIC_SUBSCRIBE, "t") is not None  # empty: nothing


def test_a_result_only_for_the_own_task() -> None:
    assert check(DEFAULT_GRANTS, Action.RESULT_PUBLISH, "build", own_task="build") is None
    assert check(DEFAULT_GRANTS, Action.RESULT_PUBLISH, "deploy", own_task="build") is not None
    assert check(DEFAULT_GRANTS, Action.RESULT_PUBLISH, "build") is not None


def test_layers_resolve_field_by_field() -> None:
    task = Grants(state_write=("a/*",))
    role = Grants(state_write=("b/*",), add_task=False)
    assert resolve(task, role) == Grants(
        state_read=("*",),
        state_write=("a/*",),
        send_to=("*",),
        topics=("*",),
        read_results=("*",),
        add_task=False,
        add_task_runtimes=("claude-code",),
    )
    assert resolve(None, None) == DEFAULT_GRANTS


def test_an_added_task_gets_no_more_than_its_adder() -> None:
    adder = resolve(Grants(state_write=("team/*",)))
    assert narrower(resolve(Grants(state_write=("team/docs/*", "team/x")), adder), adder) is None
    assert narrower(resolve(Grants(state_write=("*",)), adder), adder) == (
        "state_write: * beyond the adding task's (team/*)"
    )
    wider = narrower(resolve(Grants(add_task_runtimes=("command",)), adder), adder)
    assert wider is not None
    assert wider.startswith("add_task_runtimes: command")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"state_write": "a/*"}, "expected a list"),
        ({"state_write": [""]}, "is not a pattern"),
        ({"state_write": ["a*b"]}, "may only end a pattern"),
        ({"add_task_runtimes": ["docker"]}, "add_task_runtimes"),
        ({"add_task": "yes"}, "true or false"),
        ({"state_wirte": ["a"]}, "unknown grant"),
    ],
)
def test_malformed_grants_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Grants.from_dict(data)


# --------------------------------------------------------------------------- task tokens


def test_a_task_token_binds_run_agent_task_attempt_and_grants() -> None:
    token = issue_task_token(SECRET, "run-1", "agent-1", "build", 2, {"add_task": False})
    claim = read_task_token(SECRET, "run-1", "agent-1", token)
    assert claim is not None
    assert (claim.task_id, claim.attempt, dict(claim.grants)) == ("build", 2, {"add_task": False})
    assert read_task_token(SECRET, "run-2", "agent-1", token) is None  # another run
    assert read_task_token(SECRET, "run-1", "agent-2", token) is None  # another agent
    assert read_task_token(bytes(32), "run-1", "agent-1", token) is None  # another secret
    forged = issue_task_token(bytes(32), "run-1", "agent-1", "build", 2, {"add_task": True})
    body, _, mac = token.rpartition(".")
    assert read_task_token(SECRET, "run-1", "agent-1", forged.rpartition(".")[0] + "." + mac) is None
    assert read_task_token(SECRET, "run-1", "agent-1", body + ".x") is None
    assert read_task_token(SECRET, "run-1", "agent-1", "maos1.whatever") is None


# --------------------------------------------------------------------------- role files


def test_a_role_file_declares_grants_under_maos(tmp_path: Path) -> None:
    agents = tmp_path / ".claude" / "agents"
    agents.mkdir(parents=True)
    (agents / "reviewer.md").write_text(
        "---\nname: reviewer\ndescription: Reviews\nmaos:\n  grants:\n"
        '    state_write: ["review/*"]\n    add_task: false\n---\nReview.\n'
    )
    (agents / "bad.md").write_text("---\nname: bad\nmaos:\n  grants:\n    state_write: yes\n---\nx\n")
    (agents / "typo.md").write_text("---\nname: typo\nmaos:\n  grant: {}\n---\nx\n")
    catalog = load_roles(tmp_path, None)
    assert role_grants(catalog.get("reviewer")) == Grants(state_write=("review/*",), add_task=False)
    assert role_grants(None) is None
    problems = "\n".join(catalog.problems)
    assert "bad.md: field 'maos.grants': state_write: expected a list" in problems
    assert "typo.md: field 'maos': unknown setting(s) grant" in problems


# --------------------------------------------------------------------------- warm agents


async def test_a_warm_agents_task_file_carries_the_token_privately(door_run: DoorRun) -> None:
    warm = door_run.workdir / "warm"
    warm.mkdir()
    token = door_run.task_token("agent-a", "t1")
    job = SimpleNamespace(env={"MAOS_TASK_ID": "t1", "MAOS_TASK_TOKEN": token}, task=SimpleNamespace(id="t1"))
    _write_task_env(warm, job)  # type: ignore[arg-type]
    assert (warm / "task").read_text() == f"t1\n{token}\n"
    assert stat.S_IMODE((warm / "task").stat().st_mode) == 0o600
    assert stat.S_IMODE((warm / "task.env").stat().st_mode) == 0o600

    door = Door(
        door_run.store, door_run.run_id, "agent-a", task_file=warm / "task", secret=door_run.secret, via="mcp"
    )
    await door.publish_result("done")
    (warm / "task").write_text(f"t2\n{token}\n")  # the agent edits its file: another task
    with pytest.raises(PermissionDenied, match="bound to task t1, not to task t2"):
        await door.publish_result("forged")
    _write_task_env(warm, None)  # between tasks: no token
    with pytest.raises(PermissionDenied, match="no task token"):
        await door.state_set("k", 1)
    refused = [e for e in await door_run.events() if isinstance(e, DoorRefused)]
    assert [(e.task, e.via) for e in refused] == [("t2", "mcp"), ("warm", "mcp")]
