"""The Docker Swarm worker runtime (``MCS_WORKER_RUNTIME=swarm``): a version's group of workers is one Swarm service.

A :class:`~deploy_mcp.runtime.GroupRuntime` natively: ``start`` creates a service with ``spec.replicas`` replicas
(:mod:`.service_spec` says what is in it), Swarm keeps that many running and replaces one that ends in the same slot
(same Celery hostname), ``scale`` changes the replica count (0 parks the group: the service stays, without
workers), ``remove`` removes the service. The build is the docker runtime's (composed, not copied), then the image
is pushed to ``MCS_SWARM_REGISTRY`` (:mod:`.registry`) for every node to pull.

Hardened as far as Swarm (API 1.41, Docker 20.10 here) allows, and where it differs from the docker runtime:

================================  =====================================  =========================================
setting                           docker runtime                          swarm runtime
================================  =====================================  =========================================
user, read-only root, caps        10001:10001, read-only, cap_drop ALL    the same
``/tmp``                          tmpfs noexec,nosuid,nodev 64m           the same (a tmpfs mount: Docker's default
                                                                          options are noexec,nosuid,nodev)
memory, cpu, pids, init, logs     limits, init, json-file 3 x 10m         the same; swap is not limited separately
                                                                          (Swarm sets no memswap: Docker's default)
no-new-privileges                 yes                                     only with API >= 1.46 (Docker 27), else
                                                                          not at all unless the daemon sets it
                                                                          (``"no-new-privileges": true``)
gVisor (``sandbox="gvisor"``)     per container (``runtime=runsc``)       no runtime per service: only where the
                                                                          daemon's default runtime is runsc
network ``none``                  ``network_mode=none`` + Redis socket    Swarm cannot attach ``none``: the service
                                                                          gets its own *internal* overlay network
                                                                          (no gateway, no route out, no other
                                                                          service on it) + the Redis socket,
                                                                          placed on the node that has the socket
cgroup namespace                  private                                 the daemon's default (host on cgroup v1)
restarts                          on-failure, 5 at most                   any, no limit, every 3 s (Swarm has no
                                                                          back-off), in the same slot; the watchdog
                                                                          still gives a lost replica's calls back
the password                      environment (``docker inspect``         a Docker secret (a 0400 file of uid
                                  shows it to root on the host)           10001), read into the environment by a
                                                                          launcher; not in ``docker service
                                                                          inspect``
================================  =====================================  =========================================

Errors: docker-py's become MCS errors through :func:`deploy_mcp.docker.client.docker_errors`, the password
redacted; "already gone" is no error where the protocol says so. docker-py only: no docker CLI, no shell.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker.errors

from deploy_mcp.credentials import TaskCredentials
from deploy_mcp.docker.client import docker_errors
from deploy_mcp.docker.containers import LABEL_ARTIFACT, LABEL_HOSTNAME, validate_run_spec
from deploy_mcp.docker.redaction import REDACTED, redact, secret_values
from deploy_mcp.docker.runtime import GVISOR_RUNTIME, LOGS_MAX_CHARS, LOGS_MAX_LINES, STOP_TIMEOUT_S, DockerRuntime
from deploy_mcp.replicas import group_state
from deploy_mcp.runtime import (
    LABEL_MANAGED,
    LABEL_QUEUE,
    LABEL_TASK,
    LABEL_VERSION,
    Artifact,
    BuildSpec,
    Progress,
    Replica,
    RunSpec,
    WorkerHandle,
)
from deploy_mcp.swarm import registry as registry_mod
from deploy_mcp.swarm import teardown
from deploy_mcp.swarm.service_spec import (
    PASSWORD_ENV,
    RESTART_DELAY_S,
    Secret,
    container_spec_of,
    drain_s,
    image_of,
    is_mcs_service,
    labels_of_service,
    local_tag_of,
    owned_labels,
    registry_ref,
    service_definition,
    service_name,
    split_environment,
)
from deploy_mcp.swarm.tasks import members_of, split_service_logs, task_problems
from mcs.core.errors import DeployError, InvalidInput, ServiceUnavailable
from mcs.core.names import validate_name, validate_queue
from mcs.core.settings import Settings
from Redis.acl import users_of_task

logger = logging.getLogger(__name__)

#: How long start and scale wait for Swarm to create the tasks of new replicas (it takes milliseconds).
TASKS_APPEAR_S = 30.0
POLL_S = teardown.POLL_S
REMOVE_MARGIN_S = teardown.REMOVE_MARGIN_S
#: The password part of a Redis URL (user:PASSWORD@ after the scheme), for logs of a service started by another
#: process (the password itself is in the service's Docker secret, which the API never gives back).
_URL_PASSWORD = re.compile(r"(\b(?:redis|rediss|redis\+socket)://[^:/@\s]*:)[^@\s]+@")
FIX_SWARM = "make this daemon a swarm manager (`docker swarm init --advertise-addr ADDR`, or join one as a manager)"


class SwarmRuntime:
    """:class:`~deploy_mcp.runtime.GroupRuntime` on a Docker daemon that is a swarm manager (docker-py)."""

    name = "swarm"

    def __init__(self, settings: Settings, client: Any = None, *, wheel_cache_dir: Path | None = None) -> None:
        self.settings = settings
        self.registry = settings.swarm_registry
        self.docker = DockerRuntime(settings, client, wheel_cache_dir=wheel_cache_dir)  # the build, the base image
        self.description = (
            f"swarm (a hardened Swarm service per task version, images from {settings.worker_base_image} via "
            f"{self.registry})"
        )
        self._secrets: dict[str, list[str]] = {}  # service -> its secrets, for redaction (this process's starts)
        self._nodes: dict[str, str] = {}  # node id -> hostname
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        return self.docker.client

    def close(self) -> None:
        self.docker.close()

    def check(self) -> None:
        """ServiceUnavailable naming what is missing: the daemon, its swarm manager role, the registry."""
        self.docker.check()
        with docker_errors("info"):
            swarm = self.client.info().get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            state = swarm.get("LocalNodeState") or "inactive"
            role = "a manager" if swarm.get("ControlAvailable") else "not a manager"
            raise ServiceUnavailable(
                f"the Docker daemon is not a swarm manager (swarm {state}, {role}); {FIX_SWARM}",
                service="swarm",
                swarm_state=state,
            )
        registry_mod.check_registry(self.registry)

    def prepare(self, progress: Progress | None = None) -> None:
        self.docker.prepare(progress)

    # --- build -----------------------------------------------------------------------------------------------

    def artifact_ref(self, task_name: str, version: str) -> str:
        return registry_ref(self.registry, task_name, version)

    def build(self, spec: BuildSpec, progress: Progress | None = None) -> Artifact:
        """The docker runtime's image, tagged ``<registry>/mcs-<task>:<version>`` and pushed (again when reused:
        a push of what the registry has is a few requests, and it may have lost it)."""
        local = self.docker.build(spec, progress)
        ref = self.artifact_ref(spec.task_name, spec.version)
        registry_mod.push(self.client, local.id, ref, progress)
        return replace(local, runtime=self.name, ref=ref)

    def remove_artifact(self, artifact_ref: str) -> None:
        """Remove the image's local tags (the registry tag, then the docker runtime's ``mcs-<task>:<version>`` and
        with it the image). An image without ``mcs.managed=1`` is never removed. The copy in the registry stays:
        Debian's registry deletes only by digest and frees space only in its offline garbage collection, and
        other nodes may still pull it for a rollback; the operator prunes the registry."""
        local_tag = local_tag_of(artifact_ref, self.registry)
        if local_tag is None:
            self.docker.remove_artifact(artifact_ref)  # a plain docker runtime image
            return
        with docker_errors("remove_artifact", image=artifact_ref):
            users = [s for s in self._services() if image_of(s) == artifact_ref]
            if users:
                raise DeployError(
                    f"image {artifact_ref} is still used by service {users[0]['Spec']['Name']}; remove it first",
                    step="remove_artifact",
                    image=artifact_ref,
                    service=users[0]["Spec"]["Name"],
                )
            image, local_ref = registry_mod.local_image(self.client, artifact_ref)
            if image is not None:
                labels = dict((image.attrs.get("Config") or {}).get("Labels") or {})
                if labels.get(LABEL_MANAGED) != "1":
                    raise DeployError(
                        f"image {artifact_ref} is not an MCS worker image (no {LABEL_MANAGED}=1 label); not removing "
                        "it",
                        step="remove_artifact",
                        image=artifact_ref,
                    )
                teardown.await_containers_gone(self.client, image.id, time.monotonic() + REMOVE_MARGIN_S)
                with contextlib.suppress(docker.errors.ImageNotFound):
                    self.client.images.remove(local_ref, force=False, noprune=False)
        self.docker.remove_artifact(local_tag)
        logger.info("removed image %s (the registry keeps its copy)", artifact_ref)

    def tidy(self) -> list[str]:
        return self.docker.tidy()  # the images are built by the docker runtime, on this node

    # --- groups ----------------------------------------------------------------------------------------------

    def _within_cpus(self, spec: RunSpec) -> RunSpec:
        """A replica's CPU limit (``cpus`` per pool process) capped at this node's CPUs: dockerd refuses a limit above
        them, and Swarm would retry the refused replica for ever."""
        ncpu = int(self.client.info().get("NCPU") or 1)
        if spec.cpus * max(1, spec.concurrency) <= ncpu:
            return spec
        return dataclasses.replace(spec, cpus=ncpu / max(1, spec.concurrency))

    def start(self, spec: RunSpec) -> WorkerHandle:
        """A service of ``spec.replicas`` (at least 1) replicas, its own secret (the password) and, for network
        none, its own internal network; returns once Swarm has made the replicas' tasks (not once they answer)."""
        name = service_name(spec.task_name, spec.version, spec.hostname)
        self._create(spec, name)
        group = self._group_handle(spec, name)
        try:
            self._wait_tasks(name, max(1, spec.replicas))
        except BaseException:
            with contextlib.suppress(Exception):
                self.remove(group)
            raise
        return group

    def members(self, group: WorkerHandle) -> list[Replica]:
        service = self._service(group.id)
        if service is None:
            return []
        hostname = labels_of_service(service).get(LABEL_HOSTNAME) or group.hostname
        with docker_errors("tasks", service=group.id):
            tasks = self.client.api.tasks(filters={"service": service["ID"]})
        return members_of(tasks, hostname, service["Spec"]["Name"], self._node_names(tasks))

    def state(self, handle: WorkerHandle) -> str:
        return group_state([m.state for m in self.members(handle)])

    def scale(self, group: WorkerHandle, spec: RunSpec, replicas: int, drain_s: float | None = None) -> None:
        """Change the replica count of the group's service, its spec untouched (a change of it would restart every
        replica). Up: returns once Swarm made the new replicas' tasks. A replica that ended is Swarm's to start
        again, in its slot, after the restart delay: returns once it did. Down: Swarm picks the replicas to stop
        (those not running first, then by node balance; on one node the lowest slots stayed in every trial, but
        the slots left need not be 1..n, e.g. when slot 1 was being replaced); returns once they are gone, each having
        drained its calls for up to ``drain_s`` (default the service's stop grace period) before it is killed.
        A group whose service is gone is created again from ``spec`` under its name (a person removed it)."""
        if replicas < 0:
            raise InvalidInput("replicas", replicas, "use 0 or more")
        service = self._service(group.id)
        if service is None:
            if replicas > 0:
                self._create(replace(spec, hostname=group.hostname or spec.hostname, replicas=replicas), group.id)
                self._wait_tasks(group.id, replicas)
            return
        self._check_ours(service, "scale")
        if spec.version == group.version and spec.environment:
            with self._lock:  # the group's own spec (its Redis user): its password is redacted from its logs
                self._secrets.setdefault(group.id, secret_values(spec.environment))
        before = {m.id for m in self.members(group) if m.state != "EXITED"}
        spec_now = service["Spec"]
        if (spec_now.get("Mode") or {}).get("Replicated", {}).get("Replicas") != replicas:
            with docker_errors("scale", service=group.id):
                self.client.api.update_service(
                    service["ID"], service["Version"]["Index"], task_template=spec_now["TaskTemplate"],
                    name=spec_now["Name"], labels=spec_now.get("Labels"), mode={"Replicated": {"Replicas": replicas}},
                    update_config=spec_now.get("UpdateConfig"), rollback_config=spec_now.get("RollbackConfig"),
                    endpoint_spec=spec_now.get("EndpointSpec"),
                )  # fmt: skip
        self._wait_tasks(group.id, replicas)
        self._wait_replaced(group)
        if len(before) > replicas:
            drain = drain_s if drain_s is not None else self._drain_s
            stopping = teardown.marked_to_stop(self.client, service["ID"], before, len(before) - replicas)
            teardown.stop_local(self.client, service["ID"], stopping, drain)
            teardown.await_tasks_stopped(
                self.client, service["ID"], stopping, time.monotonic() + drain + REMOVE_MARGIN_S
            )
        logger.info("service %s of %s scaled to %d", group.id, group.task_name, replicas)

    def remove(self, handle: WorkerHandle, drain_s: float | None = None) -> None:
        """Remove the service (each replica drains its calls for up to ``drain_s``, default a few seconds, then is
        killed), then its secret and network. No error when it is gone."""
        service = self._service(handle.id)
        if service is not None:
            self._check_ours(service, "remove")
            with docker_errors("remove", service=handle.id), contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_service(service["ID"])
            teardown.stop_local(
                self.client, service["ID"], None, drain_s if drain_s is not None else STOP_TIMEOUT_S, remove=True
            )
            teardown.await_service_gone(self.client, service["ID"], time.monotonic() + REMOVE_MARGIN_S)
        teardown.remove_owned(self.client, handle.id, wait_s=REMOVE_MARGIN_S)
        teardown.remove_leftovers(self.client, {s["Spec"]["Name"] for s in self._services()})
        with self._lock:
            self._secrets.pop(handle.id, None)
        logger.info("removed service %s", handle.id)

    def logs(self, handle: WorkerHandle, tail_lines: int = 100) -> str:
        """The last ``tail_lines`` lines of each replica (stdout and stderr), by slot, at most 20 KB, with what
        Swarm reported about replicas that ended; the password redacted (see :meth:`_known_secrets`), and any
        sensitive value of the service's environment, and any password in a Redis URL."""
        lines = max(1, min(int(tail_lines), LOGS_MAX_LINES))
        service = self._service(handle.id)
        if service is None:
            return ""
        with docker_errors("tasks", service=handle.id):
            tasks = self.client.api.tasks(filters={"service": service["ID"]})
            try:
                raw = self.client.api.service_logs(
                    service["ID"], details=True, stdout=True, stderr=True, tail=lines, timestamps=False, is_tty=False
                )
                data = _bounded(raw, LOGS_MAX_CHARS * 8)
            except docker.errors.NotFound:
                data = b""
        by_task = split_service_logs(data)
        members = members_of(tasks, labels_of_service(service).get(LABEL_HOSTNAME) or handle.hostname, handle.id, {})
        slot_of = {str(t.get("ID")): int(t.get("Slot") or 0) for t in tasks}
        parts = [*task_problems(tasks)]
        if len(members) == 1 and len(by_task) <= 1:
            parts += [line for task_lines in by_task.values() for line in task_lines]
        else:
            for task_id in sorted(by_task, key=lambda t: (slot_of.get(t, 0), t)):
                slot = slot_of.get(task_id, 0)
                parts.append(f"== slot {slot} (task {task_id[:12]}) ==")
                parts += by_task[task_id]
        env = dict(item.split("=", 1) for item in container_spec_of(service).get("Env") or [] if "=" in item)
        known = self._known_secrets(handle.id, env, labels_of_service(service).get(LABEL_TASK, ""))
        text = redact("\n".join(parts), sorted({*known, *secret_values(env)}, key=len, reverse=True))
        text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)  # a password this process never saw, in a URL
        if len(text) > LOGS_MAX_CHARS:
            text = "...\n" + text[-LOGS_MAX_CHARS:]
        return text

    def _known_secrets(self, name: str, env: dict[str, str], task_name: str) -> list[str]:
        """What to redact from a service's logs: the password this process gave it, else (a service another process
        started: Docker never gives a secret back) its task user's, from the deploy worker's credentials folder;
        and the administrator's password (shared credentials)."""
        with self._lock:
            known = self._secrets.get(name)
        if known is None:
            username = env.get("REDIS_USERNAME", "")
            store = TaskCredentials(self.settings, None)  # type: ignore[arg-type] - load() reads its file only
            user = store.load(username) if users_of_task([username], task_name) else None
            known = secret_values({PASSWORD_ENV: user.password}) if user is not None else []
            with self._lock:
                self._secrets[name] = known
        admin = self.settings.redis_password
        return [*known, *(secret_values({PASSWORD_ENV: admin.get_secret_value()}) if admin is not None else [])]

    def workers(self, task_name: str | None = None) -> list[WorkerHandle]:
        """One handle per MCS service (a group): id and name the service's name, hostname the group's."""
        if task_name is not None:
            validate_name(task_name, "task_name")
        return [self._handle_of(s) for s in self._services(task_name) if is_mcs_service(s)]

    # --- helpers ---------------------------------------------------------------------------------------------

    @property
    def _drain_s(self) -> int:
        return drain_s(self.settings)

    def _create(self, spec: RunSpec, name: str) -> None:
        """Secret, network, service: each removed again when a later step fails."""
        validate_queue(spec.queue, "queue")
        validate_run_spec(spec)
        secrets = secret_values(spec.environment)
        password = split_environment(spec.environment)[1]
        with docker_errors("start", secrets=secrets, service=name):
            if self._service(name) is not None:  # a unique hostname makes this a real collision
                raise DeployError(f"a service named {name} exists already", step="start", service=name)
            info = self.client.info()
            self._check_sandbox(spec, info)
            node_id = (info.get("Swarm") or {}).get("NodeID") if spec.redis_socket is not None else None
            image = registry_mod.pinned_ref(self.client, spec.artifact.ref)
            labels = owned_labels(spec, name)
            made_secret = made_network = None
            try:
                if password is not None:
                    made_secret = self.client.api.create_secret(name, password.encode(), labels=labels)["ID"]
                    with self._lock:
                        self._secrets[name] = secrets
                if spec.network == "none":
                    made_network = self.client.networks.create(
                        name, driver="overlay", scope="swarm", internal=True, attachable=False, labels=labels,
                        check_duplicate=True,
                    ).id  # fmt: skip
                definition = service_definition(
                    self._within_cpus(spec), self.settings, name=name, image=image,
                    secret=Secret(made_secret, name) if made_secret else None, network=made_network, node_id=node_id,
                    api_version=self.client.api.api_version,
                )  # fmt: skip
                self.client.api.create_service(**definition)
            except BaseException:
                with contextlib.suppress(Exception):
                    teardown.remove_owned(self.client, name, wait_s=REMOVE_MARGIN_S)
                with self._lock:
                    self._secrets.pop(name, None)
                raise
        logger.info("started service %s (%d replica(s)) for %s", name, max(1, spec.replicas), spec.hostname)

    def _check_sandbox(self, spec: RunSpec, info: dict[str, Any]) -> None:
        """gVisor only where every container of the daemon runs under it: Swarm cannot choose a runtime."""
        if spec.sandbox == "gvisor" and not str(info.get("DefaultRuntime") or "").startswith(GVISOR_RUNTIME):
            raise InvalidInput(
                "sandbox",
                "gvisor",
                "a swarm service cannot choose its container runtime: use sandbox runc, the docker runtime, or make "
                "runsc the default runtime of every swarm node",
            )

    def _service(self, name: str) -> dict[str, Any] | None:
        if not name:
            return None
        with docker_errors("inspect service", service=name):
            try:
                return self.client.api.inspect_service(name)
            except docker.errors.NotFound:
                return None

    def _services(self, task_name: str | None = None) -> list[dict[str, Any]]:
        filters = [f"{LABEL_MANAGED}=1"]
        if task_name is not None:
            filters.append(f"{LABEL_TASK}={task_name}")
        with docker_errors("services"):
            return list(self.client.api.services(filters={"label": filters}))

    def _check_ours(self, service: dict[str, Any], step: str) -> None:
        if not is_mcs_service(service):
            name = service["Spec"]["Name"]
            raise DeployError(f"service {name} is not an MCS worker group; not touching it", step=step, service=name)

    def _handle_of(self, service: dict[str, Any]) -> WorkerHandle:
        labels = labels_of_service(service)
        name = service["Spec"]["Name"]
        return WorkerHandle(
            runtime=self.name, id=name, name=name, hostname=labels.get(LABEL_HOSTNAME, ""),
            task_name=labels.get(LABEL_TASK, ""), queue=labels.get(LABEL_QUEUE, ""),
            version=labels.get(LABEL_VERSION, ""), artifact_ref=labels.get(LABEL_ARTIFACT, ""),
        )  # fmt: skip

    def _group_handle(self, spec: RunSpec, name: str) -> WorkerHandle:
        return WorkerHandle(
            runtime=self.name, id=name, name=name, hostname=spec.hostname, task_name=spec.task_name, queue=spec.queue,
            version=spec.version, artifact_ref=spec.artifact.ref,
        )  # fmt: skip

    def _node_names(self, tasks: list[dict[str, Any]]) -> dict[str, str]:
        wanted = {str(t.get("NodeID")) for t in tasks if t.get("NodeID")}
        with self._lock:
            missing = wanted - set(self._nodes)
        if missing:
            with docker_errors("nodes"):
                nodes = self.client.api.nodes()
            with self._lock:
                for node in nodes:
                    self._nodes[node["ID"]] = (node.get("Description") or {}).get("Hostname") or node["ID"]
        with self._lock:
            return dict(self._nodes)

    def _wait_tasks(self, name: str, replicas: int) -> None:
        """Until the service has ``replicas`` members (Swarm makes their tasks in milliseconds); a replica that
        waits out its restart delay counts (it is reported EXITED meanwhile)."""
        deadline = time.monotonic() + TASKS_APPEAR_S
        handle = WorkerHandle(self.name, name, name, "", "", "", "", "")
        while len(members := self.members(handle)) < replicas:
            if time.monotonic() > deadline:
                raise DeployError(
                    f"swarm made {len(members)} of {replicas} replica(s) of service {name} within {TASKS_APPEAR_S:g} s",
                    step="start",
                    service=name,
                )
            time.sleep(POLL_S)

    def _wait_replaced(self, group: WorkerHandle) -> None:
        """Until no member is an ended replica whose replacement waits out Swarm's restart delay (bounded: one
        that keeps ending is what the health check then reports)."""
        deadline = time.monotonic() + RESTART_DELAY_S + teardown.TASKS_MARKED_S
        while any(m.state == "EXITED" for m in self.members(group)) and time.monotonic() < deadline:
            time.sleep(POLL_S)


def _bounded(stream: Any, limit: int) -> bytes:
    """A log stream read up to ``limit`` bytes (the rest is left unread)."""
    if isinstance(stream, bytes):
        return stream[-limit:]
    chunks, size = [], 0
    for chunk in stream:
        chunks.append(chunk)
        size += len(chunk)
        if size > limit * 2:
            joined = b"".join(chunks)[-limit:]
            chunks, size = [joined], len(joined)
    return b"".join(chunks)[-limit:]
