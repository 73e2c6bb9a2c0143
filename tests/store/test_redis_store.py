"""Redis-specific behaviour of ``RedisStore`` (the shared behaviour is in ``contract.py``):
error messages, riding out a server restart, one round trip per operation, hash tags."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from maos.errors import StoreDataError, StoreError, StoreUnavailable
from maos.store import AppendOp, CasOp, keys, open_store
from maos.store.redis import EPOCH_PREFIX, KV_PREFIX, LEASE_PREFIX, STREAM_PREFIX, RedisOptions, RedisStore
from tests.readiness import readers_blocked

from .redis_harness import (
    HOST,
    RedisClusterProcesses,
    RedisServer,
    free_port,
    have_redis_server,
    redis_cluster,
    start_server,
)

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not have_redis_server(), reason="needs the redis-server binary"),
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop and start."""
    srv = start_server(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
async def own_store(server: RedisServer) -> AsyncIterator[RedisStore]:
    st = await RedisStore.open(server.url)
    try:
        yield st
    finally:
        await st.close()


# ---------------------------------------------------------------------------- errors


async def test_nothing_listening_names_address_and_cause() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(
        StoreUnavailable, match=rf"^cannot reach Redis at 127\.0\.0\.1:{port}: connection refused$"
    ):
        await open_store(f"redis://127.0.0.1:{port}")
    with pytest.raises(
        StoreUnavailable, match=rf"^cannot reach Redis Cluster at 127\.0\.0\.1:{port}: connection refused$"
    ):
        await open_store(f"redis+cluster://127.0.0.1:{port}")
    assert time.monotonic() - started < 5, "open must fail fast, not ride out the outage"


async def test_gives_up_after_unavailable_after_s(server: RedisServer) -> None:
    st = await RedisStore.open(server.url, options=RedisOptions(unavailable_after_s=1.0))
    try:
        await st.set("k", b"v")
        server.stop(kill=True)
        started = time.monotonic()
        with pytest.raises(
            StoreUnavailable, match=rf"^cannot reach Redis at {server.address}: connection refused"
        ):
            await st.get("k")
        assert 0.9 < time.monotonic() - started < 5
    finally:
        await st.close()


async def test_redis_errors_become_store_errors_with_a_hint(
    server: RedisServer, own_store: RedisStore
) -> None:
    with redis.Redis(host=HOST, port=server.port) as admin:
        admin.set(KV_PREFIX + "not-a-hash", b"x")
    with pytest.raises(StoreError, match=r"get 'not-a-hash' failed: WRONGTYPE .*another program") as info:
        await own_store.get("not-a-hash")
    assert not isinstance(info.value, StoreUnavailable)
    assert server.address in str(info.value)


async def test_wrong_kind_of_url(server: RedisServer, redis_cluster_procs: RedisClusterProcesses) -> None:
    node = redis_cluster_procs.nodes[0]
    with pytest.raises(StoreError, match=rf"is a cluster node: use redis\+cluster://{node.address}"):
        await open_store(node.url)
    with pytest.raises(StoreError, match=rf"is not a cluster .*: use redis://{server.address}"):
        await open_store(f"redis+cluster://{server.address}")


# ---------------------------------------------------------------------------- reconnect


@pytest.mark.slow
async def test_rides_out_a_server_restart(server: RedisServer, own_store: RedisStore) -> None:
    """Kill the server in the middle of a run, start it again on the same port after 1.5 s:
    the loop of writes and reads waits, reconnects and completes; what it wrote after the
    restart is readable (the server keeps nothing on disk, so older data is gone)."""
    loop = asyncio.get_running_loop()
    restarted_at: float | None = None
    after_restart: dict[str, bytes] = {}
    followed: dict[str, bytes] = {}
    writing = asyncio.Event()
    writer_done = asyncio.Event()

    async def writer() -> None:
        try:
            for i in range(250):
                record = str(i).encode()
                entry_id = await own_store.append("log", record)
                before = restarted_at
                await own_store.set("counter", record)  # EVALSHA: NOSCRIPT after the restart
                got = await own_store.get("counter")
                if got is None:  # only if the empty server came back between the set and the get
                    assert restarted_at is not None
                    assert restarted_at != before
                    continue
                assert got.value == record
                if restarted_at is not None and loop.time() > restarted_at:
                    after_restart[entry_id] = record
                if i == 40:
                    writing.set()
                await asyncio.sleep(0.01)
        finally:
            writer_done.set()

    async def follower() -> None:
        after = "0"
        while not writer_done.is_set():
            for entry in await own_store.read("log", after, block_s=0.2):
                followed[entry.id] = entry.record
                after = entry.id
        for entry in await own_store.read("log", after):
            followed[entry.id] = entry.record

    async def chaos() -> None:
        nonlocal restarted_at
        await writing.wait()  # in the middle of the run
        server.stop(kill=True)
        await asyncio.sleep(1.5)  # the outage: what the store rides out
        server.start()
        restarted_at = loop.time()

    async with asyncio.timeout(60):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(writer())
            tg.create_task(follower())
            tg.create_task(chaos())

    assert len(after_restart) > 50
    stored = {entry.id: entry.record for entry in await own_store.read("log", count=100_000)}
    assert after_restart.items() <= stored.items()
    assert after_restart.items() <= followed.items()


def _primary_holding(cluster: RedisClusterProcesses, key: str) -> RedisServer:
    for node in cluster.nodes:
        if not node.running():
            continue
        with redis.Redis(host=HOST, port=node.port) as admin:
            if admin.info("replication")["role"] != "master":
                continue
            if int(admin.cluster("countkeysinslot", int(admin.cluster("keyslot", key)))) > 0:
                return node
    raise AssertionError(f"no primary holds {key}")


@pytest.mark.slow
async def test_cluster_rides_out_a_primary_failure() -> None:
    """Kill the primary serving a run's slot: its replica takes over (after the 2 s node
    timeout) and the operations that waited meanwhile complete."""
    run = "failover"
    with redis_cluster(node_timeout_ms=2000) as cluster:
        st = await RedisStore.open(cluster.url)
        try:
            await st.set(keys.state_key(run, "a"), b"before")
            victim = _primary_holding(cluster, KV_PREFIX + keys.state_key(run, "a"))
            victim.stop(kill=True)
            started = time.monotonic()
            for i in range(5):
                await st.set(keys.state_key(run, "a"), f"after {i}".encode())
                await st.append(keys.events(run), f"after {i}".encode())
            assert time.monotonic() - started > 1  # it did wait for the failover
            got = await st.get(keys.state_key(run, "a"))
            assert got is not None
            assert got.value == b"after 4"
            assert [e.record for e in await st.read(keys.events(run))][-5:] == [
                f"after {i}".encode() for i in range(5)
            ]
            assert _primary_holding(cluster, KV_PREFIX + keys.state_key(run, "a")) is not victim
        finally:
            await st.close()


async def test_blocking_reads_do_not_starve_short_commands(server: RedisServer) -> None:
    st = await RedisStore.open(
        server.url, options=RedisOptions(max_connections=2, max_blocking_connections=16)
    )
    try:
        async with asyncio.TaskGroup() as tg:
            readers = [tg.create_task(st.read(f"s{i}", block_s=2.0)) for i in range(8)]
            await readers_blocked(st, 8)
            started = time.monotonic()
            await st.set("k", b"v")
            assert await st.get("k") is not None
            assert time.monotonic() - started < 0.5
            for i in range(8):
                await st.append(f"s{i}", b"wake")
        assert time.monotonic() - started < 1.5
        assert all(len(r.result()) == 1 for r in readers)
    finally:
        await st.close()


# ---------------------------------------------------------------------------- round trips


class Monitor:
    """The commands clients send to a server, as MONITOR reports them (script calls excluded)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=2)
        self.sock.sendall(b"MONITOR\r\n")
        assert self.sock.recv(5) == b"+OK\r\n"

    def commands(self, quiet_s: float = 0.05) -> list[str]:
        self.sock.settimeout(quiet_s)
        data = b""
        try:
            while chunk := self.sock.recv(1 << 20):
                data += chunk
        except TimeoutError:
            pass
        lines = data.decode(errors="replace").splitlines()
        # +1700000000.123456 [0 127.0.0.1:40000] "EVALSHA" "..."  (script calls: [0 lua])
        return [
            line.split("] ", 1)[1].split(" ", 1)[0].strip('"').upper()
            for line in lines
            if "[0 lua]" not in line
        ]

    def close(self) -> None:
        self.sock.close()


async def test_one_round_trip_per_operation(server: RedisServer, own_store: RedisStore) -> None:
    # Warm up: the scripts are cached by EVAL on first use, the pool holds a connection.
    await own_store.cas("warm", 0, b"v")
    await own_store.set("warm", b"v")
    await own_store.acquire("lease", "me", 5)
    await own_store.create_group("s", "g")
    await own_store.append("s", b"r")
    await own_store.claim_stale("s", "g", "c", min_idle_s=60)
    await own_store.transact([AppendOp("s", b"r")])  # transactions and reads share one script
    await own_store.read_group("s", "g", "c", block_s=0.001)  # blocking reads: a pool of their own

    n = 10
    cases: dict[str, tuple[Callable[[int], Awaitable[object]], str]] = {
        "get": (lambda i: own_store.get("k"), "HMGET"),
        "set": (lambda i: own_store.set("k", b"v"), "EVALSHA"),
        "cas": (lambda i: own_store.cas("c", i, b"v"), "EVALSHA"),
        "append": (lambda i: own_store.append("s", b"r", maxlen=1000), "XADD"),
        "read": (lambda i: own_store.read("s", "0", count=1), "XREAD"),
        "read_group": (lambda i: own_store.read_group("s", "g", "c", count=1), "EVALSHA"),
        "blocking read_group": (lambda i: own_store.read_group("s", "g", "c", block_s=0.001), "XREADGROUP"),
        "transact": (lambda i: own_store.transact([CasOp("t", i, b"v")]), "EVALSHA"),
        "claim_stale": (lambda i: own_store.claim_stale("s", "g", "c2", min_idle_s=0), "EVALSHA"),
        "acquire": (lambda i: own_store.acquire("lease", "me", 5), "EVALSHA"),
    }
    monitor = Monitor(server.port)
    try:
        for name, (op, command) in cases.items():
            for i in range(n):
                await op(i)
            assert monitor.commands() == [command] * n, name
    finally:
        monitor.close()


async def test_transactions_submitted_together_share_a_round_trip(
    server: RedisServer, own_store: RedisStore
) -> None:
    """Transactions submitted while none is in flight go out at once, one script call each
    when they come one after another; submitted together (or while one is in flight), they
    share a call, and each still gets its own result."""
    await own_store.transact([AppendOp("warm", b"r")])  # the script is cached
    monitor = Monitor(server.port)
    try:
        for n in range(3):
            assert (await own_store.transact([CasOp(f"k{n}", 0, b"v")])).ok
        assert monitor.commands() == ["EVALSHA"] * 3
        results = await asyncio.gather(
            *(
                own_store.transact([CasOp(f"k{n}", 0, b"v"), AppendOp("s", f"{n}".encode())])
                for n in range(50)
            )
        )
        assert monitor.commands() == ["EVALSHA"]
    finally:
        monitor.close()
    assert [r.ok for r in results] == [n >= 3 for n in range(50)]
    assert [e.record for e in await own_store.read("s")] == [f"{n}".encode() for n in range(3, 50)]


def _delete(cluster: RedisClusterProcesses, *names: str) -> None:
    with RedisCluster(host=HOST, port=cluster.nodes[0].port) as client:
        for name in names:
            client.delete(name)


def _getkeys_calls(nodes: list[RedisServer]) -> int:
    total = 0
    for node in nodes:
        with redis.Redis(host=HOST, port=node.port) as admin:
            stats = admin.info("commandstats")
        total += int(stats.get("cmdstat_command|getkeys", {}).get("calls", 0))
    return total


async def test_cluster_reads_are_routed_without_getkeys(redis_cluster_procs: RedisClusterProcesses) -> None:
    st = await RedisStore.open(redis_cluster_procs.url)
    stream = keys.events("getkeys-check")
    try:
        before = _getkeys_calls(redis_cluster_procs.nodes)
        await st.create_group(stream, "g")
        await st.append(stream, b"r")
        assert len(await st.read(stream)) == 1
        assert len(await st.read_group(stream, "g", "c", block_s=0.05)) == 1
        assert await st.read(stream, await st.last_id(stream), block_s=0.01) == []
        assert _getkeys_calls(redis_cluster_procs.nodes) == before
    finally:
        await st.close()
        _delete(redis_cluster_procs, STREAM_PREFIX + stream)


# ---------------------------------------------------------------------------- hash tags


def test_a_runs_keys_share_one_slot() -> None:
    run = "01J9ZQ3K7W"
    names = [
        KV_PREFIX + keys.state_key(run, "a"),
        KV_PREFIX + keys.state_key(run, "b/c:d"),
        STREAM_PREFIX + keys.events(run),
        LEASE_PREFIX + keys.run_lease(run),
        EPOCH_PREFIX + keys.run_lease(run),
    ]
    assert {key_slot(name.encode()) for name in names} == {key_slot(f"run:{run}".encode())}
    assert key_slot(keys.events(run).encode()) != key_slot(keys.events("another-run").encode())


async def test_a_runs_keys_live_in_one_cluster_slot(redis_cluster_procs: RedisClusterProcesses) -> None:
    run = "slot-check"
    st = await RedisStore.open(redis_cluster_procs.url)
    try:
        await st.set(keys.state_key(run, "a"), b"1")
        await st.set(keys.state_key(run, "b"), b"2")
        await st.append(keys.events(run), b"e")
        assert await st.acquire(keys.run_lease(run), "me", 30)
        counts: dict[int, int] = {}
        for node in redis_cluster_procs.nodes:
            with redis.Redis(host=HOST, port=node.port) as admin:
                if admin.info("replication")["role"] != "master":
                    continue
                slot = int(admin.cluster("keyslot", KV_PREFIX + keys.state_key(run, "a")))
                counts[node.port] = int(admin.cluster("countkeysinslot", slot))
        assert sorted(counts.values()) == [0, 0, 5]  # two state keys, the log, the lease, its epoch
        assert [kv.key for kv in await st.scan(keys.state_prefix(run))] == [
            keys.state_key(run, "a"),
            keys.state_key(run, "b"),
        ]
    finally:
        await st.close()
        _delete(
            redis_cluster_procs,
            KV_PREFIX + keys.state_key(run, "a"),
            KV_PREFIX + keys.state_key(run, "b"),
            STREAM_PREFIX + keys.events(run),
            LEASE_PREFIX + keys.run_lease(run),
            EPOCH_PREFIX + keys.run_lease(run),
        )


# ---------------------------------------------------------------------------- what others wrote


async def test_stream_entries_without_the_record_field_or_with_more_fields_are_read(
    own_store: RedisStore, server: RedisServer
) -> None:
    stream = keys.events("hostile")
    await own_store.create_group(stream, "g")
    with redis.Redis(host=HOST, port=server.port) as admin:
        admin.xadd(STREAM_PREFIX + stream, {"other": "x"})
        admin.xadd(STREAM_PREFIX + stream, {"d": "kept", "extra": "y"})
        admin.xadd(STREAM_PREFIX + stream, {"extra": "y", "d": "kept too"})
    expected = [b"", b"kept", b"kept too"]  # no record: one no decoder reads
    assert [e.record for e in await own_store.read(stream)] == expected
    assert [e.record for e in await own_store.read_group(stream, "g", "c")] == expected
    assert [e.record for e in await own_store.unacknowledged(stream, "g") or []] == expected
    assert [e.record for e in await own_store.claim_stale(stream, "g", "c", min_idle_s=0)] == expected


async def test_keys_of_the_wrong_type_or_with_garbage_are_skipped_by_scan(
    own_store: RedisStore, server: RedisServer
) -> None:
    await own_store.set("p:good", b"1")
    with redis.Redis(host=HOST, port=server.port) as admin:
        admin.set(KV_PREFIX + "p:string", "a string where a hash belongs")
        admin.xadd(KV_PREFIX + "p:stream", {"d": "x"})
        admin.hset(KV_PREFIX + "p:version", mapping={"v": "x", "ver": "abc"})
        admin.hset(KV_PREFIX.encode() + b"p:\xff", mapping={"v": "x", "ver": "1"})
        admin.set(LEASE_PREFIX + "{l}", b"\xff owner")
        admin.set(EPOCH_PREFIX + "{l}", "many")
    assert [(kv.key, kv.value) for kv in await own_store.scan("p:")] == [("p:good", b"1"), ("p:\ufffd", b"x")]
    with pytest.raises(StoreDataError, match="version"):
        await own_store.get("p:version")
    assert await own_store.holder("l") == "\ufffd owner"
    with pytest.raises(StoreDataError, match="epoch"):
        await own_store.epoch("l")
