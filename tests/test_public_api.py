"""The public API is small and deliberate: changing it must change this test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import maos


def test_public_names_are_locked() -> None:
    assert maos.__all__ == [
        "MaosError",
        "Orchestrator",
        "Plan",
        "RunConfig",
        "RunState",
        "Task",
        "TaskState",
        "__version__",
        "load_plan",
        "open_store",
    ]
    for name in maos.__all__:
        assert getattr(maos, name) is not None


def test_import_maos_stays_cheap() -> None:
    heavy = "('pydantic', 'redis', 'rich', 'typer')"
    code = f"import sys, maos; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


RUN_SENT_TO_WORKERS = """
import asyncio, sys
from maos.model import Plan, RunConfig, TaskSpec, TaskState
from maos.orchestrator import Orchestrator
from maos.store import open_store

async def main(db):
    store = await open_store(f"sqlite:///{db}")
    config = RunConfig(agents=1, workdir=sys.argv[2], workers_only=True)
    plan = Plan(name="p", tasks=(TaskSpec(id="t", command="true"),))
    orchestrator = Orchestrator(store, plan, config)
    run = asyncio.create_task(orchestrator.run())
    while getattr(orchestrator.state.tasks.get("t"), "state", None) is not TaskState.ASSIGNED:
        await asyncio.sleep(0.01)  # handed to the work queue: no worker takes it
    host = ("maos.worker", "maos.agents.pool", "maos.agents.claude_code", "maos.mcp_http", "psutil")
    print(sorted(m for m in host if m in sys.modules))
    run.cancel()

asyncio.run(main(sys.argv[1]))
"""


def test_a_run_sent_to_workers_imports_no_agent_host(tmp_path: Path) -> None:
    """A run whose agents run in workers (``--workers-only``, ``maos serve``) starts without the
    runtimes, the warm pool, the door's endpoint and the agent host (about 0.07 s of ``maos run``)."""
    out = subprocess.run(
        [sys.executable, "-c", RUN_SENT_TO_WORKERS, str(tmp_path / "maos.db"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.strip() == "[]"
