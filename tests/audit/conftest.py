"""Real runs through the CLI in a git repository, for the audit and purge tests.

The plan's first task runs in a worktree and goes through the door as an agent would
(``maos state set``, ``maos msg send``) and once as an impostor (refused); the second reads
its message and publishes a result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MAOS = [sys.executable, "-m", "maos"]
PLAN = """\
name: audit-demo
tasks:
  - id: a
    isolation: worktree
    command: >-
      maos state set shared/x '{"v": 1}' && maos msg send task:b hello &&
      (MAOS_AGENT_ID=agent-9 maos state set evil 1 || true) && echo a > a.txt
  - id: b
    depends_on: [a]
    command: "maos msg read; maos result publish done"
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def init_repo(root: Path) -> None:
    git(root, "init", "-q", "-b", "main")
    (root / "base.txt").write_text("base\n")
    git(root, "add", "base.txt")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")


def maos(
    cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``maos ARGS`` in ``cwd`` (the venv's ``maos`` first on PATH, for the agents)."""
    full = {**os.environ, **(env or {})}
    full["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full.get('PATH', '')}"
    done = subprocess.run(
        [*MAOS, *args], check=False, cwd=cwd, env=full, capture_output=True, text=True, timeout=120
    )
    if check and done.returncode != 0:
        raise AssertionError(f"maos {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def real_run(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run the demo plan in ``root`` (a new git repository); return the run id."""
    init_repo(root)
    (root / "plan.yaml").write_text(PLAN)
    done = maos(root, "run", "plan.yaml", "-n", "2", "--json", *args, env=env)
    summary = json.loads(done.stdout)
    assert summary["status"] == "succeeded", done.stdout + done.stderr
    return str(summary["run_id"])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    return root
