"""Git worktree isolation: each file-editing task works on its own branch and worktree.

When the run's directory is a git repository:

- the run gets an integration branch ``maos/<run>`` (from ``HEAD`` at the start), checked out
  in its own worktree so the user's checkout is never touched;
- a task gets a worktree on ``maos/tasks/<run>/<task>``, branched from the integration
  branch's tip when it starts — so it sees the merged work of every task it depends on.
  (Not ``maos/<run>/<task>``: git cannot hold a branch ``maos/<run>`` and branches under
  ``maos/<run>/`` at once, since refs are files and folders.);
- when the task succeeds, whatever it changed is committed on its branch and merged into the
  integration branch. Merges happen one at a time, in completion order, which is a
  dependency order (a task starts only after its dependencies succeeded and merged);
- a conflict aborts that merge and reports the files; nothing is lost: the task's branch stays
  (renamed ``maos/tasks/<run>/<task>@<attempt>`` if the task is tried again: task ids never
  hold ``@`` nor ``/``, so no retry branch can be another task's branch or its folder);
- worktrees are removed when the run succeeds and kept when it fails; ``maos clean`` removes
  leftovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from maos.agents.environment import agent_environment
from maos.agents.process import close_transport
from maos.errors import AgentError
from maos.filemodes import private_dir
from maos.paths import integration_worktree, make_state_dir, run_worktrees, task_worktree

log = logging.getLogger("maos.agents.workspace")

AUTHOR = ["-c", "user.name=MAOS", "-c", "user.email=maos@localhost"]


def git_environment() -> dict[str, str]:
    """The environment of MAOS's git: an agent's allowlist (``maos.agents.environment``).

    Agents can write the repository's ``.git`` (a worktree's git directory is in it), so the
    programs it makes git run when MAOS commits, merges and checks out their work (hooks, a
    filter or merge driver, fsmonitor, a signing program) may be theirs. The user's own hooks
    are the repository's policy and still run (a refusing pre-commit hook fails the task);
    whatever runs gets what an agent gets, none of MAOS's secrets."""
    return agent_environment({"GIT_TERMINAL_PROMPT": "0"})


class GitError(AgentError):
    """A git command failed."""


@dataclass(frozen=True, slots=True)
class MergeResult:
    ok: bool
    commit: str = ""
    conflicts: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()  # files the task changed


GIT_TIMEOUT_S = 600.0
"""How long one git command of MAOS's may take: a hook of the repository (the user's, or one an
agent planted) that hangs fails that task's commit or merge, not every task behind it."""


async def git(cwd: Path, *args: str, check: bool = True, worktree_of: Path | None = None) -> tuple[int, str]:
    """Run git; return (exit code, stdout). Raises GitError with stderr when ``check``, and
    when it runs longer than ``GIT_TIMEOUT_S`` (killed, with what it started).

    ``worktree_of``: ``cwd`` is a worktree of that repository that an agent worked in. Its
    ``.git`` file is the agent's to rewrite (to point at the user's own checkout, or another
    repository), so git is told the worktree's record in the repository instead
    (``GIT_DIR``, ``GIT_WORK_TREE``); a worktree the repository no longer records is an error.
    """
    env = git_environment()
    if worktree_of is not None:
        env["GIT_DIR"] = str(await _worktree_record(worktree_of, cwd))
        env["GIT_WORK_TREE"] = str(cwd)
    proc = await asyncio.create_subprocess_exec(
        "git",
        *AUTHOR,
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its hooks with it, to be stopped together
    )
    try:
        async with asyncio.timeout(GIT_TIMEOUT_S):
            out, err = await proc.communicate()
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        close_transport(proc)
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise GitError(
            f"git {' '.join(args)} in {cwd} did not finish in {GIT_TIMEOUT_S:g} s and was stopped "
            "(a hook of the repository that hangs?)"
        ) from None
    code = proc.returncode or 0
    if check and code != 0:
        raise GitError(f"git {' '.join(args)} failed in {cwd}: {err.decode(errors='replace').strip()}")
    return code, out.decode(errors="replace")


async def _worktree_record(repo: Path, worktree: Path) -> Path:
    """The folder where ``repo`` records its linked worktree ``worktree``
    (``.git/worktrees/NAME``, found by the path it records, not by the worktree's own ``.git``)."""
    _, common = await git(repo, "rev-parse", "--git-common-dir")
    records = (repo / common.strip()).resolve() / "worktrees"
    wanted = os.path.join(os.path.realpath(worktree), ".git")
    with contextlib.suppress(OSError):
        for record in records.iterdir():
            with contextlib.suppress(OSError):
                recorded = (record / "gitdir").read_text(errors="replace").strip()
                folder, name = os.path.split(recorded)
                if name == ".git" and os.path.join(os.path.realpath(folder), ".git") == wanted:
                    return record
    raise GitError(f"{worktree} is not a worktree of {repo} any more: MAOS will not commit from it")


async def repository_root(path: Path) -> Path | None:
    """The top of the git work tree containing ``path``, or None if it is not in one."""
    if shutil.which("git") is None:
        return None
    code, out = await git(path, "rev-parse", "--show-toplevel", check=False)
    return Path(out.strip()) if code == 0 and out.strip() else None


class Workspaces:
    """The worktrees and branches of one run in one repository."""

    def __init__(self, repo: Path, run_id: str) -> None:
        self.repo = repo
        self.run_id = run_id
        self.root = run_worktrees(repo, run_id)
        self.integration_branch = f"maos/{run_id}"
        self.integration_dir = integration_worktree(repo, run_id)
        self._lock = asyncio.Lock()  # git worktree/branch bookkeeping of the repo; merges

    def branch(self, task_id: str) -> str:
        return f"maos/tasks/{self.run_id}/{task_id}"

    def retry_branch(self, task_id: str, attempt: int) -> str:
        """Where attempt ``attempt``'s branch is kept when the task is tried again."""
        return f"{self.branch(task_id)}@{attempt}"

    def path(self, task_id: str) -> Path:
        return task_worktree(self.repo, self.run_id, task_id)

    async def _free_name(self, name: str) -> str:
        """``name``, or ``name-2``, ``name-3`` ... when taken (an attempt number given twice,
        as when an assignment was lost before its process started)."""
        candidate, number = name, 1
        while True:
            code, _ = await git(
                self.repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{candidate}", check=False
            )
            if code != 0:
                return candidate
            number += 1
            candidate = f"{name}-{number}"

    async def start(self) -> None:
        """Create the integration branch and its worktree (idempotent: a resume reuses them)."""
        async with self._lock:
            if self.integration_dir.exists():
                return
            make_state_dir(self.repo)
            private_dir(self.root)
            code, _ = await git(self.repo, "rev-parse", "--verify", "--quiet", "HEAD", check=False)
            if code != 0:
                # An empty repository: give it a root commit to branch from.
                await git(self.repo, "commit", "--allow-empty", "-m", "maos: initial commit")
            exists, _ = await git(
                self.repo,
                "rev-parse",
                "--verify",
                "--quiet",
                f"refs/heads/{self.integration_branch}",
                check=False,
            )
            if exists == 0:
                await git(self.repo, "worktree", "add", str(self.integration_dir), self.integration_branch)
            else:
                await git(
                    self.repo,
                    "worktree",
                    "add",
                    "-b",
                    self.integration_branch,
                    str(self.integration_dir),
                    "HEAD",
                )

    async def prepare(self, task_id: str, attempt: int, *, keep: bool = False) -> Path:
        """A fresh worktree for the task on its branch, from the integration branch's tip
        (``keep``: the existing one as it is, for an agent that continues its session)."""
        path = self.path(task_id)
        branch = self.branch(task_id)
        if keep and path.exists():
            return path
        async with self._lock:
            if path.exists():
                await git(self.repo, "worktree", "remove", "--force", str(path))
            code, _ = await git(
                self.repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False
            )
            if code == 0:
                # A previous attempt's branch: keep its work under another name.
                await git(
                    self.repo,
                    "branch",
                    "-m",
                    branch,
                    await self._free_name(self.retry_branch(task_id, attempt - 1)),
                )
            await git(self.repo, "worktree", "add", "-b", branch, str(path), self.integration_branch)
        return path

    async def finish(self, task_id: str, message: str) -> MergeResult:
        """Commit what the task changed on its branch and merge it into the integration branch."""
        path = self.path(task_id)
        await git(path, "add", "-A", worktree_of=self.repo)
        code, _ = await git(path, "diff", "--cached", "--quiet", check=False, worktree_of=self.repo)
        if code != 0:
            await git(path, "commit", "-q", "-m", message, worktree_of=self.repo)
        async with self._lock:
            _, changed_out = await git(
                self.integration_dir, "diff", "--name-only", f"HEAD...{self.branch(task_id)}"
            )
            changed = tuple(line for line in changed_out.splitlines() if line)
            code, _ = await git(
                self.integration_dir,
                "merge",
                "--no-ff",
                "-q",
                "-m",
                f"maos: merge {task_id}",
                self.branch(task_id),
                check=False,
            )
            if code != 0:
                _, conflicted = await git(
                    self.integration_dir, "diff", "--name-only", "--diff-filter=U", check=False
                )
                await git(self.integration_dir, "merge", "--abort", check=False)
                files = tuple(line for line in conflicted.splitlines() if line)
                log.warning("merge of %s into %s conflicts: %s", task_id, self.integration_branch, files)
                return MergeResult(ok=False, conflicts=files, changed=changed)
            _, head = await git(self.integration_dir, "rev-parse", "HEAD")
            return MergeResult(ok=True, commit=head.strip(), changed=changed)

    async def remove(self) -> None:
        """Remove every worktree of the run (branches stay: they hold the work)."""
        async with self._lock:
            await remove_worktrees(self.repo, self.root)

    async def delete_merged_branches(self) -> list[str]:
        """Delete the run's task branches whose work is in the integration branch; a branch
        with anything not merged (a failed attempt's work) stays. Call after ``remove``."""
        async with self._lock:
            _, out = await git(
                self.repo,
                "branch",
                "--format=%(refname:short)",
                "--merged",
                self.integration_branch,
                "--list",
                f"maos/tasks/{self.run_id}/*",
            )
            merged = [line.strip() for line in out.splitlines() if line.strip()]
            for branch in merged:
                await git(self.repo, "branch", "-D", branch)
            return merged


def integration_branch(workdir: Path, run_id: str) -> str | None:
    """The run's merge branch ``maos/<run>`` if the repository at ``workdir`` has it (a
    blocking call, for the CLI's last lines)."""
    branch = f"maos/{run_id}"
    done = _git_now(workdir, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")
    return branch if done is not None and done.returncode == 0 else None


def in_repository(workdir: Path) -> bool:
    """Whether ``workdir`` is inside a git work tree (blocking)."""
    done = _git_now(workdir, "rev-parse", "--is-inside-work-tree")
    return done is not None and done.returncode == 0 and done.stdout.strip() == b"true"


def _git_now(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes] | None:
    """git, blocking, for the CLI outside the event loop; None when git cannot run."""
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=git_environment(),
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None


async def remove_worktrees(repo: Path, root: Path) -> int:
    """Remove the worktrees under ``root`` and prune git's records; return how many."""
    removed = 0
    if root.exists():
        for child in sorted(root.rglob(".git")):
            await git(repo, "worktree", "remove", "--force", str(child.parent), check=False)
            removed += 1
        shutil.rmtree(root, ignore_errors=True)
    await git(repo, "worktree", "prune", check=False)
    return removed
