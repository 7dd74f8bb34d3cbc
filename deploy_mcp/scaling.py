"""How many workers serve a task: ``scale_task``, the autoscaler (queue depth and busy workers, with a cooldown),
parking at zero and waking on a call. A mixin of :class:`deploy_mcp.deployer.Deployer`, whose state it uses.

A scale-up starts the missing workers of the serving version's group and waits until each answers; only then does
the registry say so. A scale-down records the new count at once and stops the workers beyond it in the background,
each finishing the calls it took (a warm shutdown of up to the task time limit); what they had reserved and not
started goes back to the queue when their connection closes (kombu restores it). At zero replicas (parked) a task
has no worker and costs no memory: its calls wait on its queue, and the first one wakes it (the MCP server asks the
deploy worker at once; the autoscaler also sees the queue grow).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from deploy_mcp.health import wait_healthy
from deploy_mcp.runtime import Artifact, WorkerHandle
from mcs.core.capacity import Capacity, check_capacity, check_replicas
from mcs.core.celery_app import task_key_prefix
from mcs.core.errors import Conflict, NotFound
from mcs.core.models import DeploymentInfo, TaskRecord
from mcs.core.names import validate_name
from mcs.core.results import ReplicaStatus, ScaleResult, ScalingEvent
from Redis.broker import queue_depth
from Redis.scaling import ScalingLog, calls_held

if TYPE_CHECKING:
    from redis import Redis

    from deploy_mcp.credentials import TaskCredentials
    from deploy_mcp.health import Probe
    from deploy_mcp.runtime import GroupRuntime
    from mcs.core.settings import Settings
    from Redis.registry import TaskRegistry

log = logging.getLogger(__name__)

DRAIN_GRACE_S = 5


def capacity_of(dep: DeploymentInfo | None) -> Capacity | None:
    """The capacity a deployment was made with (None for none; defaults for a deployment from before capacities)."""
    if dep is None:
        return None
    return Capacity(dep.concurrency or 1, dep.desired_replicas, dep.min_replicas, dep.max_replicas)


def wanted_replicas(dep: DeploymentInfo, depth: int, held: int) -> int:
    """What the autoscaler asks for: enough workers for the calls waiting and held, within the task's range."""
    concurrency = dep.concurrency or 1
    need = math.ceil((depth + held) / concurrency)
    low = dep.min_replicas or 0
    high = dep.max_replicas if dep.max_replicas is not None else max(dep.desired_replicas, 1)
    return max(low, min(high, need))


class Scaling:
    settings: Settings
    registry: TaskRegistry
    runtime: GroupRuntime
    probe: Probe
    credentials: TaskCredentials
    broker: Redis | None
    _later: Callable[[Callable[[], None]], None]

    def _request_lock(self, task: str) -> AbstractContextManager[str]:
        raise NotImplementedError

    def _lock(self, task: str, wait_s: float = 0.0) -> AbstractContextManager[str]:
        raise NotImplementedError

    def run_spec(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def options_of(self, dep: DeploymentInfo) -> Any:
        raise NotImplementedError

    def register(self, draft: TaskRecord, deployment: DeploymentInfo | None) -> TaskRecord:
        raise NotImplementedError

    @property
    def seen_members(self) -> dict[str, dict[str, int]]:
        """The watchdog's memory: each group's workers (id -> slot) at its last round. A change MCS makes itself
        (a scale) resets it, so that a worker it stopped is never taken for one that died."""
        return self.__dict__.setdefault("_seen_members", {})

    @property
    def scaling_log(self) -> ScalingLog:
        return ScalingLog(self.settings, self.registry.client)

    # -- scale_task -------------------------------------------------------------------------------------------

    def scale(
        self,
        task_name: Any,
        replicas: Any,
        reason: str = "scale_task",
        min_replicas: Any = None,
        max_replicas: Any = None,
        wait: bool = True,
    ) -> ScaleResult:
        """Set the task's workers to ``replicas`` (0 parks it), and optionally its autoscaling range."""
        name = validate_name(task_name, "task_name")
        check_replicas(replicas, self.settings)
        given = {"replicas": replicas, "min_replicas": min_replicas, "max_replicas": max_replicas}
        with self._request_lock(name):
            record = self._scalable(name)
            dep = record.deployment
            # The same rules as deploy_task's: a range goes together, and the count lies in it (the given or the
            # task's own).
            wanted = check_capacity({k: v for k, v in given.items() if v is not None}, self.settings, capacity_of(dep))
            dep = dep.model_copy(update={"min_replicas": wanted.min_replicas, "max_replicas": wanted.max_replicas})
            previous = dep.desired_replicas
            self._scale_to(record, dep, replicas, reason, wait=wait)
        return self.scale_result(name, previous)

    def scale_result(self, name: str, previous: int) -> ScaleResult:
        record = self.registry.get(name)
        dep = record.deployment
        workers = self.replica_status(dep, record)
        running = sum(1 for w in workers if w.state == "RUNNING")
        return ScaleResult(
            task_name=name,
            replicas=dep.desired_replicas,
            previous=previous,
            replicas_running=running,
            workers=workers,
            min_replicas=dep.min_replicas,
            max_replicas=dep.max_replicas,
            message=f"task {name}: {dep.desired_replicas} worker(s) desired (was {previous}), {running} running"
            + (" (parked: the first call wakes it)" if dep.parked else ""),
        )

    def _scalable(self, name: str) -> TaskRecord:
        record = self.registry.find(name)
        if record is None or record.deployment is None:
            raise NotFound(f"task {name!r} is not deployed: deploy it with deploy_task first", task_name=name)
        if record.primary != name:
            raise Conflict(
                f"task {name!r} is served by task {record.primary!r}'s workers: scale {record.primary!r}",
                task_name=name,
                owner=record.primary,
            )
        return record

    def group_of(self, dep: DeploymentInfo, record: TaskRecord) -> WorkerHandle:
        """The serving version's group (it may have no worker at all: parked)."""
        return WorkerHandle(
            runtime=self.runtime.name, id=dep.container_id or "", name=dep.container_id or "",
            hostname=dep.hostname or "", task_name=record.name, queue=record.queue, version=dep.version or "",
            artifact_ref=dep.image or "",
        )  # fmt: skip

    def group_spec(self, record: TaskRecord, dep: DeploymentInfo, replicas: int) -> Any:
        """How the serving version's workers start: as the deploy started them, with the same Redis user."""
        user = self.credentials.load(dep.acl_user) if dep.acl_user else None
        artifact = Artifact(self.runtime.name, dep.image or "", dep.image or "", reused=True)
        spec = self.run_spec(
            record.name, record.queue, dep.version or "", artifact, user, self.options_of(dep), dep.serve_queue,
            replicas,
        )  # fmt: skip
        return replace(spec, hostname=dep.hostname or spec.hostname)

    def _scale_to(self, record: TaskRecord, dep: DeploymentInfo, replicas: int, reason: str, wait: bool) -> None:
        """Under the task's lock: up -> start and wait for the new workers, then record; down -> record, then stop
        the extra workers in the background (each drains its calls)."""
        previous = dep.desired_replicas
        group = self.group_of(dep, record)
        spec = self.group_spec(record, dep, replicas)
        self.seen_members.pop(group.id, None)
        updated = dep.model_copy(update={"replicas": replicas})
        drain_s = self.settings.task_time_limit_s + DRAIN_GRACE_S
        if replicas > previous or (replicas and self.runtime.state(group) in ("MISSING", "EXITED")):
            self.runtime.scale(group, spec, replicas, drain_s=drain_s)
            if wait:
                probe = partial(self.probe, key_prefix=dep.key_prefix or task_key_prefix(self.settings, record.name))
                wait_healthy(self.runtime, probe, group, dep.tasks or record.name, self.settings.health_timeout_s,
                             replicas)  # fmt: skip
            self._register_scaled(record, updated)
        else:
            self._register_scaled(record, updated)
            self._later(lambda: self._stop_extra(group, spec, replicas, drain_s))
        if replicas != previous:
            self.scaling_log.record(record.name, previous, replicas, reason)
            log.info("scaled %s from %d to %d worker(s): %s", record.name, previous, replicas, reason)

    def _stop_extra(self, group: WorkerHandle, spec: Any, replicas: int, drain_s: float) -> None:
        try:
            self.runtime.scale(group, spec, replicas, drain_s=drain_s)
        except Exception:
            log.exception("stopping the extra workers of %s", group.task_name)

    def _register_scaled(self, record: TaskRecord, dep: DeploymentInfo) -> None:
        for name in dep.tasks:  # the folder's other tasks carry the same deployment
            other = self.registry.find(name) if name != record.name else None
            if other is not None and other.primary == record.name:
                self.register(other, dep)
        self.register(record, dep)

    def _rescaled(self, current: TaskRecord, handle: WorkerHandle, options: Any) -> DeploymentInfo:
        """A redeploy of the version that serves, with other replicas or another range: applied in place."""
        dep = current.deployment
        wanted = options.capacity
        if capacity_of(dep) == wanted:
            return dep
        dep = dep.model_copy(update={"min_replicas": wanted.min_replicas, "max_replicas": wanted.max_replicas})
        self._scale_to(current, dep, wanted.replicas, "deploy_task", wait=True)
        return self.registry.get(current.name).deployment

    # -- what runs --------------------------------------------------------------------------------------------

    def replica_status(self, dep: DeploymentInfo | None, record: TaskRecord) -> list[ReplicaStatus]:
        if dep is None or not dep.container_id:
            return []
        return [
            ReplicaStatus(slot=m.slot, hostname=m.hostname, state=m.state, id=m.id, node=m.node)
            for m in self.runtime.members(self.group_of(dep, record))
        ]

    def scaling_events(self, task: str, count: int = 5) -> list[ScalingEvent]:
        return [ScalingEvent(**event) for event in self.scaling_log.recent(task, count)]

    # -- autoscaling and waking -------------------------------------------------------------------------------

    def wake(self, task_name: Any) -> ScaleResult:
        """A call arrived for a parked task: start its workers (its autoscaling floor, at least one)."""
        name = validate_name(task_name, "task_name")
        record = self._scalable(name)
        dep = record.deployment
        if not dep.parked:
            return self.scale_result(name, dep.desired_replicas)
        with self._request_lock(name):
            record = self._scalable(name)
            dep = record.deployment
            if dep.parked:
                self._scale_to(record, dep, max(1, dep.min_replicas or 0), "a call woke it", wait=True)
        return self.scale_result(name, 0)

    def autoscale(self, now: float | None = None) -> list[str]:
        """One round of the autoscaler over every deployed task; returns the decisions taken."""
        now = time.monotonic() if now is None else now
        low_since: dict[str, float] = self.__dict__.setdefault("_low_since", {})
        decisions = []
        for record in self.registry.list():
            dep = record.deployment
            if dep is None or record.primary != record.name or dep.runtime != self.runtime.name:
                continue
            if not (dep.autoscaled or dep.parked) or not dep.serve_queue or dep.canary is not None:
                continue
            prefix = dep.key_prefix or ""
            depth = queue_depth(self.settings, prefix, dep.serve_queue, self.broker)
            held = calls_held(self.settings, prefix, self.broker)
            desired = dep.desired_replicas
            wanted = wanted_replicas(dep, depth, held) if dep.autoscaled else (1 if depth else 0)
            if wanted > desired:
                reason = f"{depth} call(s) waiting, {held} running or reserved"
                low_since.pop(record.name, None)
            elif wanted < desired:
                since = low_since.setdefault(record.name, now)
                if now - since < self.settings.autoscale_cooldown_s:
                    continue
                reason = f"{depth + held} call(s) for {self.settings.autoscale_cooldown_s:g} s"
                low_since.pop(record.name, None)
            else:
                low_since.pop(record.name, None)
                continue
            try:
                with self._lock(record.name):
                    current = self.registry.find(record.name)
                    if current is None or current.deployment is None or current.deployment.version != dep.version:
                        continue
                    self._scale_to(current, current.deployment, wanted, f"autoscaler: {reason}", wait=True)
                    decisions.append(f"{record.name}: {desired} -> {wanted} ({reason})")
            except Conflict:
                continue  # a deploy or a scale of the task is running
            except Exception:
                log.exception("could not autoscale %s", record.name)
        return decisions


def autoscale_forever(deployer: Any, stop: threading.Event, every_s: float) -> None:
    """The deploy worker's autoscaler thread."""
    while not stop.wait(every_s):
        try:
            for decision in deployer.autoscale():
                log.warning("autoscaler: %s", decision)
        except Exception:
            log.warning("the autoscaler round failed", exc_info=True)
