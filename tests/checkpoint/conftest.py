"""Shared helpers: a realistic run's event log, keys, and a local blob store."""

from __future__ import annotations

from pathlib import Path

import pytest

from maos import security
from maos.blobs import LocalBlobStore
from maos.events import (
    AgentOutput,
    Event,
    RunFinished,
    RunStarted,
    TaskAssigned,
    TaskFailed,
    TaskReady,
    TaskRetried,
    TaskSkipped,
    TaskStarted,
    TaskSucceeded,
    fold,
)
from maos.model import AgentSpec, Plan, RunConfig, RunState, RunStatus, TaskSpec

RUN_ID = "20261125-120000-abcd"


def run_events(
    tasks: int = 12, *, run_id: str = RUN_ID, prompt: str = "do the thing"
) -> list[tuple[str, Event]]:
    """A finished run's log: successes, a failure then retry, skips and output lines."""
    plan = Plan(
        name="sample",
        tasks=tuple(TaskSpec(id=f"t{n:03d}", prompt=f"{prompt} #{n}", command="true") for n in range(tasks)),
    )
    agents = (AgentSpec(id="agent-1"), AgentSpec(id="agent-2"))
    ts = 1_000.0
    events: list[Event] = [
        RunStarted(ts=ts, run_id=run_id, plan=plan, config=RunConfig(workdir="/tmp/w"), agents=agents)
    ]
    for n, spec in enumerate(plan.tasks):
        task_id, agent = spec.id, agents[n % 2].id
        if n % 7 == 3:
            events.append(TaskSkipped(ts=ts, task_id=task_id, because="a dependency failed"))
            continue
        events += [
            TaskReady(ts=ts, task_id=task_id),
            TaskAssigned(ts=ts, task_id=task_id, agent_id=agent, attempt=1),
            TaskStarted(ts=ts, task_id=task_id, agent_id=agent, attempt=1, pid=100 + n),
            AgentOutput(ts=ts, task_id=task_id, agent_id=agent, stream="stdout", text=f"working on {n}"),
        ]
        if n % 4 == 0:
            events += [
                TaskFailed(ts=ts, task_id=task_id, agent_id=agent, attempt=1, reason="exit 1", exit_code=1),
                TaskRetried(ts=ts, task_id=task_id, retry_at=ts + 1, delay_s=1.0),
                TaskReady(ts=ts, task_id=task_id),
                TaskAssigned(ts=ts, task_id=task_id, agent_id=agent, attempt=2),
                TaskStarted(ts=ts, task_id=task_id, agent_id=agent, attempt=2, pid=200 + n),
                TaskSucceeded(ts=ts, task_id=task_id, agent_id=agent, attempt=2, duration_s=0.5),
            ]
        else:
            events.append(TaskSucceeded(ts=ts, task_id=task_id, agent_id=agent, attempt=1, duration_s=0.25))
        ts += 1
    events.append(RunFinished(ts=ts, status=RunStatus.SUCCEEDED))
    return [(str(n), event) for n, event in enumerate(events, 1)]


def state_after(events: list[tuple[str, Event]], count: int) -> RunState:
    return fold(events[:count])


@pytest.fixture
def key() -> security.KeyInfo:
    return security.KeyInfo(security.generate_key(), "test")


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "checkpoints")
