"""Example plans in the repository run for real (docs stay true)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_word_report_runs_twelve_agents_in_parallel(tmp_path: Path) -> None:
    env = {**os.environ, "MAOS_EXAMPLE_DIR": str(ROOT / "examples" / "word-report")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "maos",
            "run",
            str(ROOT / "examples/word-report/plan.yaml"),
            "--agents",
            "12",
            "--pass-env",  # agents get no variable that is not passed by name
            "MAOS_EXAMPLE_DIR",
            "--json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["counts"] == {"succeeded": 27}
    assert (tmp_path / "REPORT.md").read_text().startswith("# Word report")
    assert len(list((tmp_path / "chapters").glob("*.txt"))) == 12
    # twelve writers overlapped: the run took far less than the sum of its tasks
    assert summary["speedup_vs_sequential"] > 1.5


def test_issue_example_plan_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "maos", "run", str(ROOT / "examples/plans/example.yaml"), "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {"succeeded": 2}
