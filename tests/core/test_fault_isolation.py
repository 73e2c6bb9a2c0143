"""Whatever goes wrong while MAOS handles one task fails that task, never the run (issue 11).

Each test runs a real run (real processes, real git, a real SQLite store) where one task
breaks something inside MAOS: the run finishes, the other tasks are unaffected, the broken
task fails with the reason, and the log can be read and resumed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maos.model import Plan, RunConfig, RunStatus, TaskSpec, TaskState
from maos.orchestrator import Orchestrator
from maos.store.base import Store

from .test_worktree_run import init_repo

MAOS = [sys.executable, "-m", "maos"]


async def test_a_task_whose_output_cannot_be_written_fails_alone(sqlite_store: Store, tmp_path: Path) -> None:
    # Something in the way of one task's output files (here a folder where each attempt's
    # stdout file goes; in the wild a full or read-only disk): only that task fails, each
    # attempt with the reason, then for good; everything else runs.
    run_id = "20261201-000000-isol"
    outputs = tmp_path / ".maos" / "runs" / run_id / "outputs"
    for attempt in (1, 2, 3):
        (outputs / f"broken.{attempt}.out").mkdir(parents=True)
    plan = Plan(
        name="isolated",
        tasks=(
            TaskSpec(id="broken", command="echo broken"),
            TaskSpec(id="fine", command="echo fine"),
            TaskSpec(id="after", command="echo after", depends_on=("fine",)),
            TaskSpec(id="child", command="echo child", depends_on=("broken",)),
        ),
    )
    config = RunConfig(agents=2, workdir=str(tmp_path), retry_base_s=0.01)
    state = await Orchestrator(sqlite_store, plan, config, run_id=run_id).run()
    assert state.status is RunStatus.FAILED
    assert state.tasks["fine"].state is TaskState.SUCCEEDED
    assert state.tasks["after"].state is TaskState.SUCCEEDED
    assert state.tasks["broken"].state is TaskState.FAILED
    assert state.tasks["broken"].attempts == 3  # failed the same way each time, then for good
    assert "MAOS could not run this attempt" in state.tasks["broken"].reason
    assert "Is a directory" in state.tasks["broken"].reason
    assert state.tasks["child"].state is TaskState.SKIPPED
    assert "broken" in state.summary

    # A resume of the finished run makes no crash loop and changes nothing.
    again = await Orchestrator(sqlite_store, plan, config, run_id=run_id).resume()
    assert again.status is RunStatus.FAILED


def test_a_failing_git_hook_fails_the_task_not_the_run(tmp_path: Path) -> None:
    init_repo(tmp_path)
    hook = tmp_path / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'pre-commit: refused by policy' >&2\nexit 1\n")
    hook.chmod(0o755)
    (tmp_path / "plan.yaml").write_text(
        "name: hooked\n"
        "tasks:\n"
        "  - id: edits\n    isolation: worktree\n    max_attempts: 2\n    command: 'echo x > x.txt'\n"
        "  - id: reads\n    isolation: worktree\n    command: 'ls'\n"
        "  - id: plain\n    command: 'echo plain'\n"
    )
    done = subprocess.run(
        [*MAOS, "run", "plan.yaml", "--json", "--agents", "3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    summary = json.loads(done.stdout)
    assert summary["tasks"]["edits"]["state"] == "failed"
    assert "pre-commit: refused by policy" in summary["tasks"]["edits"]["reason"]
    assert summary["tasks"]["reads"]["state"] == "succeeded"  # nothing to commit: no hook ran
    assert summary["tasks"]["plain"]["state"] == "succeeded"
    runs = subprocess.run([*MAOS, "runs", "--json"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert json.loads(runs.stdout)[0]["status"] == "failed"


async def test_a_git_hook_that_hangs_is_stopped_with_what_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAOS's git has a deadline: a hook that never ends (the user's, or one an agent planted)
    fails that commit with a clear error, and the hook and its children are killed."""
    from maos.agents import workspace

    init_repo(tmp_path)
    marker = f"sleep 300.{os.getpid()}"  # a child in the background, and the hook itself
    hook = tmp_path / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\nsh -c '{marker}' &\n{marker}\n")
    hook.chmod(0o755)
    monkeypatch.setattr(workspace, "GIT_TIMEOUT_S", 1.0)
    with pytest.raises(workspace.GitError, match=r"did not finish in 1 s and was stopped"):
        await workspace.git(tmp_path, "commit", "--allow-empty", "-q", "-m", "x")
    for _ in range(100):
        left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False).stdout
        if not left:
            break
        await asyncio.sleep(0.05)
    assert not left, left
