"""``maos dashboard [RUN]``: the live dashboard of a run, running or finished, in a browser."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Annotated

import typer

from maos.cli._app import app
from maos.cli._common import JsonLinesOption, StoreOption, err_console, json_line, store_url
from maos.cli._ids import resolve_run_id


@app.command()
def dashboard(
    run_id: Annotated[
        str | None,
        typer.Argument(metavar="RUN", help="Run id or a unique start of one (default: the newest run)."),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            "--dashboard-host",
            help="Address to listen on. Anything but loopback needs MAOS_DASHBOARD_TOKEN.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", "--dashboard-port", min=0, max=65535, help="Port (0: any free port)."),
    ] = 8765,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            metavar="NAME",
            help="Also answer requests for this host name (repeatable; '*': any). Default: loopback "
            "names and the --host address; MAOS_DASHBOARD_HOSTS adds more.",
        ),
    ] = None,
    store: StoreOption = None,
    json_output: JsonLinesOption = False,
) -> None:
    """Serve the dashboard (agents, DAG, tasks, transcripts, throughput) and /metrics.

    With --json: a line once it listens (event: listening, with its url and metrics_url) and
    one when it stops (event: stopped)."""
    from maos.web.auth import TOKEN_ENV, allowed_hosts, check_bind, hosts_from_env

    token = os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)
    hosts = allowed_hosts(host, [*hosts_from_env(os.environ), *(allowed_host or [])])
    asyncio.run(_serve(store_url(store), run_id, host, port, token, hosts, json_output=json_output))


async def _serve(
    url: str | None,
    run_id: str | None,
    host: str,
    port: int,
    token: str | None,
    hosts: frozenset[str],
    *,
    json_output: bool,
) -> None:
    from maos.store import open_store
    from maos.web import create_app, serve_in_background

    opened = await open_store(url)
    try:
        if run_id is not None:  # without one the page follows the newest run, even a later one
            run_id = await resolve_run_id(opened, run_id)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            app = create_app(opened, run_id=run_id, token=token, allowed_hosts=hosts)
            async with serve_in_background(app, host, port) as server:
                if json_output:
                    json_line(
                        {
                            "event": "listening",
                            "url": server.url,
                            "metrics_url": f"{server.url}metrics",
                            "run_id": run_id,
                            "store": opened.url,
                            "token_required": token is not None,
                            "allowed_hosts": sorted(hosts),
                        }
                    )
                else:
                    _say_where(server.url, run_id, opened.url, host, token, hosts)
                await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if json_output:
            json_line({"event": "stopped"})
        else:
            err_console().print("dashboard stopped")
    finally:
        await opened.close()


def _say_where(
    url: str, run_id: str | None, store: str, host: str, token: str | None, hosts: frozenset[str]
) -> None:
    from rich.console import Console

    from maos.web.auth import LOOPBACK_HOSTS, is_loopback

    console = Console(highlight=False, soft_wrap=True)
    console.print(f"dashboard of {run_id or 'the newest run'} (store {store}): {url}")
    if token:
        console.print(f"open it with ?token=… (the value of $MAOS_DASHBOARD_TOKEN): {url}?token=")
    if hosts - LOOPBACK_HOSTS:
        console.print(f"answers to host names: {', '.join(sorted(hosts))}")
    elif not is_loopback(host):
        console.print(
            "only loopback host names are allowed: add --allowed-host NAME for the name or "
            "address clients use"
        )
    console.print(f"Prometheus metrics: {url}metrics — Ctrl-C stops")
