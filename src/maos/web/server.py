"""Serving an ASGI app with uvicorn inside an asyncio program that owns the event loop.

``serve_in_background`` is for ``maos run --dashboard`` / ``--metrics-port`` (the run is the
program; the server rides along) and for ``maos dashboard`` (the server is the program). It

- refuses a non-loopback address unless the app has a token (``auth.check_bind``);
- binds the socket itself, so a taken port is an ``OSError`` here, not uvicorn's
  ``sys.exit`` inside a task; port 0 picks a free port (``RunningServer.port`` says which);
- logs uvicorn's warnings about bad requests at most once a second each (``_QuietUvicorn``);
- leaves signal handling to the caller (uvicorn would otherwise replace ``maos run``'s
  Ctrl-C handlers with its own while it serves);
- at exit, sets the app's ``closing`` event *before* uvicorn waits for open requests, so the
  event streams end at once instead of holding the shutdown up, then waits for the server
  to finish (``graceful_s`` bounds that wait; uvicorn cancels what is left after it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from maos.errors import MaosError
from maos.throttle import Throttle, kept_back
from maos.web.auth import check_bind

log = logging.getLogger("maos.web.server")

__all__ = ["RunningServer", "ServerError", "serve_in_background"]


class ServerError(MaosError):
    """The dashboard or metrics server could not start."""


@dataclass(frozen=True, slots=True)
class RunningServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, closing: asyncio.Event | None) -> None:
        super().__init__(config)
        self._closing = closing

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals belong to the program that runs this server

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._closing is not None:
            self._closing.set()
        await super().shutdown(sockets)


KEEP_ALIVE_S = 75
"""How long an idle keep-alive connection stays open: longer than the clients' own (Node's
fetch, which the Claude Code CLI uses for its model and MCP requests, keeps one ~4 s idle). At
uvicorn's 5 s the server sometimes closed a connection just as the CLI reused it, and the
request failed with ECONNRESET."""


HEAD_TIMEOUT_S = 10.0
"""How long a connection may take to send a request's head (its request line and headers),
from its opening or from the first byte of a request after the last response. Clients send
it at once; a connection that sends nothing, or a byte now and then (slowloris), would
otherwise hold one of the server's ``limit_concurrency`` places for as long as it liked, and a
few hundred of them would shut every agent out of the door's endpoint."""


class _TimelyH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's head (``HEAD_TIMEOUT_S``).
    An idle keep-alive connection between requests is left to ``KEEP_ALIVE_S``."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._await_head()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._await_head()  # the first byte of a new request
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before and self._head_timer is not None:  # its head is in
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_late, self.cycle)

    def _head_late(self, cycle: object) -> None:
        self._head_timer = None
        if self.cycle is cycle and not self.transport.is_closing():
            log.debug("closing a connection that sent no request head in %g s", HEAD_TIMEOUT_S)
            self.transport.close()


class _QuietUvicorn(logging.Filter):
    """uvicorn's warnings ("Invalid HTTP request received.", "Exceeded concurrency limit.",
    "Unsupported upgrade request."), each at most a line a second with a count of the rest
    (``maos.throttle``): any local user can cause one per request on a loopback port, and
    they go to the terminal of ``maos run`` or ``maos dashboard``."""

    def __init__(self) -> None:
        super().__init__()
        self._throttles: dict[object, Throttle] = {}  # by message template: a few of them

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        kept = self._throttles.setdefault(record.msg, Throttle()).due()
        if kept is None:
            return False
        if kept:
            record.msg, record.args = record.getMessage() + kept_back(kept), ()
        return True


_QUIET_UVICORN = _QuietUvicorn()


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ServerError(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.set_inheritable(False)
    except OSError as exc:
        sock.close()
        raise ServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


@contextlib.asynccontextmanager
async def serve_in_background(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    graceful_s: int = 5,
    sock: socket.socket | None = None,
    limit_concurrency: int | None = None,
) -> AsyncIterator[RunningServer]:
    """Serve ``app`` on ``host:port`` while the ``async with`` body runs. ``sock``: a socket
    already bound (``host`` and ``port`` are then its own), which is closed at the end.
    ``limit_concurrency``: more connections and requests than that are answered 503."""
    if sock is not None:
        host, port = sock.getsockname()[:2]
    state = getattr(app, "state", None)
    check_bind(host, getattr(state, "token", None))
    closing = getattr(state, "closing", None)
    sock = sock if sock is not None else _bind(host, port)
    uvicorn_log = logging.getLogger("uvicorn.error")
    if _QUIET_UVICORN not in uvicorn_log.filters:
        uvicorn_log.addFilter(_QUIET_UVICORN)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,  # only the CLI configures logging
        access_log=False,  # URLs may carry ?token=
        lifespan="on",
        timeout_graceful_shutdown=graceful_s,
        limit_concurrency=limit_concurrency,
        timeout_keep_alive=KEEP_ALIVE_S,
        http=_TimelyH11Protocol,
    )
    server = _Server(config, closing if isinstance(closing, asyncio.Event) else None)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name=f"maos-http-{host}:{bound_port}")
    try:
        while not server.started:
            if serving.done():
                break
            await asyncio.sleep(0.005)
        if not server.started:
            try:
                await serving
            except SystemExit as exc:  # uvicorn exits when the app's startup fails
                raise ServerError(f"the server on {host}:{bound_port} failed to start") from exc
            raise ServerError(f"the server on {host}:{bound_port} stopped during startup")
        log.info("serving on %s:%d", host, bound_port)
        yield RunningServer(host, bound_port)
    finally:
        server.should_exit = True
        try:
            await serving
        except SystemExit:
            pass
        finally:
            sock.close()
