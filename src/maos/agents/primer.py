"""How a warm agent is primed before its first task (``WarmPool(primer=...)``, ``--warm-primer``).

Kept apart from ``maos.agents.pool`` so that the model server, which answers the warm-up turn
by itself, imports these words without the pool.
"""

from __future__ import annotations

import enum

__all__ = ["WARM_UP_MESSAGE", "WARM_UP_REPLY", "Primer"]


class Primer(enum.StrEnum):
    """``local``: the command ``/cost`` only, answered by the CLI (free). ``model``: then one
    real model turn, ``WARM_UP_MESSAGE`` (one short model request per warm start)."""

    LOCAL = "local"
    MODEL = "model"


WARM_UP_MESSAGE = "MAOS warm-up turn: no task yet. Reply with the single word: ready."
"""The user message of the ``model`` primer's turn; the model server answers it by itself."""
WARM_UP_REPLY = "ready"
"""What the model server answers to ``WARM_UP_MESSAGE``."""
