"""Storage backends behind one protocol: ``open_store(url)`` picks one by URL scheme.

- ``sqlite:///relative/or/absolute/path.db`` (default ``.maos/maos.db`` in the working dir)
- ``redis://host:port/db`` and ``redis+cluster://host:port``

``check_store_url(url)`` is the one place a URL is judged: ``open_store`` and the CLI's
``--store`` option both use it, so a malformed URL is refused before anything is created.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

from maos.errors import StoreError
from maos.paths import store_file
from maos.sanitize import without_passwords
from maos.store.base import (
    AckOp,
    AppendOp,
    CasOp,
    CasResult,
    Entry,
    FenceOp,
    KeyValue,
    PendingEntry,
    Store,
    TransactResult,
    Versioned,
    WriteOp,
    connect_url,
)

DEFAULT_STORE_URL = f"sqlite:///{store_file('.')}"  # sqlite:///.maos/maos.db

__all__ = [
    "DEFAULT_STORE_URL",
    "AckOp",
    "AppendOp",
    "CasOp",
    "CasResult",
    "Entry",
    "FenceOp",
    "KeyValue",
    "PendingEntry",
    "Store",
    "TransactResult",
    "Versioned",
    "WriteOp",
    "check_store_url",
    "connect_url",
    "open_store",
    "sqlite_path",
]


_SQLITE_PREFIX = "sqlite:///"
_REDIS_SCHEMES = ("redis", "rediss", "redis+cluster")
_EXPECTED = "expected sqlite:///PATH, redis://HOST:PORT or redis+cluster://HOST:PORT"


def check_store_url(url: str) -> str:
    """``url`` unchanged if ``open_store`` can open it; else ``StoreError`` saying what is wrong
    (and the URL meant, for a SQLite URL a slash short). Connects to nothing and creates
    nothing: its one I/O is a ``stat`` of a SQLite URL's file, which must be a regular file if
    it exists (opening a FIFO would wait for a writer for ever)."""
    if url.startswith("sqlite:"):
        _check_sqlite_file(sqlite_path(url), url)
        return url
    shown = without_passwords(url)  # messages never quote a password
    scheme, separator, _ = url.partition("://")
    if scheme not in _REDIS_SCHEMES or not separator:
        raise StoreError(f"store URL {shown!r} is not supported: {_EXPECTED}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unclosed IPv6 bracket: redis://[::1
        raise StoreError(f"store URL {shown!r} is not a URL: {exc}") from None
    try:
        _ = parts.port  # parsing the port is the check: ValueError when it is not one
    except ValueError:
        port = parts.netloc.rpartition(":")[2]
        raise StoreError(f"store URL {shown!r}: the port {port!r} is not a number from 0 to 65535") from None
    database = parts.path.strip("/")
    if scheme == "redis+cluster" and database not in ("", "0"):
        raise StoreError(f"store URL {shown!r}: a Redis Cluster has only database 0")
    if database and not (database.isascii() and database.isdigit()):
        raise StoreError(f"store URL {shown!r}: {database!r} is not a Redis database number")
    if parts.query:
        from maos.store.redis import check_url_options  # redis-py: only for a URL with options

        try:
            check_url_options(url)
        except StoreError as exc:
            raise StoreError(f"store URL {shown!r}: {exc}") from None
    return url


def _check_sqlite_file(path: Path, url: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:  # none yet (it will be created), or unreadable: opening it says why
        return
    if stat.S_ISREG(mode):
        return
    from maos.documents import DocumentError, check_file_kind  # not at import: it loads yaml

    try:
        check_file_kind(mode)
    except DocumentError as exc:
        raise StoreError(f"store URL {url!r}: {path} {exc}") from None


def _check_sqlite(url: str) -> None:
    # Like SQLAlchemy: sqlite:///rel/path is relative, sqlite:////abs/path is absolute. Anything
    # else would be read as a relative path starting "sqlite:" and create such a folder here.
    rest = url.removeprefix("sqlite:")
    if not url.startswith(_SQLITE_PREFIX):
        absolute = rest.startswith("/") and not rest.startswith("//")  # sqlite:/abs/x.db
        meant = _SQLITE_PREFIX + (rest if absolute else rest.lstrip("/"))
        raise StoreError(
            f"store URL {url!r}: a SQLite URL has three slashes before a relative path and four "
            f"before an absolute one (did you mean {meant!r}?)"
        )
    if not url.removeprefix(_SQLITE_PREFIX).strip("/"):
        raise StoreError(f"store URL {url!r} names no database file: expected sqlite:///PATH")


def sqlite_path(url: str, cwd: Path | None = None) -> Path:
    """The database file of a ``sqlite:///`` URL; relative paths are relative to ``cwd``.
    ``StoreError`` for a malformed URL (``check_store_url``)."""
    _check_sqlite(url)
    raw = url.removeprefix("sqlite://")
    path = Path(raw[1:] if raw.startswith("/") else raw)
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    return path


async def open_store(url: str | None = None) -> Store:
    """Open the store named by ``url`` (default: SQLite in ``.maos/`` of the working dir)."""
    url = check_store_url(url or DEFAULT_STORE_URL)
    if url.startswith("sqlite:"):
        from maos.store.sqlite import SqliteStore

        return await SqliteStore.open(sqlite_path(url), url=url)
    if url.startswith(("redis://", "rediss://", "redis+cluster://")):
        from maos.store.redis import RedisStore

        return await RedisStore.open(url)
    raise AssertionError(f"check_store_url let {url!r} through")
