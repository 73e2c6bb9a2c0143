"""The run loop with real agent processes on the SQLite store."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from maos.errors import CycleError
from maos.eventlog import EventLog
from maos.events import TaskFailed, TaskRetried, TaskStarted, TaskSucceeded
from maos.model import Plan, RunConfig, RunStatus, TaskSpec, TaskState
from maos.orchestrator import Orchestrator
from maos.store import keys
from maos.store.base import Store


def plan_of(*tasks: TaskSpec, name: str = "t") -> Plan:
    return Plan(name=name, tasks=tasks)


def config(tmp_path: Path, agents: int = 4) -> RunConfig:
    return RunConfig(agents=agents, workdir=str(tmp_path), retry_base_s=0.05, retry_max_s=0.2, grace_s=1.0)


async def test_runs_a_dag_and_passes_parent_outputs(sqlite_store: Store, tmp_path: Path) -> None:
    plan = plan_of(
        TaskSpec(id="a", prompt="say a", command="cat; echo from-a"),
        TaskSpec(
            id="b", prompt="say b", command=["sh", "-c", 'echo from-b; echo "$MAOS_AGENT_ID" > agent-b']
        ),
        TaskSpec(
            id="c",
            depends_on=("a", "b"),
            command=[
                sys.executable,
                "-c",
                "import json,os; m=json.loads(os.environ['MAOS_INPUTS']);"
                "print(''.join(open(m[k]).read() for k in sorted(m)), end='')",
            ],
        ),
    )
    state = await Orchestrator(sqlite_store, plan, config(tmp_path)).run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert all(task.state is TaskState.SUCCEEDED for task in state.tasks.values())
    output = Path(state.tasks["c"].output_path).read_text()
    assert output == "say afrom-a\nfrom-b\n"
    # agents start in the run's directory
    assert (tmp_path / "agent-b").read_text().startswith("agent-")


async def test_child_of_fast_branch_starts_before_slow_sibling_finishes(
    sqlite_store: Store, tmp_path: Path
) -> None:
    plan = plan_of(
        TaskSpec(id="slow", command="sleep 2"),
        TaskSpec(id="fast", command="true"),
        TaskSpec(id="fast-child", depends_on=("fast",), command="true"),
    )
    orchestrator = Orchestrator(sqlite_store, plan, config(tmp_path))
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED
    events = [event async for _, event in EventLog(sqlite_store, orchestrator.run_id).iterate()]
    child_started = next(e.ts for e in events if isinstance(e, TaskStarted) and e.task_id == "fast-child")
    slow_done = next(e.ts for e in events if isinstance(e, TaskSucceeded) and e.task_id == "slow")
    assert child_started < slow_done
    child_done = next(e.ts for e in events if isinstance(e, TaskSucceeded) and e.task_id == "fast-child")
    assert child_done < slow_done


async def test_failure_retries_then_skips_dependents(sqlite_store: Store, tmp_path: Path) -> None:
    plan = plan_of(
        TaskSpec(id="flaky", command="echo boom >&2; exit 3", max_attempts=3),
        TaskSpec(id="after", depends_on=("flaky",), command="true"),
        TaskSpec(id="after-after", depends_on=("after",), command="true"),
        TaskSpec(id="unrelated", command="true"),
    )
    orchestrator = Orchestrator(sqlite_store, plan, config(tmp_path))
    state = await orchestrator.run()
    assert state.status is RunStatus.FAILED
    flaky = state.tasks["flaky"]
    assert flaky.state is TaskState.FAILED
    assert flaky.attempts == 3
    assert flaky.exit_code == 3
    assert "boom" in flaky.stderr_tail
    assert state.tasks["after"].state is TaskState.SKIPPED
    assert state.tasks["after-after"].state is TaskState.SKIPPED
    assert state.tasks["unrelated"].state is TaskState.SUCCEEDED
    assert "'flaky' failed after 3 attempt(s)" in state.summary
    assert "exit code 3" in state.summary
    assert "boom" in state.summary
    assert "after, after-after" in state.summary
    events = [event async for _, event in EventLog(sqlite_store, orchestrator.run_id).iterate()]
    assert sum(isinstance(e, TaskFailed) for e in events) == 3
    [dead] = await sqlite_store.read(keys.dead_tasks(orchestrator.run_id))
    record = json.loads(dead.record)
    assert (record["task_id"], record["attempts"], record["exit_code"]) == ("flaky", 3, 3)
    assert "boom" in record["stderr_tail"]
    delays = [e.delay_s for e in events if isinstance(e, TaskRetried)]
    assert len(delays) == 2
    assert all(0 < delay <= 0.2 for delay in delays)


async def test_flaky_task_succeeds_on_a_later_attempt(sqlite_store: Store, tmp_path: Path) -> None:
    marker = tmp_path / "tries"
    plan = plan_of(
        TaskSpec(id="flaky", command=f"echo x >> {marker}; [ $(wc -l < {marker}) -ge 2 ]", max_attempts=3),
    )
    state = await Orchestrator(sqlite_store, plan, config(tmp_path)).run()
    assert state.status is RunStatus.SUCCEEDED
    assert state.tasks["flaky"].attempts == 2


async def test_timeout_kills_the_whole_process_group(sqlite_store: Store, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    plan = plan_of(
        TaskSpec(id="hang", command=f"sleep 60 & echo $! > {pidfile}; wait", timeout_s=0.5, max_attempts=1),
    )
    state = await Orchestrator(sqlite_store, plan, config(tmp_path)).run()
    assert state.status is RunStatus.FAILED
    assert "timed out after 0.5s" in state.tasks["hang"].reason
    assert_dead(int(pidfile.read_text()))


async def test_a_plan_with_a_cycle_opens_no_run(sqlite_store: Store, tmp_path: Path) -> None:
    """The Python API checks the plan as the CLI does: a cycle is a PlanError before any write."""
    plan = plan_of(
        TaskSpec(id="a", command="true", depends_on=("b",)),
        TaskSpec(id="b", command="true", depends_on=("a",)),
    )
    orchestrator = Orchestrator(sqlite_store, plan, config(tmp_path))
    with pytest.raises(CycleError, match="dependency cycle a -> b -> a"):
        await orchestrator.run()
    assert await EventLog(sqlite_store, orchestrator.run_id).read("0") == []


async def test_replaying_the_log_gives_the_identical_state(sqlite_store: Store, tmp_path: Path) -> None:
    plan = plan_of(
        TaskSpec(id="a", command="echo a"),
        TaskSpec(id="b", command="exit 1", max_attempts=2),
        TaskSpec(id="c", depends_on=("a",), command="echo c"),
        TaskSpec(id="d", depends_on=("b",), command="echo d"),
    )
    orchestrator = Orchestrator(sqlite_store, plan, config(tmp_path))
    live = await orchestrator.run()
    replayed = await EventLog(sqlite_store, orchestrator.run_id).replay()
    assert replayed.model_dump() == live.model_dump()
    assert replayed == live


async def test_cancel_stops_every_agent_process(sqlite_store: Store, tmp_path: Path) -> None:
    plan = plan_of(
        *(
            TaskSpec(
                id=f"t{n}",
                command=f"sleep 60 & echo $! > {tmp_path}/t{n}.pid; echo $$ >> {tmp_path}/t{n}.pid; wait",
            )
            for n in range(4)
        ),
        TaskSpec(id="later", depends_on=("t0",), command="true"),
    )
    orchestrator = Orchestrator(sqlite_store, plan, config(tmp_path))
    running = asyncio.create_task(orchestrator.run())
    await wait_for(
        lambda: (
            len(list(tmp_path.glob("*.pid"))) == 4
            and all(len(p.read_text().split()) == 2 for p in tmp_path.glob("*.pid"))
        )
    )
    orchestrator.request_cancel()
    state = await running
    assert state.status is RunStatus.CANCELLED
    assert {task.state for task in state.tasks.values()} == {TaskState.CANCELLED}
    for pidfile in tmp_path.glob("*.pid"):
        for pid in pidfile.read_text().split():
            assert_dead(int(pid))


async def test_drain_lets_running_tasks_finish_and_starts_nothing_new(
    sqlite_store: Store, tmp_path: Path
) -> None:
    plan = plan_of(
        TaskSpec(id="running", command=f"touch {tmp_path}/started; sleep 0.5; echo done"),
        TaskSpec(id="next", depends_on=("running",), command="true"),
    )
    orchestrator = Orchestrator(sqlite_store, plan, config(tmp_path))
    running = asyncio.create_task(orchestrator.run())
    await wait_for((tmp_path / "started").exists)
    orchestrator.request_drain()
    state = await running
    assert state.status is RunStatus.CANCELLED
    assert state.tasks["running"].state is TaskState.SUCCEEDED
    assert state.tasks["next"].state is TaskState.CANCELLED
    assert state.tasks["next"].attempts == 0


async def test_concurrency_limit_is_respected(sqlite_store: Store, tmp_path: Path) -> None:
    log = tmp_path / "log"
    script = f"echo start >> {log}; sleep 0.2; echo end >> {log}"
    plan = plan_of(*(TaskSpec(id=f"t{n}", command=script) for n in range(6)))
    state = await Orchestrator(sqlite_store, plan, config(tmp_path, agents=2)).run()
    assert state.status is RunStatus.SUCCEEDED
    level = peak = 0
    for line in log.read_text().split():
        level += 1 if line == "start" else -1
        peak = max(peak, level)
    assert peak <= 2


async def test_env_carries_identity_and_prompt(sqlite_store: Store, tmp_path: Path) -> None:
    plan = plan_of(TaskSpec(id="who", prompt="the prompt", command="env | grep ^MAOS_ | sort"))
    orchestrator = Orchestrator(sqlite_store, plan, config(tmp_path))
    state = await orchestrator.run()
    lines = Path(state.tasks["who"].output_path).read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines)
    assert env["MAOS_RUN_ID"] == orchestrator.run_id
    assert env["MAOS_TASK_ID"] == "who"
    assert env["MAOS_AGENT_ID"] == state.tasks["who"].agent_id
    assert env["MAOS_TASK"] == "the prompt"
    assert json.loads(env["MAOS_INPUTS"]) == {}


def assert_dead(pid: int, within_s: float = 5.0) -> None:
    """The process is gone, or a zombie: dead, not yet reaped by its parent (never us for
    grandchildren). A SIGKILL lands a moment after it was sent: allow ``within_s`` for it."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return
        if "State:\tZ" in status:
            return
        assert time.monotonic() < deadline, f"process {pid} is still alive"
        time.sleep(0.01)


def _children(pid: int) -> list[int]:
    import psutil

    return [child.pid for child in psutil.Process(pid).children()]


async def wait_for(condition: object, timeout_s: float = 20.0) -> None:
    assert callable(condition)
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture(autouse=True)
def _no_leftover_children() -> Iterator[None]:
    """The test leaves no process of its own behind (children that existed before it, such as
    multiprocessing's resource tracker started by another test, are not its doing)."""
    import psutil

    before = {child.pid for child in psutil.Process().children(recursive=True)}
    yield
    left = [
        child
        for child in psutil.Process().children(recursive=True)
        if child.pid not in before and child.status() != psutil.STATUS_ZOMBIE
    ]
    assert not left, left


async def test_report_is_written_from_measured_facts(sqlite_store: Store, tmp_path: Path) -> None:
    plan = plan_of(
        TaskSpec(id="a", title="Say hello", command="echo hello"),
        TaskSpec(id="b", depends_on=("a",), command="exit 2", max_attempts=1),
    )
    orchestrator = Orchestrator(sqlite_store, plan, config(tmp_path))
    state = await orchestrator.run()
    report = (tmp_path / ".maos" / "runs" / orchestrator.run_id / "REPORT.md").read_text()
    assert report.startswith(f"# Run {orchestrator.run_id}: t")
    assert "**failed**" in report
    assert "### a: Say hello" in report
    assert "| b | failed |" in report
    assert "exit code 2" in report
    assert state.status is RunStatus.FAILED


async def test_a_killed_agent_is_seen_at_once_even_if_its_child_holds_the_pipes(
    sqlite_store: Store, tmp_path: Path
) -> None:
    # sh forks sleep (the `; true` prevents exec): killing sh leaves sleep holding stdout.
    plan = plan_of(
        TaskSpec(id="victim", command=f"echo $$ > {tmp_path}/sh.pid; sleep 300; true", max_attempts=1),
    )
    orchestrator = Orchestrator(sqlite_store, plan, config(tmp_path))
    running = asyncio.create_task(orchestrator.run())
    pid_file = tmp_path / "sh.pid"
    await wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
    sh = int(pid_file.read_text())
    await wait_for(lambda: _children(sh))  # sleep is forked: it holds the pipes once sh dies
    os.kill(sh, 9)
    state = await running  # with a 300 s child, only noticing the exit itself ends this
    assert state.tasks["victim"].reason == "exit code -9"


async def test_after_two_failures_on_one_agent_the_task_goes_to_another(
    sqlite_store: Store, tmp_path: Path
) -> None:
    from maos.model import AgentSpec
    from maos.orchestrator import RunOptions
    from maos.scheduler import History

    history = History()
    for _ in range(20):
        history = history.record("expert", "expert", succeeded=True)
    agents = (AgentSpec(id="agent-1", role="expert"), AgentSpec(id="agent-2"))
    plan = plan_of(
        TaskSpec(id="picky", role="expert", command='[ "$MAOS_AGENT_ID" != agent-1 ]', max_attempts=4)
    )
    orchestrator = Orchestrator(
        sqlite_store, plan, config(tmp_path, agents=2), agents=agents, options=RunOptions(history=history)
    )
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    events = [e async for _, e in EventLog(sqlite_store, orchestrator.run_id).iterate()]
    ran_on = [e.agent_id for e in events if isinstance(e, TaskStarted)]
    assert ran_on == ["agent-1", "agent-1", "agent-2"]  # fitness prefers agent-1 until it failed twice
