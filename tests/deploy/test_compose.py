"""deploy/compose.yaml: valid against the Compose Specification's JSON schema (vendored,
tests/deploy/SCHEMAS.md), laid out as the spec's §10.1, and every file it mounts exists;
its Prometheus configuration loads (promtool) with the alert rules."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from maos.model import RunConfig, TaskSpec

from .files import COMPOSE, DEPLOY, HERE, ROOT, compose, maos_services

SCHEMA = json.loads((HERE / "compose-spec.json").read_text())


def _is_subnet(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        ipaddress.ip_network(value)
    except ValueError:
        return False
    return True


def validator() -> jsonschema.Draft201909Validator:
    formats = jsonschema.FormatChecker()
    formats.checks("subnet_ip_address")(_is_subnet)
    # The schema names its draft as "…/draft/2019-09/schema#" (not the official URI): say it.
    jsonschema.Draft201909Validator.check_schema(SCHEMA)
    return jsonschema.Draft201909Validator(SCHEMA, format_checker=formats)


def errors(doc: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in sorted(validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    assert errors(compose()) == []


def test_the_schema_catches_mistakes() -> None:
    doc = compose()
    for broken in (
        {"restrat": "always"},  # a misspelt key
        {"deploy": {"replicas": "two"}},
        {"depends_on": {"redis-1": {"condition": "service_ready"}}},
        {"healthcheck": {"test": ["CMD", "true"], "intervall": "5s"}},
    ):
        bad = copy.deepcopy(doc)
        bad["services"]["worker"].update(broken)
        assert errors(bad), f"the schema let {broken} through"
    bad = copy.deepcopy(doc)
    bad["networks"]["maos"]["ipam"]["config"][0]["subnet"] = "172.29.58.0/33"
    assert errors(bad)


def test_the_layout_is_the_specs() -> None:
    doc = compose()
    services = doc["services"]
    nodes = sorted(name for name in services if re.fullmatch(r"redis-\d", name))
    assert nodes == [f"redis-{n}" for n in range(1, 7)]
    create = services["redis-cluster-create"]
    assert create["restart"] == "no"
    assert create["environment"]["REDIS_NODES"].split() == [f"{node}:6379" for node in nodes]
    assert {node: dep["condition"] for node, dep in create["depends_on"].items()} == dict.fromkeys(
        nodes, "service_healthy"
    )
    script = (DEPLOY / "redis" / "cluster-create.sh").read_text()
    assert "--cluster-replicas 1" in script  # 6 nodes: 3 primaries + 3 replicas
    for node in nodes:
        assert services[node]["command"] == ["--cluster-announce-hostname", node]
        assert f"{node}:/data" in services[node]["volumes"]  # AOF and nodes.conf on a volume

    maos = maos_services(doc)
    assert {"supervisor", "worker", "dashboard", "cli"} <= set(maos)
    assert maos["supervisor"]["command"][0] == "supervisor"
    assert maos["worker"]["command"][0] == "worker"
    assert maos["worker"]["deploy"]["replicas"] >= 2  # scalable: deploy.replicas / --scale
    assert "container_name" not in maos["worker"]  # a fixed name would forbid replicas
    for name, svc in maos.items():
        assert svc["depends_on"]["redis-cluster-create"]["condition"] == "service_completed_successfully"
        assert svc["env_file"] == ["secrets/maos.env"], name  # the store URL and keys: not in argv
        assert svc["read_only"] is True, name
        assert svc["cap_drop"] == ["ALL"], name
        assert "work:/work" in svc["volumes"], name  # one working directory path everywhere
        assert not any(arg.startswith("--store") for arg in svc["command"]), name

    assert services["prometheus"]["volumes"][1] == "./alerts.yml:/etc/prometheus/alerts.yml:ro"
    assert (
        "./grafana-dashboard.json:/var/lib/grafana/dashboards/maos.json:ro" in services["grafana"]["volumes"]
    )


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([hms])", duration))


def test_a_stopped_worker_has_time_to_drain() -> None:
    """SIGTERM drains a worker: its attempts finish, each within its task's timeout_s plus
    the agent's grace period (and the CLI's result grace); only then may Docker kill it."""
    worker = compose()["services"]["worker"]
    drain_s = TaskSpec.model_fields["timeout_s"].default + RunConfig.model_fields["grace_s"].default + 5.0
    assert _seconds(worker["stop_grace_period"]) >= drain_s
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_every_file_the_compose_file_mounts_exists() -> None:
    doc = compose()
    sources: list[str] = []
    for svc in doc["services"].values():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                sources.append(source)
        sources += [path for path in svc.get("env_file", []) if not path.startswith("secrets/")]
    for secret in doc["secrets"].values():
        assert secret["file"].startswith("./secrets/"), "secrets come from deploy/make-secrets.sh"
    assert sources
    for source in sources:
        assert (COMPOSE.parent / source).exists(), source
    maker = (DEPLOY / "make-secrets.sh").read_text()
    for name in ("maos.env", "redis.env", *(Path(s["file"]).name for s in doc["secrets"].values())):
        assert f"secrets/{name}" in maker, name
    assert "/secrets/" in (DEPLOY / ".gitignore").read_text().split()


def test_the_secrets_script_writes_what_the_services_read(tmp_path: Path) -> None:
    copy_of_deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy_of_deploy, ignore=shutil.ignore_patterns("secrets"))
    subprocess.run(["bash", str(copy_of_deploy / "make-secrets.sh")], check=True, capture_output=True)
    secrets = copy_of_deploy / "secrets"
    assert secrets.stat().st_mode & 0o777 == 0o700
    maos_env = dict(line.split("=", 1) for line in (secrets / "maos.env").read_text().splitlines())
    redis_env = dict(line.split("=", 1) for line in (secrets / "redis.env").read_text().splitlines())
    assert set(maos_env) == {"MAOS_KEY", "MAOS_STORE", "MAOS_DASHBOARD_TOKEN", "ANTHROPIC_API_KEY"}
    assert maos_env["MAOS_STORE"] == f"redis+cluster://maos:{redis_env['REDIS_MAOS_PASSWORD']}@redis-1:6379"
    assert maos_env["MAOS_DASHBOARD_TOKEN"] == (secrets / "dashboard_token").read_text().strip()
    assert (secrets / "maos.env").stat().st_mode & 0o077 == 0
    from maos.security import parse_key

    assert len(parse_key(maos_env["MAOS_KEY"], source="MAOS_KEY")) == 32
    first = (secrets / "maos.env").read_text()
    subprocess.run(["bash", str(copy_of_deploy / "make-secrets.sh")], check=True, capture_output=True)
    assert (secrets / "maos.env").read_text() == first  # kept: a new MAOS_KEY would lose data


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: apt-get install prometheus (scripts/ensure-services.sh does)")
    return found


def test_prometheus_in_compose_loads_the_alert_rules(promtool: str, tmp_path: Path) -> None:
    """`promtool check config` on the compose Prometheus configuration, with the files at
    the paths the compose file mounts them to (moved under tmp_path)."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "compose-prometheus.yml").read_text())
    services = compose()["services"]
    mounts = dict(v.split(":")[1::-1] for v in services["prometheus"]["volumes"] if v.startswith("./"))
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus/compose-prometheus.yml"
    [rules] = config["rule_files"]
    shutil.copy(DEPLOY / mounts[rules], tmp_path / "alerts.yml")
    config["rule_files"] = [str(tmp_path / "alerts.yml")]
    [job] = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["dashboard:8765"]
    token_file = job["authorization"]["credentials_file"]
    assert token_file == "/run/secrets/dashboard_token"
    assert "dashboard_token" in services["prometheus"]["secrets"]
    (tmp_path / "token").write_text("t")
    job["authorization"]["credentials_file"] = str(tmp_path / "token")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr
    dashboard = services["dashboard"]["command"]
    assert dashboard[dashboard.index("--allowed-host") + 1] == "dashboard"  # the Host header Prometheus sends


def test_grafana_is_provisioned_with_the_shipped_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    [datasource] = yaml.safe_load((provisioning / "datasources" / "maos.yaml").read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["isDefault"] is True
    assert datasource["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "maos.yaml").read_text())["providers"]
    grafana = compose()["services"]["grafana"]
    mounted = {
        target.rsplit("/", 1)[0]: source
        for source, target, _ in (v.split(":") for v in grafana["volumes"][:2])
    }
    assert mounted["/etc/grafana"] == "./grafana/provisioning"
    assert mounted[provider["options"]["path"]] == "./grafana-dashboard.json"
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    # Panels name the data source through the dashboard's `datasource` variable, which picks
    # the default Prometheus: the provisioned one.
    uids = set(re.findall(r'"uid": "([^"]+)"', json.dumps(dashboard["panels"])))
    assert uids == {"${datasource}"}
