"""What the dashboard's snapshot, transcript and server routes tell the page (issue 12):
agents labelled with their task's runtime, the critical path on measured durations and never
through skipped tasks, attempts in transcripts, the server saying it stops; and how long the
dashboard of `maos run --dashboard` stays up after its run."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from starlette.applications import Starlette

from maos.cli import run_cmd
from maos.eventlog import EventLog
from maos.events import (
    AgentOutput,
    Event,
    RunStarted,
    TaskAssigned,
    TaskFailed,
    TaskReady,
    TaskSkipped,
    TaskStarted,
    TaskSucceeded,
)
from maos.model import AgentSpec, Plan, TaskSpec
from maos.orchestrator import Orchestrator
from maos.store.base import Store
from maos.web import create_app
from maos.web.snapshot import critical_path, run_snapshot
from tests.readiness import until

from .helpers import config, small_plan

MAOS = [sys.executable, "-m", "maos"]


def client_of(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


def ran(task_id: str, agent_id: str, seconds: float, *, attempt: int = 1, ok: bool = True) -> list[Event]:
    now = time.time()
    ended: Event = (
        TaskSucceeded(task_id=task_id, agent_id=agent_id, attempt=attempt, duration_s=seconds, exit_code=0)
        if ok
        else TaskFailed(
            task_id=task_id, agent_id=agent_id, attempt=attempt, reason="exit code 1", duration_s=seconds
        )
    )
    return [
        TaskAssigned(task_id=task_id, agent_id=agent_id, attempt=attempt),
        TaskStarted(task_id=task_id, agent_id=agent_id, attempt=attempt, pid=1, ts=now - seconds),
        ended,
    ]


async def append(store: Store, run_id: str, events: list[Event]) -> None:
    log = EventLog(store, run_id)
    for event in events:
        await log.append(event)


# ---------------------------------------------------------------------- critical path


def test_critical_path_is_the_heaviest_chain_and_skips_off_path_tasks() -> None:
    deps = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c"), "x": (), "y": ("x",), "z": ("y",)}
    order = ["a", "x", "b", "c", "y", "d", "z"]
    weights = {"a": 1, "b": 0.4, "c": 11, "d": 1, "x": 2, "y": 50, "z": 50}
    assert critical_path(order, deps, weights) == ["x", "y", "z"]
    # y and z skipped: the chain through them is gone, and x alone is not the heaviest
    assert critical_path(order, deps, weights, {"y", "z"}) == ["a", "c", "d"]
    # a chain is cut at an off-path task: what follows starts anew
    assert critical_path(order, deps, weights, {"c", "y"}) == ["z"]
    assert critical_path(order, deps, weights, set(order)) == []


async def test_snapshot_path_uses_measured_durations_and_no_skipped_task(
    store: Store, tmp_path: Path
) -> None:
    plan = Plan(
        name="measured",
        tasks=(
            TaskSpec(id="prep", command="true"),
            TaskSpec(id="quick", depends_on=("prep",), command="true"),
            TaskSpec(id="slow", depends_on=("prep",), command="true"),
            TaskSpec(id="final", depends_on=("quick", "slow"), command="true"),
            TaskSpec(id="flaky", command="false", max_attempts=1),
            TaskSpec(id="doomed", depends_on=("flaky",), command="true"),
            TaskSpec(id="doomed2", depends_on=("doomed",), command="true"),
        ),
    )
    agents = tuple(AgentSpec(id=f"a{n}") for n in range(3))
    now = time.time()
    await append(
        store,
        "m",
        [
            RunStarted(run_id="m", plan=plan, config=config(tmp_path), agents=agents),
            TaskReady(task_id="prep"),
            TaskReady(task_id="flaky"),
            *ran("prep", "a0", 0.3),
            *ran("flaky", "a1", 0.5, ok=False),
            TaskSkipped(task_id="doomed", because="dependency 'flaky' failed"),
            TaskSkipped(task_id="doomed2", because="dependency 'doomed' skipped"),
            TaskReady(task_id="quick"),
            TaskReady(task_id="slow"),
            *ran("quick", "a0", 0.4),
            TaskAssigned(task_id="slow", agent_id="a2", attempt=1),
            TaskStarted(task_id="slow", agent_id="a2", attempt=1, pid=2, ts=now - 11),
        ],
    )
    found = await run_snapshot(store, "m")
    assert found is not None
    # slow has run 11 s (not yet ended): it outweighs quick's measured 0.4 s
    assert found["dag"]["critical_path"] == ["prep", "slow", "final"]
    critical = {task["id"] for task in found["tasks"] if task["critical"]}
    assert critical == {"prep", "slow", "final"}


async def test_skipped_tasks_never_lengthen_the_path(store: Store, tmp_path: Path) -> None:
    # flaky's chain would be the heaviest if its two skipped dependents weighed the estimate
    plan = Plan(
        name="skipped",
        tasks=(
            TaskSpec(id="flaky", command="false", max_attempts=1),
            TaskSpec(id="s1", depends_on=("flaky",), command="true"),
            TaskSpec(id="s2", depends_on=("s1",), command="true"),
            TaskSpec(id="prep", command="true"),
            TaskSpec(id="next", depends_on=("prep",), command="true"),
        ),
    )
    await append(
        store,
        "s",
        [
            RunStarted(run_id="s", plan=plan, config=config(tmp_path), agents=(AgentSpec(id="a0"),)),
            TaskReady(task_id="flaky"),
            TaskReady(task_id="prep"),
            *ran("flaky", "a0", 1.0, ok=False),
            TaskSkipped(task_id="s1", because="x"),
            TaskSkipped(task_id="s2", because="x"),
            *ran("prep", "a0", 0.8),
            TaskReady(task_id="next"),
        ],
    )
    found = await run_snapshot(store, "s")
    assert found is not None
    # next (pending) weighs the median of the ended (0.9): prep+next = 1.7 > flaky's 1.0
    assert found["dag"]["critical_path"] == ["prep", "next"]


# ---------------------------------------------------------------------- agents, transcripts


async def test_agents_show_the_runtime_of_their_task(store: Store, tmp_path: Path) -> None:
    plan = Plan(
        name="runtimes",
        tasks=(
            TaskSpec(id="ask", prompt="say hi"),
            TaskSpec(id="build", command="true"),
            TaskSpec(id="vote", prompt="pick one", replicas=3),
        ),
    )
    agents = tuple(AgentSpec(id=f"a{n}") for n in range(4))  # slots: runtime "command" by default
    await append(
        store,
        "r",
        [
            RunStarted(run_id="r", plan=plan, config=config(tmp_path), agents=agents),
            TaskReady(task_id="ask"),
            TaskReady(task_id="build"),
            TaskReady(task_id="vote"),
            TaskAssigned(task_id="ask", agent_id="a0", attempt=1),
            *ran("build", "a1", 0.1),
            TaskAssigned(task_id="vote", agent_id="a2", attempt=1),
        ],
    )
    found = await run_snapshot(store, "r")
    assert found is not None
    runtimes = {agent["id"]: agent["runtime"] for agent in found["agents"]}
    assert runtimes == {"a0": "claude-code", "a1": "command", "a2": "consensus", "a3": None}
    last = {agent["id"]: agent["last_task_id"] for agent in found["agents"]}
    assert last["a1"] == "build"  # idle now: labelled by its last task


async def test_transcript_lines_carry_their_attempt(store: Store, tmp_path: Path) -> None:
    plan = Plan(name="retried", tasks=(TaskSpec(id="t", command="x", max_attempts=2),))
    await append(
        store,
        "t",
        [
            RunStarted(run_id="t", plan=plan, config=config(tmp_path), agents=(AgentSpec(id="a0"),)),
            TaskReady(task_id="t"),
            TaskAssigned(task_id="t", agent_id="a0", attempt=1),
            AgentOutput(task_id="t", agent_id="a0", stream="stdout", text="first try"),
            TaskStarted(task_id="t", agent_id="a0", attempt=1, pid=1),
            TaskFailed(task_id="t", agent_id="a0", attempt=1, reason="exit code 1"),
            TaskReady(task_id="t"),
            TaskAssigned(task_id="t", agent_id="a0", attempt=2),
            AgentOutput(task_id="t", agent_id="a0", stream="stdout", text="second try"),
        ],
    )
    app = create_app(store)
    async with app.router.lifespan_context(app), client_of(app) as client:
        found = (await client.get("/api/runs/t/tasks/t/transcript")).json()
    assert [(line["attempt"], line["text"]) for line in found["lines"]] == [
        (1, "first try"),
        (2, "second try"),
    ]
    assert found["attempts"] == 2


# ---------------------------------------------------------------------- the server going away


async def test_api_server_answers_when_the_server_starts_stopping(store: Store) -> None:
    app = create_app(store)
    async with app.router.lifespan_context(app), client_of(app) as client:
        assert (await client.get("/api/server")).json() == {"stopping": False}
        started = time.monotonic()
        assert (await client.get("/api/server?wait_s=0.2")).json() == {"stopping": False}
        assert time.monotonic() - started >= 0.2
        for bad in ("nan", "inf", "-1", "61", "1e400", "x"):
            answer = await client.get(f"/api/server?wait_s={bad}")
            assert answer.status_code == 400, bad
            assert "wait_s" in answer.json()["detail"]
        waiting = asyncio.create_task(client.get("/api/server?wait_s=30"))
        # The request waits on the event once the event holds a waiter (asyncio keeps them in
        # ``_waiters``): then setting it is what answers the request.
        await until(lambda: bool(app.state.closing._waiters), "the request to wait for the server to stop")
        started = time.monotonic()
        app.state.closing.set()  # what the server does first when it shuts down
        assert (await waiting).json() == {"stopping": True}
        assert time.monotonic() - started < 2


# ---------------------------------------------------------------------- lingering after the run


def quiet_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, highlight=False), out


async def test_linger_defaults_to_none_without_a_terminal() -> None:
    console, out = quiet_console()
    started = time.monotonic()
    await run_cmd._linger(None, "http://127.0.0.1:1/", console)  # a StringIO is no terminal
    await run_cmd._linger(0.0, "http://127.0.0.1:1/", console)
    assert time.monotonic() - started < 0.5
    assert out.getvalue() == ""


async def test_linger_waits_its_seconds_or_until_ctrl_c() -> None:
    console, out = quiet_console()
    loop = asyncio.get_running_loop()
    try:
        started = time.monotonic()
        await run_cmd._linger(0.3, "http://127.0.0.1:1/", console)
        assert 0.3 <= time.monotonic() - started < 2
        assert "dashboard still at http://127.0.0.1:1/ for 0.3s — Ctrl-C stops it" in out.getvalue()
        loop.call_later(0.2, os.kill, os.getpid(), signal.SIGINT)
        started = time.monotonic()
        await run_cmd._linger(30, "http://127.0.0.1:1/", console)
        assert time.monotonic() - started < 5
    finally:  # _drive removes them in `maos run`
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


def test_run_dashboard_waits_for_enter_in_a_terminal(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: lingering\ntasks:\n  - id: a\n    command: 'echo done'\n")
    env = {k: v for k, v in os.environ.items() if k != "MAOS_DASHBOARD_TOKEN"}
    main, other = pty.openpty()  # stdin and stdout a terminal, as a person runs it
    try:
        proc = subprocess.Popen(
            [*MAOS, "run", str(plan), "--dashboard", "--dashboard-port", "0"],
            cwd=tmp_path, env=env, stdin=other, stdout=other, stderr=other,
        )  # fmt: skip
        os.close(other)
        seen = b""
        deadline = time.monotonic() + 60
        while b"press Enter to stop" not in seen:
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break
            seen += chunk
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))
        shown = re.search(r"dashboard still at (http://127\.0\.0\.1:\d+/) — press Enter to stop", text)
        assert shown, text
        # Still serving after it said so, and not stopping: it waits for Enter.
        assert httpx.get(f"{shown[1]}api/server", timeout=10).json() == {"stopping": False}
        assert proc.poll() is None
        os.write(main, b"\n")
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_dashboard_linger_must_be_a_number_of_seconds(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: x\ntasks:\n  - id: a\n    command: 'true'\n")
    for bad in ("nan", "-1", "1e9"):
        refused = subprocess.run(
            [*MAOS, "run", str(plan), "--dashboard", "--dashboard-linger-s", bad],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert refused.returncode == 2, (bad, refused.stderr)
        assert "--dashboard-linger-s" in refused.stderr
        assert not (tmp_path / ".maos").exists()  # refused before anything ran


async def test_run_records_with_times_that_are_not_numbers_are_left_out(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run record whose ``started_at`` is 1e999, NaN or Infinity (valid JSON to Python) made
    ``/api/runs`` answer 500 with a traceback, and the metrics followed it as the newest run
    for ever. It is unreadable, as a record that is not JSON is: left out with a warning, from
    the dashboard's index, its metrics and ``maos runs``."""
    from maos.model import RunRecord, RunStatus
    from maos.store import keys

    real = Orchestrator(store, small_plan(sleep_s=0.01), config(tmp_path))
    await real.run()
    good = RunRecord(
        run_id="x", name="bogus", tasks=1, workdir=str(tmp_path), started_at=1.0, status=RunStatus.RUNNING
    )
    text = good.model_dump_json()
    for run_id, started in (("c-big", "1e999"), ("c-nan", "NaN"), ("c-inf", "Infinity")):
        bogus = text.replace('"run_id":"x"', f'"run_id":"{run_id}"').replace(
            '"started_at":1.0', f'"started_at":{started}'
        )
        await store.set(keys.run_record(run_id), bogus.encode())
    caplog.set_level(logging.WARNING, logger="maos.liveness")
    app = create_app(store)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client,
    ):
        answer = await client.get("/api/runs")
        assert answer.status_code == 200
        assert (answer.json()["selected"], [r["run_id"] for r in answer.json()["runs"]]) == (
            real.run_id,
            [real.run_id],
        )

        async def follows_the_real_run() -> bool:
            return 'maos_tasks{state="succeeded"} 4.0' in (await client.get("/metrics")).text

        await until(follows_the_real_run, "the metrics to follow the real run")
    warned = " ".join(r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage())
    assert all(run_id in warned for run_id in ("c-big", "c-nan", "c-inf")), warned
    command = [*MAOS, "runs", "--json", "--store", store.url]
    listed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [run["run_id"] for run in json.loads(listed.stdout)] == [real.run_id]
