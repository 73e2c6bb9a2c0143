"""At most one log line per interval for what anybody can cause, with a count of the rest.

A loopback port is open to every local user: a line per bad request would let any of them
flood the terminal of ``maos run`` or ``maos dashboard`` (and bury what matters there). So
such lines go through a ``Throttle``: the first is logged, the next ones within the interval
are only counted, and the next line logged says how many were kept back.

API::

    throttle = Throttle(interval_s=1.0)
    kept = throttle.due()      # None: stay quiet; else log now, naming `kept` lines held back
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["LOG_INTERVAL_S", "Throttle", "kept_back"]

LOG_INTERVAL_S = 1.0


class Throttle:
    """Says when a line may be logged: at most once per ``interval_s``."""

    def __init__(
        self, interval_s: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last = float("-inf")
        self._kept = 0

    def due(self) -> int | None:
        """None when a line was logged less than ``interval_s`` ago (this one is counted);
        else how many were kept back since that line, and the clock starts again."""
        now = self._clock()
        if now - self._last < self.interval_s:
            self._kept += 1
            return None
        kept, self._last, self._kept = self._kept, now, 0
        return kept


def kept_back(kept: int, what: str = "more") -> str:
    """`` (N more since the last line)``, or nothing when none was kept back."""
    return f" ({kept} {what} since the last line)" if kept else ""
