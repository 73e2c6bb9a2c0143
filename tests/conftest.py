"""Fixtures shared by every test folder."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from maos.store import open_store
from maos.store.base import Store


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh SQLite store in the test's directory."""
    store = await open_store(f"sqlite:///{tmp_path / 'maos.db'}")
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def cli() -> Path:
    """The real Claude Code CLI (bundled in the claude-agent-sdk wheel)."""
    from maos.agents.claude_cli import find_claude_cli

    found = find_claude_cli()
    if found is None:
        pytest.skip("no Claude Code CLI (pip install claude-agent-sdk bundles one)")
    return found


REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}"


def redis_answers() -> bool:
    """Whether the Redis at 127.0.0.1:6379 answers PING (CI and `make test` start one)."""
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def run_store(request: pytest.FixtureRequest, tmp_path: Path, run_id: str) -> AsyncIterator[Store]:
    """A store on each backend for one run (``run_id``); the run's Redis keys are deleted after."""
    if request.param == "sqlite":
        opened = await open_store(f"sqlite:///{tmp_path / 'maos.db'}")
        try:
            yield opened
        finally:
            await opened.close()
        return
    if not redis_answers():
        pytest.skip(f"no Redis server answers on {REDIS_URL}")
    import redis.asyncio

    opened = await open_store(REDIS_URL)
    try:
        yield opened
    finally:
        await opened.close()
        client = redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT)
        try:
            found = [key async for key in client.scan_iter(match=f"*{{run:{run_id}}}*", count=1000)]
            if found:
                await client.delete(*found)
        finally:
            await client.aclose()


MOTO_WARNINGS = [
    # moto and the botocore it drives may warn about their own internals; nothing of ours.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:moto.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:botocore.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:werkzeug.*"),
]
"""``pytestmark`` of a module that talks to the moto S3 server."""


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto) on a free loopback port, for one test module."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client for the moto server at ``endpoint`` (moto's test credentials)."""
    import boto3  # type: ignore[import-untyped]

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
