"""Blob storage: named byte strings in a local directory or an S3-compatible bucket.

Checkpoints (and later large payloads) live here, deliberately apart from the store, so they
survive losing it. ``open_blob_store(url)`` picks a backend:

- ``None`` → ``LocalBlobStore`` in ``.maos/checkpoints`` of ``workdir``;
- ``file:///abs/path``, ``/abs/path`` or ``relative/path`` (relative to ``workdir``) → a directory;
- ``s3://bucket/prefix`` → ``S3BlobStore`` (``endpoint_url`` for MinIO, moto, Ceph…; boto3
  also honours ``AWS_ENDPOINT_URL``; credentials come from boto3's usual chain).

Names are relative paths of ``/``-separated parts made of letters, digits, ``_ . -``, none
starting with a dot (temporary files of the local store do, so they are never listed).
Every backend error reaches the caller as ``BlobError`` (``BlobNotFound`` for a missing
name) with the location in the message. Blocking I/O runs on worker threads
(``asyncio.to_thread``), so a 50 MB write does not stall the event loop.

What a local directory holds may have been put there by anyone who can write it (an agent
works in the same folder): a blob is read only from a regular file, never through a link,
never from a FIFO or a device, and at most ``MAX_BLOB_BYTES``; anything else is a
``BlobError`` (a checkpoint then counts as corrupt and the next one is used).
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import os
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

from maos.documents import DocumentError, read_document
from maos.errors import BlobError, BlobNotFound
from maos.filemodes import private_dir
from maos.paths import checkpoints_dir

MAX_BLOB_BYTES = 1 << 30
"""The largest blob read back (a checkpoint holds the run's state and its key-value pairs)."""

__all__ = [
    "BlobInfo",
    "BlobStore",
    "LocalBlobStore",
    "S3BlobStore",
    "check_endpoint_url",
    "check_name",
    "open_blob_store",
]

T = TypeVar("T")
S3Client = Any  # a botocore S3 client; boto3 ships no type information

_PART = r"[A-Za-z0-9_-][A-Za-z0-9_.-]*"
_NAME_RE = re.compile(rf"^{_PART}(/{_PART})*$")
_PREFIX_RE = re.compile(rf"^({_PART}/)*([A-Za-z0-9_-][A-Za-z0-9_.-]*)?$")


@dataclass(frozen=True, slots=True)
class BlobInfo:
    name: str
    size: int


@runtime_checkable
class BlobStore(Protocol):
    """Async blob storage. Safe to share between tasks of one event loop."""

    url: str

    async def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name``, replacing any previous blob; readers see the old or
        the new bytes, never a mix. Durable when this returns."""
        ...

    async def get(self, name: str) -> bytes:
        """The bytes of ``name``; ``BlobNotFound`` if there is none."""
        ...

    async def list(self, prefix: str = "") -> builtins.list[BlobInfo]:
        """Every blob whose name starts with ``prefix``, sorted by name."""
        ...

    async def delete(self, name: str) -> None:
        """Delete ``name``; deleting a missing blob is not an error."""
        ...

    async def close(self) -> None: ...


def check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise BlobError(
            f"invalid blob name {name!r}: expected '/'-separated parts of letters, digits, '_', '.', '-' "
            "not starting with '.'"
        )
    return name


def _check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.fullmatch(prefix):
        raise BlobError(f"invalid blob name prefix {prefix!r}")
    return prefix


def check_endpoint_url(url: str) -> str:
    """``url`` unchanged if it can be an S3 endpoint (``http[s]://HOST[:PORT][/PATH]``); else
    ``BlobError`` saying why. botocore says only "Invalid endpoint", and when the first call is
    made. Contacts nothing."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # parsing the port is the check
    except ValueError as exc:
        raise BlobError(f"S3 endpoint {url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BlobError(f"S3 endpoint {url!r} is not a URL: expected http[s]://HOST[:PORT]")
    if parts.query or parts.fragment or any(char.isspace() or not char.isprintable() for char in url):
        raise BlobError(f"S3 endpoint {url!r}: expected http[s]://HOST[:PORT][/PATH], nothing more")
    return url


def open_blob_store(url: str | None, *, workdir: Path, endpoint_url: str | None = None) -> BlobStore:
    """The blob store named by ``url`` (see the module docstring). Nothing is contacted yet."""
    if url is None or not url.strip():
        return LocalBlobStore(checkpoints_dir(workdir))
    if url.startswith("s3://"):
        return S3BlobStore(url, endpoint_url=endpoint_url)
    if url.startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise BlobError(f"checkpoint location {url!r}: file URLs must be file:///ABSOLUTE/PATH")
        return LocalBlobStore(Path(parts.path))
    if "://" in url:
        raise BlobError(
            f"checkpoint location {url!r} is not supported: expected a directory, file:///PATH "
            "or s3://BUCKET/PREFIX"
        )
    path = Path(url).expanduser()
    return LocalBlobStore(path if path.is_absolute() else workdir / path)


# --------------------------------------------------------------------------- local directory


class LocalBlobStore:
    """Blobs as files under ``root``. Writes go to a temporary file in the same directory,
    are fsynced, then renamed over the name (and the directory fsynced), so a crash leaves
    the old blob or the new one, never a torn one. Temporary files start with a dot."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*check_name(name).split("/"))

    async def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        await asyncio.to_thread(self._put, path, name, data)

    def _put(self, path: Path, name: str, data: bytes) -> None:
        try:
            private_dir(path.parent)  # checkpoints are their owner's only: 0700 folders,
            fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")  # 0600 files
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temp, path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
            _fsync_dir(path.parent)
        except OSError as exc:
            raise BlobError(f"cannot write blob {name} in {self.root}: {_os_reason(exc)}") from exc

    async def get(self, name: str) -> bytes:
        path = self._path(name)
        try:
            return await asyncio.to_thread(read_document, path, max_bytes=MAX_BLOB_BYTES, follow_links=False)
        except DocumentError as exc:
            if not os.path.lexists(path):
                raise BlobNotFound(f"no blob {name} in {self.root}") from None
            raise BlobError(f"cannot read blob {name} in {self.root}: {exc}") from exc

    async def list(self, prefix: str = "") -> builtins.list[BlobInfo]:
        _check_prefix(prefix)
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> builtins.list[BlobInfo]:
        directory, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*directory.split("/")) if directory else self.root
        found: builtins.list[BlobInfo] = []

        def fail(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):
                raise BlobError(f"cannot list blobs in {self.root}: {_os_reason(exc)}") from exc

        for dirpath, dirnames, filenames in os.walk(start, onerror=fail):
            dirnames[:] = [item for item in dirnames if not item.startswith(".")]
            relative = Path(dirpath).relative_to(self.root).as_posix()
            for filename in filenames:
                if filename.startswith("."):
                    continue
                name = filename if relative == "." else f"{relative}/{filename}"
                if not name.startswith(prefix):
                    continue
                try:
                    size = os.stat(os.path.join(dirpath, filename)).st_size
                except FileNotFoundError:
                    continue  # deleted meanwhile
                except OSError as exc:
                    raise BlobError(f"cannot list blobs in {self.root}: {_os_reason(exc)}") from exc
                found.append(BlobInfo(name, size))
        found.sort(key=lambda info: info.name)
        return found

    async def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise BlobError(f"cannot delete blob {name} in {self.root}: {_os_reason(exc)}") from exc

    async def close(self) -> None:
        return None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # not supported here (e.g. Windows); the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied ({exc.filename})"
    return exc.strerror or str(exc)


# --------------------------------------------------------------------------- S3


class S3BlobStore:
    """Blobs as objects under ``s3://bucket/prefix`` on AWS S3 or any S3-compatible server.

    boto3 is imported on first use (it costs ~0.3 s). Its calls block, so each runs on a
    worker thread; one client (thread-safe) serves them all. Timeouts: connect 5 s, read 60 s,
    3 attempts with boto3's standard retry mode.
    """

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        client_factory: Callable[[], S3Client] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise BlobError(f"invalid S3 location {url!r}: expected s3://BUCKET or s3://BUCKET/PREFIX")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        if self.prefix:
            check_name(self.prefix)
        self.url = url
        self.endpoint_url = None if endpoint_url is None else check_endpoint_url(endpoint_url)
        self._client_factory = client_factory
        self._client: S3Client | None = None
        self._lock = threading.Lock()

    @property
    def _where(self) -> str:
        location = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return f"{location} at {self.endpoint_url}" if self.endpoint_url else location

    def _key(self, name: str) -> str:
        check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def _client_now(self) -> S3Client:
        with self._lock:
            if self._client is None:
                if self._client_factory is not None:
                    self._client = self._client_factory()
                else:
                    try:
                        import boto3  # type: ignore[import-untyped]
                        from botocore.config import Config  # type: ignore[import-untyped]
                    except ImportError:
                        raise BlobError(
                            f"{self.url}: S3 storage needs boto3, which is not installed; "
                            "`pip install boto3` (or use a local directory)"
                        ) from None

                    config = Config(
                        connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}
                    )
                    self._client = boto3.session.Session().client(
                        "s3", endpoint_url=self.endpoint_url, config=config
                    )
            return self._client

    async def _run(self, action: str, name: str, call: Callable[[S3Client], T]) -> T:
        def run() -> T:
            client = self._client_now()
            try:
                return call(client)
            except Exception as exc:
                raise self._translate(exc, action, name) from exc

        return await asyncio.to_thread(run)

    def _translate(self, exc: Exception, action: str, name: str) -> Exception:
        from botocore.exceptions import (  # type: ignore[import-untyped]
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        what = f"cannot {action} {name or 'blobs'} in {self._where}"
        if isinstance(exc, ClientError):
            error: dict[str, Any] = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                return BlobNotFound(f"no blob {name} in {self._where}")
            if code == "NoSuchBucket":
                return BlobError(f"{what}: bucket {self.bucket!r} does not exist; create it or fix the URL")
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                return BlobError(f"{what}: access denied ({code}); check the S3 credentials and policy")
            return BlobError(f"{what}: {code or 'error'}: {error.get('Message', exc)}")
        if isinstance(exc, NoCredentialsError):
            return BlobError(
                f"{what}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            )
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            return BlobError(f"{what}: cannot reach the S3 endpoint ({exc}); check --s3-endpoint")
        if isinstance(exc, BotoCoreError):
            return BlobError(f"{what}: {exc}")
        if isinstance(exc, BlobError):
            return exc
        return BlobError(f"{what}: {type(exc).__name__}: {exc}")

    async def put(self, name: str, data: bytes) -> None:
        key = self._key(name)
        await self._run(
            "write", name, lambda client: client.put_object(Bucket=self.bucket, Key=key, Body=data)
        )

    async def get(self, name: str) -> bytes:
        key = self._key(name)

        def call(client: S3Client) -> bytes:
            response = client.get_object(Bucket=self.bucket, Key=key)
            size = int(response.get("ContentLength", 0))
            if size > MAX_BLOB_BYTES:
                response["Body"].close()
                raise BlobError(f"blob {name} is {size} bytes, more than the limit of {MAX_BLOB_BYTES}")
            body: bytes = response["Body"].read(MAX_BLOB_BYTES + 1)
            if len(body) > MAX_BLOB_BYTES:
                raise BlobError(f"blob {name} is more than the limit of {MAX_BLOB_BYTES} bytes")
            return body

        return await self._run("read", name, call)

    async def list(self, prefix: str = "") -> builtins.list[BlobInfo]:
        _check_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""

        def call(client: S3Client) -> builtins.list[BlobInfo]:
            found: builtins.list[BlobInfo] = []
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + prefix
            ):
                for item in page.get("Contents", []):
                    name = str(item["Key"])[len(base) :]
                    if _NAME_RE.fullmatch(name):
                        found.append(BlobInfo(name, int(item["Size"])))
            found.sort(key=lambda info: info.name)
            return found

        return await self._run("list", "", call)

    async def delete(self, name: str) -> None:
        key = self._key(name)
        await self._run("delete", name, lambda client: client.delete_object(Bucket=self.bucket, Key=key))

    async def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)
