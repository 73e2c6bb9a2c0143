"""Agent output as a user meets it: ``maos run`` with huge and hostile output, then ``maos
runs``, ``maos status`` and ``maos logs`` (real subprocesses) show the truth, escaped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

MAOS = [sys.executable, "-m", "maos"]

# A terminal would clear the screen, write the clipboard (OSC 52), ring, erase, hide text and
# reorder it; C1 CSI (U+009B, UTF-8 c2 9b) acts as ESC [ on some terminals.
HOSTILE = (
    r"b'\x1b[2J\x1b]52;c;cHduZWQ=\x07 bell\x07 back\x08\x08 cr\rover \xc2\x9b31m c1 "
    r"\xe2\x80\xae rtl [bold red]markup[/] \x00 nul \xff bad\n'"
)
RAW_BYTES = (b"\x1b", b"\x07", b"\x08", b"\r", b"\xc2\x9b", b"\xe2\x80\xae", b"\x00")


def maos(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*MAOS, *args], cwd=cwd, capture_output=True, timeout=timeout, check=False)


def writer(expr: str) -> str:
    """A plan's ``command`` (flow-style YAML list) writing the bytes ``expr`` to stdout."""
    code = f"import sys; sys.stdout.buffer.write({expr})"
    return json.dumps([sys.executable, "-c", code])


def test_huge_and_hostile_output_runs_to_the_end_and_is_shown_escaped(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    wide = writer(r"b'w' * (100 << 10) + b'\n'")
    huge = writer("b'A' * 10_000_000 + " + HOSTILE)
    fails = json.dumps([sys.executable, "-c", f"import sys; sys.stderr.buffer.write({HOSTILE}); sys.exit(4)"])
    plan.write_text(
        f"""
name: output
tasks:
  - id: wide
    command: {wide}
  - id: huge
    command: {huge}
  - id: hostile
    command: {writer(HOSTILE)}
  - id: hostile-fails
    command: {fails}
    max_attempts: 1
  - id: after
    depends_on: [wide, huge, hostile]
    command: "echo done"
"""
    )
    done = maos("run", str(plan), "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # hostile-fails fails; everything else succeeds
    summary = json.loads(done.stdout)
    run_id = summary["run_id"]
    states = {task: info["state"] for task, info in summary["tasks"].items()}
    assert states == {
        "wide": "succeeded",
        "huge": "succeeded",
        "hostile": "succeeded",
        "hostile-fails": "failed",
        "after": "succeeded",
    }
    for stream in (done.stdout, done.stderr):
        assert not any(raw in stream for raw in RAW_BYTES), stream[-2000:]

    [record] = json.loads(maos("runs", "--json", cwd=tmp_path).stdout)
    assert (record["run_id"], record["status"]) == (run_id, "failed")
    table = maos("runs", cwd=tmp_path)
    assert run_id.encode() in table.stdout
    assert b"failed" in table.stdout

    status = maos("status", run_id, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert b"exit code 4" in status.stdout
    assert b"\\x1b[2J" in status.stdout  # the stderr tail, shown escaped
    assert b"[bold red]markup[/]" in status.stdout  # not taken as rich markup
    assert not any(raw in status.stdout for raw in RAW_BYTES), status.stdout
    assert json.loads(maos("status", run_id, "--json", cwd=tmp_path).stdout)["status"] == "failed"

    logs = maos("logs", run_id, cwd=tmp_path)
    assert logs.returncode == 0, logs.stderr
    assert not any(raw in logs.stdout for raw in RAW_BYTES), logs.stdout[-3000:]
    text = logs.stdout.decode()
    assert "[hostile] stdout: \\x1b[2J\\x1b]52;c;cHduZWQ=\\x07 bell\\x07 back\\x08\\x08 cr\\rover" in text
    assert "\\x9b31m c1 \\u202e rtl [bold red]markup[/] \\x00 nul \ufffd bad" in text
    assert "[wide] stdout: " + "w" * 2000 + " [maos: line truncated at 2000 characters]" in text
    assert "[huge] stdout: " + "A" * 2000 + " [maos: line truncated at 2000 characters]" in text
    assert "[after] stdout: done" in text
    assert all(len(line) < 5000 for line in text.splitlines())  # one event per line, bounded
