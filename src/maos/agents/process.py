"""Agent processes: start, stream output, and the teardown contract.

Teardown contract (also on cancellation): SIGTERM to the agent's whole process group → grace
period → SIGKILL to the group → wait. Every agent runs in its own session
(``start_new_session=True``) so that whatever it spawned (``sh -c "sleep 5"`` forks) dies with
it: no orphan processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from maos.errors import AgentError

log = logging.getLogger("maos.agents.process")

StreamName = Literal["stdout", "stderr"]
LineCallback = Callable[[StreamName, str], Awaitable[None]]

TAIL_BYTES = 4000


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    exit_code: int | None  # None when the process was killed by us
    timed_out: bool
    duration_s: float
    stderr_tail: str
    stdout_path: Path
    stderr_path: Path


def use_pidfd_child_watcher() -> None:
    """On Python 3.11, reap children through pidfds instead of one thread per child.

    3.11's default ``ThreadedChildWatcher`` starts a thread for every process; with a
    thousand short agents that is measurable overhead. 3.12+ already uses pidfds by default
    (and deprecates child watchers), so there this does nothing. Call from a running loop.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    loop = asyncio.get_running_loop()
    policy = asyncio.get_event_loop_policy()
    current = getattr(policy, "_watcher", None)  # never create the default one just to look
    if isinstance(current, asyncio.PidfdChildWatcher) and getattr(current, "_loop", None) is loop:
        return  # already ours for this loop; replacing it would orphan its callbacks
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(loop)
    asyncio.set_child_watcher(watcher)


def stop_orphan(pid: int, run_id: str) -> bool:
    """Kill the process group of an agent left behind by a dead orchestrator.

    Only a process whose environment says it belongs to ``run_id`` is touched (a PID may have
    been reused). True if a group was signalled.
    """
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    if f"MAOS_RUN_ID={run_id}".encode() not in environ:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
        log.info("stopped orphaned agent process group %d of run %s", pid, run_id)
        return True
    return False


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def stop_process(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """Terminate → grace → kill → wait. Safe to call on a process that already exited
    (its group may still hold children, which are signalled too)."""
    _signal_group(proc, signal.SIGTERM)
    try:
        try:
            async with asyncio.timeout(grace_s):
                await proc.wait()
        except TimeoutError:
            log.info("agent process %d ignored SIGTERM for %.1fs; killing", proc.pid, grace_s)
        _signal_group(proc, signal.SIGKILL)
        await proc.wait()
    except asyncio.CancelledError:
        # Cancelled while waiting: never leave the group running.
        _signal_group(proc, signal.SIGKILL)
        raise


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - TAIL_BYTES))
            return handle.read().decode(errors="replace").strip()
    except OSError:
        return ""


async def _pump(
    reader: asyncio.StreamReader, sink: BinaryIO, name: StreamName, on_line: LineCallback | None
) -> None:
    while True:
        line = await reader.readline()
        if not line:
            return
        sink.write(line)
        if on_line is not None:
            await on_line(name, line.decode(errors="replace").rstrip("\n"))


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Tells when the process itself exits. ``Process.wait()`` also waits for every pipe to
    close, so a killed agent whose child still holds its stdout would look alive."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def spawn(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]
) -> tuple[asyncio.subprocess.Process, asyncio.Future[None]]:
    """Start an agent process in its own session with piped stdio; the future resolves when
    the process exits (whatever its children do with the pipes)."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _ExitAwareProtocol(2**16, loop),
        *argv,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    return asyncio.subprocess.Process(transport, protocol, loop), protocol.exited


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin_data: bytes,
    timeout_s: float,
    grace_s: float,
    stdout_path: Path,
    stderr_path: Path,
    on_start: Callable[[int], Awaitable[None]] | None = None,
    on_line: LineCallback | None = None,
) -> ProcessOutcome:
    """Run one agent process to completion (or timeout), teeing its output to files."""
    started = time.monotonic()
    try:
        proc, exited = await spawn(argv, cwd=cwd, env=env)
    except OSError as exc:
        raise AgentError(f"cannot start {argv[0]!r} in {cwd}: {exc.strerror or exc}") from exc
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    timed_out = False
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:

        async def feed() -> None:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if stdin_data:
                    proc.stdin.write(stdin_data)
                    await proc.stdin.drain()
                proc.stdin.close()

        async with asyncio.TaskGroup() as group:
            group.create_task(feed())
            group.create_task(_pump(proc.stdout, out, "stdout", on_line))
            group.create_task(_pump(proc.stderr, err, "stderr", on_line))
            try:
                if on_start is not None:
                    await on_start(proc.pid)
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(exited)
            except TimeoutError:
                timed_out = True
            finally:
                if proc.returncode is None:
                    await stop_process(proc, grace_s)
                else:
                    # Exited by itself: whatever it left in its process group must not outlive
                    # it (and must not hold our pipes open).
                    _signal_group(proc, signal.SIGKILL)
    return ProcessOutcome(
        exit_code=None if timed_out else proc.returncode,
        timed_out=timed_out,
        duration_s=time.monotonic() - started,
        stderr_tail=_tail(stderr_path),
        stdout_path=stdout_path,
        stderr_path=stderr_path,
    )
