"""``maos clean``: remove what runs left behind (worktrees kept after failed runs)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from maos.cli._app import app


@app.command()
def clean(
    branches: Annotated[
        bool, typer.Option("--branches", help="Also delete the maos/* branches (their work is lost).")
    ] = False,
) -> None:
    """Remove leftover MAOS worktrees of this repository (branches are kept unless --branches)."""
    from maos.agents.workspace import WORKTREES_DIR, git, remove_worktrees, repository_root

    async def work() -> tuple[int, int]:
        repo = await repository_root(Path.cwd())
        if repo is None:
            return 0, 0
        removed = await remove_worktrees(repo, repo / WORKTREES_DIR)
        deleted = 0
        if branches:
            _, out = await git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/maos/")
            for branch in out.split():
                await git(repo, "branch", "-D", branch)
                deleted += 1
        return removed, deleted

    removed, deleted = asyncio.run(work())
    typer.echo(f"removed {removed} worktree(s)" + (f", deleted {deleted} branch(es)" if branches else ""))
