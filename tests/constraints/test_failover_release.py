"""A held resource comes back when its orchestrator dies: `maos run` is SIGKILLed while a task
holds `db`; its agent dies with it; `maos resume` requeues the attempt and the run finishes,
and no two agent processes ever ran with `db` at once (their own start and end times)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from maos.store import open_store

from .helpers import Held, events, holds, overlapping

MAOS = [sys.executable, "-m", "maos"]


def test_a_resource_held_by_a_dead_orchestrator_comes_back_on_resume(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    step = f'echo "$MAOS_TASK_ID $MAOS_ATTEMPT start $(date +%s.%N)" >> {ledger}; sleep 0.6; '
    step += f'echo "$MAOS_TASK_ID $MAOS_ATTEMPT end $(date +%s.%N)" >> {ledger}'
    tasks = "".join(f"  - id: t{n}\n    command: '{step}'\n    resources: {{db: 1}}\n" for n in range(4))
    (tmp_path / "plan.yaml").write_text(f"name: held\nresources: {{db: 1}}\ntasks:\n{tasks}")
    proc = subprocess.Popen(
        [*MAOS, "run", "plan.yaml", "--agents", "4", "--lease-s", "2", "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not ledger.exists() or ledger.read_text().count(" start ") < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # the second db task is running
    killed_at = time.time()
    proc.communicate(timeout=30)
    runs = json.loads(
        subprocess.run(
            [*MAOS, "runs", "--json"], cwd=tmp_path, capture_output=True, text=True, check=True
        ).stdout
    )
    run_id = runs[0]["run_id"]
    done = subprocess.run(
        [*MAOS, "resume", run_id, "--json", "--lease-s", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert json.loads(done.stdout)["counts"] == {"succeeded": 4}
    # the processes themselves: an attempt without an end line died with the orchestrator
    starts: dict[tuple[str, str], float] = {}
    ends: dict[tuple[str, str], float] = {}
    for line in ledger.read_text().splitlines():
        task, attempt, what, at = line.split()
        (starts if what == "start" else ends)[(task, attempt)] = float(at)
    ran = [
        Held(task, int(attempt), at, ends.get((task, attempt), killed_at))
        for (task, attempt), at in starts.items()
    ]
    assert len(ran) == 5  # four tasks, the one killed twice
    assert overlapping(ran) == []
    # and the log: the killed attempt's hold ends with its requeue on resume
    log = asyncio.run(_log(tmp_path, run_id))
    assert overlapping(holds(log)) == []


async def _log(cwd: Path, run_id: str) -> list:  # type: ignore[type-arg]
    store = await open_store(f"sqlite:///{cwd / '.maos/maos.db'}")
    try:
        return await events(store, run_id)
    finally:
        await store.close()
