"""Readiness by polling with a deadline: tests wait for a condition, never for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    check: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.02,
    describe: Callable[[], str] | None = None,
) -> None:
    """Call ``check`` until it returns True; ``TimeoutError`` naming ``what`` after ``timeout_s``.

    ``describe`` adds context to the error (a process's log tail, say). ``check`` may raise to
    give up early (a process that should become ready has exited instead).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            detail = f": {describe()}" if describe is not None else ""
            raise TimeoutError(f"{what} not within {timeout_s} s{detail}")
        time.sleep(interval_s)
