"""Plans and SSE parsing shared by the dashboard tests."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from maos.eventlog import EventLog
from maos.events import (
    AgentApiRetry,
    AgentOutput,
    Event,
    RunStarted,
    TaskAssigned,
    TaskReady,
    TaskStarted,
    TaskWarning,
)
from maos.model import AgentSpec, Plan, RunConfig, TaskSpec
from maos.store import keys
from maos.store.base import Store


def config(tmp_path: Path, agents: int = 3) -> RunConfig:
    return RunConfig(agents=agents, workdir=str(tmp_path), retry_base_s=0.05, retry_max_s=0.2, grace_s=1.0)


def small_plan(name: str = "web", *, sleep_s: float = 0.3) -> Plan:
    """A diamond whose tasks print a few lines, one of them on stderr."""
    return Plan(
        name=name,
        tasks=(
            TaskSpec(id="design", command=f"echo designing; sleep {sleep_s}; echo designed"),
            TaskSpec(
                id="build", depends_on=("design",), command=f"echo building; sleep {sleep_s}; echo built"
            ),
            TaskSpec(
                id="test", depends_on=("design",), command=f"echo testing; sleep {sleep_s}; echo warn >&2"
            ),
            TaskSpec(id="ship", depends_on=("build", "test"), command="echo shipped"),
        ),
    )


async def sse_messages(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """Parse ``text/event-stream``: yields one dict per message (``comment`` for ``:`` lines)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if fields:
                yield fields
                fields = {}
            continue
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data" and "data" in fields:
            fields["data"] += "\n" + value
        else:
            fields[name] = value


async def blocked_run(store: Store, tmp_path: Path, run_id: str = "blocked") -> None:
    """A run whose three running tasks each look blocked in a different way."""
    log = EventLog(store, run_id)
    plan = Plan(
        name="blocked",
        tasks=(
            TaskSpec(id="denied", prompt="p"),
            TaskSpec(id="limited", prompt="p"),
            TaskSpec(id="silent", prompt="p", idle_timeout_s=1.0),
            TaskSpec(id="fine", prompt="p"),
        ),
    )
    agents = tuple(AgentSpec(id=f"a{n}") for n in range(4))
    now = time.time()
    events: list[Event] = [RunStarted(run_id=run_id, plan=plan, config=config(tmp_path), agents=agents)]
    for n, task in enumerate(plan.tasks):
        events += [
            TaskReady(task_id=task.id),
            TaskAssigned(task_id=task.id, agent_id=f"a{n}", attempt=1),
            TaskStarted(task_id=task.id, agent_id=f"a{n}", attempt=1, pid=100 + n, ts=now - 5),
        ]
    events += [
        TaskWarning(task_id="denied", agent_id="a0", attempt=1, text="permission denied: Bash(rm -rf build)"),
        TaskWarning(task_id="denied", agent_id="a0", attempt=1, text="permission denied: Write(/etc/hosts)"),
        AgentOutput(task_id="limited", agent_id="a1", stream="text", text="thinking"),
        AgentApiRetry(
            task_id="limited", agent_id="a1", attempt=1, api_attempt=2, max_retries=10, error_status=429
        ),
        AgentOutput(task_id="fine", agent_id="a3", stream="tool", text="Read(README.md)"),
        AgentOutput(task_id="denied", agent_id="a0", stream="text", text="trying again"),
    ]
    for event in events:
        await log.append(event)
    # driven: a live orchestrator (this process) holds the run, so its tasks show running
    # (in a run nobody drives they show interrupted: maos.liveness)
    await store.acquire(
        keys.run_lease(run_id), f"orchestrator {socket.gethostname()}:{os.getpid()} (test)", 3600
    )
