"""The dashboard app: JSON API, the event stream (resume, heartbeat, end, shutdown), tokens."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from maos.eventlog import EventLog
from maos.events import AgentOutput, RunStarted
from maos.model import Plan, TaskSpec
from maos.orchestrator import Orchestrator
from maos.store.base import Store
from maos.web import InsecureBind, create_app, serve_in_background
from maos.web import sse as sse_module
from tests.readiness import until

from .helpers import blocked_run, config, small_plan, sse_messages


async def finished_run(store: Store, tmp_path: Path, plan: Plan | None = None) -> str:
    orchestrator = Orchestrator(store, plan or small_plan(sleep_s=0.05), config(tmp_path))
    await orchestrator.run()
    return orchestrator.run_id


async def log_ids(store: Store, run_id: str) -> list[str]:
    return [event_id async for event_id, _ in EventLog(store, run_id).iterate()]


# ---------------------------------------------------------------------- JSON API


async def test_api_runs_state_and_transcript(store: Store, tmp_path: Path) -> None:
    run_id = await finished_run(store, tmp_path)
    app = create_app(store)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client,
    ):
        runs = (await client.get("/api/runs")).json()
        assert runs["selected"] == run_id
        assert [r["run_id"] for r in runs["runs"]] == [run_id]
        assert runs["runs"][0]["status"] == "succeeded"

        state = (await client.get(f"/api/runs/{run_id}/state")).json()
        assert state["status"] == "succeeded"
        assert state["counts"]["succeeded"] == 4
        assert state["dag"]["levels"] == [["design"], ["build", "test"], ["ship"]]
        assert state["dag"]["critical_path"][0] == "design"
        assert state["dag"]["critical_path"][-1] == "ship"
        tasks = {task["id"]: task for task in state["tasks"]}
        assert tasks["test"]["level"] == 1
        assert tasks["design"]["critical"] is True
        assert tasks["build"]["output_lines"] == 2
        assert all(task["duration_s"] > 0 for task in tasks.values())
        assert {agent["id"] for agent in state["agents"]} == {"agent-1", "agent-2", "agent-3"}
        assert all(agent["state"] == "idle" for agent in state["agents"])
        assert sum(agent["succeeded"] for agent in state["agents"]) == 4
        # never invented: nothing in the log reports these yet
        assert state["usage"] is None  # command agents report no usage
        assert all(task["usage"] is None for task in state["tasks"])
        assert state["checkpoints"] == []  # no checkpointer in this run
        for agent in state["agents"]:
            assert agent["cpu_percent"] is None
            assert agent["rss_bytes"] is None
            assert agent["cost_usd"] is None
        output_events = [e for _, e in [x async for x in EventLog(store, run_id).iterate()]]
        lines = sum(1 for e in output_events if isinstance(e, AgentOutput))
        assert sum(state["throughput"]["series"]["output"].values()) == lines
        assert state["last_event_id"] == (await log_ids(store, run_id))[-1]

        transcript = (await client.get(f"/api/runs/{run_id}/tasks/test/transcript")).json()
        assert [(line["stream"], line["text"]) for line in transcript["lines"]] == [
            ("stdout", "testing"),
            ("stderr", "warn"),
        ]
        assert transcript["omitted"] == 0

        missing = await client.get("/api/runs/no-such-run/state")
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"

        page = await client.get("/")
        assert page.status_code == 200
        assert "static/app.js" in page.text
        for asset in ("/static/app.js", "/static/app.css"):
            response = await client.get(asset)
            assert response.status_code == 200
            assert not re.search(r"https?://", response.text)  # nothing remote


async def test_app_opens_and_closes_a_store_given_by_url(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'by-url.db'}")
    async with (
        serve_in_background(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
    ):
        assert (await client.get("api/runs")).json() == {"runs": [], "selected": None}
        assert (await client.head("api/runs/x/events")).status_code == 404  # no run x
        assert (await client.get("api/runs/%2E%2E/events")).status_code == 404
    assert (tmp_path / "by-url.db").exists()


async def test_page_references_only_local_assets() -> None:
    static = Path(sse_module.__file__).parent / "static"
    html = (static / "index.html").read_text()
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == [
        "static/favicon.svg",
        "static/app.css",
        "static/app.js",
    ]


# ---------------------------------------------------------------------- the event stream


async def test_stream_follows_a_live_run_resumes_and_ends(store: Store, tmp_path: Path) -> None:
    orchestrator = Orchestrator(store, small_plan(sleep_s=0.2), config(tmp_path))
    app = create_app(store, run_id=orchestrator.run_id)
    async with (
        serve_in_background(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=30) as client,
    ):
        run = asyncio.create_task(orchestrator.run())
        url = f"api/runs/{orchestrator.run_id}/events"
        first: list[str] = []
        async with client.stream("GET", url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for message in sse_messages(response):
                if "id" in message:
                    first.append(message["id"])
                    event = json.loads(message["data"])
                    if event["type"] == "task_started":
                        break  # drop the connection mid-run
        assert first[0] == "1"
        rest: list[str] = []
        ended = False
        async with client.stream("GET", url, headers={"Last-Event-ID": first[-1]}) as response:
            async for message in sse_messages(response):
                if message.get("event") == "end":
                    ended = True
                elif "id" in message:
                    rest.append(message["id"])
        await run
        assert ended
        assert first + rest == await log_ids(store, orchestrator.run_id)  # no gap, no duplicate

        # A client resuming after the last event of a finished run is told so at once.
        async with client.stream("GET", url, params={"after": rest[-1]}) as response:
            messages = [m async for m in sse_messages(response) if "comment" not in m]
        assert messages == [{"retry": "2000"}, {"event": "end", "data": "{}"}]


async def test_many_streams_get_the_same_events_in_order(store: Store, tmp_path: Path) -> None:
    orchestrator = Orchestrator(store, small_plan(sleep_s=0.1), config(tmp_path))
    app = create_app(store, run_id=orchestrator.run_id)
    opened: list[str] = []

    async def collect(client: httpx.AsyncClient, after: str) -> list[str]:
        ids = []
        async with client.stream("GET", f"api/runs/{orchestrator.run_id}/events?after={after}") as response:
            opened.append(after)  # the server answered: its stream is on
            async for message in sse_messages(response):
                if "id" in message:
                    ids.append(message["id"])
        return ids

    async with (
        serve_in_background(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=30) as client,
    ):
        clients = [asyncio.create_task(collect(client, "0")) for _ in range(6)]
        await until(lambda: len(opened) == 6, "six streams to open")
        await orchestrator.run()
        late = await collect(client, "3")
        results = await asyncio.gather(*clients)
    expected = await log_ids(store, orchestrator.run_id)
    assert all(ids == expected for ids in results)
    assert late == expected[3:]


async def test_a_client_behind_the_ring_reads_the_store(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse_module, "RING_FRAMES", 5)
    monkeypatch.setattr(sse_module, "READ_BATCH", 7)
    log = EventLog(store, "ring")
    plan = Plan(name="ring", tasks=(TaskSpec(id="t", command="true"),))
    await log.append(RunStarted(run_id="ring", plan=plan, config=config(tmp_path), agents=()))
    app = create_app(store, run_id="ring")
    async with (
        serve_in_background(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=30) as client,
    ):
        live: list[str] = []
        async with client.stream("GET", "api/runs/ring/events") as response:
            messages = sse_messages(response)
            while len(live) < 1:
                message = await anext(messages)
                if "id" in message:
                    live.append(message["id"])
            for n in range(60):  # more than the ring holds, appended while a stream is open
                await log.append(AgentOutput(task_id="t", agent_id="a", stream="stdout", text=f"line {n}"))
            while len(live) < 61:
                message = await anext(messages)
                if "id" in message:
                    live.append(message["id"])
            await messages.aclose()
        fresh: list[str] = []
        async with client.stream("GET", "api/runs/ring/events?after=0") as response:
            messages = sse_messages(response)
            while len(fresh) < 61:
                message = await anext(messages)
                if "id" in message:
                    fresh.append(message["id"])
            await messages.aclose()
    expected = await log_ids(store, "ring")
    assert live == expected
    assert fresh == expected


async def test_heartbeat_while_nothing_happens(store: Store, tmp_path: Path) -> None:
    log = EventLog(store, "quiet")
    plan = Plan(name="quiet", tasks=(TaskSpec(id="t", command="true"),))
    await log.append(RunStarted(run_id="quiet", plan=plan, config=config(tmp_path), agents=()))
    app = create_app(store, run_id="quiet", heartbeat_s=0.2)
    async with (
        serve_in_background(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=30) as client,
        client.stream("GET", "api/runs/quiet/events") as response,
    ):
        seen: list[dict[str, str]] = []
        async for message in sse_messages(response):
            seen.append(message)
            if sum(1 for m in seen if m.get("comment") == "keepalive") == 2:
                break
    assert [m.get("id") for m in seen if "id" in m] == ["1"]


async def test_bad_event_id_is_rejected(store: Store) -> None:
    app = create_app(store, run_id="x")
    async with (
        serve_in_background(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
    ):
        response = await client.get("api/runs/x/events", headers={"Last-Event-ID": "../../etc"})
        assert response.status_code == 400
        response = await client.get("api/runs/x/events?after=not%20an%20id")
        assert response.status_code == 400


async def test_shutdown_is_not_held_up_by_open_streams(store: Store) -> None:
    app = create_app(store, run_id="never-started")
    ended: list[str] = []
    opened: list[httpx.Response] = []

    async def listen(client: httpx.AsyncClient) -> None:
        async with client.stream("GET", "api/runs/never-started/events") as response:
            opened.append(response)
            async for line in response.aiter_lines():
                ended.append(line)
        ended.append("closed")

    async with httpx.AsyncClient(timeout=30) as client:
        async with serve_in_background(app) as server:
            client.base_url = httpx.URL(server.url)
            listeners = [asyncio.create_task(listen(client)) for _ in range(3)]
            await until(lambda: len(opened) == 3, "three streams to open")
            started = time.monotonic()
        took = time.monotonic() - started
        await asyncio.wait_for(asyncio.gather(*listeners), 5)
    assert took < 4, f"shutdown took {took:.2f}s (blocked by open SSE streams?)"
    assert ended.count("closed") == 3


# ---------------------------------------------------------------------- tokens and binding


async def test_token_required_when_set(store: Store, tmp_path: Path) -> None:
    run_id = await finished_run(store, tmp_path)
    app = create_app(store, token="s3cret-token-0123")
    async with (
        serve_in_background(app, "127.0.0.1") as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
    ):
        for path in ("", "api/runs", f"api/runs/{run_id}/state", f"api/runs/{run_id}/events", "metrics"):
            response = await client.get(path)
            assert response.status_code == 401, path
            assert response.json()["error"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
        wrong = await client.get("api/runs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (
            await client.get("api/runs", headers={"Authorization": "Bearer s3cret-token-0123"})
        ).status_code == 200
        assert (
            await client.get("metrics", headers={"Authorization": "Bearer s3cret-token-0123"})
        ).status_code == 200
        # a browser: ?token= on the page, then the cookie carries it for the page's own requests
        page = await client.get("", params={"token": "s3cret-token-0123"})
        assert page.status_code == 303  # the token is traded for the cookie and leaves the URL
        assert "token" not in page.headers["location"]
        assert "s3cret-token-0123" not in page.headers["set-cookie"]
        assert (await client.get("static/app.js")).status_code == 200
        async with client.stream("GET", f"api/runs/{run_id}/events") as response:
            assert response.status_code == 200
        client.cookies.clear()
        assert (await client.get("static/app.js")).status_code == 401
        # the token in any other URL is refused: only the page's address takes it, and drops it
        for path in ("api/runs", f"api/runs/{run_id}/events", "metrics", "static/app.js"):
            response = await client.get(path, params={"token": "s3cret-token-0123"})
            assert response.status_code == 401, path
            assert "set-cookie" not in response.headers, path


async def test_non_loopback_bind_needs_a_token(store: Store) -> None:
    with pytest.raises(InsecureBind, match="MAOS_DASHBOARD_TOKEN"):
        async with serve_in_background(create_app(store), "0.0.0.0"):
            pass
    app = create_app(store, token="t0ken-long-enough-16")
    async with (
        serve_in_background(app, "0.0.0.0") as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}/", timeout=10) as client,
    ):
        assert (await client.get("api/runs")).status_code == 401
        assert (
            await client.get("api/runs", headers={"Authorization": "Bearer t0ken-long-enough-16"})
        ).status_code == 200


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MAOS_DASHBOARD_TOKEN"}
    env.update(extra)
    return env


def test_cli_refuses_non_loopback_without_token(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "maos", "dashboard", "--host", "0.0.0.0", "--port", "0"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "MAOS_DASHBOARD_TOKEN" in done.stderr
    assert "refusing" in done.stderr


def test_cli_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "maos", "dashboard", "--port", "0", "--store", f"sqlite:///{tmp_path}/m.db"],
        cwd=tmp_path,
        env=_env(PYTHONUNBUFFERED="1", COLUMNS="200"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line
        response = httpx.get(url.group(0) + "api/runs", timeout=10)
        assert response.json() == {"runs": [], "selected": None}
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "dashboard stopped" in err


async def test_state_carries_what_needs_attention(store: Store, tmp_path: Path) -> None:
    await blocked_run(store, tmp_path)
    app = create_app(store)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client,
    ):
        state = (await client.get("/api/runs/blocked/state")).json()
    tasks = {task["id"]: task for task in state["tasks"]}
    assert tasks["denied"]["attempt_warnings"] == 2
    assert len(tasks["denied"]["warnings"]) == 2
    assert tasks["limited"]["last_api_retry"]["error_status"] == 429
    assert tasks["limited"]["api_retries"] == 1
    assert tasks["limited"]["last_output_at"] < tasks["limited"]["last_api_retry"]["ts"]
    assert tasks["silent"]["idle_timeout_s"] == 1.0
    assert tasks["silent"]["last_output_at"] is None
    agents = {agent["id"]: agent for agent in state["agents"]}
    assert agents["a3"]["state"] == "running"
    assert agents["a3"]["task_id"] == "fine"
    assert agents["a3"]["last_output"] == "Read(README.md)"


# ---------------------------------------------------------------------- maos bench dashboard


async def test_bench_dashboard_small_run_is_complete() -> None:
    from maos.bench.dashboard import Settings, run, section

    settings = Settings(
        clients=3, client_procs=2, tasks=2, agents=2, lines=40, lines_per_s=200, browser=False
    )
    result = await run(settings)
    assert result.output_events == 80
    assert result.sse.per_client == [result.log_events] * 3
    assert result.complete(result.sse)
    assert len(result.sse.samples) == 3 * result.log_events
    assert 0 < result.sse.percentile(99) < 5
    assert "| SSE clients (Python, httpx) | 3 × " in section(result)


def test_bench_section_replaces_only_its_own(tmp_path: Path) -> None:
    from maos.bench.dashboard import write_section

    doc = tmp_path / "benchmarks.md"
    write_section(doc, "## maos bench dashboard\n\nfirst\n")
    assert doc.read_text() == "# Benchmarks\n\n## maos bench dashboard\n\nfirst\n"
    doc.write_text(doc.read_text() + "\n## maos bench other\n\nkeep me\n")
    write_section(doc, "## maos bench dashboard\n\nsecond\n")
    assert doc.read_text() == (
        "# Benchmarks\n\n## maos bench dashboard\n\nsecond\n\n## maos bench other\n\nkeep me\n"
    )


async def test_made_up_runs_and_tasks_are_not_found(store: Store, tmp_path: Path) -> None:
    """A made-up run id got an event stream of heartbeats for ever (and a store reader of its
    own), and a made-up run or task an empty transcript. They are 404 now; the run the
    dashboard was opened for is streamed before its first event (``maos run --dashboard``
    serves the page first), and so is any run in the store."""
    run_id = await finished_run(store, tmp_path)
    app = create_app(store, run_id="starts-later")
    async with (
        serve_in_background(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
    ):
        for path in (
            "api/runs/nope/events",
            "api/runs/nope/tasks/test/transcript",
            f"api/runs/{run_id}/tasks/nope/transcript",
        ):
            answer = await client.get(path)
            assert answer.status_code == 404, path
            assert answer.json()["error"] == "not_found", path
        assert (await client.head("api/runs/nope/events")).status_code == 404
        assert (await client.get(f"api/runs/{run_id}/tasks/test/transcript")).status_code == 200
        for known in (run_id, "starts-later"):
            async with client.stream("GET", f"api/runs/{known}/events") as response:
                assert response.status_code == 200, known
                assert response.headers["content-type"].startswith("text/event-stream")


async def test_the_transcript_of_a_run_rebuilt_from_a_checkpoint_is_found(store: Store) -> None:
    """A log rebuilt from a checkpoint starts with run_restored, not run_started: its tasks'
    transcripts were 404 "no task"."""
    from maos.events import RunRestored, TaskAssigned, TaskReady
    from maos.model import RunState
    from maos.web.snapshot import task_transcript

    state = RunState(run_id="rebuilt", plan=Plan(name="p", tasks=(TaskSpec(id="t", command="true"),)))
    log = EventLog(store, "rebuilt")
    restored = RunRestored(
        run_id="rebuilt", checkpoint_id="c1", covers_events=0, lost="", state_json=state.model_dump_json()
    )
    for event in (
        restored,
        TaskReady(task_id="t"),
        TaskAssigned(task_id="t", agent_id="a", attempt=1),
        AgentOutput(task_id="t", agent_id="a", stream="stdout", text="hello"),
    ):
        await log.append(event)
    found = await task_transcript(store, "rebuilt", "t")
    assert found is not None
    assert [line["text"] for line in found["lines"]] == ["hello"]
    assert await task_transcript(store, "rebuilt", "nope") is None


@pytest.mark.parametrize("token", [" ", "a", "short-token", " padded-token-0123456 "])
def test_a_weak_token_is_refused(tmp_path: Path, token: str) -> None:
    """MAOS_DASHBOARD_TOKEN=' ' guarded a dashboard on 0.0.0.0 with `?token=%20`."""
    for args in (
        ["dashboard", "--host", "0.0.0.0", "--allowed-host", "*", "--port", "0"],
        ["dashboard", "--port", "0"],
        ["run", "plan.yaml", "--dashboard", "--dashboard-port", "0"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "maos", *args],
            cwd=tmp_path,
            env=_env(MAOS_DASHBOARD_TOKEN=token),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (args, done.stderr)
        assert "MAOS_DASHBOARD_TOKEN is too weak" in done.stderr
