"""The ``AgentRuntime`` protocol: how a worker runs one attempt of one task on one agent.

A runtime starts a real OS process, reports what it does through a ``Reporter`` (the worker
turns those calls into events in the run's log), and always reaps its process — on success,
failure, timeout and cancellation alike (see ``maos.agents.process``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from maos.model import AgentRole, AgentSpec, TaskSpec, Usage

if TYPE_CHECKING:
    from maos.mcp_http import DoorEndpoint

OutputStream = Literal["stdout", "stderr", "text", "tool"]


@dataclass(frozen=True, slots=True)
class AgentJob:
    """One attempt of one task, with everything the runtime needs to start it."""

    run_id: str
    task: TaskSpec
    agent: AgentSpec
    attempt: int
    cwd: Path
    env: Mapping[str, str]  # MAOS_* variables; the runtime adds them to its own environment
    output_dir: Path  # where the attempt's output files go
    grace_s: float
    role: AgentRole | None = None  # claude-code: the .claude/agents definition to run as
    resume_session: str | None = None  # claude-code: continue this session where it stopped
    resume_agent: str | None = None  # whose config dir holds that session's transcript
    replica_weights: Mapping[str, float] = field(default_factory=dict)  # consensus: weight per replica
    door: DoorEndpoint | None = None  # claude-code: the host's door endpoint; None: `maos mcp` (stdio)


@dataclass(frozen=True, slots=True)
class AgentResult:
    ok: bool
    duration_s: float
    exit_code: int | None = None
    reason: str = ""
    stderr_tail: str = ""
    output_path: str = ""
    final: bool = False  # do not retry (see TaskFailed.final)
    usage: Usage | None = None  # model cost and tokens, for runtimes that know them


class Reporter(Protocol):
    async def started(self, pid: int, session_id: str | None = None) -> None:
        """The agent process runs; ``session_id`` names its conversation (claude-code)."""
        ...

    async def output(self, stream: OutputStream, text: str) -> None: ...

    async def warning(self, text: str) -> None:
        """Something about the attempt the user should see that does not fail it."""
        ...

    async def api_retry(
        self,
        api_attempt: int,
        *,
        error_status: int | None,
        error: str,
        retry_delay_ms: float | None,
        max_retries: int | None,
    ) -> None:
        """The agent retries a failed model API call (overloaded, rate-limited, ...)."""
        ...

    async def vote(self, replica: str, answer_digest: str, weight: float, score: float | None) -> None:
        """A consensus counted one replica's answer (see ``maos.consensus``)."""
        ...

    async def decided(self, strategy: str, winner: str, tally: dict[str, float]) -> None:
        """A consensus picked ``winner``; ``tally``: votes (or scores) per distinct answer."""
        ...


class AgentRuntime(Protocol):
    name: str

    async def run(self, job: AgentJob, reporter: Reporter) -> AgentResult:
        """Run the attempt to its end. Raises only on cancellation (after reaping)."""
        ...
