"""The door for command agents: ``maos state …``, ``maos msg …``, ``maos broadcast``, ``maos result …``.

Every command acts as the agent named by its environment (``MAOS_RUN_ID``, ``MAOS_AGENT_ID``,
``MAOS_TASK_ID``, ``MAOS_AGENT_TOKEN``, ``MAOS_STORE`` — MAOS sets them for every agent) and
is checked against its tokens (``MAOS_AGENT_TOKEN``, and ``MAOS_TASK_TOKEN`` for its task
attempt) and its role's grants (``maos.permissions``). Exit codes: 0 done; 1 not found, CAS
conflict or a store failure; 2 a missing variable or a bad argument; 3 refused (a token that
is not the agent's or its task's, or an action not granted; logged as ``door_refused``).

Values and message contents are JSON when they parse as JSON (``42``, ``true``,
``{"a": 1}``, ``"quoted"``), else the plain string as given (``hello world``); ``--string``
keeps the text as a string whatever it looks like, and ``-`` reads it from stdin.

These commands run often from agent scripts: this module imports nothing heavy at the top,
and a state read never loads pydantic or the bus (see ``maos.door``).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand

from maos.cli._app import app
from maos.cli._choices import Priority
from maos.cli._common import EXIT_FAILED, EXIT_USAGE, JsonLinesOption, JsonOption, fail
from maos.numbers import MAX_INT64, check_float, check_int, parse_float, parse_int

if TYPE_CHECKING:
    from maos.door import Door

state_app = typer.Typer(
    help="Shared state of the run (versioned JSON values), as the calling agent.", no_args_is_help=True
)
msg_app = typer.Typer(help="Messages between agents, as the calling agent.", no_args_is_help=True)
result_app = typer.Typer(help="Task results published by agents.", no_args_is_help=True)
app.add_typer(state_app, name="state")
app.add_typer(msg_app, name="msg")
app.add_typer(result_app, name="result")
task_app = typer.Typer(help="Tasks added to the run by agents (dynamic subtasks).", no_args_is_help=True)
app.add_typer(task_app, name="task")

StringOption = Annotated[
    bool, typer.Option("--string", "-s", help="Keep the text as a string even if it parses as JSON.")
]
PriorityOption = Annotated[Priority, typer.Option("--priority", "-p", help="The message's priority.")]
TypeOption = Annotated[str, typer.Option("--type", help="Message type, e.g. text, request, result.")]

_NEGATIVE_NUMBER = re.compile(r"-(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class _ValueCommand(TyperCommand):
    """A command whose arguments may be negative numbers (``maos state set k -5``). Click
    reads every word that starts with ``-`` as an option; here a negative number where an
    argument goes is one, as if the arguments had been given after ``--``."""

    # ``ctx`` and the parameters are of the click typer vendors (private): see ``_app._RootGroup``
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, numbers_as_arguments(args, self.params))


def numbers_as_arguments(args: Sequence[str], params: Sequence[Any]) -> list[str]:
    """``args`` with its arguments (not options, nor their values) moved after a ``--`` when
    one of them is a negative number; unchanged otherwise. ``params``: the command's."""
    with_value = {
        name
        for param in params
        if param.param_type_name == "option" and not param.is_flag and not param.count
        for name in param.opts
    }
    options: list[str] = []
    arguments: list[str] = []
    words = iter(args)
    for word in words:
        if word == "--":
            arguments.extend(words)
        elif word.startswith("-") and len(word) > 1 and not _NEGATIVE_NUMBER.fullmatch(word):
            options.append(word)
            value = next(words, None) if word in with_value else None  # whatever it looks like
            if value is not None:
                options.append(value)
        else:
            arguments.append(word)
    if not any(_NEGATIVE_NUMBER.fullmatch(word) for word in arguments):
        return list(args)
    return [*options, "--", *arguments]


def _int_parser(name: str, *, min_value: int, max_value: int) -> Callable[[Any], int]:
    """A typer ``parser``: ASCII digits within the bounds (``maos.numbers``); anything else
    is a usage error naming the option (exit 2), never an ``OverflowError`` further in."""

    def parse(value: Any) -> int:
        # typer turns the NumberError (a ValueError) into a usage error naming the option
        if isinstance(value, str):
            return parse_int(value, name, min_value=min_value, max_value=max_value)
        return check_int(value, name, min_value=min_value, max_value=max_value)

    return parse


def _float_parser(name: str, *, min_value: float, max_value: float) -> Callable[[Any], float]:
    """Like ``_int_parser``, for finite decimal numbers (no nan, inf or 1e400)."""

    def parse(value: Any) -> float:
        if isinstance(value, str):
            return parse_float(value, name, min_value=min_value, max_value=max_value)
        return check_float(value, name, min_value=min_value, max_value=max_value)

    return parse


MAX_WAIT_S = 3600.0
"""Longest ``--wait-s`` (``maos.door.MAX_WAIT_S``; not imported: this module stays light)."""


def _run(op: Callable[[Door], Awaitable[int]]) -> None:
    """Open the store, check the agent's token, run ``op`` and exit with the code it returns.
    Its errors are mapped by ``maos.cli._common.report_error``: a missing variable or a bad
    argument 2, a refusal 3, a store failure 1."""
    import asyncio

    from maos.door import open_door
    from maos.identity import AgentIdentity, open_agent_store

    identity = AgentIdentity.from_env()

    async def main() -> int:
        store = await open_agent_store(identity)
        try:
            return await op(await open_door(store, identity, via="cli"))
        finally:
            await store.close()

    code = asyncio.run(main())
    if code:
        raise typer.Exit(code)


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


MAX_STDIN_BYTES = 1 << 20
"""The most ``-`` reads from stdin: more than any value the door takes (a state value is at
most 256 KiB as JSON, a message 64 KiB, a result's summary 64 Ki characters)."""


def read_stdin() -> str:
    """Stdin as text, at most ``MAX_STDIN_BYTES``; exit 2 if there is more (``< /dev/zero``
    would fill the memory), if it is not UTF-8 (the store keeps text as UTF-8), or if stdin
    was closed (``<&-``: ``maos.cli._terminal``)."""
    from maos.cli._terminal import stdin_closed

    if stdin_closed():
        fail("stdin is closed: `-` reads the value from stdin; pipe it in, or give the value", EXIT_USAGE)
    if hasattr(sys.stdin, "buffer"):
        data = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
    else:
        data = sys.stdin.read(MAX_STDIN_BYTES + 1).encode()
    if len(data) > MAX_STDIN_BYTES:
        fail(f"stdin holds more than {MAX_STDIN_BYTES:,} bytes, more than any door value: nothing written")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        fail(f"stdin is not UTF-8 text (byte {exc.start}): nothing written", EXIT_USAGE)


def parse_value(text: str, *, string: bool = False) -> Any:
    """A command-line value: ``-`` reads stdin; JSON if it parses (NaN and Infinity do not
    count), else the text itself. JSON nested too deeply to decode is a usage error."""
    if text == "-":
        text = read_stdin()
    if string:
        return text
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text
    except RecursionError:
        fail("the value is JSON nested too deeply to decode", EXIT_USAGE)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


# --------------------------------------------------------------------------- maos state


@state_app.command("get", cls=_ValueCommand)
def state_get(
    key: Annotated[str, typer.Argument(help="The key, e.g. api/schema.")],
    raw: Annotated[bool, typer.Option("--raw", "-r", help="Print a string value without quotes.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Print the JSON value of KEY (exit 1 if it does not exist)."""

    async def op(door: Door) -> int:
        entry = await door.state_get(key)
        if entry is None:
            if json_output:
                _out(_dumps({"key": key, "value": None, "version": 0}))
            sys.stderr.write(f"state key {key!r} does not exist in run {door.run_id}\n")
            return EXIT_FAILED
        if json_output:
            _out(_dumps({"key": entry.key, "value": entry.value, "version": entry.version}))
        elif raw and isinstance(entry.value, str):
            _out(entry.value)
        else:
            _out(_dumps(entry.value))
        return 0

    _run(op)


@state_app.command("set", cls=_ValueCommand)
def state_set(
    key: Annotated[str, typer.Argument(help="The key, e.g. api/schema.")],
    value: Annotated[str, typer.Argument(help="JSON, or plain text; - reads stdin.")],
    string: StringOption = False,
    json_output: JsonOption = False,
) -> None:
    """Write KEY = VALUE and print its new version."""
    parsed = parse_value(value, string=string)

    async def op(door: Door) -> int:
        version = await door.state_set(key, parsed)
        _out(_dumps({"key": key, "version": version}) if json_output else str(version))
        return 0

    _run(op)


@state_app.command("cas", cls=_ValueCommand)
def state_cas(
    key: Annotated[str, typer.Argument(help="The key, e.g. api/schema.")],
    expected_version: Annotated[
        int,
        typer.Argument(
            parser=_int_parser("EXPECTED_VERSION", min_value=0, max_value=MAX_INT64 - 1),
            help="Write only if KEY is at this version (0: only if absent).",
        ),
    ],
    value: Annotated[str, typer.Argument(help="JSON, or plain text; - reads stdin.")],
    string: StringOption = False,
    json_output: JsonOption = False,
) -> None:
    """Compare-and-set: write KEY = VALUE only if KEY is at EXPECTED_VERSION.

    Prints the new version. On a conflict, exit 1 and print the current version (stdout)
    with an explanation (stderr): read the key again, recompute, retry."""
    parsed = parse_value(value, string=string)

    async def op(door: Door) -> int:
        result = await door.state_cas(key, expected_version, parsed)
        if json_output:
            _out(_dumps({"key": key, "ok": result.ok, "version": result.version}))
        else:
            _out(str(result.version))
        if result.ok:
            return 0
        current = "does not exist" if result.version == 0 else f"is at version {result.version}"
        sys.stderr.write(
            f"conflict: state key {key!r} {current}, not version {expected_version}; nothing written\n"
        )
        return EXIT_FAILED

    _run(op)


@state_app.command("list", cls=_ValueCommand)
def state_list(
    prefix: Annotated[str, typer.Argument(help="Only keys starting with this (e.g. api/).")] = "",
    json_output: JsonOption = False,
) -> None:
    """List keys (one per line: KEY, VERSION, JSON value, tab-separated)."""

    async def op(door: Door) -> int:
        entries = await door.state_list(prefix)
        if json_output:
            _out(_dumps([{"key": e.key, "value": e.value, "version": e.version} for e in entries]))
        else:
            for entry in entries:
                _out(f"{entry.key}\t{entry.version}\t{_dumps(entry.value)}")
        return 0

    _run(op)


# --------------------------------------------------------------------------- maos msg, maos broadcast


@msg_app.command("send", cls=_ValueCommand)
def msg_send(
    to: Annotated[
        str, typer.Argument(help="The recipient: an agent id, or task:<id> for whoever runs that task.")
    ],
    content: Annotated[str, typer.Argument(help="JSON, or plain text; - reads stdin.")],
    priority: PriorityOption = Priority.NORMAL,
    type: TypeOption = "text",
    string: StringOption = False,
    json_output: JsonOption = False,
) -> None:
    """Send CONTENT to agent TO's inbox; print the message id."""
    parsed = parse_value(content, string=string)

    async def op(door: Door) -> int:
        message = await door.send_message(to, parsed, priority=priority.value, type=type)
        if json_output:
            _out(_dumps({"id": message.id, "to": to, "priority": message.priority.value, "seq": message.seq}))
        else:
            _out(message.id)
        return 0

    _run(op)


@app.command("broadcast", cls=_ValueCommand)
def broadcast(
    topic: Annotated[str, typer.Argument(help="The topic; its subscribers receive the message.")],
    content: Annotated[str, typer.Argument(help="JSON, or plain text; - reads stdin.")],
    priority: PriorityOption = Priority.NORMAL,
    type: TypeOption = "text",
    string: StringOption = False,
    json_output: JsonOption = False,
) -> None:
    """Publish CONTENT on TOPIC to every agent subscribed to it (maos msg subscribe)."""
    parsed = parse_value(content, string=string)

    async def op(door: Door) -> int:
        message = await door.broadcast(topic, parsed, priority=priority.value, type=type)
        if json_output:
            sent = {"id": message.id, "topic": topic, "priority": message.priority.value, "seq": message.seq}
            _out(_dumps(sent))
        else:
            _out(message.id)
        return 0

    _run(op)


@msg_app.command("read")
def msg_read(
    wait_s: Annotated[
        float,
        typer.Option(
            "--wait-s",
            parser=_float_parser("--wait-s", min_value=0.0, max_value=MAX_WAIT_S),
            help="Wait up to this many seconds for a message.",
        ),
    ] = 0.0,
    count: Annotated[
        int,
        typer.Option(
            "--count",
            "-n",
            parser=_int_parser("--count", min_value=1, max_value=1000),
            help="At most this many.",
        ),
    ] = 10,
    no_ack: Annotated[
        bool,
        typer.Option("--no-ack", help="Leave them pending: ack later with `maos msg ack RECEIPT`."),
    ] = False,
    json_output: JsonLinesOption = False,
) -> None:
    """Print this agent's messages as JSON lines, high priority first, then acknowledge them.

    Each line has the message (id, from, to or topic, type, priority, content, seq,
    timestamp) plus its receipt, delivery count and sequence gap. Nothing is printed when no
    message came. Messages are acknowledged only after they were written out; with --no-ack,
    unacknowledged ones are delivered again after the bus lease (15 s). --json changes nothing:
    the lines are JSON either way (agents' scripts parse them)."""

    async def op(door: Door) -> int:
        deliveries = await door.read_messages(count=count, wait_s=wait_s or None, ack=False)
        for delivery in deliveries:
            line = delivery.message.model_dump(mode="json", by_alias=True)
            line.update(receipt=delivery.receipt, deliveries=delivery.deliveries, gap=delivery.gap)
            _out(_dumps(line))
        sys.stdout.flush()
        if deliveries and not no_ack:
            await door.ack_messages(d.receipt for d in deliveries)
        return 0

    _run(op)


@msg_app.command("ack")
def msg_ack(
    receipts: Annotated[list[str], typer.Argument(help="Receipts printed by `maos msg read --no-ack`.")],
    json_output: JsonOption = False,
) -> None:
    """Acknowledge messages read with --no-ack; print how many were still pending."""

    async def op(door: Door) -> int:
        acked = await door.ack_messages(receipts)
        _out(_dumps({"receipts": len(receipts), "acked": acked}) if json_output else str(acked))
        return 0

    _run(op)


@msg_app.command("subscribe")
def msg_subscribe(
    topic: Annotated[str, typer.Argument(help="The topic to receive broadcasts of.")],
    json_output: JsonOption = False,
) -> None:
    """Receive what is broadcast on TOPIC from now on (read with `maos msg read`)."""

    async def op(door: Door) -> int:
        added = await door.subscribe(topic)
        if json_output:
            _out(_dumps({"agent_id": door.agent_id, "topic": topic, "added": added}))
        else:
            sys.stderr.write(
                f"{door.agent_id} {'subscribed to' if added else 'was already subscribed to'} {topic}\n"
            )
        return 0

    _run(op)


# --------------------------------------------------------------------------- maos result


@task_app.command("add")
def task_add(
    spec: Annotated[str, typer.Argument(help='The task as JSON: {"id": …, "prompt": …, "depends_on": […]}.')],
    blocks: Annotated[
        list[str] | None,
        typer.Option("--blocks", help="A task not started yet that must wait for the new one."),
    ] = None,
    wait_s: Annotated[
        float,
        typer.Option(
            "--wait-s",
            parser=_float_parser("--wait-s", min_value=0.1, max_value=MAX_WAIT_S),
            help="Seconds to wait for the decision.",
        ),
    ] = 30.0,
    json_output: JsonOption = False,
) -> None:
    """Ask MAOS for a new task in this run; exit 1 with the reason if it is refused."""
    try:
        data = json.loads(spec, parse_constant=_reject_constant)
    except ValueError as exc:
        fail(f"SPEC is not valid JSON: {exc}", EXIT_USAGE)
    except RecursionError:
        fail("SPEC is JSON nested too deeply to decode", EXIT_USAGE)

    async def op(door: Door) -> int:
        answer = await door.add_task(data, blocks=blocks or [], wait_s=wait_s)
        if json_output:
            _out(_dumps(answer.as_dict()))
        elif answer.added:
            _out(f"added task {answer.task_id}")
        else:
            sys.stderr.write(f"task {answer.task_id!r} refused: {answer.reason}\n")
        return 0 if answer.added else EXIT_FAILED

    _run(op)


@task_app.command("wait")
def task_wait(
    task_id: Annotated[str, typer.Argument(metavar="TASK", help="The task to wait for.")],
    wait_s: Annotated[
        float,
        typer.Option(
            "--timeout-s",
            parser=_float_parser("--timeout-s", min_value=0.0, max_value=MAX_WAIT_S),
            help="Seconds to wait at most.",
        ),
    ] = MAX_WAIT_S,
    json_output: JsonOption = False,
) -> None:
    """Wait until TASK of this run has ended; exit 0 if it succeeded, 1 otherwise. A wait that
    closes a cycle (a deadlock) is resolved by the orchestrator: the answer says how."""

    async def op(door: Door) -> int:
        end = await door.wait_task(task_id, wait_s=wait_s)
        if json_output:
            _out(_dumps(end.as_dict()))
        else:
            _out(f"task {end.task_id} {end.state}" + (f": {end.reason}" if end.reason else ""))
        return 0 if end.state == "succeeded" else EXIT_FAILED

    _run(op)


@result_app.command("publish", cls=_ValueCommand)
def result_publish(
    summary: Annotated[str, typer.Argument(help="What the task achieved; - reads stdin.")],
    files: Annotated[list[str] | None, typer.Argument(help="Files the task produced.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Publish this task's result (summary and files) for its children and the run's report;
    with --json, print it as stored (as `maos result get --json` does)."""
    text = read_stdin() if summary == "-" else summary

    async def op(door: Door) -> int:
        published = await door.publish_result(text, files or [])
        if json_output:
            _out(_dumps(published.as_dict()))
        return 0

    _run(op)


@result_app.command("get")
def result_get(
    task_id: Annotated[str, typer.Argument(metavar="TASK", help="The task whose result to print.")],
    json_output: JsonOption = False,
) -> None:
    """Print the result published for TASK in this run (exit 1 if none)."""

    async def op(door: Door) -> int:
        result = await door.read_result(task_id)
        if result is None:
            sys.stderr.write(f"no result published for task {task_id!r} in run {door.run_id}\n")
            return EXIT_FAILED
        if json_output:
            _out(_dumps(result.as_dict()))
        else:
            _out(result.summary)
            for path in result.files:
                _out(path)
        return 0

    _run(op)
