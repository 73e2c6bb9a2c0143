"""deploy/Dockerfile, read (no image can be built here): two stages, the wheel built from
the sources the context lets in, a slim Python 3.11 base, a non-root user, tini as PID 1 in
front of `maos`, and the Claude Code CLI found where the image checks for it."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from maos.agents import claude_cli

from .files import DEPLOY, ROOT, dockerfile, exec_form


def test_two_stages_on_a_slim_python_311() -> None:
    instructions = dockerfile()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    [base] = [rest for word, rest in instructions if word == "ARG" and rest.startswith("PYTHON_IMAGE=")]
    # Debian (glibc) and bookworm: the bundled CLI is a glibc binary, and bookworm's
    # util-linux has setpriv (--pdeathsig) and setsid, which MAOS uses so that agents die with it.
    assert base == "PYTHON_IMAGE=python:3.11-slim-bookworm"
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "python -m build --wheel" in runs
    assert "COPY --from=build /dist/ /tmp/wheels/" in [
        f"COPY {rest}" for word, rest in instructions if word == "COPY"
    ]
    for package in ("git", "tini", "util-linux", "ca-certificates"):
        assert f" {package}" in runs, package


def test_it_runs_as_a_user_without_privileges() -> None:
    instructions = dockerfile()
    users = [rest for word, rest in instructions if word == "USER"]
    assert users == ["maos"]
    last_user = max(n for n, (word, _) in enumerate(instructions) if word == "USER")
    assert all(word != "RUN" for word, _ in instructions[last_user:])  # nothing runs as root after
    assert ("WORKDIR", "/work") in instructions


def test_tini_is_pid_1_and_maos_the_entry_point() -> None:
    instructions = dockerfile()
    [entrypoint] = [exec_form(rest) for word, rest in instructions if word == "ENTRYPOINT"]
    # Plain `tini --`, not `-g`: SIGTERM must reach `maos` alone (a worker drains), never
    # the agents' process groups directly.
    assert entrypoint == ["tini", "--", "maos"]
    [health] = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    assert "--interval=" in health
    assert "--timeout=" in health
    assert exec_form(health.split(" CMD ", 1)[1])[0] == "maos"


def test_the_image_checks_for_the_cli_where_maos_looks_first() -> None:
    """The bundled CLI (`claude_agent_sdk/_bundled/claude`) is what `find_claude_cli` uses
    after $MAOS_CLAUDE_CLI; the image fails to build without it."""
    source = Path(claude_cli.__file__).read_text()
    assert '"_bundled" / "claude"' in source
    runs = " ".join(rest for word, rest in dockerfile() if word == "RUN")
    assert '/ "_bundled" / "claude"' in runs
    assert "test -x" in runs


def _included(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; `!` re-includes."""
    keep = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        parts = Path(path).parts
        if any(fnmatch.fnmatch("/".join(parts[: n + 1]), bare) for n in range(len(parts))) or fnmatch.fnmatch(
            path, bare
        ):
            keep = negate
    return keep


def test_the_build_context_holds_what_the_wheel_needs_and_no_secret() -> None:
    patterns = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = ["pyproject.toml", "src/maos/__init__.py", "src/maos/cli/_app.py", project["readme"]]
    needed += list(project.get("license-files", []))
    for path in needed:
        assert (ROOT / path).exists(), path
        assert _included(path, patterns), f"{path} is left out of the build context"
    for path in (".venv/bin/python", ".maos/key", ".maos/maos.db", ".git/config", "tests/conftest.py"):
        assert not _included(path, patterns), f"{path} would be sent to the build"
    assert not _included("src/maos/__pycache__/x.pyc", patterns)
