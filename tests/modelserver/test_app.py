"""The HTTP server, over real loopback HTTP: JSON and SSE replies, errors, delays, the log."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from maos.markers import WARM_UP_MESSAGE
from maos.modelserver import parse_script, running_model_server
from tests.readiness import until

SCRIPT = r"""
rules:
  - name: overloaded
    match: {last_user: overload}
    reply: {error: {status: 529}}
  - name: limited
    match: {last_user: limit}
    reply: {error: {status: 429, message: "slow down", retry_after_s: 1.5}}
  - name: slow
    match: {last_user: slow}
    reply: {text: "finally", delay_s: 0.3}
  - name: write
    match: {last_user: 'create (?P<path>\S+)', tool_result: false}
    reply:
      text: "Creating ${path} for you, one moment please while I write it out."
      tool_calls:
        - name: Write
          input:
            file_path: "${path}"
            content: "A long file body that spans more than one streamed chunk of forty characters.\n"
        - name: mcp__maos__state_set
          input: {key: "files/${agent}", value: {path: "${path}", lines: [1, 2, 3]}}
      usage: {input_tokens: 1234, output_tokens: 56}
  - name: done
    match: {tool_result: true}
    reply: {text: "Done."}
default: {text: "default reply"}
"""


def body(prompt: str, *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-test-1",
        "max_tokens": 1024,
        "stream": stream,
        "system": [{"type": "text", "text": "You are a test. MAOS_AGENT_ID=tester"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        "tools": [{"name": "Write", "input_schema": {}}, {"name": "Bash", "input_schema": {}}],
        **extra,
    }


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with (
        running_model_server(parse_script(SCRIPT)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as c,
    ):
        yield c


async def logged(client: httpx.AsyncClient, url: str = "") -> bool:
    """Whether the server has logged a request (it does on arrival, before it answers)."""
    return bool((await client.get(f"{url}/requests")).json()["requests"])


async def sse_events(client: httpx.AsyncClient, payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs; checks each data's type equals its event name."""
    events: list[tuple[str, dict[str, Any]]] = []
    async with client.stream("POST", "/v1/messages?beta=true", json=payload) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                assert data["type"] == name
                events.append((name, data))
    return events


async def test_non_streaming_text_reply(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages", json=body("hello"))
    assert response.status_code == 200
    message = response.json()
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["model"] == "claude-test-1"
    assert message["id"].startswith("msg_")
    assert message["content"] == [{"type": "text", "text": "default reply"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["input_tokens"] > 10
    assert message["usage"]["output_tokens"] == 4  # "default reply" is 13 characters


async def test_non_streaming_tool_calls(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages?beta=true", json=body("please create a.txt"))
    message = response.json()
    text, write, state = message["content"]
    assert text["text"].startswith("Creating a.txt")
    assert write["type"] == "tool_use"
    assert write["name"] == "Write"
    assert write["id"].startswith("toolu_")
    assert write["input"]["file_path"] == "a.txt"
    assert state["input"] == {"key": "files/tester", "value": {"path": "a.txt", "lines": [1, 2, 3]}}
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 1234,
        "output_tokens": 56,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


async def test_streaming_event_order_and_deltas(client: httpx.AsyncClient) -> None:
    events = await sse_events(client, body("please create docs/a.md", stream=True))
    names = [name for name, _ in events]
    blocks = ["content_block_start", "content_block_delta", "content_block_stop"]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    # Three blocks, each start → one or more deltas → stop, indexes 0, 1, 2.
    middle = names[2:-2]
    collapsed = [n for i, n in enumerate(middle) if i == 0 or n != middle[i - 1]]
    assert collapsed == blocks * 3

    start = events[0][1]["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert start["model"] == "claude-test-1"
    assert start["usage"]["input_tokens"] == 1234

    text = ""
    inputs: dict[int, str] = {}
    starts: dict[int, dict[str, Any]] = {}
    for name, data in events:
        if name == "content_block_start":
            starts[data["index"]] = data["content_block"]
        elif name == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                text += delta["text"]
            else:
                assert delta["type"] == "input_json_delta"
                inputs[data["index"]] = inputs.get(data["index"], "") + delta["partial_json"]
    assert text == "Creating docs/a.md for you, one moment please while I write it out."
    assert starts[0] == {"type": "text", "text": ""}
    assert starts[1]["type"] == "tool_use"
    assert starts[1]["name"] == "Write"
    assert starts[1]["input"] == {}
    assert starts[1]["id"].startswith("toolu_")
    assert starts[2]["name"] == "mcp__maos__state_set"
    assert json.loads(inputs[1]) == {
        "file_path": "docs/a.md",
        "content": "A long file body that spans more than one streamed chunk of forty characters.\n",
    }
    assert names.count("content_block_delta") > 4  # the long strings really came in pieces
    assert json.loads(inputs[2])["value"]["path"] == "docs/a.md"

    final = events[-2][1]
    assert final["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert final["usage"]["output_tokens"] == 56


async def test_streaming_text_reply_ends_the_turn(client: httpx.AsyncClient) -> None:
    events = await sse_events(client, body("anything", stream=True))
    assert [n for n, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "default reply"}
    assert events[5][1]["delta"]["stop_reason"] == "end_turn"


@pytest.mark.parametrize("stream", [False, True])
async def test_scripted_529(client: httpx.AsyncClient, stream: bool) -> None:
    response = await client.post("/v1/messages?beta=true", json=body("overload now", stream=stream))
    assert response.status_code == 529
    error = response.json()
    assert error["type"] == "error"
    assert error["error"] == {"type": "overloaded_error", "message": "Overloaded (scripted)"}
    assert "retry-after" not in response.headers


async def test_scripted_429_with_retry_after(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages", json=body("rate limit me"))
    assert response.status_code == 429
    assert response.json()["error"] == {"type": "rate_limit_error", "message": "slow down"}
    assert response.headers["retry-after-ms"] == "1500"
    assert response.headers["retry-after"] == "2"


async def test_delay_holds_the_answer_and_is_logged(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    pending = asyncio.create_task(client.post("/v1/messages", json=body("slow please")))
    try:
        await until(lambda: logged(client), "the request to be logged")
        [in_flight] = (await client.get("/requests")).json()["requests"]
        assert in_flight["answered_at"] is None
        assert in_flight["status"] is None
        response = await pending
    finally:
        await asyncio.gather(pending, return_exceptions=True)
    assert time.monotonic() - started >= 0.3
    assert response.json()["content"][0]["text"] == "finally"
    [entry] = (await client.get("/requests")).json()["requests"]
    assert entry["answered_at"] - entry["received_at"] >= 0.3
    assert entry["status"] == 200


async def test_tool_result_turn_and_session(client: httpx.AsyncClient) -> None:
    payload = body("please create a.txt")
    payload["messages"] += [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "Write", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]},
        {"role": "system", "content": [{"type": "text", "text": "a mid-conversation reminder"}]},
    ]
    response = await client.post("/v1/messages", json=payload, headers={"x-claude-code-session-id": "sess-9"})
    assert response.json()["content"] == [{"type": "text", "text": "Done."}]
    [entry] = (await client.get("/requests")).json()["requests"]
    assert entry["turn"] == 2
    assert entry["tool_result"] is True
    assert entry["session"] == "sess-9"
    assert entry["rule"] == 5
    assert entry["rule_name"] == "done"


async def test_request_log_since_and_reset(client: httpx.AsyncClient) -> None:
    await client.post("/v1/messages", json=body("hello"))
    await client.post("/v1/messages", json=body("overload"), headers={"x-maos-agent-id": "agent-b"})
    await client.post("/v1/messages?beta=true", json=body("please create x.py", stream=True))
    log = (await client.get("/requests")).json()["requests"]
    assert [e["id"] for e in log] == [1, 2, 3]
    first, second, third = log
    assert first == first | {
        "path": "/v1/messages",
        "agent": "tester",
        "turn": 1,
        "model": "claude-test-1",
        "stream": False,
        "tools": ["Write", "Bash"],
        "last_user": "hello",
        "tool_result": False,
        "rule": None,
        "rule_name": None,
        "status": 200,
        "stop_reason": "end_turn",
    }
    assert first["received_at"] <= first["answered_at"]
    assert (second["agent"], second["rule_name"], second["status"]) == ("agent-b", "overloaded", 529)
    assert second["stop_reason"] is None
    assert (third["stream"], third["rule_name"], third["status"], third["stop_reason"]) == (
        True,
        "write",
        200,
        "tool_use",
    )
    assert (third["input_tokens"], third["output_tokens"]) == (1234, 56)

    assert [e["id"] for e in (await client.get("/requests?since=2")).json()["requests"]] == [3]
    assert (await client.get("/requests?since=x")).status_code == 400
    assert (await client.post("/reset")).json() == {"ok": True}
    assert (await client.get("/requests")).json() == {"requests": []}


async def test_times_counters_reset(tmp_path: Path) -> None:
    script = parse_script("rules:\n  - times: 1\n    reply: {error: {status: 500}}\n")
    async with running_model_server(script) as url, httpx.AsyncClient(base_url=url) as c:
        statuses = [(await c.post("/v1/messages", json=body("x"))).status_code for _ in range(2)]
        await c.post("/reset")
        statuses.append((await c.post("/v1/messages", json=body("x"))).status_code)
    assert statuses == [500, 200, 500]


async def test_the_warm_up_turn_is_answered_logged_and_counts_for_no_rule() -> None:
    script = parse_script("rules:\n  - times: 1\n    reply: {text: 'turn ${turn}'}\ndefault: {text: later}\n")
    warm_up = body(WARM_UP_MESSAGE, stream=True)
    answered = [*warm_up["messages"], {"role": "assistant", "content": [{"type": "text", "text": "ready"}]}]
    task = body("the task") | {"messages": [*answered, {"role": "user", "content": "the task"}]}
    async with running_model_server(script) as url, httpx.AsyncClient(base_url=url) as c:
        events = await sse_events(c, warm_up)
        replies = [(await c.post("/v1/messages", json=task)).json()["content"][0]["text"] for _ in range(2)]
        log = (await c.get("/requests")).json()["requests"]
    deltas = [data["delta"] for kind, data in events if kind == "content_block_delta"]
    assert "".join(delta["text"] for delta in deltas) == "ready"
    assert replies == ["turn 1", "later"]
    assert [(e["rule"], e["rule_name"], e["turn"], e["status"]) for e in log] == [
        (None, "warm_up", 1, 200),
        (1, None, 1, 200),
        (None, None, 1, 200),
    ]
    assert log[0]["last_user"] == WARM_UP_MESSAGE
    assert log[1]["last_user"] == "the task"


async def test_log_file_gets_one_json_line_per_request(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    async with (
        running_model_server(parse_script(SCRIPT), log_path=log) as url,
        httpx.AsyncClient(base_url=url) as c,
    ):
        await c.post("/v1/messages", json=body("hello"))
        await sse_events(c, body("create f.txt", stream=True))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["id"], e["rule_name"], e["status"]) for e in lines] == [(1, None, 200), (2, "write", 200)]


async def test_other_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/")).json() == {"status": "ok", "rules": 5}
    assert (await client.head("/")).status_code == 200
    tokens = await client.post("/v1/messages/count_tokens?beta=true", json=body("hello"))
    assert tokens.json()["input_tokens"] > 0
    models = (await client.get("/v1/models")).json()
    assert models["data"][0]["id"] == "maos-scripted"


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "kind"),
    [
        ("GET", "/v2/nothing", None, 404, "not_found_error"),
        ("GET", "/v1/messages", None, 405, "invalid_request_error"),
        ("POST", "/v1/messages", b"not json", 400, "invalid_request_error"),
        ("POST", "/v1/messages", b'{"model": "x"}', 400, "invalid_request_error"),
    ],
)
async def test_http_errors_are_api_shaped(
    client: httpx.AsyncClient, method: str, path: str, payload: bytes | None, status: int, kind: str
) -> None:
    response = await client.request(method, path, content=payload)
    assert response.status_code == status
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == kind


async def test_running_model_server_loads_a_path_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("default: {text: from a file}\n")
    async with running_model_server(path) as url:
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=url) as c:
            assert (await c.post("/v1/messages", json=body("x"))).json()["content"][0][
                "text"
            ] == "from a file"
    async with httpx.AsyncClient(base_url=url) as c:
        with pytest.raises(httpx.ConnectError):
            await c.get("/")


# --------------------------------------------------------------------------- the command


async def test_cli_port_zero_prints_the_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "s.yaml"
    script.write_text("rules:\n  - reply: {text: from the command}\n")
    log = tmp_path / "log.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "maos",
        "model-server",
        "--script",
        str(script),
        "--port",
        "0",
        "--log",
        str(log),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert first.startswith("model-server listening on http://127.0.0.1:")
        url = first.split(" on ")[1].strip()
        async with httpx.AsyncClient(base_url=url) as c:
            reply = await c.post("/v1/messages", json=body("hi"))
        assert reply.json()["content"][0]["text"] == "from the command"
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert "request 1 agent=tester turn=1 rule=1 status=200" in err.decode()
    assert json.loads(log.read_text())["status"] == 200


async def test_cli_refuses_a_bad_script(tmp_path: Path) -> None:
    script = tmp_path / "bad.yaml"
    script.write_text("rules:\n  - reply: {text: ok}\n  - reply:\n      tool_calls: [{input: {}}]\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "maos",
        "model-server",
        "--script",
        str(script),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert out == b""
    assert err.decode() == f"{script}: rule 2: field 'reply.tool_calls[0].name': Field required\n"


async def test_client_gone_mid_stream_is_logged_as_499() -> None:
    script = parse_script("default: {text: '" + "x" * 400 + "', chunk_delay_s: 0.05}\n")
    async with running_model_server(script) as url, httpx.AsyncClient(base_url=url) as c:
        async with c.stream("POST", "/v1/messages", json=body("hi", stream=True)) as response:
            async for line in response.aiter_lines():
                if line.startswith("event: content_block_delta"):
                    break  # leave while the server is still streaming
        for _ in range(100):
            [entry] = (await c.get("/requests")).json()["requests"]
            if entry["status"] is not None:
                break
            await asyncio.sleep(0.05)
    assert entry["status"] == 499
    assert entry["answered_at"] is not None


async def test_stopping_answers_requests_held_by_a_delay() -> None:
    script = parse_script("default: {text: late, delay_s: 60}\n")
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as c:
        async with running_model_server(script) as url:
            pending = asyncio.create_task(c.post(f"{url}/v1/messages", json=body("hi")))
            await until(lambda: logged(c, url), "the request to be held")
        response = await pending
    assert time.monotonic() - started < 1.5
    assert response.status_code == 503
    assert response.json()["error"] == {"type": "api_error", "message": "the model server is stopping"}


def test_the_announced_socket_takes_connections_before_the_server_runs() -> None:
    """``maos model-server`` prints its URL before uvicorn starts: a client that connects at
    once is queued, not refused (the CLI test above failed so on a loaded host)."""
    import socket

    from maos.modelserver.server import bind_socket

    with bind_socket("127.0.0.1", 0) as sock, socket.create_connection(sock.getsockname()[:2], timeout=5):
        pass
