"""The store goes away mid-run: the run waits, reconnects and completes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

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
