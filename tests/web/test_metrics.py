"""Prometheus metrics: updated from events as they happen, scraped during a run, equal to the log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from maos.eventlog import EventLog
from maos.events import (
    AgentApiRetry,
    AgentOutput,
    RunFinished,
    RunStarted,
    TaskAssigned,
    TaskFailed,
    TaskReady,
    TaskRetried,
    TaskStarted,
    TaskSucceeded,
    TaskWarning,
    apply,
)
from maos.metrics import MetricsObserver
from maos.model import AgentSpec, Plan, RunState, RunStatus, TaskSpec, Usage
from maos.orchestrator import Orchestrator
from maos.store.base import Store
from maos.web import create_app, create_metrics_app, serve_in_background

from .helpers import config, small_plan

ALL_METRICS = {
    "maos_tasks",
    "maos_task_attempts",
    "maos_task_duration_seconds",
    "maos_task_retries",
    "maos_task_requeues",
    "maos_task_warnings",
    "maos_agent_api_retries",
    "maos_active_agents",
    "maos_agent_spawn_seconds",
    "maos_agent_output_lines",
    "maos_events",
    "maos_events_rejected",
    "maos_runs_started",
    "maos_runs_finished",
    "maos_messages",
    "maos_message_latency_seconds",
    "maos_checkpoint_duration_seconds",
    "maos_checkpoint_bytes",
    "maos_cas_conflicts",
    "maos_missed_heartbeats",
    "maos_cost_usd",
    "maos_tokens",
    "maos_run_resumes",
    "maos_run_cost_usd",
    "maos_run_budget_usd",
    "maos_message_backlog",
    "maos_agent_cpu_percent",
    "maos_agent_rss_bytes",
    "maos_agent_idle_seconds",
    "maos_agent_anomalies",
    "maos_last_checkpoint_timestamp_seconds",
    "maos_resource_waits",
    "maos_resource_wait_seconds",
    "maos_stalled_tasks",
    "maos_run_interrupted",
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by prometheus-client's own parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return parsed[(name, tuple(sorted(labels.items())))]


def feed(observer: MetricsObserver, state: RunState, *events: object) -> None:
    for n, event in enumerate(events, start=state.event_count + 1):
        apply(state, event, str(n))  # type: ignore[arg-type]
        observer.observe(str(n), event, state)  # type: ignore[arg-type]


def test_every_metric_exists_from_the_start_at_zero() -> None:
    parsed = samples(MetricsObserver().render().decode())
    families = {family.name for family in text_string_to_metric_families(MetricsObserver().render().decode())}
    assert families == ALL_METRICS
    for state in ("pending", "running", "succeeded", "failed"):
        assert value(parsed, "maos_tasks", state=state) == 0
    for kind in ("input", "output", "cache_read", "cache_creation"):
        assert value(parsed, "maos_tokens_total", kind=kind) == 0
    assert value(parsed, "maos_cost_usd_total") == 0
    assert value(parsed, "maos_cas_conflicts_total", kind="state") == 0
    assert value(parsed, "maos_cas_conflicts_total", kind="bus") == 0
    assert value(parsed, "maos_messages_total", direction="sent") == 0
    assert value(parsed, "maos_agent_anomalies_total", kind="rss_outlier") == 0
    assert value(parsed, "maos_stalled_tasks") == 0
    assert value(parsed, "maos_checkpoint_bytes_count", kind="full") == 0


def test_observer_follows_task_lifecycles(tmp_path: Path) -> None:
    observer = MetricsObserver()
    state = RunState()
    plan = Plan(
        name="m",
        tasks=(TaskSpec(id="a", command="true", max_attempts=2), TaskSpec(id="b", command="true")),
    )
    agents = (AgentSpec(id="x"), AgentSpec(id="y"))
    feed(observer, state, RunStarted(run_id="r", plan=plan, config=config(tmp_path), agents=agents))
    parsed = samples(observer.render().decode())
    assert value(parsed, "maos_tasks", state="pending") == 2
    feed(
        observer,
        state,
        TaskReady(task_id="a", ts=1.0),
        TaskReady(task_id="b", ts=1.0),
        TaskAssigned(task_id="a", agent_id="x", attempt=1, ts=10.0),
        TaskAssigned(task_id="b", agent_id="y", attempt=1, ts=10.0),
        TaskStarted(task_id="a", agent_id="x", attempt=1, pid=1, ts=10.25),
    )
    parsed = samples(observer.render().decode())
    assert value(parsed, "maos_tasks", state="assigned") == 1
    assert value(parsed, "maos_tasks", state="running") == 1
    assert value(parsed, "maos_tasks", state="pending") == 0
    assert value(parsed, "maos_active_agents") == 2
    assert value(parsed, "maos_agent_spawn_seconds_count") == 1
    assert value(parsed, "maos_agent_spawn_seconds_sum") == pytest.approx(0.25)
    feed(
        observer,
        state,
        AgentOutput(task_id="a", agent_id="x", stream="stdout", text="hi"),
        AgentOutput(task_id="a", agent_id="x", stream="stderr", text="oops"),
        TaskFailed(task_id="a", agent_id="x", attempt=1, reason="exit 1", duration_s=0.5),
        TaskRetried(task_id="a", retry_at=11.0, delay_s=0.1),
        TaskStarted(task_id="b", agent_id="y", attempt=1, pid=2, ts=10.5),
        TaskSucceeded(task_id="b", agent_id="y", attempt=1, duration_s=2.0),
    )
    parsed = samples(observer.render().decode())
    assert value(parsed, "maos_tasks", state="retry_wait") == 1
    assert value(parsed, "maos_tasks", state="succeeded") == 1
    assert value(parsed, "maos_task_attempts_total", outcome="failed") == 1
    assert value(parsed, "maos_task_attempts_total", outcome="succeeded") == 1
    assert value(parsed, "maos_task_duration_seconds_sum", outcome="succeeded") == 2.0
    assert value(parsed, "maos_task_duration_seconds_bucket", outcome="failed", le="0.5") == 1
    assert value(parsed, "maos_task_retries_total") == 1
    assert value(parsed, "maos_active_agents") == 0
    assert value(parsed, "maos_agent_output_lines_total", stream="stderr") == 1
    assert value(parsed, "maos_events_total", type="task_started") == 2
    feed(observer, state, RunFinished(status=RunStatus.FAILED))
    parsed = samples(observer.render().decode())
    assert value(parsed, "maos_runs_finished_total", status="failed") == 1
    assert value(parsed, "maos_runs_started_total") == 1


def test_usage_warnings_api_retries_and_stale_reports(tmp_path: Path) -> None:
    observer = MetricsObserver()
    state = RunState()
    plan = Plan(name="u", tasks=(TaskSpec(id="a", prompt="p", max_attempts=3),))
    feed(
        observer,
        state,
        RunStarted(run_id="r", plan=plan, config=config(tmp_path), agents=(AgentSpec(id="x"),)),
        TaskReady(task_id="a"),
        TaskAssigned(task_id="a", agent_id="x", attempt=1),
        TaskStarted(task_id="a", agent_id="x", attempt=1, pid=1),
        TaskWarning(task_id="a", agent_id="x", attempt=1, text="denied: Bash(rm -rf /)"),
        AgentApiRetry(task_id="a", agent_id="x", attempt=1, api_attempt=1, error_status=429),
        AgentApiRetry(task_id="a", agent_id="x", attempt=1, api_attempt=2),
        TaskFailed(
            task_id="a",
            agent_id="x",
            attempt=1,
            reason="exit 1",
            duration_s=1.0,
            usage=Usage(cost_usd=0.5, input_tokens=10, output_tokens=3),
        ),
        TaskRetried(task_id="a", retry_at=0.0, delay_s=0.0),
        TaskReady(task_id="a"),
        TaskAssigned(task_id="a", agent_id="x", attempt=2),
        TaskStarted(task_id="a", agent_id="x", attempt=2, pid=2),
        # a late report of attempt 1 (its worker was presumed dead): ignored, like apply() does
        TaskSucceeded(task_id="a", agent_id="x", attempt=1, duration_s=9.0, usage=Usage(cost_usd=9.0)),
        TaskSucceeded(
            task_id="a",
            agent_id="x",
            attempt=2,
            duration_s=2.0,
            usage=Usage(cost_usd=0.25, cache_read_tokens=7),
        ),
    )
    parsed = samples(observer.render().decode())
    assert value(parsed, "maos_task_warnings_total") == 1
    assert value(parsed, "maos_agent_api_retries_total", status="429") == 1
    assert value(parsed, "maos_agent_api_retries_total", status="connection") == 1
    assert value(parsed, "maos_cost_usd_total") == 0.75
    assert value(parsed, "maos_tokens_total", kind="input") == 10
    assert value(parsed, "maos_tokens_total", kind="cache_read") == 7
    assert value(parsed, "maos_task_attempts_total", outcome="succeeded") == 1
    assert value(parsed, "maos_task_duration_seconds_sum", outcome="succeeded") == 2.0
    assert value(parsed, "maos_tasks", state="succeeded") == 1
    assert value(parsed, "maos_events_total", type="task_succeeded") == 2
    assert value(parsed, "maos_events_rejected_total", kind="stale") == 1


def test_record_methods_feed_the_metrics_other_components_measure() -> None:
    observer = MetricsObserver()
    observer.record_checkpoint(0.3, 5000, kind="incremental")
    observer.record_cas_conflict()
    observer.record_cas_conflict(2, kind="bus")
    observer.record_resource_wait("db", 1.5)
    observer.set_stalled_tasks(2)
    observer.record_missed_heartbeat()
    observer.record_cost(0.125)
    observer.record_tokens(input=100, output=20, cache_read=5)
    observer.record_spawn(0.05)
    parsed = samples(observer.render().decode())
    assert value(parsed, "maos_checkpoint_duration_seconds_count", kind="incremental") == 1
    assert value(parsed, "maos_checkpoint_bytes_sum", kind="incremental") == 5000
    assert value(parsed, "maos_checkpoint_bytes_count", kind="full") == 0
    assert value(parsed, "maos_cas_conflicts_total", kind="state") == 1
    assert value(parsed, "maos_cas_conflicts_total", kind="bus") == 2
    assert value(parsed, "maos_resource_waits_total", resource="db") == 1
    assert value(parsed, "maos_resource_wait_seconds_sum", resource="db") == 1.5
    assert value(parsed, "maos_stalled_tasks") == 2
    assert value(parsed, "maos_missed_heartbeats_total") == 1
    assert value(parsed, "maos_cost_usd_total") == 0.125
    assert value(parsed, "maos_tokens_total", kind="input") == 100
    assert value(parsed, "maos_tokens_total", kind="cache_creation") == 0
    assert value(parsed, "maos_agent_spawn_seconds_count") == 1
    with pytest.raises(ValueError, match="checkpoint kind"):
        observer.record_checkpoint(1, 1, kind="weekly")
    with pytest.raises(ValueError, match="cost"):
        observer.record_cost(-1)
    with pytest.raises(ValueError, match="tokens"):
        observer.record_tokens(output=-3)


def test_observers_do_not_share_a_registry() -> None:
    first, second = MetricsObserver(), MetricsObserver()
    first.record_cas_conflict()
    assert value(samples(second.render().decode()), "maos_cas_conflicts_total", kind="state") == 0
    assert b"maos_" not in __import__("prometheus_client").generate_latest()  # the global registry


async def succeeded_in_log(store: Store, run_id: str) -> int:
    return len([e async for _, e in EventLog(store, run_id).iterate() if isinstance(e, TaskSucceeded)])


async def test_metrics_scraped_during_a_run_match_the_log(store: Store, tmp_path: Path) -> None:
    plan = Plan(
        name="scrape",
        tasks=tuple(
            TaskSpec(id=f"t{n}", command="sleep 0.2; echo done", depends_on=(f"t{n - 1}",) if n % 3 else ())
            for n in range(9)
        ),
    )
    orchestrator = Orchestrator(store, plan, config(tmp_path))
    observer = MetricsObserver()
    orchestrator.hooks.append(observer.observe)
    # /metrics as ``maos run --dashboard`` serves it, and as ``--metrics-port`` does
    dashboard = create_app(store, run_id=orchestrator.run_id, metrics=observer)
    async with (
        serve_in_background(dashboard) as server,
        serve_in_background(create_metrics_app(observer)) as metrics_server,
        httpx.AsyncClient(timeout=10) as client,
    ):
        run = asyncio.create_task(orchestrator.run())
        scrapes = 0
        try:
            while not run.done():
                text = (await client.get(f"{server.url}metrics")).text
                log_count = await succeeded_in_log(store, orchestrator.run_id)
                scraped = value(samples(text), "maos_tasks", state="succeeded")
                # the hook runs when the orchestrator reads an event back, so it never runs ahead
                assert scraped <= log_count
                scrapes += 1
                await asyncio.sleep(0.1)
        finally:
            if not run.done():
                run.cancel()
            await asyncio.wait([run])
        await run
        assert scrapes >= 5
        for url in (f"{server.url}metrics", f"{metrics_server.url}metrics"):
            response = await client.get(url)
            assert response.headers["content-type"].startswith("text/plain")
            parsed = samples(response.text)
            log_count = await succeeded_in_log(store, orchestrator.run_id)
            assert log_count == 9
            assert value(parsed, "maos_tasks", state="succeeded") == log_count
            assert value(parsed, "maos_task_attempts_total", outcome="succeeded") == log_count
            assert value(parsed, "maos_task_duration_seconds_count", outcome="succeeded") == log_count
            assert value(parsed, "maos_runs_finished_total", status="succeeded") == 1


async def test_standalone_dashboard_feeds_metrics_from_the_log(store: Store, tmp_path: Path) -> None:
    """``maos dashboard`` is not in the run's process: it follows the log into its metrics."""
    app = create_app(store)  # no run yet: it follows the newest run once there is one
    async with (
        serve_in_background(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
    ):
        orchestrator = Orchestrator(store, small_plan(sleep_s=0.1), config(tmp_path))
        await orchestrator.run()
        log_count = await succeeded_in_log(store, orchestrator.run_id)
        for _ in range(100):
            parsed = samples((await client.get("metrics")).text)
            if value(parsed, "maos_runs_finished_total", status="succeeded") == 1:
                break
            await asyncio.sleep(0.05)
        assert value(parsed, "maos_tasks", state="succeeded") == log_count == 4
        assert value(parsed, "maos_agent_output_lines_total", stream="stderr") == 1


def test_deploy_files_use_only_real_metrics() -> None:
    import json
    import re

    import yaml

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    dashboard = json.loads((deploy / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    used = {
        re.sub(r"_(total|bucket|sum|count)$", "", name)
        for expr in exprs
        for name in re.findall(r"maos_\w+", expr)
    }
    assert used <= ALL_METRICS, used - ALL_METRICS
    assert used == ALL_METRICS  # and every metric has a panel
    scrape = yaml.safe_load((deploy / "prometheus.yml").read_text())
    assert {job["job_name"] for job in scrape["scrape_configs"]} == {"maos-run", "maos-dashboard"}
