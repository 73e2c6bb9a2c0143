"""Fixtures of the multi-host harness; their teardown runs also when the test fails.

Order of teardown (reverse of setup, enforced by the dependencies below): the processes
stop first (``processes``), then the namespaces go (``make_topology``), killing whatever
still runs inside them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..store.redis_harness import have_redis_server
from .netns import Host, PrefixClaim, Topology, netns_problem, new_prefix, remove_namespaces, sweep_orphans
from .processes import Processes
from .redis_node import DEFAULT_PORT, RedisNode


@functools.cache
def _netns_problem() -> str | None:
    return netns_problem()


@pytest.fixture
def make_topology() -> Iterator[Callable[..., Topology]]:
    """``make_topology("redis", "worker-a", …)``: hosts on one switch, in namespaces with a
    fresh ``maos-<6 hex>`` prefix per call; all removed after the test. Skips the test when
    not root or when ``ip netns`` does not work. First removes what killed runs left."""
    problem = _netns_problem()
    if problem is not None:
        pytest.skip(problem)
    sweep_orphans()
    claims: list[PrefixClaim] = []

    def make(*hosts: str, third_octet: int | None = None) -> Topology:
        claim = PrefixClaim(new_prefix())
        claims.append(claim)
        return Topology.create(claim.prefix, hosts, third_octet=third_octet)

    try:
        yield make
    finally:
        for claim in claims:
            remove_namespaces(claim.prefix)
            claim.release()


@pytest.fixture
def processes(make_topology: Callable[..., Topology], tmp_path: Path) -> Iterator[Processes]:
    """Starts programs on hosts (logs in ``tmp_path/logs``); stops them all after the test."""
    started = Processes(tmp_path / "logs")
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def make_redis(processes: Processes, tmp_path: Path) -> Callable[..., RedisNode]:
    """``make_redis(host, persistent=False)``: a started ``redis-server`` on ``host``'s address,
    its files in ``tmp_path/redis-<host>``. Skips the test when there is no ``redis-server``."""
    if not have_redis_server():
        pytest.skip("no redis-server binary")

    def make(host: Host, *, persistent: bool = False, port: int = DEFAULT_PORT) -> RedisNode:
        node = RedisNode(host, processes, tmp_path / f"redis-{host.name}", port=port, persistent=persistent)
        return node.start()

    return make
