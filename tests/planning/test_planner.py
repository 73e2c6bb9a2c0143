"""The LLM planner: the prompts it builds, how it reads answers, and (marker ``claude``) the
real Claude Code CLI against the scripted model server: a cycle sent back, fixed, run."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from maos.agents.claude_cli import find_claude_cli
from maos.errors import AgentError, PlanError
from maos.model import Plan, TaskSpec
from maos.modelserver import parse_script, running_model_server
from maos.plan import load_plan
from maos.plan.planner import (
    DEFAULT_MAX_TASKS,
    PLAN_GUIDANCE,
    PLANNER_AGENT_ID,
    TASK_GUIDANCE,
    PlanAttempt,
    PlanningFailed,
    check_answer,
    extract_plan_data,
    feedback_prompt,
    first_prompt,
    model_available,
    plan_schema_text,
    plan_with_model,
    planner_argv,
    planner_environment,
    planner_system_prompt,
)
from maos.plan.templates import list_templates

CYCLE = {
    "name": "greet",
    "tasks": [
        {"id": "a", "depends_on": ["b"], "command": "echo A"},
        {"id": "b", "depends_on": ["a"], "command": "echo B"},
    ],
}
FIXED = {
    "name": "greet",
    "description": "Say hello twice, in parallel",
    "tasks": [
        {"id": "a", "command": "echo A > a.txt"},
        {"id": "b", "depends_on": ["a"], "command": "cat a.txt; echo B"},
        {"id": "c", "depends_on": ["a"], "command": "cat a.txt; echo C"},
    ],
}
CYCLE_LINE = (
    "plan: task 'a' (tasks[0]): field 'depends_on': dependency cycle a -> b -> a "
    "(each task depends on the next)"
)
NO_JSON = "plan: no JSON object found in the answer; expected the plan as one JSON object in a ```json fence"


def fenced(data: object, before: str = "", after: str = "") -> str:
    return f"{before}```json\n{json.dumps(data, indent=2)}\n```{after}"


def yaml_quote(text: str) -> str:
    """``text`` as a YAML scalar for a model-server script: a JSON string is a double-quoted
    YAML scalar, newlines kept (single-quoted YAML would fold them into spaces)."""
    return json.dumps(text)


# --------------------------------------------------------------------------- the system prompt


def test_the_schema_is_generated_from_the_models() -> None:
    text = plan_schema_text()
    for name, field in Plan.model_fields.items():
        assert f"\n- {name} (" in text
        assert field.description or name in PLAN_GUIDANCE, f"Plan.{name} needs a description"
    for name, field in TaskSpec.model_fields.items():
        assert f"\n- {name} (" in text
        assert field.description or name in TASK_GUIDANCE, f"TaskSpec.{name} needs a description"
    assert set(PLAN_GUIDANCE) <= set(Plan.model_fields)
    assert set(TASK_GUIDANCE) <= set(TaskSpec.model_fields)
    assert "- id (required): a task id (1-64 letters" in text
    assert "- depends_on (default []): a list of task ids." in text
    assert "- timeout_s (default 600.0): a finite number of seconds greater than 0." in text
    assert "- command (default null): a command string (run with sh -c)" in text
    assert "- isolation (default \"auto\"): one of 'auto', 'worktree', 'none'." in text


def test_the_system_prompt() -> None:
    text = planner_system_prompt(max_tasks=7)
    assert text.startswith(f"MAOS_AGENT_ID={PLANNER_AGENT_ID}\n")
    assert plan_schema_text() in text
    assert "No task depends on itself and there is no dependency cycle" in text
    assert "4. At most 7 tasks." in text
    for template in list_templates():
        assert f"\n- {template.name}: {template.summary} Tasks: " in text
    assert "- feature: " in text
    assert "design (designer); implement (implementer after design); tests (tester after design)" in text
    assert "# Example" not in text

    hinted = planner_system_prompt(template_hint="bugfix")
    assert "# Example: the 'bugfix' pattern as a complete plan" in hinted
    example = hinted.split("```json\n")[1].split("\n```")[0]
    assert [task["id"] for task in json.loads(example)["tasks"]] == [
        "reproduce",
        "fix",
        "regression-test",
        "review",
    ]
    assert f"At most {DEFAULT_MAX_TASKS} tasks" in hinted


def test_the_prompts() -> None:
    assert first_prompt("  Add a login endpoint\n") == (
        "Plan this task:\n\nAdd a login endpoint\n\n"
        "Answer with the plan as one JSON object in a ```json fence."
    )
    answer = fenced(CYCLE)
    text = feedback_prompt("Add a login endpoint", answer, [CYCLE_LINE, "second problem"])
    # The problems come first, exactly as the checker wrote them.
    assert text.startswith(
        f"Your previous plan was rejected. Problems:\n- {CYCLE_LINE}\n- second problem\n\n"
    )
    assert "The task:\n\nAdd a login endpoint\n" in text
    assert f"Your previous answer:\n\n{answer}\n" in text
    assert text.endswith("fixing every problem listed above.")
    long = feedback_prompt("t", "x" * 30_000, ["p"])
    assert "x" * 20_000 + "\n... (10000 more characters)" in long
    assert "x" * 20_001 not in long


def test_the_cli_arguments() -> None:
    argv = planner_argv(Path("/bin/claude"), "SYSTEM", model="haiku")
    assert argv[:2] == ["/bin/claude", "-p"]
    joined = " ".join(argv)
    for part in ("--output-format json", "--max-turns 2", "--strict-mcp-config", "--no-session-persistence"):
        assert part in joined
    assert argv[argv.index("--tools") + 1] == ""  # no tools at all
    assert argv[argv.index("--setting-sources") + 1] == ""
    assert argv[argv.index("--append-system-prompt") + 1] == "SYSTEM"
    assert argv[-2:] == ["--model", "haiku"]
    assert "--model" not in planner_argv(Path("claude"), "S")


def test_model_available_and_the_environment(tmp_path: Path) -> None:
    assert not model_available({"PATH": "/bin"})
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "MAOS_ANTHROPIC_BASE_URL",
    ):
        assert model_available({name: "x"})
    assert not model_available({"ANTHROPIC_API_KEY": ""})

    env = planner_environment(
        tmp_path, base={"PATH": "/bin", "MAOS_ANTHROPIC_BASE_URL": "http://127.0.0.1:1"}
    )
    assert env["CLAUDE_CONFIG_DIR"] == str(tmp_path)
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:1"
    assert env["ANTHROPIC_API_KEY"] == "maos-no-key"  # the CLI needs one; a model server takes any
    assert env["DISABLE_TELEMETRY"] == env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    keyed = planner_environment(tmp_path, base={"ANTHROPIC_API_KEY": "sk-real"}, base_url="http://h:2")
    assert keyed["ANTHROPIC_API_KEY"] == "sk-real"
    assert keyed["ANTHROPIC_BASE_URL"] == "http://h:2"
    plain = planner_environment(tmp_path, base={"ANTHROPIC_API_KEY": "sk-real"})
    assert "ANTHROPIC_BASE_URL" not in plain


# --------------------------------------------------------------------------- reading answers


@pytest.mark.parametrize(
    "answer",
    [
        fenced(FIXED),
        fenced(FIXED, before="Here is the plan:\n\n", after="\n\nThe tasks b and c run in parallel."),
        json.dumps(FIXED),
        "Sure. " + json.dumps(FIXED) + " Hope that helps.",
        "```\n" + json.dumps(FIXED) + "\n```",
        fenced(["not", "a", "plan"]) + "\n" + fenced(FIXED),
        "```text\nThe plan, as JSON:\n```\n" + json.dumps(FIXED),
        "```yaml\nname: greet\ndescription: Say hello twice, in parallel\ntasks:\n"
        "  - {id: a, command: echo A > a.txt}\n"
        "  - {id: b, depends_on: [a], command: 'cat a.txt; echo B'}\n"
        "  - {id: c, depends_on: [a], command: 'cat a.txt; echo C'}\n```",
    ],
)
def test_extract_plan_data_finds_the_plan(answer: str) -> None:
    assert extract_plan_data(answer) == FIXED
    assert check_answer(answer) == Plan.model_validate(FIXED)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("", "plan: the answer is empty; expected the plan as one JSON object"),
        (
            "I cannot plan this.",
            NO_JSON,
        ),
        (
            '```json\n{"name": "x",\n "tasks": [}\n```',
            "plan: line 2, column 12: invalid JSON: Expecting value",
        ),
        ('```json\n{"name": "x", "name": "y", "tasks": []}\n```', "plan: invalid JSON: duplicate key 'name'"),
    ],
)
def test_extract_plan_data_says_what_is_wrong(answer: str, problem: str) -> None:
    with pytest.raises(PlanError) as info:
        extract_plan_data(answer)
    assert info.value.problems[0].startswith(problem)


def test_check_answer_lists_every_problem_and_the_task_limit() -> None:
    with pytest.raises(PlanError) as info:
        check_answer(fenced(CYCLE))
    assert info.value.problems == [CYCLE_LINE]
    bad = {"name": "x", "tasks": [{"id": "a", "depends_on": ["zz"]}, {"id": "b", "prio": 1}]}
    with pytest.raises(PlanError) as info:
        check_answer(fenced(bad))
    assert info.value.problems == [
        "plan: task 'b' (tasks[1]): unknown field 'prio'; did you mean 'priority'?"
    ]
    many = {"name": "x", "tasks": [{"id": f"t{i}"} for i in range(4)]}
    with pytest.raises(
        PlanError, match="plan: field 'tasks': the plan has 4 tasks, more than the limit of 3"
    ):
        check_answer(fenced(many), max_tasks=3)


# --------------------------------------------------------------------------- the CLI failing (a fake CLI)

FAKE_CLI = """#!{python}
import json, os, sys, time
sys.stdin.read()
with open(os.environ["FAKE_PID_FILE"], "w") as f:
    f.write(str(os.getpid()))
mode = os.environ["FAKE_MODE"]
if mode == "api-error":
    print(json.dumps({{"type": "result", "subtype": "success", "is_error": True,
                      "terminal_reason": "api_error", "api_error_status": 529, "result": "Overloaded"}}))
    sys.exit(1)
if mode == "silent":
    sys.stderr.write("something broke\\n")
    sys.exit(3)
if mode == "hang":
    time.sleep(60)
"""


def fake_cli(tmp_path: Path) -> Path:
    path = tmp_path / "fake-claude"
    path.write_text(FAKE_CLI.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("api-error", r"the planner's Claude Code CLI failed \(api_error 529\): Overloaded"),
        ("silent", r"exited \(code 3\) without a result: something broke"),
        ("hang", r"the planner did not answer within 1s"),
    ],
)
async def test_a_failing_cli_is_an_agent_error_and_is_reaped(tmp_path: Path, mode: str, message: str) -> None:
    pid_file = tmp_path / "pid"
    env = {"PATH": "/usr/bin:/bin", "FAKE_MODE": mode, "FAKE_PID_FILE": str(pid_file)}
    attempts: list[PlanAttempt] = []
    with pytest.raises(AgentError, match=message):
        await plan_with_model(
            "Add a login endpoint",
            cli_path=fake_cli(tmp_path),
            env=env,
            cwd=tmp_path,
            timeout_s=1.0,
            on_attempt=attempts.append,
        )
    assert attempts == []  # a CLI failure is not a planning try
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_tries must be at least 1"):
        await plan_with_model("x", cli_path=tmp_path, env={}, cwd=tmp_path, max_tries=0)
    with pytest.raises(PlanError, match="the task text is empty"):
        await plan_with_model(" ", cli_path=tmp_path, env={}, cwd=tmp_path)
    with pytest.raises(AgentError, match="cannot start the planner's Claude Code CLI"):
        await plan_with_model("x", cli_path=tmp_path / "absent", env={}, cwd=tmp_path)


# --------------------------------------------------------------------------- the real CLI


@pytest.fixture
def cli() -> Path:
    found = find_claude_cli()
    if found is None:
        pytest.skip("no Claude Code CLI (pip install claude-agent-sdk bundles one)")
    return found


async def request_log(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url) as client:
        requests: list[dict[str, Any]] = (await client.get("/requests")).json()["requests"]
        return requests


def base_env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}


@pytest.mark.claude
async def test_a_cycle_is_sent_back_and_the_second_answer_is_accepted(cli: Path, tmp_path: Path) -> None:
    fixed = yaml_quote(fenced(FIXED, before="Fixed: b and c now depend on a only.\n"))
    script = parse_script(
        f"""
rules:
  - name: fixed
    match: {{agent: {PLANNER_AGENT_ID}, last_user: 'dependency cycle a -> b -> a'}}
    reply: {{text: {fixed}}}
  - name: cyclic
    match: {{agent: {PLANNER_AGENT_ID}}}
    reply: {{text: {yaml_quote(fenced(CYCLE))}}}
"""
    )
    attempts: list[PlanAttempt] = []
    async with running_model_server(script) as url:
        plan = await plan_with_model(
            "Greet everyone, twice",
            cli_path=cli,
            env=planner_environment(tmp_path / "config", base=base_env(tmp_path), base_url=url),
            cwd=tmp_path,
            on_attempt=attempts.append,
        )
        log = await request_log(url)

    assert plan == Plan.model_validate(FIXED)
    # The model server saw two requests from the planner, with no tools offered.
    assert [(entry["agent"], entry["rule_name"], entry["status"]) for entry in log] == [
        (PLANNER_AGENT_ID, "cyclic", 200),
        (PLANNER_AGENT_ID, "fixed", 200),
    ]
    assert all(entry["tools"] == [] for entry in log)
    first, second = log
    assert first["last_user"].startswith("Plan this task:\n\nGreet everyone, twice")
    # The feedback names the cycle, exactly as the validator wrote it.
    assert "dependency cycle a -> b -> a" in second["last_user"]
    assert second["last_user"].startswith(f"Your previous plan was rejected. Problems:\n- {CYCLE_LINE}")
    assert "# Patterns that work (decomposition templates)" in second["system_tail"]

    assert [attempt.number for attempt in attempts] == [1, 2]
    assert attempts[0].problems == (CYCLE_LINE,)
    assert attempts[0].answer == fenced(CYCLE)
    assert attempts[1].accepted
    assert attempts[1].prompt == feedback_prompt("Greet everyone, twice", fenced(CYCLE), [CYCLE_LINE])
    assert attempts[1].cost_usd is not None
    assert attempts[1].session_id


@pytest.mark.claude
async def test_three_bad_answers_fail_with_the_last_problems(cli: Path, tmp_path: Path) -> None:
    unknown = {"name": "x", "tasks": [{"id": "build", "depends_on": ["desgn"]}, {"id": "design"}]}
    script = parse_script(
        f"""
rules:
  - {{times: 1, reply: {{text: {yaml_quote(fenced(CYCLE))}}}}}
  - {{times: 1, reply: {{text: {yaml_quote(fenced(unknown))}}}}}
  - reply: {{text: 'I would rather not answer in JSON.'}}
"""
    )
    attempts: list[PlanAttempt] = []
    async with running_model_server(script) as url:
        with pytest.raises(PlanningFailed) as info:
            await plan_with_model(
                "Build it",
                cli_path=cli,
                env=planner_environment(tmp_path / "config", base=base_env(tmp_path), base_url=url),
                cwd=tmp_path,
                on_attempt=attempts.append,
            )
        log = await request_log(url)

    error = info.value
    assert isinstance(error, PlanError)
    NO_JSON = (
        "plan: no JSON object found in the answer; expected the plan as one JSON object in a ```json fence"
    )
    assert error.problems == [
        "the planner gave no valid plan in 3 tries; the problems of its last answer:",
        NO_JSON,
    ]
    assert error.attempts == attempts
    unknown_line = (
        "plan: task 'build' (tasks[0]): field 'depends_on': unknown task 'desgn' (no task has this id); "
        "did you mean 'design'?"
    )
    assert [attempt.problems for attempt in attempts] == [(CYCLE_LINE,), (unknown_line,), (NO_JSON,)]
    assert [entry["rule"] for entry in log] == [1, 2, 3]
    assert "dependency cycle a -> b -> a" in log[1]["last_user"]
    assert "unknown task 'desgn'" in log[2]["last_user"]


async def run_maos(*args: str, cwd: Path, env: dict[str, str], timeout_s: float = 90) -> tuple[int, str, str]:
    """``maos`` as a subprocess that does not block the loop (the model server runs in it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "maos",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def docs_rehearsal_script() -> str:
    """The model-server script of docs/planning.md (the docs show what the tests run)."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "planning.md").read_text()
    return docs.split("````yaml\n# planner-rehearsal.yaml\n")[1].split("\n````")[0]


@pytest.mark.claude
async def test_maos_run_task_text_end_to_end(cli: Path, tmp_path: Path) -> None:
    script = parse_script(docs_rehearsal_script())
    env = {**base_env(tmp_path), "MAOS_CLAUDE_CLI": str(cli), "COLUMNS": "200", "NO_COLOR": "1"}
    async with running_model_server(script) as url:
        env["MAOS_ANTHROPIC_BASE_URL"] = url
        code, out, err = await run_maos("run", "Greet everyone, twice", "--json", cwd=tmp_path, env=env)
        log = await request_log(url)

    assert code == 0, err
    summary = json.loads(out)
    assert summary["status"] == "succeeded"
    assert summary["plan"] == "greet"
    assert summary["counts"] == {"succeeded": 3}
    assert "planner try 1: rejected, 1 problem:" in err
    assert CYCLE_LINE in err
    assert "planner try 2: accepted" in err
    assert "Critical path (2 tasks): a -> b" in err
    assert [(entry["agent"], entry["rule_name"]) for entry in log] == [
        (PLANNER_AGENT_ID, "first-try"),
        (PLANNER_AGENT_ID, "corrected"),
    ]
    assert log[1]["last_user"].startswith(f"Your previous plan was rejected. Problems:\n- {CYCLE_LINE}")

    # The accepted plan and the planner's attempts are kept next to the run.
    plans = tmp_path / ".maos" / "plans"
    [saved] = plans.glob("*.yaml")
    plan = load_plan(saved)
    assert [(task.id, task.depends_on) for task in plan.tasks] == [("a", ()), ("b", ("a",)), ("c", ("a",))]
    [record] = plans.glob("*.attempts.jsonl")
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(line["number"], line["accepted"], line["problems"]) for line in lines] == [
        (1, False, [CYCLE_LINE]),
        (2, True, []),
    ]
    assert "dependency cycle a -> b -> a" in lines[1]["prompt"]
    assert (tmp_path / "a.txt").read_text() == "A\n"


@pytest.mark.claude
async def test_maos_plan_task_text_with_a_model(cli: Path, tmp_path: Path) -> None:
    script = parse_script(
        f"rules:\n  - match: {{agent: {PLANNER_AGENT_ID}}}\n"
        f"    reply: {{text: {yaml_quote(fenced(FIXED))}}}\n"
    )
    env = {**base_env(tmp_path), "MAOS_CLAUDE_CLI": str(cli), "COLUMNS": "200", "NO_COLOR": "1"}
    async with running_model_server(script) as url:
        env["MAOS_ANTHROPIC_BASE_URL"] = url
        code, out, err = await run_maos("plan", "Fix the greeting", "--json", cwd=tmp_path, env=env)
        log = await request_log(url)
    assert code == 0, err
    assert Plan.model_validate(json.loads(out)) == Plan.model_validate(FIXED)
    assert "planning with Claude Code, template 'bugfix' as the example" in err
    assert "planner try 1: accepted" in err
    [entry] = log
    # The keyword-chosen template is in the system prompt as a full example (its last task;
    # the CLI adds its own environment notes after the appended text).
    assert '"title": "Review the fix"' in entry["system_tail"]
    assert not (tmp_path / ".maos").exists()  # `maos plan` keeps nothing
