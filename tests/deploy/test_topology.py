"""The deployments' topology as processes on this machine (no container can run here):
Redis started by deploy/redis/start-node.sh with its ACL users, the cluster joined by
deploy/redis/cluster-create.sh (compose: 3 primaries + 3 replicas) or one server from the
Kubernetes ConfigMap, then supervisors and workers with the exact command lines of
deploy/compose.yaml and deploy/k8s/, and a plan handed over with `maos run --detach`."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from maos.store import keys, open_store
from maos.store.redis import STREAM_PREFIX
from maos.supervisor import live_supervisors

from ..store.redis_harness import free_ports
from .files import DEPLOY, K8S, compose, k8s_objects, maos_services, pod_spec, sample_env

pytestmark = pytest.mark.slow

MAOS = [sys.executable, "-m", "maos"]
SETPRIV = shutil.which("setpriv")
ADMIN, MAOS_USER, KEDA = "admin-secret", "maos-secret", "keda-secret"
PLAN = """name: topology
tasks:
  - id: a
    command: "echo a"
  - id: b
    command: "cat \\"$MAOS_INPUTS_FILE\\" > /dev/null; echo b"
    depends_on: [a]
  - id: c
    command: "echo c"
    depends_on: [a]
"""


def _need(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        pytest.fail(f"{tool} not found: apt-get install redis-server (scripts/ensure-services.sh does)")
    return found


def _cli(port: int, user: str, password: str, *args: str) -> str:
    done = subprocess.run(
        [_need("redis-cli"), "--no-auth-warning", "--user", user, "-h", "127.0.0.1", "-p", str(port), *args],
        env={**os.environ, "REDISCLI_AUTH": password},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.stdout.strip()


@dataclass
class Processes:
    """Every process a test starts: stopped with SIGTERM, a grace period, SIGKILL, wait."""

    logs: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        if SETPRIV:
            argv = [SETPRIV, "--pdeathsig", "KILL", *argv]
        with (self.logs / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.running[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def alive(self, *names: str) -> None:
        for name in names:
            code = self.running[name].poll()
            assert code is None, f"{name} exited with {code}: {self.log(name)}"

    def stop(self, name: str, grace_s: float = 20.0) -> int:
        proc = self.running.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()

    def stop_all(self) -> None:
        """MAOS processes first (they may still write to Redis), all at once, then Redis."""
        for redis in (False, True):
            group = [name for name in self.running if name.startswith("redis") == redis]
            for name in group:
                if self.running[name].poll() is None:
                    self.running[name].send_signal(signal.SIGTERM)
            for name in group:
                self.stop(name, grace_s=10.0)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path / "logs")
    try:
        yield started
    finally:
        started.stop_all()


def redis_node(processes: Processes, name: str, conf: Path, script: Path, *args: str, cwd: Path) -> None:
    """A Redis node as its container starts it: start-node.sh writes the ACL users from the
    passwords in the environment, then runs redis-server with the given config."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "REDIS_ADMIN_PASSWORD": ADMIN,
        "REDIS_MAOS_PASSWORD": MAOS_USER,
        "REDIS_KEDA_PASSWORD": KEDA,
        "REDIS_CONF": str(conf),
        "REDIS_RUN_DIR": str(cwd / "run"),
        "REDIS_ENTRYPOINT": "",  # no docker-entrypoint.sh here: redis-server as is
    }
    _need("redis-server")
    processes.start(name, ["sh", str(script), *args, "--bind", "127.0.0.1"], cwd=cwd, env=env)


def wait_for(
    what: str, check: object, timeout_s: float, processes: Processes | None = None, *names: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if processes is not None:
            processes.alive(*names)
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def wait_for_services(
    env: dict[str, str], supervisors: int, workers: list[str], processes: Processes
) -> None:
    """Until ``supervisors`` supervisors say in the store that they are alive and every worker
    of ``workers`` holds its lease: the services are up, not just started."""

    async def up() -> bool:
        store = await open_store(env["MAOS_STORE"])
        try:
            holders = [await store.holder(keys.worker_lease(name)) for name in workers]
            return len(await live_supervisors(store)) >= supervisors and holders == workers
        finally:
            await store.close()

    started = list(processes.running)
    wait_for("the supervisors and workers to be up", lambda: asyncio.run(up()), 60, processes, *started)


def maos_env(store: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAOS_", "ANTHROPIC_"))}
    env.update(
        MAOS_STORE=store,
        MAOS_KEY=base64.b64encode(os.urandom(32)).decode(),
        MAOS_CHECKPOINTS=str(tmp_path / "checkpoints"),  # S3 or a volume in the deployments
    )
    return env


def maos(
    args: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAOS, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def finished_run(
    run_id: str, *, cwd: Path, env: dict[str, str], processes: Processes, names: list[str]
) -> dict:
    state: dict = {}

    def done() -> bool:
        nonlocal state
        shown = maos(["status", run_id, "--json"], cwd=cwd, env=env)
        if shown.returncode not in (0, 1):
            return False
        state = json.loads(shown.stdout)
        return state["status"] in ("succeeded", "failed", "cancelled")

    wait_for(f"run {run_id} to finish", done, 90, processes, *names)
    return state


def detach(plan: Path, argv: list[str], *, cwd: Path, env: dict[str, str]) -> str:
    started = maos(argv, cwd=cwd, env=env)
    assert started.returncode == 0, started.stderr
    return str(json.loads(started.stdout)["run_id"])


# ---------------------------------------------------------------------------- compose


@pytest.fixture
def redis_cluster(processes: Processes, tmp_path: Path) -> list[int]:
    """The six nodes of deploy/compose.yaml, joined by its one-shot service's script."""
    ports = free_ports(12)
    nodes = []
    for n in range(6):
        port, bus = ports[2 * n], ports[2 * n + 1]
        redis_node(
            processes,
            f"redis-{n + 1}",
            DEPLOY / "redis" / "redis-cluster.conf",
            DEPLOY / "redis" / "start-node.sh",
            *("--port", str(port), "--cluster-port", str(bus), "--cluster-announce-hostname", "localhost"),
            cwd=tmp_path / f"redis-{n + 1}",
        )
        nodes.append(port)
    create = compose()["services"]["redis-cluster-create"]
    env = {
        "PATH": os.environ["PATH"],
        "REDIS_ADMIN_PASSWORD": ADMIN,
        "REDIS_NODES": " ".join(f"localhost:{port}" for port in nodes),
        "REDIS_CREATE_TIMEOUT_S": "60",
    }
    assert create["entrypoint"] == ["sh", "/cluster-create.sh"]
    script = str(DEPLOY / "redis" / "cluster-create.sh")
    done = subprocess.run(["sh", script], env=env, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cluster ok: 6 nodes" in done.stdout
    again = subprocess.run(["sh", script], env=env, capture_output=True, text=True, timeout=90, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "the cluster exists" in again.stdout
    return nodes


def test_the_compose_redis_cluster_comes_up_with_its_acl(redis_cluster: list[int], tmp_path: Path) -> None:
    roles = [_cli(port, "admin", ADMIN, "role").splitlines()[0] for port in redis_cluster]
    assert sorted(roles) == ["master"] * 3 + ["slave"] * 3
    for port in redis_cluster:  # replicas sync with their primaries (as the admin user)
        wait_for(
            f"node {port} to be a primary or a replica in sync",
            lambda port=port: any(
                line in _cli(port, "admin", ADMIN, "info", "replication").splitlines()
                for line in ("role:master", "master_link_status:up")
            ),
            30,
        )
    port = redis_cluster[0]
    assert "NOPERM" in _cli(port, "maos", MAOS_USER, "keys", "*")
    assert "NOPERM" in _cli(port, "maos", MAOS_USER, "-c", "set", "not-maos", "x")
    assert "NOPERM" in _cli(port, "maos", MAOS_USER, "flushall")
    assert "WRONGPASS" in _cli(port, "default", "", "ping") or "NOAUTH" in _cli(port, "default", "", "ping")
    env = maos_env(f"redis+cluster://maos:{MAOS_USER}@localhost:{port}", tmp_path)
    listed = maos(["runs", "--limit", "1", "--json"], cwd=tmp_path, env=env)  # the image's health check
    assert listed.returncode == 0, listed.stderr


def test_the_compose_topology_runs_a_plan(
    redis_cluster: list[int], processes: Processes, tmp_path: Path
) -> None:
    services = maos_services(compose())
    work = tmp_path / "work"  # the `work` volume: the same path for every MAOS container
    work.mkdir()
    env = maos_env(f"redis+cluster://maos:{MAOS_USER}@localhost:{redis_cluster[0]}", tmp_path)
    names = ["supervisor-1", "supervisor-2", "worker-1", "worker-2"]
    for name in names:
        service = services[name.split("-")[0]]
        processes.start(name, [*MAOS, *service["command"]], cwd=work, env=env)
    # without --name, a worker is called <host>-<pid>
    workers = [f"{socket.gethostname()}-{processes.running[name].pid}" for name in ("worker-1", "worker-2")]
    wait_for_services(env, 2, workers, processes)
    (work / "plan.yaml").write_text(PLAN)
    run_id = detach(
        work / "plan.yaml", ["run", "plan.yaml", "--workers-only", "--detach", "--json"], cwd=work, env=env
    )
    state = finished_run(run_id, cwd=work, env=env, processes=processes, names=names)
    assert state["status"] == "succeeded", state
    for name in ("worker-1", "worker-2"):
        assert processes.stop(name) == 0, processes.log(name)  # SIGTERM drains, exit 0


# ---------------------------------------------------------------------------- kubernetes


@pytest.fixture
def redis_k8s(processes: Processes, tmp_path: Path) -> int:
    """The Redis of deploy/k8s/redis.yaml: its ConfigMap's redis.conf and start-node.sh."""
    [_, config] = k8s_objects(K8S / "config.yaml")
    [_, statefulset, _] = k8s_objects(K8S / "redis.yaml")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["sh", "/etc/maos-redis/start-node.sh"]
    folder = tmp_path / "redis"
    folder.mkdir()
    # The pod's /data is a volume; here the node's own folder.
    conf = config["data"]["redis.conf"].replace("dir /data\n", f"dir {folder}\n")
    (folder / "redis.conf").write_text(conf)
    (folder / "start-node.sh").write_text(config["data"]["start-node.sh"])
    [port] = free_ports(1)
    redis_node(
        processes, "redis", folder / "redis.conf", folder / "start-node.sh", "--port", str(port), cwd=folder
    )
    wait_for("redis", lambda: _cli(port, "admin", ADMIN, "ping") == "PONG", 20, processes, "redis")
    return port


def k8s_pods() -> dict[str, tuple[dict, dict]]:
    """name -> (object, its MAOS container) for the manifests' MAOS pods."""
    found = {}
    for path in [*sorted(K8S.glob("*.yaml")), *sorted((K8S / "alternatives").glob("*.yaml"))]:
        for obj in k8s_objects(path):
            spec = pod_spec(obj)
            if spec is not None and str(spec["containers"][0]["image"]).startswith("maos:"):
                found[obj["metadata"]["name"]] = (obj, spec["containers"][0])
    return found


def k8s_argv(name: str, pod: str) -> list[str]:
    _, container = k8s_pods()[name]
    env = sample_env(container, pod)
    return [
        arg.replace("$(POD_NAME)", env["POD_NAME"]) if "$(POD_NAME)" in arg else arg
        for arg in container["args"]
    ]


def test_the_kubernetes_topology_runs_a_plan_and_keda_sees_its_queue(
    redis_k8s: int, processes: Processes, tmp_path: Path
) -> None:
    env = maos_env(f"redis://maos:{MAOS_USER}@127.0.0.1:{redis_k8s}", tmp_path)
    pods = {
        "maos-supervisor-0": "maos-supervisor",
        "maos-supervisor-1": "maos-supervisor",
        "maos-worker-0": "maos-worker",
        "maos-worker-1": "maos-worker",
    }
    for pod, deployment in pods.items():
        work = tmp_path / pod / "work"  # each pod's own emptyDir at /work
        work.mkdir(parents=True)
        processes.start(pod, [*MAOS, *k8s_argv(deployment, pod)], cwd=work, env=env)
    wait_for_services(env, 2, ["maos-worker-0", "maos-worker-1"], processes)  # --name $(POD_NAME)
    # The example Job: its plan from the ConfigMap, its args as they are.
    [plan_map, _job] = k8s_objects(K8S / "alternatives" / "example-run.yaml")
    job_work = tmp_path / "job" / "work"
    job_work.mkdir(parents=True)
    (tmp_path / "job" / "plan.yaml").write_text(plan_map["data"]["plan.yaml"])
    argv = [arg.replace("/plans/", f"{tmp_path / 'job'}/") for arg in k8s_argv("maos-example-run", "job")]
    run_id = detach(tmp_path / "job" / "plan.yaml", argv, cwd=job_work, env=env)
    state = finished_run(run_id, cwd=job_work, env=env, processes=processes, names=list(pods))
    assert state["status"] == "succeeded", state
    assert len(state["tasks"]) == 2

    # What KEDA's scaler reads, as the `keda` ACL user: the workers' group on the queue.
    stream = STREAM_PREFIX + keys.ASSIGNMENTS
    groups = _cli(redis_k8s, "keda", KEDA, "--json", "xinfo", "groups", stream)
    [group] = json.loads(groups)
    assert group["name"] == keys.WORKERS_GROUP
    assert group["lag"] == 0
    assert group["pending"] == 0
    assert group["entries-read"] == 2
    assert "NOPERM" in _cli(redis_k8s, "keda", KEDA, "get", "maos:kv:x")

    for pod in ("maos-worker-0", "maos-worker-1", "maos-supervisor-0", "maos-supervisor-1"):
        assert processes.stop(pod) == 0, processes.log(pod)  # SIGTERM: drain / let go, exit 0


def test_agents_reach_a_password_protected_store(
    redis_k8s: int, processes: Processes, tmp_path: Path
) -> None:
    env = maos_env(f"redis://maos:{MAOS_USER}@127.0.0.1:{redis_k8s}", tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    processes.start("worker", [*MAOS, *k8s_argv("maos-worker", "maos-worker-0")], cwd=work, env=env)
    (work / "plan.yaml").write_text(
        'name: door\ntasks:\n  - id: a\n    command: \'maos state set k "\\"v\\"" && maos state get k\'\n'
        "    max_attempts: 1\n"
    )
    ran = maos(["run", "plan.yaml", "--workers-only", "--json"], cwd=work, env=env, timeout_s=90)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
