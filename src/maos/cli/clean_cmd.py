"""``maos clean``: remove what runs left behind (worktrees kept after failed runs)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from maos.cli._app import app
from maos.cli._common import EXIT_FAILED, JsonOption, err_console


@dataclass
class Cleaned:
    """What ``maos clean`` did: ``repository`` None when the directory is in none."""

    repository: str | None
    removed_worktrees: int = 0
    deleted_branches: list[str] = field(default_factory=list)
    kept_branches: dict[str, str] = field(default_factory=dict)  # branch -> why git refused


@app.command()
def clean(
    branches: Annotated[
        bool, typer.Option("--branches", help="Also delete the maos/* branches (their work is lost).")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Remove leftover MAOS worktrees of this repository (branches are kept unless --branches).

    A branch git refuses to delete (checked out somewhere) is named, the others are deleted,
    and the exit code is 1."""
    from maos.agents.workspace import GitError, git, remove_worktrees, repository_root
    from maos.paths import worktrees_dir

    async def work() -> Cleaned:
        repo = await repository_root(Path.cwd())
        if repo is None:
            return Cleaned(repository=None)
        done = Cleaned(
            repository=str(repo), removed_worktrees=await remove_worktrees(repo, worktrees_dir(repo))
        )
        if branches:
            _, out = await git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/maos/")
            for branch in out.split():
                try:
                    await git(repo, "branch", "-D", branch)
                except GitError as exc:
                    done.kept_branches[branch] = str(exc)
                else:
                    done.deleted_branches.append(branch)
        return done

    done = asyncio.run(work())
    if json_output:
        typer.echo(json.dumps(asdict(done), indent=2))
    else:
        if done.repository is None:
            err_console().print("not in a git repository: no worktrees to remove", soft_wrap=True)
        line = f"removed {done.removed_worktrees} worktree(s)"
        if branches:
            line += f", deleted {len(done.deleted_branches)} branch(es)"
        typer.echo(line)
        for branch, why in done.kept_branches.items():
            err_console().print(f"kept {branch}: {why}", markup=False, highlight=False, soft_wrap=True)
    if done.kept_branches:
        raise typer.Exit(EXIT_FAILED)
