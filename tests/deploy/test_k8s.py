"""deploy/k8s/: the core objects validate offline against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields are errors), KEDA's objects against the vendored
KEDA schema and KEDA's documented scaler parameters, and the numbers that matter agree with
MAOS: the queue the scaler watches, the drain time of a worker, the pods' security."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from maos.model import RunConfig, TaskSpec
from maos.store import keys
from maos.store.redis import STREAM_PREFIX

from .files import DEPLOY, HERE, K8S, all_k8s_objects, k8s_files, k8s_objects, pod_spec

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - the test extra installs it
    kubernetes_validate = None

KUBERNETES_VERSION = "1.30"
"""The oldest Kubernetes release the manifests are meant for (behavior, sizeLimit, PDB v1…)."""

KEDA_SCHEMA = json.loads((HERE / "keda-v1alpha1.schema.json").read_text())

# Parameters of KEDA's Redis Streams scalers (keda.sh/docs/2.16/scalers/redis-streams and
# …/redis-cluster-streams, "Trigger Specification" and "Parameter list").
REDIS_STREAMS_PARAMETERS = {
    "redis-streams": {
        "address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv",
        "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup",
        "pendingEntriesCount", "streamLength", "lagCount", "activationLagCount",
        "enableTLS", "unsafeSsl", "databaseIndex",
    },
    "redis-cluster-streams": {
        "addresses", "hosts", "ports", "addressesFromEnv", "hostsFromEnv", "portsFromEnv",
        "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup",
        "pendingEntriesCount", "streamLength", "lagCount", "activationLagCount",
        "enableTLS", "unsafeSsl",
    },
}  # fmt: skip
REDIS_AUTH_PARAMETERS = {"username", "password", "tls", "ca", "cert", "key", "keyPassword"}

CORE = [(path, obj) for path, obj in all_k8s_objects() if not obj["apiVersion"].startswith("keda.sh/")]
KEDA = [(path, obj) for path, obj in all_k8s_objects() if obj["apiVersion"].startswith("keda.sh/")]


def _id(item: tuple[Path, dict[str, Any]]) -> str:
    path, obj = item
    return f"{path.relative_to(K8S)}:{obj['kind']}/{obj['metadata']['name']}"


@pytest.fixture(scope="module")
def validate() -> Any:
    if kubernetes_validate is None:
        pytest.fail(
            "kubernetes-validate is not installed: pip install -e '.[test]' "
            "(or pip install kubernetes-validate)"
        )
    return kubernetes_validate.validate


@pytest.mark.parametrize("item", CORE, ids=[_id(item) for item in CORE])
def test_the_object_is_valid_kubernetes(item: tuple[Path, dict[str, Any]], validate: Any) -> None:
    _, obj = item
    try:
        validate(obj, KUBERNETES_VERSION, strict=True)
    except Exception as exc:  # kubernetes_validate's own error types
        path = ".".join(str(part) for part in getattr(exc, "path", ()))
        pytest.fail(f"{_id(item)}: {path}: {getattr(exc, 'message', exc)}")


def test_the_validator_catches_mistakes(validate: Any) -> None:
    [worker] = [
        obj for path, obj in CORE if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "maos-worker"
    ]
    broken = json.loads(json.dumps(worker))
    broken["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 660
    with pytest.raises(Exception, match="terminationGracePeriodSecond"):
        validate(broken, KUBERNETES_VERSION, strict=True)
    broken = json.loads(json.dumps(worker))
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = ["2Gi"]
    with pytest.raises(Exception, match="not valid under any of the given schemas"):
        validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("item", KEDA, ids=[_id(item) for item in KEDA])
def test_the_keda_object_is_valid(item: tuple[Path, dict[str, Any]], validate: Any) -> None:
    _, obj = item
    jsonschema.Draft202012Validator.check_schema(KEDA_SCHEMA)
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft202012Validator(KEDA_SCHEMA).iter_errors(obj)
    ]
    assert problems == []
    if obj["kind"] == "TriggerAuthentication":
        assert {ref["parameter"] for ref in obj["spec"]["secretTargetRef"]} <= REDIS_AUTH_PARAMETERS
        return
    spec = obj["spec"]
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior is not None:  # the HPA KEDA makes carries it: an autoscaling/v2 behavior
        validate(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "keda-hpa-maos-worker"},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "maos-worker"},
                    "maxReplicas": spec["maxReplicaCount"],
                    "behavior": behavior,
                },
            },
            KUBERNETES_VERSION,
            strict=True,
        )
    for trigger in spec["triggers"]:
        assert trigger["type"] in REDIS_STREAMS_PARAMETERS
        metadata = trigger["metadata"]
        assert set(metadata) <= REDIS_STREAMS_PARAMETERS[trigger["type"]], trigger
        assert all(isinstance(value, str) for value in metadata.values())  # KEDA metadata: strings


def test_the_scaler_watches_the_queue_the_workers_read() -> None:
    """The Redis key of the store's work queue and the workers' consumer group; one trigger
    on the backlog (lag), one on the attempts running (pending), both per worker capacity."""
    [worker] = [obj for _, obj in CORE if obj["metadata"]["name"] == "maos-worker"]
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    capacity = args[args.index("--capacity") + 1]
    scaled = [obj for _, obj in KEDA if obj["kind"] == "ScaledObject"]
    assert len(scaled) == 2  # keda.yaml and its Redis Cluster alternative
    for obj in scaled:
        assert obj["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
        kinds = set()
        for trigger in obj["spec"]["triggers"]:
            metadata = trigger["metadata"]
            assert metadata["stream"] == STREAM_PREFIX + keys.ASSIGNMENTS == "maos:x:maos:assignments"
            assert metadata["consumerGroup"] == keys.WORKERS_GROUP
            if "lagCount" in metadata:
                kinds.add("lag")
                assert metadata["lagCount"] == capacity
                assert "activationLagCount" in metadata
            else:
                kinds.add("pending")
                assert metadata["pendingEntriesCount"] == capacity
        assert kinds == {"lag", "pending"}
    assert "replicas" not in worker["spec"]  # KEDA owns it


def test_a_terminated_worker_has_time_to_drain() -> None:
    """SIGTERM drains `maos worker`: running attempts finish, each bounded by its task's
    timeout_s, then its agent's grace period and the CLI's result grace (5 s)."""
    [worker] = [obj for _, obj in CORE if obj["metadata"]["name"] == "maos-worker"]
    drain_s = TaskSpec.model_fields["timeout_s"].default + RunConfig.model_fields["grace_s"].default + 5.0
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= drain_s


def test_every_pod_runs_locked_down() -> None:
    pods = [(path, obj, spec) for path, obj in CORE if (spec := pod_spec(obj)) is not None]
    assert {obj["metadata"]["name"] for _, obj, _ in pods} >= {
        "maos-worker", "maos-supervisor", "maos-dashboard", "maos-redis", "maos-example-run",
    }  # fmt: skip
    for path, obj, spec in pods:
        where = f"{path.name} {obj['metadata']['name']}"
        assert spec["serviceAccountName"] == "maos", where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert {"requests", "limits"} <= set(container["resources"]), where
            mounted = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
            if str(container["image"]).startswith("maos:"):
                assert {"/work", "/tmp"} <= mounted, where  # writable where MAOS and agents write
                env = {item["name"] for item in container.get("env", [])}
                assert {"MAOS_STORE", "MAOS_KEY"} <= env, where  # secrets by env, never in args
                assert not any("REDIS_ADMIN" in name for name in env), where
    [sa] = [obj for _, obj in CORE if obj["kind"] == "ServiceAccount"]
    assert sa["automountServiceAccountToken"] is False


def test_the_secret_example_has_every_key_the_pods_read() -> None:
    [example] = k8s_objects(K8S / "secret.example.yaml")
    given = set(example["stringData"])
    for _, obj in CORE:
        spec = pod_spec(obj)
        for container in spec["containers"] if spec else []:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "maos-secrets", ref
                    assert ref["key"] in given, ref
    for _, obj in KEDA:
        for ref in obj["spec"].get("secretTargetRef", []):
            assert ref["name"] == "maos-secrets", ref
            assert ref["key"] in given, ref


def test_the_redis_start_script_is_the_one_in_deploy_redis() -> None:
    [config, redis] = k8s_objects(K8S / "config.yaml")
    assert redis["metadata"]["name"] == "maos-redis"
    assert redis["data"]["start-node.sh"] == (DEPLOY / "redis" / "start-node.sh").read_text()
    conf = redis["data"]["redis.conf"]
    for line in ("appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction"):
        assert line in conf.splitlines()
    assert config["data"]["MAOS_CHECKPOINTS"].startswith("s3://")


def test_kustomize_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {path.name for path in k8s_files(alternatives=False)} - {"secret.example.yaml"}
    assert listed == on_disk
    assert kustomization["namespace"] == "maos"
    for _, obj in all_k8s_objects():
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "maos", obj["metadata"]["name"]


def test_the_redis_network_policy_lets_every_maos_pod_in() -> None:
    """Only pods it selects may reach Redis: every MAOS pod carries the label in its own
    template (also when applied without kustomize)."""
    [policy] = [obj for _, obj in CORE if obj["kind"] == "NetworkPolicy"]
    [rule] = policy["spec"]["ingress"]
    peers = rule["from"]
    [pods] = [peer["podSelector"]["matchLabels"] for peer in peers if "podSelector" in peer]
    [keda] = [peer["namespaceSelector"]["matchLabels"] for peer in peers if "namespaceSelector" in peer]
    assert keda == {"kubernetes.io/metadata.name": "keda"}
    for path, obj in CORE:
        spec = pod_spec(obj)
        if spec is None or not str(spec["containers"][0]["image"]).startswith("maos:"):
            continue
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert pods.items() <= labels.items(), f"{path.name} {obj['metadata']['name']}"
