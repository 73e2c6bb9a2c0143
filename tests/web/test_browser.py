"""The dashboard in real headless Chromium, open while a plan runs.

Needs Debian's ``chromium`` (``make test`` installs it); Playwright drives it, no
``playwright install``. The screenshot lands in the test's tmp dir and in
``test-artifacts/dashboard.png`` at the repository root.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, Page, Route, async_playwright

from maos.agents.process import use_pidfd_child_watcher
from maos.model import Plan, RunStatus, TaskSpec
from maos.orchestrator import Orchestrator
from maos.store.base import Store
from maos.web import create_app, serve_in_background

from .helpers import blocked_run, config

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]


def plan(gate: Path) -> Plan:
    """Six tasks; ``design`` runs until ``gate`` exists (at most a minute), so that the page
    can be checked while it runs however slow the machine is."""

    def task(task_id: str, *deps: str, seconds: float = 0.8) -> TaskSpec:
        wait = f"sleep {seconds}"
        if task_id == "design":
            wait = f"i=0; while [ ! -e {gate} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"
        return TaskSpec(
            id=task_id,
            title=f"{task_id} step",
            role="builder" if deps else "planner",
            depends_on=deps,
            command=f"echo starting {task_id}; {wait}; echo hi from {task_id}",
        )

    return Plan(
        name="browser-demo",
        description="a small DAG watched from Chromium",
        tasks=(
            task("design"),
            task("api", "design"),
            task("ui", "design"),
            task("docs", "design", seconds=0.4),
            task("tests", "api", "ui"),
            task("release", "tests", "docs", seconds=0.4),
        ),
    )


@contextlib.asynccontextmanager
async def page_on(store: Store, run_id: str, *, bypass_csp: bool = True) -> AsyncIterator[tuple[Page, str]]:
    """A Chromium page (not opened yet) and the URL of the dashboard of ``run_id``. ``bypass_csp``:
    Playwright evaluates expressions with eval, which the page's CSP forbids
    (test_web_security checks the page under its CSP)."""
    async with (
        serve_in_background(create_app(store, run_id=run_id)) as server,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield (
                await browser.new_page(viewport={"width": 1440, "height": 1000}, bypass_csp=bypass_csp),
                server.url,
            )
        finally:
            await browser.close()


async def task_state(page: Page, task_id: str) -> str | None:
    return await page.get_attribute(f'#tasks tr[data-task="{task_id}"]', "data-state")


async def test_dashboard_follows_a_running_plan(store: Store, tmp_path: Path) -> None:
    # Install the pidfd child watcher before Playwright starts its driver under it; run()
    # then keeps it (replacing a watcher with live children would make asyncio warn).
    use_pidfd_child_watcher()
    gate = tmp_path / "design-may-finish"
    orchestrator = Orchestrator(store, plan(gate), config(tmp_path, agents=3))
    app = create_app(store, run_id=orchestrator.run_id)
    errors: list[str] = []
    async with serve_in_background(app) as server, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            # bypass_csp: Playwright evaluates wait_for_function's expressions with eval, which the
            # page's CSP forbids (test_web_security checks the page under its CSP)
            page = await browser.new_page(viewport={"width": 1440, "height": 1000}, bypass_csp=True)
            page.on("pageerror", lambda error: errors.append(str(error)))

            def on_console(message: ConsoleMessage) -> None:
                # /state answers 404 until the run's first event exists; the page waits for it
                if message.type == "error" and not message.location.get("url", "").endswith("/state"):
                    errors.append(f"{message.text} ({message.location.get('url')})")

            page.on("console", on_console)
            # Open the page before the run exists: everything after this comes over SSE.
            await page.goto(server.url)
            await page.wait_for_selector("#agents .empty")
            await page.evaluate("window.__notReloaded = true")

            run = asyncio.create_task(orchestrator.run())
            try:
                # agents appear
                await page.wait_for_function("document.querySelectorAll('#agents .agent').length === 3")
                assert await page.text_content("#plan-name") == "browser-demo"
                # tasks change state without a reload: design goes running, then succeeded
                await page.wait_for_selector('#tasks tr[data-task="design"][data-state="running"]')
                await page.wait_for_selector('#agents .agent[data-state="running"]')
                await page.wait_for_selector('#dag .node[data-task="design"][data-state="running"]')
                gate.touch()
                await page.wait_for_selector('#tasks tr[data-task="design"][data-state="succeeded"]')
                await page.wait_for_selector('#dag .node.crit[data-task="design"]')
                # clicking a task shows its transcript, live
                await page.click('#tasks tr[data-task="api"]')
                await page.wait_for_selector("#transcript .line >> text=starting api")
                running_shot = tmp_path / "dashboard-running.png"
                await page.screenshot(path=str(running_shot), full_page=True)
                await page.wait_for_selector("#transcript .line >> text=hi from api", timeout=30_000)
                assert await page.text_content("#transcript-title") == "api"
                # and a task clicked in the DAG
                await page.click('#dag .node[data-task="design"]')
                await page.wait_for_selector("#transcript .line >> text=hi from design")
                state = await run
            finally:
                if not run.done():
                    run.cancel()
                await asyncio.wait([run])
            assert state.status is RunStatus.SUCCEEDED
            await page.wait_for_selector('#run-status[data-status="succeeded"]')
            await page.wait_for_selector('#tasks tr[data-task="release"][data-state="succeeded"]')
            await page.wait_for_selector('#connection[data-state="complete"]')
            assert await page.evaluate("window.__notReloaded") is True
            assert await page.text_content("#progress") == "6/6"
            assert await page.text_content("#cost") == "—"  # command agents report no cost
            # show an agent's transcript in the screenshot: a task with output, selected
            await page.click('#tasks tr[data-task="tests"]')
            await page.wait_for_selector("#transcript .line >> text=hi from tests")
            shot = tmp_path / "dashboard.png"
            await page.screenshot(path=str(shot), full_page=True)
        finally:
            await browser.close()
    assert shot.stat().st_size > 10_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "dashboard.png")
    shutil.copyfile(running_shot, ARTIFACTS / "dashboard-running.png")
    assert errors == []


async def test_blocked_tasks_are_marked(store: Store, tmp_path: Path) -> None:
    await blocked_run(store, tmp_path)
    async with page_on(store, "blocked") as (page, url):
        await page.goto(url)
        await page.wait_for_selector('#tasks tr[data-task="fine"][data-state="running"]')
        await page.wait_for_function("document.getElementById('attention').textContent === '3'")
        notes = {
            task: await page.text_content(f'#tasks tr[data-task="{task}"] td.warn')
            for task in ("denied", "limited", "silent", "fine")
        }
        assert "2 warnings: permission denied: Write(/etc/hosts)" in (notes["denied"] or "")
        assert "waiting on the model API (HTTP 429, retry 2/10)" in (notes["limited"] or "")
        assert "no output for" in (notes["silent"] or "")
        assert "idle timeout 1.00s" in (notes["silent"] or "")
        assert notes["fine"] == ""
        assert await page.locator("#dag .node.attn").count() == 3
        assert await page.locator("#agents .agent.attn").count() == 3
        # the state filter finds them
        await page.select_option("#state-filter", "attention")
        await page.wait_for_function("document.querySelectorAll('#tasks tbody tr').length === 3")
        await page.screenshot(path=str(tmp_path / "attention.png"), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(tmp_path / "attention.png", ARTIFACTS / "dashboard-attention.png")


async def test_a_transcript_that_fails_to_load_is_asked_for_again(store: Store, tmp_path: Path) -> None:
    """A transcript request that fails (a busy or restarting server, a dropped connection)
    says so on the page and is made again, instead of leaving "loading…" for ever."""
    await blocked_run(store, tmp_path)
    failed: list[str] = []

    async def fail_once(route: Route) -> None:
        if not failed:
            failed.append(route.request.url)
            await route.fulfill(status=503, body="busy")
        else:
            await route.continue_()

    async with page_on(store, "blocked", bypass_csp=False) as (page, url):
        await page.route("**/transcript", fail_once)
        await page.goto(url)
        await page.click('#tasks tr[data-task="fine"]')
        await page.wait_for_selector("#transcript-error >> text=HTTP 503")
        await page.wait_for_selector("#transcript .line >> text=Read(README.md)", timeout=15_000)
        assert len(failed) == 1
        assert await page.locator("#transcript-error").count() == 0


async def test_a_row_drawn_anew_while_the_button_is_down_still_picks_its_task(
    store: Store, tmp_path: Path
) -> None:
    """The task table is drawn anew whenever the run moves; Chromium sends no click at all for a
    row replaced between the press and the release. The task pressed on is picked all the same
    (a busy run lost such clicks, and a CI run once)."""
    await blocked_run(store, tmp_path)
    async with page_on(store, "blocked") as (page, url):
        await page.goto(url)
        row = page.locator('#tasks tr[data-task="fine"]')
        await row.wait_for()
        box = await row.bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        await page.mouse.down()
        replaced = await page.evaluate(
            """() => { const before = document.querySelector('#tasks tr[data-task="fine"]');
                       document.getElementById('task-filter').dispatchEvent(new Event('input'));
                       return !before.isConnected; }"""
        )
        await page.mouse.up()
        assert replaced  # the row under the pointer was drawn anew in between
        await page.wait_for_selector("#transcript .line >> text=Read(README.md)", timeout=15_000)
        assert await page.text_content("#transcript-title") == "fine"
