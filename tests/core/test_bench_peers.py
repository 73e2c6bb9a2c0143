"""``maos bench peers`` measures both sides of every pair for real (no timing is asserted)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from maos.bench.peers import _settled, fanout_plan, fanout_script, missing_peers
from maos.modelserver.script import parse_script
from maos.plan import load_plan


def test_the_fanout_script_and_plan_are_valid(tmp_path: Path) -> None:
    script = parse_script(fanout_script((2, 10), 1.0))
    names = [rule.name for rule in script.rules]
    assert names[:3] == ["sub", "native-fanout-2", "native-fanout-10"]
    assert len(script.rules[2].reply.tool_calls) == 10
    assert all(rule.reply.delay_s == 1.0 for rule in script.rules)
    (tmp_path / "plan.yaml").write_text(fanout_plan(3))
    plan = load_plan(tmp_path / "plan.yaml")
    assert [task.id for task in plan.tasks] == ["root", "s00", "s01", "s02", "join"]
    assert plan.tasks[-1].depends_on == ("s00", "s01", "s02")
    assert all(task.command is None for task in plan.tasks)  # Claude Code tasks


def test_without_the_peers_extra_it_says_what_to_install() -> None:
    hide = "import sys; sys.modules['langgraph'] = None; from maos.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", hide, "bench", "peers"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'maos[peers]'" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.slow
@pytest.mark.claude
@pytest.mark.timeout(180)
def test_quick_run_measures_every_pair(cli: Path, tmp_path: Path) -> None:
    if missing := missing_peers():
        pytest.skip(
            f"the peers extra is not installed (missing {', '.join(missing)}): pip install maos[peers]"
        )
    doc = tmp_path / "benchmarks.md"
    page = tmp_path / "comparison.md"
    argv = [sys.executable, "-m", "maos", "bench", "peers", "--quick", "--json"]
    done = subprocess.run(
        [*argv, "--doc", str(doc), "--comparison", str(page)],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = json.loads(done.stdout)
    assert figures["problems"] == []
    pairs = figures["pairs"]
    assert len(pairs) == 6  # fan-out: cold, per-run pool, persistent pool; LangGraph: 3 workloads
    for pair in pairs:
        if pair["unavailable"]:
            assert pair["maos"].startswith("persistent pool")
            continue
        assert len(pair["peer_s"]) == len(pair["maos_s"]) == 1
        assert pair["ratio"] > 0
    assert {"MAOS", "Python", "Claude Code CLI", "LangGraph"} <= set(figures["versions"])
    assert "die with the host" in page.read_text()
    # The size of each side's model calls, from the model server's log, said on the page.
    sizes = figures["input_tokens_per_call"]
    assert sizes["native"]
    assert sizes["cold"]
    assert all(size > 0 for side in sizes.values() for size in side)
    assert "Request size" in page.read_text()
    assert "## maos bench peers" in doc.read_text()
    assert "maos bench peers --quick" in page.read_text()


def test_a_persistent_pool_is_timed_only_once_it_has_settled() -> None:
    """A pool whose process is still busy (here: a child burning 2.5 CPU-s, as a CLI's one-time
    work after its start) is not timed until that work is over, however slow the machine."""
    burn = "import time\nwhile time.process_time() < 2.5: pass\ntime.sleep(60)"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {burn!r}])\ntime.sleep(60)",
        ]
    )
    try:
        pool = psutil.Process(parent.pid)

        def cpu_s() -> float:
            total = 0.0
            for each in [pool, *pool.children(recursive=True)]:
                times = each.cpu_times()
                total += times.user + times.system
            return total

        deadline = time.monotonic() + 30
        while not pool.children() and time.monotonic() < deadline:  # the child is started
            time.sleep(0.01)
        asyncio.run(_settled(pool, cpu_s, age_s=0.2))
        [child] = pool.children()
        done = child.cpu_times()
        assert done.user + done.system >= 2.45  # its burn was over when the pool counted as settled
    finally:
        for each in psutil.Process(parent.pid).children(recursive=True):
            each.kill()
        parent.kill()
        parent.wait()
