"""``maos mcp``: the door as a real stdio MCP server, driven by the MCP client library and by
the real Claude Code CLI (marker ``claude``) against the scripted model server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from maos.agents.claude_cli import find_claude_cli
from maos.agents.task_env import ENV_TASK_TOKEN, REQUIRED_ENV
from maos.door import Door
from maos.events import DoorRefused, MessageSent, MessagesRead, ResultPublished, StateWritten
from maos.mcp_server import TOOL_NAMES, allowed_tools_rule, build_server, mcp_config_for
from maos.modelserver import parse_script, running_model_server
from maos.state import SharedState

from .conftest import MAOS, DoorRun

CLI_TIMEOUT_S = 90.0


def server_params(env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "maos", "mcp"],
        env={k: env[k] for k in (*REQUIRED_ENV, ENV_TASK_TOKEN) if k in env},
    )


async def test_stdio_server_serves_the_door(door_run: DoorRun) -> None:
    other = Door(door_run.store, door_run.run_id, "agent-b", "t2")
    async with Client(server_params(door_run.env("agent-a"))) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert sorted(tools) == sorted(TOOL_NAMES)
        cas_schema = tools["state_cas"].input_schema
        assert cas_schema["properties"]["expected_version"]["type"] == "integer"
        assert sorted(cas_schema["required"]) == ["expected_version", "key", "value"]

        async def call(name: str, **arguments: Any) -> dict[str, Any]:
            result = await client.call_tool(name, arguments)
            assert not result.is_error, result.content
            assert result.structured_content is not None
            return dict(result.structured_content)

        assert await call("state_set", key="design/api", value={"routes": ["/users"]}) == {
            "key": "design/api",
            "version": 1,
        }
        assert await call("state_get", key="design/api") == {
            "key": "design/api",
            "exists": True,
            "value": {"routes": ["/users"]},
            "version": 1,
        }
        assert (await call("state_get", key="absent"))["exists"] is False
        assert await call("state_cas", key="design/api", expected_version=0, value="x") == {
            "key": "design/api",
            "ok": False,
            "version": 1,
        }
        assert (await call("state_cas", key="design/api", expected_version=1, value="v2"))["ok"] is True
        assert await call("state_list", prefix="design/") == {
            "entries": [{"key": "design/api", "value": "v2", "version": 2}]
        }

        sent = await call("send_message", to="agent-b", content={"ask": "review"}, priority="high")
        [delivery] = await other.read_messages(wait_s=5)
        assert (delivery.message.id, delivery.message.sender, delivery.message.content) == (
            sent["id"],
            "agent-a",
            {"ask": "review"},
        )

        reply = await other.send_message("agent-a", "looks good")
        messages = (await call("read_messages", wait_s=5))["messages"]
        assert [(m["id"], m["from"], m["content"]) for m in messages] == [(reply.id, "agent-b", "looks good")]
        assert messages[0]["receipt"].startswith("inbox/normal/")
        assert (await call("read_messages"))["messages"] == []  # acknowledged by the first read

        assert await call("publish_result", summary="API designed", files=["design/api.md"]) == {
            "task_id": "t1",
            "files": 1,
        }

    entry = await SharedState(door_run.store, door_run.run_id).get("design/api")
    assert entry is not None
    assert (entry.value, entry.version) == ("v2", 2)
    log = await door_run.events()
    assert [(e.agent_id, e.key, e.version) for e in log if isinstance(e, StateWritten)] == [
        ("agent-a", "design/api", 1),
        ("agent-a", "design/api", 2),
    ]
    assert [(e.agent_id, e.to) for e in log if isinstance(e, MessageSent)] == [
        ("agent-a", "agent-b"),
        ("agent-b", "agent-a"),
    ]
    assert [(e.agent_id, e.count, e.acked) for e in log if isinstance(e, MessagesRead)] == [
        ("agent-b", 1, True),
        ("agent-a", 1, True),
    ]
    assert [(e.agent_id, e.task) for e in log if isinstance(e, ResultPublished)] == [("agent-a", "t1")]


async def test_bad_calls_are_tool_errors_the_model_can_read(door_run: DoorRun) -> None:
    door = Door(door_run.store, door_run.run_id, "agent-a", "t1")
    async with Client(build_server(door)) as client:
        bad_key = await client.call_tool("state_set", {"key": "no spaces please", "value": 1})
        assert bad_key.is_error
        assert "state key 'no spaces please' is not valid" in str(bad_key.content)
        bad_priority = await client.call_tool(
            "send_message", {"to": "agent-b", "content": 1, "priority": "asap"}
        )
        assert bad_priority.is_error
        assert "expected one of high, normal, low" in str(bad_priority.content)
        missing = await client.call_tool("state_cas", {"key": "k", "value": 1})
        assert missing.is_error
        assert "expected_version" in str(missing.content)
        none = await client.call_tool("read_result", {"task_id": "nobody"})
        assert none.structured_content == {"exists": False, "task_id": "nobody"}


async def test_a_refused_token_stops_the_server_and_is_logged(door_run: DoorRun) -> None:
    env = door_run.env("agent-b", token=door_run.token("agent-a"))
    done = subprocess.run(
        [*MAOS, "mcp"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    assert done.stdout == ""  # nothing on the protocol channel
    assert "token does not belong to agent agent-b (it is the token of agent agent-a)" in done.stderr
    refused = [e for e in await door_run.events() if isinstance(e, DoorRefused)]
    assert [(e.claimed_agent, e.token_owner, e.via) for e in refused] == [("agent-b", "agent-a", "mcp")]
    missing = {k: v for k, v in env.items() if k != "MAOS_RUN_ID"}
    done = subprocess.run(
        [*MAOS, "mcp"],
        env=missing,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "MAOS_RUN_ID is not set" in done.stderr


# --------------------------------------------------------------------------- the real Claude Code CLI

SCRIPT = r"""
rules:
  - name: after-the-tool
    match: {tool_result: '"key": ?"e2e/answer", ?"version": ?1'}
    reply: {text: "Stored it."}
  - name: store-the-answer
    match: {tools: 'mcp__maos__state_set', last_user: 'store the answer', tool_result: false}
    reply:
      tool_calls:
        - name: mcp__maos__state_set
          input: {key: "e2e/answer", value: {from: "${agent}", n: 42}}
"""


@pytest.mark.claude
async def test_claude_code_calls_the_door_through_mcp(door_run: DoorRun, tmp_path: Path) -> None:
    cli = find_claude_cli()
    if cli is None:
        pytest.skip("no Claude Code CLI (pip install claude-agent-sdk bundles one)")
    config_dir, cwd = tmp_path / "claude-config", tmp_path / "work"
    config_dir.mkdir()
    cwd.mkdir()
    mcp_config = mcp_config_for(door_run.env("agent-a"))
    async with running_model_server(parse_script(SCRIPT)) as url:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(config_dir),
            "CLAUDE_CONFIG_DIR": str(config_dir),
            "ANTHROPIC_BASE_URL": url,
            "ANTHROPIC_API_KEY": "test",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "ENABLE_TOOL_SEARCH": "false",
        }
        args = [
            "-p",
            "Please store the answer",
            "--output-format",
            "stream-json",
            "--verbose",
            "--session-id",
            str(uuid.uuid4()),
            "--append-system-prompt",
            "MAOS_AGENT_ID=agent-a",
            "--mcp-config",
            json.dumps(mcp_config),
            "--strict-mcp-config",
            "--allowedTools",
            allowed_tools_rule(),  # every door tool
        ]
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            str(cli),
            *args,
            cwd=cwd,
            env=env,
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
    assert proc.returncode == 0, err.decode(errors="replace")
    [init] = [x for x in lines if x["type"] == "system" and x.get("subtype") == "init"]
    assert [(m["name"], m["status"]) for m in init["mcp_servers"]] == [("maos", "connected")]
    assert "mcp__maos__state_set" in init["tools"]
    [result] = [x for x in lines if x["type"] == "result"]
    assert result["is_error"] is False, result
    assert result["result"] == "Stored it."
    assert result["permission_denials"] == []
    assert time.monotonic() - started < CLI_TIMEOUT_S

    entry = await SharedState(door_run.store, door_run.run_id).get("e2e/answer")
    assert entry is not None
    assert (entry.value, entry.version) == ({"from": "agent-a", "n": 42}, 1)
    written = [e for e in await door_run.events() if isinstance(e, StateWritten)]
    assert [(e.agent_id, e.task, e.key, e.version) for e in written] == [("agent-a", "t1", "e2e/answer", 1)]
