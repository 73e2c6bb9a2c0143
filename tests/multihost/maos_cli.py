"""``maos`` processes on simulated hosts: their argv and environment.

On Redis, MAOS encrypts shared-state values with a per-run data key derived from the
checkpoint key (``maos.security``: ``MAOS_KEY``, else ``.maos/key`` in the working
directory, created on first use). Hosts that each start in their own directory would each
create a different key and could not read each other's values, so every ``maos`` process of
a test gets the same ``MAOS_KEY`` explicitly, as a real deployment would configure it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from maos.security import KEY_ENV, format_key, generate_key

from .processes import base_env

MAOS = (sys.executable, "-m", "maos")
"""This interpreter's ``maos`` (the venv's), whatever PATH says."""


def new_key() -> str:
    """A fresh random ``MAOS_KEY`` value for one test's hosts."""
    return format_key(generate_key())


def maos_env(key: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The explicit environment of a ``maos`` process: ``base_env``, ``MAOS_KEY``, ``extra``."""
    return base_env({KEY_ENV: key, **(extra or {})})


def worker_argv(store_url: str, name: str, *, capacity: int = 4, lease_s: float = 2.0) -> list[str]:
    """``maos worker`` taking work from ``store_url`` under ``name``."""
    return [
        *MAOS, "worker",
        "--store", store_url,
        "--name", name,
        "--capacity", str(capacity),
        "--lease-s", str(lease_s),
    ]  # fmt: skip


def run_argv(
    plan: str,
    store_url: str,
    *,
    agents: int = 4,
    lease_s: float = 2.0,
    retry_base_s: float = 1.0,
    checkpoint_every_s: float | None = None,
) -> list[str]:
    """``maos run PLAN --workers-only --json``: hands every task to workers, prints a summary.

    Non-interactive as it is: a plan file is not planned first, and the run asks nothing.
    ``checkpoint_every_s``: seconds between full checkpoints (``--checkpoint-every-s``; they go to
    ``.maos/checkpoints`` under the run's working directory), else MAOS's default.
    """
    checkpoints = [] if checkpoint_every_s is None else ["--checkpoint-every-s", f"{checkpoint_every_s:g}"]
    return [
        *MAOS, "run", plan,
        "--store", store_url,
        "--workers-only",
        "--agents", str(agents),
        "--lease-s", str(lease_s),
        "--retry-base-s", str(retry_base_s),
        *checkpoints,
        "--json",
    ]  # fmt: skip


def supervisor_argv(store_url: str, name: str, *, lease_s: float = 2.0, poll_s: float = 0.5) -> list[str]:
    """``maos supervisor``: takes over every run on ``store_url`` whose orchestrator is gone."""
    return [
        *MAOS, "supervisor",
        "--store", store_url,
        "--name", name,
        "--lease-s", str(lease_s),
        "--poll-s", str(poll_s),
    ]  # fmt: skip


def inspect_argv(store_url: str, *args: str) -> list[str]:
    """``maos ARGS --store URL --json`` (``status RUN``, ``runs``): one JSON document on stdout."""
    return [*MAOS, *args, "--store", store_url, "--json"]
