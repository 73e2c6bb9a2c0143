"""Fuzz targets (issue 11 item 7): marked ``fuzz``, short in the regular suite, long in ``make fuzz``.

At the end of a session that ran any, one summary line: cases, targets, crashes, duration.
Memory: each fuzz test may grow the process's peak RSS by at most ``MEMORY_BOUND_MB``.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from .harness import CASES

MEMORY_BOUND_MB = 512
_spent_s: list[float] = []  # the fuzz tests' own run times (the regular suite runs others too)
_failed: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: a fuzz target (MAOS_FUZZ_EXAMPLES sets its budget)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/fuzz/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.fuzz)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(autouse=True)
def memory_bound() -> Iterator[None]:
    before = _peak_rss_mb()
    yield
    grown = _peak_rss_mb() - before
    assert grown <= MEMORY_BOUND_MB, f"peak memory grew by {grown:.0f} MB (bound {MEMORY_BOUND_MB} MB)"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/fuzz/" not in report.nodeid.replace("\\", "/"):
        return
    _spent_s.append(report.duration)
    if report.failed:
        _failed.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not CASES:
        return
    duration = sum(_spent_s)
    terminalreporter.write_line(
        f"fuzz: {sum(CASES.values())} cases, {len(CASES)} targets, {len(_failed)} crashes, "
        f"{duration:.0f} s ({', '.join(f'{name} {n}' for name, n in sorted(CASES.items()))})"
    )
