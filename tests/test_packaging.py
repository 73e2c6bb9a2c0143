"""The package as a user gets it: an sdist and a wheel that pass ``twine check``, and the
wheel installed into a fresh virtual environment outside the checkout, where ``maos
--version``, the command-agent example and ``maos doctor`` (against the shipped demo model
script) work with nothing from the source tree."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run(*args: str | Path, cwd: Path, env: dict[str, str], timeout_s: float = 300) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.mark.timeout(600)
def test_the_wheel_installs_and_works_outside_the_checkout(tmp_path: Path) -> None:
    # Nothing of the checkout leaks in: no PYTHONPATH, no virtual environment on PATH.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "VIRTUAL_ENV"} and not k.startswith("MAOS")
    }
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT, cwd=tmp_path, env=env)
    (wheel,) = dist.glob("maos-*.whl")
    (sdist,) = dist.glob("maos-*.tar.gz")
    run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist, cwd=tmp_path, env=env)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=env)
    run(venv / "bin/python", "-m", "pip", "install", "--quiet", wheel, cwd=tmp_path, env=env, timeout_s=900)
    maos = venv / "bin/maos"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert run(maos, "--version", cwd=tmp_path, env=env).strip() == f"maos {version}"
    where = run(venv / "bin/python", "-c", "import maos; print(maos.__file__)", cwd=tmp_path, env=env)
    assert Path(where.strip()).is_relative_to(venv)  # the installed copy, not the source tree

    # The command-agent example, from the package's own copy of it.
    run(maos, "examples", "copy", "word-report", cwd=tmp_path, env=env)
    work = tmp_path / "word-report"
    summary = json.loads(run(maos, "run", "plan.yaml", "--agents", "12", "--json", cwd=work, env=env))
    assert summary["counts"] == {"succeeded": 27}
    assert (work / "REPORT.md").read_text().startswith("# Word report")

    # maos doctor passes with the shipped demo model script standing in for the model.
    run(maos, "examples", "copy", "demo", cwd=tmp_path, env=env)
    server = subprocess.Popen(
        [maos, "model-server", "--script", tmp_path / "demo/model-script.yaml", "--port", "0", "--quiet"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        url = re.search(r"http://\S+", server.stdout.readline())
        assert url is not None
        report = run(maos, "doctor", "--json", cwd=tmp_path, env={**env, "ANTHROPIC_BASE_URL": url.group()})
        checks = {check["check"]: check for check in json.loads(report)}
        assert all(check["ok"] for check in checks.values()), report
        assert str(venv) in checks["claude cli"]["detail"]  # the CLI bundled in the installed wheel
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()
