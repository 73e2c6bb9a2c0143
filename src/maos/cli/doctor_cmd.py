"""``maos doctor``: what this machine gives MAOS, checked for real.

The model check sends one tiny request (``POST /v1/messages``, ``max_tokens`` 1) to the
endpoint agents would use, with the credentials they would use: a dead base URL or a refused
key fails here instead of in every agent. Exit code 1 when a check a run needs fails (the
Claude Code CLI, the model, the store); Redis, git and redis-server are reported only, and so
is a ``.maos/`` folder or SQLite store that other local users can read (the store holds each
run's token secret), with the ``chmod`` that fixes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import typer

from maos.cli._app import app
from maos.cli._common import (
    DEFAULT_REDIS_URL,
    EXIT_FAILED,
    JsonOption,
    RedisUrlOption,
    StoreOption,
    shown,
    store_url,
)

REQUIRED = ("claude cli", "model", "settings", "store")
"""Checks without which a run of Claude Code tasks fails: doctor exits 1 if one does."""
MODEL_TIMEOUT_S = 10.0
ANTHROPIC_API_URL = "https://api.anthropic.com"
PROBE_MODEL = "claude-haiku-4-5"
"""The model of the probe request unless ``$ANTHROPIC_MODEL`` names one."""
OAUTH_BETA = "oauth-2025-04-20"


async def _checks(url: str | None, redis_url: str) -> list[dict[str, Any]]:
    from maos import __version__
    from maos.agents.claude_cli import claude_cli_version, find_claude_cli
    from maos.errors import MaosError
    from maos.paths import state_dir
    from maos.store import DEFAULT_STORE_URL, open_store, sqlite_path

    checks: list[dict[str, Any]] = [
        {"check": "maos", "ok": True, "detail": f"{__version__} on Python {sys.version.split()[0]}"}
    ]
    try:
        cli = find_claude_cli(Path.cwd())
    except MaosError as exc:  # MAOS_CLAUDE_CLI names no program: say so, and check the rest
        checks.append({"check": "claude cli", "ok": False, "detail": str(exc)})
    else:
        if cli is None:
            checks.append(
                {"check": "claude cli", "ok": False, "detail": "not found: pip install claude-agent-sdk"}
            )
        else:
            version = await claude_cli_version(cli)
            checks.append(
                {"check": "claude cli", "ok": True, "detail": f"{cli} ({version})"}
                if version is not None
                else {
                    "check": "claude cli",
                    "ok": False,
                    "detail": f"{cli} does not answer --version as the Claude Code CLI does",
                }
            )
    checks.append({"check": "model", **await model_check(os.environ)})
    checks.append({"check": "settings", **settings_check(os.environ, url)})
    target = url or DEFAULT_STORE_URL
    database = sqlite_path(target) if target.startswith("sqlite:") else None
    # Before the store is opened: opening creates a missing database (0600).
    checks.append({"check": "file modes", **file_modes_check(state_dir(Path.cwd()), database)})
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


def settings_check(env: Mapping[str, str], store: str | None) -> dict[str, Any]:
    """``{"ok": ..., "detail": ...}``: whether the ``MAOS_*`` variables a run reads are ones
    it can use, checked by the code that reads them (a bad one stops a run, or worse, each of
    its tasks' attempts, as ``MAOS_ENCRYPT=maybe`` did)."""
    from maos.audit import AUDIT_ENV, check_audit_url
    from maos.blobs import check_endpoint_url, open_blob_store
    from maos.door_transport import pick_door_transport
    from maos.errors import MaosError
    from maos.paths import state_dir
    from maos.security import DATA_KEY_ENV, KEY_ENV, encrypts_by_default, load_or_create_key, parse_key
    from maos.store import DEFAULT_STORE_URL

    problems: list[str] = []

    def check(name: str, action: Callable[[], object]) -> None:
        try:
            action()
        except (MaosError, ValueError) as exc:
            problems.append(f"{name}: {exc}")

    check("MAOS_ENCRYPT", lambda: encrypts_by_default(store or DEFAULT_STORE_URL, env))
    check("MAOS_DOOR_TRANSPORT", lambda: pick_door_transport(None, env))
    if env.get(KEY_ENV):  # with the old keys; a key file is checked where it is used
        check(KEY_ENV, lambda: load_or_create_key(state_dir(Path.cwd()), env=env, create=False))
    if data_key := env.get(DATA_KEY_ENV):
        check(DATA_KEY_ENV, lambda: parse_key(data_key, source=DATA_KEY_ENV))
    if audit := env.get(AUDIT_ENV):
        check(AUDIT_ENV, lambda: check_audit_url(audit))
    if endpoint := env.get("MAOS_S3_ENDPOINT"):
        check("MAOS_S3_ENDPOINT", lambda: check_endpoint_url(endpoint))
    if checkpoints := env.get("MAOS_CHECKPOINTS"):
        check("MAOS_CHECKPOINTS", lambda: open_blob_store(checkpoints, workdir=Path.cwd()))
    if problems:
        return {"ok": False, "detail": "; ".join(problems)}
    return {"ok": True, "detail": "the MAOS_* variables set are ones a run can use"}


def file_modes_check(maos_dir: Path, database: Path | None) -> dict[str, Any]:
    """``{"ok": ..., "detail": ...}``: whether ``maos_dir`` (0700) and the SQLite ``database``
    with its ``-wal``/``-shm`` files (0600) are their owner's only; if not, what to run."""
    from maos.filemodes import loose_mode

    loose: list[tuple[Path, int, str]] = []
    for path, mode in (
        (maos_dir, "700"),
        *((Path(f"{database}{suffix}"), "600") for suffix in ("", "-wal", "-shm") if database),
    ):
        bits = loose_mode(path)
        if bits is not None:
            loose.append((path, bits, mode))
    if not loose:
        return {"ok": True, "detail": "the .maos folder and the store are readable by their owner only"}
    where = ", ".join(f"{path} (group/others: {bits:03o})" for path, bits, _ in loose)
    fix = " && ".join(f"chmod {mode} {shlex.quote(str(path))}" for path, _, mode in loose)
    return {
        "ok": False,
        "detail": f"readable by other local users (the store holds each run's token secret): "
        f"{where}. Fix: {fix}",
    }


async def model_check(env: Mapping[str, str], *, timeout_s: float = MODEL_TIMEOUT_S) -> dict[str, Any]:
    """``{"ok": ..., "detail": ...}`` of one real request to the endpoint agents would call."""
    import httpx

    from maos.agents.claude_code import NO_MODEL, PLACEHOLDER_API_KEY, model_access, model_base_url

    access = model_access(env)
    if access is None:
        return {"ok": False, "detail": NO_MODEL}
    base = model_base_url(env)
    headers = {"anthropic-version": "2023-06-01", "content-type": "application/json"}
    if env.get("ANTHROPIC_API_KEY"):
        headers["x-api-key"] = env["ANTHROPIC_API_KEY"]
    elif env.get("ANTHROPIC_AUTH_TOKEN"):
        headers["authorization"] = f"Bearer {env['ANTHROPIC_AUTH_TOKEN']}"
    elif env.get("CLAUDE_CODE_OAUTH_TOKEN"):
        headers["authorization"] = f"Bearer {env['CLAUDE_CODE_OAUTH_TOKEN']}"
        headers["anthropic-beta"] = OAUTH_BETA
    elif base is not None:
        headers["x-api-key"] = PLACEHOLDER_API_KEY  # what agents send to a base URL without a key
    else:
        return {"ok": True, "detail": access}  # a cloud provider: the CLI's business
    url = (base or ANTHROPIC_API_URL).rstrip("/") + "/v1/messages"
    body = {
        "model": env.get("ANTHROPIC_MODEL") or PROBE_MODEL,
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "maos doctor: reply with one word"}],
    }
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        why = str(exc) or type(exc).__name__
        return {"ok": False, "detail": f"{url}: cannot reach it ({type(exc).__name__}: {why})"}
    took = f"{time.monotonic() - started:.2f}s"
    status = response.status_code
    message = _api_error(response)
    if response.is_success:
        return {"ok": True, "detail": f"{url} answered in {took} ({access})"}
    if status in (429, 529) or (status == 404 and "model" in message.lower()):
        # It answered and took the credentials; busy, or the probe's model is not offered.
        return {"ok": True, "detail": f"{url} answered HTTP {status} in {took}: {message}"}
    return {"ok": False, "detail": f"{url} answered HTTP {status}: {message}"}


def _api_error(response: Any) -> str:
    """The API's error message (``{"error": {"message": ...}}``), else the start of the body."""
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
    except (ValueError, AttributeError):
        pass
    return str(response.text)[:300].strip() or "(no body)"


@app.command()
def doctor(
    store: StoreOption = None,
    redis_url: RedisUrlOption = DEFAULT_REDIS_URL,
    json_output: JsonOption = False,
) -> None:
    """Check the Claude Code CLI, the model (one tiny real request), the store and Redis.

    Exit code 1 when the CLI, the model or the store fails."""
    from rich.console import Console

    checks = asyncio.run(_checks(store_url(store), redis_url))
    failed = [item["check"] for item in checks if item["check"] in REQUIRED and not item["ok"]]
    if json_output:
        typer.echo(json.dumps(checks, indent=2))
    else:
        console = Console(highlight=False)
        for item in checks:
            if item["ok"]:
                mark = "[green]ok[/]   "
            else:
                mark = "[red]FAIL[/] " if item["check"] in REQUIRED else "[yellow]--[/]   "
            console.print(f"{mark}{item['check']:<12} {shown(item['detail'])}", soft_wrap=True)
    if failed:
        raise typer.Exit(EXIT_FAILED)
