"""What a version's Swarm service looks like: pure functions from a RunSpec to docker-py's service arguments.

No daemon calls here, so the naming, the hardening and the secret handling can be tested without a swarm
(``tests/test_swarm_runtime.py``, marker ``unit``). :mod:`deploy_mcp.swarm.runtime` makes the secret and the network
the definition refers to, and creates the service from it.

One service per start of a version (its group): replicas ``1..n`` are Swarm's task slots. Each replica's container
hostname is the Swarm template ``r{{.Task.Slot}}`` and its Celery ``--hostname`` is ``<name>-%h@<domain>``: Celery
expands ``%h`` to the machine's hostname, so the worker in slot 2 of ``x@mcs`` answers to ``x-r2@mcs``
(``replica_hostname``), and the replacement Swarm starts in that slot answers to the same name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from docker.types import (
    ContainerSpec,
    EndpointSpec,
    Mount,
    Placement,
    Resources,
    RestartPolicy,
    SecretReference,
    ServiceMode,
    TaskTemplate,
    UpdateConfig,
)

from deploy_mcp.docker.containers import LABEL_ARTIFACT, LABEL_HOSTNAME, image_tag, validate_version
from deploy_mcp.docker.runtime import LOG_MAX_FILE, LOG_MAX_SIZE, REDIS_SOCKET_DIR
from deploy_mcp.runtime import LABEL_GROUP, LABEL_MANAGED, LABEL_TASK, LABEL_VERSION, RunSpec, worker_memory_mb
from mcs.core.errors import InvalidInput
from mcs.core.names import validate_name
from mcs.core.settings import Settings
from mcs.core.worker_image import VENV_DIR, WORKDIR, WORKER_GID, WORKER_UID, WORKER_USER_SPEC, worker_command

#: Swarm's limit for a service name (a DNS label); secrets and networks take the service's name too.
SERVICE_NAME_MAX = 63
#: The container hostname of a replica: its task slot, which Celery's ``%h`` puts into the node name.
REPLICA_HOSTNAME = "r{{.Task.Slot}}"
#: On a worker's secret and network: the service they belong to (how leftovers are found).
LABEL_SERVICE = "mcs.service"

#: The worker's password travels as a Docker secret, a file in the container, never in the service's spec.
PASSWORD_ENV = "REDIS_PASSWORD"  # noqa: S105 - a variable's name  # pragma: allowlist secret
PASSWORD_FILE_ENV = "MCS_REDIS_PASSWORD_FILE"  # noqa: S105 - a variable's name  # pragma: allowlist secret
SECRET_FILE = "mcs-redis-password"  # noqa: S105 - a file name  # pragma: allowlist secret
SECRET_PATH = f"/run/secrets/{SECRET_FILE}"
#: Runs first in the container (the image's own interpreter, isolated mode: no cwd, no PYTHON* variables): reads
#: the password file into REDIS_PASSWORD, where the generated app (templates/app.py.tmpl) reads it, then becomes
#: the worker (exec, the same pid). A constant program; the command line comes as arguments, never as code.
LAUNCHER = (
    "import os, sys\n"
    f"with open(os.environ.pop({PASSWORD_FILE_ENV!r})) as f:\n"
    f"    os.environ[{PASSWORD_ENV!r}] = f.read()\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)
LAUNCHER_PYTHON = f"{VENV_DIR}/bin/python"

#: As the Deployer's DRAIN_GRACE_S: a retiring worker's warm shutdown may take the task time limit and this.
DRAIN_GRACE_S = 5
#: Swarm starts a replacement this long after a replica ended (there is no back-off: a crash loop restarts at
#: this pace). Meanwhile the slot's ended task is what :func:`deploy_mcp.swarm.tasks.members` reports.
RESTART_DELAY_S = 3
TMPFS_SIZE = "64m"
NS = 1_000_000_000


@dataclass(frozen=True)
class Secret:
    """A Docker secret made for one service (``name``: the service's)."""

    id: str
    name: str


def service_name(task_name: str, version: str, hostname: str) -> str:
    """``mcs-<task>-<version[:12]>-<6 hex of the group's hostname>``, the docker runtime's container name, unique
    per start. A long task name is cut so that the whole stays within Swarm's 63 characters (the task is in the
    labels); the name still ends in the hash, so it is a valid DNS label."""
    validate_name(task_name, "task_name")
    validate_version(version)
    suffix = f"-{version[:12]}-{hashlib.sha256(hostname.encode()).hexdigest()[:6]}"
    return f"mcs-{task_name}"[: SERVICE_NAME_MAX - len(suffix)] + suffix


def registry_ref(registry: str, task_name: str, version: str) -> str:
    """``<registry>/mcs-<task>:<version>``: the image every swarm node pulls."""
    return f"{registry.rstrip('/')}/{image_tag(task_name, version)}"


def local_tag_of(ref: str, registry: str) -> str | None:
    """The docker runtime's tag ``mcs-<task>:<version>`` of a registry ref of ours, None for any other ref."""
    prefix = registry.rstrip("/") + "/"
    if not ref.startswith(prefix) or "/" in ref[len(prefix) :]:
        return None
    return ref[len(prefix) :]


def celery_hostname(group_hostname: str) -> str:
    """The Celery ``--hostname`` of every replica: ``<name>-%h@<domain>`` (``%h``: the container's hostname)."""
    name, _, domain = group_hostname.partition("@")
    return f"{name}-%h@{domain or 'mcs'}"


def split_environment(environment: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """The service's environment and the password that goes into the secret instead (None without one)."""
    env = dict(environment)
    password = env.pop(PASSWORD_ENV, None)
    if password is not None:
        env[PASSWORD_FILE_ENV] = SECRET_PATH
    return env, password


def service_command(spec: RunSpec, with_password_file: bool) -> list[str]:
    hostname = celery_hostname(spec.hostname)
    command = worker_command(spec.queue, hostname, spec.serve_queue, spec.concurrency)
    return [LAUNCHER_PYTHON, "-I", "-c", LAUNCHER, *command] if with_password_file else command


def drain_s(settings: Settings) -> int:
    """The stop grace period of every replica: a scale-down or a removal is a warm shutdown (the worker finishes
    the calls it took, up to the task time limit) before Swarm kills it."""
    return settings.task_time_limit_s + DRAIN_GRACE_S


def api_at_least(api_version: str, wanted: str) -> bool:
    have = tuple(int(p) for p in api_version.split("."))
    return have >= tuple(int(p) for p in wanted.split("."))


def service_labels(spec: RunSpec, name: str) -> dict[str, str]:
    """Labels of the service and of each replica's container: how MCS finds and checks what it made."""
    return {**spec.labels, LABEL_HOSTNAME: spec.hostname, LABEL_ARTIFACT: spec.artifact.ref, LABEL_GROUP: name}


def owned_labels(spec: RunSpec, name: str) -> dict[str, str]:
    """Labels of the secret and the network made for the service ``name``."""
    return {**spec.extra_labels, LABEL_MANAGED: "1", LABEL_SERVICE: name}


def networks_for(spec: RunSpec, own_network: str | None) -> list[str]:
    """``none`` -> the service's own internal overlay network (Swarm cannot attach ``none``), else the named one."""
    if spec.network == "none":
        if own_network is None:
            raise InvalidInput("network", "none", "a confined service needs its own internal network (none made)")
        return [own_network]
    return [spec.network]


def service_definition(
    spec: RunSpec,
    settings: Settings,
    *,
    name: str,
    image: str,
    secret: Secret | None,
    network: str | None,
    node_id: str | None,
    api_version: str,
) -> dict[str, Any]:
    """Keyword arguments of ``client.api.create_service`` for the group ``name`` of ``spec``.

    ``image``: the registry ref, pinned to its digest when known. ``secret``: the password's secret (the spec's
    REDIS_PASSWORD must then be in it). ``network``: the service's own network when ``spec.network`` is none.
    ``node_id``: the node whose Redis socket the replicas mount (they are placed on it), None without a socket.
    """
    env, password = split_environment(spec.environment)
    if (password is None) != (secret is None):
        raise InvalidInput("environment", PASSWORD_ENV, "a password and its secret go together (internal error)")
    mounts = [Mount("/tmp", None, type="tmpfs", tmpfs_size=TMPFS_SIZE)]  # noqa: S108 - the container's own tmpfs
    # Docker mounts a tmpfs noexec,nosuid,nodev unless told otherwise; API 1.46 could say so explicitly.
    constraints = []
    if spec.redis_socket is not None:
        # The socket's folder, read-only: the worker reaches Redis through it, and through nothing else.
        mounts.append(Mount(REDIS_SOCKET_DIR, str(spec.redis_socket.parent), type="bind", read_only=True))
        env["REDIS_SOCKET"] = f"{REDIS_SOCKET_DIR}/{spec.redis_socket.name}"
        if node_id:
            constraints.append(f"node.id=={node_id}")  # the socket exists on this host only
    secrets = []
    if secret is not None:
        secrets.append(
            SecretReference(secret.id, secret.name, filename=SECRET_FILE, uid=str(WORKER_UID), gid=str(WORKER_GID),
                            mode=0o400)
        )  # fmt: skip
    labels = service_labels(spec, name)
    privileges = {"NoNewPrivileges": True} if api_at_least(api_version, "1.46") else None
    container = ContainerSpec(
        image,
        command=service_command(spec, with_password_file=secret is not None),
        hostname=REPLICA_HOSTNAME,
        env=env,
        workdir=WORKDIR,
        user=WORKER_USER_SPEC,
        labels=labels,
        mounts=mounts,
        stop_grace_period=drain_s(settings) * NS,
        secrets=secrets or None,
        read_only=True,
        init=True,
        cap_drop=["ALL"],
    )
    if privileges is not None:
        container["Privileges"] = privileges
    resources = Resources(
        cpu_limit=round(spec.cpus * max(1, spec.concurrency) * NS),
        mem_limit=worker_memory_mb(spec, settings) * 1024 * 1024,
    )
    resources["Limits"]["Pids"] = spec.pids_limit  # API 1.41; docker-py 7.1 has no argument for it
    template = TaskTemplate(
        container,
        resources=resources,
        restart_policy=RestartPolicy(condition="any", delay=RESTART_DELAY_S * NS, max_attempts=0),
        placement=Placement(constraints=constraints) if constraints else None,
        log_driver={"Name": "json-file", "Options": {"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILE}},
        networks=networks_for(spec, network),
    )
    return {
        "task_template": template,
        "name": name,
        "labels": labels,
        "mode": ServiceMode("replicated", replicas=max(1, spec.replicas)),
        "update_config": UpdateConfig(parallelism=1, order="start-first", failure_action="pause"),
        "endpoint_spec": EndpointSpec(mode="dnsrr"),  # no virtual IP, no load balancer: workers take no connections
    }


# --- reading a service back (``client.api.inspect_service`` / ``services`` data) ------------------------------


def labels_of_service(service: dict[str, Any]) -> dict[str, str]:
    return dict((service.get("Spec") or {}).get("Labels") or {})


def container_spec_of(service: dict[str, Any]) -> dict[str, Any]:
    return ((service.get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}


def image_of(service: dict[str, Any]) -> str:
    """The service's image ref without its pinned digest."""
    return str(container_spec_of(service).get("Image") or "").split("@", 1)[0]


def is_mcs_service(service: dict[str, Any]) -> bool:
    """A service the runtime made (labels and the name they imply), not merely one labelled ``mcs.managed``."""
    labels = labels_of_service(service)
    if labels.get(LABEL_MANAGED) != "1" or not labels.get(LABEL_HOSTNAME):
        return False
    try:
        expected = service_name(labels.get(LABEL_TASK, ""), labels.get(LABEL_VERSION, ""), labels[LABEL_HOSTNAME])
    except InvalidInput:
        return False
    return (service.get("Spec") or {}).get("Name") == expected
