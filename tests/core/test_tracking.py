"""The orchestrator's incremental views agree with a rebuild from the state."""

from __future__ import annotations

from pathlib import Path

from maos.eventlog import EventLog
from maos.events import apply
from maos.model import Plan, RunConfig, RunState, TaskSpec
from maos.orchestrator import Orchestrator
from maos.store.base import Store
from maos.tracking import RunTracker


async def test_observing_the_log_equals_rebuilding_from_the_state(
    sqlite_store: Store, tmp_path: Path
) -> None:
    plan = Plan(
        name="views",
        tasks=(
            TaskSpec(id="a", command="true"),
            TaskSpec(id="b", command="exit 1", max_attempts=2),
            TaskSpec(id="c", depends_on=("a",), command="true"),
            TaskSpec(id="d", depends_on=("b",), command="true"),
        ),
    )
    config = RunConfig(agents=2, workdir=str(tmp_path), retry_base_s=0.01)
    orchestrator = Orchestrator(sqlite_store, plan, config)
    await orchestrator.run()
    state = RunState()
    observed = RunTracker()
    async for event_id, event in EventLog(sqlite_store, orchestrator.run_id).iterate():
        apply(state, event, event_id)
        observed.observe(event, state)
        rebuilt = RunTracker()
        rebuilt.rebuild(state)
        assert (observed.busy, observed.ready, observed.retry_waiting, observed.terminal) == (
            rebuilt.busy,
            rebuilt.ready,
            rebuilt.retry_waiting,
            rebuilt.terminal,
        ), event.type
    assert observed.terminal == 4


def test_a_rebuilt_tracker_has_the_plan_indexed_again() -> None:
    """A state rebuilt from a checkpoint or a log may hold another plan (tasks added, or lost
    with the log) than the one the orchestrator indexed; its ready queue is keyed by that
    index too, so both are made again."""
    tracker = RunTracker()
    tracker.rebuild(RunState())
    assert tracker.plan_changed
