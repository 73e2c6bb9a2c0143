"""Waiting for signals, not for time: tests wait until something has happened (a reader is
blocked, a lease ran out), with a deadline, and never sleep a fixed time hoping it did.

A sleep that "lets a reader block" passes whether or not the reader got there, so the test
may not exercise what it names; a sleep that "proves nothing happened" passes by luck on a
fast machine and fails on a slow one. Wait for the event itself, or for a later one that
would have come after the thing that must not happen.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import redis.asyncio

from maos.store.base import Store, connect_url
from maos.store.redis import RedisStore, client_name
from maos.store.sqlite import SqliteStore

POLL_S = 0.005


async def until(
    check: Callable[[], bool | Awaitable[bool]],
    what: str,
    *,
    timeout_s: float = 10.0,
    interval_s: float = POLL_S,
) -> float:
    """Call ``check`` (sync or async) until it is true; the seconds that took. ``AssertionError``
    naming ``what`` after ``timeout_s``."""
    started = time.monotonic()
    while True:
        done = check()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(interval_s)


async def readers_blocked(store: Store, n: int = 1, *, timeout_s: float = 10.0) -> None:
    """Return once at least ``n`` blocking reads of this process on ``store`` wait for an
    append: their query found nothing, so what is appended next wakes them.

    SQLite: ``SqliteStore.blocked_readers``. Redis (and every node of a cluster):
    ``CLIENT LIST``, the connections named by ``client_name()`` (this process) blocked in
    XREAD or XREADGROUP, so readers of other processes on a shared server do not count."""
    if isinstance(store, SqliteStore):
        await until(lambda: store.blocked_readers >= n, f"{n} blocked reader(s)", timeout_s=timeout_s)
        return
    if not isinstance(store, RedisStore):
        raise TypeError(f"no readiness signal for {type(store).__name__}")
    admins = await _redis_nodes(store)
    mine = client_name()

    async def blocked() -> int:
        count = 0
        for admin in admins:
            for client in await admin.client_list():
                if (
                    client.get("name") == mine
                    and "b" in client.get("flags", "")
                    and client.get("cmd") in ("xread", "xreadgroup")
                ):
                    count += 1
        return count

    try:
        await until(
            lambda: _at_least(blocked(), n), f"{n} blocked reader(s) on {store.url}", timeout_s=timeout_s
        )
    finally:
        for admin in admins:
            await admin.aclose()


async def _at_least(count: Awaitable[int], n: int) -> bool:
    return await count >= n


async def _redis_nodes(store: RedisStore) -> list[redis.asyncio.Redis]:
    """A plain client for each node of ``store``'s server (one, or every cluster node)."""
    url = connect_url(store)
    if not url.startswith("redis+cluster://"):
        return [redis.asyncio.Redis.from_url(url, decode_responses=True)]
    plain = urlsplit("redis://" + url.removeprefix("redis+cluster://"))
    seed = redis.asyncio.RedisCluster.from_url(plain.geturl())
    try:
        await seed.initialize()
        nodes = [f"{node.host}:{node.port}" for node in seed.get_nodes()]
    finally:
        await seed.aclose()
    login = plain.netloc.rpartition("@")[0]
    return [
        redis.asyncio.Redis.from_url(
            plain._replace(netloc=f"{login}@{node}" if login else node).geturl(), decode_responses=True
        )
        for node in nodes
    ]
