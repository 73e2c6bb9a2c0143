"""A model API that keeps failing opens the claude-code circuit: tasks stop starting until a
probe passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from maos.agents.claude_code import ClaudeCodeRuntime
from maos.eventlog import EventLog
from maos.events import CircuitChanged, TaskAssigned
from maos.model import Plan, RunConfig, RunStatus, TaskSpec
from maos.modelserver import parse_script, running_model_server
from maos.orchestrator import Orchestrator
from maos.store.base import Store

DOWN_THEN_UP = """
rules:
  - match: {}
    times: 2
    reply: {error: {status: 529, message: "Overloaded"}}
  - match: {}
    reply: {text: "ok"}
"""


@pytest.mark.claude
async def test_the_circuit_opens_then_a_probe_closes_it(
    cli: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    tasks = tuple(TaskSpec(id=f"t{n}", prompt="go", max_attempts=3) for n in range(4))
    # One agent: its first two model calls fail back to back, whatever the machine's load (with
    # two agents, one agent's retry could succeed between the two first failures, and the
    # failures would not be consecutive).
    config = RunConfig(
        agents=1,
        workdir=str(tmp_path),
        retry_base_s=0.05,
        retry_max_s=0.1,
        circuit_threshold=2,
        circuit_cooldown_s=2,
    )
    async with running_model_server(parse_script(DOWN_THEN_UP)) as url:
        # One API try per CLI start: the agent's first two calls fail, the later ones succeed.
        runtime = ClaudeCodeRuntime(base_url=url, env={"CLAUDE_CODE_MAX_RETRIES": "0"})
        orchestrator = Orchestrator(
            sqlite_store, Plan(name="breaker", tasks=tasks), config, runtimes={"claude-code": runtime}
        )
        state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    events = [e async for _, e in EventLog(sqlite_store, orchestrator.run_id).iterate()]
    changes = [(e.state, e.ts) for e in events if isinstance(e, CircuitChanged)]
    assert [state for state, _ in changes][:2] == ["open", "closed"]
    opened, closed = changes[0][1], changes[1][1]
    assert closed > opened
    # Between the two only the probe was handed out, once the cooldown (2 s) was over.
    between = [e for e in events if isinstance(e, TaskAssigned) and opened < e.ts < closed]
    assert len(between) == 1, between
    assert between[0].ts >= opened + 2
