"""The ``command`` runtime: any executable is an agent.

The task prompt goes on stdin and in ``MAOS_TASK``; the environment carries ``MAOS_RUN_ID``,
``MAOS_TASK_ID``, ``MAOS_AGENT_ID``, ``MAOS_ATTEMPT`` and ``MAOS_INPUTS`` (a JSON map from
each parent task id to the file holding that parent's output). Exit code 0 is success; the
process's stdout is the task's output, kept up to ``max_output_bytes`` per stream (the rest
is drained and dropped, and the attempt gets a ``task_warning`` saying so); a process that
prints nothing has no output file (its ``output_path`` is empty, and the tasks after it get
``/dev/null`` for it in ``MAOS_INPUTS``). The rest of the
environment is an allowlist (``maos.agents.environment``): no secret of the orchestrator's.
"""

from __future__ import annotations

from maos.agents.environment import agent_environment
from maos.agents.process import MAX_OUTPUT_BYTES, run_process
from maos.agents.runtime import AgentJob, AgentResult, Reporter
from maos.errors import AgentError
from maos.paths import attempt_file


class CommandRuntime:
    """``max_output_bytes``: how much of each output stream an attempt keeps on disk."""

    name = "command"

    def __init__(self, *, max_output_bytes: int = MAX_OUTPUT_BYTES) -> None:
        if max_output_bytes < 1:
            raise ValueError(f"max_output_bytes must be at least 1, got {max_output_bytes}")
        self.max_output_bytes = max_output_bytes

    async def run(self, job: AgentJob, reporter: Reporter) -> AgentResult:
        argv = job.task.argv
        if argv is None:
            return AgentResult(
                ok=False,
                duration_s=0.0,
                reason=f"task {job.task.id!r} has no 'command' to run with the command runtime",
            )
        env = agent_environment(job.env)  # an allowlist, never our secrets
        try:
            outcome = await run_process(
                argv,
                cwd=job.cwd,
                env=env,
                stdin_data=job.task.prompt.encode(),
                timeout_s=job.task.timeout_s,
                grace_s=job.grace_s,
                stdout_path=attempt_file(job.output_dir, job.task.id, job.attempt, ".out"),
                stderr_path=attempt_file(job.output_dir, job.task.id, job.attempt, ".err"),
                on_start=reporter.started,
                on_line=reporter.output,
                max_output_bytes=self.max_output_bytes,
                # its host's guard kills it and all it starts; the parent-death signal's exec
                # would cost more than a short command's whole start (ADR 0022)
                parent_death_signal=False,
            )
        except AgentError as exc:
            return AgentResult(ok=False, duration_s=0.0, reason=str(exc))
        for note in outcome.truncation_notes():
            await reporter.warning(note)
        if outcome.timed_out:
            return AgentResult(
                ok=False,
                duration_s=outcome.duration_s,
                reason=f"timed out after {job.task.timeout_s:g}s",
                stderr_tail=outcome.stderr_tail,
            )
        ok = outcome.exit_code == 0
        return AgentResult(
            ok=ok,
            duration_s=outcome.duration_s,
            exit_code=outcome.exit_code,
            reason="" if ok else f"exit code {outcome.exit_code}",
            stderr_tail=outcome.stderr_tail,
            output_path=str(outcome.stdout_path) if outcome.stdout_path is not None else "",
        )
