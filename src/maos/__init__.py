"""MAOS — Multi-Agent Orchestration System.

The public Python API; the ``maos`` command is a thin layer over it::

    from maos import Orchestrator, Plan, Task, RunConfig, load_plan, open_store

Names are imported on first use, so ``import maos`` stays cheap for the door commands that
agent scripts call often.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


def _version() -> str:
    """The installed package's version: ``pyproject.toml`` is the one place it is written.
    Looked up on first use of ``maos.__version__`` (``importlib.metadata`` and the scan of
    the installed distributions cost every ``maos`` command ~60 ms)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("maos")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


__all__ = [
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

_LAZY = {
    "MaosError": ("maos.errors", "MaosError"),
    "Orchestrator": ("maos.orchestrator", "Orchestrator"),
    "Plan": ("maos.model", "Plan"),
    "RunConfig": ("maos.model", "RunConfig"),
    "RunState": ("maos.model", "RunState"),
    "Task": ("maos.model", "TaskSpec"),
    "TaskState": ("maos.model", "TaskState"),
    "load_plan": ("maos.plan", "load_plan"),
    "open_store": ("maos.store", "open_store"),
}

if TYPE_CHECKING:
    __version__: str
    from maos.errors import MaosError
    from maos.model import Plan, RunConfig, RunState, TaskState
    from maos.model import TaskSpec as Task
    from maos.orchestrator import Orchestrator
    from maos.plan import load_plan
    from maos.store import open_store


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = version = _version()
        return version
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'maos' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value
