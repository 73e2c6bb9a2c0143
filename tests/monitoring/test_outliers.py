"""``maos.health.outliers``: the robust z-score (median/MAD) that flags an agent far from its
peers; the real-run side is in test_series.py (an agent holding 200 MB more than four others)."""

from __future__ import annotations

import pytest

from maos.health import MB, OUTLIER_MIN_GAP, outliers


def test_one_agent_far_from_similar_peers_is_flagged() -> None:
    rss = {"a": 40 * MB, "b": 42 * MB, "c": 41 * MB, "d": 39 * MB, "hog": 400 * MB}
    found = outliers(rss, min_gap=OUTLIER_MIN_GAP["rss"])
    assert list(found) == ["hog"]
    assert found["hog"] > 3.5


def test_identical_peers_fall_back_on_the_mean_deviation() -> None:
    # MAD is 0 when most values are equal: the mean absolute deviation stands in.
    cpu = {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0, "spinner": 100.0}
    assert list(outliers(cpu, min_gap=OUTLIER_MIN_GAP["cpu"])) == ["spinner"]
    assert outliers({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}, min_gap=0) == {}


def test_a_low_outlier_counts_too() -> None:
    idle = {"a": 600.0, "b": 610.0, "c": 590.0, "d": 605.0, "chatty": 0.5}
    found = outliers(idle, min_gap=OUTLIER_MIN_GAP["idle"])
    assert list(found) == ["chatty"]
    assert found["chatty"] < -3.5


def test_small_absolute_differences_are_never_outliers() -> None:
    # Tightly packed peers make any difference a large z; the minimum gap keeps noise out.
    rss = {"a": 10 * MB, "b": 10 * MB + 1, "c": 10 * MB, "d": 10 * MB + 2, "e": 30 * MB}
    assert outliers(rss, min_gap=OUTLIER_MIN_GAP["rss"]) == {}
    assert list(outliers(rss, min_gap=0)) == ["e"]


@pytest.mark.parametrize("count", [0, 1, 2, 3])
def test_too_few_agents_have_no_peers(count: int) -> None:
    values = {str(n): float(n) for n in range(count - 1)} | {"big": 1e12}
    assert outliers(values, min_gap=0) == {}


def test_a_spread_out_run_flags_nobody() -> None:
    rss = {str(n): float(n * 100 * MB) for n in range(8)}
    assert outliers(rss, min_gap=OUTLIER_MIN_GAP["rss"]) == {}
