"""The files shipped in deploy/ start commands the CLI has."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_supervisor_unit_starts_a_real_command() -> None:
    unit = (ROOT / "deploy" / "systemd" / "maos-supervisor@.service").read_text()
    [exec_start] = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start)
    assert argv[:2] == ["/usr/bin/env", "maos"]
    done = subprocess.run(
        [sys.executable, "-m", "maos", *argv[2:], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Watch every run" in done.stdout
    assert "WorkingDirectory=%I" in unit  # one supervisor per directory (its SQLite store)
