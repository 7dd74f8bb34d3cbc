"""The Docker worker runtime: one hardened container per task version, built from a local image.

``build`` makes the image ``mcs-<task>:<version>`` from the deployment folder (:mod:`deploy_mcp.docker.build`:
a temporary build context, ``network_mode="none"``, the task's pinned requirements resolved once per requirement
set inside a throwaway container of the base image, see :mod:`deploy_mcp.docker.wheelhouse` for the 3.11.2 marker
trap, and installed once per set into a dependency image the task image builds on, :mod:`deploy_mcp.docker.deps`).
An image with that tag and the same ``mcs.version`` label is reused, not rebuilt. The resolved wheelhouses are
kept in ``settings.deployments_dir / ".wheelhouses"`` unless ``wheel_cache_dir`` says otherwise.

``start`` runs the Celery worker with every setting of the hardening table (``/work/shared/reference/
security-testing.md``): non-root 10001:10001, read-only root with a ``noexec`` tmpfs ``/tmp``, all capabilities
dropped, ``no-new-privileges``, memory without extra swap, CPU and pid limits, no mounts at all, no host
namespaces other than the configured network, bounded json-file logs, an init process, ``on-failure`` restarts
(5 at most). The environment (Redis settings with the password) is given to the container only: it is never
logged, never put into an error message, and redacted from the logs this module returns.

docker-py errors become MCS errors through :func:`deploy_mcp.docker.client.docker_errors`; "already gone" is not
an error where the protocol says so. docker-py only: no docker CLI, no shell.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import docker.errors
from docker.types import LogConfig, Mount

from deploy_mcp.docker.assemble import remove_stale_assemblies
from deploy_mcp.docker.base_image import ensure_base_image
from deploy_mcp.docker.build import build_in_context
from deploy_mcp.docker.client import docker_errors, get_container, get_image, make_client
from deploy_mcp.docker.containers import (
    LABEL_ARTIFACT,
    LABEL_HOSTNAME,
    MISSING,
    container_name,
    image_tag,
    is_mcs_worker,
    labels_of,
    state_from_attrs,
    validate_run_spec,
)
from deploy_mcp.docker.deps import prune_deps_images
from deploy_mcp.docker.redaction import redact, secret_values
from deploy_mcp.docker.wheelhouse import requirement_lines
from deploy_mcp.runtime import (
    LABEL_GROUP,
    LABEL_MANAGED,
    LABEL_QUEUE,
    LABEL_SLOT,
    LABEL_TASK,
    LABEL_VERSION,
    Artifact,
    BuildSpec,
    Progress,
    RunSpec,
    WorkerHandle,
    say,
    worker_memory_mb,
)
from mcs.core.errors import DeployError, MCSError
from mcs.core.names import validate_name, validate_queue
from mcs.core.settings import Settings
from mcs.core.worker_image import WORKDIR, WORKER_USER_SPEC, worker_command

logger = logging.getLogger(__name__)

TMPFS = {"/tmp": "rw,noexec,nosuid,nodev,size=64m"}  # noqa: S108 - the container's own scratch tmpfs
RESTART_POLICY = {"Name": "on-failure", "MaximumRetryCount": 5}
LOG_MAX_SIZE = "10m"
LOG_MAX_FILE = "3"
STOP_TIMEOUT_S = 10
LOGS_MAX_CHARS = 20_000
LOGS_MAX_LINES = 10_000
#: Where a worker finds Redis's unix socket (its host folder is bind-mounted here, read-only).
REDIS_SOCKET_DIR = "/run/mcs-redis"
#: dockerd runtimes for gVisor (registered by .ci/run and the README's daemon.json): without and with a network.
GVISOR_RUNTIME = "runsc"
GVISOR_HOST_RUNTIME = "runsc-host"
#: The resolved wheelhouses, content-addressed, under the deploy worker's data folder.
WHEELHOUSES = ".wheelhouses"


def container_runtime(sandbox: str, network: str) -> str | None:
    """The dockerd runtime of a worker: the daemon's default (runc), or gVisor's entry for its network."""
    if sandbox != "gvisor":
        return None
    return GVISOR_RUNTIME if network == "none" else GVISOR_HOST_RUNTIME


__all__ = [
    "LOGS_MAX_CHARS",
    "TMPFS",
    "DockerRuntime",
    "container_name",
    "image_tag",
    "is_mcs_worker",
    "redact",
    "secret_values",
    "state_from_attrs",
]


class DockerRuntime:
    """:class:`~deploy_mcp.runtime.WorkerRuntime` on a local Docker daemon (docker-py)."""

    name = "docker"

    def __init__(self, settings: Settings, client: Any = None, *, wheel_cache_dir: Path | None = None) -> None:
        self.settings = settings
        self._client = client
        self._own_client = False
        self._ncpu: int | None = None  # the daemon's CPUs, read once
        self.wheel_cache_dir = settings.deployments_dir / WHEELHOUSES if wheel_cache_dir is None else wheel_cache_dir
        self.description = f"docker (hardened containers from {settings.worker_base_image})"

    def check(self) -> None:
        with docker_errors("ping"):
            self.client.ping()

    def prepare(self, progress: Progress | None = None) -> None:
        ensure_base_image(self.settings, self.client, progress)

    @property
    def client(self) -> Any:
        """The docker-py client; made on first use. A daemon that does not answer -> ServiceUnavailable."""
        if self._client is None:
            self._client = make_client()
            self._own_client = True
        return self._client

    def close(self) -> None:
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None
            self._own_client = False

    # --- build -----------------------------------------------------------------------------------------------

    def artifact_ref(self, task_name: str, version: str) -> str:
        return image_tag(task_name, version)

    @staticmethod
    def worker_name(task_name: str, version: str, hostname: str) -> str:
        """The container name of the worker with this Celery hostname (a group's id: its slot-1 worker's name)."""
        return container_name(task_name, version, hostname)

    def build(self, spec: BuildSpec, progress: Progress | None = None) -> Artifact:
        tag = image_tag(spec.task_name, spec.version)
        validate_queue(spec.queue, "queue")
        requirements = requirement_lines(spec.requirements, self.settings.max_requirements)
        existing = get_image(self.client, tag)
        if existing is not None and labels_of(existing.attrs).get(LABEL_VERSION) == spec.version:
            say(progress, f"image {tag} exists already ({existing.short_id}); reusing it", logger)
            return Artifact(runtime=self.name, ref=tag, id=existing.id, reused=True)
        folder = Path(spec.folder)
        if not folder.is_dir():
            raise DeployError(f"the deployment folder {folder} does not exist", step="build", folder=str(folder))
        started = time.monotonic()
        ensure_base_image(self.settings, self.client, progress)
        image_id, log_tail = build_in_context(
            self.client,
            spec,
            tag,
            requirements,
            base_image=self.settings.worker_base_image,
            max_requirements=self.settings.max_requirements,
            wheel_cache_dir=self.wheel_cache_dir,
            progress=progress,
        )
        if existing is not None and existing.id != image_id:
            # The tag pointed at an image of another version label: it is untagged now; drop it if unused.
            with contextlib.suppress(MCSError), docker_errors("remove old image"):
                self.client.images.remove(existing.id, noprune=False)
        say(progress, f"built {tag} ({image_id[:19]}) in {time.monotonic() - started:.1f} s", logger)
        return Artifact(runtime=self.name, ref=tag, id=image_id, reused=False, build_log_tail=log_tail)

    # --- run -------------------------------------------------------------------------------------------------

    def start(self, spec: RunSpec) -> WorkerHandle:
        name = container_name(spec.task_name, spec.version, spec.hostname)
        validate_queue(spec.queue, "queue")
        validate_run_spec(spec)
        secrets = secret_values(spec.environment)
        labels = {**spec.labels, LABEL_HOSTNAME: spec.hostname, LABEL_ARTIFACT: spec.artifact.ref}
        with docker_errors("start", secrets=secrets, container=name):
            if get_container(self.client, name) is not None:  # a unique hostname makes this a real collision
                raise DeployError(f"a container named {name} exists already", step="start", container=name)
            memory = f"{worker_memory_mb(spec, self.settings)}m"
            environment, mounts = dict(spec.environment), []
            if spec.redis_socket is not None:
                # The socket's folder, read-only: with network "none" the worker reaches Redis and nothing else.
                mounts.append(Mount(REDIS_SOCKET_DIR, str(spec.redis_socket.parent), type="bind", read_only=True))
                environment["REDIS_SOCKET"] = f"{REDIS_SOCKET_DIR}/{spec.redis_socket.name}"
            container = self.client.containers.create(
                spec.artifact.ref,
                command=worker_command(spec.queue, spec.hostname, spec.serve_queue, spec.concurrency),
                name=name,
                environment=environment,
                mounts=mounts,
                runtime=container_runtime(spec.sandbox, spec.network),
                user=WORKER_USER_SPEC,
                working_dir=WORKDIR,
                read_only=True,
                tmpfs=dict(TMPFS),
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                privileged=False,
                mem_limit=memory,
                memswap_limit=memory,
                nano_cpus=round(self.worker_cpus(spec) * 1e9),
                pids_limit=spec.pids_limit,
                network_mode=spec.network,
                cgroupns="private",
                labels=labels,
                restart_policy=dict(RESTART_POLICY),
                log_config=LogConfig(type="json-file", config={"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILE}),
                init=True,
            )
            try:
                container.start()
                container.reload()
            except BaseException:
                # A container that could not start (no such network, image gone) is not left behind.
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True)
                raise
        logger.info("started worker %s (%s) for %s", name, container.short_id, spec.hostname)
        return self._handle(container)

    def worker_cpus(self, spec: RunSpec) -> float:
        """``MCS_WORKER_CPUS`` per pool process, at most the daemon's CPUs (it refuses a limit above them)."""
        if self._ncpu is None:
            with docker_errors("info"):
                self._ncpu = int(self.client.info().get("NCPU") or 1)
        return min(spec.cpus * max(1, spec.concurrency), float(self._ncpu))

    def state(self, handle: WorkerHandle) -> str:
        with docker_errors("state", container=handle.name):
            container = get_container(self.client, handle.id)
            return MISSING if container is None else state_from_attrs(container.attrs)

    def logs(self, handle: WorkerHandle, tail_lines: int = 100) -> str:
        """The last ``tail_lines`` lines (stdout and stderr), at most 20 KB, secrets of its environment redacted."""
        lines = max(1, min(int(tail_lines), LOGS_MAX_LINES))
        with docker_errors("logs", container=handle.name):
            container = get_container(self.client, handle.id)
            if container is None:
                return ""
            try:
                raw = container.logs(stdout=True, stderr=True, tail=lines, timestamps=False)
            except docker.errors.NotFound:
                return ""
        env = dict(
            item.split("=", 1) for item in ((container.attrs.get("Config") or {}).get("Env") or []) if "=" in item
        )
        text = redact(raw.decode("utf-8", "replace"), secret_values(env))
        if len(text) > LOGS_MAX_CHARS:
            text = "...\n" + text[-LOGS_MAX_CHARS:]
        return text

    def remove(self, handle: WorkerHandle, drain_s: float | None = None) -> None:
        with docker_errors("remove", container=handle.name):
            container = get_container(self.client, handle.id)
            if container is None:
                return
            if not is_mcs_worker(container):
                raise DeployError(
                    f"container {container.name} is not an MCS worker; not removing it",
                    step="remove",
                    container=container.name,
                )
            self._stop_and_remove(container, drain_s)
        logger.info("removed worker %s", handle.name)

    def remove_artifact(self, artifact_ref: str) -> None:
        with docker_errors("remove_artifact", image=artifact_ref):
            image = get_image(self.client, artifact_ref)
            if image is None:
                return
            labels = labels_of(image.attrs)
            if labels.get(LABEL_MANAGED) != "1":
                raise DeployError(
                    f"image {artifact_ref} is not an MCS worker image (no {LABEL_MANAGED}=1 label); not removing it",
                    step="remove_artifact",
                    image=artifact_ref,
                )
            users = [
                c
                for c in self.client.containers.list(all=True, filters={"ancestor": image.id}, ignore_removed=True)
                if c.attrs.get("Image") == image.id
            ]
            for container in users:
                found = labels_of(container.attrs)
                ours = (
                    is_mcs_worker(container)
                    and found.get(LABEL_TASK) == labels.get(LABEL_TASK)
                    and found.get(LABEL_VERSION) == labels.get(LABEL_VERSION)
                )
                if not ours:
                    raise DeployError(
                        f"image {artifact_ref} is still used by container {container.name}, which is not an MCS "
                        "worker of this version; remove that container first",
                        step="remove_artifact",
                        image=artifact_ref,
                        container=container.name,
                    )
                self._stop_and_remove(container)
            try:
                self.client.images.remove(artifact_ref, force=False, noprune=False)
            except docker.errors.ImageNotFound:
                return
        logger.info("removed image %s", artifact_ref)
        try:
            self.tidy()
        except Exception:  # housekeeping: the removal asked for is done
            logger.warning("could not tidy after removing %s", artifact_ref, exc_info=True)

    def tidy(self) -> list[str]:
        """The dependency images no image is built on any more, once unused for ``MCS_DEPS_KEEP_UNUSED_S``, and
        image assembly containers a deploy worker that died left."""
        removed = prune_deps_images(self.client, self.wheel_cache_dir, self.settings.deps_keep_unused_s)
        return removed + remove_stale_assemblies(self.client)

    def workers(self, task_name: str | None = None) -> list[WorkerHandle]:
        filters = [f"{LABEL_MANAGED}=1"]
        if task_name is not None:
            filters.append(f"{LABEL_TASK}={validate_name(task_name, 'task_name')}")
        with docker_errors("workers"):
            containers = self.client.containers.list(all=True, filters={"label": filters}, ignore_removed=True)
        return [self._handle(c) for c in containers if is_mcs_worker(c)]

    # --- helpers ---------------------------------------------------------------------------------------------

    def _handle(self, container: Any) -> WorkerHandle:
        labels = labels_of(container.attrs)
        tags = getattr(container.image, "tags", None) if labels.get(LABEL_ARTIFACT) is None else None
        return WorkerHandle(
            runtime=self.name,
            id=container.id,
            name=container.name,
            hostname=labels.get(LABEL_HOSTNAME, ""),
            task_name=labels.get(LABEL_TASK, ""),
            queue=labels.get(LABEL_QUEUE, ""),
            version=labels.get(LABEL_VERSION, ""),
            artifact_ref=labels.get(LABEL_ARTIFACT) or (tags[0] if tags else ""),
            group=labels.get(LABEL_GROUP, ""),
            slot=int(slot) if (slot := labels.get(LABEL_SLOT, "0")).isdigit() else 0,
        )

    def _stop_and_remove(self, container: Any, drain_s: float | None = None) -> None:
        try:
            if container.status in ("running", "restarting", "paused"):
                container.stop(timeout=int(drain_s or STOP_TIMEOUT_S))  # SIGTERM: a warm shutdown first
            container.remove(force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc.explanation or ""):
                return
            raise
