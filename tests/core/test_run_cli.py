"""``maos run``, ``status``, ``runs`` and ``logs`` as a user runs them: real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

MAOS = [sys.executable, "-m", "maos"]


def maos(
    *args: str, cwd: Path, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``maos ARGS`` in ``cwd``; ``env``: variables added to this process's environment."""
    return subprocess.run(
        [*MAOS, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **env} if env else None,
    )


def write_plan(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_run_succeeds_and_status_runs_logs_read_it_back(tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path / "plan.yaml",
        """
name: small
tasks:
  - id: design
    prompt: Write DESIGN.md
    command: ["bash", "-c", "echo designed > DESIGN.md; echo designed"]
  - id: build
    prompt: Implement it
    depends_on: [design]
    command: "cat DESIGN.md; echo built"
""",
    )
    done = maos("run", str(plan), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "succeeded"
    assert summary["counts"] == {"succeeded": 2}
    assert (tmp_path / ".maos" / "maos.db").exists()
    run_id = summary["run_id"]

    runs = json.loads(maos("runs", "--json", cwd=tmp_path).stdout)
    assert runs[0]["run_id"] == run_id
    assert runs[0]["status"] == "succeeded"

    status = maos("status", "--json", cwd=tmp_path)
    assert status.returncode == 0
    assert json.loads(status.stdout)["tasks"] == summary["tasks"]

    logs = maos("logs", run_id, "--task", "build", cwd=tmp_path)
    assert logs.returncode == 0
    assert "[build] stdout: designed" in logs.stdout
    assert "[build] stdout: built" in logs.stdout
    assert "design" not in logs.stdout.replace("designed", "")


def test_a_bad_warm_primer_is_refused_naming_the_choices(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yaml", "name: p\ntasks:\n  - id: a\n    command: 'true'\n")
    done = maos("run", str(plan), "--warm", "1", "--warm-primer", "remote", cwd=tmp_path)
    assert done.returncode == 2
    message = " ".join(done.stderr.replace("│", " ").split())
    assert "Invalid value for '--warm-primer'" in message
    assert "'remote' is not one of 'local', 'model'" in message
    assert not (tmp_path / ".maos").exists()  # refused before anything ran


def test_failed_task_is_named_with_reason_and_skips(tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path / "plan.yaml",
        """
name: failing
tasks:
  - id: compile
    command: "echo 'error: missing semicolon' >&2; exit 3"
    max_attempts: 2
  - id: test
    depends_on: [compile]
    command: "true"
  - id: ship
    depends_on: [test]
    command: "true"
""",
    )
    done = maos("run", str(plan), "--retry-base-s", "0.01", cwd=tmp_path)
    assert done.returncode == 1
    assert "task 'compile' failed after 2 attempt(s): exit code 3" in done.stderr
    assert "error: missing semicolon" in done.stderr
    assert "skipped because a dependency failed: test, ship" in done.stderr


def test_invalid_plan_exits_2_naming_the_problem(tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path / "plan.yaml", "name: x\ntasks:\n  - id: a\n    depends_on: [nope]\n    command: 'true'\n"
    )
    done = maos("run", str(plan), cwd=tmp_path)
    assert done.returncode == 2
    assert "'a'" in done.stderr
    assert "nope" in done.stderr


def _start_hanging_run(tmp_path: Path, tasks: int = 3) -> tuple[subprocess.Popen[str], Path]:
    pids = tmp_path / "pids"
    pids.mkdir()
    body = "name: hang\ntasks:\n" + "".join(
        f"  - id: t{n}\n"
        f"    command: 'sleep 300 & echo $! > {pids}/t{n}.child; echo $$ > {pids}/t{n}.sh; wait'\n"
        for n in range(tasks)
    )
    plan = write_plan(tmp_path / "plan.yaml", body)
    proc = subprocess.Popen(
        [*MAOS, "run", str(plan), "--agents", str(tasks), "--grace-s", "1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len([p for p in pids.iterdir() if p.read_text().strip()]) < 2 * tasks:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "agents did not start"
        time.sleep(0.05)
    return proc, pids


def _agent_pids(pids: Path) -> list[int]:
    return [int(p.read_text()) for p in pids.iterdir()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status").read_text()
    return "State:\tZ" not in status


@pytest.mark.parametrize(
    "signals", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM,)], ids=["ctrl-c-twice", "sigterm"]
)
def test_cancel_leaves_no_agent_process(tmp_path: Path, signals: tuple[signal.Signals, ...]) -> None:
    proc, pids = _start_hanging_run(tmp_path)
    agent_pids = _agent_pids(pids)
    assert all(_alive(pid) for pid in agent_pids)
    seen = ""
    for n, sig in enumerate(signals):
        proc.send_signal(sig)
        if n + 1 < len(signals):  # send the next one once this one was handled: it says so
            assert proc.stdout is not None
            while "Press Ctrl-C again" not in seen:
                line = proc.stdout.readline()
                assert line, f"exited before it said it drains: {seen}"
                seen += line
    out, err = proc.communicate(timeout=60)
    out = seen + out
    assert proc.returncode == 130, err
    assert "cancelled" in out
    # the three agents were stopped, and the summary counts them
    assert "3 task(s) did not finish (3 stopped while running, 0 not started)" in err
    if signals[0] is signal.SIGINT:
        assert "Press Ctrl-C again to cancel" in out
    leftovers = [pid for pid in agent_pids if _alive(pid)]
    assert not leftovers, f"agent processes survived: {leftovers}"


def test_first_ctrl_c_drains(tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    plan = write_plan(
        tmp_path / "plan.yaml",
        f"""
name: drain
tasks:
  - id: first
    command: "touch {tmp_path}/started; sleep 1; touch {marker}"
  - id: second
    depends_on: [first]
    command: "touch {tmp_path}/second-ran"
""",
    )
    proc = subprocess.Popen(
        [*MAOS, "run", str(plan), "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline
        assert proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "draining" in err
    summary = json.loads(out)
    assert summary["tasks"]["first"]["state"] == "succeeded"
    assert summary["tasks"]["second"]["state"] == "cancelled"
    assert marker.exists()
    assert not (tmp_path / "second-ran").exists()


def test_run_serves_dashboard_and_metrics_and_refuses_an_open_bind(tmp_path: Path) -> None:
    import os

    plan = write_plan(tmp_path / "plan.yaml", "name: served\ntasks:\n  - id: a\n    command: 'sleep 0.2'\n")
    env = {k: v for k, v in os.environ.items() if k != "MAOS_DASHBOARD_TOKEN"}
    refused = subprocess.run(
        [*MAOS, "run", str(plan), "--dashboard", "--dashboard-host", "0.0.0.0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "MAOS_DASHBOARD_TOKEN" in refused.stderr
    assert not (tmp_path / ".maos").exists()  # refused before anything ran
    served = maos(
        "run", str(plan), "--dashboard", "--dashboard-port", "0", "--metrics-port", "0", cwd=tmp_path
    )
    assert served.returncode == 0, served.stderr
    assert "dashboard: http://127.0.0.1:" in served.stdout
    assert "metrics: http://127.0.0.1:" in served.stdout


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--retry-base-s", "inf", "--retry-base-s"),
        ("--memory-limit-mb", "nan", "--memory-limit-mb"),
        ("--max-cost-usd", "inf", "--max-cost-usd"),
        ("--lease-s", "1e9", "--lease-s"),
    ],
)
def test_out_of_range_options_are_refused_before_anything_runs(
    tmp_path: Path, option: str, value: str, named: str
) -> None:
    plan = write_plan(tmp_path / "plan.yaml", "name: x\ntasks:\n  - id: a\n    command: touch ran\n")
    done = maos("run", str(plan), option, value, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "ran").exists()


def test_a_busy_port_or_a_bad_setting_stops_the_run_before_it_exists(tmp_path: Path) -> None:
    """`maos run --metrics-port P` with P taken printed a run id, then failed; the run did
    not exist. A bad MAOS_ENCRYPT was found by each task's attempt, the run then failing."""
    import socket

    (tmp_path / "plan.yaml").write_text("name: x\ntasks:\n  - id: a\n    command: 'true'\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = maos("run", "plan.yaml", "--metrics-port", str(taken.getsockname()[1]), cwd=tmp_path)
    assert busy.returncode == 1
    assert "cannot listen on 127.0.0.1" in busy.stderr
    assert "run 20" not in busy.stdout + busy.stderr  # no run id was given out
    bad = maos("run", "plan.yaml", cwd=tmp_path, env={"MAOS_ENCRYPT": "maybe"})
    assert bad.returncode == 2
    assert "MAOS_ENCRYPT='maybe': expected 1 or 0" in bad.stderr
    assert json.loads(maos("runs", "--json", cwd=tmp_path).stdout) == []  # neither left a run behind
