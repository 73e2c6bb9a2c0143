"""Dashboard hardening: Host allowlist (DNS rebinding), token → cookie, CSP and friends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from playwright.async_api import ConsoleMessage, Request, async_playwright

from maos.agents.process import use_pidfd_child_watcher
from maos.model import RunStatus
from maos.orchestrator import Orchestrator
from maos.store.base import Store
from maos.web import create_app, serve_in_background
from maos.web.auth import CONTENT_SECURITY_POLICY, allowed_hosts, hosts_from_env

from .helpers import config, small_plan
from .test_browser import CHROMIUM, CHROMIUM_ARGS

TOKEN = "s3cret-dashboard-token"


def client(app: object, host: str = "localhost") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}")  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/", "/api/runs", "/metrics", "/static/app.js"])
async def test_a_foreign_host_is_refused(store: Store, path: str) -> None:
    app = create_app(store)
    async with client(app, "attacker.example:8765") as http:
        answer = await http.get(path)
    assert answer.status_code == 421
    assert answer.json()["error"] == "misdirected_request"
    assert "attacker.example" in answer.json()["detail"]


@pytest.mark.parametrize("host", ["localhost:8765", "127.0.0.1:8765", "[::1]:8765", "LOCALHOST", "127.0.0.1"])
async def test_loopback_names_are_allowed(store: Store, host: str) -> None:
    app = create_app(store)
    async with client(app) as http:
        answer = await http.get("/api/runs", headers={"host": host})
    assert answer.status_code == 200


async def test_configured_hosts() -> None:
    assert "dash.lan" in allowed_hosts("0.0.0.0", ["dash.lan:8765"])
    assert "0.0.0.0" not in allowed_hosts("0.0.0.0")
    assert "10.1.2.3" in allowed_hosts("10.1.2.3")
    assert "fd00::1" in allowed_hosts("fd00::1")
    assert hosts_from_env({"MAOS_DASHBOARD_HOSTS": "a.lan, b.lan"}) == ["a.lan", "b.lan"]


async def test_configured_host_is_answered(store: Store) -> None:
    app = create_app(store, allowed_hosts=allowed_hosts("0.0.0.0", ["dash.lan"]))
    async with client(app, "dash.lan:8765") as http:
        assert (await http.get("/api/runs")).status_code == 200
    async with client(app, "other.lan") as http:
        assert (await http.get("/api/runs")).status_code == 421


async def test_security_headers_on_every_answer(store: Store) -> None:
    app = create_app(store, token=TOKEN)
    async with client(app) as http:
        for answer in (await http.get("/"), await http.get("/static/app.css"), await http.get("/nope")):
            assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY


async def test_token_is_traded_for_a_cookie_and_dropped_from_the_address(store: Store) -> None:
    app = create_app(store, token=TOKEN)
    async with client(app) as http:
        answer = await http.get("/", params={"token": TOKEN, "run": "r1"})
        assert answer.status_code == 303
        assert answer.headers["location"] == "./?run=r1"
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert TOKEN not in cookie
        # the cookie alone now opens the page and the API
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/api/runs")).status_code == 200
    async with client(app) as fresh:
        assert (await fresh.get("/")).status_code == 401
        assert (await fresh.get("/", params={"token": "wrong"})).status_code == 401


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")
async def test_browser_never_sends_the_token_and_obeys_the_csp(store: Store, tmp_path: Path) -> None:
    use_pidfd_child_watcher()
    orchestrator = Orchestrator(store, small_plan(sleep_s=0.2), config(tmp_path, agents=2))
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED
    app = create_app(store, run_id=orchestrator.run_id, token=TOKEN)
    urls: list[str] = []
    problems: list[str] = []
    async with serve_in_background(app) as server, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()

            def on_request(request: Request) -> None:
                urls.append(request.url)

            def on_console(message: ConsoleMessage) -> None:
                if message.type in ("error", "warning"):
                    problems.append(f"{message.type}: {message.text}")

            page.on("request", on_request)
            page.on("console", on_console)
            page.on("pageerror", lambda error: problems.append(str(error)))
            await page.goto(f"{server.url}?token={TOKEN}")
            assert page.url == server.url  # redirected: no token in the address bar
            await page.wait_for_selector('#run-status[data-status="succeeded"]')
            await page.wait_for_selector('#connection[data-state="complete"]')
            await page.click("#tasks tbody tr")
            await page.wait_for_selector("#transcript .line")
            await page.wait_for_selector("#throughput-legend .swatch")
            await asyncio.sleep(0.5)
            cookies = await page.context.cookies()
        finally:
            await browser.close()
    assert urls[0] == f"{server.url}?token={TOKEN}"  # the one visit that carries it
    later = urls[1:]
    assert any("/api/runs/" in url and "/events" in url for url in later)
    assert [url for url in later if TOKEN in url] == []
    assert [c["name"] for c in cookies] == ["maos_dashboard_token"]
    assert cookies[0]["httpOnly"]
    assert cookies[0]["sameSite"] == "Strict"
    assert TOKEN not in cookies[0]["value"]
    assert problems == []  # no CSP violation (Chromium reports them on the console), no error


async def test_a_connection_that_sends_no_request_head_in_time_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Slowloris: connections that send nothing, or a byte of a request head now and then, are
    closed after ``HEAD_TIMEOUT_S`` instead of holding the server's places (the door's
    endpoint shut every agent out with ~1,000 of them); a client that idles between its
    requests keeps its connection (``KEEP_ALIVE_S``)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from maos.web import server as web_server

    monkeypatch.setattr(web_server, "HEAD_TIMEOUT_S", 1.0)
    app = Starlette(routes=[Route("/", lambda _request: PlainTextResponse("ok"))])
    async with serve_in_background(app, limit_concurrency=8) as running:

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection(running.host, running.port)

        idle = [await connect() for _ in range(4)]
        trickle_reader, trickle = await connect()
        keeper_reader, keeper = await connect()
        request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        keeper.write(request)
        await keeper.drain()
        assert b"200 OK" in await keeper_reader.readuntil(b"ok")
        for part in (b"GET / HT", b"TP/1.1\r\n", b"Host: 1"):  # never finishes its head
            trickle.write(part)
            await trickle.drain()
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        for reader, _ in [*idle, (trickle_reader, trickle)]:
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        keeper.write(request)  # idle 2.5 s since its last request: still served
        await keeper.drain()
        assert b"200 OK" in await keeper_reader.readuntil(b"ok")
        for _, writer in [*idle, (trickle_reader, trickle), (keeper_reader, keeper)]:
            writer.close()


async def test_junk_requests_add_a_line_a_second_to_the_terminal_not_one_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Any local user can send junk to a loopback port; uvicorn's warnings about it ("Invalid
    HTTP request received.", "Exceeded concurrency limit.") are throttled as the door's own
    refusals are."""
    import logging

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    caplog.set_level(logging.INFO)
    app = Starlette(routes=[Route("/", lambda _request: PlainTextResponse("ok"))])
    async with serve_in_background(app, limit_concurrency=4) as running:

        async def send(data: bytes) -> bytes:
            reader, writer = await asyncio.open_connection(running.host, running.port)
            writer.write(data)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return answer

        for _ in range(300):
            assert (await send(b"GARBAGE\r\n\r\n")).startswith(b"HTTP/1.1 400")
        held = [await asyncio.open_connection(running.host, running.port) for _ in range(4)]
        for _ in range(50):
            assert (await send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")).startswith(b"HTTP/1.1 503")
        for _, writer in held:
            writer.close()
        await asyncio.sleep(1.1)
        assert (await send(b"GARBAGE\r\n\r\n")).startswith(b"HTTP/1.1 400")
    lines = [
        r.getMessage() for r in caplog.records if r.name == "uvicorn.error" and r.levelno >= logging.WARNING
    ]
    invalid = [line for line in lines if line.startswith("Invalid HTTP request received.")]
    assert 2 <= len(invalid) <= 4, lines  # the first, then at most one a second
    assert "more since the last line)" in invalid[-1]
    assert 1 <= len([line for line in lines if line.startswith("Exceeded concurrency limit.")]) <= 3, lines
    assert len(lines) <= 8, lines
