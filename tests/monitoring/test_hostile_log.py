"""A run's log is store contents: an entry anyone with the store could have written. The
metrics observer (hooked into ``maos run``'s orchestrator and the dashboard) never raises on
one; the reducer records it as rejected."""

from __future__ import annotations

import json

from maos.eventlog import EventLog
from maos.events import RunStarted, apply
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
