"""Finding the Claude Code CLI binary and its version.

Search order of ``find_claude_cli``: ``$MAOS_CLAUDE_CLI``, the binary bundled in the
``claude-agent-sdk`` wheel, ``claude`` on PATH, then
``<project>/node_modules/@anthropic-ai/claude-code/bin/claude.exe`` (``npm install``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import shutil
from pathlib import Path

from maos.errors import AgentError

ENV_VAR = "MAOS_CLAUDE_CLI"
_NPM_BIN = Path("node_modules/@anthropic-ai/claude-code/bin/claude.exe")
_VERSION_RE = re.compile(r"\d+\.\d+\.\d+")
_VERSION_TIMEOUT_S = 30.0  # a cold start of the ~400 MB binary can take a few seconds


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def bundled_claude_cli() -> Path | None:
    """The CLI inside the installed ``claude_agent_sdk`` package, if there is one.

    Found without importing the SDK (``find_spec`` only reads the package location)."""
    try:
        spec = importlib.util.find_spec("claude_agent_sdk")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "_bundled" / "claude"
    return path if _executable(path) else None


def find_claude_cli(project_dir: Path | None = None) -> Path | None:
    """The Claude Code CLI to run, or None when there is none.

    Raises ``AgentError`` if ``$MAOS_CLAUDE_CLI`` is set but is not an executable file: a
    setting that is silently ignored would run a different binary than the user asked for."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        path = Path(configured).expanduser()
        if not _executable(path):
            raise AgentError(f"{ENV_VAR}={configured} is not an executable file")
        return path
    if (bundled := bundled_claude_cli()) is not None:
        return bundled
    if (on_path := shutil.which("claude")) is not None:
        return Path(on_path)
    npm = (project_dir or Path.cwd()) / _NPM_BIN
    return npm if _executable(npm) else None


async def claude_cli_version(path: Path) -> str | None:
    """``"2.1.332"``-style version of the CLI at ``path``, or None if it cannot be told.

    The bundled CLI has a ``claude.version`` file next to it; others are asked with
    ``--version`` (the process is always reaped, also on timeout or cancellation)."""
    version_file = path.with_name("claude.version")
    if version_file.is_file():
        found = _VERSION_RE.search(version_file.read_text(encoding="utf-8", errors="replace"))
        if found:
            return found.group(0)
    try:
        proc = await asyncio.create_subprocess_exec(
            str(path),
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        async with asyncio.timeout(_VERSION_TIMEOUT_S):
            out, _ = await proc.communicate()
    except TimeoutError:
        return None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
    found = _VERSION_RE.search(out.decode(errors="replace"))
    return found.group(0) if found else None
