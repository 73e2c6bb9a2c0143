"""The agent guard's program (``maos.agents.guard``, ADR 0010): run as
``python -I -S _guard_program.py TOKEN [HOST_PID]`` with the read end of its host's pipe as
stdin.

It waits for EOF (its host ended, however), then kills every process whose environment
carries ``MAOS_GUARD=TOKEN``, with its process group, until three sweeps in a row find
nothing. Standard library only, and nothing heavy: it lives as long as its host.

Meanwhile it looks at ``HOST_PID`` every ``PAUSE_POLL_S``: while the host is stopped
(SIGSTOP, Ctrl-Z) its agents are stopped too, and continued with it. A stopped host renews
no lease; once its lease runs out its tasks are run again elsewhere, and agents that went on
working meanwhile would do the same work twice. A host that is continued finds its lease
lost and stops them; one that kept its lease lets them go on where they were.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time

GUARD_ENV = "MAOS_GUARD"
"""Environment variable that marks an agent (and all it starts) as its host's."""
PAUSE_POLL_S = 0.2
"""How often the guard looks whether its host is stopped: well within the shortest lease."""
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


def sweep(token: str, sig: signal.Signals = signal.SIGKILL) -> int:
    """Send ``sig`` to every marked process and its process group; return how many were found."""
    found = _marked(token)
    for pid in found:
        with contextlib.suppress(OSError):
            os.killpg(os.getpgid(pid), sig)
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
    return len(found)


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped by a signal (state ``T`` in ``/proc/PID/stat``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rpartition(b")")[2].split()[:1] == [b"T"]
    except OSError:
        return False


def _wait_for_host(token: str, host_pid: int) -> None:
    """Until EOF on stdin: agents paused while the host is stopped, continued with it."""
    poller = select.poll()
    poller.register(0, select.POLLIN | select.POLLHUP | select.POLLERR)
    paused = False
    while True:
        if poller.poll(int(PAUSE_POLL_S * 1000)):
            try:
                if not os.read(0, 4096):
                    return
            except OSError:
                return
            continue
        if host_pid <= 0:
            continue
        stopped = _stopped(host_pid)
        if stopped != paused:
            sweep(token, signal.SIGSTOP if stopped else signal.SIGCONT)
            paused = stopped


def watch(token: str, host_pid: int = 0) -> None:
    """The guard: wait for the host to end (EOF on stdin), then sweep until clean."""
    _wait_for_host(token, host_pid)
    deadline = time.monotonic() + MAX_SWEEP_S
    quiet = 0
    while quiet < QUIET_SWEEPS and time.monotonic() < deadline:
        quiet = 0 if sweep(token) else quiet + 1
        time.sleep(SWEEP_PAUSE_S)


if __name__ == "__main__":
    watch(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
