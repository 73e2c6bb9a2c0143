"""How a warm agent is primed before its first task (``WarmPool(primer=...)``, ``--warm-primer``).

Kept apart from ``maos.agents.pool`` so that the CLI names the choice without importing the
pool. The warm-up turn's words are ``maos.markers``' (the model server reads them too).
"""

from __future__ import annotations

import enum

__all__ = ["Primer"]


class Primer(enum.StrEnum):
    """``local``: the command ``/cost`` only, answered by the CLI (free). ``model``: then one
    real model turn, ``maos.markers.WARM_UP_MESSAGE`` (one short model request per warm start).
    Both end with ``/cost`` once more (``maos.agents.pool.PRIMER_END``)."""

    LOCAL = "local"
    MODEL = "model"
