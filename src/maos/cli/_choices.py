"""The choices of the CLI's options, as enums: ``--help`` lists them, and the parser refuses
anything else (exit 2 naming the option) before a command starts.

Each mirrors a type of the core, written out here because importing it (pydantic, the bus)
would slow every ``maos`` command down, the door's above all; ``tests/test_cli_contract.py``
keeps each equal to what it mirrors.
"""

from __future__ import annotations

import enum


class OnBudget(enum.StrEnum):
    """``RunConfig.on_budget``: at the ``--max-cost-usd`` limit, let running tasks finish, or
    stop them."""

    FINISH = "finish"
    STOP = "stop"


class OnAnomaly(enum.StrEnum):
    """``RunConfig.on_anomaly``: an agent over its limits is warned about, restarted or failed."""

    WARN = "warn"
    RESTART = "restart"
    FAIL = "fail"


class OnDeadlock(enum.StrEnum):
    """``RunConfig.on_deadlock``: resolve a wait-for cycle, or fail the run naming it."""

    RESOLVE = "resolve"
    FAIL = "fail"


class PermissionMode(enum.StrEnum):
    """``maos.model.PermissionMode``: Claude Code's ``--permission-mode``."""

    DEFAULT = "default"
    MANUAL = "manual"
    ACCEPT_EDITS = "acceptEdits"
    AUTO = "auto"
    BYPASS_PERMISSIONS = "bypassPermissions"
    DONT_ASK = "dontAsk"
    PLAN = "plan"


class Priority(enum.StrEnum):
    """``maos.bus.Priority``: of a message sent through the door."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class Template(enum.StrEnum):
    """The plan templates of ``maos.plan.templates``, and ``auto``: chosen by the task's
    keywords."""

    AUTO = "auto"
    BUGFIX = "bugfix"
    FEATURE = "feature"
    REFACTOR = "refactor"
    RESEARCH = "research"
    REVIEW = "review"


class BusBackend(enum.StrEnum):
    """The stores ``maos bench bus`` measures (``maos.bench.bus.run_backend``)."""

    SQLITE = "sqlite"
    REDIS = "redis"
