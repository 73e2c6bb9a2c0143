"""Loading plan files: syntax, shape and field errors, each one self-contained line."""

from __future__ import annotations

from pathlib import Path

import pytest

import maos.plan
from maos.errors import CycleError, PlanError
from maos.model import MAX_PLAN_TASKS, Plan, TaskSpec
from maos.plan import load_plan, parse_plan_text, plan_from_data
from maos.plan.loader import PLAN_FIELD_EXPECTS, TASK_FIELD_EXPECTS

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "maos" / "examples" / "plans"


def problems_of(path: Path, text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def only(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


# --------------------------------------------------------------------------- API and examples


def test_public_api_is_locked() -> None:
    assert maos.plan.__all__ == [
        "PlanAnalysis",
        "analyze_plan",
        "load_plan",
        "parse_plan_text",
        "plan_from_data",
        "read_plan_data",
        "validate_plan",
    ]


def test_field_descriptions_cover_the_model() -> None:
    # A field added to the model without a description here gets pydantic's wording.
    assert list(TASK_FIELD_EXPECTS) == list(TaskSpec.model_fields)
    assert list(PLAN_FIELD_EXPECTS) == list(Plan.model_fields)


def test_example_yaml_from_the_issue() -> None:
    plan = load_plan(EXAMPLES / "example.yaml")
    assert plan.name == "example"
    assert [task.id for task in plan.tasks] == ["design", "build"]
    design, build = plan.tasks
    assert design.prompt == "Write DESIGN.md"
    # A list runs as is; a string runs with sh -c.
    assert design.argv == ["bash", "-c", "sleep 1; echo designed"]
    assert build.argv == ["sh", "-c", "sleep 1; echo built"]
    assert build.depends_on == ("design",)


def test_example_json() -> None:
    plan = load_plan(str(EXAMPLES / "diamond.json"))
    assert plan.name == "diamond"
    assert plan.task("report").depends_on == ("lint", "test", "docs")
    assert plan.task("docs").argv == ["sh", "-c", "sleep 1; echo documented"]


@pytest.mark.parametrize("name", ["plan.yml", "plan.YAML", "plan.txt", "plan"])
def test_other_extensions_read_as_yaml(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("name: x\ntasks:\n  - id: a\n")
    assert load_plan(path).tasks[0].id == "a"


def test_json_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(b'\xef\xbb\xbf{"name": "x", "tasks": [{"id": "a"}]}')
    assert load_plan(path).name == "x"


def test_yaml_merge_keys_may_override(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        "name: x\ntasks:\n  - &base {id: a, role: coder, priority: 1}\n  - {<<: *base, id: b, priority: 5}\n"
    )
    a, b = load_plan(path).tasks
    assert (a.id, a.role, a.priority) == ("a", "coder", 1)
    assert (b.id, b.role, b.priority) == ("b", "coder", 5)


# --------------------------------------------------------------------------- file-level errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert info.value.problems == [f"{path}: file not found"]


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="is a directory"):
        load_plan(tmp_path)


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, "name: x\ntasks:\n  - id: a\n   prompt: b\n"))
    assert line.startswith(f"{path}: line 4, column 4: invalid YAML: ")
    assert "expected '-' indicator" in line


def test_invalid_yaml_scanner_error(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, "name: x\ntasks:\n  - id: @a\n"))
    assert line.startswith(f"{path}: line 3, column 9: invalid YAML: found character")


def test_yaml_with_two_documents(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, "name: x\n---\nname: y\n"))
    assert line.startswith(f"{path}: line 2, column 1: invalid YAML: but found another document")


def test_yaml_control_character(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, 'name: "\x07"\n'))
    assert line.startswith(f"{path}: invalid YAML: unacceptable character")


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    line = only(problems_of(path, '{"name": "x",\n "tasks": [\n  {"id": "a",}\n]}'))
    assert (
        line == f"{path}: line 3, column 14: invalid JSON: Expecting property name enclosed in double quotes"
    )


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    # PyYAML alone would keep the last one and silently drop a dependency.
    path = tmp_path / "plan.yaml"
    text = "name: x\ntasks:\n  - id: a\n    depends_on: [b]\n    depends_on: []\n  - id: b\n"
    line = only(problems_of(path, text))
    assert line.startswith(f"{path}: line 5, column 5: invalid YAML: found duplicate key 'depends_on'")


def test_duplicate_json_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    line = only(problems_of(path, '{"name": "x", "tasks": [{"id": "a", "id": "b"}]}'))
    assert line == f"{path}: invalid JSON: duplicate key 'id' in an object (its keys before it: 'id')"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, b"name: x\ntasks:\n  - id: \xff\n"))
    assert line == f"{path}: line 3: the file is not valid UTF-8 text"


def test_blank_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, "# nothing yet\n"))
    assert line == f"{path}: the plan is empty; expected a mapping with 'name' and 'tasks'"


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, "- a\n- b\n"))
    assert (
        line
        == f"{path}: expected a mapping with 'name' and 'tasks' at the top level, got a list: [\"a\", \"b\"]"
    )


# --------------------------------------------------------------------------- field errors


def test_the_issue_example_message(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    text = "name: x\ntasks:\n  - id: design\n  - id: build\n    depends_on: 5\n"
    assert only(problems_of(path, text)) == (
        f"{path}: task 'build' (tasks[1]): field 'depends_on': expected a list of task ids, got 5"
    )


def test_unknown_task_field(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, "name: x\ntasks:\n  - id: a\n    foo: 1\n"))
    assert line.startswith(f"{path}: task 'a' (tasks[0]): unknown field 'foo' (allowed: id, title, prompt,")


def test_unknown_field_suggests_the_close_one(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, "name: x\ntasks:\n  - id: a\n  - id: b\n    depend_on: [a]\n"))
    assert line == f"{path}: task 'b' (tasks[1]): unknown field 'depend_on'; did you mean 'depends_on'?"


def test_unknown_top_level_field(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, "name: x\nowner: me\ntasks:\n  - id: a\n"))
    assert line == f"{path}: unknown field 'owner' (allowed: {', '.join(Plan.model_fields)})"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("priority", '"high"', 'expected an integer (higher runs first), got "high"'),
        ("priority", "1.5", "expected an integer (higher runs first), got 1.5"),
        ("depends_on", "5", "expected a list of task ids, got 5"),
        ("depends_on", "a", 'expected a list of task ids, got "a"'),
        ("depends_on", "[1, a]", 'expected a list of task ids, got [1, "a"]'),
        ("timeout_s", "-1", "expected a finite number of seconds greater than 0, got -1"),
        ("timeout_s", "0", "expected a finite number of seconds greater than 0, got 0"),
        ("timeout_s", ".inf", "expected a finite number of seconds greater than 0, got Infinity"),
        ("max_attempts", "0", "expected an integer from 1 to 100, got 0"),
        ("capabilities", "{a: 1}", 'expected a list of strings, got {"a": 1}'),
        ("command", "[]", "got []"),
        ("command", "[echo, 1]", "expected a command string (run with sh -c) or a non-empty list of strings"),
        ("command", "5", "got 5"),
        ("prompt", "[a, b]", 'expected a string, got ["a", "b"]'),
    ],
)
def test_wrong_type(tmp_path: Path, field: str, value: str, expected: str) -> None:
    path = tmp_path / "plan.yaml"
    text = f"name: x\ntasks:\n  - id: first\n  - id: build\n    {field}: {value}\n"
    line = only(problems_of(path, text))
    assert line.startswith(f"{path}: task 'build' (tasks[1]): field '{field}': expected ")
    assert expected in line


def test_invalid_task_id(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, "name: x\ntasks:\n  - id: a b\n"))
    assert line.startswith(f"{path}: task 'a b' (tasks[0]): field 'id': expected a task id (1-64 letters")
    assert line.endswith('got "a b"')


def test_missing_task_id(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, "name: x\ntasks:\n  - id: a\n  - prompt: hello\n"))
    assert line.startswith(f"{path}: tasks[1]: field 'id': required field is missing; expected a task id")


def test_missing_name(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, "tasks:\n  - id: a\n"))
    assert line.startswith(f"{path}: field 'name': required field is missing")


def test_empty_name(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, "name: ''\ntasks:\n  - id: a\n"))
    assert line == f"{path}: field 'name': expected a non-empty string of at most 200 characters, got \"\""


def test_tasks_not_a_list(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, "name: x\ntasks:\n  a: {}\n"))
    assert line == f"{path}: field 'tasks': expected a list of tasks, got {{\"a\": {{}}}}"


def test_task_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, "name: x\ntasks:\n  - id: a\n  - just text\n"))
    assert (
        line
        == f"{path}: tasks[1]: expected a task (a mapping with at least 'id'), got a string: \"just text\""
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    text = (
        "name: x\n"
        "tasks:\n"
        "  - id: design\n"
        "    priority: high\n"
        "    foo: 1\n"
        "  - id: build\n"
        "    depends_on: 5\n"
        "    timeout_s: -1\n"
        "extra: true\n"
    )
    problems = problems_of(path, text)
    assert len(problems) == 5
    assert all(line.startswith(f"{path}: ") for line in problems)
    assert sum("task 'design' (tasks[0])" in line for line in problems) == 2
    assert sum("task 'build' (tasks[1])" in line for line in problems) == 2


def test_long_values_are_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    line = only(problems_of(path, f"name: x\ntasks:\n  - id: a\n    priority: {'9x' * 100}\n"))
    assert line.endswith('..."') or line.endswith("...")
    assert len(line) < 250


# --------------------------------------------------------------------------- structural errors via files


def test_structural_errors_come_after_loading(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    text = (
        "name: x\ntasks:\n"
        "  - {id: a, depends_on: [c]}\n  - {id: b, depends_on: [a]}\n  - {id: c, depends_on: [b]}\n"
    )
    path.write_text(text)
    with pytest.raises(CycleError) as info:
        load_plan(path)
    assert info.value.problems == [
        f"{path}: task 'a' (tasks[0]): field 'depends_on': dependency cycle a -> c -> b -> a "
        "(each task depends on the next)"
    ]
    assert info.value.cycle == ["a", "c", "b", "a"]


# --------------------------------------------------------------------------- data and text


def test_plan_from_data_for_planners() -> None:
    plan = plan_from_data({"name": "p", "tasks": [{"id": "a"}, {"id": "b", "depends_on": ["a"]}]}, "planner")
    assert [task.id for task in plan.tasks] == ["a", "b"]


def test_plan_from_data_errors_name_the_source() -> None:
    with pytest.raises(PlanError) as info:
        plan_from_data({"name": "p", "tasks": [{"id": "a", "depends_on": ["zz"]}]}, "planner reply 2")
    assert info.value.problems == [
        "planner reply 2: task 'a' (tasks[0]): field 'depends_on': unknown task 'zz' (no task has this id)"
    ]


def test_plan_from_data_accepts_tuples() -> None:
    with pytest.raises(PlanError) as info:
        plan_from_data({"name": "p", "tasks": ({"id": "a", "priority": "x"},)}, "src")
    assert only(info.value.problems).startswith("src: task 'a' (tasks[0]): field 'priority': ")


def test_too_many_tasks_is_refused_before_parsing_them() -> None:
    data = {"name": "big", "tasks": [{"id": "t"}] * (MAX_PLAN_TASKS + 1)}
    with pytest.raises(PlanError) as info:
        plan_from_data(data, "big.yaml")
    assert info.value.problems == [
        f"big.yaml: field 'tasks': the plan has {MAX_PLAN_TASKS + 1} tasks, "
        f"more than the limit of {MAX_PLAN_TASKS}"
    ]


def test_parse_plan_text() -> None:
    assert parse_plan_text('{"a": [1]}', "s", syntax="json") == {"a": [1]}
    assert parse_plan_text("a: [1]", "s") == {"a": [1]}
    with pytest.raises(PlanError, match=r"^reply: line 2, column 1: invalid YAML"):
        parse_plan_text("a: [1", "reply")
