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


RUN_RECORD_PREFIX = "maos:run:"


def run_record(run_id: str) -> str:
    """The run's index entry (``maos runs``): name, start, last known status."""
    return f"{RUN_RECORD_PREFIX}{run_id}"
