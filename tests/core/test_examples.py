"""Example plans in the repository run for real (docs stay true)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def maos(*args: str, cwd: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maos", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_word_report_runs_twelve_agents_in_parallel(tmp_path: Path) -> None:
    copied = maos("examples", "copy", "word-report", cwd=tmp_path)  # as from an installed package
    assert copied.returncode == 0, copied.stderr
    tmp_path /= "word-report"
    done = maos("run", "plan.yaml", "--agents", "12", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["counts"] == {"succeeded": 27}
    assert (tmp_path / "REPORT.md").read_text().startswith("# Word report")
    assert len(list((tmp_path / "chapters").glob("*.txt"))) == 12
    # twelve writers overlapped: the run took far less than the sum of its tasks
    assert summary["speedup_vs_sequential"] > 1.5


def test_issue_example_plan_runs(tmp_path: Path) -> None:
    done = maos("run", str(ROOT / "src/maos/examples/plans/example.yaml"), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {"succeeded": 2}


def test_examples_list_names_every_shipped_folder_and_copy_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    from maos.cli.examples_cmd import EXAMPLES, examples_root

    assert sorted(EXAMPLES) == sorted(
        p.name for p in examples_root().iterdir() if p.is_dir() and p.name[0] != "_"
    )
    listed = maos("examples", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [item["name"] for item in json.loads(listed.stdout)] == list(EXAMPLES)
    unknown = maos("examples", "copy", "nope", cwd=tmp_path)
    assert (unknown.returncode, "no example named 'nope'") == (2, unknown.stderr.split("error: ")[1][:23])
    (tmp_path / "plans").mkdir()
    taken = maos("examples", "copy", "plans", cwd=tmp_path)
    assert taken.returncode == 2
    assert "exists already" in taken.stderr
    assert "Traceback" not in taken.stderr + unknown.stderr
