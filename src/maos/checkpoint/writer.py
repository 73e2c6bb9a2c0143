"""The background checkpoint writer of a running orchestrator (see ``CheckpointWriter``)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from maos.checkpoint.checkpointer import Checkpointer
from maos.checkpoint.codec import (
    AgentSession,
    Checkpoint,
    CheckpointKind,
    Contents,
    full_contents,
    segment_contents,
)
from maos.errors import CheckpointError, MaosError
from maos.events import Event, fold
from maos.model import RunState

__all__ = ["SEGMENT_EVENTS", "SEGMENT_SPACING_S", "CheckpointWriter"]

log = logging.getLogger("maos.checkpoint.writer")

SEGMENT_EVENTS = frozenset({"run_started", "task_succeeded", "task_failed", "run_finished"})
"""Event types after which ``CheckpointWriter`` writes a segment."""
SEGMENT_SPACING_S = 0.2
"""Shortest time between two segments: the completions of a burst share one segment."""


def _copy_state(state: RunState) -> RunState:
    return RunState.model_validate_json(state.model_dump_json())


class CheckpointWriter:
    """Writes one run's checkpoints in the background, so scheduling never waits on them.

    The orchestrator calls ``observe(event_id, event, state)`` for every event it folds (it
    fits ``Orchestrator.hooks``); that costs one list append. Two lanes (tasks this writer
    owns) do the rest, each on worker threads:

    - the **segment lane** writes the events observed since the last checkpoint whenever an
      event in ``segment_on`` (task completions, run start and end) was observed, at most
      one segment per ``segment_spacing_s``: a completion after a quiet spell is written at
      once, those that follow within the spacing go together in the next segment (a chain
      of no-op tasks completes hundreds of times a second, and a segment costs two
      ``fsync`` calls); ``flush()`` does not wait for the spacing;
    - the **snapshot lane**, every ``checkpointer.every_s`` seconds, folds the new events
      into the writer's own copy of the state (so the orchestrator's state is never read
      from another thread) and writes a full snapshot, then applies retention.

    Coalescing: each lane has a pending flag, a queue of size one. A request while the lane is
    busy sets the flag; when the save ends, one more save covers everything observed until
    then. So at most one save per lane runs and at most one waits, whatever the event rate.

    Failures (storage down) are logged and counted, never raised into the run: the events
    stay buffered and the next save covers them. If more than ``max_backlog_events`` events
    wait for a segment, the backlog is left to the next full snapshot (a warning says so).

    ``close()`` stops the lanes and, by default, writes a final full snapshot. ``flush()``
    waits until everything observed so far is in a written checkpoint.
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        *,
        initial: RunState | None = None,
        agents: Callable[[], Mapping[str, AgentSession]] | None = None,
        segment_on: Collection[str] = SEGMENT_EVENTS,
        max_backlog_events: int = 100_000,
        segment_spacing_s: float = SEGMENT_SPACING_S,
        on_snapshot: Callable[[Checkpoint, float], Awaitable[None]] | None = None,
        store: Callable[[], Awaitable[Mapping[str, bytes]]] | None = None,
    ) -> None:
        self.checkpointer = checkpointer
        self._initial = initial
        self._agents = agents
        self._store = store  # the run's kv pairs, saved with each full snapshot
        self._on_snapshot = on_snapshot  # told of each full snapshot written, with its save time
        self._segment_on = frozenset(segment_on)
        self._max_backlog = max_backlog_events
        self._spacing_s = segment_spacing_s
        self._next_segment_at = 0.0  # loop time before which a segment waits (unless hurried)
        self._shadow = RunState()
        self._buffer: builtins.list[tuple[str, Event]] = []
        self._buffer_start = 0  # absolute event count of _buffer[0]
        self._count = 0  # events observed, counted like RunState.event_count
        self._seg_cursor = 0  # events before this are in a written checkpoint
        self._snap_cursor = 0  # events before this are folded into _shadow
        self._snap_written = -1  # event count of the last full snapshot written
        # Restorable prefix: events [0, _chain_end) are covered by checkpoints this writer wrote
        # that chain up (a full snapshot, then segments each starting inside what is covered).
        self._chain_end = 0
        self._unchained: builtins.list[tuple[int, int]] = []  # segments written past a gap
        self._want_segment = asyncio.Event()
        self._want_snapshot = asyncio.Event()
        self._hurry = asyncio.Event()  # a flush() or close() waits: no spacing
        self._progress = asyncio.Condition()
        self._lanes: builtins.list[asyncio.Task[None]] = []
        self._timer: asyncio.Task[None] | None = None
        self._state = "new"  # new -> running -> closed
        self._broken: str | None = None
        self.saved = {CheckpointKind.FULL: 0, CheckpointKind.SEGMENT: 0}
        self.failures = 0
        self.last_error: str | None = None
        self.last: Checkpoint | None = None

    async def __aenter__(self) -> CheckpointWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Copy the initial state (the caller must not change it meanwhile), start the lanes.
        A resumed run (initial state with events) gets a full snapshot at once."""
        if self._state != "new":
            raise CheckpointError("the checkpoint writer was already started")
        await self.checkpointer.prepare()
        if self._initial is not None:
            self._shadow = await asyncio.to_thread(_copy_state, self._initial)
            self._initial = None
        count = self._shadow.event_count
        self._buffer_start = self._count = self._seg_cursor = self._snap_cursor = count
        self._state = "running"
        name = self.checkpointer.run_id
        self._lanes = [
            asyncio.create_task(
                self._lane(self._want_segment, self._spaced_segment), name=f"segments {name}"
            ),
            asyncio.create_task(
                self._lane(self._want_snapshot, self._write_snapshot), name=f"snapshots {name}"
            ),
        ]
        self._timer = asyncio.create_task(self._ticker(), name=f"snapshot timer {name}")
        if count:
            self._want_snapshot.set()

    def observe(self, event_id: str, event: Event, state: RunState | None = None) -> None:
        """Record one event the run has folded, in log order. Never blocks, never raises."""
        if self._state != "running" or self._broken is not None:
            return
        self._buffer.append((event_id, event))
        self._count += 1
        if state is not None and state.event_count != self._count:
            self._disable(
                f"events were missed: the run's state has {state.event_count} events, the writer saw "
                f"{self._count}; call observe() for every event, starting right after start()"
            )
            return
        if event.type in self._segment_on:
            self._want_segment.set()

    @property
    def durable(self) -> int:
        """Event count up to which this writer's checkpoints can restore the run (a resumed
        run counts from its first full snapshot)."""
        return self._chain_end

    async def flush(self) -> None:
        """Wait until every event observed so far can be restored from checkpoints: a segment
        first, a full snapshot if that is not enough (a resumed run before its first one).

        Raises ``CheckpointError`` if a save failed meanwhile, or if the writer is closed or
        disabled first.
        """
        if self._state != "running":
            raise CheckpointError("the checkpoint writer is not running")
        target, failures = self._count, self.failures
        self._want_segment.set()
        self._hurry.set()
        async with self._progress:
            while self._chain_end < target:
                if self._broken is not None:
                    raise CheckpointError(f"checkpoints are disabled: {self._broken}")
                if self.failures > failures:
                    raise CheckpointError(f"checkpoint not written: {self.last_error}")
                if self._state != "running":
                    raise CheckpointError("the checkpoint writer was closed before the events were written")
                if self._seg_cursor >= target:  # segments hold them, but there is no base under them
                    self._want_snapshot.set()
                await self._progress.wait()

    async def close(self, *, final_snapshot: bool = True) -> None:
        """Stop the lanes (letting a save in progress finish), then write a final full
        snapshot (or, if that fails or is not wanted, a last segment)."""
        if self._state != "running":
            self._state = "closed"
            return
        self._state = "closing"
        tasks = [*self._lanes, *([self._timer] if self._timer is not None else [])]
        self._lanes, self._timer = [], None
        tasks[-1].cancel()  # the timer
        self._want_segment.set()
        self._hurry.set()
        self._want_snapshot.set()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)  # a save in progress finishes
            if final_snapshot:
                await self._write_snapshot()
            if self._chain_end < self._count:
                await self._write_segment()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._state = "closed"
            await self._notify()  # wake flush() callers

    # ------------------------------------------------------------------ internals
    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.checkpointer.every_s)
            self._want_snapshot.set()

    async def _spaced_segment(self) -> None:
        """A segment, once ``segment_spacing_s`` has passed since the previous one began."""
        loop = asyncio.get_running_loop()
        wait_s = self._next_segment_at - loop.time()
        if wait_s > 0 and not self._hurry.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._hurry.wait()
        self._hurry.clear()
        self._want_segment.clear()  # what was observed while waiting goes in this segment
        self._next_segment_at = loop.time() + self._spacing_s
        await self._write_segment()

    async def _lane(self, wanted: asyncio.Event, work: Callable[[], Any]) -> None:
        while self._state == "running":
            await wanted.wait()
            wanted.clear()
            if self._state != "running":
                return
            try:
                await work()
            except Exception:  # a bug, not a storage failure: keep the run going, say so loudly
                log.exception("checkpoint writer of run %s failed", self.checkpointer.run_id)

    def _sessions(self) -> dict[str, AgentSession]:
        if self._agents is None:
            return {}
        try:
            return dict(self._agents())
        except Exception:
            log.exception("the agent sessions callback failed; checkpoint written without them")
            return {}

    def _slice(self, start: int, end: int) -> builtins.list[tuple[str, Event]]:
        return self._buffer[start - self._buffer_start : end - self._buffer_start]

    async def _write_segment(self) -> None:
        start, end = self._seg_cursor, self._count
        if end <= start or self._broken is not None:
            await self._notify()
            return
        checkpointer, run_id = self.checkpointer, self.checkpointer.run_id
        checkpoint_id = checkpointer.new_id(CheckpointKind.SEGMENT)  # with the capture, see prune()
        created_at, sessions, events = checkpointer.clock(), self._sessions(), self._slice(start, end)
        checkpoint = await self._save(
            checkpoint_id,
            lambda: segment_contents(run_id, checkpoint_id, created_at, events, start, sessions),
        )
        if checkpoint is not None:
            self._seg_cursor = max(self._seg_cursor, end)
            self._saved(checkpoint, start, end)
        self._trim()
        await self._notify()

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def _store_pairs(self) -> Mapping[str, bytes] | None:
        """The run's kv pairs for a full snapshot; None (the snapshot goes without) when the
        store cannot be read: the state matters more than a copy of its data."""
        if self._store is None:
            return None
        try:
            return await self._store()
        except MaosError as exc:
            log.warning("run %s: checkpoint without the run's store data: %s", self.checkpointer.run_id, exc)
            return None

    async def _write_snapshot(self) -> None:
        start, end = self._snap_cursor, self._count
        if self._broken is not None or end in (0, self._snap_written):
            return  # nothing new (or nothing at all) since the last snapshot
        checkpointer, run_id = self.checkpointer, self.checkpointer.run_id
        checkpoint_id = checkpointer.new_id(CheckpointKind.FULL)  # with the capture, see prune()
        created_at = checkpointer.clock()
        sessions = self._sessions()
        shadow = self._shadow
        pairs = await self._store_pairs()
        try:
            await asyncio.to_thread(fold, self._slice(start, end), shadow)
        except Exception as exc:
            self._disable(f"the writer's copy of the state cannot follow the events: {exc}")
            await self._notify()
            return
        self._snap_cursor = end
        self._trim()
        save_started = time.monotonic()
        checkpoint = await self._save(
            checkpoint_id,
            lambda: full_contents(run_id, checkpoint_id, shadow, created_at, sessions, pairs),
        )
        if checkpoint is None:
            await self._notify()
            return
        self._snap_written = end
        self._seg_cursor = max(self._seg_cursor, end)
        self._saved(checkpoint, 0, end)
        if self._on_snapshot is not None:
            try:
                await self._on_snapshot(checkpoint, time.monotonic() - save_started)
            except MaosError as exc:
                log.warning("run %s: checkpoint %s not announced: %s", run_id, checkpoint.id, exc)
        self._trim()
        await self._notify()
        await checkpointer.prune_quietly()

    async def _save(self, checkpoint_id: str, build: Callable[[], Contents]) -> Checkpoint | None:
        """``Checkpointer.save``; None when it failed (counted and logged, never raised)."""
        try:
            return await self.checkpointer.save(checkpoint_id, build)
        except CheckpointError as exc:
            self._failed(exc)
            return None

    def _saved(self, checkpoint: Checkpoint, start: int, end: int) -> None:
        """Count a written checkpoint covering events [start, end) and extend the chain."""
        self.saved[checkpoint.kind] += 1
        self.last = checkpoint
        self._unchained.append((start, end))
        self._unchained.sort()
        while self._unchained and self._unchained[0][0] <= self._chain_end:
            self._chain_end = max(self._chain_end, self._unchained.pop(0)[1])
        del self._unchained[:-1000]  # bounded while a gap lasts; the next full snapshot closes it

    def _failed(self, exc: MaosError) -> None:
        self.failures += 1
        self.last_error = str(exc)
        log.warning("run %s: %s (will retry with the next checkpoint)", self.checkpointer.run_id, exc)

    def _disable(self, reason: str) -> None:
        if self._broken is None:
            self._broken = reason
            self.last_error = reason
            log.error("run %s: checkpoints disabled: %s", self.checkpointer.run_id, reason)
        self._buffer.clear()
        self._buffer_start = self._count
        self._want_segment.set()  # the lane's next pass wakes flush() callers
        self._hurry.set()

    def _trim(self) -> None:
        if self._broken is not None:
            return
        backlog = self._count - self._seg_cursor
        if backlog > self._max_backlog:
            self._seg_cursor = max(self._seg_cursor, self._snap_cursor, self._count - self._max_backlog)
            log.warning(
                "run %s: %d events wait for a segment (limit %d); events up to count %d are left to the "
                "next full snapshot",
                self.checkpointer.run_id,
                backlog,
                self._max_backlog,
                self._seg_cursor,
            )
        keep_from = min(self._seg_cursor, self._snap_cursor)
        drop = keep_from - self._buffer_start
        if drop > 0:
            del self._buffer[:drop]
            self._buffer_start = keep_from
