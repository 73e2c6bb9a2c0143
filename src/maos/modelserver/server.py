"""Running the model server under uvicorn: as the ``maos model-server`` process, or in-process.

We bind the socket ourselves so that port 0 gives a port we know before the first request, and
hand it to uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path

import uvicorn

from maos.errors import MaosError
from maos.modelserver.app import create_app
from maos.modelserver.script import Script, load_script

_START_TIMEOUT_S = 10.0
_GRACEFUL_SHUTDOWN_S = 2  # a scripted delay must not hold a shutdown for long


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _config(script: Script, log_path: Path | None) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(script, log_path=log_path),
        lifespan="off",
        access_log=False,
        log_config=None,  # logging belongs to the program, not to us
        log_level="warning",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
    )


async def serve(
    script: Script,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    log_path: Path | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. ``on_listening(url)`` runs once the port is bound."""
    sock = bind_socket(host, port)
    with sock:
        if on_listening is not None:
            on_listening(url_of(sock))
        await uvicorn.Server(_config(script, log_path)).serve(sockets=[sock])


class _InProcessServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # In-process (tests, demos) Ctrl-C belongs to the host program, not to us.
        yield


@contextlib.asynccontextmanager
async def running_model_server(
    script: Script | str | Path, *, log_path: Path | None = None
) -> AsyncIterator[str]:
    """Serve ``script`` on 127.0.0.1 and a free port for the duration of the block; yields the
    base URL (``http://127.0.0.1:PORT``), ready for ANTHROPIC_BASE_URL. Stops on exit, also on
    cancellation. A path is loaded with ``load_script``."""
    if not isinstance(script, Script):
        script = load_script(script)
    sock = bind_socket("127.0.0.1", 0)
    with sock:
        server = _InProcessServer(_config(script, log_path))
        task = asyncio.create_task(server.serve(sockets=[sock]), name="maos-model-server")
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                while not server.started:
                    if task.done():
                        task.result()  # raises the start-up error
                        raise MaosError("model server stopped during start-up")
                    await asyncio.sleep(0.005)
            yield url_of(sock)
        finally:
            server.should_exit = True
            await task
