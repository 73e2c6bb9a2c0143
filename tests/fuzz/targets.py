"""The fuzz targets: each takes one input as bytes and returns, or raises ``Crash``.

Bytes, so that one corpus format (``corpus/<target>/*.bin``) replays every target and any
byte-level fuzzer can drive them. What the bytes mean per target:

=================  =====================================================================
``plan``           a plan file's content (YAML; JSON when it starts with ``{``)
``door_cli``       NUL-separated command-line arguments of ``maos`` (after ``maos``),
                   decoded as argv is (UTF-8, ``surrogateescape``); after a ``\\x01``:
                   the command's stdin
``mcp``            JSON ``{"tool": name, "args": {...}}`` for a door MCP tool
``stream_json``    one line of Claude Code stream-json output
``output``         an agent's output bytes, split into chunks at ``\\x00\\xff``
``script``         a model-server script (YAML)
``web``            ``<path and query>\\n<header>: <value>\\n…`` for a GET to the dashboard
``log``            a run's event log as store contents: entries separated by ``\\n``,
                   appended after a valid ``run_started``
=================  =====================================================================

A target decides what is a clear error for its surface: a ``MaosError``, exit code 1-3 of a
door command with no traceback, a tool error, HTTP 4xx. Anything else is a ``Crash`` (or
the unexpected exception itself, which fails the test just the same).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maos.errors import MaosError


class Crash(AssertionError):
    """A target's outcome that is neither a result nor a clear error."""


# --------------------------------------------------------------------------- plan


_PLAN_DIR = Path(tempfile.mkdtemp(prefix="maos-fuzz-plan-"))


def plan(data: bytes) -> None:
    from maos.plan.loader import load_plan

    path = _PLAN_DIR / ("plan.json" if data.lstrip()[:1] == b"{" else "plan.yaml")
    path.write_bytes(data)
    with contextlib.suppress(MaosError):
        load_plan(path)


# --------------------------------------------------------------------------- stream-json


def stream_json(data: bytes) -> None:
    from maos.agents.stream_json import StreamJsonError, parse_line

    with contextlib.suppress(StreamJsonError):
        parse_line(data)
    with contextlib.suppress(StreamJsonError):
        parse_line(data.decode("utf-8", "surrogateescape"))


# --------------------------------------------------------------------------- model-server script


def script(data: bytes) -> None:
    from maos.modelserver.script import parse_script

    with contextlib.suppress(MaosError):
        parse_script(data.decode("utf-8", "replace"))


# --------------------------------------------------------------------------- agent output


def output(data: bytes) -> None:
    """Output pumping: ``LineSplitter`` on the chunks, then each line as the worker logs it
    (``storable``, an ``agent_output`` event) through the event JSON round trip."""
    from maos.agents.process import LineSplitter
    from maos.events import AgentOutput, event_from_json, event_to_json
    from maos.sanitize import storable

    limit = 64
    splitter = LineSplitter(limit_bytes=limit)
    lines: list[str] = []
    for chunk in data.split(b"\x00\xff"):
        lines += splitter.feed(chunk)
    lines += splitter.close()
    whole = data.replace(b"\x00\xff", b"")
    newlines = whole.count(b"\n")
    if len(lines) > newlines + 1:
        raise Crash(f"{len(lines)} lines from {newlines} newlines")
    for line in lines:
        if len(line.encode("utf-8", "surrogatepass")) > 4 * limit + 80:
            raise Crash(f"a line of {len(line)} characters passed a {limit}-byte limit")
        event = AgentOutput(task_id="t", agent_id="a", stream="stdout", text=storable(line))
        if event_from_json(event_to_json(event)) != event:
            raise Crash(f"agent_output event does not survive its JSON round trip: {line!r}")


# --------------------------------------------------------------------------- the door


class DoorFixture:
    """A run as its agents see it (a SQLite store, a secret, two agents), built once."""

    def __init__(self) -> None:
        from maos.events import RunStarted
        from maos.model import AgentSpec, Plan, RunConfig, TaskSpec
        from maos.security import ensure_run_secret, issue_task_token, issue_token

        self.dir = Path(tempfile.mkdtemp(prefix="maos-fuzz-door-"))
        self.url = f"sqlite:///{self.dir / 'maos.db'}"
        self.run_id = "fuzz-run"

        async def start() -> bytes:
            from maos.eventlog import EventLog
            from maos.store import open_store

            store = await open_store(self.url)
            try:
                await EventLog(store, self.run_id).append(
                    RunStarted(
                        run_id=self.run_id,
                        plan=Plan(name="fuzz", tasks=(TaskSpec(id="t1", command="true"),)),
                        config=RunConfig(agents=2, workdir=str(self.dir)),
                        agents=(AgentSpec(id="agent-a"), AgentSpec(id="agent-b")),
                    )
                )
                return await ensure_run_secret(store, self.run_id)
            finally:
                await store.close()

        secret = asyncio.run(start())
        self.env = {
            "MAOS_RUN_ID": self.run_id,
            "MAOS_AGENT_ID": "agent-a",
            "MAOS_TASK_ID": "t1",
            "MAOS_AGENT_TOKEN": issue_token(secret, self.run_id, "agent-a"),
            "MAOS_TASK_TOKEN": issue_task_token(secret, self.run_id, "agent-a", "t1", 1, {}),
            "MAOS_STORE": self.url,
        }


@functools.cache
def door_fixture() -> DoorFixture:
    return DoorFixture()


DOOR_COMMANDS = (
    ("state", "get"),
    ("state", "set"),
    ("state", "cas"),
    ("state", "list"),
    ("msg", "send"),
    ("msg", "read"),
    ("msg", "ack"),
    ("msg", "subscribe"),
    ("broadcast",),
    ("result", "publish"),
    ("result", "get"),
    ("task", "add"),
    ("task", "wait"),
)


def door_cli(data: bytes) -> None:
    """One ``maos`` door command in-process (typer's runner): exit 0-3, never a traceback."""
    from typer.testing import CliRunner

    from maos.cli import app

    argv_part, _, stdin = data.partition(b"\x01")
    args = [arg.decode("utf-8", "surrogateescape") for arg in argv_part.split(b"\x00")] if argv_part else []
    if args[:2] == ["task", "add"]:
        args += ["--wait-s", "0.1"]  # no orchestrator answers here: do not wait 30 s for it
    if args[:2] == ["task", "wait"]:
        args += ["--timeout-s", "0.1"]  # the fixture's run has no orchestrator: a task never ends
    for n in range(1, len(args)):
        if args[n - 1] in ("--wait-s", "--timeout-s") and args[n].strip() not in _SHORT_WAITS:
            args[n] = "0.05"
    fixture = door_fixture()
    result = CliRunner().invoke(app, args, env=fixture.env, input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        exc = result.exception
        raise Crash(f"maos {args!r} raised {type(exc).__name__}: {exc}") from exc
    if result.exit_code not in (0, 1, 2, 3):
        raise Crash(f"maos {args!r} exited {result.exit_code}: {result.output[-500:]}")
    if "Traceback" in result.output:
        raise Crash(f"maos {args!r} printed a traceback: {result.output[-2000:]}")


_SHORT_WAITS = {
    "",
    "0",
    "0.0",
    "0.05",
    "-1",
    "nan",
    "inf",
    "-inf",
    "1e400",
    "1_0",
    "١",
    "abc",
    "1" + "0" * 400,
}
"""``--wait-s``/``--timeout-s`` values a case may keep (the rest become 0.05 s: a real wait is not a
finding)."""


def mcp(data: bytes) -> None:
    """One door MCP tool call: a result or a ``ToolError``, never another exception."""
    try:
        call = json.loads(data)
    except (ValueError, RecursionError):
        return
    if (
        not isinstance(call, dict)
        or not isinstance(call.get("tool"), str)
        or not isinstance(call.get("args"), dict)
    ):
        return
    tool, args = call["tool"], call["args"]
    if tool == "add_task":
        return  # waits up to 30 s for an orchestrator that is not there: not a finding
    if tool == "read_messages" and isinstance(args.get("wait_s"), int | float) and args["wait_s"] > 0.05:
        args["wait_s"] = 0.05  # (wait_task needs no such cut: the fixture's only task is the caller's)
    fixture = door_fixture()  # before the loop: building it runs one of its own
    asyncio.run(_mcp_call(fixture, tool, args))


async def _mcp_call(fixture: DoorFixture, tool: str, args: dict[str, Any]) -> None:
    from mcp.server.mcpserver.exceptions import ToolError

    from maos.door import Door
    from maos.mcp_server import build_server
    from maos.store import open_store

    store = await open_store(fixture.url)
    try:
        server = build_server(Door(store, fixture.run_id, "agent-a", "t1"))
        try:
            await server.call_tool(tool, args)
        except ToolError as exc:
            if type(exc).__name__ == "UnexpectedToolError":
                raise Crash(f"{tool}({args!r:.300}) crashed: {exc.__cause__!r}") from exc
    finally:
        await store.close()


# --------------------------------------------------------------------------- the dashboard


class WebFixture:
    """Two dashboard apps on one SQLite store (one with a token), under Starlette's TestClient."""

    def __init__(self) -> None:
        from starlette.testclient import TestClient

        from maos.web import create_app

        fixture = door_fixture()  # a store with a run in it
        self.clients = []
        for token in (None, "secret-token"):
            app = create_app(fixture.url, token=token)
            client = TestClient(app, raise_server_exceptions=True, base_url="http://127.0.0.1")
            client.__enter__()  # lifespan: the store opens
            app.state.closing.set()  # an event stream that is valid ends at once instead of following
            self.clients.append(client)


@functools.cache
def web_fixture() -> WebFixture:
    return WebFixture()


def web(data: bytes) -> None:
    first, *header_lines = data.decode("latin-1").split("\n")
    target = "/" + first.lstrip("/")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if (
            sep
            and name.strip()
            and name.strip().isascii()
            and all(c.isalnum() or c == "-" for c in name.strip())
        ):
            headers[name.strip()] = value.strip().replace("\r", "")
    for client in web_fixture().clients:
        try:
            response = client.get(target, headers=headers)
        except UnicodeEncodeError:
            return  # httpx cannot send such a URL or header at all: never reaches the app
        if response.status_code >= 500:
            raise Crash(f"GET {target!r} {headers!r}: {response.status_code} {response.text[:300]}")


# --------------------------------------------------------------------------- the event log


class LogFixture:
    """A SQLite store for logs; each case writes a run of its own."""

    def __init__(self) -> None:
        self.url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='maos-fuzz-log-')) / 'maos.db'}"
        self.runs = 0


@functools.cache
def log_fixture() -> LogFixture:
    return LogFixture()


def log(data: bytes) -> None:
    """Whatever a log holds, its readers read it: the replay and summary of ``maos status``,
    the metrics, the dashboard's snapshot and a task's transcript. An entry that does not
    decode or apply is rejected by the reducer; nothing raises."""
    fixture = log_fixture()
    fixture.runs += 1
    asyncio.run(_read_log(fixture.url, f"fuzz-log-{fixture.runs}", data.split(b"\n")))


async def _read_log(url: str, run_id: str, records: list[bytes]) -> None:
    from maos.eventlog import EventLog
    from maos.events import RunStarted, apply
    from maos.metrics import MetricsObserver
    from maos.model import AgentSpec, Plan, RunConfig, RunState, TaskSpec
    from maos.store import keys, open_store
    from maos.summary import run_summary
    from maos.web.snapshot import run_snapshot, task_transcript

    store = await open_store(url)
    try:
        log = EventLog(store, run_id)
        plan = Plan(
            name="fuzz",
            tasks=(TaskSpec(id="a", command="true"), TaskSpec(id="b", command="true", depends_on=("a",))),
        )
        await log.append(
            RunStarted(run_id=run_id, plan=plan, config=RunConfig(workdir="."), agents=(AgentSpec(id="x"),))
        )
        for record in records:
            await store.append(keys.events(run_id), record)
        state, metrics = RunState(), MetricsObserver()
        async for event_id, event in log.iterate():
            apply(state, event, event_id)
            metrics.observe(event_id, event, state)
        run_summary(state)
        await run_snapshot(store, run_id)
        for task_id in ("a", "b"):
            await task_transcript(store, run_id, task_id)
    finally:
        await store.close()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "plan": plan,
    "door_cli": door_cli,
    "mcp": mcp,
    "stream_json": stream_json,
    "output": output,
    "script": script,
    "web": web,
    "log": log,
}
