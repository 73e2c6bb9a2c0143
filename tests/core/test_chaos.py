"""Chaos, with a fixed seed: SIGKILL agents five times and the orchestrator twice (each time
`maos resume`); every task succeeds, no task that had succeeded runs again, and the outputs
are those of an undisturbed run of the same plan."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from maos.eventlog import EventLog
from maos.events import Event, TaskStarted, TaskSucceeded
from maos.store import open_store

MAOS = [sys.executable, "-m", "maos"]
SEED = 20261125

AGENT = """
import hashlib, json, os, sys, time
inputs = json.loads(os.environ["MAOS_INPUTS"])
digest = hashlib.sha256(os.environ["MAOS_TASK_ID"].encode())
for parent in sorted(inputs):
    digest.update(open(inputs[parent], "rb").read())
with open(os.environ["LEDGER"], "a") as ledger:
    ledger.write(f"{os.environ['MAOS_TASK_ID']} {os.environ['MAOS_ATTEMPT']}\\n")
time.sleep(0.3)
print(f"{os.environ['MAOS_TASK_ID']}:{digest.hexdigest()}")
"""


def write_plan(directory: Path) -> Path:
    rng = random.Random(SEED)
    (directory / "agent.py").write_text(AGENT)
    lines = ["name: chaos", "tasks:"]
    for n in range(50):
        deps = sorted({f"t{rng.randrange(n)}" for _ in range(rng.randint(0, 2))}) if n else []
        lines += [
            f"  - id: t{n}",
            f"    command: [{json.dumps(sys.executable)}, agent.py]",
            f"    depends_on: [{', '.join(deps)}]",
            "    max_attempts: 8",
            "    pass_env: [LEDGER]",  # agents get no variable that is not passed by name
        ]
    plan = directory / "plan.yaml"
    plan.write_text("\n".join(lines) + "\n")
    return plan


def start(directory: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "LEDGER": str(directory / "ledger")}
    return subprocess.Popen(
        [*MAOS, *args, "--json", "--lease-s", "2"],
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def agents_of(run_dir: Path) -> list[int]:
    """PIDs of live agent processes started in ``run_dir`` (from /proc: cwd and environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            ours = b"MAOS_TASK_ID=" in environ and os.readlink(entry / "cwd") == str(run_dir)
            if ours and "State:\tZ" not in (entry / "status").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def ledger_lines(directory: Path) -> int:
    ledger = directory / "ledger"
    return len(ledger.read_text().splitlines()) if ledger.exists() else 0


def outputs(summary: dict[str, object]) -> dict[str, str]:
    tasks = summary["tasks"]
    assert isinstance(tasks, dict)
    return {task_id: Path(task["output"]).read_text() for task_id, task in tasks.items()}


async def read_events(directory: Path, run_id: str) -> list[tuple[str, Event]]:
    store = await open_store(f"sqlite:///{directory / '.maos/maos.db'}")
    try:
        return [item async for item in EventLog(store, run_id).iterate()]
    finally:
        await store.close()


def test_chaos_loses_nothing_and_reruns_nothing_that_succeeded(tmp_path: Path) -> None:
    calm, chaos = tmp_path / "calm", tmp_path / "chaos"
    calm.mkdir()
    chaos.mkdir()
    undisturbed = start(calm, "run", str(write_plan(calm)), "--agents", "6")
    out, err = undisturbed.communicate(timeout=180)
    assert undisturbed.returncode == 0, err
    expected = outputs(json.loads(out))

    rng = random.Random(SEED)
    # At these ledger sizes (attempts started): kill an agent (5 times) or the orchestrator (twice).
    plan_of_kills = sorted([(5, "agent"), (9, "agent"), (14, "orchestrator"), (19, "agent"), (26, "agent"),
                            (33, "orchestrator"), (40, "agent")])  # fmt: skip
    proc = start(chaos, "run", str(write_plan(chaos)), "--agents", "6", "--retry-base-s", "0.05")
    run_id = ""
    kills = {"agent": 0, "orchestrator": 0}
    deadline = time.monotonic() + 240
    for threshold, target in plan_of_kills:
        while ledger_lines(chaos) < threshold:
            assert time.monotonic() < deadline, "the run made no progress"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        if target == "agent":
            victims = agents_of(chaos)
            if not victims:
                continue
            os.kill(rng.choice(sorted(victims)), signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            if not run_id:
                runs = subprocess.run(
                    [*MAOS, "runs", "--json"], cwd=chaos, capture_output=True, text=True, check=True
                )
                run_id = json.loads(runs.stdout)[0]["run_id"]
            proc = start(chaos, "resume", run_id)
        kills[target] += 1
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert kills == {"agent": 5, "orchestrator": 2}
    assert summary["counts"] == {"succeeded": 50}
    assert outputs(summary) == expected

    events = asyncio.run(read_events(chaos, summary["run_id"]))
    done: set[str] = set()
    for _, event in events:
        if isinstance(event, TaskStarted):
            assert event.task_id not in done, f"{event.task_id} ran again after it had succeeded"
        if isinstance(event, TaskSucceeded):
            done.add(event.task_id)
    failed_attempts = [e for _, e in events if e.type == "task_failed"]
    assert failed_attempts, "the agent kills show up as failed attempts"
    assert any(e.type == "task_requeued" for _, e in events), "the orchestrator kills requeued in-flight work"
    assert not agents_of(chaos)
