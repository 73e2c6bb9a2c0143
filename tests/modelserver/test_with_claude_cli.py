"""The real Claude Code CLI against the model server, and finding that CLI.

The end-to-end tests (marker ``claude``) run the CLI binary as a subprocess with its own config
directory and working directory, offline: its only network peer is our loopback server.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from maos.agents import claude_cli
from maos.agents.claude_cli import bundled_claude_cli, claude_cli_version, find_claude_cli
from maos.errors import AgentError
from maos.modelserver import parse_script, running_model_server

EXAMPLE = Path(__file__).resolve().parents[2] / "src/maos/examples/model-scripts/rehearsal.yaml"
CLI_TIMEOUT_S = 90.0


# --------------------------------------------------------------------------- finding the CLI


def fake_cli(path: Path, version: str = "9.8.7") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{version} (Claude Code)'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_env_var_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = fake_cli(tmp_path / "my-claude")
    monkeypatch.setenv(claude_cli.ENV_VAR, str(cli))
    assert find_claude_cli() == cli


def test_env_var_that_is_not_executable_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(claude_cli.ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(AgentError, match=r"MAOS_CLAUDE_CLI=.*missing is not an executable file"):
        find_claude_cli()


def test_then_bundled_then_path_then_node_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(claude_cli.ENV_VAR, raising=False)
    bundled = bundled_claude_cli()
    if bundled is not None:
        assert bundled.parts[-2:] == ("_bundled", "claude")
        assert find_claude_cli() == bundled
    monkeypatch.setattr(claude_cli, "bundled_claude_cli", lambda: None)
    on_path = fake_cli(tmp_path / "bin" / "claude")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_claude_cli(tmp_path) == on_path
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_claude_cli(tmp_path) is None
    npm = fake_cli(tmp_path / "node_modules" / "@anthropic-ai" / "claude-code" / "bin" / "claude.exe")
    assert find_claude_cli(tmp_path) == npm


async def test_version(tmp_path: Path) -> None:
    assert await claude_cli_version(fake_cli(tmp_path / "claude", "1.2.3")) == "1.2.3"
    assert await claude_cli_version(tmp_path / "absent") is None
    bundled = bundled_claude_cli()
    if bundled is not None:  # read from the claude.version file next to it, without running it
        version = await claude_cli_version(bundled)
        assert version is not None
        assert version.count(".") == 2


# --------------------------------------------------------------------------- the real CLI


@dataclass
class CliRun:
    returncode: int
    lines: list[dict[str, Any]]
    stderr: str
    elapsed_s: float

    @property
    def result(self) -> dict[str, Any]:
        [result] = [line for line in self.lines if line["type"] == "result"]
        return result

    def of(self, kind: str, subtype: str | None = None) -> list[dict[str, Any]]:
        return [
            x for x in self.lines if x["type"] == kind and (subtype is None or x.get("subtype") == subtype)
        ]


@pytest.fixture
def cli() -> Path:
    found = find_claude_cli()
    if found is None:
        pytest.skip("no Claude Code CLI (pip install claude-agent-sdk bundles one)")
    return found


async def run_claude(
    cli: Path,
    url: str,
    prompt: str,
    tmp_path: Path,
    *,
    agent: str | None = None,
    env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> CliRun:
    """One headless CLI run in its own cwd and config dir; always reaped."""
    cwd = tmp_path / "work"
    config = tmp_path / "config"
    cwd.mkdir(exist_ok=True)
    config.mkdir(exist_ok=True)
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(config),
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": "test",
        "CLAUDE_CONFIG_DIR": str(config),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        **(env or {}),
    }
    args = ["-p", prompt, "--output-format", "stream-json", "--verbose"]
    args += ["--permission-mode", "acceptEdits", "--session-id", str(uuid.uuid4())]
    if agent is not None:
        args += ["--append-system-prompt", f"MAOS_AGENT_ID={agent}"]
    args += extra_args
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        str(cli),
        *args,
        cwd=cwd,
        env=full_env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(CLI_TIMEOUT_S):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert proc.returncode is not None
    return CliRun(proc.returncode, lines, err.decode(errors="replace"), time.monotonic() - started)


async def request_log(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url) as c:
        requests: list[dict[str, Any]] = (await c.get("/requests")).json()["requests"]
        return requests


@pytest.mark.claude
async def test_plain_text_reply(cli: Path, tmp_path: Path) -> None:
    script = parse_script(
        "rules:\n"
        "  - match: {last_user: '(?i)say hello', agent: solo}\n"
        "    reply:\n"
        "      text: 'Hello from the script, ${agent}.'\n"
        "      usage: {input_tokens: 1000, output_tokens: 10}\n"
    )
    async with running_model_server(script) as url:
        run = await run_claude(cli, url, "Please say hello", tmp_path, agent="solo")
        log = await request_log(url)
    assert run.returncode == 0, run.stderr
    result = run.result
    assert result["is_error"] is False
    assert result["terminal_reason"] == "completed"
    assert result["result"] == "Hello from the script, solo."
    assert result["num_turns"] == 1
    assert result["usage"]["input_tokens"] == 1000
    assert result["usage"]["output_tokens"] == 10
    assert result["total_cost_usd"] > 0
    [init] = run.of("system", "init")
    assert init["cwd"] == str(tmp_path / "work")
    [entry] = log
    assert entry["path"] == "/v1/messages"
    assert entry["stream"] is True
    assert entry["agent"] == "solo"
    assert entry["rule"] == 1
    assert entry["session"] == result["session_id"]
    assert "Write" in entry["tools"]
    assert "Bash" in entry["tools"]


@pytest.mark.claude
async def test_scripted_write_creates_a_real_file(cli: Path, tmp_path: Path) -> None:
    async with running_model_server(EXAMPLE) as url:
        run = await run_claude(cli, url, "please create notes/hello.txt", tmp_path, agent="writer-1")
        log = await request_log(url)
    assert run.returncode == 0, run.stderr
    created = tmp_path / "work" / "notes" / "hello.txt"
    assert created.read_text() == "Created by agent writer-1 on turn 1.\n"
    tool_uses = [
        block
        for line in run.of("assistant")
        for block in line["message"]["content"]
        if block["type"] == "tool_use"
    ]
    assert [t["name"] for t in tool_uses] == ["Write"]
    tool_results = [
        block
        for line in run.of("user")
        for block in line["message"]["content"]
        if block["type"] == "tool_result"
    ]
    assert [r["tool_use_id"] for r in tool_results] == [tool_uses[0]["id"]]
    result = run.result
    assert result["is_error"] is False
    assert result["result"] == "Done: writer-1 finished on turn 2."
    assert result["num_turns"] == 2
    assert result["usage"]["input_tokens"] == 1200 + 1500
    assert result["usage"]["output_tokens"] == 80 + 20
    assert [(e["turn"], e["rule_name"], e["tool_result"]) for e in log] == [
        (1, "create-file", False),
        (2, "after-a-tool", True),
    ]


@pytest.mark.claude
async def test_529_then_success_retries(cli: Path, tmp_path: Path) -> None:
    # The agent id comes in a header this time (the other way MAOS can name an agent).
    async with running_model_server(EXAMPLE) as url:
        run = await run_claude(
            cli,
            url,
            "please create a.txt",
            tmp_path,
            env={"ANTHROPIC_CUSTOM_HEADERS": "x-maos-agent-id: flaky"},
        )
        log = await request_log(url)
    assert run.returncode == 0, run.stderr
    [retry] = run.of("system", "api_retry")
    assert retry["attempt"] == 1
    assert retry["error_status"] == 529
    assert retry["retry_delay_ms"] < 5000
    assert run.result["is_error"] is False
    assert (tmp_path / "work" / "a.txt").is_file()
    assert [(e["agent"], e["rule_name"], e["status"]) for e in log] == [
        ("flaky", "flaky-agent-overloaded-once", 529),
        ("flaky", "create-file", 200),
        ("flaky", "after-a-tool", 200),
    ]


@pytest.mark.claude
async def test_persistent_529_is_an_api_error(cli: Path, tmp_path: Path) -> None:
    script = parse_script("rules:\n  - reply: {error: {status: 529}}\n")
    async with running_model_server(script) as url:
        run = await run_claude(cli, url, "hi", tmp_path, env={"CLAUDE_CODE_MAX_RETRIES": "1"})
        log = await request_log(url)
    assert run.returncode == 1
    assert run.result["is_error"] is True
    assert run.result["terminal_reason"] == "api_error"
    assert [e["status"] for e in log] == [529, 529]


MCP_SERVER = """
from mcp.server.mcpserver import MCPServer

server = MCPServer("probe")


@server.tool()
def shout(text: str) -> str:
    \"\"\"Upper-case the text.\"\"\"
    return "SHOUTED: " + text.upper()


server.run()
"""


@pytest.mark.claude
async def test_scripted_mcp_tool_call_reaches_a_real_mcp_server(cli: Path, tmp_path: Path) -> None:
    server_py = tmp_path / "mcp_probe.py"
    server_py.write_text(MCP_SERVER)
    config = {"mcpServers": {"probe": {"command": sys.executable, "args": [str(server_py)]}}}
    script = parse_script(
        r"""
rules:
  - match: {tool_result: 'SHOUTED: (?P<loud>\w+)'}
    reply: {text: "The server said ${loud}"}
  - match: {tools: mcp__probe__shout, last_user: 'shout (?P<word>\w+)', tool_result: false}
    reply:
      tool_calls: [{name: mcp__probe__shout, input: {text: "${word}"}}]
"""
    )
    async with running_model_server(script) as url:
        run = await run_claude(
            cli,
            url,
            "please shout hello",
            tmp_path,
            env={"ENABLE_TOOL_SEARCH": "false"},
            # -p with acceptEdits denies MCP tools that are not allowed by name.
            extra_args=(
                "--mcp-config",
                json.dumps(config),
                "--strict-mcp-config",
                "--allowedTools",
                "mcp__probe__shout",
            ),
        )
        log = await request_log(url)
    assert run.returncode == 0, run.stderr
    [init] = run.of("system", "init")
    assert [(m["name"], m["status"]) for m in init["mcp_servers"]] == [("probe", "connected")]
    assert run.result["is_error"] is False
    assert run.result["result"] == "The server said HELLO"
    assert "mcp__probe__shout" in log[0]["tools"]
    assert [e["rule"] for e in log] == [2, 1]


@pytest.mark.claude
async def test_a_looping_script_ends_at_max_turn(cli: Path, tmp_path: Path) -> None:
    script = parse_script(
        "max_turn: 3\n"
        "rules:\n"
        "  - reply: {tool_calls: [{name: Bash, input: {command: 'true', description: loop}}]}\n"
    )
    async with running_model_server(script) as url:
        run = await run_claude(cli, url, "loop", tmp_path)
        log = await request_log(url)
    assert run.returncode == 0, run.stderr
    assert run.result["is_error"] is False
    assert run.result["result"] == "(maos model-server: turn limit 3 reached; ending the turn)"
    assert [(e["turn"], e["rule"], e["rule_name"]) for e in log] == [
        (1, 1, None),
        (2, 1, None),
        (3, 1, None),
        (4, None, "max_turn"),
    ]
