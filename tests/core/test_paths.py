"""The ``.maos/`` layout (``maos.paths``): where each thing goes, that ``.maos/`` itself is
private and out of git, and that a real run writes only where the layout says."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from maos import paths
from maos.model import TASK_ID_MAX_CHARS, TASK_ID_PATTERN, Plan, RunConfig, RunStatus, TaskSpec
from maos.orchestrator import Orchestrator
from maos.store import DEFAULT_STORE_URL, open_store

ids = st.from_regex(TASK_ID_PATTERN, fullmatch=True).filter(lambda text: len(text) <= TASK_ID_MAX_CHARS)


def test_the_layout() -> None:
    w, outputs = Path("/w"), Path("/w/.maos/runs/r1/outputs")
    assert {
        "state": paths.state_dir(w),
        "store": paths.store_file(w),
        "audit": paths.audit_file(w),
        "checkpoints": paths.checkpoints_dir(w),
        "plans": paths.plans_dir(w),
        "run": paths.run_dir(w, "r1"),
        "report": paths.report_file(w, "r1"),
        "outputs": paths.outputs_dir(w, "r1"),
        "prompts": paths.prompts_dir(w, "r1"),
        "input": paths.input_file(w, "r1", "parent"),
        "output": paths.attempt_file(outputs, "t", 2, ".out"),
        "judge": paths.judge_dir(outputs),
        "claude": paths.claude_config_dir(outputs, "agent-1"),
        "warm files": paths.warm_files_dir(outputs, "agent-1"),
        "worktrees": paths.worktrees_dir(w),
        "run worktrees": paths.run_worktrees(w, "r1"),
        "integration": paths.integration_worktree(w, "r1"),
        "task worktree": paths.task_worktree(w, "r1", "t"),
        "warm worktree": paths.warm_worktree(w, "r1", "agent-1"),
    } == {
        "state": Path("/w/.maos"),
        "store": Path("/w/.maos/maos.db"),
        "audit": Path("/w/.maos/audit.jsonl"),
        "checkpoints": Path("/w/.maos/checkpoints"),
        "plans": Path("/w/.maos/plans"),
        "run": Path("/w/.maos/runs/r1"),
        "report": Path("/w/.maos/runs/r1/REPORT.md"),
        "outputs": Path("/w/.maos/runs/r1/outputs"),
        "prompts": Path("/w/.maos/runs/r1/prompts"),
        "input": Path("/w/.maos/runs/r1/inputs/parent.out"),
        "output": Path("/w/.maos/runs/r1/outputs/t.2.out"),
        "judge": Path("/w/.maos/runs/r1/outputs/judge"),
        "claude": Path("/w/.maos/runs/r1/agents/agent-1/claude"),
        "warm files": Path("/w/.maos/runs/r1/agents/agent-1/warm"),
        "worktrees": Path("/w/.maos/worktrees"),
        "run worktrees": Path("/w/.maos/worktrees/r1"),
        "integration": Path("/w/.maos/worktrees/r1/_integration"),
        "task worktree": Path("/w/.maos/worktrees/r1/t"),
        "warm worktree": Path("/w/.maos/worktrees/r1/_warm/agent-1"),
    }
    assert paths.KEY_NAME == "key"
    # The default store URL is relative to the working directory, like every place here.
    assert DEFAULT_STORE_URL == f"sqlite:///{paths.store_file('.')}" == "sqlite:///.maos/maos.db"


@given(run=ids, other=ids, task=ids, agent=ids)
def test_only_a_task_s_worktree_is_one(run: str, other: str, task: str, agent: str) -> None:
    repo = Path("/repo")
    assert paths.in_task_worktree(paths.task_worktree(repo, run, task), run)
    assert not paths.in_task_worktree(paths.integration_worktree(repo, run), run)
    assert not paths.in_task_worktree(paths.warm_worktree(repo, run, agent), run)
    assert not paths.in_task_worktree(repo / task, run)
    if other != run:
        assert not paths.in_task_worktree(paths.task_worktree(repo, run, task), other)


@given(agent=st.text(max_size=40))
def test_an_agent_s_folder_never_leaves_agents(agent: str) -> None:
    outputs = Path("/w/.maos/runs/r1/outputs")
    folder = paths.agent_dir(outputs, agent)
    assert folder.parent == outputs.parent / "agents"
    assert folder.name not in ("", ".", "..")
    assert "/" not in folder.name


def test_make_state_dir_is_private_and_out_of_git(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=tmp_path, check=True)
    old = os.umask(0)
    try:
        made = paths.make_state_dir(tmp_path)
    finally:
        os.umask(old)
    assert made == tmp_path / ".maos"
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    ignore = made / ".gitignore"
    assert stat.S_IMODE(ignore.stat().st_mode) == 0o600
    (made / "key").write_text("secret")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout == ""  # nothing under .maos/, not even its .gitignore
    # A .maos/ of an older MAOS, readable by others, is made private; its .gitignore is kept.
    os.chmod(made, 0o755)
    ignore.write_text("mine\n")
    paths.make_state_dir(tmp_path)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert ignore.read_text() == "mine\n"


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


async def test_a_run_writes_only_where_the_layout_says(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "base.txt").write_text("base\n")
    git(tmp_path, "add", "base.txt")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    plan = Plan(
        name="layout",
        tasks=(
            TaskSpec(id="a", isolation="worktree", command="echo a > a.txt; echo out-a"),
            TaskSpec(
                id="b", prompt="read me", isolation="none", depends_on=("a",), command="cat $MAOS_PROMPT_FILE"
            ),
            # Fails: the run keeps its worktrees, so they are looked at too.
            TaskSpec(id="c", isolation="worktree", depends_on=("a",), command="exit 3", max_attempts=1),
        ),
    )
    store = await open_store(f"sqlite:///{paths.store_file(tmp_path)}")
    try:
        orchestrator = Orchestrator(store, plan, RunConfig(agents=2, workdir=str(tmp_path), grace_s=1.0))
        state = await orchestrator.run()
    finally:
        await store.close()
    assert state.status is RunStatus.FAILED, state.summary
    run = orchestrator.run_id
    outputs, prompts = paths.outputs_dir(tmp_path, run), paths.prompts_dir(tmp_path, run)

    named = {
        paths.state_dir(tmp_path) / ".gitignore",
        paths.report_file(tmp_path, run),
        *(paths.store_file(tmp_path).with_name(f"maos.db{end}") for end in ("", "-wal", "-shm")),
        *(paths.attempt_file(outputs, task, 1, end) for task in "abc" for end in (".out", ".err")),
        *(paths.attempt_file(prompts, task, 1, ".prompt") for task in "abc"),
    }
    kept_worktrees = paths.run_worktrees(tmp_path, run)
    files = {path for path in paths.state_dir(tmp_path).rglob("*") if not path.is_dir()}
    elsewhere = {path for path in files - named if kept_worktrees not in path.parents}
    assert elsewhere == set()
    assert paths.report_file(tmp_path, run) in files
    assert paths.attempt_file(outputs, "a", 1, ".out").read_text() == "out-a\n"
    assert paths.attempt_file(prompts, "b", 1, ".prompt") in files
    assert paths.attempt_file(outputs, "b", 1, ".out").read_text() == "read me"
    # no file for what is empty: a's and c's prompts, stderr that got no byte
    assert paths.attempt_file(prompts, "a", 1, ".prompt") not in files
    assert paths.attempt_file(outputs, "a", 1, ".err") not in files
    assert (paths.task_worktree(tmp_path, run, "c") / "base.txt").exists()
    assert paths.integration_worktree(tmp_path, run).is_dir()
    # Everything MAOS wrote itself (not git's worktrees) is its owner's only.
    for path in [paths.state_dir(tmp_path), *paths.run_dir(tmp_path, run).rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path


def test_a_linked_state_folder_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    """A project cloned with ``.maos -> elsewhere`` made MAOS write its store and key there
    and chmod that folder 0700: every command now refuses it, touching nothing."""
    import sys

    project, target = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    (project / ".maos").symlink_to(target)
    (project / "plan.yaml").write_text("name: x\ntasks:\n  - id: a\n    command: 'true'\n")
    for args in (("run", "plan.yaml"), ("runs",), ("status",)):
        done = subprocess.run(
            [sys.executable, "-m", "maos", *args],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1, (args, done.stderr)
        assert "is a link to" in done.stderr
        assert "Traceback" not in done.stderr
    assert list(target.iterdir()) == []
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
