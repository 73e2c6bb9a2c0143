"""Machine-readable summaries of a run, derived from its ``RunState`` (``--json`` outputs)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from maos.model import RunState, RunStatus, TaskState

DENIAL_PREFIX = "permission denied: "
"""How a ``task_warning`` about a denied tool call starts (``maos.agents.claude_code``); the
tool's name follows, then its arguments in parentheses."""
EDIT_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
"""The tools ``--permission-mode acceptEdits`` allows."""


def against_sequential(speedup: float) -> str:
    """``speedup_vs_sequential`` in words: "2.31x faster", or "1.27x slower" below 1 (a run of
    tasks shorter than their agents' starts), never "0.79x faster"."""
    return f"{speedup:.2f}x faster" if speedup >= 1 else f"{1 / speedup:.2f}x slower"


def run_summary(state: RunState) -> dict[str, Any]:
    """Everything ``maos run --json`` and ``maos status --json`` print, as plain JSON data."""
    makespan = None
    if state.started_at is not None and state.finished_at is not None:
        makespan = state.finished_at - state.started_at
    usage = state.usage()
    busy_s = sum(task.duration_s or 0.0 for task in state.tasks.values())
    measured = sum(1 for task in state.tasks.values() if task.duration_s is not None)
    tasks: dict[str, Any] = {}
    for task_id, task in state.tasks.items():
        tasks[task_id] = {
            "state": task.state.value,  # `maos status`: "interrupted" in a run nobody drives
            "logged_state": task.state.value,
            "attempts": task.attempts,
            "agent": task.agent_id,
            "duration_s": task.duration_s,
            "exit_code": task.exit_code,
            "reason": task.reason or None,
            "output": task.output_path or None,
            "warnings": task.warnings,
            "needs_attention": task.attention,
            "cost_usd": task.usage.cost_usd if task.usage else None,
            "tokens": (task.usage.input_tokens + task.usage.output_tokens) if task.usage else None,
            # why its latest attempt went to its agent: the fitness parts (maos.scheduler)
            "fitness": task.fitness.model_dump() if task.fitness else None,
        }
    return {
        "run_id": state.run_id,
        "plan": state.plan.name if state.plan else None,
        "status": state.status.value,
        "ok": state.status.value == "succeeded",
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "makespan_s": makespan,
        "task_seconds": busy_s,
        # Meaningful only for a run of several tasks that ran in one go (no resume or retry:
        # their makespan holds the time nobody drove the run).
        "speedup_vs_sequential": (busy_s / makespan)
        if makespan and measured >= 2 and not state.interruptions and state.status is RunStatus.SUCCEEDED
        else None,
        "counts": {name: number for name, number in state.counts().items() if number},
        "failed": [task_id for task_id, task in state.tasks.items() if task.state is TaskState.FAILED],
        "skipped": [task_id for task_id, task in state.tasks.items() if task.state is TaskState.SKIPPED],
        "needs_attention": {
            task_id: task.attention for task_id, task in state.tasks.items() if task.attention
        },
        "permission_denials": dict(permission_denials(state)),
        "cost_usd": usage.cost_usd,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "summary": state.summary,
        "events": state.event_count,
        "rejected_events": state.rejected,
        "stale_reports": state.stale_reports,
        "rejections": [rejection.model_dump(mode="json") for rejection in state.rejections[-10:]],
        "tasks": tasks,
        "agents": {
            agent.id: {
                "role": agent.role,
                "capabilities": list(agent.capabilities),
                "runtime": agent.runtime,
                "model": agent.model,
                "lost": state.lost_agents.get(agent.id),
            }
            for agent in state.agents.values()
        },
    }


def failure_summary(state: RunState) -> str:
    """One paragraph a user can act on: which task failed, why, and what was skipped."""
    lines: list[str] = []
    for task_id, task in state.tasks.items():
        if task.state is TaskState.FAILED:
            code = (
                f", exit code {task.exit_code}"
                if task.exit_code is not None and "exit code" not in task.reason
                else ""
            )
            lines.append(f"task {task_id!r} failed after {task.attempts} attempt(s): {task.reason}{code}")
            if task.stderr_tail:
                tail = "\n".join("    " + line for line in task.stderr_tail.splitlines()[-10:])
                lines.append(f"  stderr (last lines):\n{tail}")
    skipped = {tid: task.reason for tid, task in state.tasks.items() if task.state is TaskState.SKIPPED}
    doomed = [task_id for task_id, reason in skipped.items() if reason.startswith("dependency ")]
    if doomed:
        lines.append(f"skipped because a dependency failed: {', '.join(doomed)}")
    lines += [
        f"task {task_id!r} skipped: {reason or 'no reason recorded'}"
        for task_id, reason in skipped.items()
        if task_id not in doomed
    ]
    return "\n".join(lines)


def denied_tool(warning: str) -> str | None:
    """The tool a warning says was denied, or None if it is not a denial."""
    if not warning.startswith(DENIAL_PREFIX):
        return None
    return warning[len(DENIAL_PREFIX) :].split("(", 1)[0].strip() or "?"


def permission_denials(state: RunState) -> Counter[str]:
    """Denied tool calls of the run (every attempt), per tool name."""
    return Counter(
        name
        for task in state.tasks.values()
        for warning in task.warnings
        if (name := denied_tool(warning)) is not None
    )


def how_to_allow(tools: Iterable[str]) -> str:
    """How to let agents use ``tools``: in the plan, for the run, or (edits only) by mode."""
    names = sorted(set(tools))
    ways = [f"--allowed-tools {','.join(names)}", f"allowed_tools: [{', '.join(names)}]"]
    if names and all(name in EDIT_TOOLS for name in names):
        ways.insert(0, "--permission-mode acceptEdits")
    return "allow with " + ", ".join(ways[:-1]) + " or " + ways[-1]


def denials_line(state: RunState) -> str:
    """E.g. "2 tool calls denied (Write times 2): allow with ..."; empty when nothing was denied."""
    denials = permission_denials(state)
    if not denials:
        return ""
    total = sum(denials.values())
    tools = ", ".join(f"{name} ×{number}" for name, number in denials.most_common())
    return f"{total} tool call{'s' if total != 1 else ''} denied ({tools}): {how_to_allow(denials)}"
