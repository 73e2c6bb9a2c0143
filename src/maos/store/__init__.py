"""Storage backends behind one protocol: ``open_store(url)`` picks one by URL scheme.

- ``sqlite:///relative/or/absolute/path.db`` (default ``.maos/maos.db`` in the working dir)
- ``redis://host:port/db`` and ``redis+cluster://host:port``
"""

from __future__ import annotations

from pathlib import Path

from maos.errors import StoreError
from maos.store.base import (
    AckOp,
    AppendOp,
    CasOp,
    CasResult,
    Entry,
    KeyValue,
    PendingEntry,
    Store,
    TransactResult,
    Versioned,
    WriteOp,
)

DEFAULT_STORE_URL = "sqlite:///.maos/maos.db"

__all__ = [
    "DEFAULT_STORE_URL",
    "AckOp",
    "AppendOp",
    "CasOp",
    "CasResult",
    "Entry",
    "KeyValue",
    "PendingEntry",
    "Store",
    "TransactResult",
    "Versioned",
    "WriteOp",
    "open_store",
    "sqlite_path",
]


def sqlite_path(url: str, cwd: Path | None = None) -> Path:
    """The database file of a ``sqlite:///`` URL; relative paths are relative to ``cwd``."""
    # Like SQLAlchemy: sqlite:///rel/path is relative, sqlite:////abs/path is absolute.
    raw = url.removeprefix("sqlite://")
    path = Path(raw[1:] if raw.startswith("/") else raw)
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    return path


async def open_store(url: str | None = None) -> Store:
    """Open the store named by ``url`` (default: SQLite in ``.maos/`` of the working dir)."""
    url = url or DEFAULT_STORE_URL
    if url.startswith("sqlite:"):
        from maos.store.sqlite import SqliteStore

        return await SqliteStore.open(sqlite_path(url), url=url)
    if url.startswith(("redis://", "rediss://", "redis+cluster://")):
        from maos.store.redis import RedisStore

        return await RedisStore.open(url)
    raise StoreError(
        f"store URL {url!r} is not supported: expected sqlite:///PATH, redis://HOST:PORT "
        "or redis+cluster://HOST:PORT"
    )
