"""One turn of a Claude Code agent (``maos.agents.claude_turn``), on its own: the real CLI kept
alive across two turns as the warm pool keeps it, and transcripts of real CLI runs
(``data/*.jsonl``) read through a real ``asyncio.StreamReader``."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from maos.agents.claude_code import ClaudeCodeRuntime, agent_config_dir
from maos.agents.claude_turn import STDOUT_LINE_LIMIT_BYTES, Turn, TurnFiles, send_message
from maos.agents.process import spawn, stop_process
from maos.agents.runtime import AgentJob
from maos.filemodes import private_dir
from maos.model import TaskSpec
from maos.modelserver import parse_script, running_model_server
from maos.summary import DENIAL_PREFIX
from tests.claude.test_claude_runtime import INIT, RESULT, RecordingReporter, job

DATA = Path(__file__).parent / "data"

TWO_TURNS_SCRIPT = """
rules:
  - name: first
    match: {last_user: 'first task'}
    reply: {text: "first answer", usage: {input_tokens: 10, output_tokens: 3}}
  - name: second
    match: {last_user: 'second task'}
    reply: {text: "second answer", usage: {input_tokens: 20, output_tokens: 4}}
"""


def stream(*lines: bytes, eof: bool = True) -> asyncio.StreamReader:
    """A reader fed with ``lines``, as the CLI's stdout would be; without ``eof`` it stays open
    (a CLI that waits for its next message)."""
    reader = asyncio.StreamReader(limit=STDOUT_LINE_LIMIT_BYTES)
    for line in lines:
        reader.feed_data(line)
    if eof:
        reader.feed_eof()
    return reader


def recorded(name: str) -> list[bytes]:
    return (DATA / name).read_bytes().splitlines(keepends=True)


async def watched(
    job: AgentJob,
    reporter: RecordingReporter,
    stdout: asyncio.StreamReader,
    *,
    result_grace_s: float = 5.0,
    strict_permissions: bool = False,
    until_result: bool = False,
) -> tuple[Turn, TurnFiles]:
    """``stdout`` watched as one turn of ``job``, into its files."""
    turn = Turn(job, reporter, result_grace_s=result_grace_s, strict_permissions=strict_permissions)
    files = TurnFiles.of(job)
    async with files.open(reporter) as (transcript, _):
        await turn.watch(stdout, transcript, until_result=until_result)
    return turn, files


@pytest.mark.claude
async def test_two_turns_on_one_live_cli_each_with_its_own_files_and_verdict(
    cli: Path, tmp_path: Path
) -> None:
    async with running_model_server(parse_script(TWO_TURNS_SCRIPT)) as url:
        runtime = ClaudeCodeRuntime(cli_path=cli, base_url=url)
        first = job(tmp_path, TaskSpec(id="a", prompt="first task"))
        second = job(tmp_path, TaskSpec(id="b", prompt="second task"))
        config_dir = private_dir(agent_config_dir(first))
        argv = runtime.argv(first, str(uuid.uuid4()))
        env = runtime.environment(first, config_dir)
        proc, _ = await spawn(argv, cwd=tmp_path, env=env, limit_bytes=STDOUT_LINE_LIMIT_BYTES)
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            results = []
            for current, answer in ((first, "first answer"), (second, "second answer")):
                reporter = RecordingReporter()
                turn = runtime.turn(current, reporter)
                files = TurnFiles.of(current)
                async with files.open(reporter) as (transcript, _):
                    await send_message(proc.stdin, current.task.prompt)
                    await turn.watch(proc.stdout, transcript, until_result=True)
                assert turn.answered
                assert proc.returncode is None  # the CLI waits for its next message
                results.append(turn.judge(None, 1.0, files))
                assert ("text", answer) in reporter.lines
        finally:
            await stop_process(proc, 1.0)
    assert [r.ok for r in results] == [True, True]
    assert [Path(r.output_path).read_text() for r in results] == ["first answer", "second answer"]
    assert [r.exit_code for r in results] == [None, None]
    assert [r.usage.output_tokens if r.usage else None for r in results] == [3, 4]  # per turn
    for current in (first, second):
        lines = [json.loads(line) for line in TurnFiles.of(current).transcript.read_text().splitlines()]
        assert [line["type"] for line in lines].count("result") == 1
        assert lines[-1]["type"] == "result"


async def test_a_recorded_run_with_a_denied_tool_warns_once_and_succeeds(tmp_path: Path) -> None:
    reporter = RecordingReporter()
    turn, files = await watched(job(tmp_path, TaskSpec(id="t")), reporter, stream(*recorded("denied.jsonl")))
    result = turn.judge(0, 1.0, files)
    assert result.ok, result.reason
    assert Path(result.output_path).read_text() == "done, some of it"
    # Denied once as a line and again in the result: one warning.
    assert [w for w in reporter.warnings if w.startswith(DENIAL_PREFIX)] == [
        DENIAL_PREFIX
        + "Bash(command=echo hi > denied.txt) (Permission to use Bash has been denied because Claude"
        + " Code is running in don't ask mode)"
    ]
    assert ("tool", "→ ok") in reporter.lines
    assert files.transcript.read_bytes() == (DATA / "denied.jsonl").read_bytes()


async def test_strict_permissions_stop_the_turn_at_the_denial_and_fail_it_for_good(tmp_path: Path) -> None:
    reporter = RecordingReporter()
    turn, files = await watched(
        job(tmp_path, TaskSpec(id="t")), reporter, stream(*recorded("denied.jsonl")), strict_permissions=True
    )
    assert turn.result is None  # stopped before the result line
    assert not turn.answered
    result = turn.judge(None, 1.0, files)
    assert (result.ok, result.final) == (False, True)
    assert result.reason.startswith(
        "permission denied (strict permissions): Bash(command=echo hi > denied.txt); "
        "allow with --allowed-tools Bash"
    )
    assert len(files.transcript.read_bytes().splitlines()) == 5  # up to the denial


async def test_recorded_max_turns_and_api_retry_runs_are_judged_from_their_result_lines(
    tmp_path: Path,
) -> None:
    reporter = RecordingReporter()
    turn, files = await watched(
        job(tmp_path, TaskSpec(id="t", max_turns=2)), reporter, stream(*recorded("max-turns.jsonl"))
    )
    result = turn.judge(1, 1.0, files)
    assert (result.ok, result.reason, result.exit_code) == (False, "max turns (2) reached", 1)
    assert Path(result.output_path).read_text() == ""

    reporter = RecordingReporter()
    turn, files = await watched(job(tmp_path, TaskSpec(id="u")), reporter, stream(*recorded("retried.jsonl")))
    assert turn.judge(0, 1.0, files).ok
    assert turn.last_retry is not None
    assert reporter.retries == [{"attempt": 1, "status": 529, "error": "overloaded"}]


def line(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record).encode() + b"\n"


async def test_until_result_ends_the_watch_at_the_result_line_of_an_open_stream(tmp_path: Path) -> None:
    reporter = RecordingReporter()
    stdout = stream(line(INIT), line(RESULT), eof=False)
    turn, _ = await asyncio.wait_for(
        watched(job(tmp_path, TaskSpec(id="t", idle_timeout_s=30)), reporter, stdout, until_result=True), 5
    )
    assert turn.answered
    assert turn.result is not None
    assert turn.result.result == "all done"


async def test_the_watchdog_stops_a_silent_turn_and_a_lingering_cli(tmp_path: Path) -> None:
    reporter = RecordingReporter()
    silent = stream(line(INIT), eof=False)
    turn, files = await watched(job(tmp_path, TaskSpec(id="t", idle_timeout_s=0.2)), reporter, silent)
    assert turn.stopped == "idle for 0.2s (no output from the agent)"
    assert turn.judge(None, 1.0, files).reason == turn.stopped

    # After its result the CLI has result_grace_s to exit; a CLI that lingers is still ok.
    lingering = stream(line(INIT), line(RESULT), eof=False)
    turn, files = await watched(job(tmp_path, TaskSpec(id="u")), reporter, lingering, result_grace_s=0.1)
    assert (turn.stopped, turn.answered) == ("", True)
    assert turn.judge(None, 1.0, files).ok
