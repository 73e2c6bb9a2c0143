"""The public API is small and deliberate: changing it must change this test."""

from __future__ import annotations

import subprocess
import sys

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


def test_the_orchestrator_imports_the_agent_host_only_for_a_run_whose_agents_run_here() -> None:
    """A run sent to workers (``--workers-only``, ``maos serve``) starts without the runtimes,
    the warm pool, the door's endpoint and the agent host (about 0.07 s of ``maos run``)."""
    host = "('maos.worker', 'maos.agents.pool', 'maos.agents.claude_code', 'maos.mcp_http', 'psutil')"
    code = f"import sys, maos.orchestrator; print(sorted(m for m in {host} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
