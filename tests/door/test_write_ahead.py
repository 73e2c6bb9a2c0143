"""The door's write-ahead order (issue 11 item 6) and its out-of-range numbers, through the
real ``maos`` door commands: a refused call writes nothing, a write comes with its event, and a
huge, negative, non-finite or non-ASCII number is a usage error naming the option (exit 2)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from maos.bus import Bus
from maos.door import Door
from maos.errors import DoorError, StoreUnavailable
from maos.events import MessageSent, ResultPublished, StateWritten
from maos.state import SharedState
from maos.store import keys
from maos.store.base import AppendOp, CasOp, Store, TransactResult, WriteOp

from .conftest import MAOS, DoorRun

HUGE = "1" + "0" * 400


def maos(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAOS, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


async def test_an_unreadable_task_file_refuses_every_write_before_it_happens(door_run: DoorRun) -> None:
    env = {**door_run.env("agent-a"), "MAOS_TASK_FILE": str(door_run.workdir / "no-such-file")}
    before = len(await door_run.events())
    for args in (
        ("state", "set", "k", "1"),
        ("state", "cas", "k", "0", "1"),
        ("msg", "send", "agent-b", "hello"),
        ("broadcast", "news", "hello"),
        ("result", "publish", "done", "out.txt"),
    ):
        done = maos(*args, env=env)
        assert done.returncode == 2, (args, done.stderr)
        assert "MAOS_TASK_FILE" in done.stderr
        assert "Traceback" not in done.stderr
    assert await SharedState(door_run.store, door_run.run_id).get("k") is None
    assert await door_run.store.get(keys.task_result(door_run.run_id, "t1")) is None
    assert await Bus(door_run.store, door_run.run_id).read("agent-b") == []
    assert len(await door_run.events()) == before  # no write, no event


async def test_writes_come_with_their_events(door_run: DoorRun) -> None:
    (door_run.workdir / "task").write_text(f"t1\n{door_run.task_token('agent-a')}\n")
    env = {**door_run.env("agent-a"), "MAOS_TASK_FILE": str(door_run.workdir / "task")}
    assert maos("state", "set", "k", "1", env=env).stdout == "1\n"
    assert maos("state", "set", "k", "2", env=env).stdout == "2\n"
    assert maos("state", "cas", "k", "2", "3", env=env).stdout == "3\n"
    assert maos("state", "cas", "k", "2", "4", env=env).returncode == 1  # a conflict: no event
    assert maos("result", "publish", "done", env=env).returncode == 0
    assert maos("msg", "send", "agent-b", "hi", env=env).returncode == 0
    events = await door_run.events()
    assert [(e.key, e.version, e.task) for e in events if isinstance(e, StateWritten)] == [
        ("k", 1, "t1"),
        ("k", 2, "t1"),
        ("k", 3, "t1"),
    ]
    assert [e.task for e in events if isinstance(e, ResultPublished)] == ["t1"]
    assert [e.to for e in events if isinstance(e, MessageSent)] == ["agent-b"]


class _Recording:
    """A store that records each ``transact`` and can fail them (a store outage)."""

    def __init__(self, store: Store, *, fail: bool = False) -> None:
        self._store = store
        self.fail = fail
        self.transactions: list[Sequence[WriteOp]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def transact(self, ops: Sequence[WriteOp]) -> TransactResult:
        self.transactions.append(ops)
        if self.fail:
            raise StoreUnavailable("the store went away")
        return await self._store.transact(ops)


@pytest.mark.parametrize("call", ["set", "cas", "publish"])
async def test_a_state_write_and_its_event_are_one_transaction(door_run: DoorRun, call: str) -> None:
    recording = _Recording(door_run.store)
    door = Door(recording, door_run.run_id, "agent-a", "t1")  # type: ignore[arg-type]
    if call == "set":
        await door.state_set("k", {"a": 1})
    elif call == "cas":
        await door.state_cas("k", 0, {"a": 1})
    else:
        await door.publish_result("done", ["out.txt"])
    [ops] = recording.transactions
    assert [type(op) for op in ops] == [CasOp, AppendOp]
    assert isinstance(ops[1], AppendOp)
    assert ops[1].stream == keys.events(door_run.run_id)

    before = len(await door_run.events())
    recording.fail = True
    with pytest.raises(StoreUnavailable):
        await door.state_set("other", 1)
    assert await door.state_get("other") is None
    assert len(await door_run.events()) == before


async def test_concurrent_sets_each_log_their_own_version(door_run: DoorRun) -> None:
    import asyncio

    doors = [Door(door_run.store, door_run.run_id, agent, "t1") for agent in ("agent-a", "agent-b")]
    versions = await asyncio.gather(*(doors[n % 2].state_set("hot", n) for n in range(20)))
    assert sorted(versions) == list(range(1, 21))
    logged = [e.version for e in await door_run.events() if isinstance(e, StateWritten) and e.key == "hot"]
    assert sorted(logged) == list(range(1, 21))


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("msg", "ack", f"inbox/normal/{HUGE}"), "receipt"),
        (("msg", "ack", "inbox/normal/99999999999999999999"), "receipt"),
        (("msg", "ack", "inbox/normal/1-2"), "receipt"),
        (("msg", "ack", "inbox/normal/١٢"), "receipt"),
        (("state", "cas", "k", HUGE, "1"), "EXPECTED_VERSION"),
        (("state", "cas", "--", "k", "-1", "1"), "EXPECTED_VERSION"),
        (("state", "cas", "k", "1_0", "1"), "EXPECTED_VERSION"),
        (("msg", "read", "--count", HUGE), "--count"),
        (("msg", "read", "--count", "١٠"), "--count"),
        (("msg", "read", "--count", "0"), "--count"),
        (("msg", "read", "--wait-s", "nan"), "--wait-s"),
        (("msg", "read", "--wait-s", "inf"), "--wait-s"),
        (("msg", "read", "--wait-s", "1e400"), "--wait-s"),
        (("msg", "read", "--wait-s", "-1"), "--wait-s"),
        (("task", "add", '{"id": "x", "command": "true"}', "--wait-s", "nan"), "--wait-s"),
    ],
)
async def test_out_of_range_numbers_are_usage_errors(
    door_run: DoorRun, args: tuple[str, ...], named: str
) -> None:
    done = maos(*args, env={**door_run.env("agent-a"), "COLUMNS": "400"})  # one line per error
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert "Traceback" not in done.stderr
    assert "OverflowError" not in done.stderr


async def test_a_surrogate_or_deep_value_is_refused_not_a_traceback(door_run: DoorRun) -> None:
    env = door_run.env("agent-a")
    deep = maos("state", "set", "k", "[" * 100_000, env=env)
    assert deep.returncode == 2
    assert "nested too deeply" in deep.stderr
    nested = maos("state", "set", "k", "-", env=env, stdin="[" * 5000 + "]" * 5000)
    assert nested.returncode == 2
    assert "nested too deeply" in nested.stderr
    bad_stdin = subprocess.run(
        [*MAOS, "state", "set", "k", "-"],
        env=env,
        input=b"\xff\xfe",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert bad_stdin.returncode == 2
    assert b"not UTF-8" in bad_stdin.stderr
    surrogate = subprocess.run(
        [*MAOS, "state", "set", "k", b"\xff"], env=env, capture_output=True, timeout=60, check=False
    )
    assert surrogate.returncode == 2
    assert b"not JSON" in surrogate.stderr


async def test_door_methods_check_numbers_and_receipts(door_run: DoorRun) -> None:
    door = Door(door_run.store, door_run.run_id, "agent-a", "t1")
    for kwargs in ({"count": 10**400}, {"count": 0}, {"count": True}, {"wait_s": float("nan")}):
        with pytest.raises(DoorError):
            await door.read_messages(**kwargs)
    with pytest.raises(DoorError, match="expected_version"):
        await door.state_cas("k", 10**400, 1)
    with pytest.raises(DoorError):
        await door.ack_messages("inbox/normal/1")
    with pytest.raises(DoorError):
        await door.add_task({"id": "x"}, wait_s=float("inf"))
    from maos.errors import BusError

    with pytest.raises(BusError, match="receipt"):
        await door.ack_messages(["inbox/normal/1", f"task/inbox/normal/{HUGE}"])
    # nothing was acknowledged or logged before the bad receipt was found
    assert not [e for e in await door_run.events() if type(e).__name__ == "MessagesAcked"]


async def test_a_published_result_with_a_huge_timestamp_is_a_data_error(door_run: DoorRun) -> None:
    from maos.errors import StoreDataError
    from maos.results import read_result

    record = {"task_id": "t1", "agent_id": "a", "summary": "", "files": [], "published_at": 10**400}
    await door_run.store.set(keys.task_result(door_run.run_id, "t1"), json.dumps(record).encode())
    with pytest.raises(StoreDataError):
        await read_result(door_run.store, door_run.run_id, "t1")


def test_cli_arguments_keep_the_door_light(tmp_path: Path) -> None:
    # maos.numbers is the only new import of the door commands, and it imports nothing heavy
    done = subprocess.run(
        [
            *MAOS[:1],
            "-c",
            "import sys, maos.numbers; print(sorted(m for m in sys.modules if m.startswith('maos')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "['maos', 'maos.numbers']"


@pytest.mark.parametrize(
    ("tool", "args", "named"),
    [
        ("state_cas", {"key": "k", "expected_version": 10**400, "value": 1}, "expected_version"),
        ("state_cas", {"key": "k", "expected_version": -1, "value": 1}, "expected_version"),
        ("read_messages", {"max_count": 10**30}, "count"),
        ("read_messages", {"max_count": 0}, "count"),
        ("read_messages", {"wait_s": float("nan")}, "wait_s"),
        ("read_messages", {"wait_s": float("inf")}, "wait_s"),
        ("read_messages", {"wait_s": "1_000"}, "wait_s"),  # found by fuzzing: a 60 s wait
        ("state_cas", {"key": "k", "expected_version": "1_0", "value": 1}, "expected_version"),
        ("ack_messages", {"receipts": ["inbox/normal/" + HUGE]}, "receipt"),
        ("state_set", {"key": "k", "value": "\ud800"}, "not JSON"),
        ("send_message", {"to": "agent-b", "content": "\ud800"}, "content"),
        ("publish_result", {"summary": "\ud800"}, "summary"),
    ],
)
async def test_mcp_tools_refuse_bad_numbers_with_tool_errors(
    door_run: DoorRun, tool: str, args: dict[str, object], named: str
) -> None:
    from mcp.server.mcpserver.exceptions import ToolError

    from maos.mcp_server import build_server

    server = build_server(Door(door_run.store, door_run.run_id, "agent-a", "t1"))
    with pytest.raises(ToolError, match=named) as caught:
        await server.call_tool(tool, args)
    assert type(caught.value).__name__ == "ToolError"  # not UnexpectedToolError: no crash
