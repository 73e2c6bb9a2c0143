"""The agent runtimes of a run, by the name a task gives (``TaskSpec.runtime``).

An orchestrator takes its runtimes from ``run_runtimes``: the ones a caller made (a test, a
benchmark, a model server's address), or else those the run's settings ask for.
"""

from __future__ import annotations

from collections.abc import Mapping

from maos.agents.claude_code import ClaudeCodeRuntime
from maos.agents.command import CommandRuntime
from maos.agents.pool import WarmPool
from maos.agents.primer import Primer
from maos.agents.runtime import AgentRuntime
from maos.consensus import ConsensusRuntime
from maos.model import RunConfig

__all__ = ["run_runtimes"]


def run_runtimes(
    config: RunConfig,
    given: Mapping[str, AgentRuntime] | None = None,
    *,
    warm: int = 0,
    warm_primer: Primer | str = Primer.LOCAL,
) -> dict[str, AgentRuntime]:
    """The runtimes of a run with ``config`` whose agents run in this process (a run sent to
    workers has none of its own: ``Orchestrator``).

    ``given``, or else ``command`` and ``claude-code`` (with the run's permission mode,
    allowed tools and strictness); beside them always ``consensus``, which fans a replicated
    task out and runs a judge on the ``claude-code`` runtime. With ``warm`` > 0, ``warm``
    Claude Code agents start ahead of their tasks (``WarmPool``, ADR 0005).
    """
    runtimes: dict[str, AgentRuntime]
    if given is None:
        claude = ClaudeCodeRuntime(
            permission_mode=config.permission_mode,
            allowed_tools=config.allowed_tools,
            strict_permissions=config.strict_permissions,
        )
        runtimes = {"command": CommandRuntime(), "claude-code": claude}
    else:
        runtimes = dict(given)
    if "consensus" not in runtimes:
        runtimes["consensus"] = ConsensusRuntime(runtimes.get("claude-code"))
    claude_code = runtimes.get("claude-code")
    if warm > 0 and isinstance(claude_code, ClaudeCodeRuntime):
        runtimes["claude-code"] = WarmPool(claude_code, size=warm, primer=warm_primer)
    return runtimes
