"""History of role outcomes in the store, and the scheduler following it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from maos import scheduler
from maos.errors import StoreDataError
from maos.eventlog import EventLog
from maos.events import (
    Event,
    RunFinished,
    RunRestored,
    RunStarted,
    TaskAssigned,
    TaskFailed,
    TaskReady,
    TaskRequeued,
    TaskRetried,
    TaskStarted,
    TaskSucceeded,
    apply,
)
from maos.history import (
    Attempt,
    attempts_from_state,
    load_history,
    load_record,
    merge_attempts,
    record_outcomes,
    summary_rows,
)
from maos.model import AgentSpec, Plan, RunConfig, RunState, RunStatus, TaskRun, TaskSpec, TaskState
from maos.store import keys, open_store
from maos.store.base import CasResult, Store

CODER = AgentSpec(id="agent-1", role="coder")
REVIEWER = AgentSpec(id="agent-2", role="reviewer")
AGENTS = (CODER, REVIEWER)

# One task's attempts: (agent, succeeded, duration_s), in order.
Script = dict[str, list[tuple[AgentSpec, bool, float]]]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path / 'maos.db'}")
    try:
        yield opened
    finally:
        await opened.close()


def run_events(run_id: str, script: Script, *, kind: str = "review") -> list[Event]:
    """A real event sequence for ``script``: every task ready, assigned, started, and ending
    as scripted, with a retry between attempts; the run ends when all tasks have."""
    plan = Plan(
        name=run_id,
        tasks=tuple(
            TaskSpec(id=task_id, kind=kind, command="true", max_attempts=len(attempts))
            for task_id, attempts in script.items()
        ),
    )
    events: list[Event] = [
        RunStarted(run_id=run_id, plan=plan, config=RunConfig(workdir="/tmp"), agents=AGENTS)
    ]
    all_ok = True
    for task_id, attempts in script.items():
        events.append(TaskReady(task_id=task_id))
        for number, (agent, succeeded, duration_s) in enumerate(attempts, start=1):
            events += [
                TaskAssigned(task_id=task_id, agent_id=agent.id, attempt=number),
                TaskStarted(task_id=task_id, agent_id=agent.id, attempt=number, pid=4242),
            ]
            if succeeded:
                events.append(
                    TaskSucceeded(task_id=task_id, agent_id=agent.id, attempt=number, duration_s=duration_s)
                )
                break
            events.append(
                TaskFailed(
                    task_id=task_id, agent_id=agent.id, attempt=number, reason="exit 1", duration_s=duration_s
                )
            )
            if number < len(attempts):
                events += [
                    TaskRetried(task_id=task_id, retry_at=0.0, delay_s=0.0),
                    TaskReady(task_id=task_id),
                ]
            else:
                all_ok = False
    events.append(RunFinished(status=RunStatus.SUCCEEDED if all_ok else RunStatus.FAILED))
    return events


async def write_run(store: Store, events: Sequence[Event]) -> RunState:
    """Append ``events`` to the run's log and fold them with ``maos.events.apply``."""
    first = events[0]
    assert isinstance(first, RunStarted | RunRestored)
    log = EventLog(store, first.run_id)
    state = RunState()
    for event in events:
        apply(state, event, await log.append(event))
    assert state.status.finished
    return state


async def run(store: Store, run_id: str, script: Script, *, kind: str = "review") -> RunState:
    return await write_run(store, run_events(run_id, script, kind=kind))


def pick(history: scheduler.History, kind: str = "review") -> str:
    """The agent ``scheduler.decide`` gives a fresh ``kind`` task to, with both agents free."""
    plan = Plan(name="next", tasks=(TaskSpec(id="t", kind=kind, command="true"),))
    state = RunState(
        run_id="next",
        plan=plan,
        agents={agent.id: agent for agent in AGENTS},
        tasks={"t": TaskRun(state=TaskState.READY, ready_at=0.0)},
    )
    (choice,) = scheduler.decide(state, scheduler.PlanIndex.build(plan), AGENTS, history, limit=1)
    return choice.agent_id


# --------------------------------------------------------------------------- recording


async def test_record_from_a_real_run_and_reload(store: Store) -> None:
    assert await load_history(store) == scheduler.History()
    state = await run(
        store,
        "run-1",
        {
            "a": [(CODER, False, 2.0), (REVIEWER, True, 4.0)],
            "b": [(REVIEWER, True, 6.0)],
            "c": [(CODER, False, 1.0), (CODER, False, 3.0)],
        },
    )
    assert state.status is RunStatus.FAILED
    recorded = await record_outcomes(store, state)
    assert recorded == await load_history(store)
    assert recorded.get("reviewer", "review") == scheduler.Outcomes(
        role="reviewer", kind="review", successes=2, attempts=2, total_duration_s=10.0
    )
    assert recorded.get("coder", "review") == scheduler.Outcomes(
        role="coder", kind="review", successes=0, attempts=3, total_duration_s=6.0
    )
    assert (await load_record(store)).runs == ("run-1",)
    rows = summary_rows(recorded)
    assert rows[0] == {
        "role": "coder",
        "kind": "review",
        "attempts": 3,
        "successes": 0,
        "success_rate": 0.0,
        "mean_duration_s": 2.0,
        "history_score": 0.2,
    }


async def test_recording_a_run_twice_counts_it_once(store: Store) -> None:
    state = await run(store, "run-1", {"a": [(REVIEWER, True, 1.0)]})
    first = await record_outcomes(store, state)
    again = await record_outcomes(store, state)
    assert again == first == await load_history(store)
    assert first.get("reviewer", "review").attempts == 1
    second = await run(store, "run-2", {"a": [(REVIEWER, True, 1.0)]})
    assert (await record_outcomes(store, second)).get("reviewer", "review").attempts == 2
    assert (await record_outcomes(store, state)).get("reviewer", "review").attempts == 2
    assert (await load_record(store)).runs == ("run-1", "run-2")


async def test_history_persists_across_store_connections(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'maos.db'}"
    first = await open_store(url)
    try:
        await record_outcomes(first, await run(first, "run-1", {"a": [(CODER, True, 1.5)]}))
    finally:
        await first.close()
    second = await open_store(url)
    try:
        assert (await load_history(second)).get("coder", "review").successes == 1
    finally:
        await second.close()


async def test_requeued_and_stale_attempts_do_not_count(store: Store) -> None:
    plan = Plan(name="p", tasks=(TaskSpec(id="a", kind="review", command="true"),))
    events: list[Event] = [
        RunStarted(run_id="run-1", plan=plan, config=RunConfig(workdir="/tmp"), agents=AGENTS),
        TaskReady(task_id="a"),
        TaskAssigned(task_id="a", agent_id=CODER.id, attempt=1),
        TaskStarted(task_id="a", agent_id=CODER.id, attempt=1, pid=1),
        TaskRequeued(task_id="a", attempt=1, reason="orchestrator restarted"),
        TaskAssigned(task_id="a", agent_id=REVIEWER.id, attempt=2),
        TaskStarted(task_id="a", agent_id=REVIEWER.id, attempt=2, pid=2),
        # The first attempt's agent reports late: stale, ignored by the reducer and by history.
        TaskFailed(task_id="a", agent_id=CODER.id, attempt=1, reason="killed", duration_s=9.0),
        TaskSucceeded(task_id="a", agent_id=REVIEWER.id, attempt=2, duration_s=2.0),
        RunFinished(status=RunStatus.SUCCEEDED),
    ]
    history = await record_outcomes(store, await write_run(store, events))
    assert history.get("coder", "review").attempts == 0
    assert history.get("reviewer", "review").attempts == 1


async def test_without_a_log_the_run_state_is_used(store: Store) -> None:
    state = RunState()
    for event in run_events("elsewhere", {"a": [(CODER, False, 1.0), (REVIEWER, True, 3.0)]}):
        apply(state, event)  # folded, but never written to this store
    assert attempts_from_state(state) == [
        Attempt("reviewer", "review", False, 0.0),  # the state only knows the last agent
        Attempt("reviewer", "review", True, 3.0),
    ]
    history = await record_outcomes(store, state)
    assert history.get("reviewer", "review").attempts == 2


async def test_a_rebuilt_log_counts_what_its_checkpoint_knew(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """After a store lost the run's log, the new log starts with ``run_restored``: the
    checkpoint's state stands in for what the lost log told, and nothing is counted twice."""
    plan = Plan(
        name="p",
        tasks=(
            TaskSpec(id="a", kind="review", command="true"),
            TaskSpec(id="b", kind="review", command="true"),
        ),
    )
    before = RunState()
    for event in [
        RunStarted(run_id="run-r", plan=plan, config=RunConfig(workdir="/tmp"), agents=AGENTS),
        TaskReady(task_id="a"),
        TaskAssigned(task_id="a", agent_id=CODER.id, attempt=1),
        TaskStarted(task_id="a", agent_id=CODER.id, attempt=1, pid=1),
        TaskSucceeded(task_id="a", agent_id=CODER.id, attempt=1, duration_s=1.0),
        TaskReady(task_id="b"),
    ]:
        apply(before, event)
    events: list[Event] = [
        RunRestored(
            run_id="run-r",
            checkpoint_id="c",
            covers_events=5,
            lost="test",
            state_json=before.model_dump_json(),
        ),
        TaskAssigned(task_id="b", agent_id=REVIEWER.id, attempt=1),
        TaskStarted(task_id="b", agent_id=REVIEWER.id, attempt=1, pid=2),
        TaskSucceeded(task_id="b", agent_id=REVIEWER.id, attempt=1, duration_s=2.0),
        # a's success arriving again (a stale copy of the lost log's report) counts nothing
        TaskSucceeded(task_id="a", agent_id=CODER.id, attempt=1, duration_s=1.0),
        RunFinished(status=RunStatus.SUCCEEDED),
    ]
    with caplog.at_level("WARNING", logger="maos.history"):
        history = await record_outcomes(store, await write_run(store, events))
    assert "no event log" not in caplog.text
    assert history.get("coder", "review").attempts == 1
    assert history.get("reviewer", "review").attempts == 1


async def test_only_finished_runs_are_recorded(store: Store) -> None:
    events = run_events("run-1", {"a": [(CODER, True, 1.0)]})
    state = RunState()
    for event in events[:-1]:
        apply(state, event)
    with pytest.raises(ValueError, match="has not finished"):
        await record_outcomes(store, state)
    with pytest.raises(ValueError, match="no run id"):
        await record_outcomes(store, RunState(status=RunStatus.SUCCEEDED))


async def test_corrupt_history_is_an_error_not_a_reset(store: Store) -> None:
    await store.set(keys.HISTORY, b'{"format": 1, "history": {"outcomes": "nope"}}')
    with pytest.raises(StoreDataError, match="maos:history"):
        await load_history(store)


# --------------------------------------------------------------------------- concurrency


async def test_concurrent_recorders_both_land(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'maos.db'}"
    stores = [await open_store(url) for _ in range(4)]
    try:
        states = [
            await run(stores[0], f"run-{n}", {"a": [(REVIEWER, n % 2 == 0, 1.0)], "b": [(CODER, True, 2.0)]})
            for n in range(8)
        ]
        await asyncio.gather(
            *(record_outcomes(stores[n % len(stores)], state) for n, state in enumerate(states))
        )
        record = await load_record(stores[0])
        assert sorted(record.runs) == sorted(f"run-{n}" for n in range(8))
        assert record.history.get("reviewer", "review").attempts == 8
        assert record.history.get("reviewer", "review").successes == 4
        assert record.history.get("coder", "review").attempts == 8
    finally:
        for opened in stores:
            await opened.close()


class InterleavingStore:
    """Lets another orchestrator record its run just before this one's first write."""

    def __init__(self, inner: Store, other: RunState) -> None:
        self.inner = inner
        self.other: RunState | None = other
        self.failed_cas = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def cas(self, key: str, expected_version: int, value: bytes) -> CasResult:
        if self.other is not None:
            other, self.other = self.other, None
            await record_outcomes(self.inner, other)
        result = await self.inner.cas(key, expected_version, value)
        self.failed_cas += not result.ok
        return result


async def test_a_lost_compare_and_set_is_retried(store: Store) -> None:
    mine = await run(store, "mine", {"a": [(REVIEWER, True, 1.0)]})
    theirs = await run(store, "theirs", {"a": [(REVIEWER, False, 1.0)]})
    racing = InterleavingStore(store, theirs)
    history = await record_outcomes(racing, mine)  # type: ignore[arg-type]
    assert racing.failed_cas == 1
    assert history.get("reviewer", "review").attempts == 2
    assert (await load_record(store)).runs == ("theirs", "mine")


# --------------------------------------------------------------------------- acceptance


async def test_matching_follows_recorded_history(store: Store) -> None:
    """History changes after runs, and ``scheduler.decide`` follows it."""
    # No history: equal scores, the smaller agent id (the coder) gets the task.
    assert pick(await load_history(store)) == CODER.id

    # Run 1: the reviewer succeeds on review tasks where the coder fails.
    first = await run(
        store,
        "run-1",
        {
            "a": [(CODER, False, 1.0), (REVIEWER, True, 1.0)],
            "b": [(REVIEWER, True, 1.0)],
            "c": [(CODER, False, 1.0)],
        },
    )
    history = await record_outcomes(store, first)
    assert history.success_rate("reviewer", "review") == pytest.approx(3 / 4)
    assert history.success_rate("coder", "review") == pytest.approx(1 / 4)
    assert pick(await load_history(store)) == REVIEWER.id
    # History is per task kind: another kind still has no record, so the tie-break decides.
    assert pick(await load_history(store), kind="docs") == CODER.id

    # Run 2: the reviewer fails ten review attempts; the choice flips back to the coder.
    second = await run(store, "run-2", {f"t{n}": [(REVIEWER, False, 1.0)] * 2 for n in range(5)})
    history = await record_outcomes(store, second)
    assert history.success_rate("reviewer", "review") == pytest.approx(3 / 14)
    assert pick(await load_history(store)) == CODER.id
    parts = scheduler.fitness_parts(
        TaskSpec(id="t", kind="review", command="true"), REVIEWER, {}, await load_history(store)
    )
    assert parts.history == pytest.approx(3 / 14)


def test_merge_attempts_is_one_pass_of_history_record() -> None:
    attempts = [
        Attempt("coder", "build", True, 1.0),
        Attempt("coder", "build", False, 2.0),
        Attempt("reviewer", "review", True, 0.5),
    ]
    expected = scheduler.History()
    for item in attempts:
        expected = expected.record(item.role, item.kind, succeeded=item.succeeded, duration_s=item.duration_s)
    assert merge_attempts(scheduler.History(), attempts) == expected
    assert merge_attempts(expected, []) == expected


async def test_the_orchestrator_records_what_its_log_says(store: Store, tmp_path: Path) -> None:
    """The orchestrator that started a run counts its attempts as it reads the log, instead of
    reading the whole log again at the end: the same history either way, retries included."""
    from maos.history import _attempts_of_run
    from maos.orchestrator import Orchestrator

    flaky = "test -e flaked || { touch flaked; exit 1; }"
    plan = Plan(
        name="history",
        tasks=(
            TaskSpec(id="a", command=flaky, kind="build", max_attempts=3),
            TaskSpec(id="b", command="true", kind="build", depends_on=("a",)),
            TaskSpec(id="c", command="exit 3", kind="check", max_attempts=2),
        ),
    )
    config = RunConfig(agents=2, workdir=str(tmp_path), retry_base_s=0.01)
    state = await Orchestrator(store, plan, config).run()
    assert state.status is RunStatus.FAILED
    recorded = await load_history(store)
    from_log = merge_attempts(scheduler.History(), await _attempts_of_run(store, state))
    assert recorded == from_log
    assert sum(item.attempts for item in recorded.outcomes) == 5  # a: 2, b: 1, c: 2
    assert sum(item.successes for item in recorded.outcomes) == 2
