"""The run report (``REPORT.md``): what each agent did, files changed, costs, tokens,
durations and the measured speedup — every figure taken from the event log and the results
agents published through the door, none written by a model.

Agents' words (result summaries and file names, reasons with their stderr, warnings, the
titles of tasks they added) are quoted, never markup: a block of several lines in a code fence
longer than any backtick run in it, a line with every Markdown character escaped. An agent
cannot add a heading, a table row, a link or HTML to the report, nor fake MAOS's own lines.

A plan may end with a synthesizer task (an agent that writes prose); this report is the
factual part next to it, written by MAOS itself when the run ends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from maos.filemodes import private_dir, write_private
from maos.model import RunState, TaskState
from maos.results import PublishedResult, read_result
from maos.sanitize import printable
from maos.store.base import Store
from maos.summary import against_sequential, run_summary

MAX_SUMMARY_CHARS = 600
_MARKDOWN_CHARS = re.compile(r"([\\`*_\[\]<>#|~&])")
"""What can make markup inside a line (the line never starts with the text, so list and
numbering markers cannot)."""
_BACKTICKS = re.compile(r"`+")


def _line(text: str) -> str:
    """``text`` as one line of plain text in Markdown: newlines folded, markup escaped."""
    return _MARKDOWN_CHARS.sub(r"\\\1", " ".join(text.split()))


def _fence(text: str) -> list[str]:
    """``text`` as a fenced code block that it cannot close (its fence is longer than any
    run of backticks in it): shown as written, nothing in it rendered."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]


def _code(name: str) -> str:
    """``name`` (a file name) as inline code it cannot leave."""
    name = " ".join(name.split())
    longest = max((len(run) for run in _BACKTICKS.findall(name)), default=0)
    ticks = "`" * (longest + 1)
    return f"{ticks} {name} {ticks}" if longest else f"`{name}`"


async def published_results(store: Store, state: RunState) -> dict[str, PublishedResult]:
    found: dict[str, PublishedResult] = {}
    for task_id in state.tasks:
        result = await read_result(store, state.run_id, task_id)
        if result is not None:
            found[task_id] = result
    return found


def render_report(
    state: RunState, results: Mapping[str, PublishedResult], *, branch: str | None = None
) -> str:
    summary = run_summary(state)
    plan_name = state.plan.name if state.plan else "?"
    lines = [f"# Run {state.run_id}: {plan_name}", ""]
    makespan = summary["makespan_s"] or 0.0
    lines.append(
        f"**{state.status.value}** in {makespan:.1f} s; "
        + ", ".join(f"{count} {name}" for name, count in summary["counts"].items())
        + "."
    )
    if summary["speedup_vs_sequential"]:
        lines.append(
            f"The tasks took {summary['task_seconds']:.1f} s of agent time in all: "
            f"{against_sequential(summary['speedup_vs_sequential'])} than running them one after another."
        )
    if summary["cost_usd"] or summary["output_tokens"]:
        lines.append(
            f"Model spend: ${summary['cost_usd']:.4f}, {summary['input_tokens']} input and "
            f"{summary['output_tokens']} output tokens."
        )
    if branch:
        lines.append(f"The agents' work is merged on branch `{branch}`.")
    if state.summary:
        lines += ["", *_fence(state.summary)]
    lines += [
        "",
        "## Tasks",
        "",
        "| task | state | agent | attempts | duration | cost | tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    for task_id, task in state.tasks.items():
        usage = task.usage
        lines.append(
            f"| {task_id} | {task.state.value} | {_line(task.agent_id or '')} | {task.attempts} | "
            + (f"{task.duration_s:.1f} s" if task.duration_s is not None else "")
            + " | "
            + (f"${usage.cost_usd:.4f}" if usage else "")
            + " | "
            + (str(usage.input_tokens + usage.output_tokens) if usage else "")
            + " |"
        )
    lines += ["", "## What each agent did", ""]
    specs = state.plan.by_id() if state.plan is not None else {}
    for task_id, task in state.tasks.items():
        title = ""
        if (spec := specs.get(task_id)) is not None:
            title = spec.title or (spec.prompt.strip().splitlines() or [""])[0][:80]
        lines.append(f"### {task_id}" + (f": {_line(title)}" if title.strip() else ""))
        published = results.get(task_id)
        if published is not None:
            text = published.summary.strip()
            if len(text) > MAX_SUMMARY_CHARS:
                text = text[:MAX_SUMMARY_CHARS] + " …"
            lines += _fence(text) if text else ["(no summary)"]
            if published.files:
                lines.append("")
                lines.append("Files: " + ", ".join(_code(name) for name in published.files))
        elif task.state is TaskState.SUCCEEDED:
            lines.append(
                f"Succeeded; output in {_code(task.output_path)}."
                if task.output_path
                else "Succeeded; it printed nothing."
            )
        else:
            lines.append(task.state.value + (":" if task.reason else "."))
            if task.reason:
                lines += _fence(task.reason)
        for warning in task.warnings[:5]:
            lines.append(f"- warning: {_line(warning)}")
        lines.append("")
    # Agents wrote most of this: shown escaped, so that `cat REPORT.md` cannot be a terminal
    # command (clear the screen, write the clipboard).
    return printable("\n".join(lines).rstrip(), keep_newlines=True) + "\n"


async def write_report(store: Store, state: RunState, path: Path, *, branch: str | None = None) -> Path:
    results = await published_results(store, state)
    private_dir(path.parent)
    write_private(path, render_report(state, results, branch=branch))  # 0600, like the outputs
    return path
