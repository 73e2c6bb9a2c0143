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
    assert checks["settings"]["ok"]


def test_doctor_finds_the_settings_a_run_cannot_use(tmp_path: Path) -> None:
    """Each of these made `maos run` fail (some only inside every task's attempt) while
    `maos doctor` said all was well; MAOS_CLAUDE_CLI=/nonexistent made it print nothing."""
    import os

    cases = {
        "MAOS_ENCRYPT": ("maybe", "settings", "expected 1 or 0"),
        "MAOS_KEY": ("bad", "settings", "not a valid key"),
        "MAOS_AUDIT": ("/dev/zero", "settings", "not a regular file"),
        "MAOS_CHECKPOINTS": ("ftp://x", "settings", "is not supported"),
        "MAOS_DOOR_TRANSPORT": ("x", "settings", "expected http or stdio"),
        "MAOS_CLAUDE_CLI": ("/bin/sleep", "claude cli", "does not answer --version"),
    }
    for name, (value, check, said) in [
        *cases.items(),
        ("MAOS_CLAUDE_CLI", ("/nonexistent", "claude cli", "not an executable")),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "maos", "doctor", "--json"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, name: value},
        )
        checks = {item["check"]: item for item in json.loads(done.stdout)}
        assert done.returncode == 1, (name, done.stderr)
        assert not checks[check]["ok"], name
        assert said in checks[check]["detail"], (name, checks[check]["detail"])
        assert checks["store"]["ok"]  # the other checks still ran
