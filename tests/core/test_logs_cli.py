"""``maos logs`` as a person reads it (times, rounded figures, no noise, ``--tail``) and as a
program does (``--json``: every event, whole)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

MAOS = [sys.executable, "-m", "maos"]
CLOCK = re.compile(r"^\d\d:\d\d:\d\d ")


def maos(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name != "MAOS_STORE"}
    return subprocess.run(
        [*MAOS, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False, env=env
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished run: a task long enough for a resource sample, printing an escape sequence;
    then a task that fails twice (a retry with its time, a last attempt ``final=False``)."""
    here = tmp_path_factory.mktemp("logs")
    (here / "plan.yaml").write_text(
        """
name: logs
tasks:
  - id: design
    command: "printf 'plain \\\\033[31mred\\\\033[0m\\\\n'; sleep 2.6"
  - id: build
    depends_on: [design]
    command: "echo building; exit 3"
    max_attempts: 2
"""
    )
    done = maos("run", "plan.yaml", "--json", "--retry-base-s", "0.01", cwd=here)
    assert done.returncode == 1, done.stderr
    return here, json.loads(done.stdout)["run_id"]


def test_lines_are_readable(run: tuple[Path, str]) -> None:
    here, run_id = run
    done = maos("logs", run_id, cwd=here)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(CLOCK.match(line) for line in lines), lines
    assert "agent_stats" not in done.stdout  # samples: only with -v
    assert "final=" not in done.stdout  # fields at their defaults are left out
    assert "score=0.0" not in done.stdout
    assert not re.search(r"\d\.\d{3,}", done.stdout), "figures are rounded"
    assert not re.search(r"\b1\d{9}\b", done.stdout), "no Unix times"
    retried = r" task_retried task_id=build retry_at=\d\d:\d\d:\d\d delay_s=\d+\.\d\d$"
    assert re.search(retried, done.stdout, re.M)
    failed = r" task_failed .*reason=\"exit code 3\" exit_code=3 duration_s=\d+\.\d\d$"
    assert re.search(failed, done.stdout, re.M)
    # Agent text is escaped, never raw terminal control bytes.
    assert "\x1b" not in done.stdout
    assert "[design] stdout: plain \\x1b[31mred\\x1b[0m" in done.stdout


def test_verbose_shows_the_samples(run: tuple[Path, str]) -> None:
    here, run_id = run
    done = maos("logs", run_id, "-v", cwd=here)
    assert re.search(r" agent_stats task_id=design .* idle_s=\d+\.\d\d", done.stdout)


def test_tail(run: tuple[Path, str]) -> None:
    here, run_id = run
    everything = maos("logs", run_id, cwd=here).stdout.splitlines()
    assert maos("logs", run_id, "--tail", "3", cwd=here).stdout.splitlines() == everything[-3:]
    only_build = [line for line in everything if "task_id=build" in line or "[build]" in line]
    tail = maos("logs", run_id, "--task", "build", "-n", "2", cwd=here).stdout.splitlines()
    assert tail == only_build[-2:]
    # A finished run: --follow prints what there is and ends.
    assert maos("logs", run_id, "--tail", "1", "--follow", cwd=here).stdout.splitlines() == everything[-1:]


def test_json_keeps_everything(run: tuple[Path, str]) -> None:
    here, run_id = run
    done = maos("logs", run_id, "--json", cwd=here)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [int(event["event_id"]) for event in events] == sorted(int(event["event_id"]) for event in events)
    types = [event["type"] for event in events]
    assert types[0] == "run_started"
    assert "run_finished" in types
    assert "agent_stats" in types  # samples too
    failed = [event for event in events if event["type"] == "task_failed"]
    assert [event["final"] for event in failed] == [False, False]
    assert all(isinstance(event["ts"], float) for event in events)
    output = next(event for event in events if event["type"] == "agent_output")
    assert output["text"] == "plain \x1b[31mred\x1b[0m"  # exact, and escaped in the JSON text
    assert "\x1b" not in done.stdout
    human = maos("logs", run_id, "-v", cwd=here).stdout.splitlines()
    assert len(human) == len(events)
    design = maos("logs", run_id, "--json", "--task", "design", cwd=here).stdout.splitlines()
    assert {json.loads(line)["task_id"] for line in design} == {"design"}
