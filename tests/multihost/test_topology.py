"""Smoke tests of the multi-host harness: four hosts on one switch, a real Redis on one of
them, two ``maos worker`` hosts and an orchestrator host that runs no agent itself."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from .maos_cli import maos_env, new_key, run_argv, worker_argv
from .netns import HOSTNAME, IP, UNSHARE, Topology
from .polling import wait_until
from .processes import Processes, base_env
from .redis_node import RedisNode

HOSTS = ("redis", "worker-a", "worker-b", "orch")


def test_partition_cuts_one_host_off_and_heal_restores_it(
    make_topology: Callable[..., Topology], make_redis: Callable[..., RedisNode]
) -> None:
    topology = make_topology(*HOSTS)
    assert topology.namespaces() == sorted(f"{topology.prefix}-{name}" for name in (*HOSTS, "switch"))
    redis = make_redis(topology["redis"])
    assert redis.address.endswith(".2")
    # the root namespace got no address of the test's subnet
    root_addresses = subprocess.run(
        [IP, "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    )
    assert f" {topology.subnet.rsplit('.', 1)[0]}." not in root_addresses.stdout
    # the switch is a plain L2 bridge: only its loopback has addresses
    switch_addresses = subprocess.run(
        [IP, "-n", topology.switch, "-o", "addr", "show"], capture_output=True, text=True, check=True
    )
    assert {line.split()[1] for line in switch_addresses.stdout.splitlines()} == {"lo"}

    for name in HOSTS:
        assert redis.ping(from_host=topology[name]), f"{name} cannot reach redis"

    topology.partition("worker-a")
    assert topology.partitioned() == {"worker-a"}
    assert not topology["worker-a"].can_connect(redis.address, redis.port, timeout_s=0.5)
    assert redis.ping(from_host=topology["worker-b"]), "the partition of worker-a cut off worker-b"

    topology.heal("worker-a")
    assert topology.partitioned() == frozenset()
    wait_until(
        lambda: redis.ping(from_host=topology["worker-a"], timeout_s=0.1),
        timeout_s=5,
        what="worker-a reaching redis",
    )


def _plan(path: Path, ledger: Path) -> list[str]:
    """Six command tasks (a diamond-ish DAG); each appends "<task> <attempt> <address/24>"
    to ``ledger``, the address being that of the host it ran on."""
    record = 'set -- $({ip} -4 -br addr show dev eth0); echo "{task} $MAOS_ATTEMPT $3" >> {ledger}'
    deps = {"t0": [], "t1": [], "t2": [], "t3": [], "t4": ["t0", "t1"], "t5": ["t2", "t3", "t4"]}
    tasks = [
        {"id": task, "command": record.format(ip=IP, task=task, ledger=ledger), "depends_on": parents}
        for task, parents in deps.items()
    ]
    path.write_text(yaml.safe_dump({"name": "multihost-smoke", "tasks": tasks}, sort_keys=False))
    return list(deps)


@pytest.mark.slow
def test_workers_on_two_hosts_run_a_plan_for_an_orchestrator_host(
    make_topology: Callable[..., Topology],
    make_redis: Callable[..., RedisNode],
    processes: Processes,
    tmp_path: Path,
) -> None:
    topology = make_topology(*HOSTS)
    redis = make_redis(topology["redis"])
    env = maos_env(new_key())  # one MAOS_KEY for every host, as a deployment would set it
    homes = {name: tmp_path / "hosts" / name for name in HOSTS}
    for home in homes.values():
        home.mkdir(parents=True)
    ledger = tmp_path / "ledger"
    task_ids = _plan(homes["orch"] / "plan.yaml", ledger)

    workers = {
        name: processes.start(
            topology[name], worker_argv(redis.url(), name), env=env, cwd=homes[name], name=f"maos-{name}"
        )
        for name in ("worker-a", "worker-b")
    }
    run = processes.start(
        topology["orch"], run_argv("plan.yaml", redis.url()), env=env, cwd=homes["orch"], name="maos-run"
    )
    try:
        code = run.wait(timeout_s=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            "the run did not finish:\n" + "\n".join(p.describe() for p in (run, *workers.values()))
        ) from None
    assert code == 0, run.describe()
    summary = json.loads(run.stdout())
    assert summary["counts"] == {"succeeded": len(task_ids)}, run.describe()

    lines = [line.split() for line in ledger.read_text().splitlines()]
    assert Counter(task for task, *_ in lines) == Counter(task_ids), lines  # each exactly once
    worker_addresses = {f"{topology[name].address}/24" for name in workers}
    assert {address for *_, address in lines} <= worker_addresses, lines  # none ran on orch

    for name, worker in workers.items():
        assert worker.running(), worker.describe()
        assert processes.stop(worker, grace_s=10) == 0, f"{name} did not drain cleanly:\n{worker.describe()}"


def test_programs_on_a_host_see_its_name_as_their_hostname(
    make_topology: Callable[..., Topology], processes: Processes, tmp_path: Path
) -> None:
    topology = make_topology("orch", "worker-a")
    if UNSHARE is None or HOSTNAME is None:
        pytest.skip("no `unshare` or `hostname`: every host has this machine's name")
    for name in ("orch", "worker-a"):
        proc = processes.run(topology[name], [HOSTNAME], env=base_env(), cwd=tmp_path, timeout_s=10)
        assert (proc.returncode, proc.stdout()) == (0, f"{name}\n"), proc.describe()


def test_redis_restart_keeps_writes_only_with_persistence(
    make_topology: Callable[..., Topology], make_redis: Callable[..., RedisNode]
) -> None:
    topology = make_topology("redis", "client")
    client = topology["client"]
    redis = make_redis(topology["redis"], persistent=True)
    assert redis.command("SET", "k", "v1", from_host=client) == b"+OK\r\n"
    redis.restart(crash=True)  # SIGKILL: appendfsync always had the write on disk already
    assert redis.command("GET", "k", from_host=client) == b"$2\r\nv1\r\n"

    redis.restart(persistent=False)  # no append-only file read, no RDB written: empty
    assert redis.command("GET", "k", from_host=client) == b"$-1\r\n"
    assert redis.command("SET", "k", "v2", from_host=client) == b"+OK\r\n"
    redis.restart()
    assert redis.command("GET", "k", from_host=client) == b"$-1\r\n"
    assert redis.url() == f"redis://{topology['redis'].address}:6379/0"
