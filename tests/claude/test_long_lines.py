"""Long and odd stream-json lines: a multi-MiB line parses, an over-limit line fails its
attempt with a reason, a malformed line is a warning; never an exception out of the runtime.

The real CLI against the scripted model server (marker ``claude``), and a stand-in CLI script
that prints exactly the lines under test.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from maos.agents.claude_code import ClaudeCodeRuntime
from maos.agents.claude_turn import STDOUT_LINE_LIMIT_BYTES
from maos.agents.stream_json import AssistantLine, UserLine, parse_line
from maos.events import AgentOutput, event_to_json
from maos.model import RunStatus, TaskSpec
from maos.store.base import Store
from tests.claude.conftest import run_plan
from tests.claude.test_claude_runtime import INIT, RESULT, RecordingReporter, fake_cli, job

BIG_TEXT_BYTES = 3_000_000
BIG_SCRIPT = f"""
rules:
  - name: big
    match: {{last_user: 'go'}}
    reply:
      text: "{"word " * (BIG_TEXT_BYTES // 5)}"
      usage: {{input_tokens: 10, output_tokens: 10}}
"""
CHILD = "import json, os; print(os.path.getsize(next(iter(json.loads(os.environ['MAOS_INPUTS']).values()))))"


@pytest.mark.claude
async def test_a_multi_mib_reply_from_the_real_cli_parses_and_reaches_the_child(
    cli: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    run = await run_plan(
        sqlite_store,
        tmp_path / "work",
        BIG_SCRIPT,
        TaskSpec(id="big", prompt="go"),
        TaskSpec(id="child", depends_on=("big",), command=(sys.executable, "-c", CHILD)),
    )
    assert run.state.status is RunStatus.SUCCEEDED, run.state.summary
    big = run.state.tasks["big"]
    assert Path(big.output_path).stat().st_size == BIG_TEXT_BYTES
    assert Path(run.state.tasks["child"].output_path).read_text() == f"{BIG_TEXT_BYTES}\n"
    transcript = Path(big.output_path).with_suffix(".jsonl").read_bytes().splitlines()
    assert max(len(line) for line in transcript) > BIG_TEXT_BYTES
    texts = [e.text for e in run.of(AgentOutput) if e.task_id == "big" and e.stream == "text"]
    assert texts
    assert all(len(text) <= 500 for text in texts)


class Reporter(RecordingReporter):
    """``RecordingReporter`` with the consensus calls a ``Reporter`` also has (never made here)."""

    async def vote(self, replica: str, answer_digest: str, weight: float, score: float | None) -> None:
        raise AssertionError("no consensus here")

    async def decided(self, strategy: str, winner: str, tally: dict[str, float]) -> None:
        raise AssertionError("no consensus here")


def printing_cli(tmp_path: Path, lines: list[bytes], *, exit_code: int = 0) -> Path:
    """A stand-in CLI that prints ``lines`` (each ending in a newline) on stdout."""
    data = tmp_path / "lines.bin"
    data.write_bytes(b"".join(lines))
    return fake_cli(
        tmp_path, f"cat {data}\nhead -c 70000 /dev/zero | tr '\\0' x >&2\necho >&2\nexit {exit_code}\n"
    )


def line(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record).encode() + b"\n"


def tool_result(text: str) -> dict[str, Any]:
    block = {"type": "tool_result", "tool_use_id": "tu1", "content": text, "is_error": False}
    return {"type": "user", "message": {"role": "user", "content": [block]}}


async def test_an_eight_mib_tool_result_line_parses(tmp_path: Path) -> None:
    big = "y" * (8 << 20)
    tool_use = {"type": "tool_use", "id": "tu1", "name": "Read", "input": {"file_path": "big.txt"}}
    lines = [
        line(INIT),
        line({"type": "assistant", "message": {"role": "assistant", "content": [tool_use]}}),
        line(tool_result(big)),
        line(RESULT),
    ]
    reporter = Reporter()
    result = await ClaudeCodeRuntime(cli_path=printing_cli(tmp_path, lines)).run(
        job(tmp_path, TaskSpec(id="t")), reporter
    )
    assert result.ok, result.reason
    assert ("tool", "Read(file_path=big.txt)") in reporter.lines
    assert ("tool", "→ ok") in reporter.lines
    # The 70,000-byte stderr line is read too (cut for the log, whole on disk).
    assert ("stderr", "x" * 65536 + " [maos: line truncated at 65536 bytes]") in reporter.lines
    assert result.stderr_tail.endswith("x" * 1000)
    transcript = Path(result.output_path).with_suffix(".jsonl").read_bytes()
    assert transcript == b"".join(lines)


async def test_a_line_over_the_limit_fails_the_attempt_with_a_reason(tmp_path: Path) -> None:
    lines = [line(INIT), line(tool_result("z" * (STDOUT_LINE_LIMIT_BYTES + 10))), line(RESULT)]
    reporter = Reporter()
    result = await ClaudeCodeRuntime(cli_path=printing_cli(tmp_path, lines)).run(
        job(tmp_path, TaskSpec(id="t")), reporter
    )
    assert not result.ok
    assert result.reason.startswith("the agent printed a stream-json line longer than 32 MiB")
    transcript = Path(result.output_path).with_suffix(".jsonl").read_bytes()
    assert transcript.startswith(lines[0] + lines[1][:1000])


async def test_malformed_lines_and_lone_surrogates_are_warned_about_and_stored_safely(tmp_path: Path) -> None:
    text = {"type": "text", "text": "half \\ud800 a surrogate \x1b[2J"}
    lines = [
        line(INIT),
        b"Error: not JSON \xff\x00\n",
        line({"type": "assistant", "message": {"role": "assistant", "content": [text]}}).replace(
            b"\\\\ud800", b"\\ud800"
        ),
        line(RESULT),
    ]
    reporter = Reporter()
    result = await ClaudeCodeRuntime(cli_path=printing_cli(tmp_path, lines)).run(
        job(tmp_path, TaskSpec(id="t")), reporter
    )
    assert result.ok, result.reason
    assert reporter.warnings[1].startswith("unreadable stream-json output: not JSON: 'Error: not JSON")
    assert ("stdout", "Error: not JSON \ufffd\x00") in reporter.lines
    assert ("text", "half \ufffd a surrogate \x1b[2J") in reporter.lines
    for stream, shown in reporter.lines:  # every line can go into the event log
        event_to_json(AgentOutput(task_id="t", agent_id="a", stream=stream, text=shown))


def test_parse_line_reads_a_multi_mib_line_and_replaces_lone_surrogates() -> None:
    record = parse_line(line(tool_result("q" * (5 << 20) + "\\ud800 end")).replace(b"\\\\ud800", b"\\ud800"))
    assert isinstance(record, UserLine)
    [block] = record.message.blocks
    assert block.result_text() == "q" * (5 << 20) + "\ufffd end"
    pair = parse_line(
        b'{"type": "assistant", "message": {"content": [{"type": "text", "text": "\\ud83d\\ude00"}]}}'
    )
    assert isinstance(pair, AssistantLine)
    assert pair.message.blocks[0].text == "\U0001f600"  # a valid pair is kept
