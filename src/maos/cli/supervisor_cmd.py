"""``maos supervisor``: take over and finish every run whose orchestrator is gone."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from maos.cli._app import app
from maos.cli._common import (
    JsonLinesOption,
    S3EndpointOption,
    StoreOption,
    SupervisorNameOption,
    err_console,
    json_line,
    store_url,
)
from maos.cli.run_cmd import CheckpointEveryOption, CheckpointsOption, KeepOption, Saving


@app.command()
def supervisor(
    store: StoreOption = None,
    name: SupervisorNameOption = None,
    lease_s: Annotated[
        float,
        typer.Option("--lease-s", min=0.5, max=3600, help="Lease of the runs it takes over."),
    ] = 15.0,
    poll_s: Annotated[
        float, typer.Option("--poll-s", min=0.05, max=60, help="Seconds between looks at the runs' leases.")
    ] = 1.0,
    checkpoint_every: CheckpointEveryOption = 30.0,
    checkpoints: CheckpointsOption = None,
    s3_endpoint: S3EndpointOption = None,
    keep_checkpoints: KeepOption = 10,
    json_output: JsonLinesOption = False,
) -> None:
    """Watch every run on the store; take over and finish each run whose orchestrator died.

    A run is taken over once its lease runs out (its orchestrator, or its machine, died or
    was cut off) or at once if it was started with `maos run --detach`: exactly as `maos
    resume` would, under a new epoch, so the old orchestrator can no longer write. Run one or
    more, on any machines that reach the store. SIGTERM (or Ctrl-C) lets go of the runs it
    drives: another supervisor takes them over. With --json: a line when it starts, when it
    lets go and when it stops (event: started, letting_go, stopped, with the runs taken over)."""
    from dataclasses import asdict

    from maos.orchestrator import Orchestrator
    from maos.store import open_store
    from maos.supervisor import Supervisor

    saving = Saving(checkpoint_every, checkpoints, s3_endpoint, keep_checkpoints)

    async def serve() -> Supervisor:
        opened = await open_store(store_url(store))
        try:
            runner = Supervisor(
                opened,
                lambda st, record: Orchestrator.resume_from(
                    st,
                    record.run_id,
                    checkpointer=saving.checkpointer(record.run_id, Path(record.workdir)),
                    lease_s=lease_s,
                ),
                name=name,
                poll_s=poll_s,
            )
            loop = asyncio.get_running_loop()

            def stop() -> None:
                if json_output:
                    json_line({"event": "letting_go", "supervisor": runner.name})
                else:
                    err_console().print(f"supervisor {runner.name}: letting go of its runs")
                runner.request_stop()

            loop.add_signal_handler(signal.SIGTERM, stop)
            loop.add_signal_handler(signal.SIGINT, stop)
            if json_output:
                json_line({"event": "started", "supervisor": runner.name, "store": opened.url})
            else:
                err_console().print(f"supervisor {runner.name} watching the runs on {opened.url}")
            await runner.run()
            return runner
        finally:
            await opened.close()

    runner = asyncio.run(serve())
    if json_output:
        taken = [asdict(adoption) for adoption in runner.adoptions]
        json_line({"event": "stopped", "supervisor": runner.name, "took_over": taken})
    else:
        err_console().print(f"supervisor done: took over {len(runner.adoptions)} run(s)")
