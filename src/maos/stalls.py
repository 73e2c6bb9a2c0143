"""Work no agent can take: lost agents, stalled tasks, and the stall timeout.

The orchestrator feeds ``StallWatch`` the reports it reads back and asks it, on each step,
what to write:

- **Lost agents.** An agent whose process is killed by a signal MAOS did not send (an
  attempt that ends with a negative exit code: SIGKILL from the OOM killer, a crash) is
  restarted for its next task. After ``AGENT_DEATHS_LOST`` such deaths in a row (no success
  in between) the run gives up on it: ``agent_lost``, and no task goes to it again.
- **Stalled tasks.** A READY task that no remaining agent may take (none has its
  capabilities or takes its runtime: ``maos.team.why_no_agent``) is reported at once with
  ``task_stalled`` (the "needs attention" mark, a CLI line, the dashboard), and cancelled
  after the run's ``stall_timeout_s`` (its dependents are then skipped, and the run fails
  with the diagnosis first in its summary) instead of waiting forever.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from maos.events import AgentLost, Event, TaskCancelled, TaskFailed, TaskStalled, TaskSucceeded
from maos.model import AgentSpec, RunState, TaskState
from maos.scheduler import PlanIndex, takes_runtime
from maos.team import why_no_agent

__all__ = ["AGENT_DEATHS_LOST", "StallWatch", "able_agents"]

log = logging.getLogger("maos.stalls")

AGENT_DEATHS_LOST = 2
"""Deaths in a row (attempts killed by a signal MAOS did not send) after which an agent is lost."""


def able_agents(
    required: Collection[str], runtime: str, agents: Sequence[AgentSpec], lost: Collection[str]
) -> list[AgentSpec]:
    """The agents not lost that pass the scheduler's hard filters for such a task."""
    needed = set(required)
    return [
        agent
        for agent in agents
        if agent.id not in lost and needed <= set(agent.capabilities) and takes_runtime(agent, runtime)
    ]


@dataclass
class StallWatch:
    timeout_s: float
    deaths: dict[str, int] = field(default_factory=dict)  # agent id -> deaths in a row
    since: dict[str, float] = field(default_factory=dict)  # stalled task -> when first seen so
    diagnosis: list[str] = field(default_factory=list)  # of the tasks cancelled for a stall
    news: list[Event] = field(default_factory=list)  # agent_lost events to write
    _restrictive: tuple[int, bool] | None = None  # (id of the plan index, any task needs capabilities)

    def observe(self, event: TaskSucceeded | TaskFailed, state: RunState) -> None:
        """An applied report: count the deaths of its agent in a row."""
        agent_id = event.agent_id
        if isinstance(event, TaskSucceeded):
            self.deaths.pop(agent_id, None)
            return
        if event.exit_code is None or event.exit_code >= 0 or agent_id not in state.agents:
            return
        if agent_id in state.lost_agents:
            return
        self.deaths[agent_id] = deaths = self.deaths.get(agent_id, 0) + 1
        if deaths == AGENT_DEATHS_LOST:
            reason = (
                f"its process died {deaths} times in a row (last: task {event.task_id!r} attempt "
                f"{event.attempt}, killed by signal {-event.exit_code})"
            )
            log.info("run %s: agent %s lost: %s", state.run_id, agent_id, reason)
            self.news.append(AgentLost(agent_id=agent_id, reason=reason))

    def take_news(self) -> list[Event]:
        news, self.news = self.news, []
        return news

    def check(
        self,
        state: RunState,
        index: PlanIndex,
        ready: Collection[str],
        agents: Sequence[AgentSpec],
        now: float,
    ) -> list[Event]:
        """``task_stalled`` for READY tasks that just became untakeable, ``task_cancelled`` for
        those untakeable for ``timeout_s``. Costs nothing in a run where any agent takes any
        task (it has agents, none lost, no capabilities required, no runtime restricted)."""
        if not self._could_stall(index, agents, state):
            self.since.clear()
            return []
        lost = state.lost_agents
        live = [agent for agent in agents if agent.id not in lost]
        verdicts: dict[tuple[frozenset[str], str], str | None] = {}
        events: list[Event] = []
        still: set[str] = set()
        for task_id in sorted(ready, key=index.order.__getitem__):
            run = state.tasks.get(task_id)
            if run is None or run.state is not TaskState.READY:
                continue
            spec = index.specs[task_id]
            key = (index.required[task_id], spec.runtime)
            if key not in verdicts:
                verdicts[key] = self._reason(key[0], key[1], live, agents)
            reason = verdicts[key]
            if reason is None:
                continue
            still.add(task_id)
            first = self.since.setdefault(task_id, now)
            if not run.stalled:
                log.info("run %s: task %s stalled: %s", state.run_id, task_id, reason)
                events.append(TaskStalled(task_id=task_id, reason=reason, timeout_s=self.timeout_s))
            elif now - first >= self.timeout_s:
                why = f"stalled: no agent could take it for {self.timeout_s:g}s: {run.stalled}"
                self.diagnosis.append(f"task {task_id!r} {why}")
                events.append(TaskCancelled(task_id=task_id, reason=why))
        for task_id in list(self.since):
            if task_id not in still:
                del self.since[task_id]
        return events

    def summary(self, rest: str) -> str:
        """The run's final summary: the stall diagnosis first, then ``rest``."""
        return "\n".join([*self.diagnosis, rest] if rest else self.diagnosis)

    def _could_stall(self, index: PlanIndex, agents: Sequence[AgentSpec], state: RunState) -> bool:
        if self._restrictive is None or self._restrictive[0] != id(index):
            self._restrictive = (id(index), any(index.required.values()))
        return (
            self._restrictive[1]
            or bool(state.lost_agents)
            or not agents  # a resumed run whose log lists none
            or any(agent.runtime for agent in agents)
        )

    @staticmethod
    def _reason(
        required: frozenset[str],
        runtime: str,
        live: Sequence[AgentSpec],
        agents: Sequence[AgentSpec],
    ) -> str | None:
        reason = why_no_agent(required, runtime, live)
        if reason is None:
            return None
        gone = [agent.id for agent in able_agents(required, runtime, agents, ())]
        if gone:
            return f"{reason} left ({', '.join(gone)}, which could take it, lost: see agent_lost)"
        return reason
