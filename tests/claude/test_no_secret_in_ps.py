"""No secret on a command line (issue 13 item 4): while a Claude Code agent runs (the real CLI
against the scripted model server), no process's command line (what every local user reads
in ``ps``) carries the agent's token; the door's MCP tools still work; and the agent's files
under ``.maos/`` are its owner's only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from pathlib import Path

import pytest

from maos.agents.claude_cli import find_claude_cli
from maos.events import StateWritten
from maos.model import TaskSpec
from maos.store.base import Store

from .conftest import run_plan

pytestmark = pytest.mark.claude

SCRIPT = r"""
rules:
  - name: after-the-tool
    match: {tool_result: '"key": ?"ps/answer", ?"version": ?1'}
    reply: {text: "Stored it."}
  - name: store-the-answer
    match: {tools: 'mcp__maos__state_set', last_user: 'store the answer', tool_result: false}
    reply:
      tool_calls:
        - name: mcp__maos__state_set
          input: {key: "ps/answer", value: {n: 42}}
"""


def _scan(tokens: set[str], cmdlines: set[bytes]) -> None:
    """Every process's command line, and the agent tokens in their environments."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdlines.add(Path(f"/proc/{name}/cmdline").read_bytes())
            for item in Path(f"/proc/{name}/environ").read_bytes().split(b"\0"):
                if item.startswith(b"MAOS_AGENT_TOKEN="):
                    tokens.add(item.split(b"=", 1)[1].decode())


async def _watch(tokens: set[str], cmdlines: set[bytes], stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.to_thread(_scan, tokens, cmdlines)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def test_the_token_is_not_on_any_command_line(sqlite_store: Store, tmp_path: Path) -> None:
    if find_claude_cli() is None:
        pytest.skip("no Claude Code CLI (pip install claude-agent-sdk bundles one)")
    tokens: set[str] = set()
    cmdlines: set[bytes] = set()
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(tokens, cmdlines, stop))
    try:
        run = await run_plan(
            sqlite_store,
            tmp_path / "work",
            SCRIPT,
            TaskSpec(id="t1", prompt="Please store the answer", isolation="none", timeout_s=90),
        )
    finally:
        stop.set()
        await watcher
    assert run.state.tasks["t1"].state.value == "succeeded", run.state.summary
    # The door's MCP tool worked: its event is in the run.
    written = run.of(StateWritten)
    assert [(event.key, event.version) for event in written] == [("ps/answer", 1)]
    # The agent processes were seen, with their tokens, and no command line holds one.
    assert tokens, "no agent process was seen while the run ran"
    assert any(b"claude" in line and b"--mcp-config" in line for line in cmdlines)
    for token in tokens:
        assert not [line for line in cmdlines if token.encode() in line]
    assert not [line for line in cmdlines if b"MAOS_AGENT_TOKEN" in line]
    # The MCP config is a 0600 file, with the agent's bearer token for the door's endpoint
    # (maos.mcp_http), which is on no command line either; everything under .maos/ is private.
    maos_dir = run.workdir / ".maos"
    [config] = list(maos_dir.rglob("mcp/*.json"))
    door = json.loads(config.read_text())["mcpServers"]["maos"]
    assert door["type"] == "http"
    bearer = door["headers"]["Authorization"].removeprefix("Bearer ")
    assert bearer
    assert not [line for line in cmdlines if bearer.encode() in line]
    loose = []
    for path in [maos_dir, *maos_dir.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode != (0o700 if path.is_dir() else 0o600):
            loose.append(f"{path} {mode:03o}")
    assert loose == []
