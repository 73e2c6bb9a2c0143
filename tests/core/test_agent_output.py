"""Agent output of any size and any bytes: long lines, binary, a per-stream cap on disk.

Real agent processes through the real orchestrator on the SQLite store; the line splitter, the
capped sink and the escaping functions also on their own.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from maos.agents.command import CommandRuntime
from maos.agents.process import LINE_LIMIT_BYTES, CappedSink, LineSplitter, run_process
from maos.eventlog import EventLog
from maos.events import AgentOutput, Event, TaskWarning, event_to_json
from maos.model import Plan, RunConfig, RunStatus, TaskSpec, TaskState
from maos.orchestrator import Orchestrator
from maos.sanitize import printable, storable
from maos.store.base import Store

# Bytes a hostile or broken agent prints: NUL, invalid UTF-8, an encoded lone surrogate, a
# C1 CSI, screen clear, an OSC 52 clipboard write, BEL, backspace, CR and a bidi override.
NASTY = (
    b"\x00nul \xff\xfe\xc3 bad \xed\xa0\x80 sur \xc2\x9b31m c1 \x1b[2J\x1b]52;c;cHduZWQ=\x07"
    b" bs\x08\x08 cr\r over \xe2\x80\xae rtl"
)


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def write_bytes(expr: str) -> tuple[str, ...]:
    """A command that writes the bytes ``expr`` evaluates to on its stdout."""
    return python(f"import sys; sys.stdout.buffer.write({expr}); sys.stdout.flush()")


def config(tmp_path: Path) -> RunConfig:
    return RunConfig(agents=2, workdir=str(tmp_path), retry_base_s=0.05, retry_max_s=0.2, grace_s=1.0)


async def events_of(store: Store, run_id: str) -> list[Event]:
    return [event async for _, event in EventLog(store, run_id).iterate()]


# --------------------------------------------------------------------------- line splitting


def test_lines_split_across_chunks_and_cut_when_too_long() -> None:
    splitter = LineSplitter(limit_bytes=8)
    assert splitter.feed(b"ab") == []
    assert splitter.feed(b"c\r\nde") == ["abc"]
    assert splitter.feed(b"f\n\n12345678\n") == ["def", "", "12345678"]  # exactly at the limit: whole
    assert splitter.feed(b"123456789") == ["12345678 [maos: line truncated at 8 bytes]"]
    assert splitter.feed(b"more of the same line" * 100) == []  # dropped until its end
    assert splitter.feed(b"\nnext") == []
    assert splitter.close() == ["next"]
    assert splitter.close() == []


def test_a_cut_line_ending_exactly_at_a_chunk_end_is_not_reported_twice() -> None:
    splitter = LineSplitter(limit_bytes=4)
    assert splitter.feed(b"abcdefgh") == ["abcd [maos: line truncated at 4 bytes]"]
    assert splitter.close() == []


def test_invalid_utf8_decodes_with_replacement_characters_only() -> None:
    [line] = LineSplitter().feed(NASTY + b"\n")
    assert "\ufffd" in line
    line.encode()  # no lone surrogate: always encodable
    assert "\x00nul" in line  # kept as text; escaped only when printed
    assert "\x1b[2J" in line


def test_capped_sink_keeps_the_first_bytes_and_counts_the_rest() -> None:
    buffer = io.BytesIO()
    sink = CappedSink(buffer, cap_bytes=10)
    for chunk in (b"12345", b"6789", b"abc", b"def"):
        sink.write(chunk)
    assert buffer.getvalue() == b"123456789a"
    assert (sink.written_bytes, sink.dropped_bytes) == (10, 5)


# --------------------------------------------------------------------------- escaping


def test_printable_escapes_every_control_and_bidi_character() -> None:
    text = NASTY.decode(errors="replace") + "\u0085 \u2066 \u200f \u2028 \x7f \ud800"
    shown = printable(text)
    assert shown.isprintable()
    for raw, escaped in [
        ("\x1b", "\\x1b"),
        ("\x07", "\\x07"),
        ("\x08", "\\x08"),
        ("\x00", "\\x00"),
        ("\r", "\\r"),
        ("\x9b", "\\x9b"),
        ("\x85", "\\x85"),
        ("\u202e", "\\u202e"),
        ("\u2066", "\\u2066"),
        ("\u200f", "\\u200f"),
        ("\u2028", "\\u2028"),
        ("\x7f", "\\x7f"),
        ("\ud800", "\\ud800"),
    ]:
        assert raw not in shown
        assert escaped in shown
    assert printable("a\tb\nc") == "a\tb\\nc"
    assert printable("a\nb\r\n", keep_newlines=True) == "a\nb\\r\n"
    assert printable("plain [bold]text[/] ünïcode ✓") == "plain [bold]text[/] ünïcode ✓"


def test_storable_replaces_lone_surrogates_only() -> None:
    assert storable("ok ✓ \x00") == "ok ✓ \x00"
    assert storable("a\ud800b\udfffc") == "a\ufffdb\ufffdc"
    event = AgentOutput(task_id="t", agent_id="a", stream="stdout", text=storable("x\ud800\x00"))
    assert json.loads(event_to_json(event))["text"] == "x\ufffd\x00"


# --------------------------------------------------------------------------- one process


async def test_run_process_drains_past_the_cap_and_notes_it_in_the_stderr_tail(tmp_path: Path) -> None:
    lines: list[tuple[str, str]] = []

    async def on_line(stream: str, text: str) -> None:
        lines.append((stream, text))

    # 3 MiB on one stdout line, then a short line and a stderr line: all read, 1 MiB kept.
    outcome = await run_process(
        python(
            "import sys; sys.stdout.buffer.write(b'x' * (3 << 20) + b'\\nafter\\n'); "
            "sys.stdout.flush(); print('to stderr', file=sys.stderr)"
        ),
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        stdin_data=b"",
        timeout_s=60,
        grace_s=1,
        stdout_path=tmp_path / "t.out",
        stderr_path=tmp_path / "t.err",
        on_line=on_line,
        max_output_bytes=1 << 20,
    )
    assert outcome.exit_code == 0
    assert (tmp_path / "t.out").read_bytes() == b"x" * (1 << 20)
    dropped = (3 << 20) + len(b"\nafter\n") - (1 << 20)
    assert (outcome.stdout_dropped_bytes, outcome.stderr_dropped_bytes) == (dropped, 0)
    assert outcome.truncation_notes() == [
        f"stdout truncated at 1 MiB on disk; {dropped} more bytes were dropped"
    ]
    assert outcome.stderr_tail.endswith(
        f"[maos: stdout truncated at 1 MiB on disk; {dropped} more bytes were dropped]"
    )
    assert (
        "stdout",
        "x" * LINE_LIMIT_BYTES + f" [maos: line truncated at {LINE_LIMIT_BYTES} bytes]",
    ) in lines
    assert ("stdout", "after") in lines  # lines past the cap still reach the log
    assert ("stderr", "to stderr") in lines


@pytest.mark.parametrize("ends", ["by itself", "at its timeout"])
async def test_a_daemon_holding_the_output_does_not_hold_the_attempt(tmp_path: Path, ends: str) -> None:
    """An agent that leaves a process in a session of its own (``setsid``, a test server) that
    keeps its stdout: the attempt ends when the agent does (or at its timeout), not when that
    process does, and says why it stopped reading."""
    marker = f"sleep 120.{len(ends)}{id(tmp_path) % 1000}"
    tail = "sleep 0.5; exit 0" if ends == "by itself" else "sleep 60"  # once the daemon has its session
    try:
        began = asyncio.get_running_loop().time()
        outcome = await run_process(
            ["sh", "-c", f"setsid sh -c '{marker}' & echo started; {tail}"],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin"},
            stdin_data=b"",
            timeout_s=2,
            grace_s=1,
            stdout_path=tmp_path / "t.out",
            stderr_path=tmp_path / "t.err",
        )
        took = asyncio.get_running_loop().time() - began
    finally:
        subprocess.run(["pkill", "-f", marker], check=False)
    assert took < 15, took
    assert outcome.timed_out is (ends == "at its timeout")
    assert (tmp_path / "t.out").read_text() == "started\n"
    assert "a process it started in another session still held its output" in outcome.stderr_tail


# --------------------------------------------------------------------------- whole runs


async def test_long_lines_and_binary_output_finish_the_run_and_reach_dependents(
    sqlite_store: Store, tmp_path: Path
) -> None:
    ten_mb = f"b'A' * 10_000_000 + {NASTY!r} + b'\\n'"
    plan = Plan(
        name="big-output",
        tasks=(
            TaskSpec(id="wide", command=write_bytes("b'w' * (100 << 10) + b'\\nshort\\n'")),
            TaskSpec(id="huge", command=write_bytes(ten_mb)),
            TaskSpec(id="binary", command=write_bytes(f"{NASTY!r} * 3")),  # no final newline
            TaskSpec(
                id="child",
                depends_on=("wide", "huge", "binary"),
                command=python(
                    "import json, os; m = json.loads(os.environ['MAOS_INPUTS']); "
                    "print(' '.join(f'{k}={os.path.getsize(m[k])}' for k in sorted(m)))"
                ),
            ),
        ),
    )
    orchestrator = Orchestrator(sqlite_store, plan, config(tmp_path))
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert all(task.state is TaskState.SUCCEEDED for task in state.tasks.values())
    # The whole output is on disk, byte for byte, for the dependents.
    assert Path(state.tasks["huge"].output_path).read_bytes() == b"A" * 10_000_000 + NASTY + b"\n"
    assert Path(state.tasks["binary"].output_path).read_bytes() == NASTY * 3
    wide, huge, binary = (100 << 10) + 7, 10_000_001 + len(NASTY), 3 * len(NASTY)
    assert Path(state.tasks["child"].output_path).read_text() == f"binary={binary} huge={huge} wide={wide}\n"

    outputs = {
        (event.task_id, event.text)
        for event in await events_of(sqlite_store, orchestrator.run_id)
        if isinstance(event, AgentOutput)
    }
    cut = " [maos: line truncated at 2000 characters]"
    assert ("wide", "w" * 2000 + cut) in outputs
    assert ("wide", "short") in outputs
    assert ("huge", "A" * 2000 + cut) in outputs
    [binary_line] = [text for task, text in outputs if task == "binary"]
    assert binary_line == (NASTY * 3).decode(errors="replace")  # NUL and ESC stored as text


async def test_output_past_the_cap_is_dropped_with_a_warning_and_the_task_succeeds(
    sqlite_store: Store, tmp_path: Path
) -> None:
    plan = Plan(
        name="capped",
        tasks=(
            TaskSpec(id="flood", command=write_bytes("b'z' * (5 << 20)")),
            TaskSpec(id="after", depends_on=("flood",), command="wc -c < /dev/null"),
        ),
    )
    runtimes = {"command": CommandRuntime(max_output_bytes=1 << 20)}
    orchestrator = Orchestrator(sqlite_store, plan, config(tmp_path), runtimes=runtimes)
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    flood = state.tasks["flood"]
    assert flood.state is TaskState.SUCCEEDED
    assert state.tasks["after"].state is TaskState.SUCCEEDED
    assert Path(flood.output_path).stat().st_size == 1 << 20
    note = f"stdout truncated at 1 MiB on disk; {(5 << 20) - (1 << 20)} more bytes were dropped"
    assert flood.warnings == [note]
    warnings = [e for e in await events_of(sqlite_store, orchestrator.run_id) if isinstance(e, TaskWarning)]
    assert [(w.task_id, w.text) for w in warnings] == [("flood", note)]
    err = Path(flood.output_path).with_suffix(".err").read_text()
    assert err.strip() == f"[maos: {note}]"


def test_command_runtime_refuses_a_cap_below_one_byte() -> None:
    with pytest.raises(ValueError, match="max_output_bytes"):
        CommandRuntime(max_output_bytes=0)
