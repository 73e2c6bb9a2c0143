"""Fixtures for the door tests.

``store`` runs a test on SQLite and on Redis (127.0.0.1:6379, skipped when none answers; the
run's keys are deleted afterwards). ``door_run`` is a run as agents see it: a SQLite file, a
run secret, a ``run_started`` event naming agents ``agent-a`` and ``agent-b``, and the
environment each agent would get (``door_run.env("agent-a")``).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from maos.eventlog import EventLog
from maos.events import Event, RunStarted
from maos.model import AgentSpec, Plan, RunConfig, TaskSpec
from maos.security import ensure_run_secret, issue_task_token, issue_token
from maos.store import Store, open_store

MAOS = [sys.executable, "-m", "maos"]


@pytest.fixture
def run_id() -> str:
    return f"door-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(run_store: Store) -> Store:
    """The shared ``run_store`` (SQLite and Redis), under the name these tests use."""
    return run_store


async def start_run(store: Store, run_id: str, agents: tuple[str, ...], workdir: Path) -> bytes:
    """Write a ``run_started`` event naming ``agents`` and create the run's secret."""
    plan = Plan(name="door", tasks=(TaskSpec(id="t1", command="true"),))
    await EventLog(store, run_id).append(
        RunStarted(
            run_id=run_id,
            plan=plan,
            config=RunConfig(agents=len(agents), workdir=str(workdir)),
            agents=tuple(AgentSpec(id=agent) for agent in agents),
        )
    )
    return await ensure_run_secret(store, run_id)


async def events_of(store: Store, run_id: str) -> list[Event]:
    return [event async for _, event in EventLog(store, run_id).iterate()]


@dataclass
class DoorRun:
    store: Store
    url: str
    run_id: str
    secret: bytes
    workdir: Path

    def token(self, agent: str) -> str:
        return issue_token(self.secret, self.run_id, agent)

    def task_token(self, agent: str, task: str = "t1", attempt: int = 1, **grants: object) -> str:
        return issue_task_token(self.secret, self.run_id, agent, task, attempt, grants)

    def env(self, agent: str, *, token: str | None = None, task: str = "t1") -> dict[str, str]:
        """The environment of a process acting as ``agent`` (over this one's)."""
        return {
            **os.environ,
            "MAOS_RUN_ID": self.run_id,
            "MAOS_AGENT_ID": agent,
            "MAOS_TASK_ID": task,
            "MAOS_AGENT_TOKEN": token if token is not None else self.token(agent),
            "MAOS_TASK_TOKEN": self.task_token(agent, task),
            "MAOS_STORE": self.url,
        }

    async def events(self) -> list[Event]:
        return await events_of(self.store, self.run_id)


@pytest.fixture
async def door_run(tmp_path: Path, run_id: str) -> AsyncIterator[DoorRun]:
    url = f"sqlite:///{tmp_path / 'maos.db'}"
    opened = await open_store(url)
    try:
        secret = await start_run(opened, run_id, ("agent-a", "agent-b"), tmp_path)
        yield DoorRun(opened, url, run_id, secret, tmp_path)
    finally:
        await opened.close()


@pytest.fixture
async def sqlite_run_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A SQLite store for a whole run (its URL is absolute, as agents get it)."""
    opened = await open_store(f"sqlite:///{tmp_path / 'maos.db'}")
    try:
        yield opened
    finally:
        await opened.close()
