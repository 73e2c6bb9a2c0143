"""Circuit breakers, one per agent runtime (backend), against a failing model API.

CLOSED: tasks start normally. After ``threshold`` consecutive attempts that failed on the model
API (not on the task itself), the breaker OPENS: no task of that runtime starts for
``cooldown_s``. Then it is HALF-OPEN: one task may start as a probe. A success closes the
breaker (the probe's, or one of an attempt that was already running: either shows the API
answers); the probe's failure opens it again for twice as long (up to ``max_cooldown_s``).
The orchestrator logs every change as a ``circuit_changed`` event.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Circuit(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    threshold: int = 5
    cooldown_s: float = 30.0
    max_cooldown_s: float = 300.0
    state: Circuit = Circuit.CLOSED
    failures: int = 0  # consecutive API failures
    open_until: float = 0.0
    probing: bool = False
    _cooldown: float = 0.0

    def allows(self, now: float) -> bool:
        """May a task of this backend start now? (A half-open breaker lets one probe through.)"""
        if self.state is Circuit.OPEN and now >= self.open_until:
            self.state = Circuit.HALF_OPEN
        if self.state is Circuit.HALF_OPEN:
            return not self.probing
        return self.state is Circuit.CLOSED

    def started(self) -> None:
        if self.state is Circuit.HALF_OPEN:
            self.probing = True

    def record(self, *, ok: bool, api_error: bool, now: float) -> Circuit | None:
        """An attempt of this backend ended; return the new state if it changed."""
        before = self.state
        if ok or not api_error:
            # A success, or a failure of the task itself: the API answers.
            self.failures = 0
            if ok or self.state is Circuit.HALF_OPEN:
                self.state, self.probing, self._cooldown = Circuit.CLOSED, False, 0.0
        else:
            self.failures += 1
            if self.state is Circuit.HALF_OPEN or self.failures >= self.threshold:
                self._cooldown = min(
                    self.max_cooldown_s, self._cooldown * 2 if self._cooldown else self.cooldown_s
                )
                self.state, self.open_until, self.probing = Circuit.OPEN, now + self._cooldown, False
        return self.state if self.state is not before else None
