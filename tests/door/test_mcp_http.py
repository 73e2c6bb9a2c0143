"""The door's MCP endpoint over HTTP (``maos.mcp_http``): real HTTP on 127.0.0.1, the MCP
client library, the real door on a real store. Each request acts as the agent its bearer
token was given to, and nobody else; hostile requests get clear errors and the endpoint
keeps serving everybody else. (The real Claude Code CLI against it: tests/claude.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from maos.door_transport import pick_door_transport
from maos.errors import DoorError
from maos.events import DoorRefused, MessageSent, StateWritten
from maos.mcp_http import DoorEndpoint
from maos.mcp_server import TOOL_NAMES, mcp_config_for
from maos.state import SharedState

from .conftest import DoorRun

ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}


def door_entry(config: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = config["mcpServers"]["maos"]
    return entry


@contextlib.asynccontextmanager
async def connected(entry: dict[str, Any], **headers: str) -> AsyncIterator[Client]:
    """An MCP client of the endpoint, sending ``entry``'s headers (and ``headers``)."""
    async with (
        httpx2.AsyncClient(headers={**entry["headers"], **headers}, timeout=30) as http,
        Client(streamable_http_client(entry["url"], http_client=http)) as client,
    ):
        yield client


async def call(client: Client, name: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(name, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


async def test_each_agent_acts_as_itself_through_one_endpoint(door_run: DoorRun) -> None:
    async with DoorEndpoint() as endpoint:
        a = door_entry(endpoint.mcp_config(door_run.env("agent-a")))
        b = door_entry(endpoint.mcp_config(door_run.env("agent-b", task="t2")))
        assert a["type"] == b["type"] == "http"
        assert a["url"] == b["url"] == endpoint.url
        assert a["url"].startswith("http://127.0.0.1:")
        assert a["url"].endswith("/mcp")
        assert a["headers"] != b["headers"]
        assert endpoint.admitted == 2
        # B claims to be A in every way a request could: a header naming A, and A's ids
        # nowhere else to put. The token decides.
        async with connected(a) as as_a, connected(b, **{"X-Maos-Agent-Id": "agent-a"}) as as_b:
            tools = {tool.name: tool for tool in (await as_a.list_tools()).tools}
            assert sorted(tools) == sorted(TOOL_NAMES)
            assert "ctx" not in json.dumps(tools["state_cas"].input_schema)
            assert sorted(tools["state_cas"].input_schema["required"]) == ["expected_version", "key", "value"]
            written_a, written_b = await asyncio.gather(
                call(as_a, "state_set", key="from/a", value=1),
                call(as_b, "state_set", key="from/b", value=2),
            )
            assert written_a == {"key": "from/a", "version": 1}
            assert written_b == {"key": "from/b", "version": 1}
            sent = await call(as_b, "send_message", to="agent-a", content={"hi": "a"})
            got = await call(as_a, "read_messages", wait_s=5.0)
            [message] = got["messages"]
            assert (message["id"], message["from"]) == (sent["id"], "agent-b")
            assert message["content"] == {"hi": "a"}
            assert (await call(as_a, "read_messages"))["messages"] == []  # acknowledged
            assert (await call(as_b, "read_messages"))["messages"] == []  # not A's inbox
            assert (await call(as_a, "publish_result", summary="done"))["task_id"] == "t1"
            assert (await call(as_b, "read_result", task_id="t1"))["summary"] == "done"
    log = await door_run.events()
    assert sorted((e.agent_id, e.task, e.key) for e in log if isinstance(e, StateWritten)) == [
        ("agent-a", "t1", "from/a"),
        ("agent-b", "t2", "from/b"),
    ]
    assert [(e.agent_id, e.to) for e in log if isinstance(e, MessageSent)] == [("agent-b", "agent-a")]
    assert not [e for e in log if isinstance(e, DoorRefused)]


async def test_a_token_is_bound_to_its_whole_identity_and_ends_with_its_attempt(door_run: DoorRun) -> None:
    env = door_run.env("agent-a")
    async with DoorEndpoint() as endpoint, httpx.AsyncClient(timeout=30) as http:
        first = door_entry(endpoint.mcp_config(env))
        assert door_entry(endpoint.mcp_config(env)) == first  # the same agent, the same token
        other_attempt = {**env, "MAOS_TASK_TOKEN": door_run.task_token("agent-a", attempt=2)}
        assert door_entry(endpoint.mcp_config(other_attempt))["headers"] != first["headers"]
        endpoint.release(other_attempt)
        async with connected(first) as client:
            assert (await call(client, "state_set", key="k", value=1))["version"] == 1
        # Admitted while the server runs (it started at the first admission).
        assert door_entry(endpoint.mcp_config(other_attempt))["headers"] != first["headers"]
        endpoint.release(other_attempt)
        endpoint.release(env)
        assert endpoint.admitted == 0
        late = await http.post(first["url"], json=INITIALIZE, headers={**ACCEPT, **first["headers"]})
        assert late.status_code == 401
        assert "the token of agent agent-a of run" in late.json()["error"]["message"]
        assert "that attempt is over" in late.json()["error"]["message"]
        # The agent's own door token is no bearer token: those are the endpoint's alone.
        door_token = {"authorization": f"Bearer {door_run.token('agent-a')}"}
        refused = await http.post(first["url"], json=INITIALIZE, headers={**ACCEPT, **door_token})
        assert refused.status_code == 401
        assert "unknown token" in refused.json()["error"]["message"]
        assert refused.headers["www-authenticate"].startswith("Bearer")
    entry = await SharedState(door_run.store, door_run.run_id).get("k")
    assert entry is not None
    assert entry.version == 1


async def test_another_agent_s_token_in_an_identity_is_refused_by_the_door_and_logged(
    door_run: DoorRun,
) -> None:
    """Admission does not vouch for an identity: the door checks its tokens at the first call,
    as over stdio, and the refusal is a door_refused event of the run (via mcp-http)."""
    forged = door_run.env("agent-b", token=door_run.token("agent-a"))
    async with DoorEndpoint() as endpoint:
        entry = door_entry(endpoint.mcp_config(forged))
        async with connected(entry) as client:
            for _ in range(2):
                result = await client.call_tool("state_set", {"key": "k", "value": 1})
                assert result.is_error
                assert "token does not belong to agent agent-b (it is the token of agent agent-a)" in str(
                    result.content
                )
    refused = [e for e in await door_run.events() if isinstance(e, DoorRefused)]
    assert [(e.claimed_agent, e.token_owner, e.via) for e in refused] == [("agent-b", "agent-a", "mcp-http")]
    assert await SharedState(door_run.store, door_run.run_id).get("k") is None


async def test_hostile_requests_get_clear_errors_and_the_endpoint_keeps_serving(
    door_run: DoorRun, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="maos.mcp_http")
    async with DoorEndpoint(max_request_bytes=64 << 10, max_calls_per_agent=1) as endpoint:
        entry = door_entry(endpoint.mcp_config(door_run.env("agent-a")))
        bystander = door_entry(endpoint.mcp_config(door_run.env("agent-b", task="t2")))
        url, auth = entry["url"], entry["headers"]
        async with httpx.AsyncClient(timeout=30) as http:
            # No token, a malformed header, a token nobody was given: 401 before the body is read.
            for headers in ({}, {"authorization": "Basic abc"}, {"authorization": "Bearer forged"}):
                answer = await http.post(url, content=b"x" * (1 << 20), headers={**ACCEPT, **headers})
                assert answer.status_code == 401
                assert answer.json()["error"]["message"].startswith("refused: ")
            # A body over the limit: 413, said in words.
            huge = await http.post(url, content=b"[" * (65 << 10), headers={**ACCEPT, **auth})
            assert (huge.status_code, huge.text) == (413, "Request body too large")
            # Not JSON, binary, JSON of the wrong shape or nested past any parser: a JSON-RPC
            # error, never a crash.
            deep = b"[" * 30_000 + b"]" * 30_000
            for body in (b"{not json", bytes(range(256)), b'"just a string"', b"[]", b"{}", deep):
                bad = await http.post(url, content=body, headers={**ACCEPT, **auth})
                assert 400 <= bad.status_code < 500, (body, bad.status_code)
                assert "error" in bad.json(), (body, bad.text)
            # POST only: no stream to hold open, no session to end.
            for method in ("GET", "DELETE", "PUT"):
                other = await http.request(method, url, headers={**ACCEPT, **auth})
                assert other.status_code == 405, method
            # DNS rebinding: a page in a browser cannot reach it under another host name.
            rebound = await http.post(url, json=INITIALIZE, headers={**ACCEPT, **auth, "host": "evil.test"})
            assert rebound.status_code == 421
            # One agent past its concurrent calls gets 429, not a queue.
            async with connected(entry) as client:
                waiting = asyncio.create_task(client.call_tool("read_messages", {"wait_s": 3.0}))
                async with asyncio.timeout(10):
                    while endpoint.calls == 0:
                        await asyncio.sleep(0.01)
                busy = await http.post(url, json=INITIALIZE, headers={**ACCEPT, **auth})
                assert busy.status_code == 429
                assert "requests running" in busy.json()["error"]["message"]
                # ... while another agent is served as usual.
                async with connected(bystander) as other:
                    assert (await call(other, "state_set", key="still/here", value=True))["version"] == 1
                assert not (await waiting).is_error
                assert (await call(client, "state_get", key="still/here"))["value"] is True
    assert endpoint.refusals.total == 4
    lines = [r.getMessage() for r in caplog.records if r.name == "maos.mcp_http"]
    assert 1 <= len(lines) <= 3, lines  # at most one line a second, whatever the flood
    assert any("401" in line for line in lines)
    assert not [line for line in lines if "forged" in line]  # a presented token is never logged


async def test_admission_needs_the_identity_and_an_open_endpoint(door_run: DoorRun) -> None:
    env = door_run.env("agent-a")
    theirs = {"mcpServers": {"github": {"command": "gh-mcp"}, "maos": {"command": "evil"}}}
    with pytest.raises(DoorError, match="not open"):
        DoorEndpoint().mcp_config(env)
    async with DoorEndpoint() as endpoint:
        merged = endpoint.mcp_config(env, extra=theirs)
        assert merged["mcpServers"]["github"] == {"command": "gh-mcp"}
        assert merged["mcpServers"]["maos"]["type"] == "http"  # theirs is replaced by the door
        with pytest.raises(DoorError, match="MAOS_AGENT_TOKEN is not set"):
            endpoint.mcp_config({k: v for k, v in env.items() if k != "MAOS_AGENT_TOKEN"})
        endpoint.release({})  # not an agent: nothing to do
        assert endpoint.admitted == 1
    # The stdio entry of the same agent: what --door-transport stdio writes.
    assert mcp_config_for(env)["mcpServers"]["maos"]["args"] == ["-m", "maos", "mcp"]


def test_the_transport_is_http_unless_stdio_is_asked_for() -> None:
    assert pick_door_transport(None, {}) == "http"
    assert pick_door_transport(None, {"MAOS_DOOR_TRANSPORT": "stdio"}) == "stdio"
    assert pick_door_transport("HTTP", {"MAOS_DOOR_TRANSPORT": "stdio"}) == "http"
    with pytest.raises(DoorError, match=r"'carrier pigeon': expected http or stdio"):
        pick_door_transport("carrier pigeon", {})
    with pytest.raises(DoorError, match=r"from MAOS_DOOR_TRANSPORT"):
        pick_door_transport(None, {"MAOS_DOOR_TRANSPORT": "ftp"})


async def test_a_call_is_answered_without_waiting_for_a_delayed_ack(door_run: DoorRun) -> None:
    """Answers go out at once (TCP_NODELAY): without it each one waited ~40 ms for the
    client's delayed ACK, as long as the door call itself twenty times over."""
    async with DoorEndpoint() as endpoint, httpx.AsyncClient(timeout=30) as http:
        entry = door_entry(endpoint.mcp_config(door_run.env("agent-a")))
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {**ACCEPT, **entry["headers"], "mcp-protocol-version": "2025-06-18"}
        seconds = []
        for _ in range(21):
            started = time.perf_counter()
            answer = await http.post(entry["url"], json=ping, headers=headers)
            seconds.append(time.perf_counter() - started)
            assert answer.status_code == 200
    assert statistics.median(seconds[1:]) < 0.030, seconds


async def _request(
    port: int, head: bytes, body: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    return reader, writer


def _post_head(port: int, token: str = "", **fields: str) -> bytes:
    lines = [
        "POST /mcp HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        "Accept: application/json, text/event-stream",
    ]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_callers_without_a_token_cannot_keep_the_agents_out(door_run: DoorRun) -> None:
    """Each refused connection is closed after its 401: kept alive, a few hundred of them held
    every place of the endpoint and every agent's call was answered 503."""
    async with DoorEndpoint(max_connections=32) as endpoint:
        entry = door_entry(endpoint.mcp_config(door_run.env("agent-a")))
        port = int(entry["url"].split(":")[2].split("/")[0])
        refused = []
        for _ in range(64):  # twice the places, one after the other, each left open by its client
            reader, writer = await _request(port, _post_head(port, content_length="2"), b"{}")
            assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 401")
            refused.append((reader, writer))
        for reader, _ in refused:
            assert (await asyncio.wait_for(reader.read(), 5)).endswith(b"}")  # then closed
        async with connected(entry) as client:
            assert (await call(client, "state_set", key="still/here", value=1))["version"] == 1
        for _, writer in refused:
            writer.close()


async def test_a_client_that_hangs_up_mid_request_prints_no_traceback(
    door_run: DoorRun, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with DoorEndpoint() as endpoint:
        entry = door_entry(endpoint.mcp_config(door_run.env("agent-a")))
        port = int(entry["url"].split(":")[2].split("/")[0])
        token = entry["headers"]["Authorization"].removeprefix("Bearer ")
        for _ in range(3):
            _, writer = await _request(port, _post_head(port, token, content_length="100"), b'{"jsonrpc"')
            await asyncio.sleep(0.1)
            writer.close()
        async with asyncio.timeout(10):
            while endpoint.calls:
                await asyncio.sleep(0.01)
        async with connected(entry) as client:  # and the agent is served as before
            assert (await call(client, "state_set", key="k", value=1))["version"] == 1
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], [(r.name, r.getMessage()) for r in loud]
    assert any("hung up" in r.getMessage() for r in caplog.records if r.name == "maos.mcp_http")


async def test_a_body_that_stalls_is_answered_408_and_frees_its_place(
    door_run: DoorRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    from maos import mcp_http

    monkeypatch.setattr(mcp_http, "BODY_TIMEOUT_S", 1.0)
    async with DoorEndpoint(max_calls_per_agent=1) as endpoint:
        entry = door_entry(endpoint.mcp_config(door_run.env("agent-a")))
        port = int(entry["url"].split(":")[2].split("/")[0])
        token = entry["headers"]["Authorization"].removeprefix("Bearer ")
        head = _post_head(port, token, transfer_encoding="chunked")
        reader, writer = await _request(port, head, b'5\r\n{"jso\r\n')  # one chunk, then nothing
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(), 10)  # answered, then closed
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert 0.9 < time.monotonic() - started < 5
        writer.close()
        assert endpoint.calls == 0
        async with connected(entry) as client:  # its one call at a time is free again
            assert (await call(client, "state_set", key="k", value=1))["version"] == 1
