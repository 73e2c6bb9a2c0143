"""A real ``redis-server`` on a simulated host, bound to that host's address only.

Without persistence (the default) a restart comes back empty. With ``persistent=True`` it
runs with ``--appendonly yes --appendfsync always``: every acknowledged write is on disk
before the reply, so even a SIGKILLed server comes back with all of it. ``restart`` keeps
the address, port and directory, and may switch persistence on or off.

Readiness is a PING answered ``+PONG`` (a server still loading its append-only file answers
``-LOADING``), polled from the server's own host until a deadline.
"""

from __future__ import annotations

import signal
from pathlib import Path

from ..store.redis_harness import REDIS_SERVER
from .netns import Host
from .polling import wait_until
from .processes import HostProcess, Processes, base_env

DEFAULT_PORT = 6379


class RedisNode:
    """``redis-server`` on ``host.address:port``, its files in ``workdir``."""

    def __init__(
        self,
        host: Host,
        processes: Processes,
        workdir: Path,
        *,
        port: int = DEFAULT_PORT,
        persistent: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.workdir = workdir
        self.persistent = persistent
        self._processes = processes
        self.proc: HostProcess | None = None

    @property
    def address(self) -> str:
        return self.host.address

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host.address}:{self.port}/{db}"

    def argv(self) -> list[str]:
        persistence = ("yes", "--appendfsync", "always") if self.persistent else ("no",)
        return [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", self.host.address,
            "--save", "",
            "--appendonly", *persistence,
            "--protected-mode", "no",
            "--daemonize", "no",
            "--dir", str(self.workdir),
        ]  # fmt: skip

    def start(self, *, timeout_s: float = 10.0) -> RedisNode:
        """Start the server and return once it answers PING."""
        if self.running():
            raise RuntimeError(f"redis-server on {self.host.name} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = self._processes.start(
            self.host,
            self.argv(),
            env=base_env(),
            cwd=self.workdir,
            name=f"redis-{self.host.name}",
            replaces=self.proc,
        )
        self.wait_ready(timeout_s=timeout_s)
        return self

    def wait_ready(self, *, timeout_s: float = 10.0) -> None:
        proc = self.proc
        if proc is None:
            raise RuntimeError("redis-server was not started")

        def answers() -> bool:
            if not proc.running():
                raise RuntimeError(f"redis-server exited before answering:\n{proc.describe()}")
            return self.ping()

        wait_until(answers, timeout_s=timeout_s, what=f"PONG from {self.url()}", describe=proc.describe)

    def ping(self, *, from_host: Host | None = None, timeout_s: float = 0.5) -> bool:
        """Whether the server answers PING with PONG, asked from ``from_host`` (default: its own)."""
        try:
            return self.command("PING", from_host=from_host, timeout_s=timeout_s) == b"+PONG\r\n"
        except OSError:
            return False

    def command(self, *args: str, from_host: Host | None = None, timeout_s: float = 1.0) -> bytes:
        """Send one inline command (arguments without spaces) from ``from_host`` (default: the
        server's own host); the raw RESP reply, e.g. ``b"+OK\\r\\n"``. ``OSError`` when the
        server cannot be reached or the reply does not come in time."""
        with (from_host or self.host).connect(self.address, self.port, timeout_s=timeout_s) as sock:
            sock.sendall(" ".join(args).encode() + b"\r\n")
            reply = b""
            while not _complete(reply):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"{self.url()} closed the connection after {reply!r}")
                reply += chunk
            return reply

    def running(self) -> bool:
        return self.proc is not None and self.proc.running()

    def stop(self, *, grace_s: float = 5.0) -> None:
        """SIGTERM (Redis then flushes its append-only file and exits), grace, SIGKILL."""
        if self.proc is not None:
            self._processes.stop(self.proc, grace_s=grace_s)

    def crash(self) -> None:
        """SIGKILL: the server dies without writing anything more."""
        if self.proc is not None:
            self._processes.kill(self.proc, signal.SIGKILL)
            self.proc.popen.wait()

    def restart(
        self, *, persistent: bool | None = None, crash: bool = False, timeout_s: float = 10.0
    ) -> RedisNode:
        """Stop (SIGTERM, or SIGKILL with ``crash``), then start again on the same address and
        directory; ``persistent`` switches append-only persistence on or off for the new
        process (default: unchanged)."""
        if crash:
            self.crash()
        else:
            self.stop()
        if persistent is not None:
            self.persistent = persistent
        return self.start(timeout_s=timeout_s)


def _complete(reply: bytes) -> bool:
    """Whether ``reply`` holds one whole simple, error, integer or bulk-string reply."""
    if reply[:1] == b"$":
        head, sep, rest = reply.partition(b"\r\n")
        return bool(sep) and (int(head[1:]) < 0 or len(rest) >= int(head[1:]) + 2)
    return reply.endswith(b"\r\n")
