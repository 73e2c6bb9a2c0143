"""Incremental views of a run's state for the orchestrator's loop.

``RunState`` is the truth (the fold of the log); these views answer "which tasks are ready,
busy, waiting for a retry, just changed" in O(change) instead of O(plan), so a scheduling
step on a 10,000-task plan costs what changed, not the plan's size. Rebuilt from the state on
resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from maos.events import (
    DeadlockFound,
    Event,
    RunRestored,
    RunRetried,
    RunStarted,
    TaskAdded,
    TaskAddRefused,
    TaskAddRequested,
    TaskAssigned,
    TaskFailed,
    TaskSucceeded,
)
from maos.model import RunState, TaskState


@dataclass
class RunTracker:
    """Incremental views of ``RunState`` so that a scheduling step costs O(change), not O(plan)."""

    busy: dict[str, str] = field(default_factory=dict)  # task id -> agent id (ASSIGNED/RUNNING)
    load: dict[str, int] = field(default_factory=dict)  # agent id -> tasks assigned to it so far
    ready: set[str] = field(default_factory=set)
    needs_backoff: set[str] = field(default_factory=set)  # RETRY_WAIT without retry_at yet
    retry_waiting: set[str] = field(default_factory=set)
    changed: set[str] | None = None  # None: look at every task (start of a run, restore)
    cost_usd: float = 0.0  # model spend reported so far (stale attempts too: it was spent)
    add_requests: list[TaskAddRequested] = field(default_factory=list)  # not answered yet
    plan_changed: bool = False  # a task was added: the plan index is out of date
    finished: set[str] = field(default_factory=set)  # tasks in a terminal state

    @property
    def terminal(self) -> int:
        """Tasks in a terminal state: counted from task states, never from events (a late
        report of a task that ended already must not count it twice)."""
        return len(self.finished)

    def observe(self, event: Event, state: RunState) -> None:
        if isinstance(event, TaskSucceeded | TaskFailed) and event.usage is not None:
            self.cost_usd += event.usage.cost_usd
        if not state.applied:
            return  # rejected or stale: the state did not change
        if isinstance(event, TaskAddRequested):
            self.add_requests.append(event)
            return
        if isinstance(event, TaskAdded | TaskAddRefused):
            self.add_requests = [r for r in self.add_requests if r.request_id != event.request_id]
            if isinstance(event, TaskAdded):
                self.plan_changed = True
                self.changed = None
            return
        if isinstance(event, RunRetried | RunRestored):
            self.rebuild(state)  # tasks went back to PENDING, maybe with a fixed plan
            self.plan_changed = True
            return
        # The task whose state the event changed: a deadlock's victim is failed or requeued.
        if isinstance(event, DeadlockFound):
            task_id = event.victim if event.action != "fail_run" else None
        else:
            task_id = getattr(event, "task_id", None)
        if task_id is None:
            if isinstance(event, RunStarted):
                self.__init__()  # type: ignore[misc]
            return
        task = state.tasks[task_id]
        for group in (self.ready, self.needs_backoff, self.retry_waiting):
            group.discard(task_id)
        self.busy.pop(task_id, None)
        match task.state:
            case TaskState.READY:
                self.ready.add(task_id)
            case TaskState.ASSIGNED | TaskState.RUNNING:
                self.busy[task_id] = task.agent_id or ""
                if isinstance(event, TaskAssigned):
                    self.load[event.agent_id] = self.load.get(event.agent_id, 0) + 1
            case TaskState.RETRY_WAIT:
                self.retry_waiting.add(task_id)
                if task.retry_at is None:
                    self.needs_backoff.add(task_id)
            case _:
                pass
        if task.state.terminal and task_id not in self.finished:
            self.finished.add(task_id)
            if self.changed is not None:
                self.changed.add(task_id)

    def rebuild(self, state: RunState) -> None:
        """Recompute every view from a replayed state (after ``resume``)."""
        self.__init__()  # type: ignore[misc]
        for task_id, task in state.tasks.items():
            if task.state is TaskState.READY:
                self.ready.add(task_id)
            elif task.state in (TaskState.ASSIGNED, TaskState.RUNNING):
                self.busy[task_id] = task.agent_id or ""
            elif task.state is TaskState.RETRY_WAIT:
                self.retry_waiting.add(task_id)
                if task.retry_at is None:
                    self.needs_backoff.add(task_id)
            elif task.state.terminal:
                self.finished.add(task_id)
            if task.usage is not None:
                self.cost_usd += task.usage.cost_usd
            if task.agent_id is not None:
                self.load[task.agent_id] = self.load.get(task.agent_id, 0) + 1
        self.changed = None
        # A state rebuilt from a checkpoint or a log may hold another plan than the one the
        # orchestrator indexed (tasks added, or lost with the log): index it again.
        self.plan_changed = True

    def take_changed(self) -> set[str] | None:
        changed, self.changed = self.changed, set()
        return changed

    def restore(self, changed: set[str] | None) -> None:
        if changed is None or self.changed is None:
            self.changed = None
        else:
            self.changed |= changed
