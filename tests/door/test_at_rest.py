"""Messages and state values at rest: sealed in Redis (raw reads show no plain text), clear
on SQLite unless asked, still round-tripping through the door; and the door on ``rediss://``
against a real TLS redis-server with a throwaway CA."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from maos.bus import Bus
from maos.door import Door
from maos.errors import StoreDataError
from maos.security import (
    DATA_KEY_ENV,
    ENCRYPT_ENV,
    MAGIC,
    ValueCipher,
    format_key,
    generate_key,
    value_cipher,
)
from maos.state import SharedState
from maos.store import keys, open_store
from maos.store.base import Store

from ..store.redis_harness import REDIS_SERVER, SETPRIV, free_port, have_redis_server
from .conftest import start_run
from .test_door import (
    test_messages_through_the_door,
    test_state_through_the_door_is_logged_without_large_values,
)

SECRET = "correct horse battery staple"

__all__ = [  # collected here again, on the rediss:// store below
    "test_messages_through_the_door",
    "test_state_through_the_door_is_logged_without_large_values",
]


@pytest.fixture(autouse=True)
def run_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    key = generate_key()
    monkeypatch.setenv("MAOS_KEY", format_key(key))
    monkeypatch.delenv(DATA_KEY_ENV, raising=False)
    monkeypatch.delenv(ENCRYPT_ENV, raising=False)
    return key


# ------------------------------------------------------------------ a TLS redis-server


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "maos test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    paths[2].chmod(0o600)
    return paths


@pytest.fixture(scope="module")
def tls_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not have_redis_server():
        pytest.skip("needs redis-server")
    folder = tmp_path_factory.mktemp("tls-redis")
    ca, cert, key = _certificates(folder)
    port = free_port()
    argv = [
        REDIS_SERVER,
        "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
        "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(folder),
        "--logfile", str(folder / "redis.log"),
    ]  # fmt: skip
    if SETPRIV:
        argv = [SETPRIV, "--pdeathsig", "KILL", *argv]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca))
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"TLS redis-server did not start: {(folder / 'redis.log').read_text()[-500:]}"
                    )
                time.sleep(0.02)
        client.close()
        yield f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def store(tls_url: str, run_id: str) -> AsyncIterator[Store]:
    """Overrides the suite's ``store`` here: the imported door tests run on ``rediss://``."""
    opened = await open_store(tls_url)
    try:
        yield opened
    finally:
        await opened.close()


async def test_tls_needs_the_ca(tls_url: str) -> None:
    from maos.errors import StoreUnavailable

    without_ca = tls_url.split("?", 1)[0]
    with pytest.raises(StoreUnavailable):
        await open_store(without_ca)


async def _raw_values(url: str, pattern: str) -> list[bytes]:
    client: Any = redis.asyncio.Redis.from_url(url)
    try:
        out: list[bytes] = []
        async for key in client.scan_iter(match=pattern, count=1000):
            kind = (await client.type(key)).decode()
            if kind == "hash":  # kv: {v: value, ver: version}
                out.append((await client.hgetall(key))[b"v"])
            elif kind == "stream":
                out.extend(value for _, fields in await client.xrange(key) for value in fields.values())
        return out
    finally:
        await client.aclose()


async def test_values_in_redis_over_tls_are_sealed(
    store: Store, tls_url: str, run_id: str, tmp_path: Path
) -> None:
    await start_run(store, run_id, ("agent-a", "agent-b"), tmp_path)
    door = Door(store, run_id, "agent-a", "t1")
    await door.state_set("team/secret", {"text": SECRET})
    await door.send_message("agent-b", {"text": SECRET})
    other = Door(store, run_id, "agent-b", "t2")
    assert (await other.state_get("team/secret")).value == {"text": SECRET}  # type: ignore[union-attr]
    assert [d.message.content for d in await other.read_messages()] == [{"text": SECRET}]

    state_raw = await _raw_values(tls_url, f"*{{run:{run_id}}}*state*")
    assert state_raw
    assert all(value.startswith(MAGIC) and SECRET.encode() not in value for value in state_raw)
    everything = await _raw_values(tls_url, f"*{{run:{run_id}}}*")
    assert not [value for value in everything if SECRET.encode() in value]  # nor in events (no preview)


# ------------------------------------------------------------------ the shared Redis on 6379


@pytest.fixture
async def redis_store(run_store: Store) -> Store:
    if not run_store.url.startswith("redis"):
        pytest.skip("Redis only")
    return run_store


async def test_redis_values_are_sealed_and_round_trip(redis_store: Store, run_id: str) -> None:
    state = SharedState(redis_store, run_id)
    bus = Bus(redis_store, run_id)
    assert state.sealed
    await state.set("api/schema", {"text": SECRET})
    await state.update("api/count", lambda n: (n or 0) + 1)
    await bus.send("agent-a", "agent-b", {"text": SECRET})
    host, port = redis_store.url.removeprefix("redis://").split("/")[0].split(":")
    dump = subprocess.run(
        [
            "redis-cli",
            "-h",
            host,
            "-p",
            port,
            "--no-raw",
            "HGET",
            "maos:kv:" + keys.state_key(run_id, "api/schema"),
            "v",
        ],
        capture_output=True,
        check=True,
    ).stdout
    assert SECRET.encode() not in dump
    assert dump.startswith(b'"MAOS')
    stream = keys.bus_inbox(run_id, "agent-b", "normal")
    xrange = subprocess.run(
        ["redis-cli", "-h", host, "-p", port, "XRANGE", "maos:x:" + stream, "-", "+"],
        capture_output=True,
        check=True,
    ).stdout
    assert xrange.strip()
    assert SECRET.encode() not in xrange
    # and in clear through the API
    assert (await state.get("api/schema")).value == {"text": SECRET}  # type: ignore[union-attr]
    assert (await state.get("api/count")).value == 1  # type: ignore[union-attr]
    assert [d.message.content for d in await bus.read("agent-b")] == [{"text": SECRET}]
    # an agent holding only the run's data key reads it too; another run's key cannot
    assert isinstance(state.cipher, ValueCipher)
    agent_env = {DATA_KEY_ENV: format_key(state.cipher.key)}
    as_agent = SharedState(redis_store, run_id, cipher=value_cipher(redis_store.url, run_id, env=agent_env))
    assert (await as_agent.get("api/schema")).value == {"text": SECRET}  # type: ignore[union-attr]
    wrong = ValueCipher(generate_key())
    with pytest.raises(StoreDataError, match="cannot be decrypted"):
        await SharedState(redis_store, run_id, cipher=wrong).get("api/schema")
    with pytest.raises(StoreDataError, match="no data key"):
        await SharedState(redis_store, run_id, cipher=None).get("api/schema")


async def test_sqlite_stays_clear_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'maos.db'}")
    try:
        await SharedState(store, "r1").set("k", SECRET)
        raw = await store.get(keys.state_key("r1", "k"))
        assert raw is not None
        assert SECRET.encode() in raw.value
        monkeypatch.setenv(ENCRYPT_ENV, "1")
        sealed = SharedState(store, "r1")
        await sealed.set("k2", SECRET)
        raw = await store.get(keys.state_key("r1", "k2"))
        assert raw is not None
        assert SECRET.encode() not in raw.value
        assert (await sealed.get("k")).value == SECRET  # type: ignore[union-attr]  # clear still reads
        assert (await sealed.get("k2")).value == SECRET  # type: ignore[union-attr]
        # a value sealed under one key cannot be moved to another
        await store.set(keys.state_key("r1", "k3"), raw.value)
        with pytest.raises(StoreDataError):
            await sealed.get("k3")
    finally:
        await store.close()


def test_data_key_is_per_run_and_not_the_master(run_key: bytes) -> None:
    one = value_cipher("redis://x", "run-1")
    two = value_cipher("redis://x", "run-2")
    assert one is not None
    assert two is not None
    assert one.key != two.key
    assert run_key not in (one.key, two.key)
    assert value_cipher("sqlite:///x.db", "run-1", env={**os.environ, ENCRYPT_ENV: "0"}).write is False  # type: ignore[union-attr]
