"""Deploy, redeploy and undeploy task workers: atomic, versioned, health-checked, blue-green, one at a time.

The deploy worker calls this after a message's signature verified. Steps of a deploy:

1. validate the request again (names, metadata, every file path and size): the worker trusts no sender;
2. version = content hash of the files; the same version already running -> nothing rebuilt or restarted;
3. take the task's lock (Redis SET NX PX): one deploy per task at a time, other tasks in parallel;
4. write the files to a staging folder, rename it to ``deployments/{task}_{queue}/{version}`` (atomic);
5. render the Dockerfile (MCS's recipe; a shipped Dockerfile only when allowed), build, start the worker;
6. wait until the new worker answers a Celery ping (its unique hostname) while the runtime reports it alive;
7. register the task with its deployment details, then stop and remove the previous worker (blue-green);
8. prune versions beyond ``keep_versions``.

Any failure before step 7 removes what this deploy made (worker, image, folder) and leaves the previous
deployment serving; the error says which step failed and carries the tail of the build or worker log.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploy_mcp.health import Probe, Timings, registered_tasks, wait_healthy
from deploy_mcp.runtime import Artifact, BuildSpec, Progress, RunSpec, WorkerHandle, WorkerRuntime
from deploy_mcp.versions import VersionFolders
from mcs.core.bundle import BundleFile, bundle_version, parse_files
from mcs.core.errors import Conflict, DeployError, InvalidInput, MCSError, NotFound
from mcs.core.models import DeploymentInfo, TaskRecord, parse_model
from mcs.core.requirements import check_requirements
from mcs.core.results import DeploymentStatus, DeployResult, TaskLogsResult, UndeployResult
from mcs.core.settings import Settings
from mcs.core.worker_image import render_dockerfile
from Redis.broker import purge_queue
from Redis.registry import TaskRegistry

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

__all__ = ["Deployer", "Probe", "registered_tasks"]

MAX_LOG_LINES = 500


class Deployer:
    def __init__(
        self,
        settings: Settings,
        registry: TaskRegistry,
        runtime: WorkerRuntime,
        probe: Probe,
        broker: Redis | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.runtime = runtime
        self.probe = probe
        self.folders = VersionFolders(settings, runtime)
        self._broker = broker

    # -- deploy -----------------------------------------------------------------------------------------------

    def deploy(self, request: dict[str, Any], progress: Progress | None = None) -> DeployResult:
        say = progress or (lambda _msg: None)
        timings = Timings()
        draft = self._draft(request)
        files = parse_files(request.get("files"), self.settings)
        task, queue = draft.name, draft.queue
        dockerfile, source = self._dockerfile(files, queue)
        # The version covers the build recipe too: a new template or base image rebuilds unchanged code.
        version = bundle_version(files, dockerfile.encode())
        with self._lock(task), self._queue_lock(queue):
            self._check_queue_owner(task, queue)
            current = self.registry.find(task)
            reused = self._running_same(current, version, queue)
            if reused is not None:
                record = self._register(draft, current.deployment)  # metadata may have changed; the worker not
                timings.total()
                return self._result(record, reused, version, True, source, timings, "already running")
            say(f"staging version {version}")
            with timings.step("stage"):
                folder, created = self.folders.place(files, task, queue, version)
            handle: WorkerHandle | None = None
            artifact: Artifact | None = None
            try:
                say(f"building the worker ({self.runtime.name})")
                with timings.step("build"):
                    labels = dict(self.settings.worker_labels)
                    spec = BuildSpec(task, queue, version, folder, dockerfile, self._requirements(files), labels)
                    artifact = self.runtime.build(spec, progress=say)
                say("starting the worker")
                with timings.step("start"):
                    handle = self.runtime.start(self._run_spec(task, queue, version, artifact))
                say("waiting for the worker to answer")
                with timings.step("health"):
                    wait_healthy(self.runtime, self.probe, handle, task, self.settings.health_timeout_s)
                deployment = DeploymentInfo(
                    deployment_id=str(uuid.uuid4()),
                    version=version,
                    image=artifact.ref,
                    container_id=handle.id,
                    runtime=self.runtime.name,
                    deployed_at=datetime.now(UTC),
                    hostname=handle.hostname,
                    dockerfile=source,
                )
                with timings.step("register"):
                    record = self._register(draft, deployment)
            except Exception as exc:
                error = self._deploy_error(exc, handle)  # reads the worker's log before it is removed
                self._discard(handle, artifact, folder if created else None, current)
                raise error from None
            say("retiring the previous worker")
            warnings: list[str] = []
            with timings.step("retire"):
                # The new version serves and is registered: a failure from here on is a warning, not a failure.
                for step in (
                    lambda: self._retire(task, keep=handle, old=current),
                    lambda: self.folders.prune(task, queue, version),
                ):
                    try:
                        step()
                    except Exception as exc:
                        log.exception("after deploying %s", task)
                        warnings.append(f"cleanup of older versions incomplete: {type(exc).__name__}: {exc}")
            timings.total()
            result = self._result(record, handle, version, False, source, timings, "deployed")
            return result.model_copy(update={"warnings": warnings})

    def _draft(self, request: dict[str, Any]) -> TaskRecord:
        if not isinstance(request, dict):
            raise InvalidInput("request", "<deploy request>", "a JSON object")
        fields = ("task_name", "description", "parameters", "return_type", "category", "queue")
        data = {k: request.get(k) for k in fields if request.get(k) is not None}
        data["name"] = data.pop("task_name", None)
        draft: TaskRecord = parse_model(TaskRecord, data, "task")
        if draft.queue == self.settings.deploy_queue:
            raise InvalidInput("queue", draft.queue, "the deploy queue is reserved for MCS's deploy worker")
        return draft

    def _lock(self, task: str):
        return self.registry.deploy_lock(task, self.settings.deploy_lock_ttl_s)

    def _queue_lock(self, queue: str):
        return self.registry.queue_lock(queue, self.settings.deploy_lock_ttl_s)

    def _check_queue_owner(self, task: str, queue: str) -> None:
        """A queue belongs to one deployed worker: a second task's worker on it would take the first one's calls
        (and drop them as unregistered)."""
        for other in self.registry.list():
            if other.name != task and other.queue == queue and other.deployment is not None:
                raise Conflict(
                    f"queue {queue!r} is served by task {other.name!r}'s worker; deploy {task!r} on its own queue, "
                    f"or add it to {other.name!r}'s folder (generate_startMain_code `tasks`)",
                    queue=queue,
                    owner=other.name,
                )

    def _running_same(self, current: TaskRecord | None, version: str, queue: str) -> WorkerHandle | None:
        dep = current.deployment if current else None
        if dep is None or dep.version != version or dep.runtime != self.runtime.name or current.queue != queue:
            return None
        for handle in self.runtime.workers(current.name):
            if handle.id == dep.container_id and self.runtime.state(handle) == "RUNNING":
                return handle
        return None

    def _dockerfile(self, files: list[BundleFile], queue: str) -> tuple[str, str]:
        paths = {f.path for f in files}
        shipped = next((f for f in files if f.path == "Dockerfile"), None)
        if shipped is not None and self.settings.allow_custom_dockerfile:
            return shipped.data().decode("utf-8", errors="replace"), "custom"
        if f"app_{queue}.py" not in paths:
            raise InvalidInput(
                "code_folder_path", f"app_{queue}.py", f"the task folder must hold app_{queue}.py (the worker's app)"
            )
        return render_dockerfile(self.settings, queue, bool(self._requirements(files))), "rendered"

    def _requirements(self, files: list[BundleFile]) -> list[str]:
        req = next((f for f in files if f.path == "requirements.txt"), None)
        if req is None:
            return []
        lines = req.data().decode("utf-8", errors="replace").splitlines()
        return check_requirements(lines, self.settings.max_requirements, from_file=True)

    def _run_spec(self, task: str, queue: str, version: str, artifact: Artifact) -> RunSpec:
        s = self.settings
        env = {
            "REDIS_HOST": s.redis_host,
            "REDIS_PORT": str(s.redis_port),
            "REDIS_BROKER_DB": str(s.redis_broker_db),
            "REDIS_BACKEND_DB": str(s.redis_backend_db),
        }
        if s.redis_password is not None:
            env["REDIS_PASSWORD"] = s.redis_password.get_secret_value()
        return RunSpec(
            task_name=task,
            queue=queue,
            version=version,
            artifact=artifact,
            hostname=f"{task}-{version[:8]}-{secrets.token_hex(3)}@mcs",
            environment=env,
            mem_limit_mb=s.worker_mem_limit_mb,
            cpus=s.worker_cpus,
            pids_limit=s.worker_pids_limit,
            network=s.worker_network,
            extra_labels=dict(s.worker_labels),
        )

    def _discard(
        self, handle: WorkerHandle | None, artifact: Artifact | None, folder: Path | None, current: TaskRecord | None
    ) -> None:
        """Remove what a failed deploy made; never what the running deployment uses."""
        current_image = current.deployment.image if current and current.deployment else None
        for action in (
            lambda: handle and self.runtime.remove(handle),
            lambda: (
                artifact
                and not artifact.reused
                and artifact.ref != current_image
                and self.runtime.remove_artifact(artifact.ref)
            ),
            lambda: folder and shutil.rmtree(folder, ignore_errors=True),
        ):
            try:
                action()
            except Exception:  # cleanup must not hide the deploy's own error; it is logged with its traceback
                log.exception("cleanup after a failed deploy")

    def _deploy_error(self, exc: Exception, handle: WorkerHandle | None) -> MCSError:
        tail = ""
        if handle is not None:
            try:
                tail = self.runtime.logs(handle, tail_lines=60)
            except Exception:
                log.exception("reading the failed worker's log")
        if isinstance(exc, MCSError):
            if tail and "log_tail" not in exc.details:
                exc.details["log_tail"] = tail
            if isinstance(exc, DeployError) and "build_log_tail" in exc.details:
                exc.details.setdefault("log_tail", exc.details.pop("build_log_tail"))
            exc.message += "; the previous deployment (if any) keeps serving"
            return exc
        log.exception("deploy failed unexpectedly")
        return DeployError(f"deploy failed: {type(exc).__name__}: {exc}", step="unexpected", log_tail=tail)

    def _register(self, draft: TaskRecord, deployment: DeploymentInfo | None) -> TaskRecord:
        return self.registry.register(
            name=draft.name,
            description=draft.description,
            parameters=draft.parameters,
            return_type=draft.return_type,
            category=draft.category,
            queue=draft.queue,
            deployment=deployment,
        )

    def _retire(self, task: str, keep: WorkerHandle, old: TaskRecord | None) -> None:
        for handle in self.runtime.workers(task):
            if handle.id != keep.id:
                self.runtime.remove(handle)
        if old is not None and old.queue != keep.queue:  # the task moved queues: its old folders go too
            self.folders.remove_versions(old.name, old.queue, keep=None)

    def _result(
        self,
        record: TaskRecord,
        handle: WorkerHandle,
        version: str,
        reused: bool,
        dockerfile: str,
        timings: Timings,
        what: str,
    ) -> DeployResult:
        dep = record.deployment
        return DeployResult(
            task_name=record.name,
            queue=record.queue,
            deployment_id=dep.deployment_id,
            docker_image=dep.image,
            container_id=handle.id,
            worker_status="RUNNING",
            version=version,
            runtime=self.runtime.name,
            reused=reused,
            dockerfile=getattr(dep, "dockerfile", dockerfile) if reused else dockerfile,
            timings_ms=timings.ms,
            task=record,
            message=f"task {record.name} {what}: version {version} on queue {record.queue}, worker RUNNING "
            f"({self.runtime.name}); test it with trigger_celery_task",
        )

    # -- undeploy, list, logs ---------------------------------------------------------------------------------

    def undeploy(self, task_name: str) -> UndeployResult:
        from mcs.core.names import validate_name

        validate_name(task_name)
        removed: list[str] = []
        with self._lock(task_name):
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
                self.registry.remove(task_name)
                removed.append("registry entry")
                removed.append(f"queue {record.queue}" if self._purge_queue(record.queue) else "queue (was empty)")
        return UndeployResult(
            task_name=task_name, removed=removed, message=f"task {task_name} undeployed: " + ", ".join(removed)
        )

    def _purge_queue(self, queue: str) -> bool:
        """Drop the queue's pending messages and kombu's binding from the broker DB (unless another task uses it)."""
        if any(r.queue == queue for r in self.registry.list()):
            return False
        return purge_queue(self.settings, queue, self._broker)

    def deployments(self) -> list[DeploymentStatus]:
        running = {h.id: h for h in self.runtime.workers()}
        result = []
        for record in self.registry.list():
            dep = record.deployment
            if dep is None:
                continue
            handle = running.get(dep.container_id or "")
            result.append(
                DeploymentStatus(
                    task_name=record.name,
                    queue=record.queue,
                    version=dep.version,
                    runtime=dep.runtime,
                    docker_image=dep.image,
                    container_id=dep.container_id,
                    worker_status=self.runtime.state(handle) if handle else "MISSING",
                    deployed_at=dep.deployed_at.isoformat() if dep.deployed_at else None,
                )
            )
        return result

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
