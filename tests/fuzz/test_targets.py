"""Hypothesis drives each target (``targets.py``) with raw bytes and with structured inputs
built to reach past the first parser: plans, door commands, tool calls, queries."""

from __future__ import annotations

import json
import math

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from maos.mcp_server import TOOL_NAMES

from . import targets
from .harness import case_time_limit, examples

# Numbers that broke or could break a conversion somewhere (issue 11): huge, negative, not
# finite, underscores, non-ASCII digits, hex, exponents.
TRICKY_NUMBERS = [
    "0",
    "1",
    "-1",
    "10",
    "1000",
    "1001",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551616",
    "1" + "0" * 400,
    "-" + "9" * 30,
    "nan",
    "inf",
    "-inf",
    "1e400",
    "1e-400",
    "1_000",
    "١٢",
    "１２",
    "0x10",
    "1.5",
    ".5",
    "+3",
    " 7 ",
    "",
    "1-0",
    "1700000000000-0",
]
TIMES = [
    "2026-12-01T09:00:00Z",
    "2026-12-01T09:00:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "10000-01-01T00:00:00Z",
    "2026-13-45T99:99:99Z",
    "1e308",
    "nan",
    "x" * 1000,
]
JSON_NUMBERS = [0, 1, -1, 10**400, -(10**30), 2**63, 2**63 - 1, 2**64, 1.5, 1e308, -0.0, True, False, None]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from(JSON_NUMBERS)
    | st.integers()
    | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
words = (
    st.sampled_from(TRICKY_NUMBERS)
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "api/schema",
            "k",
            "agent-b",
            "task:t1",
            "news",
            "-",
            "--json",
            "--string",
            "--raw",
            "-n",
            "--count",
            "--wait-s",
            "--priority",
            "high",
            "urgent",
            "--type",
            "--no-ack",
            "--timeout-s",
            "--blocks",
            "t1",
            "inbox/normal/1",
            "topic/news/high/2",
            "task/inbox/low/3",
            '{"a": 1}',
            "[" * 50,
            '{"id": "x", "command": "true"}',
            "\udcff",
        ]
    )
)


def _yaml(value: object) -> bytes:
    return yaml.safe_dump(value, allow_unicode=True).encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------- plan

task_values = st.fixed_dictionaries(
    {"id": st.text(max_size=12) | st.sampled_from(["a", "b", "c"])},
    optional={
        "prompt": st.text(max_size=30),
        "command": st.text(max_size=30) | st.lists(st.text(max_size=10), max_size=3),
        "depends_on": st.lists(st.sampled_from(["a", "b", "c", "", "a/b"]), max_size=4),
        "timeout_s": st.sampled_from(JSON_NUMBERS),
        "retries": st.sampled_from(JSON_NUMBERS),
        "priority": st.sampled_from(JSON_NUMBERS),
        "role": st.text(max_size=10),
        "extra": json_values,
        # resource and timing dependencies (issue 15)
        "resources": json_values
        | st.dictionaries(st.sampled_from(["db", "gpu", ""]), st.sampled_from(JSON_NUMBERS)),
        "after": json_values
        | st.lists(
            st.fixed_dictionaries(
                {"task": st.sampled_from(["a", "b", "c"]) | json_values}, optional={"delay_s": json_values}
            ),
            max_size=3,
        ),
        "not_before": json_values
        | st.sampled_from(TIMES)
        | st.fixed_dictionaries({"delay_s": json_values}, optional={"task": json_values}),
        "deadline_s": st.sampled_from(JSON_NUMBERS) | json_values,
        "on_deadline": json_values | st.sampled_from(["fail", "skip"]),
    },
)
team_members = json_values | st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=12) | st.sampled_from(["a", "coder-1", "coder"]) | json_values,
        "role": st.text(max_size=12)
        | st.sampled_from(["coder", "reviewer", "general", "../x"])
        | json_values,
        "count": st.sampled_from(JSON_NUMBERS) | json_values,
        "capabilities": json_values,
        "runtime": json_values | st.sampled_from(["command", "claude-code"]),
        "model": json_values,
    },
)
plans = st.fixed_dictionaries(
    {
        "name": st.text(max_size=20) | st.sampled_from(JSON_NUMBERS),
        "tasks": st.lists(task_values, max_size=6),
    },
    optional={
        "description": json_values,
        "agents": json_values | st.lists(team_members, max_size=4),
        "resources": json_values
        | st.dictionaries(
            st.sampled_from(["db", "gpu", "", "x" * 70]),
            st.sampled_from(JSON_NUMBERS)
            | st.fixed_dictionaries({"capacity": json_values}, optional={"shared": json_values}),
        ),
    },
)

BILLION_LAUGHS = b"""a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
name: x
tasks: [{id: a, prompt: *f}]
"""


@examples(weight=1.0)
@given(st.binary(max_size=2000))
@example(BILLION_LAUGHS)
@example(b"[" * 10000)
@example(b"{" + b'"a":' * 5000)
@example(b"name: x\ntasks:\n- id: a\n  prompt: p\n  timeout_s: 1e400\n")
def test_plan_bytes(data: bytes) -> None:
    with case_time_limit("plan"):
        targets.plan(data)


@examples(weight=1.0)
@given(plans, st.booleans())
def test_plan_structured(value: dict[str, object], as_json: bool) -> None:
    data = json.dumps(value).encode("utf-8", "surrogatepass") if as_json else _yaml(value)
    with case_time_limit("plan"):
        targets.plan(data)


# --------------------------------------------------------------------------- stream-json

stream_records = st.fixed_dictionaries(
    {"type": st.sampled_from(["system", "assistant", "user", "result", "rate_limit_event", "other", ""])},
    optional={
        "subtype": st.sampled_from(["init", "api_retry", "permission_denied", "success", "error_max_turns"]),
        "message": json_values,
        "usage": st.dictionaries(
            st.sampled_from(["input_tokens", "output_tokens"]), st.sampled_from(JSON_NUMBERS)
        ),
        "total_cost_usd": st.sampled_from(JSON_NUMBERS),
        "duration_ms": st.sampled_from(JSON_NUMBERS),
        "num_turns": st.sampled_from(JSON_NUMBERS),
        "attempt": st.sampled_from(JSON_NUMBERS),
        "retry_delay_ms": st.sampled_from(JSON_NUMBERS),
        "error_status": st.sampled_from(JSON_NUMBERS),
        "result": json_values,
        "session_id": json_values,
        "mcp_servers": json_values,
        "rate_limit_info": json_values,
    },
)


@examples(weight=1.0)
@given(st.binary(max_size=2000))
@example(b"[" * 100000)
@example(b'{"type": "result", "usage": {"input_tokens": 1e400}}')
def test_stream_json_bytes(data: bytes) -> None:
    with case_time_limit("stream_json"):
        targets.stream_json(data)


@examples(weight=1.0)
@given(stream_records)
def test_stream_json_structured(record: dict[str, object]) -> None:
    with case_time_limit("stream_json"):
        targets.stream_json(json.dumps(record).encode("utf-8", "surrogatepass"))


# --------------------------------------------------------------------------- model-server script

rules = st.fixed_dictionaries(
    {},
    optional={
        "match": st.dictionaries(
            st.sampled_from(["prompt", "system", "tool_result", "any", "task"]),
            st.text(max_size=12) | st.sampled_from(["(", "[a-", "(?P<x>a)", "a{99999}"]) | json_values,
            max_size=3,
        ),
        "reply": st.fixed_dictionaries(
            {},
            optional={
                "text": st.text(max_size=20) | st.sampled_from(["{x}", "{{", "{missing}"]),
                "tool_calls": json_values,
                "usage": st.dictionaries(
                    st.sampled_from(["input_tokens", "output_tokens"]), st.sampled_from(JSON_NUMBERS)
                ),
                "delay_s": st.sampled_from(JSON_NUMBERS),
                "error": json_values,
                "stop_reason": json_values,
            },
        ),
        "times": st.sampled_from(JSON_NUMBERS),
    },
)


@examples(weight=1.0)
@given(st.binary(max_size=2000))
@example(BILLION_LAUGHS)
def test_script_bytes(data: bytes) -> None:
    with case_time_limit("script"):
        targets.script(data)


@examples(weight=1.0)
@given(st.fixed_dictionaries({"rules": st.lists(rules, max_size=4)}, optional={"default": rules}))
def test_script_structured(value: dict[str, object]) -> None:
    with case_time_limit("script"):
        targets.script(_yaml(value))


# --------------------------------------------------------------------------- agent output


@examples(weight=1.0)
@given(
    st.lists(
        st.binary(max_size=300) | st.sampled_from([b"\n", b"\r\n", b"\xff\xfe", b"\x00", b"\xed\xa0\x80"]),
        max_size=20,
    )
)
def test_output_chunks(chunks: list[bytes]) -> None:
    with case_time_limit("output"):
        targets.output(b"\x00\xff".join(chunks))


# --------------------------------------------------------------------------- door CLI


def _arg_bytes(arg: str) -> bytes:
    """An argument as argv bytes: ``\\udcXX`` is the undecodable byte XX (surrogateescape)."""
    try:
        return arg.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return arg.encode("utf-8", "surrogatepass")


@examples(weight=0.25)
@given(st.sampled_from(targets.DOOR_COMMANDS), st.lists(words, max_size=5), st.binary(max_size=100))
@example(("msg", "ack"), ["inbox/normal/" + "1" + "0" * 400], b"")
@example(("state", "cas"), ["k", "1" + "0" * 400, "1"], b"")
@example(("msg", "read"), ["--wait-s", "nan"], b"")
@example(("state", "set"), ["k", "\udcff"], b"")
@example(("task", "wait"), ["t1", "--timeout-s", "1e400"], b"")
@example(("task", "wait"), ["t1"], b"")
@example(("state", "set"), ["k", "-"], b"\xff")
def test_door_cli(command: tuple[str, ...], args: list[str], stdin: bytes) -> None:
    parts = [*command, *args]
    data = b"\x00".join(_arg_bytes(arg) for arg in parts) + b"\x01" + stdin
    with case_time_limit("door_cli"):
        targets.door_cli(data)


@examples(weight=0.1)
@given(st.binary(max_size=300))
def test_door_cli_bytes(data: bytes) -> None:
    with case_time_limit("door_cli"):
        targets.door_cli(data)


# --------------------------------------------------------------------------- MCP tools

TOOL_ARGS = [
    "key",
    "value",
    "expected_version",
    "prefix",
    "to",
    "content",
    "priority",
    "type",
    "topic",
    "max_count",
    "wait_s",
    "ack",
    "receipts",
    "summary",
    "files",
    "task_id",
]
mcp_values = (
    json_values
    | st.sampled_from(TRICKY_NUMBERS)
    | st.lists(
        st.sampled_from(
            [
                "inbox/normal/1",
                "inbox/high/" + "9" * 30,
                "topic/x/low/1-1",
                "task/inbox/normal/1",
                "",
                "\ud800",
            ]
        ),
        max_size=3,
    )
)


@examples(weight=0.25)
@given(st.sampled_from(TOOL_NAMES), st.dictionaries(st.sampled_from(TOOL_ARGS), mcp_values, max_size=5))
@example("state_cas", {"key": "k", "expected_version": 10**400, "value": 1})
@example("read_messages", {"max_count": 10**30})
@example("read_messages", {"wait_s": math.nan})
@example("wait_task", {"task_id": "t1", "wait_s": 10**400})
@example("wait_task", {"task_id": "t1", "wait_s": math.nan})
@example("ack_messages", {"receipts": ["inbox/normal/" + "1" * 400]})
@example("state_set", {"key": "k", "value": "\ud800"})
@example("publish_result", {"summary": "\ud800"})
@example("send_message", {"to": "agent-b", "content": "\ud800"})
def test_mcp_tools(tool: str, args: dict[str, object]) -> None:
    try:
        data = json.dumps({"tool": tool, "args": args}).encode()
    except ValueError:
        return
    with case_time_limit("mcp"):
        targets.mcp(data)


# --------------------------------------------------------------------------- dashboard

paths = st.sampled_from(
    [
        "/api/runs",
        "/api/runs/fuzz-run/state",
        "/api/runs/fuzz-run/events",
        "/api/runs/{x}/events",
        "/api/runs/{x}/state",
        "/api/runs/fuzz-run/tasks/{x}/transcript",
        "/metrics",
        "/",
        "/static/{x}",
    ]
)
query_keys = st.sampled_from(["after", "token", "limit", "count", "x"])


@examples(weight=0.25)
@given(
    paths,
    st.text(max_size=20),
    st.lists(st.tuples(query_keys, st.sampled_from(TRICKY_NUMBERS) | st.text(max_size=20)), max_size=3),
    st.dictionaries(
        st.sampled_from(["Last-Event-ID", "Authorization", "Cookie"]),
        st.sampled_from(TRICKY_NUMBERS)
        | st.text(max_size=30)
        | st.sampled_from(["Bearer secret-token", "maos_dashboard_token=x", "Bearer "]),
        max_size=2,
    ),
)
@example("/api/runs/fuzz-run/events", "", [("after", "1" + "0" * 400)], {})
@example("/api/runs/fuzz-run/events", "", [], {"Last-Event-ID": "9" * 100})
def test_dashboard_queries(path: str, x: str, query: list[tuple[str, str]], headers: dict[str, str]) -> None:
    from urllib.parse import quote, urlencode

    target = path.replace("{x}", quote(x, safe=""))
    if query:
        target += "?" + urlencode(query, encoding="utf-8", errors="surrogatepass")
    data = target + "".join(f"\n{k}: {v}" for k, v in headers.items())
    with case_time_limit("web"):
        targets.web(data.encode("latin-1", "replace"))


# --------------------------------------------------------------------------- the event log

log_ids = st.sampled_from(["a", "b", "ghost", "x", "fuzz-log-1", ""])
plan_values = st.fixed_dictionaries(
    {
        "name": st.just("p"),
        "tasks": st.lists(
            st.fixed_dictionaries(
                {"id": log_ids, "command": st.just("true")},
                optional={"depends_on": st.lists(log_ids, max_size=2)},
            ),
            max_size=3,
        ),
    }
)


def _values_for(annotation: object) -> st.SearchStrategy[object]:
    """Values of a field's type most of the time (so that many records decode and reach the
    reducer), anything at all otherwise."""
    text = str(annotation)
    typed: st.SearchStrategy[object]
    if "Plan" in text:
        typed = plan_values
    elif "tuple" in text or "list" in text:
        typed = st.lists(log_ids, max_size=3)
    elif "dict" in text:
        typed = st.dictionaries(st.sampled_from(["db", "a", "x"]), st.sampled_from(JSON_NUMBERS), max_size=2)
    elif "bool" in text:
        typed = st.booleans()
    elif "int" in text or "float" in text:
        typed = st.integers(min_value=-1, max_value=3) | st.sampled_from(JSON_NUMBERS)
    elif "RunStatus" in text or "Literal" in text:
        typed = st.sampled_from(
            [
                "succeeded",
                "failed",
                "running",
                "fail",
                "skip",
                "fail_task",
                "requeue_task",
                "fail_run",
                "stdout",
            ]
        )
    else:
        typed = log_ids | st.text(max_size=10)
    return st.one_of(typed, typed, typed, json_values)


def _log_records() -> st.SearchStrategy[dict[str, object]]:
    """A record per event type: its required fields and some of the others."""
    from typing import get_args

    from maos.events import Event

    records = []
    for kind in get_args(get_args(Event)[0]):
        fields = {name: field for name, field in kind.model_fields.items() if name != "type"}
        records.append(
            st.fixed_dictionaries(
                {"type": st.just(kind.model_fields["type"].default)}
                | {
                    name: _values_for(field.annotation)
                    for name, field in fields.items()
                    if field.is_required()
                },
                optional={
                    name: _values_for(field.annotation)
                    for name, field in fields.items()
                    if not field.is_required()
                },
            )
        )
    return st.one_of(*records)


@examples(weight=1.0)
@given(st.lists(st.binary(max_size=200), max_size=8))
@example(
    [b'{"type": "task_ready", "task_id": "a", "ts": 1e400}', b'{"type": "task_succeeded", "task_id": 7}']
)
@example([b"[" * 100000])
def test_log_bytes(entries: list[bytes]) -> None:
    with case_time_limit("log"):
        targets.log(b"\n".join(entry.replace(b"\n", b"") for entry in entries))


@examples(weight=1.0)
@given(st.lists(_log_records(), max_size=12))
def test_log_records(records: list[dict[str, object]]) -> None:
    data = b"\n".join(json.dumps(record).encode("utf-8", "surrogatepass") for record in records)
    with case_time_limit("log"):
        targets.log(data)
