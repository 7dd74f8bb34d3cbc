"""What the deploy worker does besides deploying: undeploy, list the deployments, read a worker's log, and give
Redis back the ACL users it lost. A mixin of :class:`deploy_mcp.deployer.Deployer`, whose state it uses."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from deploy_mcp.confinement import deployment_warnings
from deploy_mcp.replicas import group_state
from mcs.core.errors import Conflict, InvalidInput, NotFound
from mcs.core.names import validate_name
from mcs.core.results import DeploymentStatus, RetiringVersion, TaskLogsResult, UndeployResult
from Redis.broker import purge_queue

if TYPE_CHECKING:
    from redis import Redis

    from deploy_mcp.credentials import TaskCredentials
    from deploy_mcp.runtime import WorkerRuntime
    from deploy_mcp.versions import VersionFolders
    from mcs.core.settings import Settings
    from Redis.registry import TaskRegistry
    from Redis.versions import VersionHistory

MAX_LOG_LINES = 500


class DeploymentQueries:
    settings: Settings
    registry: TaskRegistry
    runtime: WorkerRuntime
    folders: VersionFolders
    credentials: TaskCredentials
    history: VersionHistory
    broker: Redis | None

    def _request_lock(self, task: str) -> AbstractContextManager[str]:
        raise NotImplementedError  # the Deployer's one-deploy-per-task lock, as a caller's request takes it

    # -- undeploy, list, logs ---------------------------------------------------------------------------------

    def undeploy(self, task_name: str) -> UndeployResult:
        """Remove a deployed folder entirely: its worker, every task it registered, its versions and queues. An extra
        task of a folder is refused (naming the folder's tasks): removing it alone would leave its worker serving."""
        validate_name(task_name)
        removed: list[str] = []
        record = self.registry.find(task_name)
        if record is not None and record.primary != task_name:
            tasks = record.deployment.tasks if record.deployment else []
            raise Conflict(
                f"task {task_name!r} is served by task {record.primary!r}'s worker together with "
                f"{', '.join(tasks) or record.primary}: undeploy {record.primary!r} to remove them together",
                task_name=task_name,
                owner=record.primary,
                tasks=tasks,
            )
        with self._request_lock(task_name):
            record = self.registry.find(task_name)
            workers = self.runtime.workers(task_name)
            if record is None and not workers:
                raise NotFound(f"task {task_name!r} is neither registered nor deployed", task_name=task_name)
            for handle in workers:
                self.runtime.remove(handle)
                removed.append(f"worker {handle.name}")
            if record is not None:
                removed += [f"image {ref}" for ref in self.folders.remove_versions(task_name, record.queue, keep=None)]
                removed.append(f"folder {self.folders.task_dir(task_name, record.queue)}")
                removed += [f"redis user {name}" for name in self.credentials.remove_task(task_name)]
                queues = {e.serve_queue for e in self.history.list(task_name) if e.serve_queue}
                if record.deployment is not None:
                    queues.add(record.serve_queue)
                    for name in record.deployment.tasks:
                        other = self.registry.find(name) if name != task_name else None
                        if other is not None and other.primary == task_name:
                            self.registry.remove(name)
                            removed.append(f"task {name}")
                self.registry.remove(task_name)
                self.history.remove_task(task_name)
                self.scaling_log.forget(task_name)
                removed.append("registry entry")
                removed.append(f"queue {record.queue}" if self._purge_queue(record.queue) else "queue (was empty)")
                prefix = record.key_prefix
                if prefix and any(purge_queue(self.settings, prefix + q, self.broker) for q in sorted(queues)):
                    removed.append(f"pending calls of {len(queues)} version queue(s)")
        return UndeployResult(
            task_name=task_name, removed=removed, message=f"task {task_name} undeployed: " + ", ".join(removed)
        )

    def _purge_queue(self, queue: str) -> bool:
        """Drop the queue's pending messages and kombu's binding from the broker DB (unless another task uses it)."""
        if any(r.queue == queue for r in self.registry.list()):
            return False
        return purge_queue(self.settings, queue, self.broker)

    def deployments(self) -> list[DeploymentStatus]:
        result = []
        for record in self.registry.list():
            dep = record.deployment
            if dep is None or record.primary != record.name:
                continue  # an extra task of a folder: listed with its folder's main task
            workers = self.replica_status(dep, record) if dep.runtime == self.runtime.name else []
            running = sum(1 for w in workers if w.state == "RUNNING")
            status = "PARKED" if dep.parked and not workers else group_state([w.state for w in workers])
            result.append(
                DeploymentStatus(
                    task_name=record.name,
                    queue=record.queue,
                    version=dep.version,
                    runtime=dep.runtime,
                    docker_image=dep.image,
                    container_id=dep.container_id,
                    worker_status=status,
                    deployed_at=dep.deployed_at.isoformat() if dep.deployed_at else None,
                    isolation=dep.isolation or "none",
                    network=dep.network or "none",
                    sandbox=dep.sandbox,
                    warnings=deployment_warnings(dep),
                    tasks=dep.tasks or [record.name],
                    tests_passed=dep.tests_passed,
                    canary=dep.canary.version if dep.canary else None,
                    retiring=[
                        RetiringVersion(version=e.version, status=e.status, error=getattr(e, "drain_error", None))
                        for e in self.history.list(record.name)
                        if e.status in ("draining", "drain_failed")
                    ],
                    concurrency=dep.concurrency or 1,
                    replicas=dep.desired_replicas,
                    replicas_running=running,
                    min_replicas=dep.min_replicas,
                    max_replicas=dep.max_replicas,
                    workers=workers,
                    scaling=self.scaling_events(record.name),
                )
            )
        return result

    def reconcile_credentials(self) -> list[str]:
        """Re-create the Redis users of deployed tasks that Redis lost (a restart without an ACL file)."""
        return self.credentials.reconcile([r for r in self.registry.list() if r.deployment is not None])

    def task_logs(self, task_name: str, tail_lines: int = 100) -> TaskLogsResult:
        if not isinstance(tail_lines, int) or not 1 <= tail_lines <= MAX_LOG_LINES:
            raise InvalidInput("tail_lines", tail_lines, f"a whole number from 1 to {MAX_LOG_LINES}")
        record = self.registry.get(task_name)
        dep = record.deployment
        handle = next((h for h in self.runtime.workers(task_name) if dep and h.id == dep.container_id), None)
        if handle is None:
            raise NotFound(f"task {task_name!r} has no running worker: deploy it with deploy_task")
        text = self.runtime.logs(handle, tail_lines)
        return TaskLogsResult(
            task_name=task_name,
            container_id=handle.id,
            lines=text.count("\n"),
            logs=text,
            message=f"last {tail_lines} log lines of {task_name}'s worker",
        )
