"""Plans and SSE parsing shared by the dashboard tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from maos.model import Plan, RunConfig, TaskSpec


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
