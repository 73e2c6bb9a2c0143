"""The dashboard as an ASGI app (Starlette): one page, a JSON API, an event stream, /metrics.

Routes (all ``GET``):

=======================================================  =====================================
``/``                                                    the page (``static/index.html``)
``/static/{file}``                                       its script and style sheet
``/api/runs``                                            run index: ``{"runs": [...], "selected": id}``
``/api/runs/{run_id}/state``                             ``snapshot.run_snapshot`` (404: no such run)
``/api/runs/{run_id}/tasks/{task_id}/transcript``        a task's output lines so far (404: no such task)
``/api/runs/{run_id}/events?after=ID``                   the log as Server-Sent Events (``sse``; 404 (*))
``/api/server?wait_s=S``                                 ``{"stopping": bool}``, after up to S s
``/metrics``                                             Prometheus text format
=======================================================  =====================================

(*) No such run in the store, unless it is the run the dashboard was opened for: ``maos run
--dashboard`` serves the page before its run's first event, and the page follows it from there.

Every request must name an allowed host, and every answer carries a strict
Content-Security-Policy (``auth.HostMiddleware``). With a ``token`` every route needs it
(``auth.TokenMiddleware``). ``/metrics`` serves the
``MetricsObserver`` given to ``create_app`` (``maos run --dashboard`` passes the one its
orchestrator feeds). Without one, the app feeds its own from the log: it follows ``run_id``
(or the newest run, then each newer one) from its first event, so its figures are the log's.

``/api/server`` is how the page learns that the server goes away: it waits (a long poll, at
most ``MAX_WAIT_S``) until the server starts shutting down and then answers at once, before
the server stops; the page's next request then fails, and it says the server has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from maos.errors import StoreError
from maos.eventlog import EventLog
from maos.liveness import run_records, run_view
from maos.metrics import CONTENT_TYPE, MetricsObserver
from maos.model import RunRecord, RunState
from maos.numbers import NumberError, parse_float
from maos.store import keys, open_store
from maos.store.base import Store
from maos.web import snapshot
from maos.web.auth import LOOPBACK_HOSTS, HostMiddleware, TokenMiddleware
from maos.web.sse import HEARTBEAT_S, EventStream, Tails

log = logging.getLogger("maos.web")

STATIC_DIR = Path(__file__).parent / "static"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_NO_CACHE = {"cache-control": "no-cache"}
FOLLOW_POLL_S = 1.0
STORE_RETRY_S = 2.0
"""How long metrics wait before reading the log again after a store error."""
MAX_WAIT_S = 60.0


def _not_found(detail: str) -> JSONResponse:
    return JSONResponse({"error": "not_found", "detail": detail}, status_code=404, headers=_NO_CACHE)


@dataclass
class _Followed:
    """The run whose log feeds the metrics of a dashboard outside the run: its fold so far."""

    run_id: str
    state: RunState = field(default_factory=RunState)  # its last_event_id: where to read on


class _Dashboard:
    """The app's state and its endpoints."""

    def __init__(
        self,
        store: Store | str,
        *,
        run_id: str | None,
        metrics: MetricsObserver | None,
        heartbeat_s: float,
    ) -> None:
        self._store = store if not isinstance(store, str) else None
        self._store_url = store if isinstance(store, str) else None
        self.run_id = run_id
        self.metrics = metrics if metrics is not None else MetricsObserver()
        self._feed_metrics = metrics is None
        self._followed: _Followed | None = None  # the run whose log feeds self.metrics
        self.heartbeat_s = heartbeat_s
        self.closing = asyncio.Event()
        self.tails: Tails | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the dashboard's store is opened by the app's lifespan; it has not started")
        return self._store

    def stream_tails(self) -> Tails:
        if self.tails is None:
            self.tails = Tails(self.store)
        return self.tails

    # ------------------------------------------------------------------ lifespan
    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        opened = False
        if self._store is None:
            assert self._store_url is not None
            self._store = await open_store(self._store_url)
            opened = True
        self.closing.clear()
        # Owned here: cancelled and awaited below. (Not a TaskGroup around the yield: a failing
        # child would cancel the server's lifespan task, not just itself.)
        feed = asyncio.create_task(self._follow_for_metrics()) if self._feed_metrics else None
        try:
            yield
        finally:
            self.closing.set()
            if feed is not None:
                feed.cancel()
                await asyncio.wait([feed])
            if self.tails is not None:
                await self.tails.close()
                self.tails = None
            if opened:
                await self.store.close()
                self._store = None

    async def _follow_for_metrics(self) -> None:
        """Feed ``self.metrics`` from the log: ``run_id``, or the newest run and every later one.

        A store that does not answer is waited for, and the log is read on from where it was:
        metrics that silently stopped would show a past that is no longer true. An event the
        metrics cannot take (store contents are untrusted) is skipped with a warning."""
        followed: RunRecord | None = None
        unfinished: str | None = self.run_id  # a run to follow (again: after a store error)
        while True:
            try:
                if unfinished is None:
                    records = await run_records(self.store)
                    newer = [r for r in records if followed is None or r.started_at > followed.started_at]
                    if not newer:
                        await asyncio.sleep(FOLLOW_POLL_S)
                        continue
                    followed = newer[0]
                    unfinished = followed.run_id
                await self._feed(unfinished)
                if self.run_id is not None:
                    return
                unfinished = None
            except StoreError as exc:
                log.warning("metrics: the store does not answer (%s); trying again", exc)
                await asyncio.sleep(STORE_RETRY_S)
            except Exception:  # a bug: the page and the stream keep working without metrics
                log.exception("metrics stopped following the run log")
                return

    async def _feed(self, run_id: str) -> None:
        """Fold run ``run_id``'s log into the metrics until the run ends; after a store error,
        called again, it reads on after the last event it folded."""
        followed = self._followed
        if followed is None or followed.run_id != run_id:
            followed = self._followed = _Followed(run_id)
        async for event_id, event in EventLog(self.store, run_id).follow(
            followed.state, poll_s=FOLLOW_POLL_S
        ):
            try:
                self.metrics.observe(event_id, event, followed.state)
            except Exception as exc:  # one event is lost to the metrics, not the rest
                log.warning("metrics: event %s of run %s skipped: %s", event_id, run_id, exc)

    # ------------------------------------------------------------------ endpoints
    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=_NO_CACHE)

    async def runs(self, request: Request) -> Response:
        records = await run_records(self.store)
        selected = self.run_id or (records[0].run_id if records else None)
        runs = [
            record.model_dump(mode="json")
            | (await run_view(self.store, record.run_id, record.status)).as_json()
            for record in records
        ]
        return JSONResponse({"runs": runs, "selected": selected}, headers=_NO_CACHE)

    async def state(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if not _ID.fullmatch(run_id):
            return _not_found(f"no run {run_id!r}")
        found = await snapshot.run_snapshot(self.store, run_id)
        if found is None:
            return _not_found(f"no run {run_id!r} in store {self.store.url} (yet)")
        return JSONResponse(found, headers=_NO_CACHE)

    async def transcript(self, request: Request) -> Response:
        run_id, task_id = request.path_params["run_id"], request.path_params["task_id"]
        if not _ID.fullmatch(run_id) or not _ID.fullmatch(task_id):
            return _not_found(f"no task {task_id!r} in run {run_id!r}")
        found = await snapshot.task_transcript(self.store, run_id, task_id)
        if found is None:
            return _not_found(f"no task {task_id!r} in run {run_id!r} in store {self.store.url} (yet)")
        return JSONResponse(found, headers=_NO_CACHE)

    async def may_stream(self, run_id: str) -> bool:
        """Whether run ``run_id``'s events may be streamed: it is in the store (its log or its
        record), or it is the run this dashboard was opened for, which may not have started
        yet (``maos run --dashboard`` serves the page first). A made-up id gets 404, not a
        stream of heartbeats for ever and a reader of the store of its own."""
        if run_id == self.run_id:
            return True
        if await self.store.last_id(keys.events(run_id)) != "0":
            return True
        return await self.store.get(keys.run_record(run_id)) is not None

    async def metrics_text(self, request: Request) -> Response:
        followed = self._followed
        if followed is not None:  # followed from outside the run: is it still driven?
            with contextlib.suppress(StoreError):  # unknown now: the gauge stays as it was
                # the log's status as folded so far; with no live holder run_view reads the
                # log's end, where a run_finished the fold has not reached yet still counts
                view = await run_view(self.store, followed.run_id, followed.state.status)
                self.metrics.set_interrupted(view.interrupted)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE, headers=_NO_CACHE)

    async def server(self, request: Request) -> Response:
        try:
            wait_s = parse_float(request.query_params.get("wait_s", "0"), "wait_s", max_value=MAX_WAIT_S)
        except NumberError as exc:
            body = {"error": "bad_request", "detail": str(exc)}
            return JSONResponse(body, status_code=400, headers=_NO_CACHE)
        if wait_s and not self.closing.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self.closing.wait()
        return JSONResponse({"stopping": self.closing.is_set()}, headers=_NO_CACHE)


class _EventsEndpoint:
    """The SSE endpoint (an ASGI app, not a request handler): it writes the response itself."""

    def __init__(self, dashboard: _Dashboard) -> None:
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        dashboard = self.dashboard
        run_id = scope["path_params"]["run_id"]
        if not _ID.fullmatch(run_id):
            await _not_found(f"no run {run_id!r}")(scope, receive, send)
            return
        try:
            known = await dashboard.may_stream(run_id)
        except StoreError as exc:
            response = JSONResponse({"error": "unavailable", "detail": str(exc)}, 503, headers=_NO_CACHE)
            await response(scope, receive, send)
            return
        if not known:
            await _not_found(f"no run {run_id!r} in store {dashboard.store.url}")(scope, receive, send)
            return
        if scope["method"] == "HEAD":
            await Response(media_type="text/event-stream", headers=_NO_CACHE)(scope, receive, send)
            return
        stream = EventStream(dashboard.stream_tails(), dashboard.closing, heartbeat_s=dashboard.heartbeat_s)
        await stream(scope, receive, send)


def create_app(
    store: Store | str,
    *,
    run_id: str | None = None,
    token: str | None = None,
    metrics: MetricsObserver | None = None,
    heartbeat_s: float = HEARTBEAT_S,
    allowed_hosts: frozenset[str] = LOOPBACK_HOSTS,
) -> Starlette:
    """The dashboard app on ``store`` (a ``Store``, which the caller keeps and closes, or a URL,
    which the app opens at startup and closes at shutdown).

    ``run_id`` is the run the page opens on (default: the newest). ``token`` protects every
    route (see ``maos.web.auth``). ``metrics``: the observer ``/metrics`` serves.
    ``allowed_hosts``: the ``Host`` names it answers to (``auth.allowed_hosts``; default loopback).
    """
    dashboard = _Dashboard(
        store,
        run_id=run_id,
        metrics=metrics,
        heartbeat_s=heartbeat_s,
    )
    routes = [
        Route("/", dashboard.page),
        Route("/api/runs", dashboard.runs),
        Route("/api/runs/{run_id}/state", dashboard.state),
        Route("/api/runs/{run_id}/tasks/{task_id}/transcript", dashboard.transcript),
        Route("/api/runs/{run_id}/events", _EventsEndpoint(dashboard), methods=["GET"]),
        Route("/api/server", dashboard.server),
        Route("/metrics", dashboard.metrics_text),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    middleware = [Middleware(HostMiddleware, hosts=allowed_hosts)]
    if token:
        middleware.append(Middleware(TokenMiddleware, token=token))
    app = Starlette(routes=routes, middleware=middleware, lifespan=dashboard.lifespan)
    app.state.token = token
    app.state.closing = dashboard.closing
    app.state.dashboard = dashboard
    return app


def create_metrics_app(
    metrics: MetricsObserver, *, token: str | None = None, allowed_hosts: frozenset[str] = LOOPBACK_HOSTS
) -> Starlette:
    """Just ``/metrics`` (``maos run --metrics-port``)."""

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE, headers=_NO_CACHE)

    middleware = [Middleware(HostMiddleware, hosts=allowed_hosts)]
    if token:
        middleware.append(Middleware(TokenMiddleware, token=token))
    app = Starlette(routes=[Route("/metrics", metrics_text)], middleware=middleware)
    app.state.token = token
    return app
