"""Server-Sent Events from a run's event log: one store reader per run, shared by every client.

Wire format (``text/event-stream``). Each log event is one SSE message whose ``id`` is the
event id and whose ``data`` is the event as stored (JSON, the same as ``maos logs`` decodes)::

    id: 42
    data: {"ts": 1733.2, "type": "task_started", "task_id": "build", ...}

A client resumes where it stopped: ``EventSource`` sends the last id it saw as the
``Last-Event-ID`` header on reconnect (``?after=ID`` does the same for a first connection).
An id that is not one the store could have issued (not ASCII digits, beyond 64 bits, another
backend's form) is answered with ``400`` naming the parameter.
Every ``heartbeat_s`` without an event the server writes a comment line (``: keepalive``) so
proxies and clients see the connection alive. Once the run has finished and the client has
every event, the server sends ``event: end`` and closes; the page then stops reconnecting.

Fan-out. At a thousand events a second and twenty clients, twenty readers polling one SQLite
store would each wake on every append and queue behind the orchestrator's own writes (one
store runs its calls on one thread). So each run has one ``RunTail``: a single blocking reader
that formats every event once into a shared ring of recent frames and wakes the run's streams.
A stream serves itself from the ring; a client that starts further back (a new page asking
from ``0``) or falls more than the ring behind reads the store directly in batches until it
reaches the ring, then joins it. The ring is bounded (``RING_FRAMES``), so a slow client costs
memory only in its own socket buffer: its ``send`` waits (TCP back-pressure) and nobody else
does.

A stream ends at the first of: the client disconnects, the run's log is complete, or the
server shuts down (``closing`` is set by ``maos.web.server`` *before* uvicorn waits for open
requests, so an open stream never holds a shutdown up).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from maos.errors import StoreError, StoreUnavailable
from maos.model import RunRecord
from maos.numbers import NumberError, check_stream_id
from maos.store import keys
from maos.store.base import Entry, Store

log = logging.getLogger("maos.web.sse")

HEARTBEAT_S = 15.0
RING_FRAMES = 5_000
"""Recent frames kept per run; the ring holds between this and twice as many."""
READ_BATCH = 1_000
IDLE_CHECK_S = 2.0
"""How often an idle tail looks at the run record to learn that the run has ended."""

HEARTBEAT = b": keepalive\n\n"
END = b"event: end\ndata: {}\n\n"
RETRY = b"retry: 2000\n\n"


@dataclass(frozen=True, slots=True)
class Frame:
    """One log event, ready to write to any number of streams."""

    id: str
    data: bytes
    finished: bool  # this is the run's ``run_finished`` event


def to_frame(entry: Entry) -> Frame:
    record = entry.record
    if b"\n" in record or b"\r" in record:  # never from pydantic JSON; keep the framing safe anyway
        lines = record.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        body = b"".join(b"data: " + line + b"\n" for line in lines)
    else:
        body = b"data: " + record + b"\n"
    finished = False
    if b'"run_finished"' in record:
        with contextlib.suppress(ValueError):
            finished = json.loads(record).get("type") == "run_finished"
    return Frame(entry.id, b"id: " + entry.id.encode() + b"\n" + body + b"\n", finished)


@dataclass(slots=True)
class Cursor:
    """Where one stream is: the last event id it sent, and that event's place in the ring."""

    id: str
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    frames: list[Frame]
    complete: bool  # nothing after these: the run has ended and its log is fully sent


class RunTail:
    """The one reader of a run's log inside this app, and its ring of recent frames."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.stream = keys.events(run_id)
        self.frames: list[Frame] = []
        self.base = 0  # sequence number of frames[0]
        self.index: dict[str, int] = {}  # event id -> sequence number (start position: -1)
        self.finished = False  # the run has ended: nothing is appended after the last event
        self.error: BaseException | None = None
        self.subscribers = 0
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ the reader
    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("reading the log of run %s failed: %s", self.run_id, exc)
            self.error = exc
            self._notify()

    async def _run(self) -> None:
        # Start at the end: the ring is for streams that keep up; the past is in the store.
        last = await self.store.last_id(self.stream)
        self.index[last] = -1
        self.finished = await self._record_finished()
        self._notify()
        while True:
            entries = await self.store.read(self.stream, last, count=READ_BATCH, block_s=IDLE_CHECK_S)
            if not entries:
                if not self.finished and await self._record_finished():
                    self.finished = True
                    self._notify()
                continue
            for entry in entries:
                frame = to_frame(entry)
                self.index[frame.id] = self.base + len(self.frames)
                self.frames.append(frame)
                if frame.finished:
                    self.finished = True
            last = entries[-1].id
            if len(self.frames) > 2 * RING_FRAMES:
                dropped, self.frames = self.frames[:RING_FRAMES], self.frames[RING_FRAMES:]
                self.base += RING_FRAMES
                self.index = {f.id: self.base + n for n, f in enumerate(self.frames)}
                del dropped
            self._notify()

    async def _record_finished(self) -> bool:
        found = await self.store.get(keys.run_record(self.run_id))
        if found is None:
            return False
        try:
            return RunRecord.model_validate_json(found.value).status.finished
        except ValueError:
            return False

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # ------------------------------------------------------------------ the streams
    def _from_ring(self, cursor: Cursor) -> list[Frame] | None:
        """Frames after ``cursor`` from the ring, or None when the cursor is not in it."""
        if cursor.seq is None:
            cursor.seq = self.index.get(cursor.id)
            if cursor.seq is None:
                return None
        start = cursor.seq + 1 - self.base
        if start < 0:  # fell more than the ring behind
            cursor.seq = None
            return None
        frames = self.frames[start:]
        if frames:
            cursor.seq += len(frames)
            cursor.id = frames[-1].id
        return frames

    async def next_batch(self, cursor: Cursor, timeout_s: float) -> Batch:
        """The events after ``cursor`` (advancing it), waiting up to ``timeout_s`` for some."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if self.error is not None:
                raise StoreError(f"cannot read the log of run {self.run_id}: {self.error}")
            changed = self._changed  # taken before looking, so no wake-up is lost in between
            frames = self._from_ring(cursor)
            if frames is None:
                entries = await self.store.read(self.stream, cursor.id, count=READ_BATCH)
                if entries:
                    frames = [to_frame(entry) for entry in entries]
                    cursor.id = frames[-1].id
                    cursor.seq = None  # look it up in the ring next time
                    return Batch(frames, complete=False)
            elif frames:
                return Batch(frames, complete=False)
            if self.finished:
                return Batch([], complete=True)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return Batch([], complete=False)
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return Batch([], complete=False)


class Tails:
    """The ``RunTail`` of each run that has open streams; a tail stops with its last stream."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._tails: dict[str, tuple[RunTail, asyncio.Task[None]]] = {}

    @contextlib.asynccontextmanager
    async def subscribe(self, run_id: str) -> AsyncIterator[RunTail]:
        found = self._tails.get(run_id)
        if found is None or found[0].error is not None:
            tail = RunTail(self.store, run_id)
            found = (tail, asyncio.create_task(tail.run(), name=f"maos-sse-tail-{run_id}"))
            self._tails[run_id] = found
        tail, task = found
        tail.subscribers += 1
        try:
            yield tail
        finally:
            tail.subscribers -= 1
            if tail.subscribers == 0 and self._tails.get(run_id) == found:
                del self._tails[run_id]
                task.cancel()
                await asyncio.wait([task])

    async def close(self) -> None:
        tasks = [task for _, task in self._tails.values()]
        self._tails.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


async def _first_of(*coros: Coroutine[Any, Any, object]) -> None:
    """Run ``coros`` until the first returns; cancel and await the rest; re-raise its error."""
    tasks = [asyncio.create_task(coro) for coro in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    for task in done:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


async def _bad_request(detail: str, scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse({"error": "bad_request", "detail": detail}, 400)(scope, receive, send)


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class EventStream:
    """The ASGI endpoint ``/api/runs/{run_id}/events``."""

    def __init__(self, tails: Tails, closing: asyncio.Event, *, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.tails = tails
        self.closing = closing
        self.heartbeat_s = heartbeat_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        run_id: str = scope["path_params"]["run_id"]
        header = request.headers.get("last-event-id")
        name = "Last-Event-ID" if header else "after"
        after = header or request.query_params.get("after") or "0"
        try:
            # Strict: ASCII digits within 64 bits, so that no huge number reaches the store
            # (SQLite's OverflowError), then a read that the store itself accepts the id.
            check_stream_id(after, name)
            await self.tails.store.read(keys.events(run_id), after, count=1)
        except NumberError as exc:
            return await _bad_request(str(exc), scope, receive, send)
        except StoreUnavailable as exc:
            response = JSONResponse({"error": "unavailable", "detail": str(exc)}, 503)
            return await response(scope, receive, send)
        except StoreError as exc:  # e.g. a Redis id given to a SQLite store
            return await _bad_request(f"{name}: {exc}", scope, receive, send)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": RETRY, "more_body": True})
        if self.closing.is_set():
            return await self._end(send)
        async with self.tails.subscribe(run_id) as tail:
            await _first_of(
                self._pump(tail, Cursor(after), send), _until_disconnect(receive), self.closing.wait()
            )
        await self._end(send)

    async def _pump(self, tail: RunTail, cursor: Cursor, send: Send) -> None:
        while True:
            try:
                batch = await tail.next_batch(cursor, self.heartbeat_s)
            except StoreError as exc:
                log.warning("event stream of run %s stopped: %s", tail.run_id, exc)
                return
            if batch.frames:
                body = b"".join(frame.data for frame in batch.frames)
                if any(frame.finished for frame in batch.frames):
                    await send({"type": "http.response.body", "body": body + END, "more_body": True})
                    return
                await send({"type": "http.response.body", "body": body, "more_body": True})
            elif batch.complete:
                await send({"type": "http.response.body", "body": END, "more_body": True})
                return
            else:
                await send({"type": "http.response.body", "body": HEARTBEAT, "more_body": True})

    @staticmethod
    async def _end(send: Send) -> None:
        last: Message = {"type": "http.response.body", "body": b"", "more_body": False}
        with contextlib.suppress(OSError):  # the client may be gone already
            await send(last)
