"""``LocalBlobStore`` (the contract plus atomicity) and ``open_blob_store``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from maos.blobs import LocalBlobStore, S3BlobStore, open_blob_store
from maos.errors import BlobError

from .blob_contract import BlobStoreContract


class TestLocalBlobStore(BlobStoreContract):
    @pytest.fixture
    def blobs(self, tmp_path: Path) -> LocalBlobStore:
        return LocalBlobStore(tmp_path / "blobs")


async def test_write_leaves_no_temporary_file_and_temporary_files_are_not_listed(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.put("run/a.ckpt", b"data")
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["a.ckpt"]
    (tmp_path / "run" / ".a.ckpt.tmp-123").write_bytes(b"torn")  # what a crash mid-write leaves
    assert [info.name for info in await store.list()] == ["run/a.ckpt"]


async def test_write_error_names_the_location(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    store = LocalBlobStore(tmp_path / "file")
    with pytest.raises(BlobError, match=f"cannot write blob run/a in {tmp_path / 'file'}"):
        await store.put("run/a", b"x")
    assert await LocalBlobStore(tmp_path / "absent").list() == []


def test_open_blob_store_picks_by_url(tmp_path: Path) -> None:
    default = open_blob_store(None, workdir=tmp_path)
    assert isinstance(default, LocalBlobStore)
    assert default.root == tmp_path / ".maos" / "checkpoints"
    relative = open_blob_store("ckpts", workdir=tmp_path)
    assert isinstance(relative, LocalBlobStore)
    assert relative.root == tmp_path / "ckpts"
    absolute = open_blob_store(f"file://{tmp_path}/x", workdir=Path("/elsewhere"))
    assert isinstance(absolute, LocalBlobStore)
    assert absolute.root == tmp_path / "x"
    s3 = open_blob_store("s3://bucket/some/prefix", workdir=tmp_path, endpoint_url="http://127.0.0.1:9")
    assert isinstance(s3, S3BlobStore)
    assert (s3.bucket, s3.prefix, s3.endpoint_url) == ("bucket", "some/prefix", "http://127.0.0.1:9")
    with pytest.raises(BlobError, match="not supported"):
        open_blob_store("ftp://host/x", workdir=tmp_path)
    with pytest.raises(BlobError, match="invalid S3 location"):
        open_blob_store("s3:///no-bucket", workdir=tmp_path)


def test_opening_an_s3_store_does_not_import_boto3() -> None:
    code = (
        "import sys; from pathlib import Path; from maos.blobs import open_blob_store; "
        "open_blob_store('s3://b/p', workdir=Path('.')); print('boto3' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


async def test_s3_without_boto3_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 -> ImportError
    store = S3BlobStore("s3://bucket/prefix")
    with pytest.raises(BlobError, match=r"S3 storage needs boto3.*pip install boto3"):
        await store.list()


async def test_a_blob_is_read_only_from_a_regular_file(tmp_path: Path) -> None:
    """An agent works in the folder that holds the checkpoints: a link to /dev/zero there
    took 2.7 GB in 4 s, a FIFO hung every reader. Each is a ``BlobError`` at once."""
    import os

    store = LocalBlobStore(tmp_path)
    await store.put("run/a.ckpt", b"real")
    os.symlink("/dev/zero", tmp_path / "run" / "zero.ckpt")
    os.symlink(tmp_path / "run" / "a.ckpt", tmp_path / "run" / "link.ckpt")
    os.mkfifo(tmp_path / "run" / "fifo.ckpt")
    assert await store.get("run/a.ckpt") == b"real"
    for name, reason in (("zero", "link"), ("link", "link"), ("fifo", "not a regular file")):
        with pytest.raises(BlobError, match=reason):
            await store.get(f"run/{name}.ckpt")


def test_checkpoint_commands_survive_planted_files(tmp_path: Path) -> None:
    """The same through `maos checkpoint list` and `maos resume` of a real run."""
    import os

    (tmp_path / "plan.yaml").write_text("name: x\ntasks:\n  - id: a\n    command: 'true'\n")

    def maos(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "maos", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert maos("run", "plan.yaml").returncode == 0
    (folder,) = (tmp_path / ".maos" / "checkpoints").iterdir()
    day = sorted(folder.iterdir())[-1].name[:8]  # planted as the newest full snapshots
    os.symlink("/dev/zero", folder / f"{day}-235959-998-full.ckpt")
    os.mkfifo(folder / f"{day}-235959-999-full.ckpt")
    listed = maos("checkpoint", "list", folder.name)
    assert "Traceback" not in listed.stderr
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("cannot be read") == 2
    resumed = maos("resume", folder.name)
    assert resumed.returncode == 0, resumed.stderr
    assert "nothing to resume" in resumed.stdout + resumed.stderr
