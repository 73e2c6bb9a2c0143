"""Agent tokens, identities and the ``Door`` itself (in process, on SQLite and Redis)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from maos.agents.task_env import agent_store_url
from maos.door import UNVERIFIED_REFUSALS_LOGGED, Door, open_door
from maos.errors import BusError, DoorError, PermissionDenied, StateError, StoreDataError
from maos.eventlog import EventLog
from maos.events import (
    DoorRefused,
    MessagesAcked,
    MessageSent,
    MessagesRead,
    ResultPublished,
    RunStarted,
    StateWritten,
    TaskAssigned,
    TaskFailed,
    TaskReady,
    TaskStarted,
    TopicSubscribed,
)
from maos.identity import AgentIdentity
from maos.mcp_server import allowed_tools_rule, mcp_config_for
from maos.model import AgentSpec, Plan, RunConfig, TaskSpec
from maos.results import read_result
from maos.security import (
    TOKEN_PREFIX,
    ensure_run_secret,
    issue_task_token,
    issue_token,
    load_run_secret,
    verify_token,
)
from maos.store import Store, keys

from .conftest import DoorRun, events_of, start_run

# --------------------------------------------------------------------------- tokens


def test_a_token_is_bound_to_its_run_and_agent() -> None:
    secret = bytes(range(32))
    token = issue_token(secret, "run-1", "agent-a")
    assert token.startswith(TOKEN_PREFIX)
    assert len(token) == 49
    assert token.isascii()
    assert issue_token(secret, "run-1", "agent-a") == token  # deterministic: no registry needed
    assert verify_token(secret, "run-1", "agent-a", token)
    assert not verify_token(secret, "run-1", "agent-b", token)
    assert not verify_token(secret, "run-2", "agent-a", token)
    assert not verify_token(bytes(32), "run-1", "agent-a", token)
    assert not verify_token(secret, "run-1", "agent-a", token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not verify_token(secret, "run-1", "agent-a", "")
    assert not verify_token(secret, "run-1", "agent-a", "tökén")  # non-ASCII: no crash
    # the separator cannot be forged by moving characters between run and agent
    assert issue_token(secret, "run-1a", "gent") != issue_token(secret, "run-1", "agent")


async def test_run_secret_is_created_once_even_under_a_race(store: Store, run_id: str) -> None:
    assert await load_run_secret(store, run_id) is None
    secrets = await asyncio.gather(*(ensure_run_secret(store, run_id) for _ in range(10)))
    assert len(set(secrets)) == 1
    assert len(secrets[0]) == 32
    assert await ensure_run_secret(store, run_id) == secrets[0]
    assert await load_run_secret(store, run_id) == secrets[0]
    assert await ensure_run_secret(store, run_id + "-2") != secrets[0]


async def test_a_damaged_secret_is_reported(store: Store, run_id: str) -> None:
    await store.set(keys.run_secret(run_id), b"short")
    with pytest.raises(StoreDataError, match="is 5 bytes, not 32"):
        await load_run_secret(store, run_id)


# --------------------------------------------------------------------------- identity


def test_identity_from_env_names_the_missing_variable() -> None:
    env = {
        "MAOS_RUN_ID": "r1",
        "MAOS_AGENT_ID": "agent-a",
        "MAOS_TASK_ID": "t1",
        "MAOS_AGENT_TOKEN": "maos1.x",
        "MAOS_STORE": "sqlite:////tmp/x.db",
        "MAOS_TASK_TOKEN": "maost1.x",
    }
    identity = AgentIdentity.from_env(env)
    assert identity.env() == env
    assert "maos1.x" not in repr(identity)
    for name in env:
        with pytest.raises(DoorError, match=f"^{name} is not set"):
            AgentIdentity.from_env({k: v for k, v in env.items() if k != name})
        with pytest.raises(DoorError, match=f"^{name} is not set"):
            AgentIdentity.from_env({**env, name: "  "})
    with pytest.raises(DoorError, match=r"MAOS_AGENT_ID='a/b' is not valid: expected 1-128 characters"):
        AgentIdentity.from_env({**env, "MAOS_AGENT_ID": "a/b"})


def test_agent_store_url_makes_sqlite_paths_absolute(tmp_path: Path) -> None:
    assert agent_store_url("sqlite:///.maos/maos.db", tmp_path) == f"sqlite:///{tmp_path}/.maos/maos.db"
    assert agent_store_url(f"sqlite:///{tmp_path}/x.db") == f"sqlite:///{tmp_path}/x.db"
    assert agent_store_url("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379"


def test_mcp_config_for_an_agent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "MAOS_RUN_ID": "r1",
        "MAOS_AGENT_ID": "agent-a",
        "MAOS_TASK_ID": "t1",
        "MAOS_AGENT_TOKEN": "maos1.x",
        "MAOS_STORE": "sqlite:///.maos/maos.db",
        "MAOS_TASK": "the prompt is not passed on",
    }
    config = mcp_config_for(env, python="/usr/bin/python3")
    assert config == {
        "mcpServers": {
            "maos": {
                "command": "/usr/bin/python3",
                "args": ["-m", "maos", "mcp"],
                "env": {
                    "MAOS_RUN_ID": "r1",
                    "MAOS_AGENT_ID": "agent-a",
                    "MAOS_TASK_ID": "t1",
                    "MAOS_AGENT_TOKEN": "maos1.x",
                    "MAOS_STORE": f"sqlite:///{tmp_path}/.maos/maos.db",
                },
                "alwaysLoad": True,  # never deferred behind ToolSearch (ADR 0020)
            }
        }
    }
    assert allowed_tools_rule() == "mcp__maos"
    theirs = {"mcpServers": {"docs": {"command": "docs-server"}, "maos": {"command": "impostor"}}}
    merged = mcp_config_for(env, extra=theirs, python="/usr/bin/python3")
    assert merged["mcpServers"] == {"docs": {"command": "docs-server"}, **config["mcpServers"]}
    with pytest.raises(DoorError, match="MAOS_AGENT_TOKEN not in the agent's env"):
        mcp_config_for({k: v for k, v in env.items() if k != "MAOS_AGENT_TOKEN"})


# --------------------------------------------------------------------------- open_door


async def test_refusals_and_added_tasks_count_against_the_budget_which_each_attempt_has_anew(
    store: Store, run_id: str, tmp_path: Path
) -> None:
    """Every way a call can add to the log is bounded: refused reads (refusals are entries
    too) spend the attempt's budget and are silenced with it, added tasks count with their
    size (and one over 1 MiB is refused outright). A new attempt of the task starts with a
    whole budget; refusals of the attempt that is over count against none."""
    plan = Plan(name="attempts", tasks=(TaskSpec(id="t1", command="true"),))
    config = RunConfig(agents=2, workdir=str(tmp_path), door_calls_per_attempt=5)
    log = EventLog(store, run_id)
    await log.append(RunStarted(run_id=run_id, plan=plan, config=config, agents=(AgentSpec(id="a"),)))
    await log.append(TaskReady(task_id="t1"))
    await log.append(TaskAssigned(task_id="t1", agent_id="a", attempt=1))
    secret = await ensure_run_secret(store, run_id)

    def door_of(attempt: int) -> Door:
        token = issue_task_token(secret, run_id, "a", "t1", attempt, {"state_read": ["t1/*"]})
        return Door(store, run_id, "a", "t1", secret=secret, task_token=token, via="test")

    first = door_of(1)
    for n in range(30):  # reads outside its grants: refused, each an entry until the budget
        with pytest.raises(PermissionDenied):
            await first.state_get(f"secret/{n}")
    refused = [e for e in await events_of(store, run_id) if isinstance(e, DoorRefused)]
    assert len(refused) == 6  # five refusals spend the budget of 5, one says so
    assert refused[-1].reason.startswith("the door budget is spent for task t1: 5 door calls")
    assert await first.read_result("t1") is None  # reading logs nothing: no budget needed

    await log.append(TaskFailed(task_id="t1", agent_id="a", attempt=1, reason="it crashed"))
    await log.append(TaskReady(task_id="t1"))
    await log.append(TaskAssigned(task_id="t1", agent_id="a", attempt=2))
    for n in range(5):  # the process attempt 1 left behind: refused, counted against none
        with pytest.raises(PermissionDenied, match="attempt 1 of task t1 is over"):
            await first.state_set(f"t1/late{n}", n)
        with pytest.raises(PermissionDenied, match="attempt 1 of task t1 is over"):
            await first.subscribe(f"news{n}")
        with pytest.raises(PermissionDenied, match="attempt 1 of task t1 is over"):
            await first.wait_task("t1", wait_s=0.1)
        with pytest.raises(PermissionDenied):
            await first.state_get(f"secret/{n}")  # outside its grants, and stale
    second = door_of(2)
    with pytest.raises(DoorError, match="at most 1,048,576"):
        await second.add_task({"id": "big", "prompt": "x" * (1 << 20)})
    await second.state_set("t1/a", 1)  # a whole budget again
    answer = await second.add_task({"id": "more", "prompt": "go"}, wait_s=0.1)  # nobody answers here
    assert not answer.added
    for n in range(3):
        await second.state_set(f"t1/b{n}", n)
    with pytest.raises(PermissionDenied, match="5 door calls"):  # 1 + the added task + 3 = 5
        await second.state_set("t1/c", 1)
    events = await events_of(store, run_id)
    stale = [e for e in events if isinstance(e, DoorRefused) and not e.verified]
    assert len(stale) == UNVERIFIED_REFUSALS_LOGGED  # of the 20 refusals of attempt 1's process
    assert any("is over" in e.reason for e in stale)


async def test_a_task_that_spent_its_door_budget_is_refused_once_in_the_log(
    store: Store, run_id: str, tmp_path: Path
) -> None:
    """Past ``door_bytes_per_attempt`` (here 1,000 bytes of state values and messages) every call
    of the task that could add to the log is refused; the first refusal is logged, later ones
    (also those for other reasons) are not; reads go on. Another task has its own budget."""
    plan = Plan(name="budget", tasks=(TaskSpec(id="t1", command="true"), TaskSpec(id="t2", command="true")))
    config = RunConfig(agents=2, workdir=str(tmp_path), door_calls_per_attempt=8, door_bytes_per_attempt=1000)
    await EventLog(store, run_id).append(
        RunStarted(run_id=run_id, plan=plan, config=config, agents=(AgentSpec(id="a"), AgentSpec(id="b")))
    )
    secret = await ensure_run_secret(store, run_id)

    async def door_of(agent: str, task: str, **grants: object) -> Door:
        env = {
            "MAOS_RUN_ID": run_id,
            "MAOS_AGENT_ID": agent,
            "MAOS_TASK_ID": task,
            "MAOS_AGENT_TOKEN": issue_token(secret, run_id, agent),
            "MAOS_TASK_TOKEN": issue_task_token(secret, run_id, agent, task, 1, grants),
            "MAOS_STORE": store.url,
        }
        return await open_door(store, AgentIdentity.from_env(env), via="test")

    door = await door_of("a", "t1", state_write=["t1/*"])
    await door.state_set("t1/one", "x" * 600)
    await door.send_message("b", "y" * 300)  # 600 + ~400 bytes: at the budget now
    with pytest.raises(PermissionDenied, match=r"the door budget is spent for task t1: 1,0[0-9]{2} bytes"):
        await door.state_set("t1/two", 1)
    with pytest.raises(PermissionDenied, match="the door budget is spent"):
        await door.broadcast("news", 1)
    with pytest.raises(PermissionDenied, match="the door budget is spent"):
        await door.state_set("elsewhere", 1)  # outside its grants too: refused, not logged again
    assert (await door.state_get("t1/one")) is not None  # reads need no budget
    other = await door_of("b", "t2")
    await other.state_set("t2", "z" * 600)

    events = await events_of(store, run_id)
    refused = [e for e in events if isinstance(e, DoorRefused)]
    assert [(e.task, e.action, e.resource, e.verified) for e in refused] == [
        ("t1", "state.write", "t1/two", True)
    ]
    assert [e.key for e in events if isinstance(e, StateWritten)] == ["t1/one", "t2"]

    # A caller that claims task t2 with t1's token is refused at every call; that spends
    # nothing of t2's budget (or an agent could silence another), and one door logs at most
    # ten such refusals.
    impostor = Door(
        store,
        run_id,
        "a",
        "t2",
        secret=secret,
        task_token=issue_task_token(secret, run_id, "a", "t1", 1, {}),
        via="test",
    )
    for n in range(15):
        with pytest.raises(PermissionDenied, match="is bound to task t1, not to task t2"):
            await impostor.state_set(f"t2/{n}", n)
    unproven = [e for e in await events_of(store, run_id) if isinstance(e, DoorRefused) and not e.verified]
    assert len(unproven) == UNVERIFIED_REFUSALS_LOGGED == 10
    assert {e.task for e in unproven} == {"t2"}
    await other.state_set("t2/after", "w" * 300)  # t2 made 1 call of its 8: the 10 refusals are not its


async def test_a_long_lived_door_reads_the_log_once_and_still_sees_its_attempt_end(
    door_run: DoorRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``maos mcp`` serves all of an agent's calls through one door. Its check that the
    token's attempt is not over reads only what the log gained since the previous call: a
    flood of calls used to read the whole log again at each (3,000 messages took 73 s,
    quadratic). It still sees the attempt end."""
    log = EventLog(door_run.store, door_run.run_id)
    await log.append(TaskReady(task_id="t1"))
    await log.append(TaskAssigned(task_id="t1", agent_id="agent-a", attempt=1))
    await log.append(TaskStarted(task_id="t1", agent_id="agent-a", attempt=1, pid=1))
    door = await open_door(door_run.store, AgentIdentity.from_env(door_run.env("agent-a")), via="test")
    read_entries = 0
    real_read = door_run.store.read

    async def counting_read(stream: str, *args: object, **kwargs: object) -> object:
        nonlocal read_entries
        entries = await real_read(stream, *args, **kwargs)  # type: ignore[arg-type]
        if stream == keys.events(door_run.run_id):
            read_entries += len(entries)
        return entries

    monkeypatch.setattr(door_run.store, "read", counting_read)
    calls = 200
    for n in range(calls):
        await door.state_set(f"k{n % 7}", n)
        await door.send_message("agent-b", {"n": n})
    monkeypatch.undo()
    logged = len(await door_run.events())
    assert logged > 2 * calls
    assert read_entries <= logged  # each entry once (quadratic: ~80,000)

    await log.append(TaskFailed(task_id="t1", agent_id="agent-a", attempt=1, reason="it crashed"))
    await log.append(TaskReady(task_id="t1"))
    await log.append(TaskAssigned(task_id="t1", agent_id="agent-b", attempt=2))
    with pytest.raises(PermissionDenied, match="attempt 1 of task t1 is over: attempt 2 runs it now"):
        await door.state_set("late", 1)
    with pytest.raises(PermissionDenied, match="attempt 1 of task t1 is over"):
        await door.send_message("agent-b", "late")


async def test_open_door_checks_the_token_and_logs_a_refusal(door_run: DoorRun) -> None:
    identity = AgentIdentity.from_env(door_run.env("agent-a"))
    door = await open_door(door_run.store, identity, via="test")
    assert (door.run_id, door.agent_id, door.task_id) == (door_run.run_id, "agent-a", "t1")
    assert not [e for e in await door_run.events() if isinstance(e, DoorRefused)]

    forged = AgentIdentity.from_env(door_run.env("agent-a", token=door_run.token("agent-b")))
    with pytest.raises(PermissionDenied, match="token does not belong to agent agent-a") as caught:
        await open_door(door_run.store, forged, via="test")
    assert "it is the token of agent agent-b" in str(caught.value)
    garbage = AgentIdentity.from_env(door_run.env("agent-b", token="maos1.nothing"))
    with pytest.raises(PermissionDenied, match="token does not belong to agent agent-b in run"):
        await open_door(door_run.store, garbage, via="test")
    refused = [e for e in await door_run.events() if isinstance(e, DoorRefused)]
    assert [(e.claimed_agent, e.token_owner, e.via, e.task) for e in refused] == [
        ("agent-a", "agent-b", "test", "t1"),
        ("agent-b", None, "test", "t1"),
    ]
    assert refused[0].reason == "token does not belong to agent agent-a (it is the token of agent agent-b)"


async def test_open_door_on_a_run_without_secret_is_refused(store: Store, run_id: str) -> None:
    identity = AgentIdentity(run_id, "agent-a", "t1", "maos1.x", store.url)
    with pytest.raises(PermissionDenied, match=f"run '{run_id}' has no agent secret in store"):
        await open_door(store, identity)
    assert await events_of(store, run_id) == []  # no log written for a run that is not there


# --------------------------------------------------------------------------- the door


async def test_state_through_the_door_is_logged_without_large_values(store: Store, run_id: str) -> None:
    door = Door(store, run_id, "agent-a", "t1")
    assert await door.state_get("plan/step") is None
    assert await door.state_set("plan/step", {"n": 1}) == 1
    assert (await door.state_cas("plan/step", 1, {"n": 2})).ok
    assert not (await door.state_cas("plan/step", 1, {"n": 3})).ok  # conflict: not a write
    await door.state_set("big", "x" * 5000)
    entries = await door.state_list("plan/")
    assert [(e.key, e.value, e.version) for e in entries] == [("plan/step", {"n": 2}, 2)]
    written = [e for e in await events_of(store, run_id) if isinstance(e, StateWritten)]
    assert [(e.agent_id, e.task, e.key, e.version, e.size_bytes) for e in written] == [
        ("agent-a", "t1", "plan/step", 1, 7),
        ("agent-a", "t1", "plan/step", 2, 7),
        ("agent-a", "t1", "big", 1, 5002),
    ]
    if door.state.sealed:  # values encrypted at rest (Redis): no preview in the clear log
        assert [e.preview for e in written] == ["", "", ""]
    else:
        assert written[0].preview == '{"n":1}'
        assert len(written[2].preview) == 201
        assert written[2].preview.endswith("…")
    with pytest.raises(StateError, match="not valid"):
        await door.state_set("bad key", 1)


async def test_messages_through_the_door(store: Store, run_id: str) -> None:
    a = Door(store, run_id, "agent-a", "t1")
    b = Door(store, run_id, "agent-b", "t2")
    assert await b.subscribe("news")
    assert not await b.subscribe("news")
    sent = await a.send_message("agent-b", {"secret": "not in the log"}, priority="high")
    cast = await a.broadcast("news", "extra")
    got = await b.read_messages(count=10, wait_s=5)
    assert [(d.message.id, d.message.sender, d.message.content) for d in got] == [
        (sent.id, "agent-a", {"secret": "not in the log"}),
        (cast.id, "agent-a", "extra"),
    ]
    assert await b.read_messages() == []  # acked at once, and an empty read is not logged
    unacked = await a.send_message("agent-b", "later", type="request")
    [pending] = await b.read_messages(ack=False, wait_s=5)
    assert pending.message.id == unacked.id
    assert await b.ack_messages([pending.receipt]) == 1
    assert await b.ack_messages([pending.receipt]) == 0
    assert await b.ack_messages([]) == 0
    with pytest.raises(BusError, match="priority"):
        await a.send_message("agent-b", "x", priority="urgent")
    with pytest.raises(BusError, match="not a message receipt"):
        await b.ack_messages(["nonsense"])

    log = await events_of(store, run_id)
    assert [(e.agent_id, e.topic) for e in log if isinstance(e, TopicSubscribed)] == [("agent-b", "news")]
    sent_events = [e for e in log if isinstance(e, MessageSent)]
    assert [(e.message_id, e.to, e.topic, e.priority, e.seq) for e in sent_events] == [
        (sent.id, "agent-b", None, "high", 1),
        (cast.id, None, "news", "normal", 1),
        (unacked.id, "agent-b", None, "normal", 1),
    ]
    reads = [e for e in log if isinstance(e, MessagesRead)]
    assert [(e.agent_id, e.count, e.message_ids, e.acked) for e in reads] == [
        ("agent-b", 2, (sent.id, cast.id), True),
        ("agent-b", 1, (unacked.id,), False),
    ]
    acks = [e for e in log if isinstance(e, MessagesAcked)]
    assert [(e.count, e.acked) for e in acks] == [(1, 1), (1, 0)]
    assert "not in the log" not in "".join(e.model_dump_json() for e in log)


async def test_publish_result_is_stored_for_children_and_logged(store: Store, run_id: str) -> None:
    door = Door(store, run_id, "agent-a", "build")
    published = await door.publish_result("built 3 modules", ["src/a.py", "src/b.py"])
    assert published.task_id == "build"
    child = Door(store, run_id, "agent-b", "test")
    found = await child.read_result("build")
    assert found == published
    assert await read_result(store, run_id, "build") == published
    assert await child.read_result("nothing") is None
    await door.publish_result("rebuilt", [])
    again = await read_result(store, run_id, "build")
    assert again is not None
    assert (again.summary, again.files) == ("rebuilt", ())
    log = [e for e in await events_of(store, run_id) if isinstance(e, ResultPublished)]
    assert [(e.agent_id, e.task, e.summary, e.files) for e in log] == [
        ("agent-a", "build", "built 3 modules", ("src/a.py", "src/b.py")),
        ("agent-a", "build", "rebuilt", ()),
    ]
    with pytest.raises(DoorError, match="summary is 70000 characters, above the limit of 65536"):
        await door.publish_result("x" * 70000)
    with pytest.raises(DoorError, match=r"files\[1\] must be a path"):
        await door.publish_result("s", ["ok", ""])
    with pytest.raises(DoorError, match="needs the agent's task"):
        await Door(store, run_id, "agent-c").publish_result("s")


async def test_door_events_do_not_disturb_the_run_state(tmp_path: Path, store: Store, run_id: str) -> None:
    # Door events carry the claimed task as ``task``: a forged task id must not reach the
    # reducer or the orchestrator's view as a task transition.
    from maos.eventlog import EventLog

    await start_run(store, run_id, ("agent-a",), tmp_path)
    door = Door(store, run_id, "agent-a", "no-such-task")
    await door.state_set("k", 1)
    await door.publish_result("s")
    state = await EventLog(store, run_id).replay()
    assert list(state.tasks) == ["t1"]
    assert state.event_count == 3
