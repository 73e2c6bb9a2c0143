from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from maos.model import Plan, RunConfig, TaskSpec
from maos.store import open_store
from maos.store.base import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path / 'maos.db'}")
    try:
        yield opened
    finally:
        await opened.close()


def config(tmp_path: Path, agents: int = 3) -> RunConfig:
    return RunConfig(agents=agents, workdir=str(tmp_path), retry_base_s=0.05, retry_max_s=0.2, grace_s=1.0)


def small_plan(name: str = "web", *, sleep_s: float = 0.3) -> Plan:
    """A diamond whose tasks print a few lines, one of them on stderr."""
    return Plan(
        name=name,
        tasks=(
            TaskSpec(id="design", command=f"echo designing; sleep {sleep_s}; echo designed"),
            TaskSpec(id="build", depends_on=("design",), command=f"echo building; sleep {sleep_s}; echo built"),
            TaskSpec(
                id="test", depends_on=("design",), command=f"echo testing; sleep {sleep_s}; echo warn >&2"
            ),
            TaskSpec(id="ship", depends_on=("build", "test"), command="echo shipped"),
        ),
    )
