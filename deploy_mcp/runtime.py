"""What the deploy worker needs from a worker runtime, whatever runs the task's Celery worker.

Two runtimes implement it: ``docker.runtime.DockerRuntime`` (a hardened container per task version) and, where
no Docker daemon answers, a local process runtime (a ``celery worker`` subprocess, no container isolation). Both
pass one contract test. The orchestration (staging, versions, health checks, blue-green, registry) lives in
``deploy_mcp/deployer.py`` and talks only to this interface.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mcs.core.worker_image import replica_hostname

__all__ = ["replica_hostname"]

Progress = Callable[[str], None]


def say(progress: Progress | None, message: str, logger: logging.Logger | None = None) -> None:
    """Log a step and pass it on to the caller's progress callback (the deploy_task progress notifications)."""
    (logger or logging.getLogger(__name__)).info(message)
    if progress is not None:
        progress(message)


# Labels every runtime object (image, container) carries, so MCS can find and remove exactly what it made.
LABEL_MANAGED = "mcs.managed"
LABEL_TASK = "mcs.task"
LABEL_QUEUE = "mcs.queue"
LABEL_VERSION = "mcs.version"
#: A version's workers: the group they belong to (its id) and each one's slot (1, 2, ...) in it.
LABEL_GROUP = "mcs.group"
LABEL_SLOT = "mcs.slot"


def mcs_labels(task_name: str, queue: str, version: str, extra: dict[str, str]) -> dict[str, str]:
    return {LABEL_MANAGED: "1", LABEL_TASK: task_name, LABEL_QUEUE: queue, LABEL_VERSION: version, **extra}


@dataclass(frozen=True)
class BuildSpec:
    """Build the worker artefact for one version of one task from its deployment folder."""

    task_name: str
    queue: str
    version: str  # content hash of the bundle, lowercase hex
    folder: Path  # deployments/{task}_{queue}/{version}: the task's files, already validated and written
    dockerfile: str  # the Dockerfile text to build with (rendered by the deploy worker, or the folder's own)
    requirements: list[str] = field(default_factory=list)  # pinned lines of the folder's requirements.txt
    extra_labels: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> dict[str, str]:
        return mcs_labels(self.task_name, self.queue, self.version, self.extra_labels)


@dataclass(frozen=True)
class Artifact:
    """What build() made: an image (docker) or a prepared environment (process)."""

    runtime: str
    ref: str  # image tag ``mcs-<task>:<version>``, or a folder path
    id: str  # image id, or the same path
    reused: bool = False  # True when an identical artefact already existed and nothing was built
    build_log_tail: str = ""


@dataclass(frozen=True)
class RunSpec:
    task_name: str
    queue: str
    version: str
    artifact: Artifact
    hostname: str  # the Celery worker's unique node name, e.g. "simple_add-1a2b3c4d5e6f@mcs"
    environment: dict[str, str]  # Redis settings, injected at start only; never written to files or images
    mem_limit_mb: int
    cpus: float
    pids_limit: int
    network: str  # "none" (Redis through the socket only) or the network the worker may use
    extra_labels: dict[str, str] = field(default_factory=dict)
    redis_socket: Path | None = None  # Redis's unix socket on the host: the worker reaches Redis through it
    sandbox: str = "runc"  # runc, or gvisor (runsc)
    serve_queue: str | None = None  # the version's own queue (mcs.core.celery_app.version_queue); default: queue
    concurrency: int = 1  # pool processes per worker (Celery prefork children)
    replicas: int = 1  # workers of the version (a group runtime's start starts this many)

    @property
    def labels(self) -> dict[str, str]:
        return mcs_labels(self.task_name, self.queue, self.version, self.extra_labels)


@dataclass(frozen=True)
class WorkerHandle:
    runtime: str
    id: str  # container id, or pid as a string
    name: str  # container name, or a descriptive name
    hostname: str
    task_name: str
    queue: str
    version: str
    artifact_ref: str
    group: str = ""  # the id of the version's worker group this worker belongs to ('' for a group itself)
    slot: int = 0  # its slot in the group (1, 2, ...), 0 for a group


@dataclass(frozen=True)
class Replica:
    """One worker of a version's group, as its runtime sees it."""

    id: str  # container id, swarm task id, or pid-<n>
    slot: int
    hostname: str  # its Celery node name: replica_hostname(group hostname, slot)
    state: str  # RUNNING, RESTARTING, STARTING, EXITED or MISSING
    name: str = ""
    node: str = ""  # the host it runs on (swarm), '' when local


def worker_memory_mb(spec: RunSpec, settings: Any) -> int:
    """A worker's memory limit: the configured one, and ``worker_child_mem_mb`` per pool process beyond the first."""
    return spec.mem_limit_mb + max(0, spec.concurrency - 1) * settings.worker_child_mem_mb


class WorkerRuntime(Protocol):
    name: str  # "docker" or "process": reported in results as `runtime`
    description: str  # for people: what isolation this runtime gives

    def check(self) -> None:
        """Raise ServiceUnavailable when the runtime cannot work here (no Docker daemon answers)."""
        ...

    def prepare(self, progress: Progress | None = None) -> None:
        """Make the runtime ready to build workers (the Docker base image, built when missing)."""
        ...

    def build(self, spec: BuildSpec, progress: Progress | None = None) -> Artifact: ...

    def start(self, spec: RunSpec) -> WorkerHandle: ...

    def state(self, handle: WorkerHandle) -> str:
        """RUNNING, RESTARTING, EXITED or MISSING (from the runtime's own view, not Celery's)."""
        ...

    def logs(self, handle: WorkerHandle, tail_lines: int = 100) -> str: ...

    def remove(self, handle: WorkerHandle, drain_s: float | None = None) -> None:
        """Stop and remove the worker; no error when it is already gone. ``drain_s``: how long a warm shutdown
        may take (the worker finishes the calls it took) before it is killed; default a few seconds."""
        ...

    def artifact_ref(self, task_name: str, version: str) -> str:
        """The ref build() gives the artefact of this task version (e.g. the image tag ``mcs-<task>:<version>``)."""
        ...

    def remove_artifact(self, artifact_ref: str) -> None:
        """Remove a built artefact (image or environment); no error when it is already gone."""
        ...

    def tidy(self) -> list[str]:
        """Remove what builds made that no artefact uses any more (the docker runtime's dependency images, some
        time after their last use); returns what was removed. Housekeeping: it never raises for what it keeps."""
        ...

    def workers(self, task_name: str | None = None) -> list[WorkerHandle]:
        """Workers this runtime is running for MCS (by label), optionally for one task."""
        ...


class GroupRuntime(WorkerRuntime, Protocol):
    """What the deploy worker drives: a runtime whose handle is a version's *group* of workers (replicas).

    ``start(spec)`` starts ``spec.replicas`` workers, each with ``spec.concurrency`` pool processes, consuming
    ``spec.serve_queue``, the worker in slot ``i`` named ``replica_hostname(spec.hostname, i)``; the handle's id is
    the group's id, its hostname ``spec.hostname``. ``state`` is the group's: RUNNING when a worker of it runs,
    else RESTARTING, else EXITED, MISSING without any worker (a parked group, scaled to zero, has none). ``logs``
    joins its workers' logs; ``remove`` removes them all; ``workers`` lists groups, one handle per group.

    A per-container runtime (docker, process) becomes one through :class:`deploy_mcp.replicas.Replicated`; the
    swarm runtime is one natively (a group is a Swarm service). A Kubernetes runtime would be one too: a group is
    a Deployment, its replicas the Deployment's pods.
    """

    def members(self, group: WorkerHandle) -> list[Replica]:
        """The group's workers, by slot (gone ones included while the runtime still reports them)."""
        ...

    def scale(self, group: WorkerHandle, spec: RunSpec, replicas: int, drain_s: float | None = None) -> None:
        """Make the group have exactly ``replicas`` live workers: start the missing slots (a gone worker's slot is
        started again) from ``spec``; stop the workers beyond, each finishing the calls it took (``drain_s``)."""
        ...
