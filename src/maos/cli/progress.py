"""Live progress of a run in the terminal: one line per running agent, counts, elapsed time.

On a terminal it is a ``rich.live.Live`` view refreshed a few times a second; elsewhere (a
pipe, a CI log) it prints one plain line per task change instead. Agent text (output lines,
failure reasons, task ids an agent added) is shown through ``maos.sanitize.printable`` and never
as rich markup: it cannot move the cursor, clear the screen or write the clipboard.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from maos.door import BUDGET_SPENT
from maos.events import (
    AgentApiRetry,
    AgentLost,
    AgentOutput,
    DeadlockFound,
    DoorRefused,
    Event,
    RunFinished,
    TaskDeadlinePassed,
    TaskFailed,
    TaskSkipped,
    TaskStalled,
    TaskStarted,
    TaskSucceeded,
    TaskWarning,
)
from maos.model import RunState, TaskState
from maos.sanitize import printable
from maos.summary import denied_tool

SHOWN_REFUSALS = 3
"""Door refusals of one task shown as they happen; the audit (``maos audit RUN``) has them all."""

STATE_STYLES = {
    TaskState.PENDING: "dim",
    TaskState.READY: "cyan",
    TaskState.ASSIGNED: "cyan",
    TaskState.RUNNING: "yellow",
    TaskState.RETRY_WAIT: "magenta",
    TaskState.SUCCEEDED: "green",
    TaskState.FAILED: "bold red",
    TaskState.SKIPPED: "red",
    TaskState.CANCELLED: "red",
}


@dataclass
class _Running:
    task_id: str
    attempt: int
    pid: int
    started: float
    last_line: str = ""


@dataclass
class ProgressView:
    """Feeds on the orchestrator's event hook; renders on demand."""

    console: Console
    state: RunState | None = None
    running: dict[str, _Running] = field(default_factory=dict)  # agent id -> what it runs
    stalled: dict[str, str] = field(default_factory=dict)  # READY task no agent can take -> why
    started: float = field(default_factory=time.monotonic)
    live: Live | None = None
    # door calls refused per task; None: of callers without a valid token (``_refused``)
    refusals: dict[str | None, int] = field(default_factory=dict)
    refusals_elided: set[str | None] = field(default_factory=set)

    def hook(self, event_id: str, event: Event, state: RunState) -> None:
        self.state = state
        task_id = getattr(event, "task_id", None)
        if task_id in self.stalled and not isinstance(event, TaskStalled):
            run = state.tasks.get(task_id)
            if run is None or not run.stalled or run.state is not TaskState.READY:
                del self.stalled[task_id]
        match event:
            case TaskStarted():
                self.running[event.agent_id] = _Running(
                    event.task_id, event.attempt, event.pid, time.monotonic()
                )
                self._plain(f"started   {event.task_id} on {event.agent_id} (attempt {event.attempt})")
            case AgentOutput():
                current = self.running.get(event.agent_id)
                if current is not None and event.text.strip():
                    current.last_line = printable(event.text.strip())
            case TaskWarning() if denied_tool(event.text) is not None:
                self._flag(event.agent_id, f"{event.agent_id} {event.task_id}: {event.text}")
            case AgentApiRetry():
                self._flag(event.agent_id, f"{event.agent_id} {event.task_id}: {api_retry_text(event)}")
            case TaskSucceeded():
                self.running.pop(event.agent_id, None)
                self._plain(f"succeeded {event.task_id} in {event.duration_s:.2f}s")
            case TaskFailed():
                self.running.pop(event.agent_id, None)
                self.note(f"failed    {event.task_id} (attempt {event.attempt}): {event.reason}", style="red")
            case TaskSkipped():
                self.note(f"skipped   {event.task_id}: {event.because}", style="red")
            case AgentLost():
                self.note(f"lost      agent {event.agent_id}: {event.reason}", style="red")
            case TaskStalled():
                self.stalled[event.task_id] = event.reason
                self.note(
                    f"stalled   {event.task_id}: no agent can take it: {event.reason}; cancelled in "
                    f"{event.timeout_s:g}s unless one turns up (--stall-timeout-s)",
                    style="bold yellow",
                )
            case DeadlockFound():
                what = {"fail_task": "failed", "requeue_task": "requeued", "fail_run": "stops the run"}
                self.note(
                    f"deadlock  {event.detail}: {event.victim or 'the run'} {what[event.action]}",
                    style="bold red",
                )
            case TaskDeadlinePassed():
                self.note(f"deadline  {event.task_id} passed its deadline: {event.action}", style="red")
            case DoorRefused():
                self._refused(event)
            case RunFinished():
                self._plain(f"run {event.status.value}")
            case _:
                pass

    def _refused(self, event: DoorRefused) -> None:
        """A door call refused (a permission, a stale attempt, a spent budget): a line for each of
        the first ``SHOWN_REFUSALS`` of a task, then one saying the rest are in the audit; the
        refusal that says its door budget is spent (logged once) is always shown. Refusals of
        callers without a valid token for the task they name share one count, whatever they
        name: they must neither hide a task's own nor flood the terminal."""
        key = event.task if event.verified else None
        count = self.refusals[key] = self.refusals.get(key, 0) + 1
        if count <= SHOWN_REFUSALS or event.reason.startswith(BUDGET_SPENT):
            who = f"{event.task or '?'} ({event.claimed_agent})"
            self.note(f"refused   {who}: {event.reason}", style="yellow")
        elif key not in self.refusals_elided and self.state is not None:
            self.refusals_elided.add(key)
            whose = key if key is not None else "callers without a valid token"
            self.note(f"refused   {whose}: more refusals; see maos audit {self.state.run_id}", style="yellow")

    def _flag(self, agent_id: str, line: str) -> None:
        """A denied tool call or a model API retry: a line as it happens, and the agent's row."""
        current = self.running.get(agent_id)
        if current is not None:
            current.last_line = "⚠ " + printable(line.split(": ", 1)[-1])
        self.note(line, style="yellow")

    def _plain(self, line: str, style: str = "") -> None:
        """A line only where there is no live view (a pipe, a log file): every start and end."""
        if self.live is None and not self.console.is_terminal:
            self.note(line, style)

    def note(self, line: str, style: str = "") -> None:
        """A line the user must see (a failure, Ctrl-C): above the live view on a terminal,
        with the elapsed time elsewhere. Agent text in it is shown escaped."""
        elapsed = time.monotonic() - self.started
        self.console.print(
            f"[{elapsed:7.2f}s] {printable(line)}",
            style=style or None,
            highlight=False,
            markup=False,
            soft_wrap=True,  # one event, one line (logs are grepped)
        )

    def render(self) -> RenderableType:
        state = self.state
        if state is None or state.plan is None:
            return Text("starting…")
        elapsed = time.monotonic() - self.started
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        table.add_column("agent")
        table.add_column("task")
        table.add_column("pid", justify="right")
        table.add_column("elapsed", justify="right")
        table.add_column("last output", overflow="ellipsis", no_wrap=True, max_width=70)
        for agent_id in sorted(self.running):
            item = self.running[agent_id]
            task_run = state.tasks.get(item.task_id)
            attention = task_run.attention if task_run is not None else None
            task = Text(printable(item.task_id) + (f" (#{item.attempt})" if item.attempt > 1 else ""))
            if attention:
                task.append(f" ⚠ {printable(attention)}", style="bold yellow")
            table.add_row(
                Text(printable(agent_id)),
                task,
                str(item.pid),
                f"{time.monotonic() - item.started:5.1f}s",
                Text(item.last_line),
            )
        counts = Text()
        for task_state, number in state.counts().items():
            if number:
                counts.append(f"{task_state} {number}  ", style=STATE_STYLES[TaskState(task_state)])
        header = Text.assemble(
            (f"run {printable(state.run_id)}", "bold"),
            f"  plan {printable(repr(state.plan.name))}  {len(state.tasks)} tasks  ",
            (f"{elapsed:.1f}s", "bold"),
            f"  {state.status.value}",
        )
        usage = state.usage()
        if usage.cost_usd or usage.output_tokens:
            header.append(f"  ${usage.cost_usd:.4f}  {usage.input_tokens + usage.output_tokens} tokens")
        waiting = [
            Text(f"⚠ {printable(task_id)}: no agent can take it: {printable(why)}", style="bold yellow")
            for task_id, why in sorted(self.stalled.items())[:5]
        ]
        return Group(header, counts, table, *waiting)

    def start(self) -> None:
        if self.console.is_terminal:
            # transient: the live table goes when the run ends, so no stale "running" lines
            # stay above the final summary
            self.live = Live(
                get_renderable=self.render, console=self.console, refresh_per_second=8, transient=True
            )
            self.live.start()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def api_retry_text(event: AgentApiRetry) -> str:
    """E.g. "model API retry 2/10 (HTTP 529 overloaded), next in 4.0s"."""
    of = f"/{event.max_retries}" if event.max_retries else ""
    status = f"HTTP {event.error_status}" if event.error_status is not None else "connection error"
    why = f"{status} {event.error}".strip() if event.error else status
    text = f"model API retry {event.api_attempt}{of} ({why})"
    if event.retry_delay_ms is not None:
        text += f", next in {event.retry_delay_ms / 1000:.1f}s"
    return text
