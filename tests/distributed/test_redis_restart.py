"""The store goes away mid-run: the run waits, reconnects and completes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maos.store import keys, open_store
from tests.readiness import until

from ..store.redis_harness import RedisServer, free_port

MAOS = [sys.executable, "-m", "maos"]


def test_run_rides_out_a_redis_restart(tmp_path: Path) -> None:
    # appendfsync always: the restarted server comes back with everything acknowledged before
    server = RedisServer(free_port(), tmp_path / "redis", ("--appendonly", "yes", "--appendfsync", "always"))
    server.start()
    try:
        ledger = tmp_path / "ledger"
        tasks = "".join(
            f"  - id: t{n}\n    command: 'sleep 0.3; echo t{n} >> {ledger}'\n"
            + (f"    depends_on: [t{n - 3}]\n" if n >= 3 else "")
            for n in range(18)
        )
        (tmp_path / "plan.yaml").write_text(f"name: outage\ntasks:\n{tasks}")
        run = subprocess.Popen(
            [*MAOS, "run", "plan.yaml", "--store", server.url, "--agents", "3", "--json"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not ledger.exists() or len(ledger.read_text().split()) < 4:
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        server.stop()  # SIGTERM: Redis flushes its append-only file and exits
        time.sleep(2.0)
        assert run.poll() is None, "the run gave up while the store was away"
        server.start()
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        summary = json.loads(out)
        assert summary["counts"] == {"succeeded": 18}
        assert summary["makespan_s"] >= 2.0  # the run spanned the outage
        assert sorted(ledger.read_text().split()) == sorted(f"t{n}" for n in range(18))
    finally:
        server.stop()


def test_a_run_is_rebuilt_from_its_checkpoint_when_redis_loses_everything(tmp_path: Path) -> None:
    """Redis restarted without persistence: the run's log, lease and data are gone. Its
    orchestrator notices (its lease, then the log's first event, are missing), rebuilds the
    run from its newest checkpoint (shared state and undelivered messages included), says
    what was lost, and finishes: never a hang, never a false success."""
    server = RedisServer(free_port(), tmp_path / "redis")  # no persistence
    server.start()
    try:
        ledger = tmp_path / "ledger"
        inbox = tmp_path / "t9-inbox"
        extra = {0: "maos msg send task:t9 from-t0; ", 9: f"maos msg read -n 5 >> {inbox}; "}
        tasks = "".join(
            f"  - id: t{n}\n    command: '{extra.get(n, '')}sleep 0.4; "
            f'echo "t{n} $MAOS_ATTEMPT" >> {ledger}; '
            f"maos state set seen-t{n} {n}'\n" + (f"    depends_on: [t{n - 1}]\n" if n else "")
            for n in range(10)
        )
        (tmp_path / "plan.yaml").write_text(f"name: rebuild\ntasks:\n{tasks}")
        run = subprocess.Popen(
            [*MAOS, "run", "plan.yaml", "--store", server.url, "--agents", "2", "--json",
             "--lease-s", "2", "--checkpoint-every-s", "1"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not ledger.exists() or len(ledger.read_text().split("\n")) < 5:
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # A full checkpoint (every 1 s) taken from now on covers the first tasks.
        checkpoints, now = tmp_path / ".maos" / "checkpoints", time.time()
        while not _full_checkpoint_since(checkpoints, now):
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "no full checkpoint was written"
            time.sleep(0.02)
        server.stop()
        server.start()  # empty: the run's log, lease, state and the work queue are gone
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        summary = json.loads(out)
        assert summary["counts"] == {"succeeded": 10}
        assert "rebuilt from checkpoint" in err
        assert "1 undelivered message(s) put back" in err  # t0's message to t9, not read yet
        lines = [json.loads(line) for line in inbox.read_text().splitlines()]
        assert [(m["content"], m["gap"]) for m in lines] == [("from-t0", 0)]
        status = subprocess.run(
            [*MAOS, "status", summary["run_id"], "--store", server.url, "--json"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["counts"] == {"succeeded": 10}
        done = {line.split()[0] for line in ledger.read_text().splitlines()}
        assert done == {f"t{n}" for n in range(10)}
        # shared state written before the checkpoint came back with it
        assert asyncio.run(_exists(server.url, keys.state_key(summary["run_id"], "seen-t0")))
    finally:
        server.stop()


def _full_checkpoint_since(folder: Path, since: float) -> bool:
    for path in folder.rglob("*-full.ckpt"):
        with contextlib.suppress(FileNotFoundError):  # pruned meanwhile
            if path.stat().st_mtime > since:
                return True
    return False


async def _exists(url: str, key: str) -> bool:
    store = await open_store(url)
    try:
        return await store.get(key) is not None
    finally:
        await store.close()


async def test_an_orchestrator_outlasts_an_outage_longer_than_its_store_gives_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's own retries give up (here after 1 s instead of 30 s) while Redis is down for
    longer than the lease: the orchestrator stops its agents, waits for the store, takes its
    run back under a new epoch and finishes it. Nothing exits, nothing is lost."""
    from maos.events import RunResumed
    from maos.model import Plan, RunConfig, RunStatus, TaskSpec
    from maos.orchestrator import Orchestrator
    from maos.store.redis import RedisOptions, RedisStore

    server = RedisServer(free_port(), tmp_path / "redis", ("--appendonly", "yes", "--appendfsync", "always"))
    server.start()
    ledger = tmp_path / "ledger"
    plan = Plan(
        name="long-outage",
        tasks=tuple(
            TaskSpec(
                id=f"t{n}",
                command=f'sleep 0.3; echo "t{n} $MAOS_ATTEMPT" >> {ledger}',
                depends_on=(f"t{n - 1}",) if n else (),
            )
            for n in range(8)
        ),
    )
    store = await RedisStore.open(server.url, options=RedisOptions(unavailable_after_s=1.0))
    try:
        orchestrator = Orchestrator(store, plan, RunConfig(agents=2, workdir=str(tmp_path)), lease_s=1.5)
        driving = asyncio.create_task(orchestrator.run())
        while not ledger.exists() or len(ledger.read_text().splitlines()) < 3:
            assert not driving.done(), driving.result()
            await asyncio.sleep(0.02)
        server.stop()
        # Down until the lease and the store's retries both ran out: the orchestrator stopped
        # its agents (the lease was lost) and a call of its own gave up on the store since.
        caplog.set_level(logging.WARNING, logger="maos.orchestrator")
        await until(lambda: "waiting for the store" in caplog.text, "the orchestrator to wait", timeout_s=60)
        assert "its agents were stopped" in caplog.text
        assert not driving.done(), "the orchestrator gave up while the store was away"
        server.start()
        state = await asyncio.wait_for(driving, 90)
        assert state.status is RunStatus.SUCCEEDED
        events = [event for _, event in await orchestrator.events.read("0", count=10_000)]
        assert [event.epoch for event in events if isinstance(event, RunResumed)] == [2]
        for task_id, task in state.tasks.items():
            assert ledger.read_text().splitlines().count(f"{task_id} {task.attempts}") == 1
    finally:
        await store.close()
        server.stop()
