"""The reducer (``maos.events.apply``) against logs that hold anything (issue 17, ADR 0011).

An event that does not apply is rejected in one place: ``apply`` records it in
``state.rejections`` and nothing else of the state changes. No sequence of events, in any
order, makes the reducer or a reader of the log (``maos status``, the dashboard, the metrics,
the orchestrator's views) fail.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maos.errors import RunNotFound
from maos.eventlog import EventLog
from maos.events import (
    AgentLost,
    AgentOutput,
    AgentStats,
    DeadlockFound,
    Event,
    EventUnreadable,
    ResourceWait,
    RunCancelling,
    RunDraining,
    RunFinished,
    RunRestored,
    RunResumed,
    RunRetried,
    RunStarted,
    TaskAdded,
    TaskAssigned,
    TaskCancelled,
    TaskDeadlinePassed,
    TaskFailed,
    TaskReady,
    TaskRequeued,
    TaskRetried,
    TaskSkipped,
    TaskStalled,
    TaskStarted,
    TaskSucceeded,
    TaskWaiting,
    TaskWarning,
    apply,
    fold,
)
from maos.metrics import MetricsObserver
from maos.model import (
    MAX_REJECTIONS,
    AgentSpec,
    Plan,
    RunConfig,
    RunState,
    RunStatus,
    TaskRun,
    TaskSpec,
    TaskState,
)
from maos.plan import analyze_plan
from maos.store import open_store
from maos.summary import run_summary
from maos.tracking import RunTracker
from maos.web.snapshot import run_snapshot, task_transcript

BOOKKEEPING = {"event_count", "last_event_id", "rejected", "stale_reports", "rejections"}
"""What a rejected event changes: the counts, the position in the log, the rejections."""


def _spec(task_id: str, *deps: str) -> TaskSpec:
    return TaskSpec(id=task_id, command="true", depends_on=deps)


PLAN = Plan(name="p", tasks=(_spec("a"), _spec("b", "a"), _spec("c")))


def _started(plan: Plan = PLAN, run_id: str = "r") -> RunStarted:
    return RunStarted(run_id=run_id, plan=plan, config=RunConfig(workdir="."), agents=(AgentSpec(id="x"),))


def _done(task_id: str, attempt: int = 1) -> TaskSucceeded:
    return TaskSucceeded(task_id=task_id, agent_id="x", attempt=attempt, duration_s=0.1)


def _attempt(task_id: str, attempt: int = 1) -> list[Event]:
    """``task_id`` made READY, assigned as ``attempt`` and started."""
    return [
        TaskReady(task_id=task_id),
        TaskAssigned(task_id=task_id, agent_id="x", attempt=attempt),
        TaskStarted(task_id=task_id, agent_id="x", attempt=attempt, pid=1),
    ]


def _restored(state: RunState, run_id: str = "r") -> RunRestored:
    return RunRestored(
        run_id=run_id, checkpoint_id="c1", covers_events=0, lost="", state_json=state.model_dump_json()
    )


def _fold(events: list[Event]) -> RunState:
    return fold((str(n), event) for n, event in enumerate(events, 1))


def _view(state: RunState) -> dict[str, Any]:
    return state.model_dump(mode="json", exclude=BOOKKEEPING)


# (what the log holds before, the event, what the rejection says, whether it is stale)
REJECTED: dict[str, tuple[list[Event], Event, str, bool]] = {
    "an event before run_started": ([], TaskReady(task_id="a"), "unknown task 'a'", False),
    "an added task before run_started": (
        [],
        TaskAdded(request_id="q", task=_spec("d")),
        "before run_started",
        False,
    ),
    "an event for an unknown task": ([_started()], TaskReady(task_id="ghost"), "unknown task 'ghost'", False),
    "a second run_started": ([_started()], _started(run_id="other"), "has started already", False),
    "finishing a task that never started": ([_started()], _done("a"), "not the current attempt", True),
    "finishing a task that is only ready": (
        [_started(), TaskReady(task_id="a")],
        _done("a", attempt=0),
        "already ended (the task is ready)",
        True,
    ),
    "a duplicate success": ([_started(), *_attempt("a"), _done("a")], _done("a"), "already ended", True),
    "a report of an older attempt": (
        [
            _started(),
            *_attempt("a"),
            TaskRequeued(task_id="a", attempt=1, reason="lost"),
            TaskAssigned(task_id="a", agent_id="x", attempt=2),
        ],
        _done("a", attempt=1),
        "not the current attempt (2)",
        True,
    ),
    "an attempt number used again": (
        [_started(), *_attempt("a"), TaskRequeued(task_id="a", attempt=1, reason="lost")],
        TaskAssigned(task_id="a", agent_id="x", attempt=1),
        "was assigned before",
        False,
    ),
    "an assignment of a task that is not ready": (
        [_started()],
        TaskAssigned(task_id="a", agent_id="x", attempt=1),
        "pending -> assigned",
        False,
    ),
    "a start of a task that is not assigned": (
        [_started()],
        TaskStarted(task_id="a", agent_id="x", attempt=0, pid=1),
        "already ended (the task is pending)",
        True,
    ),
    "a skip of a task that succeeded": (
        [_started(), *_attempt("a"), _done("a")],
        TaskSkipped(task_id="a", because="x"),
        "succeeded -> skipped",
        False,
    ),
    "a retry time for a task that does not wait for one": (
        [_started()],
        TaskRetried(task_id="a", retry_at=0.0, delay_s=0.0),
        "in state pending",
        False,
    ),
    "a second run_finished": (
        [_started(), RunFinished(status=RunStatus.FAILED)],
        RunFinished(status=RunStatus.SUCCEEDED),
        "has finished already",
        False,
    ),
    "a resume of a finished run": (
        [_started(), RunFinished(status=RunStatus.FAILED)],
        RunResumed(owner="o"),
        "nothing to resume",
        False,
    ),
    "a run that ends while a task runs": (
        [_started(), *_attempt("a")],
        RunFinished(status=RunStatus.FAILED),
        "the run cannot end while task(s) 'a' run",
        False,
    ),
    "a run that succeeds before its tasks did": (
        [_started(), *_attempt("a"), _done("a")],
        RunFinished(status=RunStatus.SUCCEEDED),
        "cannot succeed while task(s) 'b', 'c' have not finished",
        False,
    ),
    "a retry of a running run": (
        [_started()],
        RunRetried(task_ids=("a",)),
        "while the run is running",
        False,
    ),
    "a retry of a task that succeeded": (
        [_started(), *_attempt("a"), _done("a"), RunFinished(status=RunStatus.FAILED)],
        RunRetried(task_ids=("a",)),
        "only failed, cancelled or skipped",
        False,
    ),
    "a retry of an unknown task": (
        [_started(), RunFinished(status=RunStatus.FAILED)],
        RunRetried(task_ids=("ghost",)),
        "unknown task 'ghost'",
        False,
    ),
    "a retry with a plan of other tasks": (
        [_started(), TaskSkipped(task_id="c", because="x"), RunFinished(status=RunStatus.FAILED)],
        RunRetried(task_ids=("c",), plan=Plan(name="p", tasks=(_spec("a"), _spec("b", "a"), _spec("z")))),
        "the plan's tasks are not the run's (they differ in c, z)",
        False,
    ),
    "a retry with a plan that has a cycle": (
        [_started(), TaskSkipped(task_id="c", because="x"), RunFinished(status=RunStatus.FAILED)],
        RunRetried(
            task_ids=("c",), plan=Plan(name="p", tasks=(_spec("a", "b"), _spec("b", "a"), _spec("c")))
        ),
        "dependency cycle",
        False,
    ),
    "an added task that exists": (
        [_started()],
        TaskAdded(request_id="q", task=_spec("a")),
        "exists already",
        False,
    ),
    "an added task that depends on an unknown task": (
        [_started()],
        TaskAdded(request_id="q", task=_spec("d", "ghost")),
        "depends_on names unknown task(s) ghost",
        False,
    ),
    "an added task that blocks an unknown task": (
        [_started()],
        TaskAdded(request_id="q", task=_spec("d"), blocks=("ghost",)),
        "blocks names unknown task(s) ghost",
        False,
    ),
    "an added task that closes a cycle": (
        [_started()],
        TaskAdded(request_id="q", task=_spec("d", "b"), blocks=("a",)),
        "would wait for 'a', which it blocks",
        False,
    ),
    "a lost agent that the run does not have": (
        [_started()],
        AgentLost(agent_id="nobody", reason="died"),
        "unknown agent",
        False,
    ),
    "a deadlock without a cycle": (
        [_started()],
        DeadlockFound(cycle=(), victim="a", action="fail_task"),
        "without a cycle",
        False,
    ),
    "a wait for an unknown task": (
        [_started()],
        TaskWaiting(agent_id="x", task="a", on="ghost"),
        "unknown task 'ghost'",
        False,
    ),
    "a restore of another run": (
        [_started()],
        _restored(_fold([_started(run_id="other")]), run_id="other"),
        "in the log of run r",
        False,
    ),
    "a restored state whose plan is not its tasks": (
        [_started()],
        _restored(RunState(run_id="r", plan=PLAN, tasks={"a": TaskRun()})),
        "the plan's tasks are not the run's (they differ in b, c)",
        False,
    ),
    "a restored state that does not decode": (
        [_started()],
        RunRestored(run_id="r", checkpoint_id="c1", covers_events=0, lost="", state_json="{"),
        "does not decode",
        False,
    ),
    "an unreadable entry": (
        [_started()],
        EventUnreadable(error="bad", size_bytes=3),
        "unreadable entry",
        False,
    ),
}


@pytest.mark.parametrize("case", REJECTED)
def test_an_event_that_does_not_apply_is_rejected_and_changes_nothing_else(case: str) -> None:
    before, event, reason, stale = REJECTED[case]
    state = _fold(before)
    assert state.rejected == 0
    view = _view(state)
    apply(state, event, "last")
    assert not state.applied
    assert (state.rejected, state.stale_reports) == (1, int(stale))
    rejection = state.rejections[-1]
    assert reason in rejection.reason
    assert (rejection.event_id, rejection.type, rejection.stale) == ("last", event.type, stale)
    assert _view(state) == view
    assert (state.event_count, state.last_event_id) == (len(before) + 1, "last")


@pytest.mark.parametrize(
    "plan",
    [
        Plan(name="cycle", tasks=(_spec("a", "b"), _spec("b", "a"))),
        Plan(name="twice", tasks=(_spec("a"), _spec("a"))),
        Plan(name="unknown", tasks=(_spec("a", "ghost"),)),
        Plan(name="itself", tasks=(_spec("a", "a"),)),
    ],
    ids=lambda plan: plan.name,
)
def test_a_run_whose_plan_no_reader_can_lay_out_never_starts(plan: Plan) -> None:
    state = _fold([_started(plan), TaskReady(task_id="a")])
    assert not state.run_id
    assert state.plan is None
    assert not state.tasks
    assert state.rejected == 2


def test_a_late_sample_of_an_ended_attempt_is_ignored_without_counting() -> None:
    """Stats, warnings and output of an attempt that ended arrive until its agent is reaped:
    they change nothing and are not worth a rejection each."""
    state = _fold([_started(), *_attempt("a"), _done("a")])
    view = _view(state)
    for event in (
        AgentStats(
            task_id="a", agent_id="x", attempt=1, pid=1, cpu_percent=1.0, rss_bytes=1, processes=1, idle_s=0
        ),
        TaskWarning(task_id="a", agent_id="x", attempt=1, text="denied"),
    ):
        apply(state, event, "late")
        assert not state.applied
    assert state.rejected == 0
    assert _view(state) == view


def test_an_added_task_may_block_tasks_that_do_not_lead_to_it() -> None:
    state = _fold([_started(), TaskAdded(request_id="q", task=_spec("d", "a"), blocks=("b", "c"))])
    assert state.applied
    assert state.plan is not None
    assert state.plan.task("b").depends_on == ("a", "d")
    assert set(state.tasks) == {"a", "b", "c", "d"}


def test_rejections_keep_the_newest_and_count_all() -> None:
    state = _fold([_started()])
    for n in range(MAX_REJECTIONS + 5):
        apply(state, TaskReady(task_id=f"ghost{n}"), str(n))
    assert state.rejected == MAX_REJECTIONS + 5
    assert len(state.rejections) == MAX_REJECTIONS
    assert state.rejections[0].event_id == "5"


# --------------------------------------------------------------------------- any log, fuzzed

_IDS = ("a", "b", "c")
_task_ids = st.sampled_from((*_IDS, "ghost"))
_attempts = st.integers(min_value=0, max_value=4)
_texts = st.sampled_from(["hi", "denied", ""])
_plans = st.builds(
    Plan,
    name=st.just("fuzz"),
    tasks=st.lists(
        st.builds(
            TaskSpec,
            id=_task_ids,
            command=st.just("true"),
            depends_on=st.lists(_task_ids, max_size=2).map(tuple),
            max_attempts=st.integers(min_value=1, max_value=2),
        ),
        max_size=4,
    ).map(tuple),
)
_states = st.builds(
    RunState,
    run_id=st.sampled_from(["r", "other"]),
    plan=st.none() | _plans,
    tasks=st.dictionaries(
        _task_ids,
        st.builds(TaskRun, state=st.sampled_from(list(TaskState)), attempts=_attempts),
        max_size=4,
    ),
    status=st.sampled_from(list(RunStatus)),
)
_events: st.SearchStrategy[Event] = st.one_of(
    st.just(_started(Plan(name="fuzz", tasks=(_spec("a"), _spec("b", "a"), _spec("c"))))),
    st.builds(_started, _plans),
    st.builds(TaskReady, task_id=_task_ids),
    st.builds(TaskAssigned, task_id=_task_ids, agent_id=st.just("x"), attempt=_attempts, score=st.just(1.0)),
    st.builds(TaskStarted, task_id=_task_ids, agent_id=st.just("x"), attempt=_attempts, pid=st.just(1)),
    st.builds(
        TaskSucceeded,
        task_id=_task_ids,
        agent_id=st.just("x"),
        attempt=_attempts,
        exit_code=st.just(0),
        duration_s=st.just(0.1),
    ),
    st.builds(
        TaskFailed,
        task_id=_task_ids,
        agent_id=st.just("x"),
        attempt=_attempts,
        reason=st.just("boom"),
        duration_s=st.just(0.1),
        final=st.booleans(),
    ),
    st.builds(TaskRequeued, task_id=_task_ids, attempt=_attempts, reason=st.just("lost")),
    st.builds(TaskRetried, task_id=_task_ids, retry_at=st.just(0.0), delay_s=st.just(0.0)),
    st.builds(TaskSkipped, task_id=_task_ids, because=st.just("dep")),
    st.builds(TaskCancelled, task_id=_task_ids, reason=st.just("cancel")),
    st.builds(
        TaskAdded,
        request_id=st.just("q"),
        task=st.builds(
            TaskSpec,
            id=st.sampled_from(["d", "e", *_IDS]),
            command=st.just("true"),
            depends_on=st.lists(st.sampled_from(["d", *_IDS]), max_size=2).map(tuple),
        ),
        blocks=st.lists(_task_ids, max_size=2).map(tuple),
    ),
    st.builds(AgentOutput, task_id=_task_ids, agent_id=st.just("x"), stream=st.just("stdout"), text=_texts),
    st.builds(TaskWarning, task_id=_task_ids, agent_id=st.just("x"), attempt=_attempts, text=_texts),
    st.builds(RunFinished, status=st.sampled_from(list(RunStatus))),
    st.builds(RunDraining, reason=st.just("budget")),
    st.builds(RunCancelling, reason=st.just("ctrl-c")),
    st.builds(RunResumed, owner=st.just("o")),
    st.builds(RunRetried, task_ids=st.lists(_task_ids, max_size=2).map(tuple), plan=st.none() | _plans),
    st.builds(_restored, _states, st.sampled_from(["r", "other"])),
    # waits, deadlines, deadlocks, stalls (issue 15): a log entry may say anything
    st.builds(TaskWaiting, agent_id=st.just("x"), task=_task_ids, attempt=_attempts, on=_task_ids),
    st.builds(
        TaskDeadlinePassed,
        task_id=_task_ids,
        deadline_at=st.just(0.0),
        action=st.sampled_from(["fail", "skip"]),
    ),
    st.builds(
        DeadlockFound,
        cycle=st.lists(_task_ids, max_size=3).map(tuple),
        victim=st.none() | _task_ids,
        action=st.sampled_from(["fail_task", "requeue_task", "fail_run"]),
    ),
    st.builds(ResourceWait, task_id=_task_ids, resources=st.just({"db": 1})),
    st.builds(TaskStalled, task_id=_task_ids, reason=st.just("no agent"), timeout_s=st.just(1.0)),
    st.builds(AgentLost, agent_id=st.sampled_from(["x", "nobody"]), reason=st.just("died")),
    st.builds(EventUnreadable, error=st.just("bad"), size_bytes=st.just(3)),
)


def _check_invariants(state: RunState) -> None:
    """What every reader relies on: the plan's tasks are the run's, and it can be laid out."""
    if state.plan is None:
        assert not state.tasks
        return
    assert sorted(spec.id for spec in state.plan.tasks) == sorted(state.tasks)
    analyze_plan(state.plan)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_events, max_size=40))
def test_no_event_sequence_makes_the_reducer_fail(events: list[Event]) -> None:
    state = RunState()
    tracker = RunTracker()
    metrics = MetricsObserver()
    restored = False  # a restore replaces the counts too (with the checkpoint's)
    for n, event in enumerate(events):
        view, rejected = _view(state), state.rejected
        apply(state, event, str(n))
        if not state.applied:
            assert _view(state) == view  # rejected or ignored: nothing but the bookkeeping changed
        elif isinstance(event, RunRestored):
            restored = True
        else:
            assert state.rejected == rejected
        _check_invariants(state)
        tracker.observe(event, state)
        metrics.observe(str(n), event, state)
        # completion counts come from task states, never from events
        assert tracker.terminal == sum(1 for task in state.tasks.values() if task.state.terminal)
        succeeded = [task for task in state.tasks.values() if task.state is TaskState.SUCCEEDED]
        assert all(task.attempts >= 1 for task in succeeded)
    if not restored:
        assert state.event_count == len(events)
        assert len(state.rejections) == min(state.rejected, MAX_REJECTIONS)
    run_summary(state)
    saved = RunState.model_validate_json(state.model_dump_json())  # what a checkpoint holds
    assert saved.model_dump() == state.model_dump()


_STORE_DIR = Path(tempfile.mkdtemp(prefix="maos-reducer-"))
_RUNS = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_events, max_size=25))
def test_no_log_makes_a_reader_fail(events: list[Event]) -> None:
    """``maos status`` (replay and summary), the dashboard's snapshot and transcript."""
    run_id = f"run-{next(_RUNS)}"

    async def read() -> None:
        store = await open_store(f"sqlite:///{_STORE_DIR / 'maos.db'}")
        try:
            log = EventLog(store, run_id)
            for event in events:
                await log.append(event)
            try:
                run_summary(await log.replay())
            except RunNotFound:
                assert not _fold(events).run_id
            snapshot = await run_snapshot(store, run_id)
            assert (snapshot is None) == (not _fold(events).run_id)
            for task_id in _IDS:
                await task_transcript(store, run_id, task_id)
        finally:
            await store.close()

    asyncio.run(read())


def test_an_entry_without_its_time_is_unreadable() -> None:
    """An entry written into the log without ``ts`` got the reader's clock: another time at
    every read, and an "interrupted since" that moved forward. It is not one MAOS wrote."""
    from maos.eventlog import decode
    from maos.events import EventUnreadable
    from maos.store.base import Entry

    timed = decode(Entry("1", b'{"ts": 1796288000.0, "type": "task_ready", "task_id": "a"}'))
    assert isinstance(timed, TaskReady)
    assert timed.ts == 1796288000.0
    untimed = decode(Entry("2", b'{"type": "task_ready", "task_id": "a"}'))
    assert isinstance(untimed, EventUnreadable)
    assert "no time" in untimed.error
