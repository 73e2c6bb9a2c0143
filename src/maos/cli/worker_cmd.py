"""``maos worker``: run agents for orchestrators anywhere, taking work from a shared store."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from maos.cli._app import app
from maos.cli._common import EXIT_FAILED, StoreOption, err_console, fail, store_url


@app.command()
def worker(
    store: StoreOption = None,
    name: Annotated[str | None, typer.Option("--name", help="Worker name (default: host-pid).")] = None,
    capacity: Annotated[int, typer.Option("--capacity", min=1, max=1000, help="Agents run at once.")] = 4,
    lease_s: Annotated[float, typer.Option("--lease-s", min=0.5, max=3600, help="Heartbeat lease.")] = 15.0,
) -> None:
    """Take assignments from the store's work queue and run their agents here.

    SIGTERM (or Ctrl-C) drains: running agents finish, no new work is taken, then it exits.
    """
    from maos.agents.claude_code import ClaudeCodeRuntime
    from maos.agents.command import CommandRuntime
    from maos.errors import MaosError
    from maos.store import open_store
    from maos.worker import StoreWorker

    async def serve() -> int:
        opened = await open_store(store_url(store))
        try:
            runner = StoreWorker(
                opened,
                {"command": CommandRuntime(), "claude-code": ClaudeCodeRuntime()},
                name=name,
                capacity=capacity,
                lease_s=lease_s,
            )
            loop = asyncio.get_running_loop()

            def stop() -> None:
                err_console().print(f"worker {runner.name}: draining (running agents finish)")
                runner.request_stop()

            loop.add_signal_handler(signal.SIGTERM, stop)
            loop.add_signal_handler(signal.SIGINT, stop)
            err_console().print(f"worker {runner.name} on {opened.url}, capacity {capacity}")
            await runner.run()
            return runner.completed
        finally:
            await opened.close()

    try:
        completed = asyncio.run(serve())
    except MaosError as exc:
        fail(str(exc), EXIT_FAILED)
    err_console().print(f"worker done: {completed} attempt(s) run")
