"""One CLI contract, checked on the command tree as the app builds it (no list of commands
here): every command that prints data takes ``--json``; choices are enums; units are in
option names; one Redis URL option; one mapping of errors to exit codes. Then real commands
on SQLite in temporary folders, their ``--json`` output parsed, and bad input refused with
exit 2 naming the field, never a traceback."""

from __future__ import annotations

import asyncio
import enum
import importlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, get_args

import pytest
import typer
from typer.core import TyperGroup

from maos.cli import _app, _choices
from maos.cli._common import (
    EXIT_CANCELLED,
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_REFUSED,
    EXIT_USAGE,
    exit_code,
    report_error,
)
from maos.errors import (
    MaosError,
    PermissionDenied,
    PlanError,
    RunNotFound,
    StateConflict,
    StoreUnavailable,
)

MAOS = [sys.executable, "-m", "maos"]
ROOT = Path(__file__).resolve().parents[1]

ACTION_ONLY: dict[str, str] = {
    "mcp": "its stdout is the MCP protocol itself (JSON-RPC), spoken to the agent's CLI",
}
"""Commands that print no data of their own, so no ``--json``; each with the reason."""

JSON_LINES = frozenset({"logs", "worker", "serve", "supervisor", "dashboard", "model-server", "msg read"})
"""Commands that print as things happen: their ``--json`` is one JSON object per line."""

CHOICES = {
    "--on-budget": _choices.OnBudget,
    "--on-anomaly": _choices.OnAnomaly,
    "--on-deadlock": _choices.OnDeadlock,
    "--permission-mode": _choices.PermissionMode,
    "--priority": _choices.Priority,
    "--template": _choices.Template,
    "--backend": _choices.BusBackend,
}
"""Options whose values are a fixed set: each takes exactly its enum's values."""

UNITS = {"seconds": "-s", "usd": "-usd", "per second": "-per-s"}
"""A unit an option's help speaks of, and the suffix its name then ends with."""


def commands() -> dict[str, Any]:
    """Every command of ``maos``, by its words (``"msg read"``), found by walking the app."""
    _app._register(["maos"])
    found: dict[str, Any] = {}

    def walk(command: Any, words: tuple[str, ...]) -> None:
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                walk(sub, (*words, name))
        else:
            found[" ".join(words)] = command

    walk(typer.main.get_group(_app.app), ())
    return found


def options(command: Any) -> dict[str, Any]:
    """The command's options by each of their names (``--json``, ``-n``…)."""
    return {name: param for param in command.params for name in (*param.opts, *param.secondary_opts)}


def help_record(command: Any, param: Any) -> tuple[str, str]:
    ctx = command.make_context(command.name or "maos", [], resilient_parsing=True)
    return param.get_help_record(ctx) or ("", "")


COMMANDS = commands()


# --------------------------------------------------------------------------- the tree


def test_the_tree_is_found() -> None:
    assert {"run", "status", "logs", "clean", "plan validate", "msg read", "bench bus"} <= set(COMMANDS)
    assert len(COMMANDS) > 40


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_that_prints_data_takes_json(name: str) -> None:
    has_json = "--json" in options(COMMANDS[name])
    if name in ACTION_ONLY:
        assert not has_json, f"{name} takes --json: take it off the action-only list"
        return
    assert has_json, f"`maos {name}` prints data but takes no --json (or belongs in ACTION_ONLY, with why)"
    _, text = help_record(COMMANDS[name], options(COMMANDS[name])["--json"])
    if name in JSON_LINES:
        assert "per line" in text, f"{name}: --json should say it prints JSON lines: {text!r}"
    else:
        assert "line" not in text, f"{name}: --json prints one document: {text!r}"


def test_the_lists_name_real_commands() -> None:
    assert set(COMMANDS) >= set(ACTION_ONLY) | JSON_LINES


# --------------------------------------------------------------------------- options


def all_options() -> Iterator[tuple[str, str, Any]]:
    for name, command in COMMANDS.items():
        for param in command.params:
            if param.param_type_name == "option":
                yield name, max(param.opts, key=len), param


def test_choice_options_are_enums_of_exactly_their_values() -> None:
    seen = set()
    for name, option, param in all_options():
        if option not in CHOICES:
            continue
        seen.add(option)
        shown, _ = help_record(COMMANDS[name], param)
        values = [member.value for member in CHOICES[option]]
        assert re.search(rf"<(list\[)?{re.escape('|'.join(values))}\]?>$", shown), (name, option, shown)
    assert seen == set(CHOICES)


def test_no_other_option_is_a_free_string_of_listed_choices() -> None:
    """An option whose help lists alternatives ('a' or 'b', a | b) is an enum, or checked
    while parsing by a callback."""
    listed = re.compile(r"'[\w-]+'[^.]* or '[\w-]+'|\b\w+ \| \w+\b|\b\w+\|\w+\b")
    for name, option, param in all_options():
        shown, text = help_record(COMMANDS[name], param)
        if option in CHOICES or re.search(r"<[^>]*\|[^>]*>", shown) or param.callback is not None:
            continue
        assert not listed.search(f"{shown} {text}"), f"`maos {name} {option}` lists choices: make it an enum"


def test_the_choice_enums_are_the_cores_choices() -> None:
    from maos.bus import Priority
    from maos.model import PermissionMode, RunConfig
    from maos.plan.templates import list_templates

    def literal(field: str) -> tuple[str, ...]:
        return get_args(RunConfig.model_fields[field].annotation)

    def values(choice: type[enum.StrEnum]) -> tuple[str, ...]:
        return tuple(member.value for member in choice)

    assert values(_choices.OnBudget) == literal("on_budget")
    assert values(_choices.OnAnomaly) == literal("on_anomaly")
    assert values(_choices.OnDeadlock) == literal("on_deadlock")
    assert values(_choices.PermissionMode) == get_args(PermissionMode)
    assert values(_choices.Priority) == tuple(member.value for member in Priority)
    assert values(_choices.Template) == ("auto", *(template.name for template in list_templates()))


def test_units_are_in_option_names() -> None:
    for name, option, param in all_options():
        _, text = help_record(COMMANDS[name], param)
        for unit, suffix in UNITS.items():
            if re.search(rf"\b{unit}\b", text.lower()):
                assert option.endswith(suffix), f"`maos {name} {option}`: its help speaks of {unit}"
    durations = [option for _, option, _ in all_options() if option.endswith("-s")]
    assert {"--lease-s", "--checkpoint-every-s", "--dashboard-linger-s", "--wait-s", "--timeout-s"} <= set(
        durations
    )


def test_one_redis_url_option_and_one_store_option() -> None:
    redis = {(name, option) for name, option, _ in all_options() if "redis" in option}
    assert redis == {("doctor", "--redis-url"), ("bench bus", "--redis-url")}

    def checks(name: str) -> set[str]:
        return {param.callback.__qualname__ for _, option, param in all_options() if option == name}

    assert checks("--redis-url") == {"_check_redis_url"}
    assert checks("--store") == {"_check_store"}


# --------------------------------------------------------------------------- exit codes


def test_every_error_in_the_exit_code_table_is_a_maos_error() -> None:
    for qualified in EXIT_CODES:
        module, _, name = qualified.rpartition(".")
        assert issubclass(getattr(importlib.import_module(module), name), MaosError), qualified


def test_the_exit_code_of_each_kind_of_error() -> None:
    from maos.agents.workspace import GitError
    from maos.modelserver.script import ScriptError

    assert exit_code(PlanError(["p.yaml: field 'tasks': required"])) == EXIT_USAGE
    assert exit_code(RunNotFound("no run 'x'")) == EXIT_USAGE
    assert exit_code(ScriptError("s.yaml: rule 1: field 'reply'")) == EXIT_USAGE
    assert exit_code(PermissionDenied("not yours")) == EXIT_REFUSED
    assert exit_code(StateConflict("lost", key="k", attempts=3)) == EXIT_FAILED  # not a StateError's 2
    assert exit_code(StoreUnavailable("redis://h:1 does not answer")) == EXIT_FAILED
    assert exit_code(GitError("git failed")) == EXIT_FAILED  # a MaosError defined elsewhere
    assert exit_code(ExceptionGroup("tasks", [ValueError("x"), RunNotFound("no run")])) == EXIT_USAGE
    assert exit_code(ValueError("a bug")) == EXIT_INTERNAL
    assert exit_code(KeyboardInterrupt()) == EXIT_CANCELLED
    assert exit_code(asyncio.CancelledError()) == EXIT_CANCELLED


def test_an_unexpected_error_is_one_line_and_its_traceback_goes_to_a_private_file(
    capfd: pytest.CaptureFixture[str],
) -> None:
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError as exc:
        with pytest.raises(SystemExit) as exited:
            report_error(exc)
    assert exited.value.code == EXIT_INTERNAL
    (line,) = capfd.readouterr().err.splitlines()
    assert line.startswith("error: internal error: ZeroDivisionError: division by zero; the details are in ")
    crash = Path(re.search(r"the details are in (\S+) ", line).group(1))  # type: ignore[union-attr]
    try:
        assert crash.stat().st_mode & 0o077 == 0
        assert "Traceback" in crash.read_text()
    finally:
        crash.unlink()


def test_a_plan_error_prints_each_problem_on_its_own_line(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        report_error(PlanError(["p.yaml: task 'a': field 'x': bad", "p.yaml: task 'b': field 'y': \x1b[2J"]))
    assert exited.value.code == EXIT_USAGE
    assert (
        capfd.readouterr().err == "p.yaml: task 'a': field 'x': bad\np.yaml: task 'b': field 'y': \\x1b[2J\n"
    )


# --------------------------------------------------------------------------- real commands


def maos(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60, pipe_to: str = ""
) -> subprocess.CompletedProcess[str]:
    """``maos ARGS`` in ``cwd``; ``pipe_to``: a shell command its stdout is piped into."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("MAOS_")}
    argv = [*MAOS, *args]
    return subprocess.run(
        ["sh", "-c", f"{shlex.join(argv)} | {pipe_to}"] if pipe_to else argv,
        cwd=cwd,
        env=inherited | {"COLUMNS": "200", "NO_COLOR": "1"} | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def parsed(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)


FIRST_RECEIPT = 'import json; print(json.loads(open("read.jsonl").readline())["receipt"])'
PLAN = f"""\
name: contract
tasks:
  - id: talk
    command: |
      set -e
      maos msg subscribe news --json > subscribed.json
      maos result publish "talked" --json > published.json
      maos msg send task:listen '{{"hi": 1}}' --priority high --json > sent.json
  - id: listen
    depends_on: [talk]
    command: |
      set -e
      maos msg read --no-ack --json --wait-s 20 > read.jsonl
      receipt=$({sys.executable} -c '{FIRST_RECEIPT}')
      maos msg ack "$receipt" --json > acked.json
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A folder whose default store holds one finished run of ``PLAN``."""
    here = tmp_path_factory.mktemp("contract")
    (here / "plan.yaml").write_text(PLAN)
    return here, parsed(maos("run", "plan.yaml", "--json", cwd=here, timeout=120))


def test_run_status_runs_and_logs_print_json(ran: tuple[Path, dict[str, Any]]) -> None:
    here, summary = ran
    assert summary["status"] == "succeeded", summary
    run_id = summary["run_id"]
    status = parsed(maos("status", "--json", cwd=here))
    assert (status["run_id"], status["status"], status["counts"]) == (run_id, "succeeded", {"succeeded": 2})
    [listed] = parsed(maos("runs", "--json", cwd=here))
    assert (listed["run_id"], listed["status"]) == (run_id, "succeeded")
    logs = maos("logs", run_id, "--json", cwd=here)
    events = [json.loads(line) for line in logs.stdout.splitlines()]
    assert events[0]["type"] == "run_started"
    assert "run_finished" in [event["type"] for event in events]
    assert all(event["run_id"] == run_id for event in events if "run_id" in event)


def test_the_door_commands_print_json_inside_a_run(ran: tuple[Path, dict[str, Any]]) -> None:
    here, _ = ran
    subscribed = json.loads((here / "subscribed.json").read_text())
    assert subscribed["topic"] == "news"
    assert subscribed["added"] is True
    published = json.loads((here / "published.json").read_text())
    assert (published["task_id"], published["summary"]) == ("talk", "talked")
    sent = json.loads((here / "sent.json").read_text())
    [read] = [json.loads(line) for line in (here / "read.jsonl").read_text().splitlines()]
    assert (read["id"], read["content"], read["priority"]) == (sent["id"], {"hi": 1}, "high")
    assert json.loads((here / "acked.json").read_text()) == {"receipts": 1, "acked": 1}


def test_more_commands_print_one_json_document(ran: tuple[Path, dict[str, Any]]) -> None:
    here, summary = ran
    valid = parsed(maos("plan", "validate", "plan.yaml", "--json", cwd=here))
    assert (valid["ok"], valid["tasks"], valid["problems"]) == (True, 2, [])
    assert parsed(maos("plan", "show", "plan.yaml", "--json", cwd=here))["critical_path"] == [
        "talk",
        "listen",
    ]
    assert "tasks" in parsed(maos("plan", "fields", "--json", cwd=here))["properties"]
    assert summary["run_id"] in parsed(maos("checkpoint", "list", "--json", cwd=here))
    assert parsed(maos("agents", "stats", "--json", cwd=here))["runs_recorded"] == 1
    audit = parsed(maos("audit", "--json", cwd=here))
    assert {record["action"] for record in audit["records"]} >= {"result.publish", "message.send"}
    cleaned = parsed(maos("clean", "--json", cwd=here))
    assert cleaned == {
        "repository": None,
        "removed_worktrees": 0,
        "deleted_branches": [],
        "kept_branches": {},
    }
    names = [example["name"] for example in parsed(maos("examples", "list", "--json", cwd=here))]
    assert "plans" in names


def test_an_invalid_plan_is_a_json_document_too_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\ntasks: [{id: a, command: 'true', depends_on: [b]}]\n")
    done = maos("plan", "validate", "bad.yaml", "--json", cwd=tmp_path)
    assert done.returncode == EXIT_USAGE
    document = json.loads(done.stdout)
    assert document["ok"] is False
    assert any("'b'" in problem for problem in document["problems"])
    assert done.stderr.splitlines() == document["problems"]  # the same lines, for people


def answered(url: str) -> None:
    """Wait until ``url`` answers (any HTTP status): the server is up and handles signals."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=10).close()
            return
        except urllib.error.HTTPError:
            return  # an answer all the same
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def read_line(stream: IO[str] | None) -> dict[str, Any]:
    assert stream is not None
    line = stream.readline()
    assert line, "the process ended without a line"
    return dict(json.loads(line))


@pytest.mark.parametrize(
    ("command", "first"),
    [
        (["worker", "--name", "w1"], "started"),
        (["supervisor", "--name", "s1", "--poll-s", "0.2"], "started"),
        (["dashboard", "--port", "0"], "listening"),
        (
            [
                "model-server",
                "--port",
                "0",
                "--script",
                str(ROOT / "src/maos/examples/model-scripts/rehearsal.yaml"),
            ],
            "listening",
        ),
    ],
    ids=lambda part: part[0] if isinstance(part, list) else part,
)
def test_long_running_commands_print_json_lines(tmp_path: Path, command: list[str], first: str) -> None:
    env = {**{n: v for n, v in os.environ.items() if not n.startswith("MAOS_")}, "NO_COLOR": "1"}
    env["MAOS_STORE"] = f"sqlite:///{tmp_path / 'maos.db'}"
    with subprocess.Popen(
        [*MAOS, *command, "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            started = read_line(process.stdout)
            assert started.get("event", first) == first, started
            if first == "listening":
                assert started["url"].startswith("http://127.0.0.1:")
                answered(started["url"])  # serving (and handling SIGTERM) by now
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    lines = [json.loads(line) for line in out.splitlines()]
    if command[0] != "model-server":  # it stops with the server, saying nothing more
        assert lines[-1]["event"] == "stopped", lines
    if command[0] == "worker":
        assert lines[-1]["completed"] == 0


# --------------------------------------------------------------------------- bad input, errors


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["run", "plan.yaml", "--on-budget", "later"], "'--on-budget'"),
        (["run", "plan.yaml", "--on-anomaly", "ignore"], "'--on-anomaly'"),
        (["run", "plan.yaml", "--max-cost-usd", "-1"], "'--max-cost-usd'"),
        (["plan", "new", "Fix it", "--template", "nope"], "'--template'"),
        (["doctor", "--redis-url", "http://127.0.0.1:6379"], "'--redis-url'"),
        (["bench", "bus", "--backend", "postgres"], "'--backend'"),
        (["status", "nosuchrun"], "no run 'nosuchrun'"),
        (["plan", "validate", "missing.yaml"], "missing.yaml: file not found"),
        (["run", "plan.yaml", "--agent", "coder:many"], "--agent: "),
        (["worker", "--name", ".."], "'--name'"),  # a folder name: .maos/warm/NAME
        (["serve", "--name", "/tmp"], "'--name'"),
        (["supervisor", "--name", "a/b"], "'--name'"),
        (["status", "../../etc"], "'../../etc' is not a run id"),
        (["status", "\udcff"], "is not a run id"),  # argv bytes that are not UTF-8
        (["logs", "--tail", "99999999999999999999"], "'--tail'"),
        (["runs", "--store", "redis://[::1"], "'--store'"),
        (["runs", "--store", "redis://127.0.0.1/\u0663"], "is not a Redis database number"),  # Arabic 3
        (["purge", "--older-than", "\u0663d"], "--older-than"),
        (["audit", "--audit", "."], "'--audit'"),  # a folder
        (["audit", "--audit", "/dev/zero"], "is a character device, not a regular file"),
        (["bench", "bus", "--duration-s", "inf"], "'--duration-s'"),  # would measure for ever
        (["run", "plan.yaml", "--grace-s", "inf"], "'--grace-s'"),
        (["run", "plan.yaml", "--retry-base-s", "-inf"], "'--retry-base-s'"),
        (["run", "plan.yaml", "--door-calls-per-attempt", "0"], "--door-calls-per-attempt: Input"),
        (["run", "plan.yaml", "--door-bytes-per-attempt", "9" * 20], "--door-bytes-per-attempt: Input"),
        (["agents", "types", "--user-dir", "loop"], "--user-dir: Symlink loop"),
        (["agents", "types", "--user-dir", "x/" * 3000], "--user-dir: File name too long"),
    ],
    ids=lambda part: " ".join(part) if isinstance(part, list) else None,
)
def test_bad_input_is_exit_2_naming_the_field(tmp_path: Path, args: list[str], names: str) -> None:
    (tmp_path / "plan.yaml").write_text("name: p\ntasks: [{id: a, command: 'true'}]\n")
    (tmp_path / "loop").symlink_to("loop")
    done = maos(*args, cwd=tmp_path)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert names in " ".join(done.stderr.replace("│", " ").split())
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_clean_in_a_deleted_directory_is_exit_2_without_a_traceback(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    process = subprocess.run(
        ["sh", "-c", f"cd {gone} && rmdir {gone} && exec {sys.executable} -m maos clean"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == EXIT_USAGE
    assert (
        process.stderr
        == "error: the current directory no longer exists (it was deleted): cd to one that does\n"
    )


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True
    )


def test_clean_branches_deletes_what_it_can_and_names_what_git_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", "start")
    git(repo, "branch", "maos/a")
    git(repo, "branch", "maos/c")
    git(repo, "worktree", "add", "-q", "-b", "maos/b", str(tmp_path / "elsewhere"))  # checked out: kept
    done = maos("clean", "--branches", "--json", cwd=repo)
    assert done.returncode == EXIT_FAILED, done.stderr
    cleaned = json.loads(done.stdout)
    assert cleaned["deleted_branches"] == ["maos/a", "maos/c"]
    assert list(cleaned["kept_branches"]) == ["maos/b"]
    assert "checked out" in cleaned["kept_branches"]["maos/b"]
    human = maos("clean", "--branches", cwd=repo)
    assert human.returncode == EXIT_FAILED
    assert human.stdout == "removed 0 worktree(s), deleted 0 branch(es)\n"
    assert human.stderr.startswith("kept maos/b: git branch -D maos/b failed")
    assert "Traceback" not in human.stderr


def test_a_command_ends_with_its_output_whole_and_its_exit_code(tmp_path: Path) -> None:
    """``main`` skips the interpreter's teardown (``os._exit``) but not what matters of it:
    buffered output arrives whole through a pipe, ``atexit`` handlers run, the exit code is
    the command's; a reader that closes the pipe early gets no traceback."""
    marker = tmp_path / "atexit-ran"
    program = (
        "import atexit, sys\n"
        "from maos.cli._app import _leave\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
        "for _ in range(50): sys.stdout.write('x' * 100)\n"  # in the pipe's buffer, not written yet
        "sys.stderr.write('said')\n"
        "_leave(SystemExit(3))\n"
    )
    left = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60, check=False)
    assert (left.returncode, len(left.stdout), left.stderr) == (3, 5_000, b"said")
    assert marker.read_text() == "yes"
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [{id: a, command: true, bogus: 1}]\n")
    refused = maos("plan", "validate", str(bad), cwd=tmp_path)
    assert refused.returncode == EXIT_USAGE
    assert "bogus" in refused.stderr
    closed = maos("plan", "fields", "--json", cwd=tmp_path, pipe_to="head -c 10")
    assert len(closed.stdout) == 10
    assert "Traceback" not in closed.stderr


@pytest.mark.parametrize("how", ["console script", "python -m maos"])
def test_ctrl_c_while_maos_starts_exits_130_without_a_traceback(how: str) -> None:
    """SIGINT while the command's modules load (a few tenths of a second) is exit 130, quietly;
    a program that imports MAOS keeps Python's own handler."""
    pretend = (
        'sys.argv[0] = "/usr/bin/maos"'
        if how == "console script"
        else 'sys.modules["__main__"].__spec__ = __import__("importlib.util").util.find_spec("maos.__main__")'
    )
    script = (
        "import os, signal, sys, time\n"
        f"{pretend}\n"
        "import maos.cli\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(10)\n"
    )
    done = python_c(script)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    library = python_c("import signal, maos.cli; print(signal.getsignal(signal.SIGINT).__name__)")
    assert library.stdout.strip() == "default_int_handler"


def python_c(program: str) -> subprocess.CompletedProcess[str]:
    """``python -c program``, its output as text."""
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_collector_is_off_while_maos_starts_and_on_with_its_heap_frozen_once_the_command_runs() -> None:
    """``maos.cli._startup``: no cyclic collection while the modules load (they made ~130 that
    found nothing); the command runs with the collector on and what start-up made frozen. A
    program that imports MAOS keeps its collector as it was."""
    script = (
        "import atexit, gc, sys\n"
        'sys.argv = ["/usr/bin/maos", "plan", "fields", "--json"]\n'
        "import maos.cli\n"
        'print("starting", gc.isenabled(), file=sys.stderr)\n'
        "def ran():\n"
        '    print("ran", gc.isenabled(), gc.get_freeze_count() > 10_000, file=sys.stderr)\n'
        "atexit.register(ran)\n"
        "maos.cli.main()\n"
    )
    done = python_c(script)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["starting False", "ran True True"]
    library = python_c("import gc, maos.cli; print(gc.isenabled(), gc.get_freeze_count())")
    assert library.stdout.split() == ["True", "0"]


def test_a_child_spawned_by_the_maos_program_keeps_python_s_collector_and_ctrl_c(tmp_path: Path) -> None:
    """A ``multiprocessing`` child started with "spawn" imports the ``maos`` script again (as
    ``__mp_main__``, with its ``argv[0]``) but runs no command: it is not the program, so its
    collector stays on and Ctrl-C raises KeyboardInterrupt (``maos bench bus`` starts such)."""
    script = tmp_path / "maos"
    script.write_text(
        "import gc, multiprocessing, signal\n"
        "import maos.cli\n"
        "def child(queue):\n"
        "    queue.put((gc.isenabled(), signal.getsignal(signal.SIGINT).__name__))\n"
        'if __name__ == "__main__":\n'
        '    context = multiprocessing.get_context("spawn")\n'
        "    queue = context.Queue()\n"
        "    process = context.Process(target=child, args=(queue,))\n"
        "    process.start()\n"
        "    print(*queue.get())\n"
        "    process.join()\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "default_int_handler"]
