"""Checkpoints on S3: a real S3-compatible server (moto in server mode) on loopback.

The server is started by the fixture on a free port of 127.0.0.1 and stopped afterwards;
each test gets its own bucket. Nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from maos import security
from maos.blobs import S3BlobStore, open_blob_store
from maos.checkpoint.checkpointer import Checkpointer
from maos.checkpoint.codec import CheckpointKind
from maos.errors import BlobError, CheckpointError
from maos.events import fold
from tests.conftest import MOTO_WARNINGS, s3_client

from .blob_contract import BlobStoreContract
from .conftest import RUN_ID, run_events, state_after

pytestmark = MOTO_WARNINGS

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def endpoint(s3_endpoint: str) -> str:
    return s3_endpoint


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    env = {
        **CREDENTIALS,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


client = s3_client


@pytest.fixture
def bucket(endpoint: str, aws_env: dict[str, str]) -> str:
    name = f"maos-{uuid.uuid4().hex[:12]}"
    client(endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
async def s3(endpoint: str, bucket: str) -> Any:
    store = S3BlobStore(f"s3://{bucket}/ckpt", endpoint_url=endpoint)
    yield store
    await store.close()


def object_keys(endpoint: str, bucket: str) -> list[str]:
    response = client(endpoint).list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in response.get("Contents", []))


class TestS3BlobStore(BlobStoreContract):
    @pytest.fixture
    def blobs(self, s3: S3BlobStore) -> S3BlobStore:
        return s3


async def test_listing_pages_beyond_a_thousand_objects(s3: S3BlobStore, endpoint: str, bucket: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    raw = client(endpoint)
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(lambda n: raw.put_object(Bucket=bucket, Key=f"ckpt/many/{n:05d}", Body=b""), range(1005))
        )
    names = [info.name for info in await s3.list("many/")]
    assert names == [f"many/{n:05d}" for n in range(1005)]


async def test_checkpoints_round_trip_list_and_retention_on_s3(
    s3: S3BlobStore, endpoint: str, bucket: str
) -> None:
    key = security.KeyInfo(security.generate_key(), "test")
    events = run_events(20)
    checkpointer = Checkpointer(RUN_ID, s3, key, keep=2)
    written = []
    for step in range(4):
        start = step * 15
        written.append(await checkpointer.segment(events[start : start + 5], start_count=start))
        written.append(await checkpointer.snapshot(state_after(events, start + 15)))
    await checkpointer.segment(events[60:], start_count=60)

    listed = await checkpointer.list(RUN_ID)
    fulls = [item.id for item in written if item.kind is CheckpointKind.FULL]
    assert [item.id for item in listed if item.kind is CheckpointKind.FULL] == fulls[-2:]
    assert all(item.id >= fulls[-2] for item in listed)
    # The deletions really happened on the server, under the prefix.
    assert object_keys(endpoint, bucket) == [f"ckpt/{item.name}" for item in listed]
    assert {item.size for item in listed} == {
        item["Size"] for item in client(endpoint).list_objects_v2(Bucket=bucket)["Contents"]
    }

    restored = await checkpointer.load_latest(RUN_ID)
    assert restored.state == fold(events)
    assert restored.warnings == ()


async def test_corrupt_object_falls_back_to_the_previous_snapshot(
    s3: S3BlobStore, endpoint: str, bucket: str
) -> None:
    key = security.KeyInfo(security.generate_key(), "test")
    events = run_events(10)
    checkpointer = Checkpointer(RUN_ID, s3, key)
    older = await checkpointer.snapshot(state_after(events, 20))
    newest = await checkpointer.snapshot(state_after(events, 40))
    raw = client(endpoint)
    object_key = f"ckpt/{newest.name}"
    data = bytearray(raw.get_object(Bucket=bucket, Key=object_key)["Body"].read())
    data[len(data) // 2] ^= 0x10
    raw.put_object(Bucket=bucket, Key=object_key, Body=bytes(data))

    restored = await checkpointer.load_latest(RUN_ID)
    assert restored.base == older
    assert restored.state == state_after(events, 20)
    assert restored.warnings == (
        f"checkpoint {newest.id} is corrupt (authentication failed); using {older.id} instead",
    )
    assert len(object_keys(endpoint, bucket)) == 2  # nothing deleted on load


async def test_wrong_key_on_s3_is_a_clear_error(s3: S3BlobStore, endpoint: str, bucket: str) -> None:
    key = security.KeyInfo(security.generate_key(), "test")
    await Checkpointer(RUN_ID, s3, key).snapshot(state_after(run_events(4), 10))
    wrong = security.KeyInfo(security.generate_key(), "MAOS_KEY")
    with pytest.raises(
        CheckpointError, match=f"written with key id {key.key_id}, the key in use is {wrong.key_id}"
    ):
        await Checkpointer(RUN_ID, s3, wrong).load_latest(RUN_ID)
    assert len(object_keys(endpoint, bucket)) == 1


async def test_missing_bucket_and_unreachable_endpoint_are_clear_errors(
    endpoint: str, aws_env: dict[str, str]
) -> None:
    missing = S3BlobStore("s3://no-such-bucket-here/x", endpoint_url=endpoint)
    with pytest.raises(BlobError, match="bucket 'no-such-bucket-here' does not exist"):
        await missing.put("run/a", b"x")
    await missing.close()

    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    unreachable = S3BlobStore("s3://bucket", endpoint_url=f"http://127.0.0.1:{closed_port}")
    with pytest.raises(BlobError, match="cannot reach the S3 endpoint"):
        await unreachable.list()
    await unreachable.close()


async def test_missing_credentials_are_a_clear_error(
    endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3BlobStore(f"s3://{bucket}", endpoint_url=endpoint)
    with pytest.raises(BlobError, match="no S3 credentials"):
        await store.list()
    await store.close()


def test_cli_lists_and_restores_from_s3(
    endpoint: str, bucket: str, aws_env: dict[str, str], tmp_path: Path
) -> None:
    import asyncio

    key = security.generate_key()
    events = run_events(8)

    async def write() -> None:
        store = open_blob_store(f"s3://{bucket}/cli", workdir=tmp_path, endpoint_url=endpoint)
        checkpointer = Checkpointer(RUN_ID, store, security.KeyInfo(key, "test"))
        await checkpointer.snapshot(state_after(events, 20))
        await checkpointer.segment(events[20:], start_count=20)
        await store.close()

    asyncio.run(write())
    env = {**os.environ, **aws_env, "MAOS_KEY": security.format_key(key)}
    common = ["--checkpoints", f"s3://{bucket}/cli", "--s3-endpoint", endpoint]
    listed = subprocess.run(
        [sys.executable, "-m", "maos", "checkpoint", "list", RUN_ID, *common, "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [row["kind"] for row in rows] == ["full", "segment"]
    assert all(row["status"] == "ok" for row in rows)
    restored = subprocess.run(
        [sys.executable, "-m", "maos", "checkpoint", "restore", RUN_ID, *common, "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert restored.returncode == 0, restored.stderr
    document = json.loads(restored.stdout)
    assert document["event_count"] == len(events)
    assert document["state"]["status"] == "succeeded"
