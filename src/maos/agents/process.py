"""Agent processes: start, stream output, and the teardown contract.

Teardown contract (also on cancellation): SIGTERM to the agent's whole process group → grace
period → SIGKILL to the group → wait. Every agent runs in its own session
(``start_new_session=True``) so that whatever it spawned (``sh -c "sleep 5"`` forks) dies with
it: no orphan processes.

Output is read in chunks, never with ``readline()`` (which raises on a line longer than the
stream's limit): every byte goes to the attempt's files on disk up to ``MAX_OUTPUT_BYTES`` per
stream, and each line, cut at ``LINE_LIMIT_BYTES``, goes to the line callback decoded with
``errors="replace"``. Past the cap the pipe is still drained (an agent never blocks on a full
pipe) but the bytes are dropped, counted, and noted once at the end of the stderr file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from maos.agents.guard import guarded
from maos.agents.programs import find
from maos.errors import AgentError
from maos.filemodes import open_private

log = logging.getLogger("maos.agents.process")

StreamName = Literal["stdout", "stderr"]
LineCallback = Callable[[StreamName, str], Awaitable[None]]

TAIL_BYTES = 4000
MAX_OUTPUT_BYTES = 64 << 20
"""Bytes of each output stream (stdout, stderr) kept on disk per attempt; the rest is dropped."""
LINE_LIMIT_BYTES = 64 << 10
"""Longest line handed to the line callback; a longer one is cut and marked (it is whole on disk)."""
_CHUNK_BYTES = 64 << 10
PIPE_DRAIN_S = 1.0
"""How long an agent's output is still read once its process group is gone: a process it
started in a session of its own (a daemon, a test server) may hold the pipes for ever, and
what it writes later is not the attempt's."""
_NOFILE_WITHOUT_HARD_LIMIT = 65536  # the soft limit asked for where the hard one is "unlimited"


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    exit_code: int | None  # None when the process was killed by us
    timed_out: bool
    duration_s: float
    stderr_tail: str
    stdout_path: Path | None  # None: the agent printed nothing, and no file was made
    stderr_path: Path
    max_output_bytes: int = MAX_OUTPUT_BYTES  # the cap each stream had on disk
    stdout_dropped_bytes: int = 0  # output past the cap, read and thrown away
    stderr_dropped_bytes: int = 0

    def truncation_notes(self) -> list[str]:
        """One sentence per stream that lost bytes to the cap (empty if none did)."""
        return [
            truncation_note(name, self.max_output_bytes, dropped)
            for name, dropped in (
                ("stdout", self.stdout_dropped_bytes),
                ("stderr", self.stderr_dropped_bytes),
            )
            if dropped
        ]


def truncation_note(stream: str, cap_bytes: int, dropped_bytes: int) -> str:
    """What a stream that went past its cap lost, in one sentence (for warnings and stderr)."""
    return f"{stream} truncated at {_size(cap_bytes)} on disk; {dropped_bytes} more bytes were dropped"


def _size(count: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift and count % (1 << shift) == 0:
            return f"{count >> shift} {unit}"
    return f"{count} bytes"


class CappedSink:
    """A file that keeps the first ``cap_bytes`` written to it and counts the rest.

    Given a path instead of an open file, the sink creates that file (0600) at its first byte
    and never when nothing comes: an agent's stderr is mostly empty, and on a slow file system
    a create is a visible part of each hand-off. ``close`` closes a file the sink opened."""

    def __init__(self, target: BinaryIO | Path, cap_bytes: int) -> None:
        self._handle: BinaryIO | None = None if isinstance(target, Path) else target
        self._path = target if isinstance(target, Path) else None
        self.cap_bytes = cap_bytes
        self.written_bytes = 0
        self.dropped_bytes = 0

    def write(self, data: bytes) -> None:
        room = self.cap_bytes - self.written_bytes
        if len(data) > room:
            self.dropped_bytes += len(data) - max(room, 0)
            data = data[: max(room, 0)]
        if data:
            self._file().write(data)
            self.written_bytes += len(data)

    def note(self, text: str) -> None:
        """``text`` at the end of the file, past the cap (MAOS's own notes)."""
        self._file().write(f"\n[maos: {text}]\n".encode())

    @property
    def exists(self) -> bool:
        """Whether the sink has a file (one given, or one it created)."""
        return self._handle is not None

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def close(self) -> None:
        if self._path is not None and self._handle is not None:
            self._handle.close()

    def _file(self) -> BinaryIO:
        if self._handle is None:
            assert self._path is not None
            self._handle = open_private(self._path, "wb")
        return self._handle


class LineSplitter:
    """Bytes in, text lines out; a line longer than ``limit_bytes`` is cut there and marked.

    Memory stays bounded by ``limit_bytes`` whatever the agent prints. Lines are decoded with
    ``errors="replace"`` (never a lone surrogate) and lose their line ending.
    """

    def __init__(self, limit_bytes: int = LINE_LIMIT_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self._pending = bytearray()
        self._skipping = False  # inside a line already cut: drop until its end

    def feed(self, data: bytes) -> list[str]:
        lines: list[str] = []
        start = 0
        while start <= len(data):
            end = data.find(b"\n", start)
            stop = len(data) if end == -1 else end
            if not self._skipping:
                room = self.limit_bytes - len(self._pending)
                if stop - start > room:
                    self._pending += data[start : start + room]
                    lines.append(self._take(cut=True))
                    self._skipping = True
                else:
                    self._pending += data[start:stop]
            if end == -1:
                break
            if self._skipping:
                self._skipping = False
            else:
                lines.append(self._take(cut=False))
            start = end + 1
        return lines

    def close(self) -> list[str]:
        """The last line, if the output did not end with a newline."""
        if self._skipping or not self._pending:
            self._pending.clear()
            return []
        return [self._take(cut=False)]

    def _take(self, *, cut: bool) -> str:
        text = self._pending.decode(errors="replace")
        self._pending.clear()
        if cut:
            return f"{text} [maos: line truncated at {self.limit_bytes} bytes]"
        return text.removesuffix("\r")


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


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; return the soft limit.

    A host holds five descriptors per running agent (its stdout and stderr pipes, its pidfd,
    its two output files): under the usual soft limit of 1024, the agent after the ~200th
    fails to start with "Too many open files". The hard limit is what the system allows
    this process; the soft one is only a default. Never lowers it; a refusal is logged."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, _NOFILE_WITHOUT_HARD_LIMIT)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.info("open files limit left at %d (hard limit %s): %s", soft, hard, exc)
            return soft
        return target
    return soft


def stop_orphans(run_id: str, attempts: Mapping[str, int]) -> int:
    """Kill what a dead orchestrator of this host left of the attempts ``attempts`` (task id
    -> attempt) of run ``run_id``: every process whose environment names the run, the task
    and that attempt, with its process group. One pass over ``/proc``. The agent itself may be
    gone (its parent-death signal) while what it started lives on in its group, or in a
    session of its own (a daemon): the environment, which every process it started inherits,
    finds them all; a reused PID cannot match. Returns how many processes were found."""
    if not attempts:
        return 0
    run = f"MAOS_RUN_ID={run_id}".encode()
    found = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        if run not in environ:
            continue
        values = dict(item.split(b"=", 1) for item in environ if b"=" in item)
        task = values.get(b"MAOS_TASK_ID", b"").decode(errors="replace")
        if task not in attempts or values.get(b"MAOS_ATTEMPT") != str(attempts[task]).encode():
            continue
        pid = int(entry.name)
        found += 1
        with contextlib.suppress(OSError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if found:
        log.info("stopped %d process(es) orphaned by a dead orchestrator of run %s", found, run_id)
    return found


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def stop_process(
    proc: asyncio.subprocess.Process, grace_s: float, *, exited: asyncio.Future[None] | None = None
) -> None:
    """Terminate → grace → kill → wait. Safe to call on a process that already exited
    (its group may still hold children, which are signalled too). ``exited`` (from ``spawn``):
    wait for the process itself, not for its pipes, which ``proc.wait()`` also waits for and
    which a process it started in another session may hold for ever."""
    _signal_group(proc, signal.SIGTERM)
    _signal_group(proc, signal.SIGCONT)  # a stopped (SIGSTOP) group acts on SIGTERM only once continued

    async def gone() -> None:
        await (asyncio.shield(exited) if exited is not None else proc.wait())

    try:
        try:
            async with asyncio.timeout(grace_s):
                await gone()
        except TimeoutError:
            log.info("agent process %d ignored SIGTERM for %.1fs; killing", proc.pid, grace_s)
        _signal_group(proc, signal.SIGKILL)
        await gone()
    except asyncio.CancelledError:
        # Cancelled while waiting: never leave the group running.
        _signal_group(proc, signal.SIGKILL)
        close_transport(proc)
        raise


def close_transport(proc: asyncio.subprocess.Process) -> None:
    """Close a process's transport now, while the loop runs. A transport left to the garbage
    collector after ``asyncio.run`` closed the loop prints "Exception ignored … Event loop is
    closed" with a traceback on the user's terminal (a run stopped by a store failure)."""
    transport = getattr(proc, "_transport", None)  # asyncio keeps no public handle on it
    if transport is not None:
        transport.close()


@contextlib.contextmanager
def _closing(proc: asyncio.subprocess.Process) -> Iterator[None]:
    try:
        yield
    finally:
        close_transport(proc)


def file_tail(path: Path) -> str:
    """The last ``TAIL_BYTES`` of a file, decoded and stripped; empty if it cannot be read."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - TAIL_BYTES))
            return handle.read().decode(errors="replace").strip()
    except OSError:
        return ""


async def _pump(
    reader: asyncio.StreamReader, sink: CappedSink, name: StreamName, on_line: LineCallback | None
) -> None:
    """Drain one pipe to its end: bytes to ``sink`` (up to its cap), lines to ``on_line``."""
    splitter = LineSplitter()
    while chunk := await reader.read(_CHUNK_BYTES):
        sink.write(chunk)
        if on_line is not None:
            for line in splitter.feed(chunk):
                await on_line(name, line)
    if on_line is not None:
        for line in splitter.close():
            await on_line(name, line)


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


_DEVNULL: list[tuple[int, int]] = []  # the descriptor _devnull keeps, and /dev/null's device


def _devnull() -> int:
    """``/dev/null`` opened once for reading, close-on-exec: the stdin of agents that get no
    input (``DEVNULL`` would open and close it again at every start). Checked at each use (one
    ``fstat``), so that a descriptor closed by mistake and reused for another file never
    becomes an agent's stdin."""
    if _DEVNULL:
        fd, device = _DEVNULL[0]
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_rdev == device:
                return fd
        _DEVNULL.clear()
    fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    _DEVNULL.append((fd, os.fstat(fd).st_rdev))
    return fd


async def spawn(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    limit_bytes: int = 2**16,
    stdin: bool = True,
    parent_death_signal: bool = True,
) -> tuple[asyncio.subprocess.Process, asyncio.Future[None]]:
    """Start an agent process in its own session with piped stdio (``stdin=False``: its stdin
    is ``/dev/null``); the future resolves when the process exits (whatever its children do
    with the pipes). The agent and all it starts die with this process
    (``maos.agents.guard``; ``parent_death_signal``: also through the kernel's, at the price
    of an exec). ``limit_bytes``: the longest line its stdout and stderr readers'
    ``readline``/``readuntil`` return."""
    loop = asyncio.get_running_loop()
    argv, guarded_env = guarded(argv, cwd=cwd, env=env, parent_death_signal=parent_death_signal)
    # The program found once, not by an execve per PATH entry at every start (argv[0] stays as
    # given). If that file cannot be run (say, not a program: exec would go on down PATH),
    # exec searches as usual.
    found = find(argv[0], guarded_env.get("PATH", os.defpath)) if argv else None
    for executable in (found, None) if found is not None else (None,):
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _ExitAwareProtocol(limit_bytes, loop),
                *argv,
                executable=executable,
                cwd=cwd,
                env=guarded_env,
                stdin=asyncio.subprocess.PIPE if stdin else _devnull(),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            break
        except OSError:
            if executable is None:
                raise
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
    max_output_bytes: int = MAX_OUTPUT_BYTES,
    parent_death_signal: bool = True,
) -> ProcessOutcome:
    """Run one agent process to completion (or timeout), teeing its output to files (at most
    ``max_output_bytes`` per stream; see ``ProcessOutcome.truncation_notes``);
    ``parent_death_signal`` as for ``spawn``."""
    started = time.monotonic()
    try:
        # Nothing to say on stdin: /dev/null, which reads as the same empty input as a pipe
        # closed at once, without the pipe, its transport and the task that would close it.
        proc, exited = await spawn(
            argv, cwd=cwd, env=env, stdin=bool(stdin_data), parent_death_signal=parent_death_signal
        )
    except OSError as exc:
        raise AgentError(f"cannot start {argv[0]!r} in {cwd}: {exc.strerror or exc}") from exc
    assert proc.stdout is not None
    assert proc.stderr is not None
    timed_out = False
    # Each file is created at its first byte: many agents print nothing on one stream or
    # both, and a create is the costliest file operation of a short agent's start.
    out = CappedSink(stdout_path, max_output_bytes)
    err = CappedSink(stderr_path, max_output_bytes)
    # closing(proc): our ends of its pipes, also when the attempt is cancelled before it read
    # them to the end (else the garbage collector finds the transport open)
    with contextlib.closing(out), contextlib.closing(err), _closing(proc):

        async def feed(stdin: asyncio.StreamWriter) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                stdin.write(stdin_data)
                await stdin.drain()
                stdin.close()

        async with asyncio.TaskGroup() as group:
            streams = [
                group.create_task(_pump(proc.stdout, out, "stdout", on_line)),
                group.create_task(_pump(proc.stderr, err, "stderr", on_line)),
            ]
            if proc.stdin is not None:
                streams.append(group.create_task(feed(proc.stdin)))
            try:
                if on_start is not None:
                    await on_start(proc.pid)
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(exited)
            except TimeoutError:
                timed_out = True
            finally:
                if proc.returncode is None:
                    await stop_process(proc, grace_s, exited=exited)
                else:
                    # Exited by itself: whatever it left in its process group must not outlive
                    # it (and must not hold our pipes open).
                    _signal_group(proc, signal.SIGKILL)
            # The agent is gone and its group killed. A process it started in a session of its
            # own (a daemon, a test server) may still hold its stdout or stderr: the attempt
            # must not wait for that process to end, which may be never.
            _, held = await asyncio.wait(streams, timeout=PIPE_DRAIN_S)
            if held:
                err.note(
                    f"the agent exited, but a process it started in another session still held its "
                    f"output {PIPE_DRAIN_S:g} s later; MAOS stopped reading it there"
                )
                log.info("agent process %d: a process it left holds its output; not read further", proc.pid)
                close_transport(proc)  # our ends of its pipes: the streams end
        for stream, sink in (("stdout", out), ("stderr", err)):
            if sink.dropped_bytes:  # in the stderr tail, whichever stream it was
                note = truncation_note(stream, max_output_bytes, sink.dropped_bytes)
                err.note(note)
                log.info("agent process %d: %s", proc.pid, note)
    return ProcessOutcome(
        exit_code=None if timed_out else proc.returncode,
        timed_out=timed_out,
        duration_s=time.monotonic() - started,
        stderr_tail=file_tail(stderr_path) if err.exists else "",
        stdout_path=stdout_path if out.exists else None,
        stderr_path=stderr_path,
        max_output_bytes=max_output_bytes,
        stdout_dropped_bytes=out.dropped_bytes,
        stderr_dropped_bytes=err.dropped_bytes,
    )
