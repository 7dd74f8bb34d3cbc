"""What a person must be told about a deployment's confinement: shown in every deploy result and listing."""

from __future__ import annotations

from mcs.core.models import DeploymentInfo

PROCESS_WARNING = (
    "process runtime: the task's code runs on this host as the deploy worker's user, with no isolation "
    "(choose MCS_WORKER_RUNTIME=docker for confined workers)"
)


SHARED_WARNING = (
    "this Redis refused ACL SETUSER: the task's workers share MCS's Redis credentials (MCS_ALLOW_SHARED_CREDENTIALS), "
    "so the task's code can read and change every key, other tasks' included"
)


HOST_NETWORK_WARNING = (
    "Redis has no unix socket here (MCS_REDIS_SOCKET): the worker shares the host's network to reach Redis over TCP "
    "(its Redis user still confines what it may touch there)"
)


def deployment_warnings(dep: DeploymentInfo | None) -> list[str]:
    """What a person must know of a deployment's confinement (in every deploy result and listing)."""
    if dep is None:
        return []
    found = []
    if dep.isolation == "none" or dep.runtime == "process":
        found.append(PROCESS_WARNING)
    if dep.key_prefix and not dep.acl_user:
        found.append(SHARED_WARNING)
    if dep.network == "host":
        found.append(HOST_NETWORK_WARNING)
    return found
