"""The recovery benchmarks measure what they say (no timing is asserted)."""

from __future__ import annotations

from maos.bench.recovery import measure_mttr, scheduling_latency


async def test_mttr_measures_every_kill() -> None:
    result = await measure_mttr(2)
    assert result.kills == 2
    assert len(result.samples_s) == 2  # both killed tasks ran again
    assert all(sample > 0 for sample in result.samples_s)


async def test_latency_counts_every_hand_off_with_checkpoints_on() -> None:
    result = await scheduling_latency(checkpoints=True, tasks=12)
    assert result.checkpoints
    assert len(result.samples_s) == 11
    assert result.percentile(0.99) >= result.percentile(0.5) > 0


async def test_failover_measures_every_kill() -> None:
    from maos.bench.failover import measure_failover

    result = await measure_failover(2, lease_s=1.0, tasks=8, losses=1)
    assert result.problems == []
    assert len(result.samples_s) == 2  # each killed run moved again under a supervisor
    assert all(sample > 0 for sample in result.samples_s)
    assert len(result.store_loss.rebuilt_s) == 1  # the emptied store's run was rebuilt
    assert result.store_loss.progressing_s[0] >= result.store_loss.rebuilt_s[0]


def test_benchmarks_run_maos_byte_compiled() -> None:
    """``maos bench`` first leaves every module of MAOS with bytecode at least as new as its
    source, as ``pip install`` does (a stale or missing one is what a bench must not measure)."""
    import importlib.util
    import os
    from pathlib import Path

    import maos
    from maos.bench.machine import byte_compile_maos

    package = Path(maos.__file__).parent
    some = package / "model.py"
    cached = Path(importlib.util.cache_from_source(str(some)))
    os.utime(some)  # the source is now newer than its bytecode, as after an edit
    assert byte_compile_maos()
    for source in package.rglob("*.py"):
        compiled = Path(importlib.util.cache_from_source(str(source)))
        assert compiled.exists(), source
        assert compiled.stat().st_mtime >= source.stat().st_mtime, source
    assert cached.stat().st_mtime >= some.stat().st_mtime
