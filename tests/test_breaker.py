"""The circuit breaker's states, with an explicit clock."""

from __future__ import annotations

from maos.breaker import Circuit, CircuitBreaker


def test_opens_after_consecutive_api_failures_probes_then_closes() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=10)
    assert breaker.allows(0)
    assert breaker.record(ok=False, api_error=True, now=0) is None
    assert breaker.record(ok=False, api_error=False, now=1) is None  # the task's own failure resets
    for n in range(2):
        assert breaker.record(ok=False, api_error=True, now=2 + n) is None
    assert breaker.record(ok=False, api_error=True, now=5) is Circuit.OPEN
    assert not breaker.allows(10)
    assert breaker.allows(15)  # half-open: one probe
    assert breaker.state is Circuit.HALF_OPEN
    breaker.started()
    assert not breaker.allows(15)
    assert breaker.record(ok=False, api_error=True, now=16) is Circuit.OPEN  # the probe failed
    assert not breaker.allows(16 + 19)  # cooldown doubled to 20 s
    assert breaker.allows(16 + 20)
    breaker.started()
    assert breaker.record(ok=True, api_error=False, now=40) is Circuit.CLOSED
    assert breaker.allows(40)
    assert breaker.allows(40)
