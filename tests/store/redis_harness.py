"""Throwaway ``redis-server`` processes for tests: one standalone server, or a 6-node cluster
(3 primaries + 3 replicas), on free loopback ports, each in its own temporary directory.

Teardown is a fixed contract: SIGTERM, a grace period, SIGKILL, wait. Servers are started
through ``setpriv --pdeathsig KILL`` when available, so even a test process killed with
SIGKILL leaves no orphan ``redis-server`` behind. Servers bind 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from maos.errors import StoreUnavailable
from maos.store.redis import RedisStore

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
SETPRIV = shutil.which("setpriv")
HOST = "127.0.0.1"
CLUSTER_NODE_ARGS = (
    "--cluster-enabled", "yes",
    "--cluster-config-file", "nodes.conf",
    # Replicas sync at once (the default waits 5 s for more replicas to share one transfer):
    # a replica that never synced cannot take over from a failed primary.
    "--repl-diskless-sync-delay", "0",
)  # fmt: skip


def have_redis_server() -> bool:
    return Path(REDIS_SERVER).exists()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (held open together so none is handed out twice)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for sock in socks:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _command(port: int, *args: str, timeout_s: float = 1.0) -> bytes | None:
    """Send one inline command and return the raw reply, or None if nothing answers."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
            sock.sendall(" ".join(args).encode() + b"\r\n")
            reply = b""
            while True:
                chunk = sock.recv(65536)
                reply += chunk
                if not chunk or _complete(reply):
                    return reply
    except OSError:
        return None


def _complete(reply: bytes) -> bool:
    if reply[:1] in (b"+", b"-", b":"):
        return reply.endswith(b"\r\n")
    if reply[:1] == b"$":
        head, _, rest = reply.partition(b"\r\n")
        size = int(head[1:])
        return size < 0 or len(rest) >= size + 2
    return False


def ping(port: int) -> bool:
    return _command(port, "PING") == b"+PONG\r\n"


def info(port: int, *args: str) -> dict[str, str]:
    """``INFO``/``CLUSTER INFO`` style reply as a dict (empty if nothing answers)."""
    reply = _command(port, *args)
    if not reply or not reply.startswith(b"$"):
        return {}
    out: dict[str, str] = {}
    for line in reply.decode().splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            out[name] = value.strip()
    return out


@dataclass
class RedisServer:
    """One ``redis-server`` on ``127.0.0.1:port`` with no persistence."""

    port: int
    workdir: Path
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def logfile(self) -> Path:
        return self.workdir / "redis.log"

    def spawn(self) -> None:
        """Start the process without waiting for it to answer."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"redis-server on {self.address} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.logfile),
            *self.extra_args,
        ]  # fmt: skip
        if SETPRIV:
            argv = [SETPRIV, "--pdeathsig", "KILL", *argv]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server on {self.address} exited with {self.proc.returncode}: {self._log_tail()}"
                )
            if ping(self.port):
                return
            time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"redis-server on {self.address} did not answer PING in {timeout_s} s")

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.spawn()
        self.wait_ready(timeout_s)
        return self

    def stop(self, *, kill: bool = False, grace_s: float = 5.0) -> None:
        """Stop the server: SIGKILL at once (``kill``, a crash) or SIGTERM, grace, SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                if kill:
                    proc.kill()
                else:
                    proc.terminate()
                    try:
                        proc.wait(grace_s)
                    except subprocess.TimeoutExpired:
                        proc.kill()
        finally:
            proc.wait()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"


def start_server(workdir: Path, *extra_args: str, attempts: int = 5) -> RedisServer:
    """A standalone server on a free port (another port if that one was taken meanwhile)."""
    for attempt in range(attempts):
        server = RedisServer(free_port(), workdir / f"redis-{attempt}", tuple(extra_args))
        try:
            return server.start()
        except RuntimeError:
            server.stop()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def redis_server(*extra_args: str) -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="maos-redis-") as tmp:
        server = start_server(Path(tmp), *extra_args)
        try:
            yield server
        finally:
            server.stop()


@dataclass
class RedisClusterProcesses:
    """Six servers forming one cluster; ``url`` names one of them (any node will do)."""

    nodes: list[RedisServer]
    start_s: float = 0.0

    @property
    def url(self) -> str:
        return f"redis+cluster://{HOST}:{self.nodes[0].port}"

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            node.stop()


def start_cluster(
    workdir: Path, *, node_timeout_ms: int = 5000, timeout_s: float = 60.0
) -> RedisClusterProcesses:
    """Start 6 nodes and join them with ``redis-cli --cluster create --cluster-replicas 1``;
    return once every node reports ``cluster_state:ok`` with all 16384 slots served and
    every replica is in sync with its primary (so that it could take over)."""
    began = time.monotonic()
    ports = free_ports(12)
    # Bus ports chosen explicitly: the default (port + 10000) may be taken or above 65535.
    nodes = [
        RedisServer(
            ports[2 * i],
            workdir / f"node-{i}",
            (
                *CLUSTER_NODE_ARGS,
                *("--cluster-node-timeout", str(node_timeout_ms)),
                *("--cluster-port", str(ports[2 * i + 1])),
            ),
        )
        for i in range(6)
    ]
    cluster = RedisClusterProcesses(nodes)
    try:
        for node in nodes:
            node.spawn()
        for node in nodes:
            node.wait_ready()
        addresses = [node.address for node in nodes]
        created = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(
                "redis-cli --cluster create failed: "
                + (created.stdout + created.stderr).decode(errors="replace")[-2000:]
            )
        deadline = time.monotonic() + timeout_s
        while not all(_node_ok(node.port) for node in nodes):
            if time.monotonic() > deadline:
                states = {node.port: info(node.port, "CLUSTER", "INFO") for node in nodes}
                raise RuntimeError(f"cluster did not become ok in {timeout_s} s: {states}")
            time.sleep(0.02)
    except BaseException:
        cluster.stop()
        raise
    cluster.start_s = time.monotonic() - began
    return cluster


def _node_ok(port: int) -> bool:
    state = info(port, "CLUSTER", "INFO")
    replication = info(port, "INFO", "replication")
    return (
        state.get("cluster_state") == "ok"
        and state.get("cluster_slots_ok") == "16384"
        and state.get("cluster_known_nodes") == "6"
        and (replication.get("role") == "master" or replication.get("master_link_status") == "up")
    )


@contextlib.contextmanager
def redis_cluster(*, node_timeout_ms: int = 5000) -> Iterator[RedisClusterProcesses]:
    with tempfile.TemporaryDirectory(prefix="maos-redis-cluster-") as tmp:
        cluster = start_cluster(Path(tmp), node_timeout_ms=node_timeout_ms)
        try:
            yield cluster
        finally:
            cluster.stop()


class SessionCluster:
    """The one cluster of a test session: started on first use, stopped by ``stop()``
    (``conftest.py`` calls it when the session ends)."""

    def __init__(self) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._cluster: RedisClusterProcesses | None = None
        self._failed: str | None = None

    def get(self) -> RedisClusterProcesses:
        if not have_redis_server():
            pytest.skip("no redis-server binary")
        if self._failed is not None:
            pytest.fail(f"the Redis Cluster of this session failed to start: {self._failed}")
        if self._cluster is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="maos-redis-cluster-")
            try:
                self._cluster = start_cluster(Path(self._tmp.name))
            except Exception as exc:
                self._failed = str(exc)
                self.stop()
                raise
        return self._cluster

    def stop(self) -> None:
        cluster, self._cluster = self._cluster, None
        tmp, self._tmp = self._tmp, None
        try:
            if cluster is not None:
                cluster.stop()
        finally:
            if tmp is not None:
                tmp.cleanup()


SESSION_CLUSTER = SessionCluster()

REDIS_URL = os.environ.get("MAOS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
"""The shared server the ``redis`` contract backend runs on (skipped when none answers)."""


class KeyRecordingRedisStore(RedisStore):
    """A ``RedisStore`` that remembers the Redis keys it touched, to delete them afterwards."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.touched: set[str] = set()

    def _kv(self, key: str) -> str:
        return self._touch(super()._kv(key))

    def _stream(self, stream: str) -> str:
        return self._touch(super()._stream(stream))

    def _lease(self, name: str) -> str:
        return self._touch(super()._lease(name))

    def _touch(self, name: str) -> str:
        self.touched.add(name)
        return name

    async def delete_touched(self) -> None:
        for name in sorted(self.touched):
            await self._client.delete(name)  # one key per call: keys may live in any slot


@contextlib.asynccontextmanager
async def recording_store(url: str, *, skip_if_unreachable: bool) -> AsyncIterator[KeyRecordingRedisStore]:
    try:
        store = await KeyRecordingRedisStore.open(url)
    except StoreUnavailable as exc:
        if skip_if_unreachable:
            pytest.skip(str(exc))
        raise
    try:
        yield store
    finally:
        try:
            await store.delete_touched()
        finally:
            await store.close()


@contextlib.asynccontextmanager
async def redis_backend(tmp_path: Path) -> AsyncIterator[RedisStore]:
    """Contract backend: the Redis server at ``REDIS_URL``; the test's keys are deleted after."""
    async with recording_store(REDIS_URL, skip_if_unreachable=True) as store:
        yield store


@contextlib.asynccontextmanager
async def redis_cluster_backend(tmp_path: Path) -> AsyncIterator[RedisStore]:
    """Contract backend: the session's 6-node Redis Cluster (started on first use)."""
    async with recording_store(SESSION_CLUSTER.get().url, skip_if_unreachable=False) as store:
        yield store
