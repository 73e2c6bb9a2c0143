"""``maos agents types|stats`` run as a real process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from maos.history import record_outcomes
from maos.store import open_store
from tests.roles.test_history import CODER, REVIEWER, run


def maos(*args: str | Path, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maos", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "250", "NO_COLOR": "1", "HOME": str(home)},
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_types_lists_roles_with_their_files_and_reports_bad_ones(tmp_path: Path) -> None:
    project, home = tmp_path / "project", tmp_path / "home"
    agents = project / ".claude" / "agents"
    write(agents / "reviewer.md", "---\nname: reviewer\ntools: Read, Grep\nmodel: opus\n---\nReview.\n")
    write(agents / "team" / "tester.md", "---\nname: tester\n---\nTest.\n")
    bad = write(agents / "broken.md", "---\nname: broken\ntools: 5\n---\nBody\n")
    write(home / ".claude" / "agents" / "mine.md", "---\nname: mine\nmodel: haiku\n---\nMine.\n")

    result = maos("agents", "types", cwd=project, home=home)

    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert sorted(lines) == ["mine", "reviewer", "tester"]
    assert "opus" in lines["reviewer"]
    assert "Read, Grep" in lines["reviewer"]
    assert ".claude/agents/reviewer.md" in lines["reviewer"]
    assert ".claude/agents/team/tester.md" in lines["tester"]
    assert "all" in lines["tester"]
    assert "user" in lines["mine"]
    assert "~/.claude/agents/mine.md" in lines["mine"]
    assert (
        f"warning: {bad}: field 'tools': expected a comma-separated string or a list, got 5" in result.stderr
    )

    strict = maos("agents", "types", "--strict", cwd=project, home=home)
    assert strict.returncode == 1
    assert strict.stdout == result.stdout


def test_types_json_and_project_option(tmp_path: Path) -> None:
    project, home = tmp_path / "project", tmp_path / "home"
    write(project / ".claude/agents/reviewer.md", "---\nname: reviewer\ncolor: red\n---\nReview it.\n")
    home.mkdir()

    result = maos("agents", "types", "--json", "--project", project, cwd=tmp_path, home=home)

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    (role,) = document["roles"]
    assert role["name"] == "reviewer"
    assert role["source"] == str(project.resolve() / ".claude/agents/reviewer.md")
    assert role["tools"] is None
    assert role["extra"] == {"color": "red"}
    assert role["prompt_chars"] == len("Review it.")
    assert document["problems"] == []


def test_types_exits_1_when_problems_leave_no_role(tmp_path: Path) -> None:
    project, home = tmp_path / "project", tmp_path / "home"
    bad = write(project / ".claude/agents/nameless.md", "---\ndescription: no name\n---\nBody\n")
    home.mkdir()
    result = maos("agents", "types", cwd=project, home=home)
    assert result.returncode == 1
    assert f"{bad}: field 'name' is missing" in result.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    none = maos("agents", "types", cwd=empty, home=home)
    assert none.returncode == 0
    assert "no agent definitions in" in none.stderr


def test_stats_after_recording(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'maos.db'}"

    async def record() -> None:
        store = await open_store(url)
        try:
            state = await run(
                store,
                "run-1",
                {"a": [(CODER, False, 2.0), (REVIEWER, True, 4.0)], "b": [(REVIEWER, True, 2.0)]},
            )
            await record_outcomes(store, state)
        finally:
            await store.close()

    empty = maos("agents", "stats", "--store", url, cwd=tmp_path, home=tmp_path)
    assert empty.returncode == 0, empty.stderr
    assert "no outcomes recorded yet" in empty.stdout

    asyncio.run(record())

    result = maos("agents", "stats", "--json", "--store", url, cwd=tmp_path, home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "runs_recorded": 1,
        "outcomes": [
            {
                "role": "coder",
                "kind": "review",
                "attempts": 1,
                "successes": 0,
                "success_rate": 0.0,
                "mean_duration_s": 2.0,
                "history_score": 1 / 3,
            },
            {
                "role": "reviewer",
                "kind": "review",
                "attempts": 2,
                "successes": 2,
                "success_rate": 1.0,
                "mean_duration_s": 3.0,
                "history_score": 0.75,
            },
        ],
    }

    table = maos("agents", "stats", "--store", url, cwd=tmp_path, home=tmp_path)
    assert table.returncode == 0, table.stderr
    reviewer = next(line for line in table.stdout.splitlines() if line.lstrip().startswith("reviewer"))
    assert reviewer.split() == ["reviewer", "review", "2", "2", "100%", "3.00s", "0.750"]
    assert "1 run(s) recorded" in table.stdout
