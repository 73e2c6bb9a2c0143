"""Resume from checkpoints: a corrupt newest checkpoint is skipped (and said so); a wrong key
is a clear error that deletes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MAOS = [sys.executable, "-m", "maos"]


def start_and_kill(tmp_path: Path) -> str:
    tasks = "".join(
        f"  - id: t{n}\n    command: 'sleep 0.4'\n" + (f"    depends_on: [t{n - 1}]\n" if n else "")
        for n in range(12)
    )
    (tmp_path / "plan.yaml").write_text(f"name: ckpt\ntasks:\n{tasks}")
    proc = subprocess.Popen(
        [*MAOS, "run", "plan.yaml", "--checkpoint-every-s", "1", "--lease-s", "2", "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(list((tmp_path / ".maos" / "checkpoints").rglob("*-full.ckpt"))) < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoints were written"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    runs = subprocess.run([*MAOS, "runs", "--json"], cwd=tmp_path, capture_output=True, text=True, check=True)
    return str(json.loads(runs.stdout)[0]["run_id"])


def resume(
    tmp_path: Path, run_id: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAOS, "resume", run_id, "--lease-s", "2", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def snapshot_files(tmp_path: Path) -> dict[str, bytes]:
    root = tmp_path / ".maos" / "checkpoints"
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*.ckpt"))}


def test_a_corrupt_newest_checkpoint_is_skipped_and_said_so(tmp_path: Path) -> None:
    run_id = start_and_kill(tmp_path)
    newest = sorted((tmp_path / ".maos" / "checkpoints" / run_id).glob("*.ckpt"))[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    done = resume(tmp_path, run_id)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {"succeeded": 12}
    assert newest.stem in done.stderr
    assert "corrupt" in done.stderr
    logs = subprocess.run([*MAOS, "logs", run_id], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "checkpoint_taken checkpoint_id=" in logs.stdout  # announced in the log (dashboard, metrics)


def test_a_wrong_key_is_a_clear_error_and_deletes_nothing(tmp_path: Path) -> None:
    run_id = start_and_kill(tmp_path)
    before = snapshot_files(tmp_path)
    env = {**os.environ, "MAOS_KEY": "11" * 32}
    done = resume(tmp_path, run_id, env)
    assert done.returncode == 1
    assert "key" in done.stderr
    assert "Nothing was deleted" in done.stderr
    assert snapshot_files(tmp_path) == before
