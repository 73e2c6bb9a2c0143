"""`maos doctor` reports what it actually finds."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_doctor_names_the_cli_and_an_unreachable_redis(tmp_path: Path) -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "maos", "doctor", "--json", "--redis-url", f"redis://127.0.0.1:{port}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    checks = {item["check"]: item for item in json.loads(done.stdout)}
    assert done.returncode == (0 if checks["model"]["ok"] else 1)  # Redis is not required
    assert checks["claude cli"]["ok"]
    assert "claude" in checks["claude cli"]["detail"]
    assert checks["store"]["ok"]
    assert not checks["redis"]["ok"]
    assert f"cannot reach Redis at 127.0.0.1:{port}" in checks["redis"]["detail"]
