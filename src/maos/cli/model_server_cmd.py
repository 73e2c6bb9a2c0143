"""``maos model-server``: serve a scripted Anthropic Messages API (see docs/model-server.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from maos.cli._app import app
from maos.cli._common import EXIT_FAILED, JsonLinesOption, fail, json_line


@app.command("model-server")
def model_server(
    script: Annotated[
        Path, typer.Option("--script", help="YAML script of rules and replies.", show_default=False)
    ],
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one and prints it.")
    ] = 8787,
    log: Annotated[
        Path | None, typer.Option("--log", help="Append every request, one JSON line each.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No line per request on stderr.")] = False,
    json_output: JsonLinesOption = False,
) -> None:
    """Serve a scripted Anthropic Messages API: point ANTHROPIC_BASE_URL at it to rehearse a
    workflow without spending tokens. The first line printed is the URL (with --json:
    {"event": "listening", "url": …}). An invalid script is exit 2, one line per problem."""
    # Imported here: `maos` must start fast for the door commands agents call.
    import asyncio
    import logging

    from maos.modelserver.script import load_script
    from maos.modelserver.server import serve

    loaded = load_script(script)  # a ScriptError lists every problem (exit 2)

    # The root callback configured logging (WARNING); one line per request unless --quiet.
    logging.getLogger("maos.modelserver").setLevel(logging.WARNING if quiet else logging.INFO)

    def listening(url: str) -> None:
        if json_output:
            json_line({"event": "listening", "url": url})
        else:
            print(f"model-server listening on {url}", flush=True)

    try:
        asyncio.run(serve(loaded, host=host, port=port, log_path=log, on_listening=listening))
    except OSError as exc:  # the port is taken, the address is not ours, ...
        fail(f"model-server: cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_FAILED)
