"""A run in a git repository: isolated tasks get worktrees; results merge in dependency order."""

from __future__ import annotations

import subprocess
from pathlib import Path

from maos.model import Plan, RunConfig, RunStatus, TaskSpec, TaskState
from maos.orchestrator import Orchestrator
from maos.store.base import Store


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def init_repo(root: Path) -> None:
    sh(root, "init", "-q", "-b", "main")
    (root / "base.txt").write_text("base\n")
    sh(root, "add", "base.txt")
    sh(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")


async def test_worktree_tasks_merge_into_the_integration_branch(sqlite_store: Store, tmp_path: Path) -> None:
    init_repo(tmp_path)
    plan = Plan(
        name="wt",
        tasks=(
            TaskSpec(id="a", isolation="worktree", command="echo a > a.txt; pwd"),
            TaskSpec(id="b", isolation="worktree", command="echo b > b.txt"),
            TaskSpec(id="c", isolation="worktree", depends_on=("a", "b"), command="cat a.txt b.txt > c.txt"),
            TaskSpec(id="plain", command="pwd"),
        ),
    )
    orchestrator = Orchestrator(sqlite_store, plan, RunConfig(agents=4, workdir=str(tmp_path)))
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    branch = f"maos/{orchestrator.run_id}"
    assert sh(tmp_path, "show", f"{branch}:c.txt") == "a\nb\n"
    assert sh(tmp_path, "ls-tree", "--name-only", branch).split() == ["a.txt", "b.txt", "base.txt", "c.txt"]
    # a ran in its own worktree; the plain task in the run's directory
    assert f".maos/worktrees/{orchestrator.run_id}/a" in Path(state.tasks["a"].output_path).read_text()
    assert Path(state.tasks["plain"].output_path).read_text().strip() == str(tmp_path)
    # the user's checkout is untouched and worktrees are gone after success
    assert not (tmp_path / "a.txt").exists()
    assert not (tmp_path / ".maos" / "worktrees" / orchestrator.run_id).exists()


async def test_merge_conflict_fails_the_task_naming_files(sqlite_store: Store, tmp_path: Path) -> None:
    init_repo(tmp_path)
    plan = Plan(
        name="conflict",
        tasks=(
            TaskSpec(id="left", isolation="worktree", command="echo left > base.txt"),
            TaskSpec(
                id="right", isolation="worktree", command="sleep 0.5; echo right > base.txt", max_attempts=1
            ),
        ),
    )
    orchestrator = Orchestrator(sqlite_store, plan, RunConfig(agents=2, workdir=str(tmp_path)))
    state = await orchestrator.run()
    assert state.status is RunStatus.FAILED
    right = state.tasks["right"]
    assert right.state is TaskState.FAILED
    assert "merge conflict in base.txt" in right.reason
    assert sh(tmp_path, "show", f"maos/tasks/{orchestrator.run_id}/right:base.txt") == "right\n"
    # kept for inspection on failure
    assert (tmp_path / ".maos" / "worktrees" / orchestrator.run_id / "right").exists()


def test_maos_clean_removes_leftover_worktrees(tmp_path: Path) -> None:
    import sys

    init_repo(tmp_path)
    sh(tmp_path, "worktree", "add", "-q", "-b", "maos/tasks/r/x", str(tmp_path / ".maos/worktrees/r/x"))
    done = subprocess.run(
        [sys.executable, "-m", "maos", "clean"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert "removed 1 worktree(s)" in done.stdout
    assert not (tmp_path / ".maos/worktrees/r/x").exists()
    assert "maos/tasks/r/x" in sh(tmp_path, "branch", "--list", "maos/*")
