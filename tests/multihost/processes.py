"""Programs started on simulated hosts, and always reaped.

``Processes.start`` runs ``ip netns exec <host's namespace> <argv>``. ``ip netns exec`` execs
the program, so the ``Popen`` pid is the program's own pid and signals reach it directly.
Each process:

- gets exactly the environment it is given (nothing is inherited: ``base_env`` builds one);
- runs in its own session, hence its own process group (a signal to the test's terminal
  reaches none of them, and ``kill(..., group=True)`` reaches its children too);
- is started through ``setpriv --pdeathsig KILL`` when available, so a test process that is
  SIGKILLed leaves no orphan behind (``ip netns exec`` and ``setpriv`` both exec, keeping it);
- writes stdout and stderr to ``<log_dir>/<name>.out`` and ``.err``.

Teardown is a fixed contract (``stop``/``stop_all``): SIGTERM, a grace period, SIGKILL to the
process group, wait. Whatever escaped its group is killed when its namespace is removed
(``netns.remove_namespaces``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .netns import Host

SETPRIV = shutil.which("setpriv")
BASE_ENV_NAMES = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
LOG_TAIL_CHARS = 3000


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A small explicit environment: PATH, HOME and locale of this process, then ``extra``."""
    env = {name: os.environ[name] for name in BASE_ENV_NAMES if name in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.update(extra or {})
    return env


@dataclass(eq=False)
class HostProcess:
    """One program running (or that ran) on a host."""

    name: str
    host: Host
    argv: tuple[str, ...]
    popen: subprocess.Popen[bytes] = field(repr=False)
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout_s: float) -> int:
        """Its exit status; ``subprocess.TimeoutExpired`` if it runs on past ``timeout_s``."""
        return self.popen.wait(timeout_s)

    def stdout(self) -> str:
        return _read(self.stdout_path)

    def stderr(self) -> str:
        return _read(self.stderr_path)

    def describe(self) -> str:
        """Name, state and the tails of its output, for assertion messages."""
        code = self.popen.poll()
        state = "running" if code is None else f"exited {code}"
        return (
            f"{self.name} on {self.host.name} (pid {self.pid}, {state})\n"
            f"--- stdout tail:\n{self.stdout()[-LOG_TAIL_CHARS:]}\n"
            f"--- stderr tail:\n{self.stderr()[-LOG_TAIL_CHARS:]}"
        )


class Processes:
    """Starts programs on hosts and reaps them all at the end (``stop_all``)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[HostProcess] = []
        self._names: dict[str, int] = {}

    def start(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        name: str | None = None,
        replaces: HostProcess | None = None,
    ) -> HostProcess:
        """Start ``argv`` in ``host``'s namespace with exactly ``env``, in ``cwd``.

        ``name`` (default: the host's name and the program's) names the log files; a name
        used again gets a counter (``redis.1.out`` after a restart). ``replaces``: the
        process this one restarts, whose place it takes in the order of ``stop_all`` (a
        restarted server still outlives the clients started after it first).
        """
        if not argv:
            raise ValueError("empty argv")
        base = name or f"{host.name}-{Path(argv[0]).name}"
        seen = self._names.get(base, 0)
        self._names[base] = seen + 1
        label = base if seen == 0 else f"{base}.{seen}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stdout_path = self.log_dir / f"{label}.out"
        stderr_path = self.log_dir / f"{label}.err"
        command = [*argv]
        if SETPRIV is not None:
            command = [SETPRIV, "--pdeathsig", "KILL", *command]
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            popen = subprocess.Popen(
                host.exec_argv(command),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        proc = HostProcess(label, host, tuple(argv), popen, stdout_path, stderr_path)
        if replaces is not None and replaces in self._procs:
            self._procs.insert(self._procs.index(replaces) + 1, proc)
        else:
            self._procs.append(proc)
        return proc

    def run(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        timeout_s: float,
        name: str | None = None,
    ) -> HostProcess:
        """``start`` and wait for the exit (read ``returncode``, ``stdout()``); one that runs
        past ``timeout_s`` is stopped and ``subprocess.TimeoutExpired`` raised."""
        proc = self.start(host, argv, env=env, cwd=cwd, name=name)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop(proc, grace_s=1.0)
            raise
        return proc

    def all(self) -> list[HostProcess]:
        return list(self._procs)

    def kill(self, proc: HostProcess, sig: signal.Signals = signal.SIGKILL, *, group: bool = False) -> None:
        """Send ``sig`` to the process (or its whole process group); no-op once it is reaped."""
        if proc.popen.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)

    def stop(self, proc: HostProcess, *, grace_s: float = 5.0) -> int:
        """SIGTERM, up to ``grace_s`` to exit, then SIGKILL to its group; its exit status."""
        self._stop(proc, grace_s)
        return proc.popen.wait()

    def stop_all(self, *, grace_s: float = 5.0) -> None:
        """Stop every process started here, the last started first, each with ``grace_s``.

        Reverse order, like a stack: clients go before the servers they depend on (a
        ``maos worker`` drains against a Redis that is still there, instead of retrying
        against a gone one until it is killed)."""
        for proc in reversed(self._procs):
            self._stop(proc, grace_s)

    def _stop(self, proc: HostProcess, grace_s: float) -> None:
        self.kill(proc, signal.SIGTERM)
        try:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(grace_s)
        finally:
            # Not reaped yet, so the pid (and with it the group id) is still ours.
            if proc.popen.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.popen.wait()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
