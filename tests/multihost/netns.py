"""Simulated hosts as Linux network namespaces wired to one bridge.

Layout of a topology with prefix ``maos-1a2b3c`` and hosts ``redis`` and ``worker-a``::

    namespace               interfaces
    maos-1a2b3c-switch      br0, the bridge, with ports port0 and port1 (no address)
    maos-1a2b3c-redis       lo, eth0 10.213.N.2/24  ── veth pair ──  port0 (switch)
    maos-1a2b3c-worker-a    lo, eth0 10.213.N.3/24  ── veth pair ──  port1 (switch)

The bridge lives in its own "switch" namespace and every veth pair is created there with its
other end moved straight into the host's namespace, so the root namespace gets no interface
and no address. Hosts are numbered from .2 in the order given. ``lo`` is up everywhere.
IPv6 is off on every interface the harness creates (no link-local addresses on the switch or
the wire); ``lo`` keeps ``::1``. Programs started on a host (``Host.exec_argv``) see the
host's name as their hostname, each in a UTS namespace of its own.
``partition(host)`` sets that host's switch-side port down (its cable is pulled: nothing
reaches it and it reaches nothing); ``heal(host)`` plugs it back in.

Every namespace name starts with the topology's prefix, ``maos-`` and 6 random hex digits
per test, so parallel runs never collide and ``remove_namespaces(prefix)`` finds everything a
test made, even half of a topology whose creation failed.

A test that is killed outright (SIGKILL, a lost CI machine) runs no teardown. So the owner of
a prefix holds an ``flock`` on ``/run/maos-multihost/<prefix>.lock`` while its namespaces
exist (``PrefixClaim``); the kernel drops the lock when the owner dies, however it dies, and
``sweep_orphans`` (run by the fixture before each test) removes the namespaces of every prefix
whose lock it can take. Namespaces without a lock file are never touched.

The test process itself stays in the root namespace: ``Host.connect`` opens a socket from a
short-lived thread that has entered the host's namespace (a socket keeps the namespace it
was created in), so the test can talk to servers on the private subnet without a subprocess.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

IP = shutil.which("ip") or "/usr/sbin/ip"
UNSHARE = shutil.which("unshare")
HOSTNAME = shutil.which("hostname")
NETNS_DIR = Path("/run/netns")
LOCK_DIR = Path("/run/maos-multihost")
PREFIX_PATTERN = re.compile(r"maos-[0-9a-f]{6}")
HOST_NAME = re.compile(r"[a-z][a-z0-9-]{0,19}")
SWITCH = "switch"
BRIDGE = "br0"
HOST_IFACE = "eth0"
SUBNET_FIRST_OCTETS = "10.213"
CLONE_NEWNET = 0x40000000
IP_TIMEOUT_S = 10.0


class NetnsError(RuntimeError):
    """An ``ip`` command failed, or a namespace could not be entered."""


def new_prefix() -> str:
    """A fresh per-test prefix, ``maos-`` and 6 random hex digits."""
    return f"maos-{secrets.token_hex(3)}"


def netns_problem() -> str | None:
    """Why namespaces cannot be used here (a reason for ``pytest.skip``), or None if they can.

    Probes by creating and removing one namespace with a throwaway prefix.
    """
    if os.geteuid() != 0:
        return "multi-host tests need root (ip netns)"
    if not Path(IP).exists():
        return f"multi-host tests need the `ip` command of iproute2 (not at {IP})"
    claim = PrefixClaim(new_prefix())  # so that even a probe cut short gets swept
    probe = f"{claim.prefix}-probe"
    try:
        _ip("netns", "add", probe)
        _ip("-n", probe, "link", "set", "lo", "up")
    except NetnsError as exc:
        return f"network namespaces do not work here: {exc}"
    finally:
        with contextlib.suppress(NetnsError):
            remove_namespaces(claim.prefix)
        claim.release()
    return None


def list_namespaces(prefix: str) -> list[str]:
    """Names of the namespaces that belong to ``prefix`` (``<prefix>-…``)."""
    _check_prefix(prefix)
    out = _ip("netns", "list")
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return sorted(name for name in names if name.startswith(f"{prefix}-"))


def remove_namespaces(prefix: str, *, grace_s: float = 2.0) -> None:
    """Remove every namespace of ``prefix``, first SIGKILLing whatever still runs in them.

    Processes are killed before their namespace goes: ``ip netns delete`` only drops the name,
    and a process left inside would run on, unreachable, in an anonymous namespace. Only
    processes inside this prefix's namespaces are touched, and those are the test's own.
    """
    names = list_namespaces(prefix)
    for name in names:
        _kill_inside(name, grace_s)
    errors: list[str] = []
    for name in names:
        try:
            _ip("netns", "delete", name)
        except NetnsError as exc:
            errors.append(str(exc))
    if errors:
        raise NetnsError("; ".join(errors))


class PrefixClaim:
    """This process owns ``prefix`` while the claim is held (an ``flock`` on its lock file)."""

    def __init__(self, prefix: str) -> None:
        _check_prefix(prefix)
        self.prefix = prefix
        self.path = LOCK_DIR / f"{prefix}.lock"
        LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.write(self._fd, f"{os.getpid()}\n".encode())  # for a person looking; the lock decides

    def release(self) -> None:
        """Give the prefix up (after its namespaces are gone); safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(fd)


def sweep_orphans() -> list[str]:
    """Remove the namespaces of prefixes whose owner died without cleaning up; their prefixes.

    A lock file that can be locked has no live owner. Claims held by live processes (other
    tests running in parallel) are left alone.
    """
    swept: list[str] = []
    for path in sorted(LOCK_DIR.glob("maos-*.lock")) if LOCK_DIR.is_dir() else []:
        prefix = path.name.removesuffix(".lock")
        if not PREFIX_PATTERN.fullmatch(prefix):
            continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # its owner just released it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live owner
            remove_namespaces(prefix)
            path.unlink(missing_ok=True)
            swept.append(prefix)
        finally:
            os.close(fd)
    return swept


@dataclass(frozen=True, slots=True)
class Host:
    """One simulated host: a namespace with ``eth0`` at ``address`` on the topology's switch."""

    name: str
    netns: str
    address: str
    switch_port: str  # its veth end in the switch namespace

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run as a program of this host: inside its network namespace and, when
        ``unshare`` and ``hostname`` exist, in a UTS namespace of its own whose hostname is
        the host's name, so that ``socket.gethostname()`` tells the hosts apart as it would
        on real machines (MAOS compares host names to decide whether a process is its own
        machine's). ``ip netns exec``, ``unshare`` and ``sh -c 'exec …'`` all exec: same pid."""
        if UNSHARE is None or HOSTNAME is None:
            return [IP, "netns", "exec", self.netns, *argv]
        rename = f'{shlex.quote(HOSTNAME)} "$0" && exec "$@"'
        uts = [UNSHARE, "--uts", "--", "/bin/sh", "-c", rename, self.name]
        return [IP, "netns", "exec", self.netns, *uts, *argv]

    def connect(self, address: str, port: int, *, timeout_s: float = 1.0) -> socket.socket:
        """A TCP connection from this host to ``address:port``; ``OSError`` if it fails."""

        def dial() -> socket.socket:
            return socket.create_connection((address, port), timeout=timeout_s)

        return in_netns(self.netns, dial)

    def can_connect(self, address: str, port: int, *, timeout_s: float = 1.0) -> bool:
        """Whether a TCP connection from this host to ``address:port`` is accepted in time."""
        try:
            self.connect(address, port, timeout_s=timeout_s).close()
        except OSError:
            return False
        return True


class Topology:
    """Hosts on one switch, in namespaces named ``<prefix>-<host>``; see the module docstring.

    Build with ``Topology.create``; ``destroy`` removes everything (idempotent). Fixtures in
    ``conftest.py`` do both.
    """

    def __init__(self, prefix: str, subnet: str, hosts: Sequence[Host]) -> None:
        self.prefix = prefix
        self.subnet = subnet  # "10.213.N.0/24"
        self.switch = f"{prefix}-{SWITCH}"
        self.hosts: dict[str, Host] = {host.name: host for host in hosts}
        self._partitioned: set[str] = set()

    @classmethod
    def create(cls, prefix: str, host_names: Sequence[str], *, third_octet: int | None = None) -> Topology:
        """Make the switch and one namespace per host; on any failure remove what was made."""
        _check_prefix(prefix)
        if not host_names:
            raise ValueError("a topology needs at least one host")
        if len(set(host_names)) != len(host_names):
            raise ValueError(f"host names repeat: {list(host_names)}")
        for name in host_names:
            if name == SWITCH or not HOST_NAME.fullmatch(name):
                raise ValueError(f"bad host name {name!r}: lowercase letters, digits, '-', not {SWITCH!r}")
        if len(host_names) > 250:
            raise ValueError("at most 250 hosts fit the /24")
        octet = third_octet if third_octet is not None else 1 + secrets.randbelow(254)
        net = f"{SUBNET_FIRST_OCTETS}.{octet}"
        hosts = [
            Host(name, f"{prefix}-{name}", f"{net}.{n + 2}", f"port{n}") for n, name in enumerate(host_names)
        ]
        topology = cls(prefix, f"{net}.0/24", hosts)
        remove_namespaces(prefix)  # leftovers of an aborted run with this very prefix
        try:
            topology._build()
        except BaseException:
            remove_namespaces(prefix)
            raise
        return topology

    def _build(self) -> None:
        sw = self.switch
        _ip("netns", "add", sw)
        _no_ipv6_on_new_interfaces(sw)
        _ip("-n", sw, "link", "set", "lo", "up")
        # No STP and no forwarding delay: a port forwards as soon as it is up (also after heal).
        _ip("-n", sw, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        _ip("-n", sw, "link", "set", BRIDGE, "up")
        for host in self.hosts.values():
            _ip("netns", "add", host.netns)
            _no_ipv6_on_new_interfaces(host.netns)
            _ip("-n", host.netns, "link", "set", "lo", "up")
            # Created in the switch namespace with the peer placed directly in the host's:
            # neither end ever exists in the root namespace.
            _ip(
                "-n", sw, "link", "add", host.switch_port, "type", "veth",
                "peer", "name", HOST_IFACE, "netns", host.netns,
            )  # fmt: skip
            _ip("-n", sw, "link", "set", host.switch_port, "master", BRIDGE)
            _ip("-n", sw, "link", "set", host.switch_port, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", HOST_IFACE)
            _ip("-n", host.netns, "link", "set", HOST_IFACE, "up")

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise KeyError(f"no host {name!r} in this topology (hosts: {sorted(self.hosts)})") from None

    def __getitem__(self, name: str) -> Host:
        return self.host(name)

    def partition(self, *names: str) -> None:
        """Pull the cable of each named host: its switch-side port goes down."""
        for name in names:
            _ip("-n", self.switch, "link", "set", self.host(name).switch_port, "down")
            self._partitioned.add(name)

    def heal(self, *names: str) -> None:
        """Plug the named hosts back in (all partitioned hosts when none is named)."""
        for name in names or sorted(self._partitioned):
            _ip("-n", self.switch, "link", "set", self.host(name).switch_port, "up")
            self._partitioned.discard(name)

    def partitioned(self) -> frozenset[str]:
        return frozenset(self._partitioned)

    def namespaces(self) -> list[str]:
        """Every namespace of this topology that exists now."""
        return list_namespaces(self.prefix)

    def destroy(self) -> None:
        """Kill what still runs in the namespaces and remove them; safe to call twice."""
        remove_namespaces(self.prefix)


def in_netns(netns: str, work: Callable[[], T]) -> T:
    """Run ``work`` on a new thread that has entered network namespace ``netns``.

    Network namespaces are per thread: this thread (and the test) stays where it is. The
    helper thread is never reused, so it needs no way back. Sockets made by ``work`` stay in
    ``netns`` and may be used from any thread afterwards.
    """
    results: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            _enter(netns)
            results.append(work())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body, name=f"in-netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


_libc = ctypes.CDLL(None, use_errno=True)


def _enter(netns: str) -> None:
    fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise NetnsError(f"setns into {netns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def _no_ipv6_on_new_interfaces(netns: str) -> None:
    """Interfaces created in ``netns`` from now on get no IPv6 (``lo`` exists and keeps it).

    ``/proc/sys/net`` shows the namespace of the thread that opens it."""

    def write() -> None:
        with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as knob:
            knob.write("1")

    with contextlib.suppress(FileNotFoundError):  # a kernel without IPv6: nothing to turn off
        in_netns(netns, write)


def _kill_inside(netns: str, grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    while pids := _pids_inside(netns):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            # Zombies of our own children stay listed until reaped; they hold no resources.
            return
        time.sleep(0.01)


def _pids_inside(netns: str) -> list[int]:
    try:
        out = _ip("netns", "pids", netns)
    except NetnsError:
        return []
    return [int(word) for word in out.split() if word.isdigit() and not _is_zombie(int(word))]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def _check_prefix(prefix: str) -> None:
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(f"prefix {prefix!r} is not 'maos-' and 6 hex digits")


def _ip(*args: str) -> str:
    try:
        done = subprocess.run(
            [IP, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=IP_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"ip {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout
