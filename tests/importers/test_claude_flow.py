"""``maos import claude-flow``: the real Claude Flow 3.43 output, synthetic sessions and memory
rows built with its schema, and hostile projects. Every file found is in the report; a bad
file is a per-file reason or exit code 2 naming it, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maos.errors import ImportSourceError
from maos.importers.claude_flow import MAX_JSON_BYTES, ImportResult, import_claude_flow
from maos.plan import load_plan
from maos.plan.validate import validate_plan

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "claude-flow-3.43-init"  # see its README


def maos(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maos", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A writable copy of the fixture (the fixture itself is read-only)."""
    copy = tmp_path / "project"
    shutil.copytree(FIXTURE, copy, symlinks=True)
    for folder, _, files in os.walk(copy):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return copy


def files_in(root: Path) -> set[str]:
    return {
        (Path(folder) / name).relative_to(root).as_posix()
        for folder, _, names in os.walk(root)
        for name in names
        if not (Path(folder) / name).relative_to(root).as_posix().startswith("maos-import/")
    }


def report_of(result: ImportResult, path: str) -> dict[str, Any]:
    return next(report.to_json() for report in result.files if report.path == path)


# --------------------------------------------------------------------------- the real output


def test_the_fixture_imports_into_a_plan_that_maos_plan_validate_accepts(project: Path) -> None:
    done = maos("import", "claude-flow", project, "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    listed = {entry["path"] for entry in document["files"]}
    assert listed == files_in(project)  # every input file, the 98 agent definitions included
    assert len([path for path in listed if path.startswith(".claude/agents/")]) == 98
    for entry in document["files"]:
        assert entry["outcome"] in ("converted", "partly converted", "not converted")
        assert entry["became"] or entry["not_converted"], entry  # what became of it, or why not
    out = project / "maos-import"
    assert sorted(os.listdir(out)) == ["import-report.json", "plan.yaml", "state.json"]
    checked = maos("plan", "validate", out / "plan.yaml", cwd=project)
    assert checked.returncode == 0, checked.stderr
    assert "team: worker-1..3" in checked.stdout
    assert "coder (" in checked.stdout
    assert json.loads((out / "state.json").read_text()) == {}  # its memory table is empty


def test_the_fixture_agent_records_become_a_team_with_roles_from_claude_agents(project: Path) -> None:
    result = import_claude_flow(project)
    team = {member.base_id: member for member in result.plan.agents}
    assert {name: (m.role, m.count, m.model) for name, m in team.items()} == {
        "worker": ("general", 3, None),
        "coder": ("coder", 1, "sonnet"),
        "tester": ("tester", 1, "sonnet"),
    }
    assert result.placeholder
    assert [task.id for task in result.plan.tasks] == ["objective"]
    hive = report_of(result, ".claude-flow/hive-mind/state.json")
    assert any("queen" in line for line in hive["not_converted"])
    assert any("no objective in this file" in line for line in hive["not_converted"])
    memory = report_of(result, ".swarm/memory.db")
    assert memory["outcome"] == "not converted"
    assert any("memory_entries is empty" in line for line in memory["not_converted"])
    duplicate = report_of(result, ".claude/agents/development/backend/dev-backend-api.md")
    assert "already defined by .claude/agents/development/dev-backend-api.md" in duplicate["not_converted"][0]


def test_the_text_report_lists_every_file_and_the_next_steps(project: Path) -> None:
    done = maos("import", "claude-flow", project, "--out", project / "out")
    assert done.returncode == 0, done.stderr
    for path in files_in(project) - {p for p in files_in(project) if p.startswith("out/")}:
        assert path in done.stdout
    assert "next: cd " in done.stdout
    assert "plan validate" in done.stdout
    again = maos("import", "claude-flow", project, "--out", project / "out")
    assert again.returncode == 2
    assert "--force" in again.stderr
    assert "Traceback" not in again.stderr
    assert maos("import", "claude-flow", project, "--out", project / "out", "--force").returncode == 0


# --------------------------------------------------------------------------- synthetic sessions


def add_memory_rows(db: Path, rows: list[tuple[str, str, object, str, int | None]]) -> None:
    """Rows in the fixture's own ``memory_entries`` schema: (namespace, key, content, status, expires_at)."""
    with sqlite3.connect(db) as connection:
        for number, (namespace, key, content, status, expires_at) in enumerate(rows):
            connection.execute(
                "INSERT INTO memory_entries (id, key, namespace, content, status, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (f"mem-{number}", key, namespace, content, status, expires_at),
            )
    connection.close()


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def test_synthetic_sessions_tasks_workflows_and_memory_become_plan_and_state(project: Path) -> None:
    hive = json.loads((project / ".claude-flow/hive-mind/state.json").read_text())
    hive["objective"] = "Build a login API"
    hive["sharedMemory"] = {"api/schema": {"routes": ["/login"]}, "decision": "use JWT"}
    write_json(project / ".claude-flow/hive-mind/state.json", hive)
    swarms = json.loads((project / ".claude-flow/swarm/swarm-state.json").read_text())
    swarm = swarms["swarms"]["swarm-1795618865940-p41urb"]
    swarm["tasks"] = ["task-1-aaaaaa", "task-2-bbbbbb"]
    write_json(project / ".claude-flow/swarm/swarm-state.json", swarms)
    task = {
        "type": "feature",
        "priority": "high",
        "status": "pending",
        "progress": 0,
        "tags": [],
        "createdAt": "2026-11-25T15:01:08.000Z",
        "startedAt": None,
        "completedAt": None,
    }
    write_json(
        project / ".claude-flow/tasks/store.json",
        {
            "tasks": {
                "task-1-aaaaaa": {
                    **task,
                    "taskId": "task-1-aaaaaa",
                    "description": "Write the login endpoint",
                    "assignedTo": ["agent-1795618866262-0arosm"],
                },
                "task-2-bbbbbb": {
                    **task,
                    "taskId": "task-2-bbbbbb",
                    "description": "Test the login endpoint",
                    "assignedTo": ["agent-1795618866607-wox0py"],
                    "dependencies": ["task-1-aaaaaa"],
                },
                "task-3-cccccc": {
                    **task,
                    "taskId": "task-3-cccccc",
                    "description": "Old work",
                    "status": "completed",
                },
                "task-4-dddddd": {**task, "taskId": "task-4-dddddd", "description": 42},
            },
            "version": "3.0.0",
        },
    )
    write_json(
        project / ".claude-flow/workflows/store.json",
        {
            "workflows": {
                "workflow-1-wf": {
                    "workflowId": "workflow-1-wf",
                    "name": "release",
                    "status": "ready",
                    "currentStep": 0,
                    "variables": {},
                    "createdAt": "2026-11-25T15:02:00.000Z",
                    "steps": [
                        {
                            "stepId": "step-1",
                            "name": "Changelog",
                            "type": "task",
                            "config": {"prompt": "Write it"},
                            "status": "pending",
                        },
                        {
                            "stepId": "step-2",
                            "name": "Wait",
                            "type": "wait",
                            "config": {"ms": 10},
                            "status": "pending",
                        },
                        {
                            "stepId": "step-3",
                            "name": "Tag",
                            "type": "task",
                            "config": {},
                            "status": "pending",
                        },
                    ],
                }
            },
            "templates": {"feature": {}},
            "version": "3.0.0",
        },
    )
    prompt = project / ".hive-mind/sessions/hive-mind-prompt-hive-42.txt"
    prompt.parent.mkdir(parents=True)
    prompt.write_text(
        "🎯 Objective: Add rate limiting\n\n🎯 YOUR OBJECTIVE:\nAdd rate limiting\nto /login\n\n⚠️ x\n"
    )
    future_ms = int(time.time() * 1000) + 86_400_000
    add_memory_rows(
        project / ".swarm/memory.db",
        [
            ("default", "auth/method", '{"kind": "jwt"}', "active", None),
            ("default", "note", "plain words", "active", future_ms),
            ("team a", "key with spaces", "x", "active", None),
            ("default", "gone", "x", "deleted", None),
            ("default", "old", "x", "active", 1000),
            ("default", "big", "y" * 300_000, "active", None),
            ("default", "binary", b"\x00\x01", "active", None),
        ],
    )
    result = import_claude_flow(project)
    validate_plan(result.plan, "imported")
    tasks = result.plan.by_id()
    assert set(tasks) == {
        "hive-mind",
        "hive-42",
        "task-1-aaaaaa",
        "task-2-bbbbbb",
        "workflow-1-wf-step-1",
        "workflow-1-wf-step-3",
    }
    assert tasks["hive-mind"].prompt == "Build a login API"
    assert tasks["hive-42"].prompt == "Add rate limiting\nto /login"
    assert tasks["task-1-aaaaaa"].role == "coder"
    assert tasks["task-1-aaaaaa"].priority == 1
    assert tasks["task-2-bbbbbb"].role == "tester"
    assert tasks["task-2-bbbbbb"].depends_on == ("task-1-aaaaaa",)
    assert tasks["workflow-1-wf-step-3"].depends_on == ("workflow-1-wf-step-1",)
    assert not result.placeholder
    assert result.state == {
        "claude-flow/hive-mind/api/schema": {"routes": ["/login"]},
        "claude-flow/hive-mind/decision": "use JWT",
        "claude-flow/memory/default/auth/method": {"kind": "jwt"},
        "claude-flow/memory/default/note": "plain words",
        "claude-flow/memory/team_a/key_with_spaces": "x",
    }
    memory = report_of(result, ".swarm/memory.db")
    assert memory["outcome"] == "partly converted"
    reasons = "\n".join(memory["not_converted"])
    for word in ("'gone': deleted", "'old': expired", "'big': 300000 bytes", "'binary': its content is blob"):
        assert word in reasons
    store = report_of(result, ".claude-flow/tasks/store.json")
    assert any("already completed" in line for line in store["not_converted"])
    assert any("'task-4-dddddd': no 'description'" in line for line in store["not_converted"])
    flows = report_of(result, ".claude-flow/workflows/store.json")
    assert any("'wait' step" in line for line in flows["not_converted"])
    assert any("template 'feature'" in line for line in flows["not_converted"])
    # And through the CLI: the written plan passes `maos plan validate`, state.json holds the keys.
    done = maos("import", "claude-flow", project, "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert {entry["path"] for entry in document["files"]} == files_in(project)
    assert '"maos","state","set"' in document["state_loading"]
    assert maos("plan", "validate", project / "maos-import/plan.yaml", cwd=project).returncode == 0
    assert json.loads((project / "maos-import/state.json").read_text()) == result.state


# --------------------------------------------------------------------------- hostile inputs


def refused(project: Path, *needles: str) -> str:
    done = maos("import", "claude-flow", project)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    assert "internal error" not in done.stderr
    for needle in needles:
        assert needle in done.stderr
    assert not (project / "maos-import").exists()  # nothing written
    return done.stderr


def test_a_missing_or_unusable_folder_is_exit_2(tmp_path: Path) -> None:
    refused(tmp_path / "nope", "no such folder")
    (tmp_path / "file").write_text("x")
    refused(tmp_path / "file", "not a folder")
    refused(tmp_path, "not a Claude Flow project")
    with pytest.raises(ImportSourceError, match="no such folder"):
        import_claude_flow(tmp_path / "nope")


def test_a_corrupt_memory_db_is_exit_2_naming_it(project: Path) -> None:
    db = project / ".swarm/memory.db"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    refused(project, ".swarm/memory.db", "nothing written")
    db.write_text("not a database at all")
    refused(project, ".swarm/memory.db: not an SQLite database")


def test_a_memory_db_without_the_table_or_with_a_view_in_its_place_is_exit_2(project: Path) -> None:
    db = project / ".swarm/memory.db"
    db.unlink()
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE t (x)")
        connection.execute(
            "CREATE VIEW memory_entries AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
            "SELECT n AS key, 'd' AS namespace, 'c' AS content FROM r"
        )  # a view that never ends: never run
    connection.close()
    refused(project, ".swarm/memory.db: no memory_entries table")


@pytest.mark.parametrize(
    ("path", "content", "needle"),
    [
        (".claude-flow/agents.json", b"\x89PNG\r\n\x1a\n\x00\x00binary", "not UTF-8 text"),
        (
            ".claude-flow/agents.json",
            b'{"agents": "everyone"}',
            "field 'agents': expected an object or a list",
        ),
        (".claude-flow/agents.json", b"[1, 2]", "expected an object with 'agents', got a list"),
        (".claude-flow/hive-mind/state.json", b"[" * 100_000 + b"]" * 100_000, "refused: nested"),
        (".claude-flow/swarm/swarm-state.json", b'{"swarms": 1', "not valid JSON"),
        (".mcp.json", b'{"mcpServers": []}', "field 'mcpServers': expected an object"),
    ],
)
def test_a_file_that_is_not_what_it_claims_is_exit_2_naming_it(
    project: Path, path: str, content: bytes, needle: str
) -> None:
    (project / path).write_bytes(content)
    refused(project, f"{path}: ", needle)


def test_a_huge_json_file_is_refused_unread(project: Path) -> None:
    with open(project / ".claude-flow/agents.json", "wb") as file:
        file.truncate(MAX_JSON_BYTES + 1)
    refused(project, ".claude-flow/agents.json: the file is larger than the limit")


def test_records_of_the_wrong_type_are_left_out_one_by_one(project: Path) -> None:
    write_json(
        project / ".claude-flow/agents.json",
        {
            "agents": {
                "a": 5,
                "b": {"agentType": 7},
                "c": {"agentId": "c", "agentType": "coder", "model": ["x"]},
                "d": {"agentId": "d" * 500, "agentType": "x" * 500},
            }
        },
    )
    write_json(project / ".claude-flow/hive-mind/state.json", {"workers": [3, None, "w-1"], "objective": 12})
    write_json(project / ".claude-flow/tasks/store.json", {"tasks": [None, {"description": "a\x00b"}, {}]})
    result = import_claude_flow(project)
    validate_plan(result.plan, "imported")
    agents = report_of(result, ".claude-flow/agents.json")
    assert agents["outcome"] == "partly converted"
    assert "agents 'a': not an object (a number)" in agents["not_converted"]
    assert any("'b': no 'agentType'" in line for line in agents["not_converted"])
    assert any("field 'model'" in line for line in agents["not_converted"])
    hive = report_of(result, ".claude-flow/hive-mind/state.json")
    assert "workers[0]: expected an agent id, got a number" in hive["not_converted"]
    assert "field 'objective': expected text, got a number" in hive["not_converted"]
    tasks = report_of(result, ".claude-flow/tasks/store.json")
    assert any("NUL" in line for line in tasks["not_converted"]), tasks
    assert all(len(member.base_id) <= 60 for member in result.plan.agents)


def test_symlinks_out_of_the_project_are_not_followed(project: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.md"
    secret.write_text("---\nname: stolen\n---\nsecret prompt\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    write_json(outside / "store.json", {"tasks": {"t": {"description": "from outside"}}})
    (project / ".claude/agents/stolen.md").symlink_to(secret)
    (project / ".claude-flow/tasks").symlink_to(outside)
    (project / ".claude-flow/loop").symlink_to(project / ".claude-flow")
    (project / ".claude-flow/inside.json").symlink_to(project / ".claude-flow/agents.json")
    os.mkfifo(project / ".claude-flow/pipe")
    (project / ".claude-flow/blob.bin").write_bytes(os.urandom(4096))
    result = import_claude_flow(project)
    assert "stolen" not in {member.role for member in result.plan.agents}
    assert all(task.prompt != "from outside" for task in result.plan.tasks)
    assert (
        "outside the project: not followed"
        in report_of(result, ".claude/agents/stolen.md")["not_converted"][0]
    )
    assert "outside the project: not followed" in report_of(result, ".claude-flow/tasks")["not_converted"][0]
    assert "a folder: not followed" in report_of(result, ".claude-flow/loop")["not_converted"][0]
    assert "not a regular file" in report_of(result, ".claude-flow/pipe")["not_converted"][0]
    assert "not a Claude Flow file" in report_of(result, ".claude-flow/blob.bin")["not_converted"][0]
    assert report_of(result, ".claude-flow/inside.json")["outcome"] == "not converted"
    done = maos("import", "claude-flow", project, "--json")
    assert done.returncode == 0, done.stderr
    assert "secret prompt" not in done.stdout


def test_terminal_escapes_in_file_names_are_shown_escaped(project: Path) -> None:
    (project / ".claude-flow/\x1b[2Jevil.json").write_text("{}")
    done = maos("import", "claude-flow", project)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    assert "\\x1b[2Jevil.json" in done.stdout


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
record = st.dictionaries(
    st.sampled_from(
        [
            "agentId",
            "agentType",
            "type",
            "model",
            "config",
            "taskId",
            "description",
            "status",
            "priority",
            "assignedTo",
            "dependencies",
            "steps",
            "objective",
            "workers",
            "queen",
        ]
    ),
    json_values,
    max_size=8,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    agents=st.dictionaries(st.text(min_size=1, max_size=12), record | json_values, max_size=5),
    tasks=st.lists(record | json_values, max_size=5),
    hive=record,
    workflows=st.dictionaries(st.text(min_size=1, max_size=8), record | json_values, max_size=3),
)
def test_any_records_give_a_valid_plan_or_a_reason(
    project: Path, agents: dict[str, Any], tasks: list[Any], hive: dict[str, Any], workflows: dict[str, Any]
) -> None:
    shutil.rmtree(project / ".claude", ignore_errors=True)  # 98 role files per example: too slow
    write_json(project / ".claude-flow/agents.json", {"agents": agents})
    write_json(project / ".claude-flow/tasks/store.json", {"tasks": tasks})
    write_json(project / ".claude-flow/hive-mind/state.json", hive)
    write_json(project / ".claude-flow/workflows/store.json", {"workflows": workflows})
    result = import_claude_flow(project)
    validate_plan(result.plan, "imported")
    assert result.errors == [] or all("expected" in line for line in result.errors)
    for report in result.files:
        assert report.error or report.became or report.not_converted, report


def test_the_state_loading_line_seeds_a_real_run(tmp_path: Path) -> None:
    """state.json's one-line loader, as the first command task of a run, writes every key."""
    from maos.importers.claude_flow import state_loading_line

    state = {"claude-flow/memory/default/note": "plain words", "claude-flow/hive-mind/api": {"a": [1, 2]}}
    (tmp_path / "state.json").write_text(json.dumps(state))
    plan = {
        "name": "seed",
        "tasks": [
            {"id": "seed-state", "command": state_loading_line(str(tmp_path / "state.json"))},
            {
                "id": "read",
                "depends_on": ["seed-state"],
                "command": "maos state get claude-flow/hive-mind/api",
            },
        ],
    }
    write_json(tmp_path / "plan.json", plan)
    done = maos("run", tmp_path / "plan.json", "--store", f"sqlite:///{tmp_path}/s.db", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    outputs = list((tmp_path / ".maos" / "runs").glob("*/outputs/read.1.out"))
    assert len(outputs) == 1
    assert json.loads(outputs[0].read_text()) == {"a": [1, 2]}


# --------------------------------------------------------------------------- records no plan may hold


def imported(project: Path, *args: str | Path) -> dict[str, Any]:
    """``maos import claude-flow`` succeeds and ``maos plan validate`` accepts what it wrote."""
    done = maos("import", "claude-flow", project, "--json", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    document: dict[str, Any] = json.loads(done.stdout)
    checked = maos("plan", "validate", Path(document["out"]) / "plan.yaml", cwd=project)
    assert checked.returncode == 0, checked.stderr[-3000:]
    return document


def file_entry(document: dict[str, Any], path: str) -> dict[str, Any]:
    return next(entry for entry in document["files"] if entry["path"] == path)


def test_a_role_name_or_model_a_plan_cannot_hold_is_left_out_with_its_reason(project: Path) -> None:
    long_name = "r" * 300
    (project / ".claude/agents/long.md").write_text(f"---\nname: {long_name}\ndescription: x\n---\nbody\n")
    write_json(
        project / ".claude-flow/agents.json",
        {
            "agents": {
                "a1": {"agentId": "a1", "agentType": long_name},
                "a2": {"agentId": "a2", "agentType": "_x", "model": " "},
                "a3": {"agentId": "a3", "agentType": "coder", "model": "\ud800"},
            }
        },
    )
    document = imported(project)
    role = file_entry(document, ".claude/agents/long.md")
    assert role["outcome"] == "not converted"
    assert "at most 256 bytes: no plan can name this role" in role["not_converted"][0]
    agents = file_entry(document, ".claude-flow/agents.json")
    assert any("agent 'a2': field 'model'" in line for line in agents["not_converted"])
    assert any(
        "agent 'a3': field 'model'" in line and "surrogate" in line for line in agents["not_converted"]
    )
    team = {member["id"]: member for member in document["team"]}
    assert team["r" * 60].get("role", "general") == "general"  # the record stays, as a generalist
    assert "x" in team
    assert team["coder"].get("model") is None


# --------------------------------------------------------------------------- one bad record


def test_cycles_self_dependencies_and_shared_source_ids_give_one_task_each(project: Path) -> None:
    hive = json.loads((project / ".claude-flow/hive-mind/state.json").read_text())
    hive.pop("hiveId", None)
    hive["objective"] = "objective from state.json"
    write_json(project / ".claude-flow/hive-mind/state.json", hive)
    prompt = project / ".hive-mind/sessions/hive-mind-prompt-hive-mind.txt"
    prompt.parent.mkdir(parents=True)
    prompt.write_text("Objective: objective from the prompt file\n")
    write_json(
        project / ".claude-flow/swarm/swarm-state.json",
        {
            "swarms": {
                "s1": {"swarmId": "s1", "objective": "obj one"},
                "s2": {"swarmId": "s1", "objective": "obj two"},
            }
        },
    )
    write_json(
        project / ".claude-flow/tasks/store.json",
        {
            "tasks": [
                {"taskId": "A", "description": "do a", "dependencies": ["B"]},
                {"taskId": "B", "description": "do b", "dependencies": ["A"]},
                {"taskId": "C", "description": "do c", "dependencies": ["C", "A"]},
                {"taskId": "a", "description": "differs from A in case only"},
                {"taskId": "w.1", "description": "next to step 1 of workflow w"},
            ]
        },
    )
    write_json(
        project / ".claude-flow/workflows/store.json",
        {"workflows": {"w": {"steps": [{"type": "task", "name": "one"}, {"type": "task", "name": "two"}]}}},
    )
    document = imported(project)
    plan = load_plan(project / "maos-import/plan.yaml")
    prompts = {task.prompt: task for task in plan.tasks}
    assert set(prompts) == {
        "objective from state.json",
        "objective from the prompt file",
        "obj one",
        "obj two",
        "do a",
        "do b",
        "do c",
        "differs from A in case only",
        "next to step 1 of workflow w",
        "one",
        "two",
    }
    assert prompts["do a"].depends_on == (prompts["do b"].id,)
    assert prompts["do b"].depends_on == ()  # the dependency closing the cycle
    assert prompts["do c"].depends_on == (prompts["do a"].id,)
    assert prompts["two"].depends_on == (prompts["one"].id,)
    reasons = file_entry(document, ".claude-flow/tasks/store.json")["not_converted"]
    assert "task record 'B': dependency 'A' would close a cycle ('A' -> 'B' -> 'A'): dropped" in reasons
    assert "task record 'C': depends on itself: the dependency is dropped" in reasons


def test_a_long_dependency_cycle_is_broken_once(project: Path) -> None:
    count = 2000
    write_json(
        project / ".claude-flow/tasks/store.json",
        {
            "tasks": [
                {"taskId": f"t{n}", "description": "d", "dependencies": [f"t{(n + 1) % count}"]}
                for n in range(count)
            ]
        },
    )
    result = import_claude_flow(project)
    validate_plan(result.plan, "imported")
    assert sum(len(task.depends_on) for task in result.plan.tasks) == count - 1
    reasons = report_of(result, ".claude-flow/tasks/store.json")["not_converted"]
    cycle = "'t0' -> 't1' -> 't2' -> … -> 't1999' -> 't0'"
    assert reasons == [f"task record 't1999': dependency 't0' would close a cycle ({cycle}): dropped"]


# --------------------------------------------------------------------------- a plan's limits


@pytest.mark.parametrize(
    ("records", "workers"),
    [
        ({f"a{n}": {"agentId": f"a{n}", "agentType": f"type{n}"} for n in range(1200)}, 0),
        ({f"a{n}": {"agentId": f"a{n}", "agentType": "coder"} for n in range(5000)}, 3),
    ],
    ids=["1200 types: the first 1000 keep one each", "5000 coders: each kind an equal share"],
)
def test_more_agent_records_than_a_team_may_have_make_a_capped_team(
    project: Path, records: dict[str, Any], workers: int
) -> None:
    write_json(project / ".claude-flow/agents.json", {"agents": records})
    document = imported(project)
    assert sum(member.get("count", 1) for member in document["team"]) == 1000
    assert any("the team keeps 1000 agents" in note for note in document["notes"])
    reasons = file_entry(document, ".claude-flow/agents.json")["not_converted"]
    assert any("left out:" in line and "more than a team may have (1000)" in line for line in reasons)
    assert len(reasons) <= 51  # listed, then counted
    kept = sum(member.get("count", 1) for member in document["team"] if member["id"] == "worker")
    assert kept == workers  # the hive-mind's 3 workers


def test_task_text_past_what_a_plan_file_may_hold_is_left_out(project: Path) -> None:
    write_json(
        project / ".claude-flow/tasks/store.json",
        {"tasks": [{"taskId": f"t{n}", "description": "x" * 6_000_000} for n in range(3)]},
    )
    document = imported(project)
    assert document["plan"]["tasks"] == ["t0"]
    reasons = file_entry(document, ".claude-flow/tasks/store.json")["not_converted"]
    assert sum("left out: its text would take the plan's tasks past" in line for line in reasons) == 2


def test_a_project_folder_whose_name_is_not_utf8_imports(tmp_path: Path) -> None:
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/p\xff"))
    shutil.copytree(FIXTURE, folder, symlinks=True)
    os.chmod(folder, 0o755)
    imported(folder)


# --------------------------------------------------------------------------- where it writes


def test_a_symlinked_output_folder_is_refused(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (project / "maos-import").symlink_to(elsewhere)
    done = maos("import", "claude-flow", project)
    assert done.returncode == 2, done.stderr
    assert f"{project / 'maos-import'}: a symbolic link" in done.stderr.replace("\n", "")
    assert "Traceback" not in done.stderr
    assert os.listdir(elsewhere) == []
    out = tmp_path / "out"
    out.mkdir()
    (out / "plan.yaml").symlink_to(tmp_path / "victim.yaml")  # dangling: still an earlier file
    assert maos("import", "claude-flow", project, "--out", out).returncode == 2
    assert maos("import", "claude-flow", project, "--out", out, "--force").returncode == 0
    assert not (tmp_path / "victim.yaml").exists()
    assert not (out / "plan.yaml").is_symlink()
