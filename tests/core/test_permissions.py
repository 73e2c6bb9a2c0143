"""Which permissions a Claude Code agent gets, how denials are summed up, and the model check
that runs before any agent starts (no CLI process here: the argv is built, not run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from maos.agents.claude_code import ClaudeCodeRuntime, in_own_worktree, model_access
from maos.agents.runtime import AgentJob
from maos.cli.progress import api_retry_text
from maos.events import AgentApiRetry
from maos.model import AgentRole, AgentSpec, PermissionMode, RunState, TaskRun, TaskSpec
from maos.summary import denials_line, how_to_allow, permission_denials

RUN = "r1"


def worktree(tmp_path: Path, task_id: str = "t") -> Path:
    """A folder where ``maos.agents.workspace`` puts a task's worktree (``.git`` is a file there)."""
    path = tmp_path / ".maos" / "worktrees" / RUN / task_id
    path.mkdir(parents=True)
    (path / ".git").write_text("gitdir: elsewhere\n")
    return path


def job(cwd: Path, task: TaskSpec, role: AgentRole | None = None) -> AgentJob:
    return AgentJob(
        run_id=RUN,
        task=task,
        agent=AgentSpec(id="agent-1", runtime="claude-code"),
        attempt=1,
        cwd=cwd,
        env={},
        output_dir=cwd / "outputs",
        grace_s=0.5,
        role=role,
    )


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def argv_of(runtime: ClaudeCodeRuntime, the_job: AgentJob) -> list[str]:
    return runtime.argv(the_job, "00000000-0000-0000-0000-000000000000")


def test_a_task_in_its_own_worktree_may_edit_files_there(tmp_path: Path) -> None:
    runtime = ClaudeCodeRuntime(cli_path=Path("/bin/true"))
    own = job(worktree(tmp_path), TaskSpec(id="t", prompt="go"))
    assert in_own_worktree(own)
    assert option(argv_of(runtime, own), "--permission-mode") == "acceptEdits"
    # in the user's directory (no git repository, or isolation: none): the CLI's default
    shared = job(tmp_path, TaskSpec(id="t", prompt="go"))
    assert not in_own_worktree(shared)
    assert "--permission-mode" not in argv_of(runtime, shared)
    # a folder that only looks like it is not a worktree (no .git file)
    fake = tmp_path / ".maos" / "worktrees" / RUN / "u"
    fake.mkdir()
    assert not in_own_worktree(job(fake, TaskSpec(id="u", prompt="go")))


@pytest.mark.parametrize(
    ("task_mode", "role_mode", "run_mode", "expected"),
    [
        ("dontAsk", "plan", "default", "dontAsk"),  # the task's own field wins
        (None, "plan", "default", "plan"),  # then its role's
        (None, None, "default", "default"),  # then the run's (--permission-mode)
        (None, None, None, "acceptEdits"),  # then the worktree default
    ],
)
def test_permission_mode_precedence(
    tmp_path: Path,
    task_mode: PermissionMode | None,
    role_mode: PermissionMode | None,
    run_mode: PermissionMode | None,
    expected: str,
) -> None:
    role = AgentRole(name="dev", permission_mode=role_mode, source=tmp_path / "dev.md")
    runtime = ClaudeCodeRuntime(cli_path=Path("/bin/true"), permission_mode=run_mode)
    the_job = job(worktree(tmp_path), TaskSpec(id="t", prompt="go", permission_mode=task_mode), role)
    assert option(argv_of(runtime, the_job), "--permission-mode") == expected


def test_run_allowed_tools_apply_to_tasks_that_list_none(tmp_path: Path) -> None:
    runtime = ClaudeCodeRuntime(cli_path=Path("/bin/true"), allowed_tools=("Bash(git *)", "Write"))
    argv = argv_of(runtime, job(tmp_path, TaskSpec(id="t", prompt="go")))
    assert argv[argv.index("--allowedTools") :] == ["--allowedTools", "Bash(git *)", "Write"]
    argv = argv_of(runtime, job(tmp_path, TaskSpec(id="t", prompt="go", allowed_tools=("Read",))))
    assert argv[argv.index("--allowedTools") :] == ["--allowedTools", "Read"]


def test_bypass_permissions_is_never_a_default(tmp_path: Path) -> None:
    runtime = ClaudeCodeRuntime(cli_path=Path("/bin/true"))
    for cwd in (tmp_path, worktree(tmp_path)):
        assert "bypassPermissions" not in argv_of(runtime, job(cwd, TaskSpec(id="t", prompt="go")))


def test_denials_are_summed_up_with_how_to_allow_them() -> None:
    state = RunState(
        tasks={
            "a": TaskRun(warnings=["permission denied: Write(file_path=a.txt)", "MCP server 'x' is failed"]),
            "b": TaskRun(warnings=["permission denied: Write(file_path=b.txt) (not allowed)"]),
        }
    )
    assert permission_denials(state) == {"Write": 2}
    assert denials_line(state) == (
        "2 tool calls denied (Write ×2): allow with --permission-mode acceptEdits, "
        "--allowed-tools Write or allowed_tools: [Write]"
    )
    assert how_to_allow(["Bash", "Write"]) == (
        "allow with --allowed-tools Bash,Write or allowed_tools: [Bash, Write]"
    )
    assert denials_line(RunState()) == ""


def test_api_retries_read_as_a_line() -> None:
    event = AgentApiRetry(
        task_id="t3", agent_id="agent-2", attempt=1, api_attempt=2, max_retries=10,
        error_status=529, error="overloaded", retry_delay_ms=4000,
    )  # fmt: skip
    assert api_retry_text(event) == "model API retry 2/10 (HTTP 529 overloaded), next in 4.0s"
    lost = event.model_copy(update={"error_status": None, "error": "", "max_retries": None})
    assert api_retry_text(lost) == "model API retry 2 (connection error), next in 4.0s"


def test_model_access_reads_what_the_cli_reads() -> None:
    assert model_access({}) is None
    assert model_access({"ANTHROPIC_API_KEY": "k"}) == "ANTHROPIC_API_KEY set"
    assert model_access({"CLAUDE_CODE_OAUTH_TOKEN": "t"}) == "CLAUDE_CODE_OAUTH_TOKEN set"
    assert model_access({"ANTHROPIC_BASE_URL": "http://127.0.0.1:1"}) == "model API at http://127.0.0.1:1"
    assert model_access({"MAOS_ANTHROPIC_BASE_URL": "http://h:2", "ANTHROPIC_BASE_URL": "x"}) == (
        "model API at http://h:2"
    )
    assert model_access({"CLAUDE_CODE_USE_BEDROCK": "0"}) is None


# --------------------------------------------------------------------------- no model, no run

NO_MODEL_NAMES = (
    "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_BASE_URL",
    "MAOS_ANTHROPIC_BASE_URL", "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY", "MAOS_STORE",
)  # fmt: skip


def maos(cwd: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name not in NO_MODEL_NAMES}
    env["HOME"] = str(home)  # no ~/.claude credentials either
    argv = [sys.executable, "-m", "maos", *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_no_model_is_an_error_before_any_agent_starts(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (work / "claude.yaml").write_text(
        "name: claude\ntasks:\n  - id: write\n    prompt: create a.txt\n  - id: echo\n    command: echo hi\n"
    )
    done = maos(work, home, "run", "claude.yaml")
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())
    assert "no model is set up" in message
    assert "ANTHROPIC_API_KEY" in message
    assert "maos model-server --script FILE" in message
    assert "ANTHROPIC_BASE_URL" in message
    # nothing ran: no run was recorded, no agent output exists
    assert not (work / ".maos" / "runs").exists()
    runs = maos(work, home, "runs", "--json")
    assert runs.returncode == 0, runs.stderr
    assert "claude" not in runs.stdout

    # a plan of commands needs no model
    (work / "commands.yaml").write_text("name: commands\ntasks:\n  - id: echo\n    command: echo hi\n")
    done = maos(work, home, "run", "commands.yaml")
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout


def test_bad_permission_options_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("name: p\ntasks:\n  - id: echo\n    command: echo hi\n")
    done = maos(tmp_path, tmp_path, "run", "p.yaml", "--permission-mode", "yolo")
    assert done.returncode == 2
    refusal = " ".join(done.stderr.replace("│", " ").split())
    assert "Invalid value for '--permission-mode'" in refusal
    assert "'yolo' is not one of 'default', 'manual', 'acceptEdits'" in refusal
    done = maos(tmp_path, tmp_path, "run", "p.yaml", "--allowed-tools", "Write,,Read")
    assert done.returncode == 2
    assert "an empty tool name" in done.stderr
