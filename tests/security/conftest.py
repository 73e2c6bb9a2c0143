"""The door's fixtures (``door_run``: a run as agents see it), shared with tests/door."""

from __future__ import annotations

from ..door.conftest import door_run, run_id

__all__ = ["door_run", "run_id"]
