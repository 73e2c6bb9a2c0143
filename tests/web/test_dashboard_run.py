"""`maos run PLAN --dashboard` watched from headless Chromium, mid-run and after: the points a
new user found wrong (issue 12), checked through the page's DOM on a real run.

The run is the real CLI in a subprocess: a Claude Code task against the scripted model
server, a command task that fails for good while a long one goes on (until the mid-run checks
are done, however slow the machine), a retried task, a task skipped behind the failed one,
checkpoints every second. The dashboard lingers a few seconds
after the run (``--dashboard-linger-s``) and the page must then say that the server stopped.
Screenshots land in the test's tmp dir and in ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

from maos.modelserver import parse_script, running_model_server

from .test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.claude,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"),
    pytest.mark.timeout(240),
]

SCRIPT = """
default:
  text: "hello from the scripted model"
  usage: {input_tokens: 12345, output_tokens: 67, cache_read_input_tokens: 2048}
"""

PLAN = """
name: dashboard-check
tasks:
  - id: ask
    prompt: Say hello
    max_attempts: 1
  - id: prep
    command: "echo prep; sleep 0.3"
  - id: long
    depends_on: [prep]
    command: >-
      echo long start; i=0;
      while [ ! -e {gate} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done;
      echo long done
  - id: short
    depends_on: [prep]
    command: "echo short; sleep 0.2"
  - id: final
    depends_on: [long, short]
    command: "echo final"
  - id: flaky
    command: "echo about to fail; echo oops >&2; exit 3"
    max_attempts: 1
  - id: doomed
    depends_on: [flaky]
    command: "echo never"
  - id: after_doomed
    depends_on: [doomed]
    command: "echo never"
  - id: retrier
    command: "if [ -f {marker} ]; then echo second try; else touch {marker}; echo first try; exit 1; fi"
    max_attempts: 2
"""

LINGER_S = 4
LONG_FLOAT = re.compile(r"\d\.\d{7,}")  # a raw float such as 0.004123456789012345
URL = re.compile(r"dashboard: (http://\S+/)")

# Collects every text the server banner shows, so a short "stopping" state is not missed.
WATCH_BANNER = """() => {
  window.__banners = [];
  const banner = document.getElementById("server-banner");
  new MutationObserver(() => { if (!banner.hidden) window.__banners.push(banner.textContent); })
    .observe(banner, { childList: true, characterData: true, subtree: true, attributes: true });
}"""


async def read_url(stream: asyncio.StreamReader, seen: list[str]) -> str:
    while True:
        line = (await stream.readline()).decode(errors="replace")
        if not line:
            raise AssertionError("maos run ended before printing its dashboard URL:\n" + "".join(seen))
        seen.append(line)
        found = URL.search(line)
        if found:
            return found.group(1)


async def drain(stream: asyncio.StreamReader, seen: list[str]) -> None:
    while line := await stream.readline():
        seen.append(line.decode(errors="replace"))


async def page_text(page: Page) -> str:
    return str(await page.evaluate("document.body.innerText"))


async def test_dashboard_of_a_real_run_mid_run_and_after(cli: Path, tmp_path: Path) -> None:
    work = tmp_path / "project"
    work.mkdir()
    plan_file = work / "plan.yaml"
    gate = tmp_path / "long-may-finish"  # long runs until the mid-run checks are done (a minute at most)
    plan = PLAN.replace("{marker}", str(tmp_path / "retried-once")).replace("{gate}", str(gate))
    plan_file.write_text(plan)
    shots: dict[str, Path] = {}
    output: list[str] = []
    async with running_model_server(parse_script(SCRIPT)) as model_url:
        env = {**os.environ, "MAOS_ANTHROPIC_BASE_URL": model_url}
        env.pop("ANTHROPIC_API_KEY", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "maos", "run", str(plan_file), "--agents", "4",
            "--store", f"sqlite:///{tmp_path / 'maos.db'}", "--retry-base-s", "0.1",
            "--checkpoint-every-s", "1", "--dashboard", "--dashboard-port", "0",
            "--dashboard-linger-s", str(LINGER_S),
            cwd=work, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert proc.stdout is not None
        reader: asyncio.Task[None] | None = None
        try:
            url = await asyncio.wait_for(read_url(proc.stdout, output), 60)
            reader = asyncio.create_task(drain(proc.stdout, output))
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page(viewport={"width": 1440, "height": 1100})
                    errors: list[str] = []
                    page.on("pageerror", lambda error: errors.append(str(error)))
                    await page.goto(url)
                    await page.evaluate(WATCH_BANNER)
                    try:
                        await check_mid_run(page, tmp_path, shots)
                    finally:
                        gate.touch()
                    await check_after_run(page, tmp_path, shots)
                    await check_server_stopped(page, tmp_path, shots)
                    assert errors == []
                finally:
                    await browser.close()
            assert await asyncio.wait_for(proc.wait(), 30) == 1, "".join(output)  # flaky failed
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            if reader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader, 5)
    text = "".join(output)
    assert f"for {LINGER_S}s" in text, text
    assert "dashboard still at http://" in text, text
    ARTIFACTS.mkdir(exist_ok=True)
    for name, shot in shots.items():
        assert shot.stat().st_size > 10_000
        shutil.copyfile(shot, ARTIFACTS / f"dashboard-{name}.png")


async def check_mid_run(page: Page, tmp_path: Path, shots: dict[str, Path]) -> None:
    # the Claude task's agent is labelled with its runtime, not "command"
    claude_card = '#agents .agent[data-runtime="claude-code"]'
    await page.wait_for_selector(claude_card, timeout=60_000)
    assert "claude-code" in (await page.text_content(f"{claude_card} .role") or "")
    # flaky failed for good: flagged at once, while long still runs
    await page.wait_for_selector('#tasks tr.failed[data-task="flaky"][data-state="failed"]', timeout=30_000)
    await page.wait_for_selector('#tasks tr[data-task="long"][data-state="running"]')
    assert await page.get_attribute("#run-status", "data-status") == "running"
    assert await page.text_content("#failed") == "1"
    assert await page.locator('#dag .node.failed[data-task="flaky"]').count() == 1
    assert "✗" in (await page.text_content('#tasks tr[data-task="flaky"] td.id') or "")
    assert await page.locator("#agents .agent .fail-mark").count() >= 1
    # the critical path follows the measured durations: through long, not short nor skipped tasks
    await page.wait_for_selector('#tasks tr[data-task="after_doomed"][data-state="skipped"]')
    await page.wait_for_function(
        "window.maosDashboard.dag.critical_path.join(',') === 'prep,long,final'", timeout=15_000
    )
    assert await page.locator('#dag .node.crit[data-task="long"]').count() == 1
    for off in ("short", "doomed", "after_doomed", "flaky"):
        assert await page.locator(f'#dag .node.crit[data-task="{off}"]').count() == 0, off
    # a retried task's transcript separates its attempts
    await page.wait_for_selector('#tasks tr[data-task="retrier"][data-state="succeeded"]', timeout=30_000)
    await page.click('#tasks tr[data-task="retrier"]')
    await page.wait_for_selector('#transcript .attempt-sep[data-attempt="2"]')
    separated = await page.locator("#transcript .line, #transcript .attempt-sep").all_text_contents()
    joined = "\n".join(separated)
    assert joined.index("first try") < joined.index("— attempt 2 —") < joined.index("second try"), joined
    # checkpoints and cost panels read as figures, not key=value dumps
    await page.wait_for_selector("#checkpoints li", timeout=30_000)
    await page.wait_for_selector("#usage li")
    checkpoints = await page.text_content("#checkpoints") or ""
    assert "=" not in checkpoints, checkpoints
    assert re.search(r"\d+(\.\d)? (B|KB|MB)", checkpoints), checkpoints
    usage = await page.text_content("#usage") or ""
    assert re.search(r"cost \$\d+\.\d{2,4}\b", usage), usage
    assert "12,345" in usage, usage
    assert not LONG_FLOAT.search(await page_text(page))
    assert await page.get_attribute("#run-status", "data-status") == "running"  # all of it mid-run
    shots["mid-run"] = tmp_path / "mid-run.png"
    await page.screenshot(path=str(shots["mid-run"]), full_page=True)


async def check_after_run(page: Page, tmp_path: Path, shots: dict[str, Path]) -> None:
    await page.wait_for_selector('#run-status[data-status="failed"]', timeout=60_000)
    await page.wait_for_selector('#tasks tr[data-task="final"][data-state="succeeded"]')
    # the selector agrees with the badge
    await page.wait_for_function(
        "document.querySelector('#run-select option:checked').textContent.endsWith('(failed)')"
    )
    assert "(running)" not in (await page.text_content("#run-select") or "")
    path = await page.evaluate("window.maosDashboard.dag.critical_path.join(',')")
    assert path == "prep,long,final"
    assert await page.text_content("#failed") == "1"
    assert not LONG_FLOAT.search(await page_text(page))
    await page.click('#tasks tr[data-task="ask"]')
    await page.wait_for_selector("#transcript .line >> text=hello from the scripted model")
    shots["finished"] = tmp_path / "finished.png"
    await page.screenshot(path=str(shots["finished"]), full_page=True)


async def check_server_stopped(page: Page, tmp_path: Path, shots: dict[str, Path]) -> None:
    await page.wait_for_selector('#server-banner[data-state="gone"]', timeout=(LINGER_S + 20) * 1000)
    banner = await page.text_content("#server-banner")
    assert banner == "The server has stopped; this page shows the final state."
    assert "run finished — server stopping" in await page.evaluate("window.__banners")
    assert await page.get_attribute("#run-status", "data-status") == "failed"  # the final state stays
    shots["server-stopped"] = tmp_path / "server-stopped.png"
    await page.screenshot(path=str(shots["server-stopped"]), full_page=True)
