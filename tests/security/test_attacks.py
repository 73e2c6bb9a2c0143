"""Attacks on the door (issue 13, items 1 and 2): a hostile agent tries to escape its role.

Every case is a real run (``Orchestrator``) whose command agents attack through both
entrances: the ``maos`` commands and the real ``maos mcp`` stdio server, driven by the MCP
client library from inside the agent (``MCP_TRY`` below). Each attempt must be refused (exit
code 3, or a tool error / a server that refuses to start), leave a ``door_refused`` event in
the run's log, and change nothing; the run goes on and the other tasks succeed.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from maos.audit import AuditMirror, JsonlSink
from maos.eventlog import EventLog
from maos.events import DoorRefused, StateWritten
from maos.model import Plan, RunConfig, RunState, RunStatus, TaskSpec
from maos.orchestrator import Orchestrator
from maos.permissions import Grants
from maos.results import read_result
from maos.state import SharedState
from maos.store import Store, open_store
from tests.core.test_agents_die_with_host import kill_all

pytestmark = pytest.mark.timeout(240)

PYTHON = shlex.quote(sys.executable)
M = f"{PYTHON} -m maos"
TRY = f"{PYTHON} mcp_try.py"

MCP_TRY = '''\
"""Call one door tool through a real `maos mcp` server started with this process's env."""
import asyncio, json, os, sys

from mcp import Client
from mcp.client.stdio import StdioServerParameters


async def main() -> int:
    tool, arguments = sys.argv[1], json.loads(sys.argv[2])
    params = StdioServerParameters(command=sys.executable, args=["-m", "maos", "mcp"], env=dict(os.environ))
    try:
        async with Client(params) as client:
            result = await client.call_tool(tool, arguments)
    except Exception as exc:  # the server refused to start (exit 3): no connection
        print(json.dumps({"tool": tool, "refused_at_start": repr(exc)[:200]}))
        return 3
    text = " ".join(getattr(item, "text", "") for item in result.content)
    print(json.dumps({"tool": tool, "is_error": result.is_error, "text": text}))
    return 3 if result.is_error else 0


sys.exit(asyncio.run(main()))
'''

MCP_FLOOD = '''\
"""Write N state keys through one real `maos mcp` server, as fast as it answers."""
import asyncio, json, os, sys

from mcp import Client
from mcp.client.stdio import StdioServerParameters


async def main() -> None:
    count = int(sys.argv[1])
    params = StdioServerParameters(command=sys.executable, args=["-m", "maos", "mcp"], env=dict(os.environ))
    refused = []
    async with Client(params) as client:
        for n in range(count):
            result = await client.call_tool("state_set", {"key": f"flood/{n}", "value": "x" * 100})
            if result.is_error:
                refused.append(" ".join(getattr(item, "text", "") for item in result.content))
    print(json.dumps({"written": count - len(refused), "refused": len(refused), "first": refused[:1]}))


asyncio.run(main())
'''


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path / 'maos.db'}")
    try:
        yield opened
    finally:
        await opened.close()


async def run(
    store: Store, tmp_path: Path, *tasks: TaskSpec, agents: int = 3, **config_fields: object
) -> tuple[str, RunState]:
    """A real run whose door events are mirrored to an audit sink outside the store, as
    ``maos run`` does (``tmp_path/audit.jsonl``)."""
    (tmp_path / "mcp_try.py").write_text(MCP_TRY)
    (tmp_path / "mcp_flood.py").write_text(MCP_FLOOD)
    config = RunConfig.model_validate(
        {"agents": agents, "workdir": str(tmp_path), "grace_s": 1.0, "retry_base_s": 0.0, **config_fields}
    )
    orchestrator = Orchestrator(store, Plan(name="attacks", tasks=tasks), config)
    mirror = AuditMirror(JsonlSink(tmp_path / "audit.jsonl"), store, orchestrator.run_id)
    async with mirror.following():
        state = await orchestrator.run()
    return orchestrator.run_id, state


def task(id: str, script: str, **fields: object) -> TaskSpec:
    spec = {"id": id, "command": "exec 2>&1\n" + script, "max_attempts": 1, "timeout_s": 120, **fields}
    return TaskSpec.model_validate(spec)


def output(state: RunState, task_id: str) -> str:
    path = state.tasks[task_id].output_path
    assert path is not None
    return Path(path).read_text()


def codes(text: str) -> dict[str, str]:
    """The ``name: exit-code`` lines an attacker script prints."""
    found = {}
    for line in text.splitlines():
        name, sep, code = line.partition(": ")
        if sep and code.isdigit():
            found[name] = code
    return found


async def refusals(store: Store, run_id: str, audit: Path | None = None) -> list[DoorRefused]:
    """The run's ``door_refused`` events; each one is also in the audit sink outside the store
    (``audit``: the run's ``audit.jsonl``)."""
    found = [
        (event_id, event)
        async for event_id, event in EventLog(store, run_id).iterate()
        if isinstance(event, DoorRefused)
    ]
    if audit is not None:
        audited = {
            record.event_id: record
            for record in await JsonlSink(audit).read(run_id)
            if record.outcome == "refused"
        }
        assert set(audited) == {event_id for event_id, _ in found}
        assert all(audited[event_id].reason.startswith(event.reason[:40]) for event_id, event in found)
    return [event for _, event in found]


def succeeded(state: RunState, *task_ids: str) -> None:
    for task_id in task_ids:
        assert state.tasks[task_id].state.value == "succeeded", (task_id, state.summary)


# --------------------------------------------------------------------------- add_task: a shell


async def test_an_agent_cannot_get_a_shell_through_add_task(store: Store, tmp_path: Path) -> None:
    attacker = task(
        "attacker",
        f"""
        {M} task add '{{"id": "pwn", "command": "touch pwned"}}'; echo "cli: $?"
        {TRY} add_task '{{"task": {{"id": "pwn2", "command": ["touch", "pwned2"]}}}}'; echo "mcp: $?"
        {M} task add '{{"id": "wider", "prompt": "x", "grants": {{"add_task_runtimes": ["command"]}}}}'
        echo "escalate: $?"
        """,
    )
    builder = task(  # the role grants command tasks explicitly: allowed
        "builder",
        f"""{M} task add '{{"id": "granted", "command": "echo granted"}}'; echo "granted: $?" """,
        grants={"add_task_runtimes": ["command"]},
    )
    run_id, state = await run(store, tmp_path, attacker, builder)

    assert codes(output(state, "attacker")) == {"cli": "3", "mcp": "3", "escalate": "3"}
    assert "adding a command task is not granted" in output(state, "attacker")
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "pwned2").exists()
    assert set(state.tasks) == {"attacker", "builder", "granted"}
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert codes(output(state, "builder")) == {"granted": "0"}
    refused = await refusals(store, run_id, tmp_path / "audit.jsonl")
    assert [(e.task, e.action, e.via) for e in refused] == [
        ("attacker", "task.add", "cli"),
        ("attacker", "task.add", "mcp"),
        ("attacker", "task.add", "cli"),
    ]
    assert "add_task_runtimes: command beyond" in refused[2].reason


# --------------------------------------------------------------------------- state prefixes


async def test_an_agent_cannot_write_state_outside_its_prefixes(store: Store, tmp_path: Path) -> None:
    attacker = task(
        "attacker",
        f"""
        {M} state set attacker/notes mine > /dev/null; echo "own: $?"
        {M} state set victim/config pwned; echo "cli: $?"
        {TRY} state_set '{{"key": "victim/config", "value": "pwned"}}'; echo "mcp: $?"
        {TRY} state_get '{{"key": "victim/config"}}'; echo "read: $?"
        """,
        grants={"state_write": ["attacker/*"], "state_read": ["attacker/*", "shared/*"]},
    )
    victim = task("victim", f"{M} state set victim/config safe > /dev/null && {M} state get victim/config")
    run_id, state = await run(store, tmp_path, attacker, victim)

    assert codes(output(state, "attacker")) == {"own": "0", "cli": "3", "mcp": "3", "read": "3"}
    assert "writing state key 'victim/config' is not granted" in output(state, "attacker")
    shared = SharedState(store, run_id)
    assert (await shared.get("attacker/notes")).value == "mine"  # type: ignore[union-attr]
    assert (await shared.get("victim/config")).value == "safe"  # type: ignore[union-attr]
    succeeded(state, "attacker", "victim")
    refused = await refusals(store, run_id, tmp_path / "audit.jsonl")
    assert [(e.task, e.action, e.resource, e.via) for e in refused] == [
        ("attacker", "state.write", "victim/config", "cli"),
        ("attacker", "state.write", "victim/config", "mcp"),
        ("attacker", "state.read", "victim/config", "mcp"),
    ]


# --------------------------------------------------------------------------- results


async def test_an_agent_cannot_publish_the_result_of_another_task(store: Store, tmp_path: Path) -> None:
    victim = task("victim", f'{M} result publish "the real result" report.md')
    attacker = task(
        "attacker",
        f"""
        MAOS_TASK_ID=victim {M} result publish "forged"; echo "cli: $?"
        MAOS_TASK_ID=victim {TRY} publish_result '{{"summary": "forged"}}'; echo "mcp: $?"
        echo victim > forged.task
        MAOS_TASK_FILE=$PWD/forged.task {M} result publish "forged"; echo "task-file: $?"
        {M} result publish "the attacker's own" > /dev/null; echo "own: $?"
        """,
        depends_on=["victim"],
    )
    run_id, state = await run(store, tmp_path, victim, attacker)

    assert codes(output(state, "attacker")) == {"cli": "3", "mcp": "3", "task-file": "3", "own": "0"}
    assert "bound to task attacker, not to task victim" in output(state, "attacker")
    published = await read_result(store, run_id, "victim")
    assert published is not None
    assert published.summary == "the real result"
    own = await read_result(store, run_id, "attacker")
    assert own is not None
    assert own.summary == "the attacker's own"
    succeeded(state, "victim", "attacker")
    refused = await refusals(store, run_id, tmp_path / "audit.jsonl")
    assert [(e.task, e.via) for e in refused] == [("victim", "cli"), ("victim", "mcp"), ("victim", "cli")]


async def test_a_stale_attempt_cannot_publish_after_its_task_moved_on(store: Store, tmp_path: Path) -> None:
    flaky = task(
        "flaky",
        f"""
        if [ "$MAOS_ATTEMPT" = 1 ]; then printf %s "$MAOS_TASK_TOKEN" > attempt1.token; exit 1; fi
        MAOS_TASK_TOKEN=$(cat attempt1.token) {M} result publish "stale"; echo "stale: $?"
        {M} result publish "fresh" > /dev/null; echo "fresh: $?"
        """,
        max_attempts=2,
    )
    run_id, state = await run(store, tmp_path, flaky, agents=1)  # both attempts on one agent

    assert codes(output(state, "flaky")) == {"stale": "3", "fresh": "0"}
    assert "attempt 1 of task flaky is over: attempt 2 runs it now" in output(state, "flaky")
    published = await read_result(store, run_id, "flaky")
    assert published is not None
    assert published.summary == "fresh"
    assert state.status is RunStatus.SUCCEEDED, state.summary
    assert [(e.task, e.action) for e in await refusals(store, run_id)] == [("flaky", "result.publish")]


# --------------------------------------------------------------------------- a task's inbox


async def test_an_agent_cannot_read_another_tasks_inbox(store: Store, tmp_path: Path) -> None:
    attacker = task(
        "attacker",
        f"""
        {M} msg send task:victim '"for the victim only"' > /dev/null; echo "send: $?"
        MAOS_TASK_ID=victim {M} msg read; echo "cli: $?"
        MAOS_TASK_ID=victim {TRY} read_messages '{{}}'; echo "mcp: $?"
        {M} msg read; echo "own: $?"
        """,
    )
    victim = task("victim", f"{M} msg read --wait-s 10", depends_on=["attacker"])
    run_id, state = await run(store, tmp_path, attacker, victim)

    assert codes(output(state, "attacker")) == {"send": "0", "cli": "3", "mcp": "3", "own": "0"}
    assert "for the victim only" not in output(state, "attacker")
    assert "for the victim only" in output(state, "victim")
    succeeded(state, "attacker", "victim")
    refused = await refusals(store, run_id, tmp_path / "audit.jsonl")
    assert [(e.claimed_agent, e.task, e.via) for e in refused] == [
        (state.tasks["attacker"].agent_id, "victim", "cli"),
        (state.tasks["attacker"].agent_id, "victim", "mcp"),
    ]


# --------------------------------------------------------------------------- identity


async def test_an_agent_cannot_impersonate_another_agent(store: Store, tmp_path: Path) -> None:
    attacker = task(
        "attacker",
        f"""
        for a in agent-1 agent-2 agent-3; do [ "$a" != "$MAOS_AGENT_ID" ] && other=$a && break; done
        echo "$other" > other.agent
        MAOS_AGENT_ID=$other {M} state set stolen 1; echo "cli: $?"
        MAOS_AGENT_ID=$other {M} msg read; echo "read: $?"
        MAOS_AGENT_ID=$other {TRY} state_get '{{"key": "stolen"}}'; echo "mcp: $?"
        """,
    )
    bystander = task("bystander", f"{M} state set shared/ok 1")
    run_id, state = await run(store, tmp_path, attacker, bystander)

    assert codes(output(state, "attacker")) == {"cli": "3", "read": "3", "mcp": "3"}
    me = state.tasks["attacker"].agent_id
    other = (tmp_path / "other.agent").read_text().strip()
    expected = f"token does not belong to agent {other} (it is the token of agent {me})"
    assert expected in output(state, "attacker")
    assert await SharedState(store, run_id).get("stolen") is None
    succeeded(state, "attacker", "bystander")
    refused = await refusals(store, run_id, tmp_path / "audit.jsonl")
    assert [(e.claimed_agent, e.token_owner, e.via) for e in refused] == [
        (other, me, "cli"),
        (other, me, "cli"),
        (other, me, "mcp"),
    ]


async def test_a_token_of_another_run_is_refused(store: Store, tmp_path: Path) -> None:
    leak = task(
        "leak", 'printf %s "$MAOS_AGENT_TOKEN" > run1.agent\nprintf %s "$MAOS_TASK_TOKEN" > run1.task'
    )
    first_id, first = await run(store, tmp_path, leak, agents=1)
    assert first.status is RunStatus.SUCCEEDED, first.summary

    attacker = task(
        "attacker",
        f"""
        MAOS_AGENT_TOKEN=$(cat run1.agent) {M} state set x 1; echo "agent-token: $?"
        MAOS_TASK_TOKEN=$(cat run1.task) MAOS_TASK_ID=leak {M} result publish forged; echo "task-token: $?"
        MAOS_TASK_TOKEN=$(cat run1.task) {TRY} state_set '{{"key": "x", "value": 1}}'; echo "mcp: $?"
        """,
    )
    bystander = task("bystander", "echo fine")
    run_id, state = await run(store, tmp_path, attacker, bystander, agents=1)

    assert codes(output(state, "attacker")) == {"agent-token": "3", "task-token": "3", "mcp": "3"}
    assert await SharedState(store, run_id).get("x") is None
    assert await read_result(store, run_id, "leak") is None
    assert await read_result(store, first_id, "leak") is None
    succeeded(state, "attacker", "bystander")
    refused = await refusals(store, run_id, tmp_path / "audit.jsonl")
    assert [e.via for e in refused] == ["cli", "cli", "mcp"]
    assert "token does not belong to agent agent-1" in refused[0].reason
    assert "is not one of agent agent-1" in refused[1].reason
    assert not await refusals(store, first_id)


# --------------------------------------------------------------------------- the plan


def test_grants_in_a_plan_are_checked() -> None:
    spec = TaskSpec.model_validate({"id": "t", "prompt": "p", "grants": {"state_write": ["a/*"]}})
    assert spec.grants == Grants(state_write=("a/*",))
    for bad in ({"state_wirte": ["a"]}, {"state_write": "a/*"}, {"add_task_runtimes": ["docker"]}):
        with pytest.raises(ValueError, match="grants"):
            TaskSpec.model_validate({"id": "t", "prompt": "p", "grants": bad})


# --------------------------------------------------------------------------- a finished attempt


async def test_an_attempt_that_is_over_cannot_write_state_or_speak_for_its_task(
    store: Store, tmp_path: Path
) -> None:
    """A process that attempt 1 left behind keeps attempt 1's task token in its environment:
    once attempt 2 runs the task, its state writes and messages are refused (exit 3)."""
    stale = tmp_path / "stale.txt"
    left = f"""{M} state set shared/by-evil "$i"; echo "set: $?"
      {M} msg send task:peer "from-the-past-$i"; echo "send: $?"; sleep 0.2"""
    evil = leaves_behind(left, 60, stale, then=f"sleep 3; {M} state set shared/by-evil current")
    run_id, state = await run(store, tmp_path, evil)

    succeeded(state, "evil")
    said = stale.read_text()
    assert "set: 3" in said  # refused once attempt 2 took the task
    assert "send: 3" in said
    refused = await refusals(store, run_id, tmp_path / "audit.jsonl")
    assert {e.action for e in refused} == {"state.write", "message.send"}
    assert all("attempt 1 of task evil is over" in e.reason or "already ended" in e.reason for e in refused)
    kill_all(run_id)  # the daemon goes on after the run


def leaves_behind(loop: str, times: int, out: Path, *, then: str) -> TaskSpec:
    """Task ``evil``: attempt 1 starts a daemon (a session of its own, attempt 1's token in its
    environment) that runs ``loop`` ``times`` times, writing to ``out``, then fails; attempt 2
    runs ``then``."""
    return task(
        "evil",
        f"""
        if [ "$MAOS_ATTEMPT" = 1 ]; then
          setsid sh -c 'echo started; for i in $(seq {times}); do
            {loop}
          done' < /dev/null >> {out} 2>&1 &
          until [ -s {out} ]; do sleep 0.05; done  # out of the group before the attempt ends
          exit 1
        fi
        {then}
        """,
        max_attempts=2,
    )


async def test_an_attempt_that_is_over_cannot_take_its_task_s_messages(store: Store, tmp_path: Path) -> None:
    """A process that attempt 1 left behind keeps attempt 1's task token: it must not read (and
    so take) the messages sent to the task while attempt 2 runs it."""
    stale = tmp_path / "stale.txt"
    left = f'{M} msg read --wait-s 0.3; echo "read: $?"; sleep 0.1'
    evil = leaves_behind(left, 40, stale, then=f"{M} msg read --wait-s 20 --json")
    sender = task("sender", f"sleep 3; {M} msg send task:evil for-the-running-attempt")
    run_id, state = await run(store, tmp_path, evil, sender)

    succeeded(state, "evil", "sender")
    assert "for-the-running-attempt" in output(state, "evil")  # attempt 2 got it
    said = stale.read_text()
    assert "for-the-running-attempt" not in said
    assert "read: 3" in said  # refused once attempt 2 took the task
    refused = await refusals(store, run_id, tmp_path / "audit.jsonl")
    assert refused
    assert all(e.task == "evil" and e.action == "message.read" for e in refused)
    assert "attempt 1 of task evil is over" in refused[0].reason


async def test_an_agent_that_floods_the_door_is_stopped_at_its_task_s_budget(
    store: Store, tmp_path: Path
) -> None:
    """Every door call is an entry in the run's log, kept for the run: an agent in a loop would
    grow the log and the store until the disk is full. Past its task's budget
    (``--door-calls-per-attempt``) each call is refused; the refusal is logged and audited once,
    not once per call (or the refusals would grow the log instead). Other tasks go on."""
    flood = task(
        "flood",
        f'{PYTHON} mcp_flood.py 80; {M} state set flood/cli 1; echo "cli: $?"; '
        f'{M} state get flood/0 >/dev/null; echo "read: $?"',
    )
    calm = task("calm", f"{M} state set calm 1", depends_on=("flood",))
    run_id, state = await run(store, tmp_path, flood, calm, door_calls_per_attempt=50)

    succeeded(state, "flood", "calm")
    text = output(state, "flood")
    summary = json.loads(text.splitlines()[0])
    assert (summary["written"], summary["refused"]) == (50, 30)
    assert (
        "the door budget is spent for task flood: 50 door calls (at most 50 per attempt: "
        "maos run --door-calls-per-attempt)" in summary["first"][0]
    )
    assert codes(text) == {"cli": "3", "read": "0"}  # refused through the CLI too; reads still work
    written = [e async for _, e in EventLog(store, run_id).iterate() if isinstance(e, StateWritten)]
    assert len([e for e in written if e.task == "flood"]) == 50
    assert [e.key for e in written if e.task == "calm"] == ["calm"]
    refused = await refusals(store, run_id, tmp_path / "audit.jsonl")
    assert len(refused) == 1
    assert refused[0].task == "flood"
    assert refused[0].action == "state.write"


def test_maos_run_shows_the_refusals_as_they_happen(tmp_path: Path) -> None:
    """The person who starts the run sees an agent refused, in MAOS's words, as it happens:
    the first few refusals of a task, then one line pointing to the audit. Here: writes
    outside the task's grants, until they spend its door budget (4 calls)."""
    calls = "; ".join(f"{M} state set k{n} {n} 2>/dev/null" for n in range(9))
    plan = {
        "name": "refusals",
        "tasks": [{"id": "loop", "command": f"{calls}; true", "grants": {"state_write": ["mine/*"]}}],
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    done = subprocess.run(
        [sys.executable, "-m", "maos", "run", "plan.json", "--door-calls-per-attempt", "4"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line.split("] ", 1)[-1] for line in done.stdout.splitlines() if "refused" in line]
    assert len(lines) == 5, done.stdout
    assert all(line.startswith("refused   loop (agent-1): writing state key") for line in lines[:3]), lines
    assert lines[3].startswith("refused   loop: more refusals; see maos audit "), lines
    assert lines[4].startswith("refused   loop (agent-1): the door budget is spent for task loop: 4 door"), (
        lines
    )
    assert "Traceback" not in done.stdout + done.stderr


def test_refusals_of_callers_that_only_claim_a_task_do_not_hide_that_task_s_own() -> None:
    """An agent that claims another task's id with a token that is not for it is refused
    (unverified); those refusals must not use up the lines the terminal shows for that
    task's own refusals."""
    from rich.console import Console

    from maos.cli.progress import SHOWN_REFUSALS, ProgressView
    from maos.model import RunState

    console = Console(record=True, force_terminal=False, width=300)
    view = ProgressView(console)
    state = RunState(run_id="r")
    for n in range(SHOWN_REFUSALS + 50):  # naming t2, or made-up tasks: one count for all
        claimed = "t2" if n % 2 else f"made-up-{n}"
        impostor = DoorRefused(claimed_agent="a", task=claimed, reason=f"bad token {n}", verified=False)
        view.hook(str(n), impostor, state)
    own = DoorRefused(
        claimed_agent="b", task="t2", reason="writing state key 'x' is not granted", verified=True
    )
    view.hook("own", own, state)
    text = console.export_text()
    assert "refused   t2 (b): writing state key 'x' is not granted" in text
    assert text.count("bad token") == SHOWN_REFUSALS
    assert text.count("more refusals") == 1
    assert "refused   callers without a valid token: more refusals; see maos audit r" in text
