"""``/metrics`` of a dashboard that follows a run from outside it stays true across a store
outage longer than the store's own retries: the follower waits for the store and reads the
log on from where it was, instead of showing the past for ever."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from maos.store.redis import RedisOptions, RedisStore
from maos.web import create_app, serve_in_background
from tests.readiness import until

from ..store.redis_harness import RedisServer, free_port, have_redis_server

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not have_redis_server(), reason="no redis-server installed"),
]
MAOS = [sys.executable, "-m", "maos"]


async def test_metrics_go_on_after_a_store_outage_longer_than_the_stores_retries(tmp_path: Path) -> None:
    server = RedisServer(free_port(), tmp_path / "redis", ("--appendonly", "yes", "--appendfsync", "always"))
    server.start()
    run: subprocess.Popen[bytes] | None = None
    try:
        (tmp_path / "plan.yaml").write_text(
            "name: outage\ntasks:\n  - {id: a, command: 'true'}\n"
            "  - {id: b, command: 'sleep 4', depends_on: [a]}\n"
        )
        run = subprocess.Popen(
            [*MAOS, "run", "plan.yaml", "--store", server.url],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # Our own store gives up after 0.5 s without Redis (the run's waits 30 s, the default).
        store = await RedisStore.open(server.url, options=RedisOptions(unavailable_after_s=0.5))
        try:
            async with (
                serve_in_background(create_app(store)) as web,
                httpx.AsyncClient(base_url=web.url, timeout=10) as client,
            ):

                async def shows(sample: str) -> bool:
                    return sample in (await client.get("/metrics")).text

                one, two = 'maos_tasks{state="succeeded"} 1.0', 'maos_tasks{state="succeeded"} 2.0'
                await until(lambda: shows(one), "task a counted", timeout_s=30)
                await asyncio.to_thread(server.stop)
                await asyncio.sleep(2.0)  # the follower's reads fail past its store's retries
                await asyncio.to_thread(server.start)
                await until(lambda: shows(two), "task b counted", timeout_s=40)
        finally:
            await store.close()
        _, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
    finally:
        if run is not None and run.poll() is None:
            run.kill()
            run.communicate()
        server.stop()
