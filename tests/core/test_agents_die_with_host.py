"""Agents die with the process that hosts them (ADR 0010): a SIGKILLed `maos run` or `maos
worker` leaves no agent process behind, not even what the agents forked; a SIGSTOPped agent is
caught by the idle watchdog and its task retried."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from maos.agents import guard
from maos.agents.process import spawn, stop_process
from maos.eventlog import EventLog
from maos.events import AgentAnomaly, Event, TaskFailed, TaskStarted
from maos.model import Plan, RunConfig, RunState, RunStatus, TaskSpec
from maos.orchestrator import Orchestrator
from maos.store import keys, open_store
from maos.store.base import Store
from tests.readiness import until

from ..store.redis_harness import RedisServer, have_redis_server, redis_server

MAOS = [sys.executable, "-m", "maos"]
FORKING_AGENT = "sleep 300 & sleep 300; wait"  # sh -c: the agent and two children in its group


def agent_pids(run_id: str) -> list[int]:
    """Live processes whose environment says they belong to the run (zombies have none)."""
    needle = f"MAOS_RUN_ID={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def kill_all(run_id: str) -> None:
    for pid in agent_pids(run_id):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


async def _run_ids(url: str) -> list[str]:
    store = await open_store(url)
    try:
        return [
            item.key.removeprefix(keys.RUN_RECORD_PREFIX) for item in await store.scan(keys.RUN_RECORD_PREFIX)
        ]
    finally:
        await store.close()


def wait_for_agents(url: str, count: int, *procs: subprocess.Popen[bytes]) -> str:
    """The run id, once ``count`` of its processes (agents and their children) are running."""
    deadline = time.monotonic() + 60
    while True:
        for proc in procs:
            assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the agents did not start"
        run_ids = asyncio.run(_run_ids(url)) if url.startswith("redis") or Path(url[10:]).exists() else []
        if run_ids and len(agent_pids(run_ids[0])) >= count:
            return run_ids[0]
        time.sleep(0.1)


def assert_none_left(run_id: str, within_s: float = 10.0) -> float:
    """Seconds until no process of the run is left (fails after ``within_s``)."""
    started = time.monotonic()
    while agent_pids(run_id):
        assert time.monotonic() - started < within_s, f"agents left: {agent_pids(run_id)}"
        time.sleep(0.05)
    return time.monotonic() - started


def forking_plan(path: Path, tasks: int) -> None:
    lines = ["name: long", "tasks:"]
    for n in range(tasks):
        lines += [f"  - id: t{n}", f"    command: '{FORKING_AGENT}'"]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def no_stray_agents() -> Iterator[list[str]]:
    """Run ids whose processes are killed after the test, whatever it asserted."""
    run_ids: list[str] = []
    yield run_ids
    for run_id in run_ids:
        kill_all(run_id)


# ---------------------------------------------------------------------------- SIGKILL


def test_sigkilled_orchestrator_leaves_no_agent(tmp_path: Path, no_stray_agents: list[str]) -> None:
    forking_plan(tmp_path / "plan.yaml", 10)
    url = f"sqlite:///{tmp_path / 'maos.db'}"
    run = subprocess.Popen(
        [*MAOS, "run", "plan.yaml", "--agents", "10", "--store", url, "--lease-s", "1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        run_id = wait_for_agents(url, 30, run)  # 10 agents, each with 2 children
        no_stray_agents.append(run_id)
    finally:
        run.kill()
        run.communicate(timeout=30)
    took_s = assert_none_left(run_id)
    assert took_s < 10


@pytest.mark.redis
@pytest.mark.skipif(not have_redis_server(), reason="no redis-server installed")
def test_sigkilled_worker_leaves_no_agent(tmp_path: Path, no_stray_agents: list[str]) -> None:
    forking_plan(tmp_path / "plan.yaml", 4)
    server: RedisServer
    with redis_server() as server:
        worker = subprocess.Popen(
            [*MAOS, "worker", "--store", server.url, "--name", "w1", "--capacity", "4", "--lease-s", "2"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        run = subprocess.Popen(
            [
                *MAOS,
                "run",
                "plan.yaml",
                "--store",
                server.url,
                "--workers-only",
                "--agents",
                "4",
                "--lease-s",
                "2",
            ],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            try:
                run_id = wait_for_agents(server.url, 12, worker, run)
                no_stray_agents.append(run_id)
            finally:
                worker.kill()
                worker.communicate(timeout=30)
            assert_none_left(run_id)
        finally:
            run.kill()
            run.communicate(timeout=30)


def test_resume_stops_what_the_dead_orchestrator_left_when_its_guard_died_first(
    tmp_path: Path, no_stray_agents: list[str]
) -> None:
    """The guard was killed, then the orchestrator, before the orchestrator could start
    another (it was stopped): a command agent (no parent-death signal, ADR 0022) and all it
    started (its group, a daemon in a session of its own) live on. Resuming the run stops
    every process of the attempts it requeues, found by their environment."""
    (tmp_path / "plan.yaml").write_text(
        "name: orphans\ntasks:\n  - id: t\n    command: |\n"
        '      if [ "$MAOS_ATTEMPT" = 1 ]; then setsid sleep 301 & sleep 302 & sleep 303; fi\n'
    )
    url = f"sqlite:///{tmp_path / 'maos.db'}"
    run = subprocess.Popen(
        [*MAOS, "run", "plan.yaml", "--store", url, "--lease-s", "1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        run_id = wait_for_agents(url, 4, run)  # sh, and its three sleeps
        no_stray_agents.append(run_id)
        agent = next(pid for pid in agent_pids(run_id) if psutil.Process(pid).name() == "sh")
        guards = [
            proc
            for proc in psutil.process_iter(["cmdline"])
            if "_guard_program.py" in " ".join(proc.info["cmdline"] or ())
            and str(run.pid) in (proc.info["cmdline"] or ())
        ]
        assert len(guards) == 1, guards
        run.send_signal(signal.SIGSTOP)  # else it starts another guard at once
        guards[0].kill()
        guards[0].wait(10)
    finally:
        run.kill()
        run.communicate(timeout=30)
    time.sleep(0.5)
    left = agent_pids(run_id)
    assert agent in left  # no parent-death signal for a command agent
    assert len(left) >= 4, "nothing was left behind to stop"
    resumed = subprocess.run(
        [*MAOS, "resume", run_id, "--store", url],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert not [pid for pid in left if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


HOST_OF_A_COMMAND_AGENT = """
import asyncio, os, sys
from maos.agents.process import spawn

async def main():
    proc, _ = await spawn(["sleep", "300"], cwd=".", env={"PATH": os.environ["PATH"]},
                          parent_death_signal=False)
    print(proc.pid, flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""


def _guards_of(host: int) -> list[psutil.Process]:
    return [
        proc
        for proc in psutil.process_iter(["cmdline"])
        if "_guard_program.py" in " ".join(proc.info["cmdline"] or ())
        and str(host) in (proc.info["cmdline"] or ())
    ]


def test_a_killed_guard_is_back_at_once_and_still_kills_the_agents(tmp_path: Path) -> None:
    """Its host starts another guard the moment one dies, not at its next agent: a host
    killed after that leaves nothing, though its agent has no parent-death signal."""
    host = subprocess.Popen(
        [sys.executable, "-c", HOST_OF_A_COMMAND_AGENT], cwd=tmp_path, stdout=subprocess.PIPE
    )
    agent: psutil.Process | None = None
    try:
        assert host.stdout is not None
        agent = psutil.Process(int(host.stdout.readline()))
        first = _guards_of(host.pid)
        assert len(first) == 1, first
        token = first[0].cmdline()[-2]
        first[0].kill()
        first[0].wait(10)
        asyncio.run(
            until(
                lambda: [g for g in _guards_of(host.pid) if g.pid != first[0].pid],
                "the host started another guard (no agent started meanwhile)",
            )
        )
        again = _guards_of(host.pid)
        assert len(again) == 1
        assert again[0].cmdline()[-2] == token  # the one its agent carries
    finally:
        host.kill()
        host.wait(30)
        if host.stdout is not None:
            host.stdout.close()
    assert agent is not None
    try:
        agent.wait(10)  # killed by the new guard (reaped by its new parent), or a zombie
    except psutil.TimeoutExpired:
        assert agent.status() == psutil.STATUS_ZOMBIE, "the agent outlived its host"
    finally:
        with contextlib.suppress(psutil.Error):
            agent.kill()


# ---------------------------------------------------------------------------- SIGSTOP


def test_agents_stop_while_their_host_is_stopped(tmp_path: Path, no_stray_agents: list[str]) -> None:
    """A stopped host renews no lease: once it runs out its tasks run elsewhere, so its agents
    must not go on working meanwhile. They are stopped with it and continued with it."""
    ticks = tmp_path / "ticks"
    (tmp_path / "plan.yaml").write_text(
        f"name: paused\ntasks:\n  - id: t\n    command: 'for i in $(seq 60); do echo $i >> {ticks}; "
        "sleep 0.05; done'\n"
    )
    url = f"sqlite:///{tmp_path / 'maos.db'}"
    run = subprocess.Popen(
        [*MAOS, "run", "plan.yaml", "--store", url, "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        run_id = wait_for_agents(url, 1, run)
        no_stray_agents.append(run_id)
        wait_until_ticks(ticks, 3)
        run.send_signal(signal.SIGSTOP)
        agent = min(agent_pids(run_id))
        asyncio.run(
            until(lambda: psutil.Process(agent).status() == psutil.STATUS_STOPPED, "the agent stopped")
        )
        paused_at = len(ticks.read_text().split())
        time.sleep(1.0)
        assert len(ticks.read_text().split()) <= paused_at + 1  # nothing done while paused
    finally:
        run.send_signal(signal.SIGCONT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert ticks.read_text().split() == [str(n) for n in range(1, 61)]  # it went on where it was


def wait_until_ticks(path: Path, count: int) -> None:
    deadline = time.monotonic() + 30
    while not path.exists() or len(path.read_text().split()) < count:
        assert time.monotonic() < deadline, "the agent wrote nothing"
        time.sleep(0.02)


# ---------------------------------------------------------------------------- the pieces


async def test_an_agent_carries_the_guard_token(tmp_path: Path) -> None:
    proc, exited = await spawn(["sh", "-c", "sleep 30"], cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    try:
        # same pid: setpriv sets the signal, then execs the agent (poll: that takes a moment,
        # several seconds on a loaded 2-core machine; until the exec the environment may read
        # as empty)
        deadline = time.monotonic() + 60
        while not Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"sh\0"):
            assert time.monotonic() < deadline, Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            await asyncio.sleep(0.01)
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        token = guard.ensure_guard()
        assert token is not None
        assert f"{guard.GUARD_ENV}={token}".encode() in environ
    finally:
        await stop_process(proc, 1.0)
        await exited


HOST_WITHOUT_GUARD = """
import os, subprocess, sys, time
from maos.agents.guard import GUARD_ENV, guarded
argv, env = guarded(["sleep", "300"], cwd=".", env=dict(os.environ))
env.pop(GUARD_ENV)  # only the parent-death signal is left to kill it
agent = subprocess.Popen(argv, env=env, start_new_session=True)
print(agent.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.skipif(guard._setpriv() is None, reason="no setpriv with --pdeathsig")
def test_the_parent_death_signal_alone_kills_the_agent(tmp_path: Path) -> None:
    host = subprocess.Popen([sys.executable, "-c", HOST_WITHOUT_GUARD], cwd=tmp_path, stdout=subprocess.PIPE)
    try:
        assert host.stdout is not None
        agent = psutil.Process(int(host.stdout.readline()))
        # setpriv sets the signal, then execs sleep (a host dying before that is the guard's case)
        deadline = time.monotonic() + 5
        while agent.cmdline()[:1] != ["sleep"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        host.kill()
        host.wait(30)
    try:
        agent.wait(5)  # gone (reaped by its new parent), or still a zombie:
    except psutil.TimeoutExpired:
        assert agent.status() == psutil.STATUS_ZOMBIE, "the agent outlived its host"
    finally:
        with contextlib.suppress(psutil.Error):
            agent.kill()
        assert host.stdout is not None
        host.stdout.close()


def test_the_guard_is_nobodys_child_and_comes_back() -> None:
    token = guard.ensure_guard()
    assert token is not None
    mine = {child.pid for child in psutil.Process().children(recursive=True)}
    guards = [p for p in psutil.process_iter(["cmdline"]) if token in (p.info["cmdline"] or [])]
    assert len(guards) == 1
    assert guards[0].pid not in mine  # detached: no zombie of ours, not among our children
    guards[0].kill()
    guards[0].wait(5)
    assert guard.ensure_guard() == token  # restarted: running agents carry the same token
    again = [p for p in psutil.process_iter(["cmdline"]) if token in (p.info["cmdline"] or [])]
    assert len(again) == 1
    assert again[0].pid != guards[0].pid


async def test_a_missing_program_fails_to_start_as_before(tmp_path: Path) -> None:
    argv, env = guard.guarded(["no-such-program-xyz"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert argv == ["no-such-program-xyz"]  # not wrapped: exec fails with its own error
    assert guard.GUARD_ENV in env
    with pytest.raises(FileNotFoundError):
        await spawn(["no-such-program-xyz"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    argv, _ = guard.guarded(["./agent.sh"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert argv[-1] == "./agent.sh"  # relative to the agent's cwd, not ours
    if guard._setpriv() is not None:
        assert argv[:3] == [guard._setpriv(), "--pdeathsig", "KILL"]
    argv, _ = guard.guarded(
        ["./agent.sh"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, parent_death_signal=False
    )
    assert argv == ["./agent.sh"]  # a command agent: its guard only (ADR 0022)


# ---------------------------------------------------------------------------- SIGSTOP


async def test_stop_process_ends_a_stopped_group(tmp_path: Path) -> None:
    proc, exited = await spawn(["sh", "-c", FORKING_AGENT], cwd=tmp_path, env={"PATH": os.environ["PATH"]})

    def group() -> list[int]:
        return [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]

    await until(lambda: len(group()) == 3, "the agent and its two children")
    members = group()
    os.killpg(proc.pid, signal.SIGSTOP)
    started = time.monotonic()
    await stop_process(proc, 0.5)  # SIGTERM waits for a SIGCONT; the SIGKILL after the grace does not
    await exited
    assert time.monotonic() - started < 5
    for pid in members:  # killed; gone or a zombie once the kernel is done with it
        with contextlib.suppress(psutil.NoSuchProcess):
            member = psutil.Process(pid)
            with contextlib.suppress(psutil.TimeoutExpired):
                member.wait(5)
            assert member.status() == psutil.STATUS_ZOMBIE


async def _events(store: Store, run_id: str) -> list[object]:
    return [event async for _, event in EventLog(store, run_id).iterate()]


async def test_a_stopped_agent_is_caught_by_the_idle_watchdog(sqlite_store: Store, tmp_path: Path) -> None:
    command = 'if [ "$MAOS_ATTEMPT" = 1 ]; then echo started; sleep 60; else echo done; fi'
    plan = Plan(
        name="frozen",
        tasks=(TaskSpec(id="frozen", command=command, idle_timeout_s=1, max_attempts=2, timeout_s=60),),
    )
    config = RunConfig(agents=1, workdir=str(tmp_path), on_anomaly="restart", retry_base_s=0.01, grace_s=30)
    orchestrator = Orchestrator(sqlite_store, plan, config)

    def freeze(_: str, event: Event, __: RunState) -> None:
        if isinstance(event, TaskStarted) and event.attempt == 1 and event.pid is not None:
            os.kill(event.pid, signal.SIGSTOP)

    orchestrator.hooks.append(freeze)
    state = await asyncio.wait_for(orchestrator.run(), 30)
    assert state.status is RunStatus.SUCCEEDED
    assert state.tasks["frozen"].attempts == 2
    events = await _events(sqlite_store, orchestrator.run_id)
    anomaly = next(e for e in events if isinstance(e, AgentAnomaly))
    assert anomaly.kind == "idle"
    assert anomaly.action == "restart"
    assert anomaly.detail.startswith("stopped by a signal (SIGSTOP")
    failed = next(e for e in events if isinstance(e, TaskFailed))
    assert failed.attempt == 1
    assert failed.reason.startswith("anomaly: stopped by a signal (SIGSTOP")
    # SIGTERM + SIGCONT ended it at once, long before the 30 s grace period would have
    assert failed.ts - anomaly.ts < 5


A_HOST_WHOSE_GUARD_CANNOT_LIVE = """
import logging, sys, time
logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
from maos.agents import _guard_program, guard
_guard_program.__file__ = "/nonexistent/guard.py"  # its program is gone: every guard dies at once
guard.ensure_guard()
time.sleep(2)
"""


def test_a_guard_that_cannot_live_is_not_restarted_in_a_tight_loop(tmp_path: Path) -> None:
    """The watcher restarted a guard that died at once 82 times a second, for ever."""
    done = subprocess.run(
        [sys.executable, "-c", A_HOST_WHOSE_GUARD_CANNOT_LIVE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    restarts = done.stderr.count("the agent guard ended")
    assert 1 <= restarts <= 8, done.stderr[-2000:]
