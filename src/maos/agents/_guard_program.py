"""The agent guard's program (``maos.agents.guard``, ADR 0010): run as
``python -I -S _guard_program.py TOKEN`` with the read end of its host's pipe as stdin.

It waits for EOF (its host ended, however), then kills every process whose environment
carries ``MAOS_GUARD=TOKEN``, with its process group, until three sweeps in a row find
nothing. Standard library only, and nothing heavy: it lives as long as its host.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

GUARD_ENV = "MAOS_GUARD"
"""Environment variable that marks an agent (and all it starts) as its host's."""
SWEEP_PAUSE_S = 0.05
QUIET_SWEEPS = 3
"""Sweeps in a row that must find nothing before the guard exits."""
MAX_SWEEP_S = 10.0


def _marked(token: str) -> list[int]:
    """Pids of the processes whose environment carries ``MAOS_GUARD=token``."""
    needle = f"{GUARD_ENV}={token}".encode()
    me = os.getpid()
    found: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue  # gone, or not ours to read
        if needle in environ.split(b"\0"):
            found.append(int(name))
    return found


def sweep(token: str) -> int:
    """Kill every marked process and its process group; return how many were found."""
    found = _marked(token)
    for pid in found:
        with contextlib.suppress(OSError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return len(found)


def watch(token: str) -> None:
    """The guard: wait for the host to end (EOF on stdin), then sweep until clean."""
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    deadline = time.monotonic() + MAX_SWEEP_S
    quiet = 0
    while quiet < QUIET_SWEEPS and time.monotonic() < deadline:
        quiet = 0 if sweep(token) else quiet + 1
        time.sleep(SWEEP_PAUSE_S)


if __name__ == "__main__":
    watch(sys.argv[1])
