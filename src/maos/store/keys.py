"""Every store key and stream name MAOS uses, in one place.

All keys of one run share the hash tag ``{run:<id>}`` so that on Redis Cluster they live in
one slot and multi-key scripts stay atomic.
"""

from __future__ import annotations


def run_prefix(run_id: str) -> str:
    return f"{{run:{run_id}}}:"


def events(run_id: str) -> str:
    """The run's event log (a stream)."""
    return f"{run_prefix(run_id)}events"


def run_lease(run_id: str) -> str:
    """Held by the one orchestrator driving the run."""
    return f"{run_prefix(run_id)}orchestrator"


def state_key(run_id: str, key: str) -> str:
    """Shared state that agents read and write through the door."""
    return f"{run_prefix(run_id)}state:{key}"


def state_prefix(run_id: str) -> str:
    return f"{run_prefix(run_id)}state:"


def run_secret(run_id: str) -> str:
    """The run's secret (32 random bytes) that agent tokens are derived from (``maos.security``)."""
    return f"{run_prefix(run_id)}secret"


def task_result(run_id: str, task_id: str) -> str:
    """What an agent published as its task's result through the door (JSON: summary, files)."""
    return f"{run_prefix(run_id)}result:{task_id}"


RUN_RECORD_PREFIX = "maos:run:"


def run_record(run_id: str) -> str:
    """The run's index entry (``maos runs``): name, start, last known status."""
    return f"{RUN_RECORD_PREFIX}{run_id}"


def task_output(run_id: str, task_id: str) -> str:
    """A succeeded task's output, published for workers on other machines (MAOS_INPUTS)."""
    return f"{run_prefix(run_id)}output:{task_id}"


def dead_tasks(run_id: str) -> str:
    """Dead-letter stream of the run's tasks that exhausted their attempts (JSON records)."""
    return f"{run_prefix(run_id)}dead-tasks"


def run_stops(run_id: str) -> str:
    """Attempts of this run its orchestrator stopped (a deadline, a deadlock): JSON object
    ``task:attempt`` -> reason, for the workers running them (``maos.dispatch``)."""
    return f"{run_prefix(run_id)}stops"


def run_control(run_id: str) -> str:
    """Orders for the workers running this run's agents: ``cancel``."""
    return f"{run_prefix(run_id)}control"


ASSIGNMENTS = "maos:assignments"
"""The work queue of ``maos worker`` processes (a stream; consumer group ``WORKERS_GROUP``)."""
WORKERS_GROUP = "workers"
WORKER_LEASE_PREFIX = "maos:worker:"


def worker_lease(name: str) -> str:
    """Held by a live ``maos worker`` and renewed by its heartbeat."""
    return f"{WORKER_LEASE_PREFIX}{name}"


WARM_PREFIX = "maos:warm:"


def warm_agents(name: str) -> str:
    """What a live ``maos worker --warm`` / ``maos serve`` keeps warm (kv, JSON: worker,
    workdir, size, agents per compatibility key, seen_at; ``maos.agents.pool.WarmPool.advert``)."""
    return f"{WARM_PREFIX}{name}"


SUPERVISOR_PREFIX = "maos:supervisor:"


def supervisor(name: str) -> str:
    """A live ``maos supervisor`` says so here (kv, JSON: name, host, pid, seen_at)."""
    return f"{SUPERVISOR_PREFIX}{name}"


HISTORY = "maos:history"
"""Outcomes of agent roles per task kind across runs, and the runs recorded (kv, JSON;
``maos.history``)."""


# ---------------------------------------------------------------------------- message bus
# ``maos.bus`` owns these. Agent ids and topics never contain ``:`` (the bus validates them),
# so the names below cannot collide.


def bus_prefix(run_id: str) -> str:
    """Every name of the run's bus starts with this."""
    return f"{run_prefix(run_id)}bus:"


def bus_inbox(run_id: str, agent_id: str, priority: str) -> str:
    """An agent's inbox at one priority level (a stream; one consumer group, ``inbox``)."""
    return f"{run_prefix(run_id)}bus:inbox:{agent_id}:{priority}"


def bus_topic(run_id: str, topic: str, priority: str) -> str:
    """A broadcast topic at one priority level (a stream; one consumer group per subscriber)."""
    return f"{run_prefix(run_id)}bus:topic:{topic}:{priority}"


def bus_bell(run_id: str, agent_id: str) -> str:
    """An agent's doorbell: a stream of ``topic/<name>`` records, one per subscription,
    which wakes the agent's blocked reader in another process to cover the new topic."""
    return f"{run_prefix(run_id)}bus:bell:{agent_id}"


def bus_dead_letters(run_id: str) -> str:
    """The run's dead-letter stream: messages never acknowledged, and undecodable records."""
    return f"{run_prefix(run_id)}bus:dead"


def bus_seq_prefix(run_id: str) -> str:
    return f"{run_prefix(run_id)}bus:seq:"


def bus_seq(run_id: str, sender: str, channel: str, priority: str) -> str:
    """A sender's sequence counter for one lane (kv, decimal). ``channel`` is ``@agent`` or
    ``#topic``."""
    return f"{bus_seq_prefix(run_id)}{sender}:{channel}:{priority}"


def bus_seen(run_id: str, agent_id: str) -> str:
    """The highest sequence number an agent has seen per lane (kv, JSON object)."""
    return f"{run_prefix(run_id)}bus:seen:{agent_id}"


def bus_subscriptions(run_id: str, agent_id: str) -> str:
    """The topics an agent subscribed to (kv, JSON list), read when its reader starts."""
    return f"{run_prefix(run_id)}bus:subscriptions:{agent_id}"


def bus_backlog(run_id: str) -> str:
    """Never in a live store: the name under which a full checkpoint keeps, beside the run's
    kv pairs, the messages its agents had not acknowledged (``maos.bus.Backlog``)."""
    return f"{run_prefix(run_id)}bus:backlog"
