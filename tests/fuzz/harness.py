"""What every fuzz target shares: the budget, the per-case time bound, the tally.

The only acceptable outcomes of a case are a result or a clear error (a ``MaosError``, a
translated validation error, an HTTP 4xx, exit 2): anything else raised by a target is a
crash and fails the test (hypothesis shrinks it to a minimal input). A case that runs longer
than ``CASE_LIMIT_S`` is a hang: ``case_time_limit`` interrupts it with ``CaseTimeout``.
Memory is bounded per target by ``conftest.py``.

Budget: ``MAOS_FUZZ_EXAMPLES`` hypothesis examples per target (default ``DEFAULT_EXAMPLES``, so
the regular suite stays fast); ``make fuzz`` raises it. Each target scales it by a weight
(``examples(weight)``): the pure parsers are cheap, the door CLI and the dashboard are not.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections import Counter
from collections.abc import Iterator
from types import FrameType

from hypothesis import HealthCheck, settings

DEFAULT_EXAMPLES = 25
CASE_LIMIT_S = float(os.environ.get("MAOS_FUZZ_CASE_S", "10"))

CASES: Counter[str] = Counter()
"""Cases run per target in this session (read by the summary line in ``conftest.py``)."""


def budget() -> int:
    try:
        return max(1, int(os.environ.get("MAOS_FUZZ_EXAMPLES", DEFAULT_EXAMPLES)))
    except ValueError:
        return DEFAULT_EXAMPLES


def examples(weight: float = 1.0) -> settings:
    """Hypothesis settings for one target: ``weight`` times the budget, no deadline (the time
    bound is ``case_time_limit``), no example database (the corpus is committed instead)."""
    return settings(
        max_examples=max(1, int(budget() * weight)),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


class CaseTimeout(Exception):
    """A case ran longer than ``CASE_LIMIT_S``: a hang."""


@contextlib.contextmanager
def case_time_limit(target: str, limit_s: float = CASE_LIMIT_S) -> Iterator[None]:
    """Count one case of ``target`` and interrupt it after ``limit_s`` (main thread only)."""
    CASES[target] += 1

    def expire(signum: int, frame: FrameType | None) -> None:
        raise CaseTimeout(f"{target}: a case ran longer than {limit_s:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
