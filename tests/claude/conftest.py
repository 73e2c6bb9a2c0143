"""Fixtures for the claude-code runtime tests: the real CLI, a store, runs through the
real ``Orchestrator`` against the scripted model server."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from maos.agents.claude_code import ClaudeCodeRuntime
from maos.agents.command import CommandRuntime
from maos.agents.runtime import AgentRuntime
from maos.eventlog import EventLog
from maos.events import Event
from maos.model import Plan, RunConfig, RunState, TaskSpec
from maos.modelserver import parse_script, running_model_server
from maos.orchestrator import Orchestrator
from maos.store.base import Store


@dataclass
class Run:
    state: RunState
    events: list[Event]
    requests: list[dict[str, Any]]  # the model server's request log
    run_id: str
    workdir: Path

    def of(self, kind: type[Any]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]


async def run_plan(
    store: Store, workdir: Path, script: str, *tasks: TaskSpec, agents: int = 1, grace_s: float = 1.0
) -> Run:
    """Run ``tasks`` through the real orchestrator, Claude Code agents talking to ``script``."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = RunConfig(
        agents=agents, workdir=str(workdir), retry_base_s=0.05, retry_max_s=0.2, grace_s=grace_s
    )
    async with running_model_server(parse_script(script)) as url:
        runtimes: dict[str, AgentRuntime] = {
            "command": CommandRuntime(),
            "claude-code": ClaudeCodeRuntime(base_url=url),
        }
        orchestrator = Orchestrator(store, Plan(name="claude", tasks=tasks), config, runtimes=runtimes)
        state = await orchestrator.run()
        async with httpx.AsyncClient(base_url=url) as client:
            requests = (await client.get("/requests")).json()["requests"]
    events = [event async for _, event in EventLog(store, orchestrator.run_id).iterate()]
    return Run(state, events, requests, orchestrator.run_id, workdir)


def processes_of_run(run_id: str) -> list[psutil.Process]:
    """Live processes whose environment says they belong to the run (agents and their children)."""
    marker = f"MAOS_RUN_ID={run_id}"
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
            if marker.encode() in environ.split(b"\0") and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def assert_dead(pid: int, *, within_s: float = 5.0) -> None:
    """The process is gone, or a zombie (dead; its new parent has not reaped it yet).

    SIGKILL is delivered asynchronously: give the kernel a moment before judging."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            status = psutil.Process(pid).status()
        except psutil.NoSuchProcess:
            return
        if status == psutil.STATUS_ZOMBIE:
            return
        assert time.monotonic() < deadline, f"process {pid} is still alive ({status})"
        time.sleep(0.02)
