"""The claude-code runtime: the real CLI through the real orchestrator against the scripted
model server (marker ``claude``), and the runtime's own mechanics with a fake CLI script."""

from __future__ import annotations

import json
import stat
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from maos.agents.claude_code import ClaudeCodeRuntime, agent_config_dir
from maos.agents.runtime import AgentJob, OutputStream
from maos.events import AgentApiRetry, AgentOutput, TaskFailed, TaskStarted, TaskSucceeded, TaskWarning
from maos.model import AgentSpec, RunStatus, TaskSpec, TaskState
from maos.store.base import Store
from tests.claude.conftest import assert_dead, processes_of_run, run_plan

# --------------------------------------------------------------------------- the real CLI

WRITE_SCRIPT = r"""
rules:
  - name: done
    match: {tool_result: true}
    reply:
      text: "Wrote the file, ${agent}."
      usage: {input_tokens: 1500, output_tokens: 20}
  - name: write
    match: {last_user: 'create (?P<path>\S+)'}
    reply:
      text: "Creating ${path}."
      tool_calls:
        - name: Write
          input: {file_path: "${path}", content: "hello from ${agent}\n"}
      usage: {input_tokens: 1200, output_tokens: 80}
"""
CHILD = "import json, os; print(open(json.loads(os.environ['MAOS_INPUTS'])['write']).read())"


@pytest.mark.claude
async def test_agent_writes_a_file_and_the_log_has_session_cost_tokens_and_transcript(
    cli: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    run = await run_plan(
        sqlite_store,
        work,
        WRITE_SCRIPT,
        TaskSpec(id="write", prompt="please create notes/hello.txt", permission_mode="acceptEdits"),
        # A child gets the agent's final text as its input file.
        TaskSpec(
            id="child",
            depends_on=("write",),
            command=(sys.executable, "-c", CHILD),
        ),
    )
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    assert (work / "notes" / "hello.txt").read_text() == "hello from agent-1\n"

    task = run.state.tasks["write"]
    [started] = run.of(TaskStarted)[:1]
    assert started.task_id == "write"
    assert started.session_id is not None
    assert task.session_id == started.session_id == str(uuid.UUID(started.session_id))
    # The CLI used the id chosen before it started.
    assert {request["session"] for request in run.requests} == {started.session_id}
    assert [(r["agent"], r["rule_name"]) for r in run.requests] == [("agent-1", "write"), ("agent-1", "done")]

    [succeeded] = [e for e in run.of(TaskSucceeded) if e.task_id == "write"]
    assert succeeded.usage is not None
    assert (succeeded.usage.input_tokens, succeeded.usage.output_tokens) == (2700, 100)
    assert succeeded.usage.cost_usd > 0
    assert task.usage == succeeded.usage
    assert run.state.usage() == succeeded.usage  # the command child reports none

    outputs = [(e.stream, e.text) for e in run.of(AgentOutput) if e.task_id == "write"]
    assert ("text", "Creating notes/hello.txt.") in outputs
    assert ("tool", "Write(file_path=notes/hello.txt)") in outputs
    assert ("tool", "→ ok") in outputs
    assert ("text", "Wrote the file, agent-1.") in outputs
    assert not task.warnings

    assert Path(task.output_path).read_text() == "Wrote the file, agent-1."
    assert Path(run.state.tasks["child"].output_path).read_text() == "Wrote the file, agent-1.\n"
    transcript = Path(task.output_path).with_suffix(".jsonl")
    kinds = [json.loads(line)["type"] for line in transcript.read_text().splitlines()]
    assert kinds[0] == "system"
    assert kinds[-1] == "result"
    assert "assistant" in kinds
    # The agent's own config dir holds the CLI's transcript of the session, for --resume.
    config_dir = work / ".maos" / "runs" / run.run_id / "agents" / "agent-1" / "claude"
    assert list(config_dir.glob(f"projects/*/{started.session_id}.jsonl"))


@pytest.mark.claude
async def test_529_on_the_first_call_is_retried_and_logged(
    cli: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    script = """
rules:
  - name: overloaded-once
    match: {agent: agent-1}
    times: 1
    reply: {error: {status: 529}}
default: {text: "fine now"}
"""
    run = await run_plan(
        sqlite_store, tmp_path / "work", script, TaskSpec(id="t", prompt="hi", max_attempts=1)
    )
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    [retry] = run.of(AgentApiRetry)
    assert (retry.task_id, retry.attempt, retry.api_attempt, retry.error_status) == ("t", 1, 1, 529)
    assert retry.retry_delay_ms is not None
    assert retry.retry_delay_ms > 0
    assert run.state.tasks["t"].api_retries == 1
    assert [r["status"] for r in run.requests] == [529, 200]
    assert Path(run.state.tasks["t"].output_path).read_text() == "fine now"


@pytest.mark.claude
@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"timeout_s": 15.0}, "timed out after 15s"),
        ({"timeout_s": 60.0, "idle_timeout_s": 10.0}, "idle for 10s"),
    ],
    ids=["wall-clock", "idle"],
)
async def test_a_hanging_agent_is_killed_and_the_task_retried(
    cli: Path, sqlite_store: Store, tmp_path: Path, limits: dict[str, float], reason: str
) -> None:
    script = """
rules:
  - name: hang
    match: {agent: agent-1}
    times: 1
    reply: {text: "too late", delay_s: 60}
default: {text: "second attempt"}
"""
    task = TaskSpec.model_validate({"id": "hang", "prompt": "hi", "max_attempts": 2, **limits})
    run = await run_plan(sqlite_store, tmp_path / "work", script, task)
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    [failed] = run.of(TaskFailed)
    assert failed.attempt == 1
    assert failed.reason.startswith(reason)
    assert failed.usage is None  # killed before a result line
    assert run.state.tasks["hang"].attempts == 2
    assert Path(run.state.tasks["hang"].output_path).read_text() == "second attempt"
    assert [r["rule_name"] for r in run.requests] == ["hang", None]
    # Both agents' processes are gone: reaped, nothing of the run left behind.
    started = run.of(TaskStarted)
    assert len(started) == 2
    assert len({e.session_id for e in started}) == 2
    for event in started:
        assert_dead(event.pid)
    assert processes_of_run(run.run_id) == []


@pytest.mark.claude
async def test_a_denied_tool_is_a_warning_on_its_task(cli: Path, sqlite_store: Store, tmp_path: Path) -> None:
    script = r"""
rules:
  - match: {tool_result: true}
    reply: {text: "done, some of it"}
  - reply:
      tool_calls:
        - name: Write
          input: {file_path: allowed.txt, content: "ok\n"}
        - name: Bash
          input: {command: "echo hi > denied.txt", description: "not allowed"}
"""
    task = TaskSpec(id="t", prompt="go", permission_mode="dontAsk", allowed_tools=("Write",), max_attempts=1)
    run = await run_plan(sqlite_store, tmp_path / "work", script, task)
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    assert (run.workdir / "allowed.txt").read_text() == "ok\n"
    assert not (run.workdir / "denied.txt").exists()
    [warning] = run.state.tasks["t"].warnings
    assert warning == (
        "permission denied: Bash(command=echo hi > denied.txt) "
        "(Permission to use Bash has been denied because Claude Code is running in don't ask mode)"
    )
    [event] = run.of(TaskWarning)
    assert (event.task_id, event.attempt, event.text) == ("t", 1, warning)
    tool_lines = [e.text for e in run.of(AgentOutput) if e.stream == "tool"]
    assert any(line.startswith("→ error:") for line in tool_lines)


@pytest.mark.claude
async def test_max_turns_exhausted_fails_with_a_clear_reason(
    cli: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    script = """
rules:
  - reply:
      tool_calls: [{name: Read, input: {file_path: "notes.txt"}}]
      usage: {input_tokens: 100, output_tokens: 10}
"""
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("read me again\n")
    task = TaskSpec(id="loop", prompt="go", max_turns=2, max_attempts=1)
    run = await run_plan(sqlite_store, tmp_path / "work", script, task)
    assert run.state.status is RunStatus.FAILED
    loop = run.state.tasks["loop"]
    assert loop.state is TaskState.FAILED
    assert loop.reason == "max turns (2) reached"
    assert "max turns (2) reached" in run.state.summary
    assert loop.usage is not None
    assert len(run.requests) == 2  # one model call per turn
    assert loop.usage.output_tokens == 20


# --------------------------------------------------------------------------- a fake CLI


@dataclass
class RecordingReporter:
    pids: list[int] = field(default_factory=list)
    sessions: list[str | None] = field(default_factory=list)
    lines: list[tuple[OutputStream, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    retries: list[dict[str, Any]] = field(default_factory=list)

    async def started(self, pid: int, session_id: str | None = None) -> None:
        self.pids.append(pid)
        self.sessions.append(session_id)

    async def output(self, stream: OutputStream, text: str) -> None:
        self.lines.append((stream, text))

    async def warning(self, text: str) -> None:
        self.warnings.append(text)

    async def api_retry(
        self,
        api_attempt: int,
        *,
        error_status: int | None,
        error: str,
        retry_delay_ms: float | None,
        max_retries: int | None,
    ) -> None:
        self.retries.append({"attempt": api_attempt, "status": error_status, "error": error})


INIT = {
    "type": "system",
    "subtype": "init",
    "session_id": "s",
    "mcp_servers": [{"name": "door", "status": "failed"}],
}
RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "terminal_reason": "completed",
    "result": "all done",
    "total_cost_usd": 0.25,
    "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 7},
    "permission_denials": [],
}


def fake_cli(tmp_path: Path, body: str) -> Path:
    """A shell script that stands in for the CLI: it records its argv, stdin and environment."""
    path = tmp_path / "fake-claude"
    path.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\0" "$@" > {tmp_path}/argv\n'
        f"cat > {tmp_path}/stdin\n"
        f"env > {tmp_path}/env\n" + body
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def job(tmp_path: Path, task: TaskSpec, attempt: int = 1) -> AgentJob:
    output_dir = tmp_path / ".maos" / "runs" / "r1" / "outputs"
    output_dir.mkdir(parents=True, exist_ok=True)
    return AgentJob(
        run_id="r1",
        task=task,
        agent=AgentSpec(id="agent-7", runtime="claude-code"),
        attempt=attempt,
        cwd=tmp_path,
        env={"MAOS_RUN_ID": "r1", "MAOS_TASK_ID": task.id},
        output_dir=output_dir,
        grace_s=0.5,
    )


def echo_lines(*lines: dict[str, Any] | str) -> str:
    return "".join(f"echo '{line if isinstance(line, str) else json.dumps(line)}'\n" for line in lines)


async def test_flags_environment_and_prompt_reach_the_cli(tmp_path: Path) -> None:
    cli = fake_cli(tmp_path, echo_lines(INIT, RESULT))
    runtime = ClaudeCodeRuntime(
        cli_path=cli, base_url="http://127.0.0.1:9", mcp_config={"mcpServers": {}}, env={"EXTRA": "1"}
    )
    task = TaskSpec(
        id="t",
        prompt="do the thing\nwith 'quotes'",
        model="sonnet",
        permission_mode="acceptEdits",
        allowed_tools=("Read", "Bash(git *)"),
        max_turns=7,
        max_budget_usd=0.5,
    )
    reporter = RecordingReporter()
    result = await runtime.run(job(tmp_path, task), reporter)
    assert result.ok, result.reason
    argv = (tmp_path / "argv").read_text().split("\0")[:-1]
    [session] = reporter.sessions
    assert session is not None
    assert argv[argv.index("--session-id") + 1] == session
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    assert argv[argv.index("--model") + 1] == "sonnet"
    assert argv[argv.index("--max-turns") + 1] == "7"
    assert float(argv[argv.index("--max-budget-usd") + 1]) == 0.5
    assert argv[argv.index("--allowedTools") :] == ["--allowedTools", "Read", "Bash(git *)"]
    assert argv[argv.index("--setting-sources") + 1] == ""
    mcp_config = Path(argv[argv.index("--mcp-config") + 1])  # a file: no token in `ps`
    assert json.loads(mcp_config.read_text()) == {"mcpServers": {}}
    assert mcp_config.stat().st_mode & 0o777 == 0o600
    assert "--strict-mcp-config" in argv
    assert argv[argv.index("--append-system-prompt") + 1].startswith("MAOS_AGENT_ID=agent-7\n")
    stdin = json.loads((tmp_path / "stdin").read_text())
    assert stdin == {"type": "user", "message": {"role": "user", "content": "do the thing\nwith 'quotes'"}}
    env = dict(line.split("=", 1) for line in (tmp_path / "env").read_text().splitlines() if "=" in line)
    assert env["CLAUDE_CONFIG_DIR"] == str(agent_config_dir(job(tmp_path, task)))
    assert env["CLAUDE_CONFIG_DIR"].endswith(".maos/runs/r1/agents/agent-7/claude")
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert env["ENABLE_TOOL_SEARCH"] == "true"  # the door's entry says alwaysLoad (ADR 0020)
    assert env["MAOS_TASK_ID"] == "t"
    assert env["EXTRA"] == "1"
    assert result.usage is not None
    assert (result.usage.cost_usd, result.usage.input_tokens, result.usage.cache_read_tokens) == (0.25, 10, 7)
    assert reporter.warnings == ["MCP server 'door' is failed"]


async def test_an_agent_that_lingers_after_its_result_is_stopped_and_still_succeeds(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    cli = fake_cli(tmp_path, echo_lines(INIT, RESULT) + f"sleep 60 & echo $! > {pidfile}\nwait\n")
    runtime = ClaudeCodeRuntime(cli_path=cli, result_grace_s=0.3)
    reporter = RecordingReporter()
    result = await runtime.run(job(tmp_path, TaskSpec(id="t", timeout_s=30)), reporter)
    assert result.ok, result.reason
    assert result.duration_s < 25  # stopped after the result's grace, long before its timeout
    assert Path(result.output_path).read_text() == "all done"
    assert_dead(reporter.pids[0])
    assert_dead(int(pidfile.read_text()))


async def test_no_result_line_is_a_failure_naming_the_unreadable_output(tmp_path: Path) -> None:
    cli = fake_cli(tmp_path, echo_lines(INIT, "Error: something broke") + "echo oops >&2\nexit 3\n")
    reporter = RecordingReporter()
    result = await ClaudeCodeRuntime(cli_path=cli).run(job(tmp_path, TaskSpec(id="t")), reporter)
    assert not result.ok
    assert result.exit_code == 3
    assert result.reason.startswith("the Claude Code CLI exited (code 3) without a result line")
    assert "something broke" in result.reason
    assert result.stderr_tail == "oops"
    assert ("stderr", "oops") in reporter.lines
    assert result.usage is None


async def test_api_error_result_is_judged_by_is_error_not_subtype(tmp_path: Path) -> None:
    retry = {
        "type": "system",
        "subtype": "api_retry",
        "attempt": 1,
        "error_status": 529,
        "error": "overloaded",
    }
    failed = RESULT | {
        "is_error": True,
        "terminal_reason": "api_error",
        "api_error_status": 529,
        "result": "API Error: 529 Overloaded",
        "total_cost_usd": 0,
    }
    cli = fake_cli(tmp_path, echo_lines(INIT, retry, failed) + "exit 1\n")
    reporter = RecordingReporter()
    result = await ClaudeCodeRuntime(cli_path=cli).run(job(tmp_path, TaskSpec(id="t")), reporter)
    assert not result.ok
    assert result.reason == "model API error 529 after 1 retries: API Error: 529 Overloaded"
    assert reporter.retries == [{"attempt": 1, "status": 529, "error": "overloaded"}]


async def test_a_missing_cli_is_a_failed_attempt(tmp_path: Path) -> None:
    runtime = ClaudeCodeRuntime(cli_path=tmp_path / "nope")
    result = await runtime.run(job(tmp_path, TaskSpec(id="t")), RecordingReporter())
    assert not result.ok
    assert result.reason.startswith("cannot start the Claude Code CLI")
