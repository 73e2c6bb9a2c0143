"""``maos worker``: run agents for orchestrators anywhere, taking work from a shared store."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from maos.agents.primer import Primer
from maos.cli._app import app
from maos.cli._common import (
    DoorTransportOption,
    JsonLinesOption,
    StoreOption,
    WorkerNameOption,
    err_console,
    json_line,
    store_url,
)

if TYPE_CHECKING:
    from maos.worker import StoreWorker

WarmPrimerOption = Annotated[
    Primer,
    typer.Option("--warm-primer", help="How warm agents are primed: 'local' (/cost, free) or 'model'."),
]


@app.command()
def worker(
    store: StoreOption = None,
    name: WorkerNameOption = None,
    capacity: Annotated[int, typer.Option("--capacity", min=1, max=1000, help="Agents run at once.")] = 4,
    lease_s: Annotated[float, typer.Option("--lease-s", min=0.5, max=3600, help="Heartbeat lease.")] = 15.0,
    json_output: JsonLinesOption = False,
    door_transport: DoorTransportOption = None,
    warm: Annotated[
        int,
        typer.Option(
            "--warm",
            min=0,
            max=1000,
            help="Keep N Claude Code agents warm for as long as the worker lives, across runs, "
            "for runs of this directory (ADR 0017).",
        ),
    ] = 0,
    warm_primer: WarmPrimerOption = Primer.LOCAL,
) -> None:
    """Take assignments from the store's work queue and run their agents here.

    SIGTERM (or Ctrl-C) drains: running agents finish, no new work is taken, then it exits
    (its warm agents are stopped). With --json: a line when it starts, when it drains and when
    it stops (event: started, draining, stopped)."""
    serve_worker(
        store_url(store),
        name=name,
        capacity=capacity,
        lease_s=lease_s,
        json_output=json_output,
        door_transport=door_transport,
        warm=warm,
        warm_primer=warm_primer,
    )


def serve_worker(
    url: str | None,
    *,
    name: str | None,
    capacity: int,
    lease_s: float,
    json_output: bool,
    door_transport: str | None,
    warm: int,
    warm_primer: Primer,
    banner: str = "",
) -> None:
    """Run a ``StoreWorker`` until SIGTERM/SIGINT (``maos worker``, ``maos serve``)."""
    from maos.agents.claude_code import ClaudeCodeRuntime
    from maos.agents.command import CommandRuntime
    from maos.agents.pool import WarmPool
    from maos.agents.runtime import AgentRuntime
    from maos.cli._common import fail
    from maos.store import open_store
    from maos.worker import StoreWorker

    claude: AgentRuntime = ClaudeCodeRuntime()
    if warm:
        claude = WarmPool(ClaudeCodeRuntime(), size=warm, primer=warm_primer)

    async def serve() -> StoreWorker:
        opened = await open_store(url)
        try:
            try:
                runner = StoreWorker(
                    opened,
                    {"command": CommandRuntime(), "claude-code": claude},
                    name=name,
                    capacity=capacity,
                    lease_s=lease_s,
                    door_transport=door_transport,
                    workdir=Path.cwd(),
                )
            except ValueError as exc:
                fail(f"--warm: {exc} (drop --door-transport stdio)")
            loop = asyncio.get_running_loop()

            def stop() -> None:
                if json_output:
                    json_line({"event": "draining", "worker": runner.name})
                else:
                    err_console().print(f"worker {runner.name}: draining (running agents finish)")
                runner.request_stop()

            loop.add_signal_handler(signal.SIGTERM, stop)
            loop.add_signal_handler(signal.SIGINT, stop)
            if json_output:
                json_line(
                    {
                        "event": "started",
                        "worker": runner.name,
                        "store": opened.url,
                        "capacity": capacity,
                        "lease_s": lease_s,
                        "warm": warm,
                        "workdir": str(Path.cwd()),
                    }
                )
            else:
                warmth = f", {warm} warm Claude agents for {Path.cwd()}" if warm else ""
                err_console().print(f"worker {runner.name} on {opened.url}, capacity {capacity}{warmth}")
                if banner:
                    err_console().print(banner)
            await runner.run()
            return runner
        finally:
            await opened.close()

    runner = asyncio.run(serve())
    if json_output:
        json_line({"event": "stopped", "worker": runner.name, "completed": runner.completed})
    else:
        err_console().print(f"worker done: {runner.completed} attempt(s) run")
