"""A run's log is store contents: an entry anyone with the store could have written. The
metrics observer (hooked into ``maos run``'s orchestrator and the dashboard) never raises on
one; the reducer records it as rejected."""

from __future__ import annotations

import json

from maos.eventlog import EventLog
from maos.events import EventUnreadable, RunStarted, apply
from maos.metrics import MetricsObserver
from maos.model import AgentSpec, Plan, RunConfig, RunState, TaskSpec, TaskState
from maos.store import keys
from maos.store.base import Store
from maos.web.snapshot import run_snapshot

HOSTILE = [
    {"type": "messages_read", "agent_id": "x", "count": -5},  # a counter cannot go down
    {"type": "resource_wait", "task_id": "a", "resources": {"\u0000" * 70: -1}},
    {"type": "deadlock_found", "cycle": [], "victim": "a", "action": "fail_task"},
    {"type": "task_waiting", "agent_id": "x", "task": "a", "on": "ghost"},
    {"type": "task_stalled", "task_id": "a", "reason": "x", "timeout_s": -1},
]


async def test_hostile_entries_are_rejected_and_the_metrics_go_on(sqlite_store: Store) -> None:
    log = EventLog(sqlite_store, "hostile")
    plan = Plan(name="p", tasks=(TaskSpec(id="a", command="true"),))
    await log.append(
        RunStarted(run_id="hostile", plan=plan, config=RunConfig(workdir="."), agents=(AgentSpec(id="x"),))
    )
    for record in HOSTILE:
        await sqlite_store.append(keys.events("hostile"), json.dumps(record).encode())
    observer = MetricsObserver()
    state = RunState()
    async for event_id, event in log.iterate():
        apply(state, event, event_id)
        observer.observe(event_id, event, state)
    assert state.rejected == len(HOSTILE)
    received = observer.registry.get_sample_value("maos_messages_total", {"direction": "received"})
    assert received == 0


async def test_an_entry_at_a_time_that_is_not_finite_is_unreadable(sqlite_store: Store) -> None:
    # Times are added to (deadlines, delays after a success) and bucketed by the second
    # (the dashboard's throughput): 1e400 is infinity, and int(inf) raises.
    log = EventLog(sqlite_store, "times")
    plan = Plan(name="p", tasks=(TaskSpec(id="a", command="true", deadline_s=5),))
    await log.append(
        RunStarted(run_id="times", plan=plan, config=RunConfig(workdir="."), agents=(AgentSpec(id="x"),))
    )
    output = '{"type": "agent_output", "task_id": "a", "agent_id": "x", "stream": "stdout", "text": "hi", '
    output += '"ts": %s}'
    for ts in ("1e400", "-1e400", "NaN"):
        await sqlite_store.append(keys.events("times"), (output % ts).encode())
        await sqlite_store.append(
            keys.events("times"), f'{{"type": "task_ready", "task_id": "a", "ts": {ts}}}'.encode()
        )
    snapshot = await run_snapshot(sqlite_store, "times")  # the dashboard's /api/runs/<id>/state
    assert snapshot is not None
    state = await log.replay(RunState())
    assert state.rejected == 6
    assert state.tasks["a"].state is TaskState.PENDING


NOT_FINITE = ("NaN", "Infinity", "-Infinity", "1e308", "-1")
"""Numbers that are no duration, time, score or amount; Python's json reads the first three."""


def _numbers_entries() -> list[str]:
    common = '"task_id": "a", "agent_id": "x", "attempt": 1'
    entries = []
    for n in NOT_FINITE:
        entries += [
            f'{{"type": "task_succeeded", {common}, "duration_s": {n}}}',
            f'{{"type": "task_failed", {common}, "reason": "r", "duration_s": {n}}}',
            f'{{"type": "task_failed", {common}, "reason": "r", "usage": {{"cost_usd": {n}}}}}',
            f'{{"type": "agent_stats", {common}, "pid": 1, "cpu_percent": {n}, "rss_bytes": 1, '
            f'"processes": 1, "idle_s": 0}}',
            f'{{"type": "agent_stats", {common}, "pid": 1, "cpu_percent": 1, "rss_bytes": 1, '
            f'"processes": 1, "idle_s": {n}}}',
            f'{{"type": "task_retried", "task_id": "a", "retry_at": {n}, "delay_s": 1}}',
            f'{{"type": "task_retried", "task_id": "a", "retry_at": 1, "delay_s": {n}}}',
        ]
        if n.endswith(("NaN", "Infinity")):
            entries.append(f'{{"type": "task_assigned", {common}, "score": {n}}}')
    entries += [f'{{"type": "task_failed", {common}, "reason": "r", "usage": {{"output_tokens": -1}}}}']
    # Times must also be shown as a clock time (time.localtime) and a date (datetime).
    entries += [f'{{"type": "task_ready", "task_id": "a", "ts": {ts}}}' for ts in ("1e308", "-1e12", "1e15")]
    return entries


async def test_numbers_that_are_no_measure_are_unreadable(sqlite_store: Store) -> None:
    # NaN passed the event models (pydantic takes it unless told not to): durations of NaN
    # and 1e308 s, costs of -inf reached the report, the dashboard's JSON and /metrics.
    log = EventLog(sqlite_store, "numbers")
    plan = Plan(name="p", tasks=(TaskSpec(id="a", command="true"),))
    await log.append(
        RunStarted(run_id="numbers", plan=plan, config=RunConfig(workdir="."), agents=(AgentSpec(id="x"),))
    )
    entries = _numbers_entries()
    for entry in entries:
        await sqlite_store.append(keys.events("numbers"), entry.encode())
    observer = MetricsObserver()
    state = RunState()
    unreadable = []
    async for event_id, event in log.iterate():
        apply(state, event, event_id)
        observer.observe(event_id, event, state)
        if isinstance(event, EventUnreadable):
            unreadable.append(event_id)
    assert len(unreadable) == len(entries)
    snapshot = await run_snapshot(sqlite_store, "numbers")
    json.dumps(snapshot, allow_nan=False)  # what the dashboard's JSON responses require
    assert "NaN" not in observer.render().decode()


def test_an_unreadable_entry_says_what_is_wrong_in_a_few_words() -> None:
    """What ``maos logs`` and ``maos status`` show for an entry that is no event: the field
    and why, not pydantic's report of every event type it tried."""
    from maos.eventlog import decode
    from maos.store.base import Entry

    said = {
        record: decode(Entry("1-0", record, 0)).error
        for record in (
            b'{"type": "task_started", "task_id": "a", "attempt": 1}',
            b'{"type": "bogus"}',
            b"{}",
            b"[1]",
            b"\xff\xfe",
        )
    }
    assert list(said.values()) == [
        "field 'agent_id': Field required",
        "unknown event type 'bogus'",
        "no event 'type'",
        "not a JSON object",
        "not JSON: expected value at line 1 column 1",
    ]
