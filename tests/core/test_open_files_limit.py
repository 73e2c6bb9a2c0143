"""A host raises its soft limit on open files: each running agent holds five descriptors, and
the usual soft limit (1,024) stopped `maos run` at its ~200th agent with "Too many open files"."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from maos.agents.process import raise_open_files_limit

SOFT_LIMIT = 256  # ~50 agents' worth without the raise


def _low_soft_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT_LIMIT, hard))


def _skip_unless_the_hard_limit_is_high() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the hard limit ({hard}) is too low to raise the soft one above {SOFT_LIMIT}")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_run_starts_more_agents_than_the_soft_limit_allows(tmp_path: Path) -> None:
    _skip_unless_the_hard_limit_is_high()
    tasks = "".join(f"  - id: t{n:03d}\n    command: 'sleep 3'\n    max_attempts: 1\n" for n in range(80))
    (tmp_path / "plan.yaml").write_text(f"name: many\ntasks:\n{tasks}")
    done = subprocess.run(
        [sys.executable, "-m", "maos", "run", "plan.yaml", "--agents", "80", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        preexec_fn=_low_soft_limit,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(done.stdout)["counts"] == {"succeeded": 80}


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    _skip_unless_the_hard_limit_is_high()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        _low_soft_limit()
        raised = raise_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (raised, hard)
        assert raised > SOFT_LIMIT
        assert hard in (raised, resource.RLIM_INFINITY)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
