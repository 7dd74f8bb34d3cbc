"""``/metrics`` in Prometheus's text format, with prometheus-client (its registry, counters, histograms, exposition).

Where each value comes from:

- calls, failures and the latency histogram per task: the task workers' Celery events, received per key prefix by
  :mod:`mcs.dashboard.events` (counted from the dashboard's start, as any exporter's counters are);
- workers lost: the same events, a worker whose heartbeats stopped without an offline event;
- deploys and their duration: the audit log, followed as it grows (every deploy, rollback, promote, scale and
  undeploy, from an agent or from the dashboard, with its outcome and time);
- queue depth, replicas, registered tasks, whether the deploy worker runs: read at scrape time (a custom collector)
  from the broker's lists and the dashboard's latest snapshot of the registry and the deploy worker's deployments.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mcs.core.audit import DEPLOY_TOOLS, AuditEntry
from mcs.dashboard.events import task_of

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from mcs.dashboard.snapshot import Snapshotter

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
DEPLOY_BUCKETS_S = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """The dashboard's metrics: its own registry (never the process-global one), fed by events and the audit log."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter("mcs_task_calls", "Calls the task's workers received", ["task"], registry=r)
        self.failures = Counter("mcs_task_failures", "Calls that failed (task-failed events)", ["task"], registry=r)
        self.retries = Counter("mcs_task_retries", "Calls tried again by a retry policy", ["task"], registry=r)
        self.latency = Histogram(
            "mcs_task_duration_seconds",
            "Run time of finished calls, succeeded or failed (from the worker's events)",
            ["task"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.workers_lost = Counter(
            "mcs_workers_lost", "Task workers that stopped beating without an offline event", ["task"], registry=r
        )
        self.deploys = Counter(
            "mcs_deploys", "Deploys, rollbacks, promotions, scalings and undeploys (the audit log)",
            ["task", "tool", "outcome"], registry=r,
        )  # fmt: skip
        self.deploy_duration = Histogram(
            "mcs_deploy_duration_seconds",
            "How long each deploy-side operation took, as its caller saw it (the audit log)",
            ["tool", "outcome"],
            buckets=DEPLOY_BUCKETS_S,
            registry=r,
        )

    # -- feeds ----------------------------------------------------------------------------------------------

    def on_task_event(self, kind: str, event: dict[str, Any], task: Any) -> None:
        """A Celery task event (``task`` is its ``events.state.Task``, which knows the name from task-received)."""
        name = task_of(getattr(task, "name", None) or event.get("name"))
        if name is None:
            return
        if kind == "task-received":
            self.calls.labels(name).inc()
        elif kind == "task-succeeded":
            runtime = event.get("runtime")
            if isinstance(runtime, int | float):
                self.latency.labels(name).observe(max(0.0, float(runtime)))
        elif kind == "task-failed":
            self.failures.labels(name).inc()
            started = getattr(task, "started", None)
            stamp = event.get("timestamp")
            if isinstance(started, int | float) and isinstance(stamp, int | float):
                self.latency.labels(name).observe(max(0.0, float(stamp) - float(started)))
        elif kind == "task-retried":
            self.retries.labels(name).inc()

    def on_audit(self, entry: AuditEntry) -> None:
        if entry.tool not in DEPLOY_TOOLS:
            return
        self.deploys.labels(entry.task_name or "", entry.tool, entry.outcome).inc()
        self.deploy_duration.labels(entry.tool, entry.outcome).observe(max(0.0, entry.duration_ms / 1000))

    def on_worker_lost(self, task_name: str) -> None:
        self.workers_lost.labels(task_name).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class LiveCollector(Collector):
    """Gauges read when Prometheus scrapes: queue depth per task (the broker's lists, now), replicas desired and
    running (the latest snapshot), registered tasks, and whether a deploy worker beats."""

    def __init__(self, snapshots: Snapshotter) -> None:
        self.snapshots = snapshots

    def describe(self) -> list[Metric]:
        return []  # no describe-time reads: a registry made while Redis is down stays usable

    def collect(self) -> list[Metric]:
        depth = GaugeMetricFamily("mcs_queue_depth", "Calls waiting in a task's queue", labels=["task", "queue"])
        desired = GaugeMetricFamily("mcs_task_replicas", "Workers a deployed task should have", labels=["task"])
        running = GaugeMetricFamily("mcs_task_replicas_running", "Workers of a task running", labels=["task"])
        tasks = GaugeMetricFamily("mcs_tasks_registered", "Tasks in the registry")
        deployer = GaugeMetricFamily("mcs_deploy_worker_up", "1 when a deploy worker beats")
        up = GaugeMetricFamily("mcs_dashboard_redis_up", "1 when the dashboard could read Redis at its last look")
        snapshot = self.snapshots.latest()
        tasks.add_metric([], len(snapshot.tasks))
        deployer.add_metric([], 1.0 if snapshot.deploy_worker_up else 0.0)
        up.add_metric([], 1.0 if snapshot.redis_up else 0.0)
        for row in snapshot.tasks:
            if row.replicas_desired is not None:
                desired.add_metric([row.name], row.replicas_desired)
            if row.replicas_running is not None:
                running.add_metric([row.name], row.replicas_running)
        try:
            for row, queue, count in self.snapshots.queue_depths(snapshot):
                depth.add_metric([row.name, queue], count)
        except Exception as exc:  # a scrape during a Redis restart shows what it has, and says why on stderr
            log.info("metrics: queue depths unavailable (%s)", type(exc).__name__)
        return [depth, desired, running, tasks, deployer, up]
