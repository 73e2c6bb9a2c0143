"""Chaos on the store's disk (issue 11): a disk that fills up and a database locked by another
process for longer than the busy timeout. Each ends with a clear error and no traceback; the
database is not corrupted; ``maos resume`` finishes the run once the fault is gone."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from maos.store.sqlite import BUSY_TIMEOUT_S

MAOS = [sys.executable, "-m", "maos"]


def _plan(tasks: int, *, filler_bytes: int = 0) -> str:
    lines = ["name: chaos", "tasks:", "  - id: first", "    command: 'echo first'"]
    if filler_bytes:
        lines += [
            "  - id: filler",
            f"    command: 'head -c {filler_bytes} /dev/zero > big.bin; echo filled'",
            "    depends_on: [first]",
        ]
    for n in range(tasks):
        lines += [
            f"  - id: t{n}",
            f"    command: 'for i in $(seq 200); do echo line $i of t{n} and some padding text; done'",
            f"    depends_on: [{'filler' if filler_bytes else 'first'}]",
        ]
    return "\n".join(lines) + "\n"


def _maos(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAOS, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def _only_run(cwd: Path) -> dict[str, object]:
    runs = json.loads(_maos(cwd, "runs", "--json").stdout)
    assert len(runs) == 1
    return runs[0]  # type: ignore[no-any-return]


def _intact(database: Path) -> None:
    with sqlite3.connect(database) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (needs root, as CI and `make test` run)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_stops_the_run_clearly_and_resume_finishes_it(small_disk: Path) -> None:
    (small_disk / "plan.yaml").write_text(_plan(20, filler_bytes=15_000_000))
    failed = _maos(small_disk, "run", "plan.yaml", "--agents", "4")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Traceback" not in failed.stderr
    assert "the disk is full" in failed.stderr
    assert "free some space" in failed.stderr
    run = _only_run(small_disk)
    assert run["status"] != "succeeded"
    _intact(small_disk / ".maos" / "maos.db")

    (small_disk / "big.bin").unlink()
    resumed = _maos(small_disk, "resume", str(run["run_id"]), "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert json.loads(resumed.stdout)["counts"] == {"succeeded": 22}
    assert _only_run(small_disk)["status"] == "succeeded"
    _intact(small_disk / ".maos" / "maos.db")


@pytest.mark.slow
def test_a_database_locked_past_the_busy_timeout_stops_the_run_clearly(tmp_path: Path) -> None:
    """A process stopped (Ctrl-Z, SIGSTOP) in the middle of a write holds the write lock for as
    long as it is stopped: readers go on at once, a writer gives up after the busy timeout and
    names the stopped process and what to do."""
    (tmp_path / "plan.yaml").write_text(_plan(6))
    started = _maos(tmp_path, "run", "plan.yaml", "--agents", "2")  # creates the store
    assert started.returncode == 0, started.stderr
    (tmp_path / "plan2.yaml").write_text(_plan(6).replace("name: chaos", "name: locked"))
    database = tmp_path / ".maos" / "maos.db"
    locker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            f"conn = sqlite3.connect({str(database)!r}, isolation_level=None)\n"
            "conn.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n"
            "conn.rollback()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None
        assert locker.stdin is not None
        assert locker.stdout.readline().strip() == "locked"
        locker.send_signal(signal.SIGSTOP)
        for reader in (("runs", "--json"), ("status", "--json")):
            began = time.monotonic()
            read = _maos(tmp_path, *reader, timeout=BUSY_TIMEOUT_S + 30)
            assert read.returncode == 0, read.stderr
            assert time.monotonic() - began < BUSY_TIMEOUT_S / 2, reader  # it did not wait for the lock
        assert json.loads(_maos(tmp_path, "status", "--json").stdout)["status"] == "succeeded"
        began = time.monotonic()
        failed = _maos(tmp_path, "run", "plan2.yaml", "--agents", "2", timeout=BUSY_TIMEOUT_S + 60)
        assert time.monotonic() - began >= BUSY_TIMEOUT_S - 1  # it waited the busy timeout out
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "Traceback" not in failed.stderr
        assert "is locked" in failed.stderr
        assert f"process {locker.pid} (" in failed.stderr
        assert f"is stopped: continue it (kill -CONT {locker.pid})" in failed.stderr
    finally:
        locker.send_signal(signal.SIGCONT)
        if locker.stdin is not None:
            locker.stdin.write("\n")
            locker.stdin.close()
        locker.wait(timeout=30)
        if locker.stdout is not None:
            locker.stdout.close()
    _intact(database)
    # Nothing of the refused run was half-written: the first run is intact and a new run works.
    runs = json.loads(_maos(tmp_path, "runs", "--json").stdout)
    assert [run["status"] for run in runs if run["name"] == "chaos"] == ["succeeded"]
    again = _maos(tmp_path, "run", "plan2.yaml", "--agents", "2", "--json")
    assert again.returncode == 0, again.stderr
