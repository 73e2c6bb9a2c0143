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
