"""`maos run` of Claude Code tasks that write files, with no permission settings: in a git
repository each agent may edit its own worktree and the files reach the merge branch;
outside one the CLI's default denies them, and the run says so and how to allow them;
``--strict-permissions`` fails a task at its first denied tool call. The real CLI, against
the scripted model server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maos.modelserver import parse_script, running_model_server

pytestmark = pytest.mark.claude

SCRIPT = r"""
rules:
  - name: write
    match: {last_user: '(?i)create (?P<path>\S+)', tool_result: false}
    reply:
      tool_calls:
        - name: Write
          input: {file_path: "${path}", content: "written by ${agent}\n"}
  - name: bash
    match: {last_user: '(?i)run the build', tool_result: false}
    reply:
      tool_calls:
        - name: Bash
          input: {command: "python3 -c \"open('built.txt', 'w').write('x')\"", description: build}
default:
  text: done
"""

WRITE_PLAN = """
name: writers
tasks:
  - {id: one, prompt: "create one.txt"}
  - {id: two, prompt: "create two.txt"}
  - {id: three, prompt: "create three.txt"}
"""
ONE_WRITER = """
name: writer
tasks:
  - {id: one, prompt: "create one.txt"}
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def project(tmp_path: Path, *, repository: bool) -> Path:
    work = tmp_path / "project"
    work.mkdir()
    if repository:
        git(work, "init", "-q", "-b", "main")
        (work / "README.md").write_text("# project\n")
        git(work, "add", "README.md")
        git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    return work


async def maos_run(work: Path, plan: str, *options: str) -> tuple[int, str, str]:
    """`maos run plan.yaml OPTIONS` against the script: exit code, stdout, stderr."""
    (work / "plan.yaml").write_text(plan)
    async with running_model_server(parse_script(SCRIPT)) as url:
        env = {**os.environ, "MAOS_ANTHROPIC_BASE_URL": url}
        env.pop("ANTHROPIC_API_KEY", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "maos", "run", "plan.yaml", "--agents", "3", *options,
            cwd=work, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 150)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.timeout(180)
async def test_written_files_reach_the_merge_branch_without_permission_settings(
    cli: Path, tmp_path: Path
) -> None:
    work = project(tmp_path, repository=True)
    code, out, err = await maos_run(work, WRITE_PLAN, "--json")
    assert code == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["counts"] == {"succeeded": 3}
    assert summary["permission_denials"] == {}
    assert "may edit files in their own worktrees (acceptEdits)" in " ".join(err.split())
    branch = f"maos/{summary['run_id']}"
    for name in ("one", "two", "three"):
        assert git(work, "show", f"{branch}:{name}.txt").startswith("written by agent-")
    assert not (work / "one.txt").exists()  # the user's checkout is untouched


@pytest.mark.timeout(180)
async def test_outside_a_repository_denied_writes_are_named_with_how_to_allow_them(
    cli: Path, tmp_path: Path
) -> None:
    work = project(tmp_path, repository=False)
    code, out, err = await maos_run(work, ONE_WRITER)
    text = " ".join((out + err).split())
    assert code == 0, err[-3000:]  # a denial alone does not fail the task
    assert "not a git repository, so agents work in" in text
    # the live view (plain lines here: stderr is no terminal) and the summary say it
    assert "agent-1 one: permission denied: Write(file_path=one.txt)" in text
    assert (
        "1 tool call denied (Write ×1): allow with --permission-mode acceptEdits, "
        "--allowed-tools Write or allowed_tools: [Write]"
    ) in text
    assert not (work / "one.txt").exists()


@pytest.mark.timeout(180)
async def test_strict_permissions_fail_the_task_at_its_denial(cli: Path, tmp_path: Path) -> None:
    work = project(tmp_path, repository=True)
    plan = ONE_WRITER + '  - {id: build, prompt: "run the build"}\n'
    code, out, err = await maos_run(work, plan, "--strict-permissions", "--json")
    assert code == 1, err[-3000:]
    summary = json.loads(out)
    build = summary["tasks"]["build"]
    assert build["state"] == "failed"
    assert build["attempts"] == 1  # not retried: the same denial would recur
    assert build["reason"].startswith("permission denied (strict permissions): Bash(command=python3 -c")
    assert "--allowed-tools Bash" in build["reason"]
    assert not (work / ".maos" / "worktrees" / summary["run_id"] / "build" / "built.txt").exists()
    # the task that was allowed to write did, and merged
    assert summary["tasks"]["one"]["state"] == "succeeded"
    assert git(work, "show", f"maos/{summary['run_id']}:one.txt").startswith("written by")
