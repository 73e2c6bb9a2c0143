"""The shipped alert rules: valid for Prometheus, and each one fires on the series it is
about and stays quiet on the others (``promtool test rules`` on ``alerts_test.yml``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "alerts.yml"
RULE_TESTS = Path(__file__).with_name("alerts_test.yml")


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:  # `make test` installs it (Debian's prometheus package)
        pytest.fail("promtool not found: apt-get install prometheus (scripts/ensure-services.sh does)")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def test_the_rules_are_valid(promtool: str) -> None:
    done = run(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


def test_each_rule_fires_on_its_series_and_only_then(promtool: str) -> None:
    done = run(promtool, "test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rule_is_tested_and_prometheus_loads_them(promtool: str) -> None:
    import yaml

    rules = {
        rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    }
    tested = {
        check["alertname"]
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for check in case["alert_rule_test"]
    }
    assert rules == tested
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    done = run(promtool, "check", "config", str(ROOT / "deploy" / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_use_only_series_maos_exports() -> None:
    import re

    from maos.metrics import MetricsObserver

    exported = {
        line.split()[2]
        for line in MetricsObserver().render().decode().splitlines()
        if line.startswith("# TYPE")
    }
    exported |= {f"{name}_total" for name in exported}
    used = set(re.findall(r"\bmaos_[a-z_]+", RULES.read_text()))
    assert used <= exported, used - exported
