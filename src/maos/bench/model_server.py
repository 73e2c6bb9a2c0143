"""The scripted model server as its own process, for benchmarks that run Claude Code agents:
its CPU stays off the process that measures, as it would be for a real model API."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from maos.agents.process import stop_process
from maos.errors import MaosError

START_TIMEOUT_S = 60.0


@contextlib.asynccontextmanager
async def model_server_process(script: Path) -> AsyncIterator[str]:
    """``maos model-server --script SCRIPT --port 0`` for the time of the block; yields its URL."""
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "maos", "model-server", "--script", str(script), "--port", "0", "--quiet"),
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert server.stdout is not None
        first = (await asyncio.wait_for(server.stdout.readline(), START_TIMEOUT_S)).decode().strip()
        url = first.rsplit(" ", 1)[-1]
        if not url.startswith("http://"):
            raise MaosError(f"the model server did not start: {first!r}")
        yield url
    finally:
        await stop_process(server, 2.0)
