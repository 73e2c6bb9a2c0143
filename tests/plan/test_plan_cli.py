"""``maos plan validate|show`` run as a real process, on the examples and on each plan error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "maos" / "examples" / "plans"


def maos(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maos", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"},
    )


@pytest.mark.parametrize(
    ("name", "summary"),
    [
        ("example.yaml", "OK: plan 'example', 2 tasks, 2 levels"),
        ("diamond.json", "OK: plan 'diamond', 5 tasks, 3 levels"),
    ],
)
def test_validate_examples(name: str, summary: str) -> None:
    result = maos("plan", "validate", EXAMPLES / name)
    assert result.returncode == 0, result.stderr
    assert result.stdout == summary + "\n"
    assert result.stderr == ""


def test_show_example() -> None:
    result = maos("plan", "show", EXAMPLES / "example.yaml")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Plan 'example'" in out
    assert "2 tasks, 2 levels, max width 1" in out
    assert "Critical path (2 tasks): design -> build" in out
    assert "design" in out.split("Critical path")[1]


def test_show_proposes_a_team_for_roles_that_are_no_agent_ids(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: p\ntasks:\n"
        "  - {id: a, role: Topology Optimizer, prompt: hi}\n"
        "  - {id: b, role: ../x, prompt: hi}\n"
        "  - {id: c, role: Topology/Optimizer, prompt: hi}\n"
    )
    result = maos("plan", "show", plan)
    assert result.returncode == 0, result.stderr
    team = next(line for line in result.stdout.splitlines() if line.startswith("Team proposed"))
    assert team.startswith("Team proposed: Topology-Optimizer x1, x x1, Topology-Optimizer-2 x1 ")
    assert "--agent 'Topology Optimizer:1' --agent ../x:1" in team  # runnable as shown


def test_validate_notes_a_resource_only_maos_run_can_give(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: p\ntasks:\n  - {id: a, command: 'true', resources: {gpu: 1}}\n")
    result = maos("plan", "validate", plan)
    assert result.returncode == 0, result.stderr
    assert "note: resource 'gpu' has no capacity in the plan: run it with --resource gpu=N" in result.stdout
    document = json.loads(maos("plan", "validate", "--json", plan).stdout)
    assert document["ok"] is True
    assert document["notes"] == ["resource 'gpu' has no capacity in the plan: run it with --resource gpu=N"]


def test_show_diamond_lists_levels() -> None:
    result = maos("plan", "show", EXAMPLES / "diamond.json")
    assert result.returncode == 0, result.stderr
    assert "5 tasks, 3 levels, max width 3" in result.stdout
    assert "Critical path (3 tasks): fetch -> lint -> report" in result.stdout
    assert "lint, test, docs" in result.stdout


def test_show_json() -> None:
    result = maos("plan", "show", "--json", EXAMPLES / "diamond.json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == {
        "file": str(EXAMPLES / "diamond.json"),
        "name": "diamond",
        "description": "One task fans out to three in parallel, which join into a report.",
        "tasks": 5,
        "levels": [["fetch"], ["lint", "test", "docs"], ["report"]],
        "depth": 3,
        "max_width": 3,
        "critical_path": ["fetch", "lint", "report"],
        "critical_path_length": 3,
        "roots": ["fetch"],
        "leaves": ["report"],
    }


def test_show_a_wide_plan_abbreviates_long_levels(tmp_path: Path) -> None:
    path = tmp_path / "wide.json"
    path.write_text(json.dumps({"name": "wide", "tasks": [{"id": f"t{i}"} for i in range(100)]}))
    result = maos("plan", "show", path)
    assert result.returncode == 0, result.stderr
    assert "(60 more)" in result.stdout
    assert len(json.loads(maos("plan", "show", "--json", path).stdout)["levels"][0]) == 100


def test_missing_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    for command in ("validate", "show"):
        result = maos("plan", command, path)
        assert result.returncode == 2
        assert result.stderr == f"{path}: file not found\n"
        assert result.stdout == ""


# One case per plan error of the issue: the file content and what its line must name.
ERRORS: dict[str, tuple[str, list[str]]] = {
    "unknown dependency": (
        "name: x\ntasks:\n  - id: design\n  - id: build\n    depends_on: [desgn]\n",
        ["task 'build' (tasks[1])", "field 'depends_on'", "unknown task 'desgn'", "did you mean 'design'?"],
    ),
    "duplicate id": (
        "name: x\ntasks:\n  - id: build\n  - id: build\n",
        ["task 'build' (tasks[1])", "field 'id'", "duplicate id 'build'"],
    ),
    "self-dependency": (
        "name: x\ntasks:\n  - id: build\n    depends_on: [build]\n",
        ["task 'build' (tasks[0])", "field 'depends_on'", "depends on itself"],
    ),
    "cycle": (
        "name: x\ntasks:\n"
        "  - {id: a, depends_on: [b]}\n  - {id: b, depends_on: [c]}\n  - {id: c, depends_on: [a]}\n",
        ["task 'a' (tasks[0])", "field 'depends_on'", "a -> b -> c -> a"],
    ),
    "empty plan": ("name: x\ntasks: []\n", ["field 'tasks'", "the plan has no tasks"]),
    "unknown field": (
        "name: x\ntasks:\n  - id: build\n    foo: 1\n",
        ["task 'build' (tasks[0])", "unknown field 'foo'"],
    ),
    "wrong type priority": (
        'name: x\ntasks:\n  - id: build\n    priority: "high"\n',
        ["task 'build' (tasks[0])", "field 'priority'", "expected an integer", 'got "high"'],
    ),
    "wrong type depends_on": (
        "name: x\ntasks:\n  - id: build\n    depends_on: 5\n",
        ["task 'build' (tasks[0])", "field 'depends_on'", "expected a list of task ids, got 5"],
    ),
    "wrong type timeout_s": (
        "name: x\ntasks:\n  - id: build\n    timeout_s: -1\n",
        ["task 'build' (tasks[0])", "field 'timeout_s'", "greater than 0, got -1"],
    ),
    "invalid yaml": ("name: x\ntasks:\n  - id: a\n   prompt: b\n", ["line 4, column 4", "invalid YAML"]),
    "blank file": ("", ["the plan is empty"]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_each_plan_error_exits_2_and_names_file_task_and_field(tmp_path: Path, case: str) -> None:
    text, expected = ERRORS[case]
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    result = maos("plan", "validate", path)
    assert result.returncode == 2, (case, result.stdout, result.stderr)
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{path}: ")
    for part in expected:
        assert part in line, (case, line)


def test_show_refuses_an_invalid_plan_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(ERRORS["cycle"][0])
    validate, show = maos("plan", "validate", path), maos("plan", "show", "--json", path)
    assert show.returncode == validate.returncode == 2
    assert show.stderr == validate.stderr
    assert show.stdout == ""


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text('{\n  "name": "x",\n  "tasks": [\n    {"id": "a"}\n  \n}\n')
    result = maos("plan", "validate", path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{path}: line 6, column 1: invalid JSON: ")


def test_more_than_10000_tasks(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"name": "big", "tasks": [{"id": f"t{i}"} for i in range(10_001)]}))
    result = maos("plan", "validate", path)
    assert result.returncode == 2
    assert result.stderr == f"{path}: field 'tasks': the plan has 10001 tasks, more than the limit of 10000\n"


def test_every_problem_is_printed(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        "name: x\ntasks:\n  - id: a\n    depends_on: [zz]\n  - id: a\n  - id: b\n    depends_on: [b]\n"
    )
    result = maos("plan", "validate", path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{path}: task '") for line in lines)


def test_ten_thousand_tasks_validate(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    tasks = [{"id": f"t{i}", "depends_on": [f"t{i // 2}"] if i else []} for i in range(10_000)]
    path.write_text(json.dumps({"name": "big", "tasks": tasks}))
    result = maos("plan", "validate", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "OK: plan 'big', 10000 tasks, 15 levels\n"
