"""``maos doctor``: what this machine gives MAOS, checked for real."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from maos.cli._app import app
from maos.cli._common import JsonOption, StoreOption, store_url


async def _checks(url: str | None, redis_url: str) -> list[dict[str, Any]]:
    from maos import __version__
    from maos.agents.claude_cli import claude_cli_version, find_claude_cli
    from maos.errors import MaosError
    from maos.store import DEFAULT_STORE_URL, open_store

    checks: list[dict[str, Any]] = [
        {"check": "maos", "ok": True, "detail": f"{__version__} on Python {sys.version.split()[0]}"}
    ]
    cli = find_claude_cli(Path.cwd())
    if cli is None:
        checks.append(
            {"check": "claude cli", "ok": False, "detail": "not found: pip install claude-agent-sdk"}
        )
    else:
        version = await claude_cli_version(cli)
        checks.append(
            {"check": "claude cli", "ok": True, "detail": f"{cli} ({version or 'version unknown'})"}
        )
    key = bool(os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN"))
    base = os.environ.get("MAOS_ANTHROPIC_BASE_URL") or os.environ.get("ANTHROPIC_BASE_URL")
    if base:
        checks.append({"check": "model", "ok": True, "detail": f"base URL {base}"})
    else:
        detail = (
            "API key set: real Claude"
            if key
            else "no ANTHROPIC_API_KEY: `maos model-server` or `make demo` rehearse offline"
        )
        checks.append({"check": "model", "ok": key, "detail": detail})
    for name, target in (("store", url or DEFAULT_STORE_URL), ("redis", redis_url)):
        try:
            store = await open_store(target)
        except MaosError as exc:
            checks.append({"check": name, "ok": False, "detail": str(exc)})
            continue
        try:
            await store.get("maos:doctor")
            checks.append({"check": name, "ok": True, "detail": f"{store.url} reachable"})
        except MaosError as exc:
            checks.append({"check": name, "ok": False, "detail": str(exc)})
        finally:
            await store.close()
    for tool, why in (("git", "worktree isolation"), ("redis-server", "tests start their own servers")):
        found = shutil.which(tool)
        checks.append({"check": tool, "ok": found is not None, "detail": found or f"not found ({why})"})
    return checks


@app.command()
def doctor(
    store: StoreOption = None,
    redis: Annotated[str, typer.Option("--redis", help="The Redis to check.")] = "redis://127.0.0.1:6379",
    json_output: JsonOption = False,
) -> None:
    """Check the Claude Code CLI, the model access, the store and Redis."""
    from rich.console import Console

    checks = asyncio.run(_checks(store_url(store), redis))
    if json_output:
        typer.echo(json.dumps(checks, indent=2))
        return
    console = Console(highlight=False)
    for item in checks:
        mark = "[green]ok[/]  " if item["ok"] else "[yellow]--[/]  "
        console.print(f"{mark}{item['check']:<12} {item['detail']}", soft_wrap=True)
