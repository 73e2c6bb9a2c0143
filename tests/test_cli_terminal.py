"""The CLI and what it is started with: closed or full standard streams, a terminal width that
cannot be used, a store or an endpoint that cannot be one. Real ``maos`` processes, each
ending with its exit code and a message, never a traceback nor a hang."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from maos.cli._common import EXIT_FAILED, EXIT_INTERNAL, EXIT_USAGE, report_error
from tests.test_cli_contract import MAOS, maos

DOOR_ENV = {
    "MAOS_RUN_ID": "r1",
    "MAOS_AGENT_ID": "a1",
    "MAOS_TASK_ID": "t1",
    "MAOS_AGENT_TOKEN": "x",
    "MAOS_TASK_TOKEN": "y",
}
"""An agent's identity, enough to reach the opening of the store (the tokens are never checked)."""


def shell(
    redirect: str, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``maos ARGS REDIRECT`` started by a shell: ``>&-`` closes stdout before maos starts."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("MAOS_")}
    return subprocess.run(
        ["sh", "-c", f"exec {shlex.join([*MAOS, *args])} {redirect}"],
        cwd=cwd,
        env=inherited | {"COLUMNS": "200", "NO_COLOR": "1", "TMPDIR": str(cwd)} | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def crash_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("maos-crash-*"))


@pytest.mark.parametrize(
    "args",
    [["runs"], ["status"], ["audit"], ["plan", "show", "plan.yaml"], ["examples", "list"], ["--help"]],
    ids=" ".join,
)
@pytest.mark.parametrize("closed", [">&-", "2>&-", "<&- >&- 2>&-"])
def test_a_closed_stdout_or_stderr_loses_the_output_not_the_exit_code(
    tmp_path: Path, args: list[str], closed: str
) -> None:
    (tmp_path / "plan.yaml").write_text("name: p\ntasks: [{id: a, command: 'true'}]\n")
    expected = EXIT_USAGE if args in (["status"], ["audit"]) else 0  # no run, no audit log yet
    done = shell(closed, *args, cwd=tmp_path)
    assert done.returncode == expected, done.stderr
    assert "Traceback" not in done.stderr
    assert crash_files(tmp_path) == []


def test_a_value_read_from_a_closed_stdin_is_exit_2_naming_it(tmp_path: Path) -> None:
    done = shell("<&-", "state", "set", "k", "-", cwd=tmp_path)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stderr.startswith("error: stdin is closed: `-` reads the value from stdin")


@pytest.mark.parametrize(
    "args", [["runs"], ["examples", "list"], ["plan", "fields", "--json"], ["--help"]], ids=" ".join
)
def test_stdout_on_a_full_disk_is_exit_1_saying_so_without_a_crash_file(
    tmp_path: Path, args: list[str]
) -> None:
    done = shell("> /dev/full", *args, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        EXIT_FAILED,
        "error: cannot write to stdout: No space left on device\n",
    )
    assert crash_files(tmp_path) == []


@pytest.mark.parametrize("variable", ["COLUMNS", "TERMINAL_WIDTH"])
@pytest.mark.parametrize("width", ["0", "1", "39", "abc"])
def test_a_terminal_width_too_small_to_use_is_ignored(tmp_path: Path, variable: str, width: str) -> None:
    (tmp_path / "plan.yaml").write_text("name: p\ntasks: [{id: a, command: 'true'}]\n")
    env = {variable: width}
    shown = maos("plan", "show", "plan.yaml", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "Critical path (1 tasks): a" in shown.stdout
    helped = maos("--help", cwd=tmp_path, env=env)
    assert helped.returncode == 0, helped.stderr
    assert "Run and inspect" in helped.stdout
    assert max(map(len, helped.stdout.splitlines())) >= 40
    refused = maos("status", "nope", cwd=tmp_path, env=env)
    assert refused.returncode == EXIT_USAGE
    assert refused.stderr.startswith("error: no run 'nope'")
    assert "Traceback" not in shown.stderr + helped.stderr + refused.stderr


@pytest.mark.parametrize("args", [["runs"], ["status"], ["logs"], ["doctor"], ["purge", "x"]], ids=" ".join)
def test_a_fifo_as_the_sqlite_store_is_refused_while_parsing(tmp_path: Path, args: list[str]) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = maos(*args, "--store", f"sqlite:///{fifo}", cwd=tmp_path, timeout=30)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert f"'--store': store URL 'sqlite:///{fifo}': {fifo} is a FIFO (named pipe), not a regular file" in (
        one_line(done.stderr)
    )


@pytest.mark.parametrize(
    ("store", "says"),
    [
        ("sqlite:///fifo", "is a FIFO (named pipe), not a regular file"),
        ("/dev/null", "store URL '/dev/null' is not supported"),
    ],
)
def test_a_door_command_refuses_a_store_that_cannot_be_one_with_exit_2(
    tmp_path: Path, store: str, says: str
) -> None:
    os.mkfifo(tmp_path / "fifo")
    done = maos("state", "get", "k", cwd=tmp_path, env=DOOR_ENV | {"MAOS_STORE": store}, timeout=30)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stderr.startswith("error: MAOS_STORE: store URL")
    assert says in done.stderr


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("foo=bar", "'foo': not an option of a Redis connection"),
        ("max_connections=3", "'max_connections': not an option of a Redis connection"),
        ("db=abc", "Invalid value for 'db'"),
        ("socket_timeout=abc", "Invalid value for 'socket_timeout'"),
        ("socket_timeout=nan", "socket_timeout=nan: expected a finite number, 0 or more"),
        ("health_check_interval=nan", "Invalid value for 'health_check_interval'"),
        ("ssl_cert_reqs=bogus", "'ssl_cert_reqs': not an option of a Redis connection"),  # not TLS
    ],
)
def test_redis_url_options_are_checked_while_parsing(tmp_path: Path, query: str, says: str) -> None:
    """Nothing listens on port 9: the URL is refused before any connection."""
    url = f"redis://u:sekrit@127.0.0.1:9/13?{query}"
    for done, source in (
        (maos("runs", "--store", url, cwd=tmp_path), ""),
        (maos("runs", cwd=tmp_path, env={"MAOS_STORE": url}), " (from MAOS_STORE)"),
    ):
        assert done.returncode == EXIT_USAGE, done.stderr
        message = one_line(done.stderr)
        assert f"'--store': store URL 'redis://u:***@127.0.0.1:9/13?{query}': {says}" in message
        assert source in message
        assert "sekrit" not in done.stderr


def test_a_rediss_url_checks_its_tls_options_too(tmp_path: Path) -> None:
    done = maos("runs", "--store", "rediss://127.0.0.1:9/13?ssl_cert_reqs=bogus", cwd=tmp_path)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "Invalid SSL Certificate Requirements Flag: bogus" in one_line(done.stderr)


@pytest.mark.parametrize(
    "endpoint", ["notaurl", "ftp://host", "http://", "http://host:99999", "http://h/?x=1"]
)
def test_a_bad_s3_endpoint_is_exit_2_naming_it(tmp_path: Path, endpoint: str) -> None:
    (tmp_path / "plan.yaml").write_text("name: p\ntasks: [{id: a, command: 'true'}]\n")
    s3 = {"MAOS_CHECKPOINTS": "s3://bucket/prefix"}
    for done, source in (
        (
            maos("run", "plan.yaml", cwd=tmp_path, env=s3 | {"MAOS_S3_ENDPOINT": endpoint}),
            "(from MAOS_S3_ENDPOINT)",
        ),
        (maos("checkpoint", "list", "--s3-endpoint", endpoint, cwd=tmp_path, env=s3), "'--s3-endpoint'"),
        (maos("purge", "x", "--s3-endpoint", endpoint, cwd=tmp_path), "'--s3-endpoint'"),
    ):
        assert done.returncode == EXIT_USAGE, done.stderr
        message = one_line(done.stderr)
        assert f"'--s3-endpoint': S3 endpoint {endpoint!r}" in message
        assert source in message
    assert not (tmp_path / ".maos").exists()  # no run was created


def test_the_crash_file_hides_passwords(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        sys,
        "argv",
        ["maos", "runs", "--store", "redis://u:sekrit@host:6379/0", "--audit", "postgresql://a:pw2@db/x"],
    )
    try:
        raise ValueError("cannot use redis://u:sekrit@host:6379/0 (password=pw3)")
    except ValueError as exc:
        with pytest.raises(SystemExit) as exited:
            report_error(exc)
    assert exited.value.code == EXIT_INTERNAL
    err = capfd.readouterr().err
    crash = Path(re.search(r"the details are in (\S+) ", err).group(1))  # type: ignore[union-attr]
    try:
        text = crash.read_text()
    finally:
        crash.unlink()
    assert text.startswith("maos runs --store redis://u:***@host:6379/0 --audit postgresql://a:***@db/x\n")
    assert "ValueError: cannot use redis://u:***@host:6379/0 (password=***" in text
    assert not {"sekrit", "pw2", "pw3"} & set(re.findall(r"\w+", text))
