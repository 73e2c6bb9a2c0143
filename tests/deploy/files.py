"""The files under deploy/ as data: the image's commands, the compose services, the
Kubernetes objects, and every ``maos …`` command line they run."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class MaosCommand:
    """``maos`` followed by ``argv``, as ``where`` runs it."""

    where: str
    argv: tuple[str, ...]


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def maos_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services that run the MAOS image."""
    return {
        name: svc for name, svc in doc["services"].items() if str(svc.get("image", "")).startswith("maos:")
    }


def k8s_files(*, alternatives: bool = True) -> list[Path]:
    found = sorted(K8S.glob("*.yaml"))
    if alternatives:
        found += sorted((K8S / "alternatives").glob("*.yaml"))
    return [path for path in found if path.name != "kustomization.yaml"]


def k8s_objects(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_k8s_objects() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, obj) for path in k8s_files() for obj in k8s_objects(path)]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    kind = obj.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet"):
        return dict(obj["spec"]["template"]["spec"])
    if kind == "Job":
        return dict(obj["spec"]["template"]["spec"])
    if kind == "Pod":
        return dict(obj["spec"])
    return None


_K8S_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand_k8s(arg: str, env: dict[str, str]) -> str:
    """``$(NAME)`` in a container's args, as the kubelet expands it from the container's env."""
    return _K8S_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), arg)


def sample_env(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """Values the kubelet would give the container's env (the downward API's pod name)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        source = item.get("valueFrom", {})
        if source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = pod_name
        elif "value" in item:
            env[item["name"]] = str(item["value"])
    return env


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile() -> list[tuple[str, str]]:
    return _dockerfile_instructions()


def exec_form(text: str) -> list[str]:
    """A Dockerfile JSON array (exec form)."""
    value = json.loads(text)
    assert isinstance(value, list), text
    assert all(isinstance(item, str) for item in value), text
    return value


def image_commands() -> list[MaosCommand]:
    """What the image runs: ENTRYPOINT + CMD, the HEALTHCHECK, and `maos` in RUN lines."""
    found: list[MaosCommand] = []
    entrypoint: list[str] = []
    cmd: list[str] = []
    for word, rest in dockerfile():
        if word == "ENTRYPOINT":
            entrypoint = exec_form(rest)
        elif word == "CMD":
            cmd = exec_form(rest)
        elif word == "HEALTHCHECK":
            argv = exec_form(rest.split(" CMD ", 1)[1])
            assert argv[0] == "maos", argv
            found.append(MaosCommand("Dockerfile HEALTHCHECK", tuple(argv[1:])))
        elif word == "RUN":
            for match in re.finditer(r"/opt/maos/bin/maos((?: [-\w]+)*)", rest):
                found.append(MaosCommand("Dockerfile RUN", tuple(shlex.split(match.group(1)))))
    assert entrypoint[-1:] == ["maos"], entrypoint
    found.append(MaosCommand("Dockerfile ENTRYPOINT + CMD", tuple(cmd)))
    return found


def compose_commands() -> list[MaosCommand]:
    return [
        MaosCommand(f"compose service {name}", tuple(svc["command"]))
        for name, svc in maos_services(compose()).items()
    ]


def k8s_commands() -> list[MaosCommand]:
    found: list[MaosCommand] = []
    for path, obj in all_k8s_objects():
        spec = pod_spec(obj)
        if spec is None:
            continue
        for container in spec["containers"]:
            if not str(container["image"]).startswith("maos:"):
                continue
            assert "command" not in container, "the image's entrypoint (tini -- maos) runs the args"
            env = sample_env(container, f"{obj['metadata']['name']}-7d9f8b6c5-x2x4z")
            argv = tuple(expand_k8s(arg, env) for arg in container["args"])
            found.append(
                MaosCommand(f"{path.relative_to(ROOT)} {obj['kind']}/{obj['metadata']['name']}", argv)
            )
    return found


_DOCUMENTED = re.compile(
    r"(?:run --rm cli|-- maos|docker run --rm maos(?::[\w.]+)?)((?: [^\s#…]+)+)\s*(?:#.*)?$"
)


def documented_commands() -> list[MaosCommand]:
    """The `maos` command lines the deploy files' comments and docs/deploy.md tell people to
    type (`docker compose … run --rm cli ARGS`, `kubectl … -- maos ARGS`, `docker run … ARGS`)."""
    found: list[MaosCommand] = []
    sources = [DOCKERFILE, COMPOSE, ROOT / "docs" / "deploy.md", *k8s_files()]
    for path in sources:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = _DOCUMENTED.search(line)
            if match:
                found.append(
                    MaosCommand(f"{path.relative_to(ROOT)}:{number}", tuple(shlex.split(match.group(1))))
                )
    return found
