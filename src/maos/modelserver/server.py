"""Running the model server under uvicorn: as the ``maos model-server`` process, or in-process.

We bind the socket ourselves so that port 0 gives a port we know before the first request, and
hand it to uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from maos.errors import MaosError
from maos.modelserver.app import ScriptedModel, create_app
from maos.modelserver.script import Script, load_script
from maos.web.server import KEEP_ALIVE_S

_START_TIMEOUT_S = 10.0
_GRACEFUL_SHUTDOWN_S = 2  # backstop: scripted delays already end when shutdown starts


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one. It listens before the
    server runs, so that a client told the URL at once (``maos model-server`` prints it) is
    queued by the kernel instead of refused while uvicorn starts (seen on a loaded host)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
    # without it every scripted answer waited ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _config(app: Starlette) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        lifespan="off",
        access_log=False,
        log_config=None,  # logging belongs to the program, not to us
        log_level="warning",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
        timeout_keep_alive=KEEP_ALIVE_S,
    )


async def serve(
    script: Script,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    log_path: Path | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, then stop gracefully and return (the process exits 0).
    ``on_listening(url)`` runs once the port is bound."""
    sock = bind_socket(host, port)
    with sock:
        if on_listening is not None:
            on_listening(url_of(sock))
        server = _Server(create_app(script, log_path=log_path), own_signals=True)
        await server.serve(sockets=[sock])


class _Server(uvicorn.Server):
    """uvicorn's server with our signal policy.

    uvicorn re-raises a captured SIGTERM after shutting down, so the process dies of it. As a
    command we stop and exit 0 instead; in-process (tests, demos) we leave the host program's
    signal handlers alone altogether."""

    def __init__(self, app: Starlette, *, own_signals: bool) -> None:
        super().__init__(_config(app))
        self.model: ScriptedModel = app.state.model
        self.own_signals = own_signals

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Answer requests held by a scripted delay now instead of after the grace period.
        self.model.stopping.set()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if not self.own_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        # handle_exit only sets flags (should_exit; force_exit on a second signal).
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


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
        server = _Server(create_app(script, log_path=log_path), own_signals=False)
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
