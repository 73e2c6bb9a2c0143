"""Pure scheduling decisions: run state in, decisions out.

Nothing here does I/O, reads a clock or draws a random number: time comes in as an argument
(``now``), and every tie is broken by a fixed order, so the same input always gives the same
output. The orchestrator owns the loop; on each turn it asks, in this order:

1. ``to_skip(state, index)`` — tasks that can never run because a dependency failed, was
   skipped or was cancelled. The answer is the whole transitive closure, listed so that a
   task always comes after the dependency that dooms it: append one ``task_skipped`` per
   entry, in order, and nothing is left to propagate.
2. ``newly_ready(state, index)`` — PENDING tasks whose own dependencies have all succeeded
   (emit ``task_ready``). A task never waits for unrelated siblings: there is no "superstep".
3. ``retry_due(state, index, now)`` — RETRY_WAIT tasks whose backoff is over (emit
   ``task_ready``); ``next_wakeup(state)`` says when to look again.
4. ``decide(state, index, free_agents, history, limit=...)`` — which READY task goes to which
   free agent, with the fitness score to record in ``task_assigned``.
5. ``unrunnable(state, index, agents)`` — stall diagnosis: tasks that no agent of the run can
   ever take, because none has all the capabilities the task requires.

``PlanIndex.build(plan)`` precomputes the graph once per plan (children, dependencies, plan
order, required capabilities); the orchestrator keeps it for the run, which keeps every call
above linear in the size of the plan or better (``changed=`` narrows ready/skip checks to
the neighbourhood of the tasks that just changed).

**Fitness** (spec FR-2.2) of agent *a* for task *t*::

    0.4 * capability_match + 0.3 * workload_balance + 0.3 * history_success_rate

- ``capability_match = coverage * role_fit``. *coverage* is the fraction of the task's required
  capabilities the agent has (1.0 when it requires none). *role_fit* is 1.0 when the task asks
  for no particular role (``role == "general"``) or the agent has exactly that role, 0.5 when
  the agent is a generalist (``role == "general"``) standing in for a specialist, and 0.0 for
  an agent of another specialist role. Required capabilities are also a **hard filter**:
  ``decide`` never gives a task to an agent that lacks one of them (such an agent would fail
  the task, not just do it worse); roles are soft, so a plan naming roles still runs on
  ``--agents N`` generalists.
- ``workload_balance = 1 - load(a) / max(max load over the run's agents, 1)`` where *load* is
  the number of tasks the agent has been assigned in this run: it spreads work. Within one
  ``decide`` call the load of each chosen agent is bumped before the next task is placed,
  so one call placing *k* tasks equals *k* calls placing one each.
- ``history_success_rate`` is ``History.success_rate(agent.role, task.task_kind)``: the
  Laplace-smoothed ``(successes + 1) / (attempts + 2)`` of that role on that kind of task,
  so a pair never seen scores 0.5 and the score follows outcomes as they are recorded.

**Order of work**: READY tasks by priority (higher first), then ``ready_at`` (when the task first
became READY, earlier first, so a retried or requeued task keeps its place;
unknown last), then plan order (index in ``plan.tasks``). Each task, in that order, gets the
free agent with the highest fitness; equal scores go to the smallest agent id. A task no free
agent may take (hard filter) is passed over this turn — it does not block the tasks behind it.
When the plan's tasks hold resources (``maos.resources``), the longest chain of dependents
(the critical path) comes right after priority, and a task the free units cannot cover is
passed over but blocks its resources for the tasks behind it (see ``decide``).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from maos.errors import PlanError
from maos.model import (
    RETRYABLE_TASK_STATES,
    AgentSpec,
    Plan,
    RunState,
    RunStatus,
    TaskRun,
    TaskSpec,
    TaskState,
)
from maos.resources import capacities, critical_path, free_units, held, shortfall

__all__ = [
    "CAPABILITY_WEIGHT",
    "HISTORY_WEIGHT",
    "WORKLOAD_WEIGHT",
    "Fitness",
    "History",
    "Outcomes",
    "Placement",
    "PlanIndex",
    "ReadyQueue",
    "Skip",
    "Unrunnable",
    "decide",
    "fitness",
    "fitness_parts",
    "load_from_state",
    "newly_ready",
    "next_wakeup",
    "retry_due",
    "retry_plan_problems",
    "takes_runtime",
    "to_retry",
    "to_skip",
    "unrunnable",
]

CAPABILITY_WEIGHT = 0.4
WORKLOAD_WEIGHT = 0.3
HISTORY_WEIGHT = 0.3

GENERAL_ROLE = "general"
_GENERALIST_ROLE_FIT = 0.5

_DOOMED = RETRYABLE_TASK_STATES  # a task in one of them will not succeed (in this run)
_SKIPPABLE = frozenset({TaskState.PENDING, TaskState.READY, TaskState.RETRY_WAIT})
_BUSY = frozenset({TaskState.ASSIGNED, TaskState.RUNNING})


# --------------------------------------------------------------------------- plan index


@dataclass(frozen=True, slots=True)
class PlanIndex:
    """The plan's graph, precomputed once (O(tasks + edges)) and kept for the whole run.

    Every mapping has an entry for every task id. ``children`` and ``deps`` list ids in plan
    order and without duplicates. Cycles are not checked here (``maos.plan`` validates plans);
    a task on a cycle simply never becomes ready.
    """

    plan: Plan
    ids: tuple[str, ...]
    order: Mapping[str, int]
    specs: Mapping[str, TaskSpec]
    deps: Mapping[str, tuple[str, ...]]
    children: Mapping[str, tuple[str, ...]]
    required: Mapping[str, frozenset[str]]
    # Length of the longest chain from each task to the end: the order among tasks competing
    # for resources (computed only when a task holds resources; maos.resources).
    depth: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, plan: Plan) -> PlanIndex:
        """Index ``plan``; raise ``PlanError`` listing duplicate ids and unknown dependencies."""
        ids = tuple(task.id for task in plan.tasks)
        order = {task_id: position for position, task_id in enumerate(ids)}
        problems: list[str] = []
        if len(order) != len(ids):
            seen: set[str] = set()
            for task_id in ids:
                if task_id in seen:
                    problems.append(f"task id {task_id!r} appears more than once")
                seen.add(task_id)
        children: dict[str, list[str]] = {task_id: [] for task_id in ids}
        deps: dict[str, tuple[str, ...]] = {}
        for task in plan.tasks:
            unique = tuple(dict.fromkeys(task.depends_on))
            for dep in unique:
                if dep not in order:
                    problems.append(f"task {task.id!r} depends on unknown task {dep!r}")
                else:
                    children[dep].append(task.id)
            deps[task.id] = tuple(sorted(unique, key=lambda dep: order.get(dep, -1)))
        if problems:
            raise PlanError(problems)
        specs = {task.id: task for task in plan.tasks}
        # Tasks are visited in plan order, so every child list is already in plan order.
        kids = {task_id: tuple(found) for task_id, found in children.items()}
        depth = critical_path(specs, kids) if any(task.resources for task in plan.tasks) else {}
        return cls(
            plan=plan,
            ids=ids,
            order=order,
            specs=specs,
            deps=deps,
            children=kids,
            required={task.id: frozenset(task.capabilities) for task in plan.tasks},
            depth=depth,
        )


# --------------------------------------------------------------------------- ready / skip / retry


def _all_succeeded(tasks: Mapping[str, TaskRun], deps: tuple[str, ...]) -> bool:
    for dep in deps:
        run = tasks.get(dep)
        if run is None or run.state is not TaskState.SUCCEEDED:
            return False
    return True


def _deps_done(task: TaskSpec, tasks: Mapping[str, TaskRun], deps: tuple[str, ...]) -> bool:
    """A consensus waits for its replicas to end, whatever the outcome (the quorum decides);
    any other task for every dependency to succeed."""
    if task.replicas > 1:
        return all((run := tasks.get(dep)) is not None and run.state.terminal for dep in deps)
    return _all_succeeded(tasks, deps)


def newly_ready(state: RunState, index: PlanIndex, changed: Iterable[str] | None = None) -> list[str]:
    """Ids of PENDING tasks whose every dependency has SUCCEEDED, in plan order (a consensus:
    whose every replica has ended).

    ``changed=None`` examines every task (use it at the start of a run and after a restore).
    Otherwise only the ``changed`` tasks and their children are examined: pass the ids whose
    state changed since the last call (in practice: the tasks that just succeeded), which
    makes the call proportional to their out-degree instead of the plan size.
    """
    tasks = state.tasks
    if changed is None:
        candidates: Iterable[str] = index.ids
    else:
        found: set[str] = set()
        for task_id in changed:
            if task_id in index.order:
                found.add(task_id)
                found.update(index.children[task_id])
        candidates = sorted(found, key=index.order.__getitem__)
    result: list[str] = []
    for task_id in candidates:
        run = tasks.get(task_id)
        if (
            run is not None
            and run.state is TaskState.PENDING
            and _deps_done(index.specs[task_id], tasks, index.deps[task_id])
        ):
            result.append(task_id)
    return result


class Skip(NamedTuple):
    """A task that can no longer run, and why (the text for ``task_skipped.because``)."""

    task_id: str
    because: str


def to_skip(state: RunState, index: PlanIndex, changed: Iterable[str] | None = None) -> list[Skip]:
    """Tasks (PENDING, READY or RETRY_WAIT) doomed by a FAILED, SKIPPED or CANCELLED dependency.

    Computes the transitive closure in one call: if ``a`` failed, ``b`` depends on ``a`` and
    ``c`` on ``b``, both ``b`` and ``c`` are returned, ``b`` first. Each entry names the
    dependency through which it was reached — an already doomed task or one listed earlier
    in the same answer — and, when that dependency is itself being skipped, the root cause:
    ``"dependency 'a' failed"``, ``"dependency 'b' skipped (root cause: 'a' failed)"``.

    ``changed=None`` starts from every doomed task in the plan; otherwise only from the
    ``changed`` ids that are doomed (pass those that just failed or were cancelled).
    Starting points are taken in plan order, so the answer is deterministic.
    """
    tasks = state.tasks
    if changed is None:
        starts: Iterable[str] = index.ids
    else:
        starts = sorted({t for t in changed if t in index.order}, key=index.order.__getitem__)
    # root[task] = (root cause id, its state), for every task visited.
    root: dict[str, tuple[str, str]] = {}
    queue: deque[str] = deque()
    for task_id in starts:
        run = tasks.get(task_id)
        if run is not None and run.state in _DOOMED and task_id not in root:
            root[task_id] = (task_id, run.state.value)
            queue.append(task_id)
    result: list[Skip] = []
    while queue:
        parent = queue.popleft()
        cause_id, cause_state = root[parent]
        if cause_id == parent:
            because = f"dependency {parent!r} {cause_state}"
        else:
            because = f"dependency {parent!r} skipped (root cause: {cause_id!r} {cause_state})"
        for child in index.children[parent]:
            if child in root or index.specs[parent].replica_of == child:
                continue  # a failed replica does not doom its consensus (the quorum decides)
            run = tasks.get(child)
            if run is None or run.state not in _SKIPPABLE:
                continue
            root[child] = (cause_id, cause_state)
            result.append(Skip(child, because))
            queue.append(child)
    return result


def retry_due(state: RunState, index: PlanIndex, now: float) -> list[str]:
    """RETRY_WAIT tasks whose ``retry_at <= now``, earliest first (then plan order).

    A task whose backoff has not been decided yet (``retry_at`` is None: ``task_failed`` is
    in the log but ``task_retried`` is not) is not due.
    """
    due: list[tuple[float, int, str]] = []
    for task_id, run in state.tasks.items():
        if run.state is TaskState.RETRY_WAIT and run.retry_at is not None and run.retry_at <= now:
            due.append((run.retry_at, index.order.get(task_id, len(index.ids)), task_id))
    due.sort()
    return [task_id for _, _, task_id in due]


def next_wakeup(state: RunState) -> float | None:
    """The earliest ``retry_at`` among RETRY_WAIT tasks, or None when no retry is scheduled."""
    times = [
        run.retry_at
        for run in state.tasks.values()
        if run.state is TaskState.RETRY_WAIT and run.retry_at is not None
    ]
    return min(times) if times else None


# --------------------------------------------------------------------------- history


class Outcomes(BaseModel):
    """What agents of one role achieved on one kind of task, over all recorded attempts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str
    kind: str
    successes: int = Field(default=0, ge=0)
    attempts: int = Field(default=0, ge=0)
    total_duration_s: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _successes_within_attempts(self) -> Outcomes:
        if self.successes > self.attempts:
            raise ValueError(f"successes ({self.successes}) exceed attempts ({self.attempts})")
        return self

    @property
    def success_rate(self) -> float:
        """Laplace-smoothed: ``(successes + 1) / (attempts + 2)``; 0.5 with no attempts."""
        return (self.successes + 1) / (self.attempts + 2)

    @property
    def mean_duration_s(self) -> float | None:
        return self.total_duration_s / self.attempts if self.attempts else None


class History(BaseModel):
    """Immutable record of outcomes per (agent role, task kind); ``record`` returns a new one.

    Immutable so a decision can never be changed behind its back; recording copies a small
    tuple (one entry per (role, kind) pair seen). It is a pydantic model, so it serializes as
    is (``model_dump_json`` / ``model_validate_json``, or ``to_dict`` / ``from_dict``) and can
    be a field of a persisted record. Entries are kept sorted by (role, kind) so equal
    histories serialize identically.

    What counts (the orchestrator's job): each ``task_succeeded`` is a success and each
    ``task_failed`` (retried or not) a failure, for the role of the agent that ran the attempt
    and the ``task_kind`` of the task.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    outcomes: tuple[Outcomes, ...] = ()
    _by_key: dict[tuple[str, str], Outcomes] = PrivateAttr(default_factory=dict)

    @field_validator("outcomes")
    @classmethod
    def _sorted_unique(cls, value: tuple[Outcomes, ...]) -> tuple[Outcomes, ...]:
        ordered = tuple(sorted(value, key=lambda item: (item.role, item.kind)))
        for before, after in itertools.pairwise(ordered):
            if (before.role, before.kind) == (after.role, after.kind):
                raise ValueError(f"two entries for role {after.role!r} and kind {after.kind!r}")
        return ordered

    def model_post_init(self, context: Any, /) -> None:
        self._by_key = {(item.role, item.kind): item for item in self.outcomes}

    def get(self, role: str, kind: str) -> Outcomes:
        """The outcomes of ``role`` on ``kind`` (all zero when never recorded)."""
        found = self._by_key.get((role, kind))
        return found if found is not None else Outcomes(role=role, kind=kind)

    def success_rate(self, role: str, kind: str) -> float:
        """``(successes + 1) / (attempts + 2)`` for the pair; 0.5 for a pair never seen."""
        found = self._by_key.get((role, kind))
        if found is None:
            return 0.5
        return (found.successes + 1) / (found.attempts + 2)

    def record(self, role: str, kind: str, *, succeeded: bool, duration_s: float = 0.0) -> History:
        """A new history with one more attempt of ``role`` on ``kind``."""
        old = self.get(role, kind)
        new = Outcomes(
            role=role,
            kind=kind,
            successes=old.successes + (1 if succeeded else 0),
            attempts=old.attempts + 1,
            total_duration_s=old.total_duration_s + max(duration_s, 0.0),
        )
        rest = tuple(item for item in self.outcomes if (item.role, item.kind) != (role, kind))
        return History(outcomes=(*rest, new))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form; ``from_dict`` reads it back."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Validate ``data`` (raises ``pydantic.ValidationError``, a ``ValueError``)."""
        return cls.model_validate(data)


# --------------------------------------------------------------------------- fitness


@dataclass(frozen=True, slots=True)
class Fitness:
    """The three parts of an agent's fitness for a task, each in [0, 1], and their total."""

    capability: float
    workload: float
    history: float

    @property
    def total(self) -> float:
        return _total(self.capability, self.workload, self.history)


def _total(capability: float, workload: float, history: float) -> float:
    return CAPABILITY_WEIGHT * capability + WORKLOAD_WEIGHT * workload + HISTORY_WEIGHT * history


def _workload(agent_load: int, max_load: int) -> float:
    return 1.0 - min(max(agent_load, 0) / max(max_load, 1), 1.0)


def takes_runtime(agent: AgentSpec, runtime: str) -> bool:
    """Whether ``agent`` takes tasks of ``runtime`` (``TaskSpec.runtime``): an agent declared
    with a runtime takes only such tasks; a consensus (which aggregates its replicas' answers)
    goes to any agent. A hard filter, like capabilities."""
    return agent.runtime is None or runtime in ("consensus", agent.runtime)


def _role_fit(task_role: str, agent_role: str) -> float:
    if task_role in (GENERAL_ROLE, agent_role):
        return 1.0
    if agent_role == GENERAL_ROLE:
        return _GENERALIST_ROLE_FIT
    return 0.0


def _coverage(required: frozenset[str], agent_capabilities: frozenset[str]) -> float:
    if not required:
        return 1.0
    return len(required & agent_capabilities) / len(required)


def _parts(
    task: TaskSpec,
    *,
    required: frozenset[str],
    agent: AgentSpec,
    agent_capabilities: frozenset[str],
    agent_load: int,
    max_load: int,
    history: History,
) -> Fitness:
    return Fitness(
        capability=_coverage(required, agent_capabilities) * _role_fit(task.role, agent.role),
        workload=_workload(agent_load, max_load),
        history=history.success_rate(agent.role, task.task_kind),
    )


def fitness_parts(task: TaskSpec, agent: AgentSpec, load: Mapping[str, int], history: History) -> Fitness:
    """The parts of ``fitness`` (see the module docstring for each definition).

    ``load`` maps agent id -> tasks assigned in this run; absent agents count 0, and the
    maximum over ``load`` normalizes the workload part.
    """
    max_load = max(load.values(), default=0)
    return _parts(
        task,
        required=frozenset(task.capabilities),
        agent=agent,
        agent_capabilities=frozenset(agent.capabilities),
        agent_load=load.get(agent.id, 0),
        max_load=max_load,
        history=history,
    )


def fitness(task: TaskSpec, agent: AgentSpec, load: Mapping[str, int], history: History) -> float:
    """``0.4 * capability + 0.3 * workload + 0.3 * history`` for ``agent`` on ``task``, in [0, 1]."""
    return fitness_parts(task, agent, load, history).total


def load_from_state(state: RunState) -> dict[str, int]:
    """Agent id -> tasks whose current or last attempt went to that agent.

    An approximation of "tasks assigned in this run": the run state keeps only the latest
    agent of each task, and ``task_ready`` clears it, so attempts that were retried elsewhere
    are not counted. An orchestrator that counts ``task_assigned`` events should pass that
    count to ``decide(load=...)`` instead.
    """
    load: dict[str, int] = {}
    for run in state.tasks.values():
        if run.agent_id is not None:
            load[run.agent_id] = load.get(run.agent_id, 0) + 1
    return load


# --------------------------------------------------------------------------- decide

_Key = tuple[int, int, float, int, str]  # a READY task's place in the order of work


def _key(index: PlanIndex, task_id: str, ready_at: float | None) -> _Key:
    """Priority (higher first), critical path (longer first), ``ready_at`` (earlier first,
    unknown last), plan order: the order of work (module docstring); the id closes the tuple."""
    return (
        -index.specs[task_id].priority,
        -index.depth.get(task_id, 0),
        float("inf") if ready_at is None else ready_at,
        index.order[task_id],
        task_id,
    )


class ReadyQueue:
    """The READY tasks in the order of work, kept between scheduling steps: ``decide`` walks
    them from the front in O(log R) per task it examines instead of ordering all R of them at
    every step (a step of a 1,000-task fan-out used to sort ~1,000 tasks to place a few).

    ``sync(ready, state)`` brings it up to date with the set of READY task ids (set
    differences, done in C); a task's place never changes while it waits (``ready_at`` is
    kept when it is retried or requeued), and a changed plan needs a new queue (its
    priorities and critical paths may differ). Entries of tasks that left are dropped lazily.
    """

    def __init__(self, index: PlanIndex) -> None:
        self.index = index
        self._heap: list[_Key] = []
        self._live: dict[str, _Key] = {}  # task id -> its entry in the heap

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._live

    def __iter__(self) -> Iterator[str]:
        return iter(self._live)

    def sync(self, ready: Collection[str], state: RunState) -> None:
        """Hold exactly the ids in ``ready`` (READY tasks of ``state`` in ``self.index``)."""
        live = self._live
        for task_id in live.keys() - ready:
            del live[task_id]
        added = ready - live.keys() if isinstance(ready, set | frozenset) else set(ready) - live.keys()
        tasks = state.tasks
        for task_id in added:
            key = live[task_id] = _key(self.index, task_id, tasks[task_id].ready_at)
            heapq.heappush(self._heap, key)
        if len(self._heap) > 2 * len(live) + 64:  # mostly entries of tasks that left: compact
            self._heap = list(live.values())
            heapq.heapify(self._heap)

    def ordered(self) -> Iterator[str]:
        """The ids in the order of work, without changing the queue: a walk of the heap
        that visits a node only after its parent (O(log n) per id taken)."""
        heap, live = self._heap, self._live
        if not heap:
            return
        frontier: list[tuple[_Key, int]] = [(heap[0], 0)]
        size = len(heap)
        while frontier:
            key, at = heapq.heappop(frontier)
            if live.get(key[4]) is key:
                yield key[4]
            for child in (2 * at + 1, 2 * at + 2):
                if child < size:
                    heapq.heappush(frontier, (heap[child], child))


@dataclass(frozen=True, slots=True)
class Placement:
    """Give ``task_id`` to ``agent_id`` as attempt number ``attempt`` (1-based): a decision,
    which the orchestrator records as ``task_assigned`` and dispatches as a
    ``maos.model.Assignment``."""

    task_id: str
    agent_id: str
    attempt: int
    score: float
    fitness: Fitness | None = None  # the parts of ``score``
    candidates: int = 1  # free agents that could take the task (the hard filters passed)


def decide(
    state: RunState,
    index: PlanIndex,
    free_agents: Sequence[AgentSpec],
    history: History,
    *,
    limit: int,
    load: Mapping[str, int] | None = None,
    ready: ReadyQueue | Collection[str] | None = None,
    avoid: Mapping[str, Collection[str]] | None = None,
    free_resources: Mapping[str, int] | None = None,
) -> list[Placement]:
    """Assign READY tasks to free agents; at most ``limit`` assignments, one per agent.

    ``limit`` is the number of slots left under the concurrency limit (``--agents N`` minus
    tasks ASSIGNED or RUNNING). ``load`` (agent id -> tasks assigned in this run) defaults
    to ``load_from_state(state)``. Nothing is assigned unless the run status is RUNNING
    (a draining or cancelling run starts no new task). An agent the state shows holding an
    ASSIGNED or RUNNING task is never chosen, even if listed free. Order of work, scoring,
    the hard capability filter and tie-breaks: see the module docstring.

    ``avoid`` maps a task to agents that should not get it again (the orchestrator lists an
    agent once the task failed twice on it, so the retry goes to another agent); when no
    other agent is free the task waits rather than go back to them.

    ``ready`` (with ``load``) is a hint from a caller that tracks the READY tasks and the
    free agents incrementally (the orchestrator does): then ``decide`` skips its pass over
    the state and trusts ``free_agents`` to hold no busy agent. Same answer, O(R) instead of
    O(tasks); and a ``ReadyQueue`` (kept in the order of work between calls) is walked from
    the front without ordering the R tasks at all.

    **Resources** (``maos.resources``): a task whose ``resources`` the free units cannot
    cover is passed over, and no task after it in the order of work may take units of those
    resources in this call (no overtaking: a big or critical task is not starved by small
    ones). Among tasks of equal priority, those holding resources go by the longest chain to
    the end of the DAG first (the critical path). ``free_resources`` (name -> free units; the
    caller's, when it knows more: attempts being stopped, other runs' holdings) defaults to the
    plan's capacities minus what the ASSIGNED and RUNNING tasks hold. Each placed task's units
    are taken before the next is placed, so one call never over-commits a resource.

    Cost: one pass over ``state.tasks`` (the dominant part: ~2 ms for 10,000 tasks), then a
    heap of the R ready tasks: O(R) to build (none with a ``ReadyQueue``), O(log R) per task
    examined and O(A) per task placed on one of A free agents. Tasks are examined only until
    the slots or agents run out; a task whose capability set no remaining free agent covers
    costs O(1) after the first such task.
    """
    if limit <= 0 or not free_agents or state.status is not RunStatus.RUNNING:
        return []
    derive_load = load is None
    counted: dict[str, int] = dict(load) if load is not None else {}
    busy: set[str] = set()
    heap: list[_Key] = []
    depth = index.depth
    order = index.order
    specs = index.specs
    ready_state, assigned_state, running_state = TaskState.READY, TaskState.ASSIGNED, TaskState.RUNNING
    unknown_time = float("inf")
    tasks = state.tasks
    queue = ready if isinstance(ready, ReadyQueue) and load is not None else None
    if queue is not None:
        if not queue:
            return []
    elif ready is not None and load is not None:
        for task_id in ready:
            run = tasks[task_id]
            if run.state is ready_state:
                heap.append(_key(index, task_id, run.ready_at))
    # The one pass over the state (the hot loop for large plans: keep it lean).
    for task_id, run in tasks.items() if ready is None or load is None else ():
        task_state = run.state
        if task_state is ready_state:
            ready_at = run.ready_at
            heap.append(
                (
                    -specs[task_id].priority,
                    -depth.get(task_id, 0),
                    unknown_time if ready_at is None else ready_at,
                    order[task_id],
                    task_id,
                )
            )
        agent_id = run.agent_id
        if agent_id is not None:
            if derive_load:
                counted[agent_id] = counted.get(agent_id, 0) + 1
            if task_state is assigned_state or task_state is running_state:
                busy.add(agent_id)
    if queue is None and not heap:
        return []

    by_id: dict[str, AgentSpec] = {}
    for agent in free_agents:
        if agent.id not in busy:
            by_id.setdefault(agent.id, agent)
    free = [by_id[agent_id] for agent_id in sorted(by_id)]
    capabilities = {agent.id: frozenset(agent.capabilities) for agent in free}
    max_load = max(counted.values(), default=0)
    uncovered: set[frozenset[str]] = set()  # capability sets no remaining free agent has
    rates: dict[tuple[str, str], float] = {}  # history success rate per (role, kind), this call
    limit = min(limit, len(free))
    result: list[Placement] = []
    limits = capacities(index.plan) if index.depth else {}
    units_free: dict[str, int] = {}
    if limits:
        units_free = (
            dict(free_resources) if free_resources is not None else free_units(limits, held(state, specs))
        )
    blocked: set[str] = set()  # resources a task earlier in the order of work waits for
    for task_id in queue.ordered() if queue is not None else _popped(heap):
        if len(result) >= limit:
            break
        if queue is not None and tasks[task_id].state is not ready_state:
            continue
        required = index.required[task_id]
        if required in uncovered:
            continue
        task = specs[task_id]
        need = task.resources
        if need:
            if blocked & need.keys():
                continue
            if shortfall(need, units_free):
                if all(units <= limits.get(name, 0) for name, units in need.items()):
                    blocked.update(need)  # satisfiable later: nobody overtakes it on these
                continue
        kind = task.task_kind
        best: AgentSpec | None = None
        best_score = -1.0
        best_parts = (0.0, 0.0, 0.0)
        candidates = 0
        avoided = avoid.get(task_id, ()) if avoid else ()
        skipped = False
        for agent in free:
            agent_capabilities = capabilities[agent.id]
            if not required <= agent_capabilities:
                continue
            if agent.id in avoided or not takes_runtime(agent, task.runtime):
                skipped = True  # (not "uncovered": the next task with these capabilities may fit)
                continue
            candidates += 1
            rate_key = (agent.role, kind)
            rate = rates.get(rate_key)
            if rate is None:
                rate = rates[rate_key] = history.success_rate(agent.role, kind)
            # Same arithmetic as fitness_parts(...).total, without the intermediate objects.
            capability = _coverage(required, agent_capabilities) * _role_fit(task.role, agent.role)
            workload = _workload(counted.get(agent.id, 0), max_load)
            score = _total(capability, workload, rate)
            if score > best_score:  # strict: on equal scores the smaller agent id (seen first) wins
                best, best_score, best_parts = agent, score, (capability, workload, rate)
        if best is None:
            if not skipped:
                # The free set only shrinks during this call, so this stays true for the call.
                uncovered.add(required)
            continue
        attempt = state.tasks[task_id].attempts + 1
        result.append(Placement(task_id, best.id, attempt, best_score, Fitness(*best_parts), candidates))
        for name, units in need.items():
            units_free[name] -= units
        free.remove(best)
        new_load = counted.get(best.id, 0) + 1
        counted[best.id] = new_load
        max_load = max(max_load, new_load)
    return result


def _popped(heap: list[_Key]) -> Iterator[str]:
    """The ids of ``heap``'s keys, smallest first (the heap is consumed)."""
    heapq.heapify(heap)
    while heap:
        yield heapq.heappop(heap)[4]


# --------------------------------------------------------------------------- maos retry


def to_retry(state: RunState, index: PlanIndex, chosen: Collection[str] = ()) -> list[str]:
    """The tasks ``maos retry`` runs again, in plan order: ``chosen`` (default: every failed,
    cancelled or skipped task) and each of their dependents that did not succeed either
    (a task skipped because of a chosen one). Raises ``ValueError`` naming a chosen task
    that does not exist or is not failed, cancelled or skipped."""
    for task_id in chosen:
        task = state.tasks.get(task_id)
        if task is None:
            raise ValueError(f"no task {task_id!r} in run {state.run_id}")
        if task.state not in RETRYABLE_TASK_STATES:
            raise ValueError(
                f"task {task_id!r} is {task.state.value}: only failed, cancelled or skipped tasks are retried"
            )
    start = set(chosen) or {
        task_id for task_id, task in state.tasks.items() if task.state in RETRYABLE_TASK_STATES
    }
    selected: set[str] = set()
    todo = deque(start)
    while todo:
        task_id = todo.popleft()
        if task_id in selected or state.tasks[task_id].state not in RETRYABLE_TASK_STATES:
            continue
        selected.add(task_id)
        todo.extend(index.children.get(task_id, ()))
    return sorted(selected, key=index.order.__getitem__)


def retry_plan_problems(old: Plan, new: Plan, retried: Collection[str]) -> list[str]:
    """Why ``new`` (a fixed plan) cannot replace ``old`` for a retry of ``retried``: it must
    have the same tasks and dependencies, and only the retried tasks' settings may differ
    (every other task keeps its result, which must stay the result of that task)."""
    problems: list[str] = []
    old_specs, new_specs = old.by_id(), new.by_id()
    for task_id in sorted(old_specs.keys() - new_specs.keys()):
        problems.append(f"task {task_id!r}: missing from the new plan (a retry keeps every task)")
    for task_id in sorted(new_specs.keys() - old_specs.keys()):
        problems.append(f"task {task_id!r}: not in the run's plan (a retry adds no task)")
    for task_id in sorted(old_specs.keys() & new_specs.keys()):
        before, after = old_specs[task_id], new_specs[task_id]
        if set(before.depends_on) != set(after.depends_on):
            problems.append(f"task {task_id!r}: field 'depends_on' changed (a retry keeps the dependencies)")
        elif task_id not in retried and before != after:
            fields = sorted(
                name for name in type(before).model_fields if getattr(before, name) != getattr(after, name)
            )
            problems.append(
                f"task {task_id!r}: {', '.join(repr(name) for name in fields)} changed, but the task "
                "is not retried (its result stays)"
            )
    return problems


# --------------------------------------------------------------------------- stall diagnosis


class Unrunnable(NamedTuple):
    """A task no agent of the run can take, and why."""

    task_id: str
    reason: str


def unrunnable(state: RunState, index: PlanIndex, agents: Iterable[AgentSpec]) -> list[Unrunnable]:
    """Not-yet-started tasks (PENDING, READY, RETRY_WAIT) that no agent in ``agents`` may take.

    Pass all the run's agents (``state.agents.values()``), not only the free ones. A task is
    unrunnable when no single agent has every capability it requires (the hard filter of
    ``decide``); the reason names what is missing. Result in plan order.
    """
    agent_sets = sorted({frozenset(agent.capabilities) for agent in agents}, key=sorted)
    union: frozenset[str] = frozenset().union(*agent_sets)
    verdicts: dict[frozenset[str], str | None] = {}
    result: list[Unrunnable] = []
    for task_id in index.ids:
        run = state.tasks.get(task_id)
        if run is None or run.state not in _SKIPPABLE:
            continue
        required = index.required[task_id]
        if not required:
            if not agent_sets:
                result.append(Unrunnable(task_id, "the run has no agents"))
            continue
        if required not in verdicts:
            verdicts[required] = _why_unrunnable(required, agent_sets, union)
        reason = verdicts[required]
        if reason is not None:
            result.append(Unrunnable(task_id, reason))
    return result


def _why_unrunnable(
    required: frozenset[str], agent_sets: list[frozenset[str]], union: frozenset[str]
) -> str | None:
    if any(required <= have for have in agent_sets):
        return None
    if not agent_sets:
        return "the run has no agents"
    missing = sorted(required - union)
    if missing:
        noun = "capability" if len(missing) == 1 else "capabilities"
        return f"no agent has {noun} {', '.join(repr(name) for name in missing)}"
    wanted = ", ".join(repr(name) for name in sorted(required))
    return f"no single agent has all of {wanted}"
