"""``maos bench dashboard``: how late the dashboard's clients see a run's events.

A real run: ``tasks`` command agents, ``agents`` at a time, each printing ``lines`` lines at
an even pace, so the log grows by about ``agents * lines_per_s`` events a second (1,000 with
the defaults). The dashboard serves the run from the run's own process, as
``maos run --dashboard`` does (the orchestrator also feeds a ``MetricsObserver``). ``clients``
SSE clients, in ``client_procs`` separate processes, follow ``/api/runs/{id}/events`` from the
first event to ``event: end``; optionally one headless Chromium page has the dashboard open
and follows the same stream with an ``EventSource`` of its own.

Delay of one event at one client = the client's clock when the event's ``data:`` line arrives
minus the event's ``ts``, which the worker stamps just before it appends the event (same host,
same clock). Every client must receive every event of the log, in order.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from maos.bench import docs
from maos.bench.machine import cpu_model, load_average
from maos.eventlog import EventLog
from maos.metrics import MetricsObserver
from maos.model import Plan, RunConfig, RunStatus, TaskSpec
from maos.orchestrator import Orchestrator
from maos.store import open_store

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page
    from playwright.async_api._context_manager import PlaywrightContextManager

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
)
SECTION = "## maos bench dashboard"


@dataclass(frozen=True)
class Settings:
    clients: int = 20
    client_procs: int = 2
    tasks: int = 20
    agents: int = 10
    lines: int = 500  # per task; the worker logs at most 500 lines per attempt
    lines_per_s: float = 100.0  # per task
    browser: bool = True


@dataclass
class Delays:
    """Delays in seconds, and how many events each client received."""

    samples: list[float] = field(default_factory=list)
    per_client: list[int] = field(default_factory=list)
    in_order: bool = True

    def percentile(self, q: float) -> float:
        if not self.samples:
            return math.nan
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[index]


@dataclass(frozen=True)
class Result:
    settings: Settings
    log_events: int
    output_events: int
    rate_per_s: float  # agent_output events per second over the run's output span
    run_s: float
    sse: Delays
    browser: Delays | None
    browser_note: str = ""

    def complete(self, delays: Delays) -> bool:
        return delays.in_order and all(count == self.log_events for count in delays.per_client)


# ---------------------------------------------------------------------- the run


def plan(settings: Settings) -> Plan:
    program = (
        "import sys, time\n"
        f"n, rate = {settings.lines}, {settings.lines_per_s}\n"
        "start = time.monotonic()\n"
        "for i in range(n):\n"
        "    print(f'line {i} of {n}: ' + 'x' * 60, flush=True)\n"
        "    time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))\n"
    )
    return Plan(
        name="bench-dashboard",
        tasks=tuple(
            TaskSpec(id=f"emit-{n:02d}", command=(sys.executable, "-c", program), max_attempts=1)
            for n in range(settings.tasks)
        ),
    )


def _spawn_clients(url: str, counts: list[int]) -> list[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "maos.bench.dashboard", url]
    return [subprocess.Popen([*command, str(count)], stdout=subprocess.PIPE) for count in counts]


async def _read_ready(process: subprocess.Popen[bytes], clients: int) -> None:
    assert process.stdout is not None
    ready = 0
    while ready < clients:
        line = await asyncio.to_thread(process.stdout.readline)
        if not line:
            raise RuntimeError("an SSE client process exited before it connected")
        if line.strip() == b"ready":
            ready += 1


async def run(settings: Settings) -> Result:
    from maos.web import create_app, serve_in_background

    with tempfile.TemporaryDirectory(prefix="maos-bench-dash-") as tmp:
        workdir = Path(tmp)
        store = await open_store(f"sqlite:///{workdir / 'maos.db'}")
        try:
            config = RunConfig(agents=settings.agents, workdir=str(workdir), retry_base_s=0.0, grace_s=1.0)
            orchestrator = Orchestrator(store, plan(settings), config)
            metrics = MetricsObserver()
            orchestrator.hooks.append(metrics.observe)
            app = create_app(store, run_id=orchestrator.run_id, metrics=metrics)
            async with serve_in_background(app) as server:
                url = f"{server.url}api/runs/{orchestrator.run_id}/events"
                procs = [max(1, settings.clients // settings.client_procs)] * settings.client_procs
                procs[-1] += settings.clients - sum(procs)
                # Plain subprocesses, not asyncio's: the orchestrator swaps the event loop's child
                # watcher when its run starts, which must not find these in the old one.
                counts = [count for count in procs if count > 0]
                processes = await asyncio.to_thread(_spawn_clients, url, counts)
                browser_delays: Delays | None = None
                browser_note = ""
                try:
                    for process, count in zip(processes, counts, strict=True):
                        await asyncio.wait_for(_read_ready(process, count), 30)
                    async with _BrowserSession(settings, server.url, url) as browser:
                        browser_note = browser.note
                        started = time.perf_counter()
                        state = await orchestrator.run()
                        run_s = time.perf_counter() - started
                        if state.status is not RunStatus.SUCCEEDED:
                            raise RuntimeError(f"the bench run failed: {state.summary}")
                        browser_delays = await browser.result()
                    outputs = [await asyncio.to_thread(p.communicate, timeout=120) for p in processes]
                finally:
                    for process in processes:
                        if process.poll() is None:
                            process.kill()
                        await asyncio.to_thread(process.communicate)
            sse = Delays()
            for stdout, _ in outputs:
                for line in stdout.decode().splitlines():
                    if line.startswith("{"):
                        report = json.loads(line)
                        sse.samples.extend(report["delays"])
                        sse.per_client.append(report["events"])
                        sse.in_order = sse.in_order and report["in_order"]
            log_events = 0
            output_ts: list[float] = []
            async for _, event in EventLog(store, orchestrator.run_id).iterate():
                log_events += 1
                if event.type == "agent_output":
                    output_ts.append(event.ts)
            span = (max(output_ts) - min(output_ts)) if len(output_ts) > 1 else math.nan
            return Result(
                settings=settings,
                log_events=log_events,
                output_events=len(output_ts),
                rate_per_s=len(output_ts) / span if span else math.nan,
                run_s=run_s,
                sse=sse,
                browser=browser_delays,
                browser_note=browser_note,
            )
        finally:
            await store.close()


class _BrowserSession:
    """One headless Chromium page with the dashboard open, timing an EventSource of its own."""

    def __init__(self, settings: Settings, page_url: str, events_url: str) -> None:
        self.settings = settings
        self.page_url = page_url
        self.events_url = events_url
        self.note = ""
        self._manager: PlaywrightContextManager | None = None
        self._browser: Browser | None = None
        self._page: Page | None = None

    async def __aenter__(self) -> _BrowserSession:
        if not self.settings.browser:
            self.note = "No browser client (--no-browser)"
            return self
        if not CHROMIUM.exists():
            self.note = f"No browser client: {CHROMIUM} is not installed"
            return self
        from playwright.async_api import async_playwright

        self._manager = async_playwright()
        playwright = await self._manager.__aenter__()
        self._browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS)
        )
        page = await self._browser.new_page(viewport={"width": 1440, "height": 1000})
        self._page = page
        await page.goto(self.page_url)  # the dashboard itself renders the same stream meanwhile
        await page.evaluate(_BROWSER_PROBE, self.events_url)
        await page.wait_for_function("window.__probe.open === true")
        return self

    async def result(self) -> Delays | None:
        if self._page is None:
            return None
        await self._page.wait_for_function("window.__probe.ended === true", timeout=120_000)
        data = await self._page.evaluate("window.__probe")
        return Delays(samples=data["delays"], per_client=[data["events"]], in_order=data["inOrder"])

    async def __aexit__(self, *exc: object) -> None:
        if self._browser is not None:
            await self._browser.close()
        if self._manager is not None:
            await self._manager.__aexit__(None, None, None)


_BROWSER_PROBE = """(url) => {
  const probe = { open: false, ended: false, events: 0, inOrder: true, last: 0, delays: [] };
  window.__probe = probe;
  const source = new EventSource(url);
  source.onopen = () => { probe.open = true; };
  source.onmessage = (message) => {
    const now = Date.now() / 1000;
    const id = Number(message.lastEventId);
    if (id <= probe.last) probe.inOrder = false;
    probe.last = id;
    probe.events += 1;
    probe.delays.push(now - JSON.parse(message.data).ts);
  };
  source.addEventListener("end", () => { probe.ended = true; source.close(); });
}"""


# ---------------------------------------------------------------------- the SSE client process


def _frame_fields(frame: bytes) -> tuple[int | None, float | None, bool]:
    """(event id, event ts, is the end event) of one SSE frame."""
    event_id: int | None = None
    ts: float | None = None
    end = False
    for line in frame.split(b"\n"):
        if line.startswith(b"id: "):
            event_id = int(line[4:])
        elif line.startswith(b'data: {"ts":'):
            # 'data: {"ts":1733000000.123,"type":…': ts is the first field of every event
            ts = float(line[12 : line.index(b",", 12)])
        elif line.startswith(b"data: {"):
            ts = json.loads(line[6:]).get("ts")
        elif line == b"event: end":
            end = True
    return event_id, ts, end


async def _follow(url: str) -> dict[str, object]:
    """One SSE client, parsing like a browser's EventSource does: frames end at a blank line."""
    import httpx

    delays: list[float] = []
    events = 0
    last = 0
    in_order = True
    buffer = b""
    async with httpx.AsyncClient(timeout=None) as client, client.stream("GET", url) as response:
        response.raise_for_status()
        print("ready", flush=True)
        async for chunk in response.aiter_raw():
            received = time.time()  # every frame of this chunk arrived now
            buffer += chunk
            *frames, buffer = buffer.split(b"\n\n")
            for frame in frames:
                event_id, ts, end = _frame_fields(frame)
                if end:
                    return {"events": events, "in_order": in_order, "delays": delays}
                if event_id is None or ts is None:
                    continue  # the retry line, a keepalive comment
                in_order = in_order and event_id > last
                last = event_id
                events += 1
                delays.append(received - ts)
    return {"events": events, "in_order": in_order, "delays": delays}


async def _clients(url: str, count: int) -> None:
    reports = await asyncio.gather(*(_follow(url) for _ in range(count)))
    for report in reports:
        print(json.dumps(report), flush=True)


# ---------------------------------------------------------------------- the report


def _machine() -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} CPUs (load average {load_average():.1f} at the end), "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def _ms(seconds: float) -> str:
    return "—" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def section(result: Result) -> str:
    s = result.settings
    rows = [("SSE clients (Python, httpx)", result.sse)]
    if result.browser is not None:
        rows.append(("headless Chromium page (EventSource)", result.browser))
    table = [
        "| clients | events each | all events, in order | p50 | p90 | p99 | max |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for name, delays in rows:
        count = f"{len(delays.per_client)} × {min(delays.per_client, default=0):,}"
        table.append(
            f"| {name} | {count} | {'yes' if result.complete(delays) else 'NO'} | "
            f"{_ms(delays.percentile(50))} | {_ms(delays.percentile(90))} | "
            f"{_ms(delays.percentile(99))} | {_ms(max(delays.samples, default=math.nan))} |"
        )
    lines = [
        SECTION,
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {_machine()}; SQLite store. Reproduce with "
        f"`maos bench dashboard --agents {s.agents} --lines-per-s {s.lines_per_s:g} --clients {s.clients}`.",
        "",
        f"A real run: {s.tasks} command agents' tasks, {s.agents} at a time, each printing {s.lines} "
        f"lines at {s.lines_per_s:g} lines/s, appended {result.output_events:,} output events "
        f"({result.log_events:,} events in all) at **{result.rate_per_s:,.0f} events/s** over "
        f"{result.run_s:.1f} s. The dashboard ran in the run's process, as `maos run --dashboard` "
        f"does; {s.clients} SSE clients in {s.client_procs} other processes followed "
        "`/api/runs/{id}/events` from the first event to `event: end`.",
        "",
        "Delay = the client's clock when an event's `data:` line arrives minus the event's `ts`, "
        "stamped by the worker just before the append (one host, one clock).",
        "",
        *table,
        "",
    ]
    if result.browser is not None:
        lines += [
            "The Chromium page had the dashboard open (rendering the same stream) and timed an "
            "`EventSource` of its own with `Date.now()`.",
            "",
        ]
    elif result.browser_note:
        lines += [result.browser_note + ".", ""]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace (or append) this benchmark's section of ``path``, leaving the others alone."""
    docs.write_section(path, SECTION, text)


def main(argv: Sequence[str]) -> None:
    """``python -m maos.bench.dashboard URL N``: N SSE clients, one JSON report line each."""
    url, count = argv[0], int(argv[1])
    asyncio.run(_clients(url, count))


if __name__ == "__main__":
    main(sys.argv[1:])
