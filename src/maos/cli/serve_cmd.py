"""``maos serve``: one machine's warm pool that outlives runs, and how ``maos run`` finds it.

``maos serve`` is ``maos worker --warm N`` on this directory's default store (or ``--store``):
a long-lived local worker whose N Claude Code agents stay warm between runs (ADR 0017).
``maos run`` in the same directory, on the same store, sends its tasks to a live one by
itself and says so; ``--no-serve`` runs them here, ``--serve`` insists on one.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from maos.agents.primer import Primer
from maos.cli._app import app
from maos.cli._common import DoorTransportOption, JsonLinesOption, StoreOption, WorkerNameOption, store_url
from maos.cli.worker_cmd import WarmPrimerOption, serve_worker


@app.command()
def serve(
    store: StoreOption = None,
    warm: Annotated[
        int, typer.Option("--warm", min=1, max=1000, help="Claude Code agents kept warm between runs.")
    ] = 4,
    capacity: Annotated[
        int | None,
        typer.Option("--capacity", min=1, max=1000, help="Agents run at once (default: --warm, at least 4)."),
    ] = None,
    name: WorkerNameOption = None,
    lease_s: Annotated[float, typer.Option("--lease-s", min=0.5, max=3600, help="Heartbeat lease.")] = 15.0,
    json_output: JsonLinesOption = False,
    door_transport: DoorTransportOption = None,
    warm_primer: WarmPrimerOption = Primer.LOCAL,
) -> None:
    """Keep N warm Claude Code agents for the runs of this directory until stopped.

    `maos run` here (same store) sends its tasks to it and says so (`--no-serve`: not).
    SIGTERM or Ctrl-C: running agents finish, then the warm agents are stopped."""
    serve_worker(
        store_url(store),
        name=name,
        capacity=capacity or max(4, warm),
        lease_s=lease_s,
        json_output=json_output,
        door_transport=door_transport,
        warm=warm,
        warm_primer=warm_primer,
        banner="serving this directory: `maos run` here sends its tasks to it (Ctrl-C stops it)",
    )


@dataclass(frozen=True)
class LiveServe:
    """A live ``maos serve`` / ``maos worker --warm`` of a directory, as its record says."""

    worker: str
    workdir: str
    size: int
    idle: int


def live_serve(url: str | None, workdir: Path) -> LiveServe | None:
    """The live warm worker of ``workdir`` on the store at ``url`` (the one with the most idle
    agents), else None. Reads the workers' records (``keys.warm_agents``) and their leases."""
    return asyncio.run(_live_serve(url, workdir))


async def _live_serve(url: str | None, workdir: Path) -> LiveServe | None:
    from maos.errors import MaosError
    from maos.paths import store_file
    from maos.store import keys, open_store

    if url is None:
        if not store_file(workdir).exists():
            return None  # no store here yet: nothing can be serving it
        url = f"sqlite:///{store_file(workdir)}"
    # A store that cannot be opened is the run's own error (a locked SQLite file, Redis down):
    # raised here, not taken for "no serve" and met again, a busy timeout later, by the run.
    store = await open_store(url)
    found: list[LiveServe] = []
    try:
        for entry in await store.scan(keys.WARM_PREFIX):
            try:
                record = json.loads(entry.value)
                if not isinstance(record, dict) or Path(str(record.get("workdir"))) != workdir:
                    continue
                worker = str(record["worker"])
                idle = sum(int(counts.get("idle", 0)) for counts in dict(record.get("keys", {})).values())
                size = int(record.get("size", 0))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # not a record we can read: not a serve we can use
            if await store.holder(keys.worker_lease(worker)) is None:
                continue  # its lease ran out: it is gone
            found.append(LiveServe(worker, str(workdir), size, idle))
    except MaosError:
        return None
    finally:
        await store.close()
    return max(found, key=lambda serve: (serve.idle, serve.size), default=None)
