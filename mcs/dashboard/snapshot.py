"""What the dashboard shows, gathered in one place: the registry, the deploy worker's deployments, the events heard.

A :class:`Snapshotter` refreshes a :class:`Snapshot` every ``MCS_DASHBOARD_REFRESH_S`` in a thread of its own (the
pages and ``/metrics`` read the latest one, so a page never waits on the deploy worker), and on each refresh tells
the event monitor which key prefixes to listen to and counts the workers lost since the last look. A task's own page
reads its versions, deploy history and log tail when it is asked for (:meth:`Snapshotter.detail`).

Replicas and worker lists come from ``list_deployments`` (``replicas``, ``replicas_running``, ``workers``,
``scaling``) when the deploy worker answers with them; from an older deploy worker, its one ``worker_status``; and
with no deploy worker at all, from the workers' own heartbeats. Whatever is unknown is shown as unknown.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mcs.core import protocol
from mcs.core.audit import AuditEntry
from mcs.core.errors import MCSError
from mcs.core.lifecycle import VersionEntry
from mcs.core.models import TaskRecord
from mcs.dashboard.events import Call, EventMonitor
from Redis.broker import queue_depth
from Redis.connection import make_client
from Redis.deploy_state import DeployWorkerState
from Redis.versions import VersionHistory

if TYPE_CHECKING:
    import redis

    from mcs.dashboard.metrics import Metrics
    from mcs.services import Services

log = logging.getLogger(__name__)

QUERY_TIMEOUT_S = 10.0  # a deploy worker that takes longer is shown as not answering, not waited for
LOG_LINES = 80


@dataclass
class TaskRow:
    """One task as the overview shows it."""

    name: str
    category: str
    queue: str
    description: str
    primary: str
    deployed: bool
    version: str | None = None
    runtime: str | None = None
    isolation: str | None = None
    network: str | None = None
    sandbox: str | None = None
    deployed_at: str | None = None
    key_prefix: str = ""
    serve_queue: str | None = None
    canary: str | None = None
    canary_queue: str | None = None
    worker_status: str | None = None
    replicas_desired: int | None = None
    replicas_running: int | None = None
    concurrency: int | None = None
    workers: list[dict[str, Any]] = field(default_factory=list)
    scaling: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    retiring: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    tests_passed: int | None = None
    queue_depth: int | None = None
    health: str = "unknown"
    health_note: str = ""
    calls_seen: int = 0
    failures_seen: int = 0
    listening: bool = False  # the dashboard hears this task's call events

    @property
    def version_short(self) -> str:
        return (self.version or "")[:12]


@dataclass
class Snapshot:
    at: float = 0.0
    tasks: list[TaskRow] = field(default_factory=list)
    redis_up: bool = False
    redis_error: str | None = None
    deploy_worker_up: bool = False
    deployments_error: str | None = None
    failures: list[Call] = field(default_factory=list)

    @property
    def at_text(self) -> str:
        return datetime.fromtimestamp(self.at, UTC).strftime("%H:%M:%S UTC") if self.at else "never"

    def row(self, name: str) -> TaskRow | None:
        return next((r for r in self.tasks if r.name == name), None)


@dataclass
class TaskDetail:
    """A task's own page: its row plus what is read on demand."""

    row: TaskRow
    calls: list[Call]
    versions: list[VersionEntry]
    history: list[AuditEntry]
    logs: str | None
    logs_error: str | None


class Snapshotter:
    def __init__(self, services: Services, monitor: EventMonitor | None, metrics: Metrics | None = None) -> None:
        self.services = services
        self.settings = services.settings
        self.monitor = monitor
        self.metrics = metrics
        self._latest = Snapshot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._broker: redis.Redis | None = None
        self._refresh_lock = threading.Lock()

    # -- the loop -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="dashboard-snapshots", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=QUERY_TIMEOUT_S + 2)
        if self.monitor is not None:
            self.monitor.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.settings.dashboard_refresh_s)

    def latest(self) -> Snapshot:
        return self._latest

    # -- one refresh ----------------------------------------------------------------------------------------

    def refresh(self) -> Snapshot:
        """Read everything once and make it the latest snapshot (also after a failure: then it says what failed)."""
        with self._refresh_lock:
            snapshot = Snapshot(at=time.time())
            try:
                records = self.services.registry.list()
                snapshot.redis_up = True
            except MCSError as exc:
                snapshot.redis_error = exc.message
                records = []
            statuses: dict[str, dict[str, Any]] = {}
            if snapshot.redis_up:
                statuses = self._deployments(snapshot)
            by_name = {r.name: r for r in records}
            snapshot.tasks = [self._row(r, by_name, statuses) for r in records]
            if self.monitor is not None:
                self.monitor.watch(["", *sorted({r.key_prefix for r in snapshot.tasks if r.key_prefix})])
                self._events_into(snapshot)
            if snapshot.redis_up:
                self._depths_into(snapshot)
            self._latest = snapshot
            return snapshot

    def _deployments(self, snapshot: Snapshot) -> dict[str, dict[str, Any]]:
        try:
            snapshot.deploy_worker_up = DeployWorkerState(self.settings, self.services.registry.client).alive()
            if not snapshot.deploy_worker_up:
                snapshot.deployments_error = "no deploy worker is running: replicas and health come from heartbeats"
                return {}
            raw = self.services.deploy_client.call(protocol.LIST_DEPLOYMENTS, {}, QUERY_TIMEOUT_S)
        except MCSError as exc:
            snapshot.deployments_error = f"the deploy worker did not answer ({exc.code}): {exc.message}"
            return {}
        return {d["task_name"]: d for d in raw.get("deployments") or [] if isinstance(d, dict) and "task_name" in d}

    def _row(self, record: TaskRecord, by_name: dict[str, TaskRecord], statuses: dict[str, dict[str, Any]]) -> TaskRow:
        primary = by_name.get(record.primary, record)
        dep = primary.deployment
        row = TaskRow(
            name=record.name,
            category=record.category,
            queue=record.queue,
            description=record.description,
            primary=primary.name,
            deployed=dep is not None,
        )
        if dep is None:
            row.health, row.health_note = "external", "registered by hand: its worker is not MCS's"
            row.serve_queue = record.queue
            return row
        extra = dep.model_extra or {}
        row.version = dep.version
        row.runtime = dep.runtime
        row.isolation = dep.isolation or "none"
        row.network = dep.network or "none"
        row.sandbox = dep.sandbox
        row.deployed_at = dep.deployed_at.strftime("%Y-%m-%d %H:%M:%S UTC") if dep.deployed_at else None
        row.key_prefix = dep.key_prefix or ""
        row.serve_queue = dep.route_queue(record.queue)
        row.tasks = dep.tasks or [primary.name]
        row.tests_passed = dep.tests_passed
        if dep.canary is not None:
            row.canary, row.canary_queue = dep.canary.version, dep.canary.serve_queue
        row.replicas_desired = _int(getattr(dep, "replicas", None), extra.get("replicas"))
        row.concurrency = _int(getattr(dep, "concurrency", None), extra.get("concurrency"))
        status = statuses.get(primary.name)
        if status is not None:
            self._status_into(row, status)
        elif self.monitor is not None:
            alive = [w for w in self.monitor.workers(row.key_prefix) if w["alive"]]
            if alive or self.monitor.events_seen:
                row.replicas_running = len(alive)
                row.workers = [{"hostname": w["hostname"], "state": "RUNNING (heartbeat)"} for w in alive]
        if row.replicas_desired is None and row.replicas_running is not None:
            row.replicas_desired = 1
        row.health, row.health_note = _health(row)
        return row

    @staticmethod
    def _status_into(row: TaskRow, status: dict[str, Any]) -> None:
        """A ``DeploymentStatus`` (as a dict: fields a newer deploy worker adds are read when they are there)."""
        row.worker_status = status.get("worker_status")
        row.warnings = list(status.get("warnings") or [])
        row.retiring = [r for r in status.get("retiring") or [] if isinstance(r, dict)]
        row.workers = [w for w in status.get("workers") or [] if isinstance(w, dict)]
        row.scaling = [s for s in status.get("scaling") or [] if isinstance(s, dict)]
        desired = _int(status.get("replicas"))
        if desired is not None:
            row.replicas_desired = desired
        running = _int(status.get("replicas_running"))
        if running is None and row.workers:
            running = sum(1 for w in row.workers if w.get("state") == "RUNNING")
        if running is None and "replicas" not in status:  # one worker per task: its status says it all
            running = 1 if row.worker_status == "RUNNING" else 0
        row.replicas_running = running
        row.concurrency = _int(status.get("concurrency")) or row.concurrency

    def _events_into(self, snapshot: Snapshot) -> None:
        assert self.monitor is not None
        prefixes = {r.key_prefix: r.primary for r in snapshot.tasks if r.key_prefix}
        for prefix, hostname in self.monitor.lost_workers():
            task = prefixes.get(prefix)
            if task and self.metrics is not None:
                self.metrics.on_worker_lost(task)
            log.warning("worker %s of %s stopped beating without an offline event", hostname, task or "a task")
        recent = self.monitor.calls(limit=self.settings.dashboard_recent_calls)
        counts: dict[str, list[int]] = {}
        for call in recent:
            seen = counts.setdefault(call.task_name, [0, 0])
            seen[0] += 1
            seen[1] += call.state == "FAILURE"
        for row in snapshot.tasks:
            row.calls_seen, row.failures_seen = counts.get(row.name, [0, 0])
            row.listening = self.monitor.listening(row.key_prefix)
        snapshot.failures = [c for c in recent if c.state == "FAILURE"][:10]

    def _depths_into(self, snapshot: Snapshot) -> None:
        try:
            for row, _queue, count in self.queue_depths(snapshot):
                row.queue_depth = (row.queue_depth or 0) + count
        except MCSError as exc:
            log.info("queue depths unavailable: %s", exc.message)

    def queue_depths(self, snapshot: Snapshot) -> list[tuple[TaskRow, str, int]]:
        """(row, queue, waiting calls) of every queue a task's calls go to now (a gradual release has two)."""
        if self._broker is None:
            self._broker = make_client(self.settings, self.settings.redis_broker_db)
        found = []
        for row in snapshot.tasks:
            if row.primary != row.name:
                continue  # a folder's tasks share its queue: counted once, on its main task
            for queue in filter(None, (row.serve_queue, row.canary_queue)):
                found.append((row, queue, queue_depth(self.settings, row.key_prefix, queue, self._broker)))
        return found

    # -- a task's page --------------------------------------------------------------------------------------

    def detail(self, name: str, with_logs: bool = True) -> TaskDetail | None:
        row = self._latest.row(name)
        if row is None:
            return None
        calls = self.monitor.calls(name, limit=30) if self.monitor is not None else []
        versions: list[VersionEntry] = []
        history: list[AuditEntry] = []
        try:
            if row.deployed:
                versions = VersionHistory(self.settings, self.services.registry.client).list(row.primary)
            history = self.services.audit_log.read(task_name=row.primary, limit=30)
        except MCSError as exc:
            log.info("task page of %s: %s", name, exc.message)
        logs, logs_error = None, None
        if with_logs and row.deployed:
            logs, logs_error = self._logs(row.primary)
        return TaskDetail(row=row, calls=calls, versions=versions, history=history, logs=logs, logs_error=logs_error)

    def _logs(self, task: str) -> tuple[str | None, str | None]:
        if not self._latest.deploy_worker_up:
            return None, "no deploy worker is running: the log tail comes from it"
        try:
            payload = {"task_name": task, "tail_lines": LOG_LINES}
            raw = self.services.deploy_client.call(protocol.TASK_LOGS, payload, QUERY_TIMEOUT_S)
        except MCSError as exc:
            return None, exc.message
        return str(raw.get("logs") or ""), None


def _int(*values: Any) -> int | None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _health(row: TaskRow) -> tuple[str, str]:
    """healthy, degraded, down, parked or unknown, with a few words of why."""
    desired, running = row.replicas_desired, row.replicas_running
    if row.worker_status == "PARKED" or desired == 0:
        return "parked", "no worker until a call wakes it"
    if running is None:
        return "unknown", "the deploy worker did not say and no heartbeat was heard"
    if desired is not None and running >= desired > 0:
        return "healthy", f"{running} of {desired} worker(s) running"
    if running > 0:
        return "degraded", f"{running} of {desired} worker(s) running"
    return "down", f"no worker running ({row.worker_status or 'no heartbeat'})"
