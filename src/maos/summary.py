"""Machine-readable summaries of a run, derived from its ``RunState`` (``--json`` outputs)."""

from __future__ import annotations

from typing import Any

from maos.model import RunState, TaskState


def run_summary(state: RunState) -> dict[str, Any]:
    """Everything ``maos run --json`` and ``maos status --json`` print, as plain JSON data."""
    makespan = None
    if state.started_at is not None and state.finished_at is not None:
        makespan = state.finished_at - state.started_at
    usage = state.usage()
    busy_s = sum(task.duration_s or 0.0 for task in state.tasks.values())
    tasks: dict[str, Any] = {}
    for task_id, task in state.tasks.items():
        tasks[task_id] = {
            "state": task.state.value,
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
        "speedup_vs_sequential": (busy_s / makespan) if makespan else None,
        "counts": {name: number for name, number in state.counts().items() if number},
        "failed": [task_id for task_id, task in state.tasks.items() if task.state is TaskState.FAILED],
        "skipped": [task_id for task_id, task in state.tasks.items() if task.state is TaskState.SKIPPED],
        "needs_attention": {
            task_id: task.attention for task_id, task in state.tasks.items() if task.attention
        },
        "cost_usd": usage.cost_usd,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "summary": state.summary,
        "events": state.event_count,
        "rejected_events": state.rejected,
        "stale_reports": state.stale_reports,
        "rejections": [rejection.model_dump(mode="json") for rejection in state.rejections[-10:]],
        "tasks": tasks,
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
    skipped = [task_id for task_id, task in state.tasks.items() if task.state is TaskState.SKIPPED]
    if skipped:
        lines.append(f"skipped because a dependency failed: {', '.join(skipped)}")
    return "\n".join(lines)
