"""Each series of ``maos.metrics`` moved by a real run: command agents that message each other
and write shared state through the door (``maos msg``, ``maos state``), a worker killed mid-run,
agents sampled by the health monitor. Nothing here calls a ``record_*`` method: the observer
is the one ``maos run`` hooks into its orchestrator, and every number comes from the run's log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from maos.eventlog import EventLog
from maos.events import AgentAnomaly, AgentStats, Event, StateCasFailed, TaskStarted
from maos.metrics import MetricsObserver
from maos.model import Plan, RunConfig, RunState, RunStatus, TaskSpec
from maos.orchestrator import Orchestrator
from maos.store.base import Store

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(observer: MetricsObserver) -> Samples:
    """What ``/metrics`` serves, parsed by prometheus-client's own parser."""
    found: Samples = {}
    for family in text_string_to_metric_families(observer.render().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(parsed: Samples, name: str, **labels: str) -> float:
    return parsed[(name, tuple(sorted(labels.items())))]


def observed(
    store: Store, plan: Plan, config: RunConfig, **kwargs: object
) -> tuple[Orchestrator, MetricsObserver]:
    """An orchestrator with the metrics observer hooked in, as ``maos run`` sets it up."""
    orchestrator = Orchestrator(store, plan, config, **kwargs)  # type: ignore[arg-type]
    metrics = MetricsObserver()
    orchestrator.hooks.append(metrics.observe)
    return orchestrator, metrics


def on_event(
    orchestrator: Orchestrator, wanted: Callable[[Event], bool], then: Callable[[Event], None]
) -> None:
    """Call ``then`` for each event of the run that ``wanted`` accepts (after the metrics saw it)."""

    def hook(_event_id: str, event: Event, _state: RunState) -> None:
        if wanted(event):
            then(event)

    orchestrator.hooks.append(hook)


def wait_for(flag: Path) -> str:
    """Shell: block until ``flag`` exists (the test creates it once it saw what it waits for)."""
    return f"for _ in $(seq 600); do [ -e {flag} ] && break; sleep 0.05; done"


async def test_messages_their_latency_and_the_backlog(sqlite_store: Store, tmp_path: Path) -> None:
    plan = Plan(
        name="talk",
        tasks=(
            TaskSpec(
                id="a",
                command="maos msg send task:b one && maos msg send task:b two && maos msg send task:b three",
            ),
            TaskSpec(id="b", depends_on=("a",), command="maos msg read -n 2 > /dev/null"),
        ),
    )
    orchestrator, metrics = observed(
        sqlite_store, plan, RunConfig(agents=2, workdir=str(tmp_path), max_cost_usd=2.5)
    )
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    parsed = scrape(metrics)
    assert value(parsed, "maos_messages_total", direction="sent") == 3
    assert value(parsed, "maos_messages_total", direction="received") == 2
    assert value(parsed, "maos_message_latency_seconds_count") == 2
    latency_s = value(parsed, "maos_message_latency_seconds_sum")
    assert 0 < latency_s < 120  # sent by a, read by b after a finished: real, not zero
    assert value(parsed, "maos_message_backlog") == 1  # "three" was never read
    assert value(parsed, "maos_run_budget_usd") == 2.5
    assert value(parsed, "maos_run_cost_usd") == 0  # command agents report no model cost


CAS_SENDER = """\
import asyncio

from maos.door import open_door
from maos.identity import AgentIdentity, open_agent_store


async def main() -> None:
    # Two doors of one agent (say its MCP server and a `maos msg` call) sending on one lane:
    # the first door's cached sequence counter is stale when it sends again.
    identity = AgentIdentity.from_env()
    store = await open_agent_store(identity)
    try:
        first = await open_door(store, identity, via="cli")
        second = await open_door(store, identity, via="cli")
        await first.send_message("task:sink", 1)
        await second.send_message("task:sink", 2)
        await first.send_message("task:sink", 3)
    finally:
        await store.close()


asyncio.run(main())
"""


async def test_cas_conflicts_of_shared_state_and_of_the_bus(sqlite_store: Store, tmp_path: Path) -> None:
    sender = tmp_path / "sender.py"
    sender.write_text(CAS_SENDER)
    # Two agents create the same key with compare-and-set "only if absent": whichever comes
    # second is refused (exit 1, which it tolerates) however they interleave.
    race = 'maos state cas shared/owner 0 "$MAOS_TASK_ID" || echo lost'
    plan = Plan(
        name="cas",
        tasks=(
            TaskSpec(id="x", command=race),
            TaskSpec(id="y", command=race),
            TaskSpec(id="send", depends_on=("x", "y"), command=(sys.executable, str(sender))),
        ),
    )
    orchestrator, metrics = observed(sqlite_store, plan, RunConfig(agents=2, workdir=str(tmp_path)))
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    parsed = scrape(metrics)
    assert value(parsed, "maos_cas_conflicts_total", kind="state") == 1
    assert value(parsed, "maos_cas_conflicts_total", kind="bus") == 1
    events = [e async for _, e in EventLog(sqlite_store, orchestrator.run_id).iterate()]
    refused = [e for e in events if isinstance(e, StateCasFailed)]
    assert [(e.key, e.expected_version, e.version) for e in refused] == [("shared/owner", 0, 1)]


def _worker(url: str, name: str, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "maos", "worker", "--store", url, "--name", name, "--lease-s", "1"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


async def test_missed_heartbeats_of_a_killed_worker(sqlite_store: Store, tmp_path: Path) -> None:
    # The first attempt hangs on worker w1, which is SIGKILLed once it runs; its lease runs
    # out, the attempt is reported lost and the retry runs on w2.
    command = 'if [ "$MAOS_ATTEMPT" = 1 ]; then sleep 60; fi; echo done'
    plan = Plan(name="lost", tasks=(TaskSpec(id="t", command=command, max_attempts=3),))
    config = RunConfig(agents=1, workdir=str(tmp_path), retry_base_s=0.01)
    orchestrator, metrics = observed(sqlite_store, plan, config, workers_only=True, lease_s=1.0)
    first = _worker(sqlite_store.url, "w1", tmp_path)
    second: list[subprocess.Popen[bytes]] = []

    def kill_first(event: Event) -> None:
        if isinstance(event, TaskStarted) and event.attempt == 1 and first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            second.append(_worker(sqlite_store.url, "w2", tmp_path))

    on_event(orchestrator, lambda event: isinstance(event, TaskStarted), kill_first)
    try:
        state = await asyncio.wait_for(orchestrator.run(), 60)
    finally:
        for proc in (first, *second):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 30)
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert state.tasks["t"].attempts == 2
    parsed = scrape(metrics)
    assert value(parsed, "maos_missed_heartbeats_total") == 1
    assert value(parsed, "maos_task_attempts_total", outcome="failed") == 1


async def test_agent_cpu_rss_and_idle_are_exported_per_agent(sqlite_store: Store, tmp_path: Path) -> None:
    go = tmp_path / "go"
    plan = Plan(name="sampled", tasks=(TaskSpec(id="t", command=f"echo started; {wait_for(go)}"),))
    orchestrator, metrics = observed(sqlite_store, plan, RunConfig(agents=1, workdir=str(tmp_path)))
    during: list[Samples] = []

    def sampled(_event: Event) -> None:
        during.append(scrape(metrics))
        go.touch()

    on_event(orchestrator, lambda event: isinstance(event, AgentStats), sampled)
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    agent = state.tasks["t"].agent_id
    assert agent is not None
    assert value(during[0], "maos_agent_rss_bytes", agent=agent) > 1_000_000  # a real shell's RSS
    assert value(during[0], "maos_agent_cpu_percent", agent=agent) >= 0
    assert value(during[0], "maos_agent_idle_seconds", agent=agent) >= 0
    after = scrape(metrics)  # the task ended: its agent's samples are no longer current
    assert ("maos_agent_rss_bytes", (("agent", agent),)) not in after


PEER = """\
import os, sys, time
data = b"x" * (int(sys.argv[1]) << 20)  # touched: all of it is resident
print("holding", sys.argv[1], "MB", flush=True)
for _ in range(1200):  # until the test saw the anomaly (at most a minute)
    if os.path.exists(sys.argv[2]):
        break
    time.sleep(0.05)
"""


async def test_an_agent_far_from_its_peers_is_flagged(sqlite_store: Store, tmp_path: Path) -> None:
    go = tmp_path / "go"
    peer = tmp_path / "peer.py"
    peer.write_text(PEER)
    # Five agents of one run hold little memory; one holds 200 MB more than the others.
    tasks = tuple(
        TaskSpec(id=f"t{n}", command=(sys.executable, str(peer), "200" if n == 4 else "1", str(go)))
        for n in range(5)
    )
    plan = Plan(name="peers", tasks=tasks)
    orchestrator, metrics = observed(sqlite_store, plan, RunConfig(agents=5, workdir=str(tmp_path)))
    flagged: list[AgentAnomaly] = []

    def anomaly(event: Event) -> None:
        assert isinstance(event, AgentAnomaly)
        flagged.append(event)
        go.touch()

    on_event(orchestrator, lambda event: isinstance(event, AgentAnomaly), anomaly)
    state = await asyncio.wait_for(orchestrator.run(), 60)
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert [(a.task_id, a.kind, a.action) for a in flagged] == [("t4", "rss_outlier", "warn")]
    assert "far from its 4 peers'" in flagged[0].detail
    assert any(note.startswith("rss_outlier: RSS 2") for note in state.tasks["t4"].anomalies)
    assert value(scrape(metrics), "maos_agent_anomalies_total", kind="rss_outlier") == 1


async def test_an_agent_with_less_memory_than_its_peers_is_no_anomaly(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """Little memory is no fault (an agent that is just starting has almost none): only an
    agent above its peers' RSS is flagged."""
    go = tmp_path / "go"
    peer = tmp_path / "peer.py"
    peer.write_text(PEER)
    tasks = tuple(
        TaskSpec(id=f"t{n}", command=(sys.executable, str(peer), "1" if n == 4 else "120", str(go)))
        for n in range(5)
    )
    plan = Plan(name="peers", tasks=tasks)
    orchestrator, _ = observed(sqlite_store, plan, RunConfig(agents=5, workdir=str(tmp_path)))
    flagged: list[Event] = []
    sampled: dict[str, int] = {}

    def stats(event: Event) -> None:
        assert isinstance(event, AgentStats)
        sampled[event.task_id] = sampled.get(event.task_id, 0) + 1
        if len(sampled) == 5 and min(sampled.values()) >= 3:  # every agent compared three times
            go.touch()

    on_event(orchestrator, lambda event: isinstance(event, AgentAnomaly), flagged.append)
    on_event(orchestrator, lambda event: isinstance(event, AgentStats), stats)
    state = await asyncio.wait_for(orchestrator.run(), 60)
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert go.exists()
    assert flagged == []
