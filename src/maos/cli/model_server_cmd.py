"""``maos model-server``: serve a scripted Anthropic Messages API (see docs/model-server.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from maos.cli._app import app

EXIT_CANNOT_LISTEN = 1
EXIT_INVALID_SCRIPT = 2


@app.command("model-server")
def model_server(
    script: Annotated[
        Path, typer.Option("--script", help="YAML script of rules and replies.", show_default=False)
    ],
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one and prints it.")] = 8787,
    log: Annotated[
        Path | None, typer.Option("--log", help="Append every request, one JSON line each.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No line per request on stderr.")] = False,
) -> None:
    """Serve a scripted Anthropic Messages API: point ANTHROPIC_BASE_URL at it to rehearse a
    workflow without spending tokens. The first line printed is the URL."""
    # Imported here: `maos` must start fast for the door commands agents call.
    import asyncio
    import logging

    from maos.modelserver.script import ScriptError, load_script
    from maos.modelserver.server import serve

    try:
        loaded = load_script(script)
    except ScriptError as exc:
        for line in exc.problems:
            typer.echo(line, err=True)
        raise typer.Exit(EXIT_INVALID_SCRIPT) from None

    # The root callback configured logging (WARNING); one line per request unless --quiet.
    logging.getLogger("maos.modelserver").setLevel(logging.WARNING if quiet else logging.INFO)

    def listening(url: str) -> None:
        print(f"model-server listening on {url}", flush=True)

    try:
        asyncio.run(serve(loaded, host=host, port=port, log_path=log, on_listening=listening))
    except OSError as exc:  # the port is taken, the address is not ours, ...
        typer.echo(f"model-server: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(EXIT_CANNOT_LISTEN) from None
