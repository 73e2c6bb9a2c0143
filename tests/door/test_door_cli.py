"""The door for command agents: real ``maos state|msg|broadcast|result`` subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from maos.events import (
    DoorRefused,
    MessagesAcked,
    MessageSent,
    MessagesRead,
    ResultPublished,
    StateWritten,
    TopicSubscribed,
)
from maos.model import Plan, RunConfig, RunStatus, TaskSpec
from maos.orchestrator import Orchestrator
from maos.state import SharedState
from maos.store import Store

from .conftest import MAOS, DoorRun, events_of

ROOT = Path(__file__).resolve().parents[2]


def maos(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAOS, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_state_commands(door_run: DoorRun) -> None:
    env = door_run.env("agent-a")
    assert maos("state", "set", "api/schema", '{"fields": ["id"]}', env=env).stdout == "1\n"
    assert maos("state", "set", "greeting", "hello world", env=env).stdout == "1\n"  # not JSON: a string
    assert maos("state", "set", "count", "42", env=env).stdout == "1\n"
    assert maos("state", "set", "label", "42", "--string", env=env).stdout == "1\n"
    assert maos("state", "set", "notes", "-", env=env, stdin="from\nstdin").stdout == "1\n"

    assert maos("state", "get", "api/schema", env=env).stdout == '{"fields": ["id"]}\n'
    assert maos("state", "get", "greeting", env=env).stdout == '"hello world"\n'
    assert maos("state", "get", "greeting", "--raw", env=env).stdout == "hello world\n"
    assert maos("state", "get", "count", env=env).stdout == "42\n"
    assert maos("state", "get", "label", env=env).stdout == '"42"\n'
    got = json.loads(maos("state", "get", "notes", "--json", env=env).stdout)
    assert got == {"key": "notes", "value": "from\nstdin", "version": 1}

    missing = maos("state", "get", "nope", env=env)
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert "state key 'nope' does not exist" in missing.stderr

    ok = maos("state", "cas", "count", "1", "43", env=env)
    assert (ok.returncode, ok.stdout) == (0, "2\n")
    conflict = maos("state", "cas", "count", "1", "44", env=env)
    assert conflict.returncode == 1
    assert conflict.stdout == "2\n"  # the current version, to retry with
    assert "conflict: state key 'count' is at version 2, not version 1; nothing written" in conflict.stderr
    created = maos("state", "cas", "fresh", "0", "true", "--json", env=env)
    assert json.loads(created.stdout) == {"key": "fresh", "ok": True, "version": 1}

    listed = maos("state", "list", "api/", env=env)
    assert listed.stdout == 'api/schema\t1\t{"fields": ["id"]}\n'
    everything = json.loads(maos("state", "list", "--json", env=env).stdout)
    assert [item["key"] for item in everything] == [
        "api/schema",
        "count",
        "fresh",
        "greeting",
        "label",
        "notes",
    ]

    bad = maos("state", "set", "bad key", "1", env=env)
    assert bad.returncode == 2
    assert "state key 'bad key' is not valid" in bad.stderr

    entry = await SharedState(door_run.store, door_run.run_id).get("count")
    assert entry is not None
    assert (entry.value, entry.version) == (43, 2)
    written = [(e.agent_id, e.key, e.version) for e in await door_run.events() if isinstance(e, StateWritten)]
    assert ("agent-a", "count", 2) in written
    assert len(written) == 7  # five sets, two successful CAS


async def test_negative_numbers_are_values_not_options(door_run: DoorRun) -> None:
    """``maos state set k -5``: click would read ``-5`` as an unknown option (exit 2)."""
    a, b = door_run.env("agent-a"), door_run.env("agent-b", task="t2")
    assert maos("state", "set", "temp", "-5", env=a).stdout == "1\n"
    assert maos("state", "set", "temp", "-2.5e3", "--json", env=a).stdout == '{"key": "temp", "version": 2}\n'
    assert maos("state", "cas", "temp", "2", "-0.5", env=a).stdout == "3\n"
    assert maos("state", "set", "label", "--string", "-7", env=a).stdout == "1\n"
    assert maos("state", "set", "-1", "-1", env=a).stdout == "1\n"  # a key too, in its place
    assert maos("state", "set", "dash", "--", "-8", env=a).stdout == "1\n"  # as before
    assert maos("msg", "send", "agent-b", "-1", "--priority", "high", env=a).returncode == 0
    assert maos("broadcast", "news", "-2", env=a).returncode == 0
    assert [m["content"] for m in json_lines(maos("msg", "read", "--no-ack", env=b).stdout)] == [-1]
    assert (await SharedState(door_run.store, door_run.run_id).get("temp")).value == -0.5  # type: ignore[union-attr]
    assert maos("state", "get", "label", env=a).stdout == '"-7"\n'
    assert maos("state", "get", "-1", env=a).stdout == "-1\n"
    assert maos("state", "get", "dash", env=a).stdout == "-8\n"
    typo = maos("state", "set", "temp", "-5", "--jsn", env=a)  # a misspelt option is still one
    assert typo.returncode == 2
    assert "--jsn" in typo.stderr


async def test_stdin_is_read_up_to_a_bound(door_run: DoorRun) -> None:
    """``maos state set k - < /dev/zero`` read for ever (3.8 GB after 5 s): stdin is read
    up to 1 MiB, more than any door value, and more is exit 2 with nothing written."""
    env = door_run.env("agent-a")
    for args in (("state", "set", "k", "-"), ("msg", "send", "agent-b", "-"), ("result", "publish", "-")):
        with open("/dev/zero", "rb") as zero:
            done = subprocess.run(
                [*MAOS, *args], env=env, stdin=zero, capture_output=True, text=True, timeout=60, check=False
            )
        assert done.returncode == 2, (args, done.stderr)
        assert "stdin holds more than 1,048,576 bytes" in done.stderr
    assert await SharedState(door_run.store, door_run.run_id).get("k") is None


async def test_a_missing_variable_is_named(door_run: DoorRun) -> None:
    for name in ("MAOS_AGENT_TOKEN", "MAOS_STORE", "MAOS_RUN_ID"):
        env = door_run.env("agent-a")
        del env[name]
        done = maos("state", "get", "k", env=env)
        assert done.returncode == 2
        assert f"{name} is not set" in done.stderr
    wrong_store = {**door_run.env("agent-a"), "MAOS_STORE": f"sqlite:///{door_run.workdir}/nothing.db"}
    done = maos("state", "get", "k", env=wrong_store)
    assert done.returncode == 2
    assert "no such database file" in done.stderr
    assert not (door_run.workdir / "nothing.db").exists()


async def test_another_agents_token_is_refused_and_logged(door_run: DoorRun) -> None:
    # agent-a's identity with agent-b's token: refused, nothing written, the attempt logged.
    forged = door_run.env("agent-a", token=door_run.token("agent-b"))
    done = maos("state", "set", "owner", "agent-a", env=forged)
    assert done.returncode == 3
    assert "token does not belong to agent agent-a" in done.stderr
    assert "it is the token of agent agent-b" in done.stderr
    assert await SharedState(door_run.store, door_run.run_id).get("owner") is None
    garbage = maos("msg", "read", env=door_run.env("agent-b", token="maos1.guessed"))
    assert garbage.returncode == 3
    assert "token does not belong to agent agent-b" in garbage.stderr
    refused = [e for e in await door_run.events() if isinstance(e, DoorRefused)]
    assert [(e.claimed_agent, e.token_owner, e.via) for e in refused] == [
        ("agent-a", "agent-b", "cli"),
        ("agent-b", None, "cli"),
    ]


async def test_messages_commands(door_run: DoorRun) -> None:
    a, b = door_run.env("agent-a"), door_run.env("agent-b", task="t2")
    subscribed = maos("msg", "subscribe", "news", env=b)
    assert subscribed.returncode == 0
    assert "agent-b subscribed to news" in subscribed.stderr
    sent = maos("msg", "send", "agent-b", '{"ask": "schema?"}', "--priority", "high", "--json", env=a)
    sent_id = json.loads(sent.stdout)["id"]
    cast = maos("broadcast", "news", "release 1.0", env=a)
    assert cast.returncode == 0, cast.stderr

    read = maos("msg", "read", "--no-ack", env=b)
    lines = json_lines(read.stdout)
    assert [(m["id"], m["from"], m["to"], m["topic"], m["content"], m["priority"]) for m in lines] == [
        (sent_id, "agent-a", "agent-b", None, {"ask": "schema?"}, "high"),
        (cast.stdout.strip(), "agent-a", None, "news", "release 1.0", "normal"),
    ]
    assert [m["receipt"].split("/")[0] for m in lines] == ["inbox", "topic"]
    assert all(m["deliveries"] == 1 and m["gap"] == 0 for m in lines)
    acked = maos("msg", "ack", *(m["receipt"] for m in lines), env=b)
    assert acked.stdout == "2\n"
    assert maos("msg", "read", env=b).stdout == ""  # acknowledged: gone

    bad = maos("msg", "send", "agent-b", "x", "--priority", "urgent", env=a)
    assert bad.returncode == 2
    assert "'urgent' is not one of 'high', 'normal', 'low'" in " ".join(bad.stderr.replace("│", " ").split())

    # A blocked reader wakes when the message arrives: sent once the reader says it waits.
    reader = subprocess.Popen(
        [*MAOS, "-vv", "msg", "read", "--wait-s", "30"],
        env=b,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stderr is not None
        before = ""
        while "agent-b has no message: waiting" not in before:
            line = reader.stderr.readline()
            assert line, f"the reader ended before it waited: {before}"
            before += line
        maos("msg", "send", "agent-b", "wake up", env=a)
        out, err = reader.communicate(timeout=30)
        err = before + err
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err
    assert [m["content"] for m in json_lines(out)] == ["wake up"]

    log = await door_run.events()
    assert [(e.agent_id, e.topic) for e in log if isinstance(e, TopicSubscribed)] == [("agent-b", "news")]
    assert [(e.to, e.topic) for e in log if isinstance(e, MessageSent)] == [
        ("agent-b", None),
        (None, "news"),
        ("agent-b", None),
    ]
    assert [(e.agent_id, e.task, e.count) for e in log if isinstance(e, MessagesRead)] == [
        ("agent-b", "t2", 2),
        ("agent-b", "t2", 1),
    ]
    assert [(e.count, e.acked) for e in log if isinstance(e, MessagesAcked)] == [(2, 2), (1, 1)]


async def test_result_commands(door_run: DoorRun) -> None:
    a, b = door_run.env("agent-a", task="design"), door_run.env("agent-b", task="build")
    assert maos("result", "publish", "wrote DESIGN.md", "DESIGN.md", "notes.txt", env=a).returncode == 0
    got = maos("result", "get", "design", "--json", env=b)
    assert json.loads(got.stdout) | {"published_at": 0} == {
        "task_id": "design",
        "agent_id": "agent-a",
        "summary": "wrote DESIGN.md",
        "files": ["DESIGN.md", "notes.txt"],
        "published_at": 0,
    }
    assert maos("result", "get", "design", env=b).stdout == "wrote DESIGN.md\nDESIGN.md\nnotes.txt\n"
    none = maos("result", "get", "build", env=b)
    assert none.returncode == 1
    assert "no result published for task 'build'" in none.stderr
    [event] = [e for e in await door_run.events() if isinstance(e, ResultPublished)]
    assert (event.agent_id, event.task, event.files) == ("agent-a", "design", ("DESIGN.md", "notes.txt"))


READER = """
M="{maos}"
$M state set roles/reader "$MAOS_AGENT_ID" || exit 10
message=$($M msg read --wait-s 60) || exit 11
echo "message: $message"
echo "greeting: $($M state get --raw shared/greeting)"
"""

WRITER = """
M="{maos}"
reader=""
for i in $(seq 600); do
  reader=$($M state get --raw roles/reader 2>/dev/null) && break
  sleep 0.1
done
[ -n "$reader" ] || exit 10
# Speak as the reader with our own token: the door must refuse it.
MAOS_AGENT_ID="$reader" $M state set stolen/key 1 2>impersonation.err
echo "impersonation exit code: $?"
$M state set shared/greeting "hello from $MAOS_AGENT_ID" || exit 11
$M msg send "$reader" '{{"text": "hi reader"}}' --priority high || exit 12
"""


async def test_two_command_agents_share_state_and_messages_in_a_real_run(
    sqlite_run_store: Store, tmp_path: Path
) -> None:
    store = sqlite_run_store
    shell_maos = " ".join(MAOS)
    (tmp_path / "reader.sh").write_text(READER.format(maos=shell_maos))
    (tmp_path / "writer.sh").write_text(WRITER.format(maos=shell_maos))
    plan = Plan(
        name="door",
        tasks=(
            TaskSpec(id="reader", command="sh reader.sh", max_attempts=1, timeout_s=90),
            TaskSpec(id="writer", command="sh writer.sh", max_attempts=1, timeout_s=90),
        ),
    )
    config = RunConfig(agents=2, workdir=str(tmp_path), grace_s=1.0)
    orchestrator = Orchestrator(store, plan, config)
    state = await orchestrator.run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    reader_agent = state.tasks["reader"].agent_id
    writer_agent = state.tasks["writer"].agent_id
    assert reader_agent is not None
    assert writer_agent is not None
    assert reader_agent != writer_agent

    # B read what A wrote and the message A sent.
    reader_out = Path(state.tasks["reader"].output_path).read_text()
    [message_line] = [line for line in reader_out.splitlines() if line.startswith("message: ")]
    message = json.loads(message_line.removeprefix("message: "))
    assert (message["from"], message["to"], message["content"], message["priority"]) == (
        writer_agent,
        reader_agent,
        {"text": "hi reader"},
        "high",
    )
    assert f"greeting: hello from {writer_agent}" in reader_out

    # A's attempt to speak as B was refused with a clear error, and logged.
    writer_out = Path(state.tasks["writer"].output_path).read_text()
    assert "impersonation exit code: 3" in writer_out
    error = (tmp_path / "impersonation.err").read_text()
    assert f"token does not belong to agent {reader_agent}" in error
    assert f"it is the token of agent {writer_agent}" in error
    assert await SharedState(store, orchestrator.run_id).get("stolen/key") is None

    log = await events_of(store, orchestrator.run_id)
    written = [(e.agent_id, e.task, e.key) for e in log if isinstance(e, StateWritten)]
    assert written == [(reader_agent, "reader", "roles/reader"), (writer_agent, "writer", "shared/greeting")]
    assert [(e.agent_id, e.to, e.priority) for e in log if isinstance(e, MessageSent)] == [
        (writer_agent, reader_agent, "high")
    ]
    assert [(e.agent_id, e.count, e.message_ids) for e in log if isinstance(e, MessagesRead)] == [
        (reader_agent, 1, (message["id"],))
    ]
    assert [(e.agent_id, e.acked) for e in log if isinstance(e, MessagesAcked)] == [(reader_agent, 1)]
    assert [(e.claimed_agent, e.token_owner, e.task, e.via) for e in log if isinstance(e, DoorRefused)] == [
        (reader_agent, writer_agent, "writer", "cli")
    ]


def test_the_documented_example_plan_runs_with_plain_maos_commands(tmp_path: Path) -> None:
    plan = ROOT / "src" / "maos" / "examples" / "plans" / "door-handshake.yaml"
    assert plan.read_text() in (ROOT / "docs" / "door.md").read_text()
    # No `maos` on the PATH, as when MAOS runs as `.venv/bin/python -m maos` without the venv
    # activated: the agents still find it.
    path = os.pathsep.join(
        part
        for part in os.environ.get("PATH", "").split(os.pathsep)
        if shutil.which("maos", path=part) is None
    )
    done = subprocess.run(
        [*MAOS, "run", str(plan), "--json"],
        cwd=tmp_path,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["counts"] == {"succeeded": 2}
    reader_out = Path(summary["tasks"]["reader"]["output"]).read_text().splitlines()
    writer_agent = summary["tasks"]["writer"]["agent"]
    assert json.loads(reader_out[0])["content"] == {"text": "hi"}
    assert reader_out[1] == f"hello from {writer_agent}"


async def test_a_message_to_a_task_reaches_whichever_agent_runs_it(
    sqlite_run_store: Store, tmp_path: Path
) -> None:
    shell_maos = " ".join(MAOS)
    plan = Plan(
        name="to-task",
        tasks=(
            TaskSpec(id="sender", command=f'{shell_maos} msg send task:receiver \'{{"note": "api ready"}}\''),
            # Starts only after the sender finished: the message waited in the task's inbox.
            TaskSpec(id="receiver", depends_on=("sender",), command=f"{shell_maos} msg read --wait-s 10"),
        ),
    )
    state = await Orchestrator(sqlite_run_store, plan, RunConfig(agents=2, workdir=str(tmp_path))).run()
    assert state.status is RunStatus.SUCCEEDED, state.summary
    [line] = Path(state.tasks["receiver"].output_path).read_text().splitlines()
    message = json.loads(line)
    assert message["content"] == {"note": "api ready"}
    assert message["from"] == state.tasks["sender"].agent_id
    assert message["to"] == "task@receiver"


def test_door_commands_load_only_the_door() -> None:
    """Agents call `maos state …` many times per task: it must not load every command."""
    probe = (
        "import sys\n"
        "from maos.cli._app import _register\n"
        "_register(sys.argv[1:])\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(('maos.cli.', 'rich')))))\n"
    )
    python = MAOS[0]

    def loaded(*words: str) -> set[str]:
        argv = (python, "-c", probe, "maos", *words)
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        return set(done.stdout.split())

    door = loaded("state", "get", "k")
    assert "maos.cli.door_cmd" in door
    assert "maos.cli.run_cmd" not in door
    assert not [m for m in door if m.startswith("rich")]
    # Any other command loads its own module, not the rest; `maos --help` and a typo all.
    run = loaded("-v", "run", "--help")
    assert "maos.cli.run_cmd" in run
    assert "maos.cli.bench_cmd" not in run
    assert {"maos.cli.run_cmd", "maos.cli.door_cmd", "maos.cli.bench_cmd"} <= loaded("--help")
    assert {"maos.cli.run_cmd", "maos.cli.bench_cmd"} <= loaded("rnu", "plan.yaml")


def test_each_command_is_registered_by_its_module() -> None:
    """``maos CMD`` imports only ``COMMAND_MODULES[CMD]``: in a fresh process, that must be
    enough for CMD to exist, and every command of the full app must have its entry."""
    import typer

    from maos.cli import _app

    _app._register(["maos"])
    every = set(typer.main.get_group(_app.app).commands)
    assert every == set(_app.COMMAND_MODULES)
    probe = (
        "import sys, typer\n"
        "from maos.cli import _app\n"
        "for name in sys.argv[1:]:\n"
        "    _app._register(['maos', name])\n"
        "    assert name in typer.main.get_group(_app.app).commands, name\n"
    )
    # One fresh process per module (what a command loads is what it has).
    by_module: dict[str, list[str]] = {}
    for name, module in _app.COMMAND_MODULES.items():
        by_module.setdefault(module, []).append(name)
    for module, names in by_module.items():
        done = subprocess.run([MAOS[0], "-c", probe, *names], check=False, capture_output=True, text=True)
        assert done.returncode == 0, (module, done.stderr[-2000:])
