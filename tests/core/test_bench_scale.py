"""``maos bench scale`` runs its agents for real and reads MAOS's own processes exactly (no
timing is asserted: the figures are for docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from maos.bench.scale import claude_plan, claude_script, command_plan, expected_calls
from maos.modelserver.script import parse_script
from maos.plan import load_plan
from tests.conftest import REDIS_URL, redis_answers


def test_the_plans_and_the_script_are_valid(tmp_path: Path) -> None:
    (tmp_path / "commands.yaml").write_text(command_plan(3, tmp_path / "gate"))
    commands = load_plan(tmp_path / "commands.yaml")
    assert [task.command for task in commands.tasks] == [("cat", str(tmp_path / "gate"))] * 3
    assert all(not task.depends_on for task in commands.tasks)
    (tmp_path / "claude.yaml").write_text(claude_plan(5))
    claude = load_plan(tmp_path / "claude.yaml")
    assert [task.id for task in claude.tasks] == ["c0000", "c0001", "c0002", "c0003", "c0004"]
    assert all(task.command is None for task in claude.tasks)  # Claude Code tasks
    script = parse_script(claude_script(0.2))
    assert [rule.name for rule in script.rules] == ["door-call", "after-door", "direct"]
    assert script.rules[0].reply.tool_calls[0].name == "mcp__maos__state_set"
    assert expected_calls(5) == {"door-call": 3, "after-door": 3, "direct": 2}


def test_nothing_to_run_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "maos", "bench", "scale", "--commands", "0", "--claude", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "nothing to run" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.slow
@pytest.mark.claude
@pytest.mark.redis
@pytest.mark.timeout(300)
def test_quick_run_completes_and_measures_maos_per_agent(cli: Path, tmp_path: Path) -> None:
    if not redis_answers():
        pytest.skip(f"no Redis server answers on {REDIS_URL}")
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## maos bench other\n\nkept\n")
    argv = [sys.executable, "-m", "maos", "bench", "scale", "--quick", "--json", "--store", REDIS_URL]
    done = subprocess.run(
        [*argv, "--doc", str(doc)], capture_output=True, text=True, timeout=290, check=False, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["complete"]
    assert figures["problems"] == []

    commands = figures["commands"]
    assert commands["succeeded"] == commands["agents"] == 20
    assert commands["peak_alive"] == 20  # all alive at once, as seen in /proc
    assert commands["peak_running"] == 20  # and as the run's log says
    assert commands["all_alive_s"] > 0
    run = _role(commands, "`maos run`")
    assert run["cpu_exact"]
    assert run["processes"] == 1
    assert run["cpu_s"] > 0
    assert run["peak_rss_mb"] > 10
    assert commands["maos_cpu_s_per_agent"] == pytest.approx(commands["maos_cpu_s"] / 20)
    assert _role(commands, "`cat GATE`, each task's command")["processes"] == 20

    claude = figures["claude"]
    assert claude["succeeded"] == claude["agents"] == 4
    assert set(claude["by_worker"]) <= {"bench-scale-1", "bench-scale-2"}  # no other worker
    assert sum(claude["by_worker"].values()) == 4
    workers = _role(claude, "`maos worker`")
    assert workers["processes"] == 2
    assert workers["cpu_exact"]
    assert workers["cpu_s"] > 0
    assert _role(claude, "`maos run --workers-only`")["cpu_exact"]
    assert _role(claude, "Claude Code CLI")["processes"] == 4
    assert claude["reaped_cpu_s"] > 0  # the CLIs, reaped by the workers
    assert claude["maos_peak_rss_mb_per_agent"] == pytest.approx(claude["maos_peak_rss_mb"] / 4)

    text = doc.read_text()
    assert "## maos bench scale" in text
    assert "`maos bench scale --quick`" in text
    assert "## maos bench other\n\nkept" in text


def _role(part: dict[str, Any], name: str) -> dict[str, Any]:
    found = [role for role in part["roles"] if role["role"] == name]
    assert len(found) == 1, [role["role"] for role in part["roles"]]
    return dict(found[0])
