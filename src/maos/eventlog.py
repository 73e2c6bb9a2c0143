"""The event log of a run in the store: append, read, iterate, replay, follow.

Events are stored as JSON (``maos.events.event_to_json``) in the run's stream
(``store.keys.events``); ``decode`` turns a stored entry back into an event and never fails
(an entry it cannot read becomes ``EventUnreadable``, which the reducer records as
rejected). Folding is ``maos.events.apply``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from pydantic import ValidationError

from maos.errors import RunNotFound
from maos.events import Event, EventUnreadable, apply, event_from_json, event_to_json
from maos.model import RunState
from maos.store import keys
from maos.store.base import AppendOp, Entry, Store

__all__ = ["EventLog", "decode"]


def decode(entry: Entry) -> Event:
    """The entry's event; an entry that cannot be decoded becomes ``EventUnreadable``, which
    the reducer records as rejected, so that no store contents can make a reader fail."""
    try:
        return event_from_json(entry.record)
    except ValidationError as exc:  # a JSON object that is no event: say which field, and why
        problem = exc.errors()[0]
        kind, context = problem["type"], problem.get("ctx") or {}
        if kind == "union_tag_invalid":
            error = f"unknown event type {str(context.get('tag'))[:80]!r}"
        elif kind == "union_tag_not_found":
            error = "no event 'type'"
        elif kind in ("model_attributes_type", "dict_type"):
            error = "not a JSON object"
        elif kind == "json_invalid":
            error = f"not JSON: {context.get('error', problem['msg'])}"
        else:
            where = ".".join(str(part) for part in problem["loc"][1:] or problem["loc"]) or "event"
            error = f"field {where!r}: {problem['msg']}"
        return EventUnreadable(error=error[:300], size_bytes=len(entry.record))
    except (ValueError, RecursionError) as exc:
        error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return EventUnreadable(error=error[:300], size_bytes=len(entry.record))


class EventLog:
    """One run's event stream in the store."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.stream = keys.events(run_id)

    async def append(self, event: Event) -> str:
        """Append and return the event id; the event is durable when this returns."""
        return await self.store.append(self.stream, event_to_json(event))

    async def append_all(self, events: Sequence[Event]) -> list[str]:
        """Append ``events`` in one transaction (one round trip), in order; their ids. All are
        durable when this returns, or none was written."""
        if len(events) == 1:
            return [await self.append(events[0])]
        result = await self.store.transact([AppendOp(self.stream, event_to_json(event)) for event in events])
        return list(result.ids)

    async def read(
        self, after: str = "0", *, count: int = 1000, block_s: float | None = None
    ) -> list[tuple[str, Event]]:
        entries = await self.store.read(self.stream, after, count=count, block_s=block_s)
        return [(entry.id, decode(entry)) for entry in entries]

    async def iterate(self, after: str = "0", *, batch: int = 5000) -> AsyncIterator[tuple[str, Event]]:
        """Every event after ``after`` that exists now, oldest first."""
        async for entry in self.entries(after, batch=batch):
            yield entry.id, decode(entry)

    async def entries(self, after: str = "0", *, batch: int = 5000) -> AsyncIterator[Entry]:
        """``iterate``'s entries, not decoded: for a reader that skips most of them by their
        bytes before it pays for decoding (the dashboard's transcript of one task)."""
        while True:
            chunk = await self.store.read(self.stream, after, count=batch)
            for entry in chunk:
                yield entry
            if len(chunk) < batch:
                return
            after = chunk[-1].id

    async def replay(self, state: RunState | None = None) -> RunState:
        """Fold the whole log (or the part after ``state.last_event_id``)."""
        result = state if state is not None else RunState()
        async for event_id, event in self.iterate(result.last_event_id):
            apply(result, event, event_id)
        if not result.run_id:
            raise RunNotFound(f"no run {self.run_id!r} in store {self.store.url}")
        return result

    async def follow(self, state: RunState, *, poll_s: float = 1.0) -> AsyncIterator[tuple[str, Event]]:
        """Every event after ``state.last_event_id``, then new ones as they are appended, each
        folded into ``state`` (``apply``) before it is yielded, until the fold says the run has
        ended: a ``run_finished`` the reducer refuses (one written while a task runs) does not
        end it."""
        while True:
            for event_id, event in await self.read(state.last_event_id, block_s=poll_s):
                apply(state, event, event_id)
                yield event_id, event
                if state.status.finished:
                    return
