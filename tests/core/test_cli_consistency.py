"""One CLI: run ids (and unique prefixes) resolved the same way by every command, malformed
``--store`` URLs refused alike, ``--version``, ``-v`` after the command, grouped help, full
run ids in ``maos runs``. Real subprocesses, as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from maos.cli._app import _hoist_global_options
from maos.cli._ids import match_id
from maos.errors import RunNotFound, StoreError
from maos.store import check_store_url

MAOS = [sys.executable, "-m", "maos"]


def maos(
    *args: str, cwd: Path, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    inherited = {name: value for name, value in os.environ.items() if name != "MAOS_STORE"}
    full_env = inherited | {"COLUMNS": "200", "NO_COLOR": "1"} | (env or {})
    return subprocess.run(
        [*MAOS, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=full_env
    )


def one_line(text: str) -> str:
    """stderr with rich's box drawing and line breaks folded away."""
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").replace("─", " ").split())


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A directory whose default store holds two finished runs (with checkpoints)."""
    here = tmp_path_factory.mktemp("runs")
    (here / "plan.yaml").write_text(
        "name: p\ntasks:\n  - id: build\n    command: 'echo built'\n  - id: test\n"
        "    depends_on: [build]\n    command: 'echo tested'\n"
    )
    ids = []
    for _ in range(2):
        done = maos("run", "plan.yaml", "--json", cwd=here)
        assert done.returncode == 0, done.stderr
        ids.append(json.loads(done.stdout)["run_id"])
    return here, ids


def unique_prefix(run_id: str, others: list[str]) -> str:
    for size in range(1, len(run_id)):
        if not any(other.startswith(run_id[:size]) for other in others if other != run_id):
            return run_id[:size]
    return run_id


# --------------------------------------------------------------------------- unknown ids


@pytest.mark.parametrize(
    "command",
    [
        ["status", "{bad}"],
        ["logs", "{bad}"],
        ["logs", "{bad}", "--follow"],
        ["dashboard", "{bad}", "--port", "0"],
        ["resume", "{bad}"],
        ["retry", "{bad}"],
        ["checkpoint", "list", "{bad}"],
        ["checkpoint", "show", "{bad}"],
        ["checkpoint", "restore", "{bad}"],
    ],
    ids=" ".join,
)
def test_an_unknown_run_id_is_exit_2_naming_it(two_runs: tuple[Path, list[str]], command: list[str]) -> None:
    here, _ = two_runs
    done = maos(*(part.replace("{bad}", "nosuchrun") for part in command), cwd=here, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no run 'nosuchrun' in " in one_line(done.stderr)
    assert "Traceback" not in done.stderr


def test_a_close_id_is_suggested(two_runs: tuple[Path, list[str]]) -> None:
    here, ids = two_runs
    typo = ids[0][:-1] + ("x" if ids[0][-1] != "x" else "y")
    for command in (["status", typo], ["logs", typo], ["checkpoint", "show", typo]):
        done = maos(*command, cwd=here)
        assert done.returncode == 2
        assert f"did you mean '{ids[0]}'?" in one_line(done.stderr), command


def test_an_unknown_task_id_is_exit_2_naming_it(two_runs: tuple[Path, list[str]]) -> None:
    here, ids = two_runs
    done = maos("logs", ids[0], "--task", "biuld", cwd=here)
    assert done.returncode == 2
    assert one_line(done.stderr) == f"error: no task 'biuld' in run {ids[0]}; did you mean 'build'?"
    assert done.stdout == ""


def test_unique_prefixes_are_accepted_everywhere(two_runs: tuple[Path, list[str]]) -> None:
    here, ids = two_runs
    for run_id in ids:
        prefix = unique_prefix(run_id, ids)
        status = maos("status", prefix, "--json", cwd=here)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["run_id"] == run_id
        logs = maos("logs", prefix, "--json", cwd=here)
        assert json.loads(logs.stdout.splitlines()[0])["run_id"] == run_id
        shown = maos("checkpoint", "show", prefix, "--json", cwd=here)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["run_id"] == run_id
        resumed = maos("resume", prefix, cwd=here)
        assert resumed.returncode == 0
        assert f"run {run_id} has finished" in one_line(resumed.stderr)


def test_an_ambiguous_prefix_lists_the_candidates(two_runs: tuple[Path, list[str]]) -> None:
    here, ids = two_runs
    shared = next(ids[0][:size] for size in range(len(ids[0]), 0, -1) if ids[1].startswith(ids[0][:size]))
    assert shared  # both ids start with the year
    for command in (["status", shared], ["logs", shared], ["checkpoint", "list", shared]):
        done = maos(*command, cwd=here)
        assert done.returncode == 2, command
        message = one_line(done.stderr)
        assert f"no run '{shared}' in " in message
        assert "it is the start of 2 run ids" in message
        assert all(run_id in message for run_id in ids)


def test_match_id_rules() -> None:
    known = ["20250101-120000-aaaa", "20250101-120000-abcd", "20250102-090000-ffff"]
    assert match_id("20250102", known, kind="run", where="s", prefixes=True) == known[2]
    assert match_id(known[0], known, kind="run", where="s", prefixes=True) == known[0]
    with pytest.raises(RunNotFound, match="start of 2 run ids"):
        match_id("20250101-120000-a", known, kind="run", where="s", prefixes=True)
    with pytest.raises(RunNotFound, match=r"^no task 'bui' in run r; did you mean 'build'\?$"):
        match_id("bui", ["build", "test"], kind="task", where="run r", prefixes=False)  # no prefixes
    with pytest.raises(RunNotFound, match=r"^no task 'zzz' in run r$"):
        match_id("zzz", ["build", "test"], kind="task", where="run r", prefixes=False)
    with pytest.raises(RunNotFound, match=r"no run '' in s"):
        match_id("", known, kind="run", where="s", prefixes=True)


# --------------------------------------------------------------------------- store URLs


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite:{abs}/x.db", "did you mean 'sqlite:///{abs}/x.db'?"),
        ("sqlite://x.db", "did you mean 'sqlite:///x.db'?"),
        ("sqlite:x.db", "did you mean 'sqlite:///x.db'?"),
        ("sqlite:///", "names no database file"),
        ("postgres://h/db", "is not supported: expected sqlite:///PATH"),
        ("redis://localhost:notaport", "the port 'notaport' is not a number"),
        ("redis://localhost:6379/zero", "'zero' is not a Redis database number"),
        ("redis+cluster://localhost:7000/3", "a Redis Cluster has only database 0"),
    ],
)
def test_a_malformed_store_url_is_exit_2_naming_store(tmp_path: Path, url: str, says: str) -> None:
    url, says = url.format(abs=tmp_path), says.format(abs=tmp_path)
    done = maos("runs", "--store", url, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"Invalid value for '--store': store URL '{url}'" in one_line(done.stderr)
    assert says in one_line(done.stderr)
    from_env = maos("runs", cwd=tmp_path, env={"MAOS_STORE": url})
    assert from_env.returncode == 2
    assert "(from MAOS_STORE)" in one_line(from_env.stderr)
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # no "sqlite:" folder, no .maos


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["logs", "x"],
        ["dashboard"],
        ["worker"],
        ["doctor"],
        ["agents", "stats"],
        ["run", "p.yaml"],
    ],
    ids=" ".join,
)
def test_every_command_checks_the_store_url_alike(tmp_path: Path, command: list[str]) -> None:
    done = maos(*command, "--store", f"sqlite:{tmp_path}/x.db", cwd=tmp_path, timeout=30)
    assert done.returncode == 2, done.stderr
    assert f"did you mean 'sqlite:///{tmp_path}/x.db'?" in one_line(done.stderr)
    assert list(tmp_path.iterdir()) == []


def test_store_urls_open_store_accepts() -> None:
    for url in ("sqlite:///.maos/maos.db", "sqlite:////tmp/x.db", "redis://h:6379/0", "rediss://u:p@h:1"):
        assert check_store_url(url) == url
    with pytest.raises(StoreError) as caught:
        check_store_url("redis://user:secret@h:port")
    assert "secret" not in str(caught.value)  # messages never quote a password


# --------------------------------------------------------------------------- options and help


def test_version(tmp_path: Path) -> None:
    done = maos("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout == f"maos {version('maos')}\n"


def test_verbose_after_the_command(two_runs: tuple[Path, list[str]]) -> None:
    here, _ = two_runs
    before = maos("-v", "runs", cwd=here)
    after = maos("runs", "-v", cwd=here)
    assert after.returncode == 0, after.stderr
    assert after.stdout == before.stdout
    plan = here / "plan.yaml"
    done = maos("run", str(plan), "--json", "-vv", cwd=here)
    assert done.returncode == 0, done.stderr
    assert " DEBUG " in done.stderr or " INFO " in done.stderr


def test_only_verbose_flags_before_a_double_dash_move() -> None:
    assert _hoist_global_options(["run", "p.yaml", "-v", "--json"]) == ["-v", "run", "p.yaml", "--json"]
    assert _hoist_global_options(["-v", "logs", "-vv"]) == ["-v", "-vv", "logs"]
    assert _hoist_global_options(["run", "--", "-v"]) == ["run", "--", "-v"]
    # Door commands keep their arguments as given: they are agents' data.
    assert _hoist_global_options(["state", "set", "k", "-v"]) == ["state", "set", "k", "-v"]


def test_runs_shows_full_ids_at_80_columns(two_runs: tuple[Path, list[str]]) -> None:
    here, ids = two_runs
    done = maos("runs", cwd=here, env={"COLUMNS": "80"})
    assert done.returncode == 0
    for run_id in ids:
        assert run_id in done.stdout


def test_option_names(tmp_path: Path) -> None:
    run_help = one_line(maos("run", "--help", cwd=tmp_path).stdout)
    assert "--words" in run_help
    assert "--task " not in run_help  # a hidden, deprecated alias: --task takes an id elsewhere
    assert "--dashboard-port" in run_help
    dashboard_help = one_line(maos("dashboard", "--help", cwd=tmp_path).stdout)
    assert "--port" in dashboard_help
    assert "--dashboard-port" in dashboard_help


def test_help_is_grouped_user_commands_first(tmp_path: Path) -> None:
    done = maos("--help", cwd=tmp_path)
    assert done.returncode == 0
    panels: dict[str, list[str]] = {}
    current = None
    for line in done.stdout.splitlines():
        title = re.match(r"\s*╭─ (.+?) ─", line)
        if title:
            current = title.group(1)
            panels[current] = []
            continue
        row = re.match(r"\s*│ ([a-z][a-z-]*)\s{2,}", line)
        if row and current not in (None, "Options"):
            panels[current].append(row.group(1))
    names = list(panels)
    assert names[:2] == ["Options", "Run and inspect"]
    assert names[-1] == "Called by agents inside a run"
    assert panels["Run and inspect"][:7] == ["run", "plan", "status", "runs", "logs", "resume", "retry"]
    assert sorted(panels["Called by agents inside a run"]) == sorted(
        ["state", "msg", "broadcast", "result", "task", "mcp"]
    )
    assert set(panels["Operate"]) == {
        "serve",
        "worker",
        "supervisor",
        "checkpoint",
        "doctor",
        "clean",
        "audit",
        "purge",
        "import",
    }
    assert set(panels["Rehearse and measure"]) == {"examples", "model-server", "bench"}
    assert "Commands" not in panels  # no command left ungrouped
