"""Parsing the CLI's stream-json lines. ``data/*.jsonl`` are transcripts of CLI 2.1.332 runs
against the model server (init and result lines trimmed of fields MAOS does not read)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maos.agents.stream_json import (
    ApiRetryLine,
    AssistantLine,
    InitLine,
    OtherLine,
    PermissionDeniedLine,
    RateLimitLine,
    ResultLine,
    StreamJsonError,
    UserLine,
    describe_tool_use,
    parse_line,
    user_message,
)
from maos.errors import AgentError

DATA = Path(__file__).parent / "data"


def transcript(name: str) -> list[object]:
    return [parse_line(line) for line in (DATA / name).read_text().splitlines()]


def test_a_run_with_a_denied_tool() -> None:
    init, write, bash, write_result, denied, bash_result, text, result = transcript("denied.jsonl")
    assert isinstance(init, InitLine)
    assert init.session_id == "5420df96-0fef-43af-8e05-75579b58c280"
    assert init.permission_mode == "dontAsk"
    assert init.cwd == "/home/dev/project"
    assert init.claude_code_version == "2.1.332"
    assert "Bash" in init.tools
    assert init.mcp_servers == []
    assert init.model_extra is not None
    assert init.model_extra["apiKeySource"] == "ANTHROPIC_API_KEY"  # unknown fields are kept

    assert isinstance(write, AssistantLine)
    [block] = write.message.blocks
    assert (block.type, block.name, block.input) == (
        "tool_use",
        "Write",
        {"file_path": "allowed.txt", "content": "ok\n"},
    )
    assert isinstance(bash, AssistantLine)
    assert bash.message.blocks[0].name == "Bash"

    assert isinstance(write_result, UserLine)
    [ok] = write_result.message.blocks
    assert ok.type == "tool_result"
    assert not ok.is_error
    assert ok.result_text().startswith("File created successfully at: allowed.txt")

    assert isinstance(denied, PermissionDeniedLine)
    assert (denied.tool_name, denied.tool_use_id) == ("Bash", bash.message.blocks[0].id)
    assert denied.message.startswith("Permission to use Bash has been denied")
    assert isinstance(bash_result, UserLine)
    assert bash_result.message.blocks[0].is_error is True

    assert isinstance(text, AssistantLine)
    assert [b.text for b in text.message.blocks] == ["done, some of it"]

    assert isinstance(result, ResultLine)
    assert result.is_error is False
    assert result.terminal_reason == "completed"
    assert result.result == "done, some of it"
    assert result.num_turns == 3
    assert result.total_cost_usd is not None
    assert result.total_cost_usd > 0
    assert result.usage is not None
    assert result.usage.output_tokens == 35
    [denial] = result.permission_denials
    assert denial.tool_name == "Bash"
    assert denial.tool_input["command"] == "echo hi > denied.txt"


def test_a_run_with_an_api_retry() -> None:
    init, retry, text, result = transcript("retried.jsonl")
    assert isinstance(init, InitLine)
    assert isinstance(retry, ApiRetryLine)
    assert (retry.attempt, retry.max_retries, retry.error_status, retry.error) == (1, 10, 529, "overloaded")
    assert retry.retry_delay_ms == 530
    assert isinstance(text, AssistantLine)
    assert isinstance(result, ResultLine)
    assert result.is_error is False


def test_max_turns_is_an_error_result() -> None:
    *_, result = transcript("max-turns.jsonl")
    assert isinstance(result, ResultLine)
    assert result.is_error is True
    assert (result.subtype, result.terminal_reason) == ("error_max_turns", "max_turns")
    assert result.errors == ["Reached maximum number of turns (2)"]
    assert result.result is None


def test_unknown_lines_and_subtypes_are_other_lines() -> None:
    stream = parse_line('{"type": "stream_event", "event": {"type": "ping"}, "uuid": "u"}')
    assert isinstance(stream, OtherLine)
    assert stream.type == "stream_event"
    assert stream.model_extra == {"event": {"type": "ping"}, "uuid": "u"}
    hook = parse_line(b'{"type": "system", "subtype": "hook_started", "hook_event": "PreToolUse"}')
    assert isinstance(hook, OtherLine)
    assert hook.subtype == "hook_started"


def test_a_result_with_only_the_verdict_parses() -> None:
    result = parse_line('{"type": "result", "is_error": true, "something_new": [1]}')
    assert isinstance(result, ResultLine)
    assert result.is_error
    assert result.usage is None
    assert result.permission_denials == []


def test_rate_limit_event() -> None:
    line = parse_line(
        '{"type": "rate_limit_event", "uuid": "u", "session_id": "s",'
        ' "rate_limit_info": {"status": "allowed_warning", "rateLimitType": "five_hour"}}'
    )
    assert isinstance(line, RateLimitLine)
    assert line.status == "allowed_warning"


def test_message_content_may_be_a_string() -> None:
    line = parse_line('{"type": "user", "message": {"role": "user", "content": "hello"}}')
    assert isinstance(line, UserLine)
    assert [(b.type, b.text) for b in line.message.blocks] == [("text", "hello")]


def test_tool_result_content_as_blocks() -> None:
    line = parse_line(
        json.dumps(
            {
                "type": "user",
                "message": {
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [
                                {"type": "text", "text": "a"},
                                {"type": "image"},
                                {"type": "text", "text": "b"},
                            ],
                        }
                    ]
                },
            }
        )
    )
    assert isinstance(line, UserLine)
    assert line.message.blocks[0].result_text() == "a\nb"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("Error: not logged in", "not JSON: 'Error: not logged in'"),
        ("[1, 2]", "no 'type'"),
        ('{"subtype": "init"}', "no 'type'"),
        ('{"type": "result", "is_error": "maybe"}', "result line has an unexpected shape: is_error"),
        ('{"type": "system", "subtype": "api_retry"}', "system line has an unexpected shape: attempt"),
    ],
)
def test_unreadable_lines_raise(line: str, problem: str) -> None:
    with pytest.raises(StreamJsonError, match=problem.replace("[", r"\[").replace("(", r"\(")):
        parse_line(line)
    assert issubclass(StreamJsonError, AgentError)


def test_user_message_is_one_stream_json_line() -> None:
    data = user_message("two\nlines, ünïcode")
    assert data.endswith(b"\n")
    assert data.count(b"\n") == 1
    assert json.loads(data) == {"type": "user", "message": {"role": "user", "content": "two\nlines, ünïcode"}}


@pytest.mark.parametrize(
    ("name", "arguments", "short"),
    [
        ("Write", {"file_path": "notes/a.txt", "content": "x" * 1000}, "Write(file_path=notes/a.txt)"),
        (
            "Bash",
            {"command": "pytest -q\n  tests", "description": "Run tests"},
            "Bash(command=pytest -q tests)",
        ),
        ("Read", {"file_path": "a.py", "offset": 10}, "Read(file_path=a.py)"),
        (
            "mcp__maos__state_set",
            {"key": "k", "value": {"a": 1}, "ttl": 3},
            "mcp__maos__state_set(key=k, value={…}, …)",
        ),
        ("mcp__maos__ping", {}, "mcp__maos__ping()"),
        ("Task", {"description": "explore", "prompt": "long"}, "Task(description=explore)"),
        ("X", {"n": 5, "flag": True}, "X(n=5, flag=true)"),
    ],
)
def test_describe_tool_use(name: str, arguments: dict[str, object], short: str) -> None:
    assert describe_tool_use(name, arguments) == short


def test_describe_tool_use_clips_long_values() -> None:
    short = describe_tool_use("Bash", {"command": "echo " + "y" * 500})
    assert len(short) < 100
    assert short.endswith("…)")
