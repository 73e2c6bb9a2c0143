"""Hostile or broken plan documents: each one is exit code 2 with a line naming what is wrong,
quickly and in bounded memory; never a traceback, a hang or a MemoryError."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maos.agents.roles import load_roles
from maos.documents import DocumentError, load_yaml, read_document
from maos.errors import PlanError
from maos.modelserver.script import ScriptError, load_script
from maos.plan import load_plan, parse_plan_text
from maos.plan.planner import extract_plan_data

MEMORY_LIMIT_BYTES = 1 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


def maos(*args: str | Path, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maos", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "COLUMNS": "200", "NO_COLOR": "1"},
        preexec_fn=_limit_memory,  # a MemoryError would be a traceback: exit 1, not 2
    )


def refused(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return result.stderr


def billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for number in range(1, 10):
        name, previous = chr(ord("a") + number), chr(ord("a") + number - 1)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    # The bomb sits in a field of the wrong type: the error path used to render it.
    lines += ["name: x", "tasks:", "  - id: t", "    prompt: *j"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("command", [("plan", "validate"), ("run",)])
def test_billion_laughs_is_refused_quickly(tmp_path: Path, command: tuple[str, ...]) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs())
    started = time.monotonic()
    result = maos(*command, path, timeout_s=20)
    elapsed = time.monotonic() - started
    err = refused(result)
    assert f"{path}: its aliases (*name) expand to more than" in err
    assert elapsed < 2.0 + _startup_s(), elapsed


def _startup_s() -> float:
    """The interpreter's and the CLI's own start, measured: the limit is on the document."""
    started = time.monotonic()
    maos("--help")
    return time.monotonic() - started


def test_merge_key_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 {k0: 1}"]
    lines += [f"a{n}: &a{n} {{<<: [{', '.join([f'*a{n - 1}'] * 9)}], k{n}: 1}}" for n in range(1, 12)]
    path = tmp_path / "merge.yaml"
    path.write_text("\n".join(lines) + "\nname: x\ntasks:\n  - id: a\n")
    assert "aliases (*name) expand" in refused(maos("plan", "validate", path, timeout_s=20))


def test_deep_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"name": "x", "tasks": ' + "[" * 10_000 + "]" * 10_000 + "}")
    assert refused(maos("plan", "validate", path)) == f"{path}: nested more than 64 levels deep\n"


def test_deep_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("name: x\ntasks:\n" + "".join(f"{'  ' * n}- \n" for n in range(200)))
    assert "nested more than 64 levels deep" in refused(maos("plan", "validate", path))


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/urandom", "fifo", "directory", "socket"])
def test_special_files_are_refused_without_reading(tmp_path: Path, special: str) -> None:
    with contextlib.ExitStack() as stack:
        _check_special(tmp_path, special, stack)


def _check_special(tmp_path: Path, special: str, stack: contextlib.ExitStack) -> None:
    if special == "fifo":
        path = tmp_path / "plan.yaml"
        os.mkfifo(path)  # nobody writes: reading it would block forever
    elif special == "directory":
        path = tmp_path / "plans.yaml"
        path.mkdir()
    elif special == "socket":
        import socket

        path = tmp_path / "s.yaml"
        server = stack.enter_context(socket.socket(socket.AF_UNIX))
        server.bind(str(path))
    else:
        path = Path(special)
    err = refused(maos("plan", "validate", path, timeout_s=20))
    assert err.startswith(f"{path}: is ")
    assert "regular file" in err or "directory" in err
    assert refused(maos("run", path, timeout_s=20)) == err


def test_a_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * (16 * 1024 * 1024) + b"\n")
    assert "larger than the limit of 16777216 bytes" in refused(maos("plan", "validate", path))


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"name": "x", "tasks": [{"id": "a"}, {"id": "b", "command": "echo \\u0000hi"}]}', "command"),
        ('{"name": "x", "tasks": [{"id": "a"}, {"id": "b", "command": ["echo", "x\\u0000"]}]}', "command"),
        ('{"name": "x", "tasks": [{"id": "a"}, {"id": "b", "prompt": "p\\u0000"}]}', "prompt"),
        ('{"name": "x", "tasks": [{"id": "a"}, {"id": "b", "model": "m\\u0000"}]}', "model"),
        ('{"name": "x", "tasks": [{"id": "a"}, {"id": "b", "allowed_tools": ["\\u0000"]}]}', "allowed_tools"),
        ('{"name": "x", "tasks": [{"id": "a"}, {"id": "b", "role": "r\\u0000"}]}', "role"),
        ('{"name": "x", "tasks": [{"id": "a"}, {"id": "b", "title": "t\\u0000"}]}', "title"),
    ],
)
def test_nul_bytes_are_refused_naming_task_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(text)
    err = refused(maos("plan", "validate", path))
    assert err.startswith(f"{path}: task 'b' (tasks[1]): field '{field}': ")
    assert "must not contain a NUL byte" in err


def test_nul_in_a_yaml_command_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text('name: x\ntasks:\n  - id: a\n    command: "echo \\0"\n')
    assert "task 'a' (tasks[0]): field 'command':" in refused(maos("plan", "validate", path))


@pytest.mark.parametrize("task_id", ["a..b", "x.lock", "X.LOCK", "end.", "a" * 65, "a@1", "a/b"])
def test_ids_git_refuses_are_refused(tmp_path: Path, task_id: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"name": "x", "tasks": [{"id": task_id}]}))
    assert "(tasks[0]): field 'id': " in refused(maos("plan", "validate", path))


def test_ids_that_differ_only_in_case_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"name": "x", "tasks": [{"id": "Build"}, {"id": "build"}]}))
    assert "task 'build' (tasks[1]): field 'id': id 'build' differs from 'Build'" in refused(
        maos("plan", "validate", path)
    )


def test_replica_ids_must_be_free_and_valid(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    tasks = [
        {"id": "vote", "replicas": 2, "command": "echo 1"},
        {"id": "vote.r2", "command": "echo 2"},
        {"id": "q", "replicas": 2, "quorum": 3, "command": "echo 3"},
        {"id": "l" * 62, "replicas": 3, "command": "echo 4"},
    ]
    path.write_text(json.dumps({"name": "x", "tasks": tasks}))
    err = refused(maos("plan", "validate", path))
    assert "task 'vote' (tasks[0]): field 'replicas': replica 'vote.r2'" in err
    assert "task 'q' (tasks[2]): field 'quorum': quorum 3 is more than replicas (2)" in err
    assert "would be longer than 64 characters" in err


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "x", "tasks": [{"id": "a", "priority": ' + "1" * 5000 + "}]}",
        '{"name": "x\\ud800", "tasks": [{"id": "a", "prompt": "\\ud800"}]}',
    ],
)
def test_values_python_cannot_use_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(text)
    refused(maos("plan", "validate", path))


def test_existing_valid_ids_still_load() -> None:
    plan = parse_plan_text("name: x\ntasks:\n  - id: build.1\n  - id: build\n  - id: a-b_c.d.2\n", "p")
    assert isinstance(plan, dict)


# --------------------------------------------------------------------------- the helper


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(DocumentError, match=r"line 2, column \d+: alias \*t refers to a collection it is in"):
        load_yaml("tasks: &t\n  - *t\n")


def test_alias_that_deepens_past_the_limit_is_refused() -> None:
    deep = "a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n"
    with pytest.raises(DocumentError, match="nested more than 64 levels deep"):
        load_yaml(deep)


def test_aliases_within_budget_still_work() -> None:
    text = "defaults: &d {role: r, max_attempts: 2}\ntasks:\n" + "".join(
        f"  - {{<<: *d, id: t{n}}}\n" for n in range(100)
    )
    data = load_yaml(text)
    assert isinstance(data, dict)
    assert data["tasks"][99] == {"role": "r", "max_attempts": 2, "id": "t99"}


def test_one_long_value_named_by_many_aliases_is_refused(tmp_path: Path) -> None:
    """1 MiB named by 401 aliases passed the node count (an aliased string is one node) and
    became 400 MB of prompts in the run's log, files and checkpoints: refused at load time,
    from `maos plan validate` and `maos run` alike, before any run starts."""
    text = "name: x\ntasks:\n  - id: a\n    command: 'true'\n    prompt: &p " + "x" * (1 << 20) + "\n"
    text += "".join(f"  - id: t{n}\n    command: 'true'\n    prompt: *p\n" for n in range(400))
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    for command in (("plan", "validate", path), ("run", path)):
        done = maos(*command, timeout_s=60)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "aliases (*name) repeat more than" in done.stderr
        assert "Traceback" not in done.stderr
        assert len(done.stderr) < 2000
    # a shared prompt named by a few hundred tasks still loads
    shared = "x" * 20_000
    fine = load_yaml("p: &p " + shared + "\nuses:\n" + "".join("  - *p\n" for _ in range(300)))
    assert isinstance(fine, dict)
    assert len(fine["uses"]) == 300


def test_a_million_problems_are_fifty_lines_and_a_count(tmp_path: Path) -> None:
    """10,000 tasks with 80 unknown dependencies each, and a 20,000-character one: the
    answer is the first problems, each cut short, and how many more there are (it was
    800,002 lines, 88 MB, and 670 MB of memory)."""
    long = "y" * 20_000
    lines = ["name: x", "tasks:"]
    for n in range(10_000):
        deps = ", ".join([long if n == 0 else f"u{n}-{d}" for d in range(80)])
        lines += [f"  - id: t{n}", "    command: 'true'", f"    depends_on: [{deps}]"]
    path = tmp_path / "plan.yaml"
    path.write_text("\n".join(lines) + "\n")
    done = maos("plan", "validate", path, timeout_s=120)
    assert done.returncode == 2
    problems = done.stderr.strip().splitlines()
    assert len(problems) < 60, len(problems)
    assert "… and 799950 more problems" in done.stderr
    assert "(20000 characters)" in problems[0]
    assert max(len(line) for line in problems) < 1200
    assert "Traceback" not in done.stderr


def test_escape_sequences_in_a_plan_never_reach_the_terminal(tmp_path: Path) -> None:
    """A plan's name, description and roles, and a role file's name, are outside text: a
    window title (OSC 0), a clipboard write (OSC 52), a screen clear, a C1 CSI and a bidi
    override are shown escaped by `maos plan validate`, `plan show` and `agents types`."""
    nasty = "\x1b]0;PWNED\x07\x1b[2J\x1b]52;c;aGk=\x07\x9b31m\u202e"
    plan = {
        "name": f"N{nasty}",
        "description": f"D{nasty}",
        "tasks": [{"id": "a", "role": f"r{nasty}", "command": "true"}],
    }
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    roles = tmp_path / ".claude" / "agents"
    roles.mkdir(parents=True)
    (roles / "evil.md").write_text(
        f'---\nname: "e{nasty.encode("unicode_escape").decode()}"\ndescription: x\n---\nbody\n'
    )
    for command in (
        ("plan", "validate", path),
        ("plan", "show", path),
        ("agents", "types", "--project", tmp_path),
    ):
        done = maos(*command)
        assert done.returncode in (0, 1), (command, done.stderr)
        for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert raw not in done.stdout + done.stderr, (command, raw, done.stdout, done.stderr)
    shown = maos("plan", "show", path).stdout
    assert "\\x1b]0;PWNED" in shown  # escaped, not lost


def test_read_document_reads_at_most_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 11)
    assert read_document(path, max_bytes=11) == b"x" * 11
    with pytest.raises(DocumentError, match="larger than the limit of 10 bytes"):
        read_document(path, max_bytes=10)


def test_load_plan_raises_plan_error_for_every_refusal(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs())
    with pytest.raises(PlanError, match="aliases"):
        load_plan(path)


def test_role_front_matter_bomb_is_a_problem_line(tmp_path: Path) -> None:
    agents = tmp_path / ".claude" / "agents"
    agents.mkdir(parents=True)
    laughs = billion_laughs().replace("name: x\n", "").replace("tasks:\n  - id: t\n    prompt: *j\n", "")
    (agents / "bomb.md").write_text(f"---\nname: bomb\n{laughs}description: *j\n---\nbody\n")
    (agents / "huge.md").write_text("---\nname: huge\n---\n" + "x" * 70_000 + "\n")
    os.mkfifo(agents / "fifo.md")
    (agents / "ok.md").write_text("---\nname: ok\n---\nhello\n")
    catalog = load_roles(tmp_path, user_dir=None)
    assert list(catalog.roles) == ["ok"]
    problems = "\n".join(catalog.problems)
    assert f"{agents / 'bomb.md'}: front matter is refused: its aliases" in problems
    assert f"{agents / 'huge.md'}: the body (the role's system prompt) is 70000 bytes" in problems
    assert f"{agents / 'fifo.md'}: is a FIFO (named pipe), not a regular file" in problems


def test_model_server_script_bomb_is_a_script_error(tmp_path: Path) -> None:
    path = tmp_path / "script.yaml"
    path.write_text(billion_laughs().replace("name: x\ntasks:\n  - id: t\n    prompt: *j\n", "rules: *j\n"))
    with pytest.raises(ScriptError, match="aliases"):
        load_script(path)
    os.mkfifo(tmp_path / "fifo.yaml")
    with pytest.raises(ScriptError, match="cannot read: is a FIFO"):
        load_script(tmp_path / "fifo.yaml")


def test_planner_answer_deeply_nested_is_a_plan_error() -> None:
    answer = "Here: " + '{"a": ' * 5000 + "1" + "}" * 5000
    with pytest.raises(PlanError):
        extract_plan_data(answer)
    with pytest.raises(PlanError, match="nested more than 64"):
        extract_plan_data("```json\n" + "[" * 10_000 + "]" * 10_000 + "\n```")


@pytest.mark.parametrize(
    "plan",
    [
        {"agents": [{"role": "coder\n"}, {"role": "coder"}], "tasks": [{"id": "a", "command": "true"}]},
        {"resources": {"gpu\n": 2}, "tasks": [{"id": "a", "command": "true", "resources": {"gpu\n": 1}}]},
        {"tasks": [{"id": "a", "command": "true", "env": {"NAME\n": "x"}}]},
    ],
)
def test_a_name_ending_in_a_newline_is_refused(tmp_path: Path, plan: dict[str, object]) -> None:
    """A ``$``-anchored pattern used with ``re.match`` also matches before a final newline:
    ``coder\\n`` was a second agent id beside ``coder``. Names are matched whole."""
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"name": "x", **plan}))
    with pytest.raises(PlanError):
        load_plan(path)


def test_stored_names_ending_in_a_newline_are_refused() -> None:
    from maos.blobs import check_name
    from maos.checkpoint.codec import check_run_id
    from maos.errors import BlobError, CheckpointError

    with pytest.raises(BlobError):
        check_name("runs/r1\n")
    with pytest.raises(CheckpointError):
        check_run_id("r1\n")
