"""Measured agent health: CPU/RSS samples, memory and idle anomalies, and their policies."""

from __future__ import annotations

import sys
from pathlib import Path

from maos.eventlog import EventLog
from maos.events import AgentAnomaly, AgentStats
from maos.model import Plan, RunConfig, RunStatus, TaskSpec, TaskState
from maos.orchestrator import Orchestrator
from maos.store.base import Store

HOG = [
    sys.executable,
    "-c",
    "import time; x = bytearray(120 * 1024 * 1024); print('allocated', flush=True); time.sleep(60)",
]


async def _events(store: Store, run_id: str) -> list[object]:
    return [event async for _, event in EventLog(store, run_id).iterate()]


async def test_memory_hog_is_restarted_then_fails(sqlite_store: Store, tmp_path: Path) -> None:
    plan = Plan(name="hog", tasks=(TaskSpec(id="hog", command=tuple(HOG), max_attempts=2, timeout_s=60),))
    config = RunConfig(
        agents=1, workdir=str(tmp_path), memory_limit_mb=60, on_anomaly="restart", retry_base_s=0.01
    )
    orchestrator = Orchestrator(sqlite_store, plan, config)
    state = await orchestrator.run()
    assert state.status is RunStatus.FAILED
    hog = state.tasks["hog"]
    assert hog.state is TaskState.FAILED
    assert hog.attempts == 2
    assert hog.reason.startswith("anomaly: RSS")
    assert "over the limit of 60 MB" in hog.reason
    events = await _events(sqlite_store, orchestrator.run_id)
    anomalies = [e for e in events if isinstance(e, AgentAnomaly)]
    assert [(a.kind, a.action, a.attempt) for a in anomalies] == [
        ("memory", "restart", 1),
        ("memory", "restart", 2),
    ]
    samples = [e for e in events if isinstance(e, AgentStats)]
    assert max(sample.rss_bytes for sample in samples) > 100 * 1024 * 1024


async def test_fail_policy_gives_up_at_once(sqlite_store: Store, tmp_path: Path) -> None:
    plan = Plan(name="hog", tasks=(TaskSpec(id="hog", command=tuple(HOG), max_attempts=3, timeout_s=60),))
    config = RunConfig(agents=1, workdir=str(tmp_path), memory_limit_mb=60, on_anomaly="fail")
    state = await Orchestrator(sqlite_store, plan, config).run()
    assert state.tasks["hog"].state is TaskState.FAILED
    assert state.tasks["hog"].attempts == 1


async def test_silent_agent_is_flagged_but_finishes_under_warn(sqlite_store: Store, tmp_path: Path) -> None:
    plan = Plan(name="quiet", tasks=(TaskSpec(id="quiet", command="sleep 5; echo done", idle_timeout_s=1),))
    orchestrator = Orchestrator(sqlite_store, plan, RunConfig(agents=1, workdir=str(tmp_path)))
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED
    assert any(note.startswith("idle: no output for") for note in state.tasks["quiet"].anomalies)
