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

import contextlib
import logging
import secrets
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploy_mcp.confinement import deployment_warnings
from deploy_mcp.credentials import TaskCredentials
from deploy_mcp.health import Probe, Timings, held_calls, registered_tasks, wait_healthy
from deploy_mcp.launch import DeployOptions, Launch
from deploy_mcp.queries import DeploymentQueries
from deploy_mcp.releases import Releases
from deploy_mcp.replicas import as_group_runtime
from deploy_mcp.runtime import Artifact, BuildSpec, Progress, RunSpec, WorkerHandle, WorkerRuntime
from deploy_mcp.scaling import Scaling, capacity_of
from deploy_mcp.selftest import CaseCaller, celery_case_caller, run_cases, tests_failed
from deploy_mcp.versions import VersionFolders
from mcs.core.bundle import BundleFile, bundle_version, parse_files
from mcs.core.capacity import Capacity, check_capacity
from mcs.core.celery_app import PrefixedApps, task_key_prefix, version_queue
from mcs.core.errors import Conflict, DeployError, InvalidInput, MCSError
from mcs.core.lifecycle import TestRun, VersionEntry
from mcs.core.manifest import MANIFEST_FILE, DeployPlan, parse_manifest, plan_deploy
from mcs.core.models import DeploymentInfo, TaskRecord
from mcs.core.names import validate_queue, validate_task_name
from mcs.core.protocol import NETWORKS, SANDBOXES
from mcs.core.requirements import check_requirements
from mcs.core.results import DeployResult
from mcs.core.settings import Settings
from mcs.core.worker_image import render_dockerfile
from Redis.acl import AclUsers, TaskUser
from Redis.broker import move_queue, requeue_unacked
from Redis.issued import IssuedTasks
from Redis.registry import TaskRegistry
from Redis.versions import VersionHistory

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

__all__ = ["Deployer", "Probe", "registered_tasks"]

DRAIN_GRACE_S = 5  # beyond the task time limit, for a retiring worker's warm shutdown
REQUEST_LOCK_WAIT_S = 15  # how long a caller's request waits for a retirement to let go of the task's lock
DRAIN_LOCK_WAIT_S = 120  # how long a retirement waits for the deploys of its task to let go of the task's lock


class Deployer(DeploymentQueries, Releases, Scaling):
    def __init__(
        self,
        settings: Settings,
        registry: TaskRegistry,
        runtime: WorkerRuntime,
        probe: Probe,
        broker: Redis | None = None,
        credentials: TaskCredentials | None = None,
        holder: str | None = None,
        holder_alive: Callable[[str], bool] | None = None,
        caller: CaseCaller | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.runtime = as_group_runtime(runtime)  # a version's workers as one group (replicas)
        self.probe = probe
        self.folders = VersionFolders(settings, self.runtime)
        self.broker = broker
        self.credentials = credentials or TaskCredentials(settings, AclUsers(settings, registry.client))
        self.history = VersionHistory(settings, registry.client)
        self.issued = IssuedTasks(settings, registry.client)
        #: How the previous version's retirement runs once a new one serves: in a thread (tests: at once).
        self.run_later: Callable[[Callable[[], None]], None] = self._in_thread
        self._pending = threading.local()  # the retirements a deploy schedules, started once it let go of its locks
        apps = PrefixedApps(settings)
        self.caller = caller or celery_case_caller(apps)
        #: (hostnames, key_prefix) -> the task ids those live workers hold, None unless all answered.
        self.held: Callable[[list[str], str], set[str] | None] = lambda names, prefix: held_calls(apps, names, prefix)
        # Who holds this deployer's locks, and how to tell that another holder died (its locks are then free).
        self.holder = {"holder": holder, "holder_alive": holder_alive} if holder else {}

    # -- deploy -----------------------------------------------------------------------------------------------

    def deploy(self, request: dict[str, Any], progress: Progress | None = None) -> DeployResult:
        say = progress or (lambda _msg: None)
        timings = Timings()
        if not isinstance(request, dict):
            raise InvalidInput("request", "<deploy request>", "a JSON object")
        files = parse_files(request.get("files"), self.settings)
        plan = self._plan(request, files)
        task, queue = plan.main.name, plan.main.queue
        options = self._options(plan.network, plan.sandbox, plan.capacity, self.registry.find(task))
        dockerfile, source = self._dockerfile(files, queue)
        # The version covers the build recipe too: a new template or base image rebuilds unchanged code.
        version = bundle_version(files, dockerfile.encode())
        canary = self._canary_percent(request.get("canary_percent"))
        with self._after_the_locks(), self._request_lock(task), self._queue_lock(queue):
            self._check_queue_owner(plan)
            current = self.registry.find(task)
            self._check_release(current, plan, canary)
            reused = self._running_same(current, version, queue, options)
            if reused is not None:
                deployment = self._rescaled(current, reused, options)  # the same version, maybe other replicas
                records = self._register_all(plan, deployment, current)  # metadata may have changed
                timings.total()
                return self._result(records, reused, version, True, source, timings, "already running", plan)
            say(f"staging version {version}")
            with timings.step("stage"):
                folder, created = self.folders.place(files, task, queue, version)
            artifact: Artifact | None = None
            try:
                say(f"building the worker ({self.runtime.name})")
                with timings.step("build"):
                    labels = dict(self.settings.worker_labels)
                    spec = BuildSpec(task, queue, version, folder, dockerfile, self._requirements(files), labels)
                    artifact = self.runtime.build(spec, progress=say)
            except Exception as exc:
                error = self._deploy_error(exc, None)
                self._discard(None, artifact, folder if created else None, current, None)
                raise error from None
            live = Launch(
                plan, version, artifact, options, source, fresh_folder=folder if created else None,
                canary_percent=canary,
            )  # fmt: skip
            return self._go_live(live, current, say, timings, "deployed")

    def _go_live(
        self, live: Launch, current: TaskRecord | None, say: Callable[[str], None], timings: Timings, what: str
    ) -> DeployResult:
        """Start the version on its own queue, check it answers, run its test cases there, then point the registry
        at it (from that moment every call goes to it, and none to the previous version), then retire the
        previous version: it finishes what it took, and what waited on its queue moves to the new one."""
        plan, version, artifact, options = live.plan, live.version, live.artifact, live.options
        task, queue = plan.main.name, plan.main.queue
        prefix = task_key_prefix(self.settings, task)
        serve_queue = version_queue(queue, version)
        handle: WorkerHandle | None = None
        user: TaskUser | None = None
        run: TestRun | None = None
        try:
            say("starting the worker")
            with timings.step("start"):
                user = self.credentials.issue(task)
                replicas = 1 if live.canary_percent is not None else options.capacity.start_replicas
                spec = self.run_spec(task, queue, version, artifact, user, options, serve_queue, replicas)
                handle = self.runtime.start(spec)
            say("waiting for the worker to answer")
            with timings.step("health"):
                probe = partial(self.probe, key_prefix=prefix)
                wait_healthy(self.runtime, probe, handle, plan.names, self.settings.health_timeout_s, replicas)
            if plan.cases:
                say(f"running {len(plan.cases)} test case(s) against version {version[:12]}")
                with timings.step("tests"):
                    run = run_cases(self.caller, plan.cases, prefix, serve_queue)
                if not run.ok:
                    self._history_entry(live, "refused", run, serve_queue)
                    raise tests_failed(run, version)
            deployment = DeploymentInfo(
                deployment_id=str(uuid.uuid4()),
                version=version,
                image=artifact.ref,
                container_id=handle.id,
                runtime=self.runtime.name,
                deployed_at=datetime.now(UTC),
                hostname=handle.hostname,
                dockerfile=live.source,
                key_prefix=prefix,
                acl_user=user.username if user else None,
                network=self._network(options),
                sandbox=options.sandbox if self.runtime.name != "process" else None,
                isolation=self._isolation(options),
                serve_queue=serve_queue,
                primary=task,
                tasks=plan.names,
                tests_passed=run.passed if run else None,
                **options.capacity.as_dict(),
            )
            if live.canary_percent is not None and current is not None and current.deployment is not None:
                with timings.step("register"):
                    records = self._start_canary(live, current, deployment, run)
                timings.total()
                result = self._result(records, handle, version, False, live.source, timings, what, plan, run)
                return result.model_copy(update={"message": (
                    f"task {task} version {version[:12]} takes {live.canary_percent}% of the calls (a gradual "
                    f"release); version {(current.deployment.version or '')[:12]} serves the rest. Compare them "
                    "with list_task_versions, then promote_task or rollback_task"
                )})  # fmt: skip
            with timings.step("register"):
                records = self._register_all(plan, deployment, current)
                self.folders.mark_registered(task, queue, version)
                self._history_entry(live, "serving", run, serve_queue)
        except Exception as exc:
            error = self._deploy_error(exc, handle)  # reads the worker's log before it is removed
            artifact_made = None if live.rollback else artifact
            self._discard(handle, artifact_made, live.fresh_folder, current, user)
            raise error from None
        # From here every call goes to the new version. The previous one retires off the deploy's path: it finishes
        # the calls it took while the deploy answers; a failure while it drains is in list_deployments.
        self._retire_later(task, queue, keep=handle, keep_user=user.username if user else None, old=current)
        if options.capacity.replicas == 0:  # parked: it answered and passed its tests; the first call wakes it
            self._later(lambda: self.scale(task, 0, reason="deployed parked (replicas 0)"))
        timings.total()
        return self._result(records, handle, version, False, live.source, timings, what, plan, run)

    def _retire_later(
        self, task: str, queue: str, keep: WorkerHandle, keep_user: str | None, old: TaskRecord | None
    ) -> None:
        """Retire, in the background, exactly what served before ``keep`` (its workers, their Redis users): what
        the next deploy starts is never touched by this one's retirement, however late it runs."""
        handles = [h for h in self.runtime.workers(task) if h.id != keep.id]
        users = self.credentials.others(task, keep=keep_user)
        draining = [e.version for e in self.history.list(task) if e.status == "serving" and e.version != keep.version]
        for version in draining:
            self.history.set_status(task, version, "draining")
        self._later(lambda: self._drain(task, queue, handles, users, old, draining))

    def _drain(
        self,
        task: str,
        queue: str,
        handles: list[WorkerHandle],
        users: list[str],
        old: TaskRecord | None,
        draining: list[str],
    ) -> None:
        """Stop the previous version's workers (each finishes the calls it took), move what still waited for them
        to the version serving now, drop their Redis users, prune old versions. A failure is recorded on the
        versions concerned (``drain_failed`` with the error), never lost."""
        try:
            for handle in handles:  # a call may run up to the task time limit: the drain waits for it
                self.runtime.remove(handle, drain_s=self.settings.task_time_limit_s + DRAIN_GRACE_S)
            self.credentials.drop(*users)
            # The rest reads and changes what serves: under the task's lock, after the deploy that started this
            # retirement (or a rollback meanwhile) let go of it, so it acts on what serves then.
            with self.registry.deploy_lock(task, self.settings.deploy_lock_ttl_s, wait_s=DRAIN_LOCK_WAIT_S,
                                           **self.holder):  # fmt: skip
                self._settle(task, handles, old)
                for version in draining:
                    entry = self.history.get(task, version)
                    if entry is not None and entry.status == "draining":  # not rolled back to meanwhile
                        self.history.set_status(task, version, "kept")
                self._prune(task, queue)
        except Conflict:  # deploys kept the task busy: its workers stopped; the next one's retirement prunes
            log.warning("retired the previous workers of %s; their queues are left to the watchdog", task)
            for version in draining:
                with contextlib.suppress(Exception):
                    self.history.set_status(task, version, "kept")
        except Exception as exc:
            log.exception("retiring the previous version of %s", task)
            error = f"{type(exc).__name__}: {exc}"[:500]
            for version in draining:
                with contextlib.suppress(Exception):
                    self.history.set_status(task, version, "drain_failed", drain_error=error)

    @contextlib.contextmanager
    def _after_the_locks(self) -> Iterator[None]:
        """What ``_later`` schedules inside the block starts once the block (and the locks it took) ended: a
        retirement takes the task's lock itself."""
        self._pending.actions = []
        try:
            yield
        finally:
            actions, self._pending.actions = self._pending.actions, None
            for action in actions:
                self.run_later(action)

    def _later(self, action: Callable[[], None]) -> None:
        pending = getattr(self._pending, "actions", None)
        if pending is None:
            self.run_later(action)
        else:
            pending.append(action)

    @staticmethod
    def _in_thread(action: Callable[[], None]) -> None:
        threading.Thread(target=action, name="mcs-drain", daemon=True).start()

    def _plan(self, request: dict[str, Any], files: list[BundleFile]) -> DeployPlan:
        """The deploy's tasks, tests and choices: the request over the folder's manifest (when it has one)."""
        validate_task_name(request.get("task_name"))
        validate_queue(request.get("queue"), "queue")
        if request.get("queue") == self.settings.deploy_queue:
            raise InvalidInput("queue", request["queue"], "the deploy queue is reserved for MCS's deploy worker")
        shipped = next((f for f in files if f.path == MANIFEST_FILE), None)
        manifest = parse_manifest(shipped.data()) if shipped is not None else None
        return plan_deploy(request, manifest)

    def _options(
        self,
        network: str | None,
        sandbox: str | None,
        capacity: dict[str, Any] | None = None,
        current: TaskRecord | None = None,
    ) -> DeployOptions:
        """The deploy's choices; a capacity value not given keeps the current deployment's (a redeploy does not
        undo a scale_task), else the settings' default."""
        network = network or "none"
        if network not in NETWORKS:
            raise InvalidInput(
                "network", network, "none (the worker reaches Redis only) or egress (it needs the network)"
            )
        sandbox = sandbox or self.settings.worker_sandbox
        if sandbox not in SANDBOXES:
            raise InvalidInput("sandbox", sandbox, "runc (a hardened container) or gvisor (runsc: a user-space kernel)")
        dep = current.deployment if current is not None else None
        given = {k: v for k, v in (capacity or {}).items() if v is not None}
        return DeployOptions(network, sandbox, check_capacity(given, self.settings, capacity_of(dep)))

    def options_of(self, dep: DeploymentInfo) -> DeployOptions:
        """The choices a deployment was made with (to start its worker again as it was)."""
        return DeployOptions(
            "egress" if dep.network == "egress" else "none",
            dep.sandbox or self.settings.worker_sandbox,
            capacity_of(dep) or Capacity(),
        )

    def _network(self, options: DeployOptions) -> str:
        """What the worker reaches: none (Redis through its socket), egress (asked for), host (no socket here)."""
        if options.network == "none" and self.settings.redis_socket is None:
            return "host"
        return options.network

    def _isolation(self, options: DeployOptions) -> str:
        if self.runtime.name == "process":
            return "none"
        return "gvisor" if options.sandbox == "gvisor" else "container"

    @staticmethod
    def _quietly(action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception:  # cleanup must not hide the deploy's own error; it is logged with its traceback
            log.exception("cleanup after a failed deploy")

    def _lock(self, task: str, wait_s: float = 0.0):
        return self.registry.deploy_lock(task, self.settings.deploy_lock_ttl_s, wait_s=wait_s, **self.holder)

    def _request_lock(self, task: str):
        """The task's lock for a caller's request (deploy, rollback, promote, undeploy): a previous version's
        retirement holds it briefly, while it settles queues and prunes, so a request waits for it a little
        instead of being told at once that something is in progress."""
        return self._lock(task, wait_s=REQUEST_LOCK_WAIT_S)

    def _queue_lock(self, queue: str):
        return self.registry.queue_lock(queue, self.settings.deploy_lock_ttl_s, **self.holder)

    def _check_queue_owner(self, plan: DeployPlan) -> None:
        """A queue belongs to one deployed folder: a second folder's worker on it would take the first one's calls
        (and drop them as unregistered). A task name of this folder must not be another folder's task either."""
        task, queue, names = plan.main.name, plan.main.queue, set(plan.names)
        for other in self.registry.list():
            if other.deployment is None or other.primary == task:
                continue
            if other.queue == queue:
                raise Conflict(
                    f"queue {queue!r} is served by task {other.primary!r}'s worker; deploy {task!r} on its own queue, "
                    f"or add it to {other.primary!r}'s folder (generate_startMain_code `tasks`)",
                    queue=queue,
                    owner=other.primary,
                )
            if other.name in names:
                raise Conflict(
                    f"task {other.name!r} is deployed in task {other.primary!r}'s folder; rename it in this folder, or "
                    f"undeploy {other.primary!r} first",
                    task_name=other.name,
                    owner=other.primary,
                )

    def _running_same(
        self, current: TaskRecord | None, version: str, queue: str, options: DeployOptions
    ) -> WorkerHandle | None:
        dep = current.deployment if current else None
        if dep is None or dep.version != version or dep.runtime != self.runtime.name or current.queue != queue:
            return None
        if dep.serve_queue != version_queue(queue, version):
            return None  # deployed before versions had queues of their own: start it on its own
        if dep.key_prefix != task_key_prefix(self.settings, current.name) or dep.network != self._network(options):
            return None  # deployed before confinement, or with another network: restart it confined
        if self.runtime.name != "process" and dep.sandbox != options.sandbox:
            return None
        if (dep.concurrency or 1) != options.capacity.concurrency:
            return None  # the pool size is the worker's command line: start the version again
        group = self.group_of(dep, current)
        if dep.parked or self.runtime.state(group) == "RUNNING":
            return group
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

    def run_spec(
        self,
        task: str,
        queue: str,
        version: str,
        artifact: Artifact,
        user: TaskUser | None,
        options: DeployOptions,
        serve_queue: str | None = None,
        replicas: int | None = None,
    ) -> RunSpec:
        """The worker's start: its own Redis user and prefix (never the administrator's password, unless shared
        credentials were allowed), Redis through the unix socket and no network unless the task asked for one."""
        s = self.settings
        env = {"REDIS_BROKER_DB": str(s.redis_broker_db), "REDIS_BACKEND_DB": str(s.redis_backend_db)}
        env["MCS_KEY_PREFIX"] = task_key_prefix(s, task)
        env["MCS_WORKER_MEM_LIMIT_MB"] = str(s.worker_mem_limit_mb)  # named when a call keeps killing its worker
        if s.redis_socket is None:
            env |= {"REDIS_HOST": s.redis_host, "REDIS_PORT": str(s.redis_port)}
        if user is not None:
            env |= {"REDIS_USERNAME": user.username, "REDIS_PASSWORD": user.password}
        elif s.redis_password is not None:
            env["REDIS_PASSWORD"] = s.redis_password.get_secret_value()  # shared credentials, allowed explicitly
        confined = options.network == "none" and s.redis_socket is not None
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
            network="none" if confined else s.worker_network,
            extra_labels=dict(s.worker_labels),
            redis_socket=s.redis_socket,
            sandbox=options.sandbox,
            serve_queue=serve_queue,
            concurrency=options.capacity.concurrency,
            replicas=options.capacity.start_replicas if replicas is None else replicas,
        )

    def _discard(
        self,
        handle: WorkerHandle | None,
        artifact: Artifact | None,
        folder: Path | None,
        current: TaskRecord | None,
        user: TaskUser | None,
    ) -> None:
        """Remove what a failed deploy made (worker, image, folder, Redis user); never what the running deployment
        uses."""
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
            lambda: user and self.credentials.drop(user.username),
        ):
            self._quietly(action)

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

    def register(self, draft: TaskRecord, deployment: DeploymentInfo | None) -> TaskRecord:
        return self.registry.register(
            name=draft.name,
            description=draft.description,
            parameters=draft.parameters,
            return_type=draft.return_type,
            category=draft.category,
            queue=draft.queue,
            retry=draft.retry,
            deployment=deployment,
        )

    def _register_all(self, plan: DeployPlan, deployment: DeploymentInfo, old: TaskRecord | None) -> list[TaskRecord]:
        """Every task of the folder with the one deployment (the main task last: its record is what the watchdog and
        the next deploy read); a task the previous version had and this one has not is removed."""
        records = [self.register(draft, deployment) for draft in plan.records[1:]]
        records.insert(0, self.register(plan.main, deployment))
        dropped = set(old.deployment.tasks if old and old.deployment else []) - set(plan.names)
        for name in sorted(dropped):
            gone = self.registry.find(name)
            if gone is not None and gone.primary == plan.main.name:
                self.registry.remove(name)
        return records

    def _settle(self, task: str, handles: list[WorkerHandle], old: TaskRecord | None) -> None:
        """Once ``handles`` stopped: move what still waits on retired queues, or was taken by these workers and not
        acknowledged, to the queue of the version serving now (the task's lock held)."""
        current = self.registry.find(task)
        if current is None or current.deployment is None:
            return  # undeployed meanwhile: its queues went with it
        serving, prefix = current.serve_queue, current.key_prefix
        stale = self._retired_queues(task, current.queue, serving, old)
        moved = sum(move_queue(self.settings, prefix, q, serving, self.broker) for q in stale)
        stopped = {version_queue(h.queue, h.version) for h in handles} | ({old.queue} if old else set())
        given = requeue_unacked(self.settings, prefix, self.broker, queues=stopped - {serving}, to_queue=serving)
        if moved or given:
            log.info("moved %d call(s) of %s's previous version to %s", moved + len(given), task, serving)
        if old is not None and old.queue != current.queue:  # the task moved queues: its old folders go too
            self.folders.remove_versions(old.name, old.queue, keep=None)

    def _retired_queues(self, task: str, queue: str, serve_queue: str, old: TaskRecord | None) -> set[str]:
        """The queues earlier versions of ``task`` consumed (their own, or the task's queue before versions had
        queues of their own), other than the serving one and a gradual release's."""
        queues = {e.serve_queue for e in self.history.list(task) if e.serve_queue} | {queue}
        if old is not None:
            queues |= {old.queue, old.serve_queue}
        current = self.registry.find(task)
        canary = current.deployment.canary if current and current.deployment else None
        return queues - {serve_queue, canary.serve_queue if canary else None}

    def _prune(self, task: str, queue: str) -> None:
        """Keep ``keep_versions`` versions (folder, artefact and history entry) besides the serving one and a
        gradual release's; forget what is gone."""
        current = self.registry.find(task)
        dep = current.deployment if current else None
        if dep is None or dep.version is None or current.queue != queue:
            return
        live = {dep.version, dep.canary.version if dep.canary else None}
        self.folders.prune(task, queue, dep.version, also_keep=live)
        for entry in self.history.list(task):
            if entry.version in live or entry.status in ("draining", "drain_failed", "refused"):
                continue
            if not (self.folders.task_dir(task, queue) / entry.version).is_dir():
                self.history.remove(task, entry.version)
            elif entry.status == "serving":
                self.history.set_status(task, entry.version, "kept")
        refused = [e for e in self.history.list(task) if e.status == "refused"]
        for entry in refused[self.settings.keep_versions :]:
            self.history.remove(task, entry.version)

    def _history_entry(self, live: Launch, status: str, run: TestRun | None, serve_queue: str) -> None:
        plan = live.plan
        entry = VersionEntry(
            version=live.version,
            deployed_at=datetime.now(UTC),
            status=status,
            image=live.artifact.ref,
            serve_queue=serve_queue,
            tests=run,
            tasks=[
                r.model_dump(mode="json", exclude={"deployment", "created_at", "last_updated"}) for r in plan.records
            ],
            cases=plan.cases,
            options={"network": live.options.network, "sandbox": live.options.sandbox},
            dockerfile=live.source,
        )
        self.history.record(plan.main.name, entry)

    def _result(
        self,
        records: list[TaskRecord],
        handle: WorkerHandle,
        version: str,
        reused: bool,
        dockerfile: str,
        timings: Timings,
        what: str,
        plan: DeployPlan,
        run: TestRun | None = None,
    ) -> DeployResult:
        record = records[0]
        dep = record.deployment
        names = [r.name for r in records]
        tested = f", {run.passed}/{run.total} test case(s) passed" if run else ""
        n, c = dep.desired_replicas, dep.concurrency or 1
        workers = "parked (the first call wakes it)" if dep.parked else (
            "worker RUNNING" if n == 1 and c == 1 else f"{n} worker(s) x {c} process(es) RUNNING"
        )  # fmt: skip
        also = f"; also registered: {', '.join(names[1:])}" if len(names) > 1 else ""
        return DeployResult(
            task_name=record.name,
            queue=record.queue,
            deployment_id=dep.deployment_id,
            docker_image=dep.image,
            container_id=handle.id,
            worker_status="PARKED" if dep.parked else "RUNNING",
            version=version,
            runtime=self.runtime.name,
            reused=reused,
            dockerfile=getattr(dep, "dockerfile", dockerfile) if reused else dockerfile,
            isolation=dep.isolation or "none",
            network=dep.network or "none",
            sandbox=dep.sandbox,
            timings_ms=timings.ms,
            warnings=deployment_warnings(dep),
            tasks=names,
            sources=plan.sources,
            tests=run,
            concurrency=dep.concurrency or 1,
            replicas=dep.desired_replicas,
            min_replicas=dep.min_replicas,
            max_replicas=dep.max_replicas,
            message=f"task {record.name} {what}: version {version[:12]} on queue {record.queue}, {workers} "
            f"({self.runtime.name}){tested}{also}; test it with trigger_celery_task",
        )
