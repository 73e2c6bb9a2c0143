"""Git worktree isolation on a real repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from maos.agents.workspace import Workspaces, git, repository_root


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    sh(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("hello\n")
    sh(root, "add", "README.md")
    sh(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    return root


async def test_tasks_work_on_own_branches_and_merge_in_order(repo: Path) -> None:
    assert await repository_root(repo) == repo
    spaces = Workspaces(repo, "r1")
    await spaces.start()
    a = await spaces.prepare("a", 1)
    assert sh(a, "rev-parse", "--abbrev-ref", "HEAD").strip() == "maos/tasks/r1/a"
    (a / "a.txt").write_text("from a\n")
    merged = await spaces.finish("a", "task a")
    assert merged.ok
    assert merged.changed == ("a.txt",)
    # a child starts from the integration tip and sees its parent's work
    b = await spaces.prepare("b", 1)
    assert (b / "a.txt").read_text() == "from a\n"
    (b / "b.txt").write_text("from b\n")
    assert (await spaces.finish("b", "task b")).ok
    files = sh(repo, "ls-tree", "--name-only", "maos/r1").split()
    assert files == ["README.md", "a.txt", "b.txt"]
    # the user's checkout is untouched
    assert sh(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert not (repo / "a.txt").exists()
    assert "/.maos/" not in sh(repo, "status", "--porcelain")
    await spaces.remove()
    assert not spaces.root.exists()
    assert "maos/tasks/r1/a" in sh(repo, "branch", "--list", "maos/*")


async def test_conflict_is_reported_and_nothing_is_lost(repo: Path) -> None:
    spaces = Workspaces(repo, "r2")
    await spaces.start()
    left = await spaces.prepare("left", 1)
    right = await spaces.prepare("right", 1)
    (left / "README.md").write_text("left\n")
    (right / "README.md").write_text("right\n")
    assert (await spaces.finish("left", "left")).ok
    conflict = await spaces.finish("right", "right")
    assert not conflict.ok
    assert conflict.conflicts == ("README.md",)
    # the integration branch holds left's work; right's branch keeps its own
    assert sh(repo, "show", "maos/r2:README.md") == "left\n"
    assert sh(repo, "show", "maos/tasks/r2/right:README.md") == "right\n"
    # a second attempt starts fresh from the tip; the first attempt's branch is kept renamed
    again = await spaces.prepare("right", 2)
    assert (again / "README.md").read_text() == "left\n"
    assert sh(repo, "show", "maos/tasks/r2/right@1:README.md") == "right\n"
    code, _ = await git(spaces.integration_dir, "status", "--porcelain")
    assert code == 0
    await spaces.remove()


async def test_not_a_repository(tmp_path: Path) -> None:
    assert await repository_root(tmp_path) is None
