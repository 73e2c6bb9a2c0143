"""Decomposition templates: each renders a valid plan, keywords choose one, and
``maos plan "TASK" --template NAME`` prints a plan without any model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from maos.errors import PlanError
from maos.model import Plan
from maos.plan import load_plan, parse_plan_text, plan_from_data, validate_plan
from maos.plan import templates as templates_module
from maos.plan.templates import (
    MAX_RESEARCHERS,
    Template,
    choose_template,
    get_template,
    keyword_matches,
    list_templates,
    render_template,
    task_title,
)

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["bugfix", "feature", "refactor", "research", "review"]
ROLES = {"designer", "implementer", "tester", "writer", "reviewer", "researcher"}
TASK = "Add a login endpoint"


def maos(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``maos`` as a user runs it, with no API key, no base URL and no model server."""
    return subprocess.run(
        [sys.executable, "-m", "maos", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1", **(env or {})},
    )


# --------------------------------------------------------------------------- the library


def test_the_library() -> None:
    assert [template.name for template in list_templates()] == NAMES
    for template in list_templates():
        assert template.summary
        assert template.keywords
        assert template.source == f"template file {template.name}.yaml"


@pytest.mark.parametrize("name", NAMES)
def test_each_template_renders_a_valid_plan(name: str) -> None:
    plan = render_template(name, TASK)
    validate_plan(plan, name)  # render_template validates too; this says so explicitly
    assert plan.name == f"{name}: {TASK}"
    assert plan.description == TASK
    assert len(plan.tasks) >= 4
    for task in plan.tasks:
        assert task.command is None, "template tasks run on the claude-code runtime"
        assert task.runtime == "claude-code"
        assert task.role in ROLES
        assert task.title
        # Each prompt names the shared goal and says what this task is for.
        assert task.prompt.startswith(f"Shared goal of this run: {TASK}\n")
        assert len(task.prompt) > 300
        if task.depends_on:
            assert "MAOS_INPUTS" in task.prompt, task.id
        assert "{" not in task.prompt.replace("{task}", ""), "no placeholder is left"


@pytest.mark.parametrize("name", NAMES)
def test_each_template_has_parallel_or_sequential_shape_as_documented(name: str) -> None:
    plan = render_template(name, TASK)
    deps = {task.id: task.depends_on for task in plan.tasks}
    expected = {
        "feature": {
            "design": (),
            "implement": ("design",),
            "tests": ("design",),
            "docs": ("design",),
            "review": ("implement", "tests", "docs"),
        },
        "bugfix": {
            "reproduce": (),
            "fix": ("reproduce",),
            "regression-test": ("fix",),
            "review": ("regression-test",),
        },
        "research": {
            "research-1": (),
            "research-2": (),
            "research-3": (),
            "synthesis": ("research-1", "research-2", "research-3"),
        },
        "refactor": {
            "survey": (),
            "safety-net": ("survey",),
            "refactor": ("safety-net",),
            "review": ("refactor",),
        },
        "review": {
            "correctness": (),
            "security": (),
            "performance": (),
            "tests-and-design": (),
            "report": ("correctness", "security", "performance", "tests-and-design"),
        },
    }
    assert deps == expected[name]


def test_research_has_as_many_researchers_as_asked() -> None:
    plan = render_template("research", "Compare Redis and SQLite", researchers=7)
    researchers = [task for task in plan.tasks if task.role == "researcher"]
    assert [task.id for task in researchers] == [f"research-{n}" for n in range(1, 8)]
    assert plan.task("synthesis").depends_on == tuple(task.id for task in researchers)
    assert "researcher 3 of 7" in plan.task("research-3").prompt
    # Five angles, cycled: researcher 6 has the first angle again.
    angles = [task.prompt.split("Your angle: ")[1].split(".\n")[0] for task in researchers]
    assert len(set(angles[:5])) == 5
    assert angles[5] == angles[0]
    assert "7 researchers studied" in plan.task("synthesis").prompt
    assert len(render_template("research", "x", researchers=1).tasks) == 2


@pytest.mark.parametrize("count", [0, MAX_RESEARCHERS + 1])
def test_researchers_out_of_range(count: int) -> None:
    with pytest.raises(PlanError, match=f"researchers must be from 1 to {MAX_RESEARCHERS}, got {count}"):
        render_template("research", "x", researchers=count)


def test_task_text_is_taken_literally() -> None:
    text = 'Handle {task}, {{x}} and {"json": [1]} in the parser\nsecond line: not in the name'
    plan = render_template("feature", text)
    assert plan.description == text
    assert plan.name == 'feature: Handle {task}, {{x}} and {"json": [1]} in the parser'
    assert f"Shared goal of this run: {text}\n" in plan.task("design").prompt


def test_long_task_text_gives_a_short_name() -> None:
    text = "  \n" + "Refactor " + "very " * 100 + "much\nmore"
    title = task_title(text)
    assert len(title) == 80
    assert title.endswith("…")
    plan = render_template("refactor", text)
    assert plan.name == f"refactor: {title}"


def test_unknown_template_and_empty_task() -> None:
    with pytest.raises(
        PlanError, match=r"unknown template 'nope' \(known: bugfix, feature, refactor, research, review\)"
    ):
        render_template("nope", TASK)
    with pytest.raises(PlanError, match="the task text is empty"):
        render_template("feature", " \n ")


def test_a_template_with_an_unknown_placeholder_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = Template(
        name="bad",
        summary="s",
        priority=0,
        keywords=("x",),
        plan={"name": "bad {task}", "tasks": [{"id": "a", "prompt": "{taks}"}]},
        source="template file bad.yaml",
    )
    monkeypatch.setattr(templates_module, "_templates", lambda: {"bad": bad})
    with pytest.raises(PlanError, match=r"template file bad.yaml: unknown placeholder \{taks\}"):
        render_template("bad", TASK)


def test_a_template_whose_plan_is_invalid_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = Template(
        name="bad",
        summary="s",
        priority=0,
        keywords=("x",),
        plan={"name": "bad", "tasks": [{"id": "a", "depends_on": ["a"]}]},
        source="template file bad.yaml",
    )
    monkeypatch.setattr(templates_module, "_templates", lambda: {"bad": bad})
    with pytest.raises(PlanError, match=r"template 'bad': task 'a' .* depends on itself"):
        render_template("bad", TASK)


def test_get_template() -> None:
    feature = get_template("feature")
    assert feature.task_ids == ("design", "implement", "tests", "docs", "review")
    assert get_template("research").task_ids == ("research-{n}", "synthesis")


# --------------------------------------------------------------------------- choosing by keywords


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Add a login endpoint", "feature"),
        ("Implement rate limiting for the API", "feature"),
        ("Fix the crash when the config file is empty", "bugfix"),
        ("The importer fails on UTF-8 BOMs", "bugfix"),
        ("Login is broken after the upgrade", "bugfix"),
        ("Add a fix for the login crash", "bugfix"),  # 2 : 2 (add + leading), priority decides
        ("Compare Redis and SQLite for the store", "research"),
        ("Research caching options for the dashboard", "research"),
        ("Comparing message brokers", "research"),
        ("Refactor the scheduler into smaller modules", "refactor"),
        ("Clean up the CLI module", "refactor"),
        ("Review the auth module for security problems", "review"),
        ("Audit our dependencies", "review"),
        ("ADD SUPPORT FOR WEBHOOKS", "feature"),
    ],
)
def test_choose_template_by_keywords(text: str, expected: str) -> None:
    assert choose_template(text) == expected, keyword_matches(text)


def test_no_keyword_chooses_nothing() -> None:
    assert choose_template("hello world") is None
    assert keyword_matches("hello world") == {}
    # Whole words only: 'address' is not 'add', 'prefix' is not 'fix'.
    assert choose_template("the address prefix") is None


def test_a_tie_goes_to_the_higher_priority() -> None:
    # One keyword each, neither leads the text: bugfix (50) beats feature (10).
    assert keyword_matches("we need a new error page") == {"bugfix": ["error"], "feature": ["new"]}
    assert choose_template("we need a new error page") == "bugfix"
    # The leading word counts one more: 'Add' + ... beats one bugfix keyword.
    assert choose_template("Add better error messages") == "feature"


def test_the_docs_list_every_template_and_its_keywords() -> None:
    docs = (ROOT / "docs" / "planning.md").read_text()
    for template in list_templates():
        assert f"`{template.name}`" in docs
        line = next(line for line in docs.splitlines() if line.startswith(f"| `{template.name}` |"))
        for keyword in template.keywords:
            assert keyword in line, (template.name, keyword)


def test_the_cli_offers_every_template() -> None:
    from maos.cli._choices import Template

    assert [choice.value for choice in Template] == ["auto", *NAMES]


# --------------------------------------------------------------------------- writing plans back


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("as_json", [False, True])
def test_plan_text_round_trips(name: str, as_json: bool) -> None:
    from maos.cli.plan_cmd import plan_text

    plan = render_template(name, 'Add "quotes", colons: and\nnew lines')
    text = plan_text(plan, as_json=as_json)
    back = plan_from_data(parse_plan_text(text, "back", syntax="json" if as_json else "yaml"), "back")
    assert back == plan
    if not as_json:
        assert "prompt: |" in text  # prompts stay readable


def test_is_task_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from maos.cli.plan_cmd import is_task_text

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my plan.yaml").write_text("name: x\ntasks: [{id: a}]\n")
    (tmp_path / "odd name").write_text("")
    assert is_task_text("Add a login endpoint")
    assert not is_task_text("plan.yaml")  # no whitespace: a file name
    assert not is_task_text("missing plan.yaml")  # ends like a plan file: a (missing) file
    assert not is_task_text("my plan.yaml")
    assert not is_task_text("odd name")  # an existing file


# --------------------------------------------------------------------------- the CLI, without a model


def test_maos_plan_with_a_template_prints_a_valid_plan_without_a_model(tmp_path: Path) -> None:
    result = maos("plan", TASK, "--template", "feature", cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    plan = plan_from_data(parse_plan_text(result.stdout, "stdout"), "stdout")
    assert plan == render_template("feature", TASK)
    assert "template 'feature' (no model call)" in result.stderr
    assert "Critical path (3 tasks): design -> implement -> review" in result.stderr
    assert not (tmp_path / ".maos").exists()


def test_maos_plan_without_a_model_falls_back_to_keywords_and_says_so(tmp_path: Path) -> None:
    result = maos("plan", "Fix the crash on empty input", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no model is set up" in result.stderr
    assert "template 'bugfix' (chosen by the keywords 'fix', 'crash')" in result.stderr
    plan = plan_from_data(parse_plan_text(result.stdout, "stdout"), "stdout")
    assert [task.id for task in plan.tasks] == ["reproduce", "fix", "regression-test", "review"]

    nothing = maos("plan", "Make it nicer", cwd=tmp_path)
    assert nothing.returncode == 0, nothing.stderr
    assert "no template keyword in the task: using template 'feature'" in nothing.stderr


def test_maos_plan_auto_never_calls_a_model(tmp_path: Path) -> None:
    # A base URL where nothing listens: a model call would fail; 'auto' makes none.
    env = {"MAOS_ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "ANTHROPIC_API_KEY": "x"}
    result = maos("plan", "Compare queues", "--template", "auto", "--researchers", "2", "--json", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [task["id"] for task in data["tasks"]] == ["research-1", "research-2", "synthesis"]
    assert "template 'research' (chosen by the keyword 'compare')" in result.stderr


def test_maos_plan_out_writes_a_file_that_runs_through_the_loader(tmp_path: Path) -> None:
    out = tmp_path / "review.yaml"
    result = maos("plan", "--template", "review", "Review the door module", "--out", out)
    assert result.returncode == 0, result.stderr
    assert load_plan(out) == render_template("review", "Review the door module")
    assert f"wrote {out}" in result.stdout
    assert "5 tasks, 2 levels, max width 4" in result.stdout
    # `maos plan FILE` shows an existing plan file.
    shown = maos("plan", out)
    assert shown.returncode == 0, shown.stderr
    assert "Critical path (2 tasks): correctness -> report" in shown.stdout
    shown_json = maos("plan", "--json", out)
    assert shown_json.returncode == 0, shown_json.stderr
    assert json.loads(shown_json.stdout)["levels"][1] == ["report"]

    as_json = tmp_path / "review.json"
    assert maos("plan", "Review it", "-t", "review", "-o", as_json).returncode == 0
    assert isinstance(Plan.model_validate(json.loads(as_json.read_text())), Plan)


def test_maos_plan_bad_input_exits_2(tmp_path: Path) -> None:
    unknown = maos("plan", TASK, "--template", "nope")
    assert unknown.returncode == 2
    assert unknown.stdout == ""
    refusal = " ".join(unknown.stderr.replace("│", " ").split())  # the parser's, in a box: exit 2 at once
    assert "Invalid value for '--template' / '-t'" in refusal
    assert "'nope' is not one of 'auto', 'bugfix', 'feature', 'refactor', 'research', 'review'" in refusal
    missing = maos("plan", "missing.yaml", cwd=tmp_path)  # a file name, not a task
    assert missing.returncode == 2
    assert missing.stderr == "missing.yaml: file not found\n"
    empty = maos("plan", "   ")
    assert empty.returncode == 2
    assert "the task text is empty" in empty.stderr


def test_maos_run_keeps_its_behaviour_for_files(tmp_path: Path) -> None:
    missing = maos("run", "plans/missing plan.yaml", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr == "plans/missing plan.yaml: file not found\n"
    plan = tmp_path / "p.yaml"
    plan.write_text("name: p\ntasks: [{id: a, command: 'true'}]\n")
    with_template = maos("run", plan, "--template", "feature", cwd=tmp_path)
    assert with_template.returncode == 2
    assert "--template is for a task in words" in with_template.stderr
