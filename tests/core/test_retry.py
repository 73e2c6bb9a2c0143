"""`maos retry`, `maos resume` of a finished run, and where a run's work went (issue 12):
real `maos` subprocesses, real git."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .test_worktree_run import init_repo, sh

MAOS = [sys.executable, "-m", "maos"]


def maos(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MAOS, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _plan(tmp_path: Path, build_command: str) -> Path:
    ledger = tmp_path / "ledger"
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: fixable\n"
        "tasks:\n"
        f"  - id: setup\n    command: 'echo setup >> {ledger}'\n"
        f"  - id: build\n    max_attempts: 2\n    depends_on: [setup]\n    command: '{build_command}'\n"
        f"  - id: test\n    depends_on: [build]\n    command: 'echo test >> {ledger}'\n"
        f"  - id: docs\n    depends_on: [setup]\n    command: 'echo docs >> {ledger}'\n"
    )
    return plan


def _run_id(cwd: Path) -> str:
    return str(json.loads(maos("runs", "--json", cwd=cwd).stdout)[0]["run_id"])


def test_retry_reruns_only_the_failed_task_and_its_skipped_dependents(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    fix = tmp_path / "fixed"
    plan = _plan(tmp_path, f"echo build >> {ledger}; test -e {fix}")
    first = maos("run", str(plan), "--json", "--retry-base-s", "0.01", cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    summary = json.loads(first.stdout)
    assert summary["tasks"]["build"]["state"] == "failed"
    assert summary["tasks"]["test"]["state"] == "skipped"
    run_id = _run_id(tmp_path)

    # resuming a finished run says so, and runs nothing
    resumed = maos("resume", run_id, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "has finished (failed): nothing to resume" in " ".join(resumed.stderr.split())
    assert f"maos retry {run_id}" in resumed.stderr

    fix.touch()  # the user fixes the cause
    again = maos("retry", run_id, "--failed", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr + again.stdout
    assert "Traceback" not in again.stderr
    assert "retrying 2 task(s)" in again.stderr
    final = json.loads(again.stdout)
    assert final["status"] == "succeeded"
    assert final["counts"] == {"succeeded": 4}
    assert final["tasks"]["build"]["attempts"] == 3  # attempts 1-2 failed; 3 is the retry's
    assert final["tasks"]["setup"]["attempts"] == 1  # kept its result
    # only the failed task and its skipped dependent ran again
    assert sorted(ledger.read_text().split()) == ["build", "build", "build", "docs", "setup", "test"]
    assert json.loads(maos("runs", "--json", cwd=tmp_path).stdout)[0]["status"] == "succeeded"

    nothing = maos("retry", run_id, cwd=tmp_path)
    assert nothing.returncode == 0
    assert "nothing to retry" in nothing.stderr


def test_retry_with_a_fixed_plan_and_its_checks(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "exit 3")
    assert maos("run", str(plan), "--retry-base-s", "0.01", cwd=tmp_path).returncode == 1
    run_id = _run_id(tmp_path)

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(plan.read_text().replace("echo setup", "echo SETUP").replace("exit 3", "true"))
    refused = maos("retry", run_id, "--plan", str(wrong), cwd=tmp_path)
    assert refused.returncode == 2
    assert "task 'setup'" in refused.stderr
    assert "not retried" in refused.stderr

    unknown = maos("retry", run_id, "--task", "docs", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "task 'docs' is succeeded" in unknown.stderr

    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(plan.read_text().replace("exit 3", "true"))
    done = maos("retry", run_id, "--task", "build", "--plan", str(fixed), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {"succeeded": 4}
    status = json.loads(maos("status", run_id, "--json", cwd=tmp_path).stdout)
    assert status["speedup_vs_sequential"] is None  # its makespan holds the time between


def test_a_run_names_its_merge_branch_and_leaves_one_branch(tmp_path: Path) -> None:
    init_repo(tmp_path)
    (tmp_path / "plan.yaml").write_text(
        "name: files\n"
        "tasks:\n"
        "  - id: a\n    isolation: worktree\n    command: 'echo a > a.txt'\n"
        "  - id: b\n    isolation: worktree\n    depends_on: [a]\n    command: 'echo b > b.txt'\n"
    )
    done = maos("run", "plan.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_id = _run_id(tmp_path)
    text = " ".join(done.stdout.split())
    assert f"merged into branch maos/{run_id}" in text
    assert f"git merge maos/{run_id}" in text
    assert sh(tmp_path, "show", f"maos/{run_id}:b.txt") == "b\n"
    branches = sh(tmp_path, "branch", "--format=%(refname:short)").split()
    assert sorted(branches) == ["main", f"maos/{run_id}"]  # the task branches were merged, then deleted
    assert sh(tmp_path, "status", "--porcelain") == "?? plan.yaml\n"  # .maos/ is ignored


def test_a_command_run_in_a_repository_leaves_git_status_clean(tmp_path: Path) -> None:
    init_repo(tmp_path)
    (tmp_path / "plan.yaml").write_text("name: c\ntasks:\n  - id: a\n    command: 'echo hi'\n")
    sh(tmp_path, "add", "plan.yaml")
    sh(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "plan")
    assert maos("run", "plan.yaml", cwd=tmp_path).returncode == 0
    assert sh(tmp_path, "status", "--porcelain") == ""  # .maos/ (with the checkpoint key) is ignored


def test_outside_a_repository_the_run_says_where_agents_write(tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text(
        "name: loose\ntasks:\n  - id: a\n    isolation: worktree\n    command: 'echo a > a.txt'\n"
    )
    done = maos("run", "plan.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "written straight into" in text
    assert "not a git repository" in text
    assert "git init" in text
    assert "faster than running" not in text  # one task: no speed-up to speak of
