"""One contract for every ``BlobStore``: subclass ``BlobStoreContract`` and give a ``blobs`` fixture."""

from __future__ import annotations

import os

import pytest

from maos.blobs import BlobInfo, BlobStore
from maos.errors import BlobError, BlobNotFound


class BlobStoreContract:
    async def test_put_get_overwrite(self, blobs: BlobStore) -> None:
        await blobs.put("run/a.ckpt", b"one")
        assert await blobs.get("run/a.ckpt") == b"one"
        await blobs.put("run/a.ckpt", b"two")
        assert await blobs.get("run/a.ckpt") == b"two"

    async def test_missing_blob(self, blobs: BlobStore) -> None:
        with pytest.raises(BlobNotFound, match=r"no blob run/missing\.ckpt"):
            await blobs.get("run/missing.ckpt")

    async def test_list_is_sorted_and_filtered_by_prefix(self, blobs: BlobStore) -> None:
        for name in ["run1/b", "run1/a", "run10/a", "other/deep/x", "top"]:
            await blobs.put(name, name.encode())
        assert await blobs.list("run1/") == [BlobInfo("run1/a", 6), BlobInfo("run1/b", 6)]
        assert [info.name for info in await blobs.list("run1")] == ["run1/a", "run1/b", "run10/a"]
        assert [info.name for info in await blobs.list()] == [
            "other/deep/x",
            "run1/a",
            "run1/b",
            "run10/a",
            "top",
        ]
        assert await blobs.list("nothing/") == []

    async def test_delete_is_idempotent(self, blobs: BlobStore) -> None:
        await blobs.put("run/a", b"x")
        await blobs.delete("run/a")
        await blobs.delete("run/a")
        assert await blobs.list("run/") == []
        with pytest.raises(BlobNotFound):
            await blobs.get("run/a")

    @pytest.mark.parametrize("name", ["", "../escape", "/absolute", "run/.hidden", "a//b", "a/b/", "sp ace"])
    async def test_invalid_names_are_refused(self, blobs: BlobStore, name: str) -> None:
        with pytest.raises(BlobError, match="invalid blob name"):
            await blobs.put(name, b"x")

    async def test_large_blob(self, blobs: BlobStore) -> None:
        data = os.urandom(6 * 1024 * 1024)
        await blobs.put("big/blob", data)
        assert await blobs.get("big/blob") == data
        assert (await blobs.list("big/"))[0].size == len(data)
