"""The dashboard's ``after`` / ``Last-Event-ID``: anything that is not an event id the store
could have issued is ``400`` naming the parameter, never an ``OverflowError`` in the store."""

from __future__ import annotations

import httpx
import pytest

from maos.store.base import Store
from maos.web import create_app

BAD_IDS = [
    "1" + "0" * 400,  # SQLite: Python int too large to convert to SQLite INTEGER
    str(2**63),
    "-1",
    "nan",
    "inf",
    "1_000",
    "١٢",
    "1e3",
    "1-2-3",
    f"{2**64}-0",
    "0x10",
]


@pytest.mark.parametrize("after", BAD_IDS)
async def test_a_bad_after_is_a_400_naming_it(sqlite_store: Store, after: str) -> None:
    app = create_app(sqlite_store, run_id="r1")  # its own run: streamed before it starts
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client,
    ):
        response = await client.get("/api/runs/r1/events", params={"after": after})
        assert response.status_code == 400
        assert response.json()["error"] == "bad_request"
        assert response.json()["detail"].startswith("after")
        header = await client.get("/api/runs/r1/events", headers={b"Last-Event-ID": after.encode()})
        assert header.status_code == 400
        assert "Last-Event-ID" in header.json()["detail"]


async def test_a_redis_id_on_sqlite_is_a_400(sqlite_store: Store) -> None:
    app = create_app(sqlite_store, run_id="r1")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client,
    ):
        response = await client.get("/api/runs/r1/events", params={"after": "1700000000000-0"})
        assert response.status_code == 400
        assert "after" in response.json()["detail"]


async def test_a_path_id_with_a_newline_is_not_found(sqlite_store: Store) -> None:
    app = create_app(sqlite_store)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client,
    ):
        assert (await client.get("/api/runs/r1%0A/state")).status_code == 404
