"""Agents die with the process that started them (ADR 0010, ADR 0022).

An agent runs in its own session (``maos.agents.process``), so nothing of the terminal or of
its host's process group reaches it: a host (``maos run``, ``maos worker``) killed with
SIGKILL would leave its agents running, and spending, with parent 1. So:

- **A guard per host process**: ``python -I -S guard.py TOKEN``, started once (with the
  host's first agent), in its own session and detached (``setsid --fork``: nobody's child),
  with the read end of a pipe whose write end only the host holds. Every agent's environment
  carries ``MAOS_GUARD=TOKEN``, and so does everything the agent starts. However the host
  ends, the kernel closes its end of the pipe; the guard reads EOF and sweeps ``/proc``: each
  process whose environment carries the token is killed with its whole process group
  (SIGKILL), sweep after sweep until three in a row find nothing; then it exits. A host that
  ended normally has already reaped its agents, so the sweep finds nothing.
- **A guard that dies is started again at once**, with the same token: a thread of the host
  waits on the pipe, which polls ``POLLERR`` the moment its reader is gone (and every agent
  start checks it too). Only a host killed within those milliseconds leaves its agents to
  ``maos resume`` or a supervisor, which stop every process of the run's unfinished attempts.
- **Parent-death signal, where it is free.** ``guarded(..., parent_death_signal=True)``
  starts the agent through ``setpriv --pdeathsig KILL`` (util-linux), which sets
  ``PR_SET_PDEATHSIG`` and execs the agent: the kernel kills that one process the moment its
  host dies, guard or no guard. The exec costs ~1.4 ms per start: nothing beside a Claude
  Code agent's second of start-up, more than a command agent's whole start, so only Claude
  Code agents (and the planner) get it (ADR 0022).

The guard also pauses the agents with their host: while the host is stopped (SIGSTOP,
Ctrl-Z) it stops them, and continues them with it. A stopped host renews no lease, so once
the lease runs out its tasks are run again elsewhere; its agents must not go on working.

Linux only (``/proc``, ``PR_SET_PDEATHSIG``): elsewhere ``guarded`` changes nothing.

The guard's program is ``_guard_program.py``: standard library only, run as a script, so it
imports nothing of MAOS and holds ~9 MB.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from maos.agents import _guard_program
from maos.agents._guard_program import GUARD_ENV
from maos.agents.environment import agent_environment
from maos.agents.programs import find

log = logging.getLogger("maos.agents.guard")

__all__ = ["GUARD_ENV", "ensure_guard", "guarded"]


@dataclass(frozen=True, slots=True)
class _Guard:
    host_pid: int
    token: str
    pipe: int  # the write end; closed by the kernel when the host dies
    child: int | None  # the guard's pid when it is our child (no ``setsid`` to detach it)


RESTART_PAUSE_S = 0.1
RESTART_PAUSE_MAX_S = 30.0
"""A guard that dies is started again after ``RESTART_PAUSE_S``, doubling while each lives
less than ``RESTART_PAUSE_MAX_S``."""


class _Current:
    guard: _Guard | None = None  # this process's; a forked child starts its own
    lock = threading.Lock()  # one start at a time: an agent's spawn, or the watcher
    watcher: int | None = None  # the pid whose watcher thread runs (a fork has none)


def _alive(guard: _Guard) -> bool:
    """Whether the guard still reads its pipe (a pipe with no reader polls POLLERR)."""
    poller = select.poll()
    poller.register(guard.pipe, select.POLLOUT)
    return not any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def ensure_guard() -> str | None:
    """Start this process's guard if it is not running; return the token agents carry
    (None where agents cannot be guarded)."""
    with _Current.lock:
        current = _Current.guard
        if current is not None and current.host_pid == os.getpid():
            if _alive(current):
                return current.token
            log.warning("the agent guard ended; starting another")
            os.close(current.pipe)
            if current.child is not None:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(current.child, os.WNOHANG)
            token = current.token  # running agents carry this one
        elif sys.platform == "linux" and sys.executable:
            token = secrets.token_hex(8)
        else:
            return None
        _Current.guard = _start(token)
        if _Current.guard is None:
            return None
        if _Current.watcher != os.getpid():
            _Current.watcher = os.getpid()
            threading.Thread(target=_watch, name="maos agent guard watcher", daemon=True).start()
        return token


def _watch() -> None:
    """Start the guard again the moment it ends, not at the next agent's start: a host
    killed meanwhile would leave its running agents unguarded. Waits in ``poll`` on (a copy
    of) the pipe's write end, which reports ``POLLERR`` once the guard, its only reader, is
    gone. A guard that cannot live (its program gone, no process left to fork) is tried
    again after a pause that doubles up to ``RESTART_PAUSE_MAX_S``, not in a tight loop."""
    pause_s = RESTART_PAUSE_S
    while True:
        with _Current.lock:
            current = _Current.guard
            if current is None or current.host_pid != os.getpid():
                _Current.watcher = None  # the next ensure_guard starts another
                return
            watched = os.dup(current.pipe)  # ours: never closed under us, never reused
        started = time.monotonic()
        try:
            poller = select.poll()
            poller.register(watched, 0)  # POLLERR and POLLHUP are reported anyway
            with contextlib.suppress(InterruptedError):
                poller.poll()
        finally:
            os.close(watched)
        if time.monotonic() - started < RESTART_PAUSE_MAX_S:
            time.sleep(pause_s)  # it died young: do not spin
            pause_s = min(pause_s * 2, RESTART_PAUSE_MAX_S)
        else:
            pause_s = RESTART_PAUSE_S
        try:
            ensure_guard()  # starts another unless an agent's start already did
        except Exception:  # never let the watcher die with its pid still recorded
            log.exception("the agent guard could not be started again")
            with _Current.lock:
                _Current.watcher = None
            return


def _after_fork_in_child() -> None:
    _Current.lock = threading.Lock()  # a fork may have copied it held by the watcher


os.register_at_fork(after_in_child=_after_fork_in_child)


def _start(token: str) -> _Guard | None:
    argv = [sys.executable, "-I", "-S", _guard_program.__file__, token, str(os.getpid())]
    detach = shutil.which("setsid")
    if detach is not None:
        # util-linux ``setsid --fork`` forks the guard and exits at once: the guard is then
        # nobody's child (no zombie of ours, not among our children), like a daemon.
        argv = [detach, "--fork", *argv]
    read_end, write_end = os.pipe()  # both close-on-exec; the guard gets the read end as stdin
    env = agent_environment({})  # it needs none of our secrets (and no MAOS_GUARD)
    env.pop(GUARD_ENV, None)
    try:
        pid = os.posix_spawn(
            argv[0],
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, read_end, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            ],
            setsid=True,  # no signal for the host's terminal or process group reaches it
        )
        if detach is not None:
            os.waitpid(pid, 0)  # returns within a millisecond or two
    except OSError as exc:
        os.close(write_end)
        log.warning("cannot start the agent guard: %s; agents may outlive this process", exc)
        return None
    finally:
        os.close(read_end)
    log.debug("agent guard started (token %s)", token)
    return _Guard(os.getpid(), token, write_end, None if detach is not None else pid)


@functools.cache
def _setpriv() -> str | None:
    """``setpriv`` if it is installed and knows ``--pdeathsig`` (util-linux >= 2.33)."""
    if sys.platform != "linux":
        return None
    found = shutil.which("setpriv")
    if found is None:
        return None
    try:
        probe = subprocess.run(
            [found, "--pdeathsig", "KILL", "--", "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found if probe.returncode == 0 else None


def guarded(
    argv: Sequence[str],
    *,
    cwd: os.PathLike[str] | str,
    env: Mapping[str, str],
    parent_death_signal: bool = True,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment to start an agent with so that it dies with this process.

    The environment gains ``MAOS_GUARD`` (the guard's token). With ``parent_death_signal``
    the argv is also prefixed with ``setpriv --pdeathsig KILL --``, but only when the
    program resolves to an executable the way ``exec`` will find it; otherwise it is left
    alone, so that a missing program still fails with its own ``OSError`` at spawn time
    rather than as an exit code of ``setpriv``.
    """
    marked = dict(env)
    token = ensure_guard()
    if token is not None:
        marked[GUARD_ENV] = token
    setpriv = _setpriv() if parent_death_signal else None
    if setpriv is None or not argv:
        return list(argv), marked
    program = argv[0]
    path = marked.get("PATH", os.defpath)
    if os.sep in program:
        found = shutil.which(os.path.join(cwd, program), path=path) is not None
    else:
        found = find(program, path) is not None or shutil.which(program, path=path) is not None
    if not found:
        return list(argv), marked
    return [setpriv, "--pdeathsig", "KILL", "--", *argv], marked
