"""Stopping a group's replicas and removing what a service leaves behind: the waits on Swarm's bookkeeping, this
node's containers, the service's own secret and network, and leftovers of services that are gone.

Swarm's own stop reaches a replica about 3 s after the request (its dispatcher batches the assignments it sends to
the nodes' agents) and keeps to the service's stop grace period, whatever the caller's drain: so the replicas on
this node are stopped here at once, each killed after the caller's drain. Replicas on other nodes get Swarm's stop.
Every call takes the docker-py client and translates its errors with :func:`~deploy_mcp.docker.client.docker_errors`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import docker.errors

from deploy_mcp.docker.client import docker_errors
from deploy_mcp.docker.containers import parse_docker_time
from deploy_mcp.replicas import parallel
from deploy_mcp.runtime import LABEL_MANAGED
from deploy_mcp.swarm.service_spec import LABEL_SERVICE
from mcs.core.errors import MCSError

logger = logging.getLogger(__name__)

#: Beyond a drain: how long removing a service may take (Swarm's own bookkeeping after the stop).
REMOVE_MARGIN_S = 15.0
#: How long a scale-down waits for Swarm to mark the replicas it stops (it takes milliseconds).
TASKS_MARKED_S = 5.0
#: A network or secret of MCS whose service is gone is removed by a later call once it is this old (a start
#: in progress has made its secret and network but not yet its service).
LEFTOVER_AGE_S = 120.0
POLL_S = 0.2
STOPPING = ("shutdown", "remove")  # desired states of a task Swarm is stopping
NOT_YET_STOPPED = ("running", "starting", "preparing", "ready", "assigned", "accepted", "pending")
TASK_LABEL = "com.docker.swarm.task.id"


def tasks_of(client: Any, service_id: str) -> list[dict[str, Any]]:
    """Every task Swarm still has of a service, also once the service is removed (filtered here: Docker refuses a
    filter by a service that no longer exists)."""
    with docker_errors("tasks", service=service_id):
        return [t for t in client.api.tasks() if t.get("ServiceID") == service_id]


def containers_of(client: Any, service_id: str) -> list[Any]:
    """This node's running containers of a service."""
    with docker_errors("containers", service=service_id):
        return client.containers.list(
            filters={"label": f"com.docker.swarm.service.id={service_id}", "status": "running"}, ignore_removed=True
        )


def marked_to_stop(client: Any, service_id: str, task_ids: set[str], count: int) -> set[str]:
    """Which of ``task_ids`` Swarm's orchestrator marked to stop after a scale-down by ``count`` (it does so
    within moments of the update; waited for a little)."""
    deadline = time.monotonic() + TASKS_MARKED_S
    while True:
        marked = {
            str(t["ID"]) for t in tasks_of(client, service_id)
            if t.get("ID") in task_ids and t.get("DesiredState") in STOPPING
        }  # fmt: skip
        if len(marked) >= count or time.monotonic() > deadline:
            return marked
        time.sleep(POLL_S / 4)


def stop_local(client: Any, service_id: str, task_ids: set[str] | None, timeout_s: float, remove: bool = False) -> None:
    """Stop this node's running replicas of the service that Swarm is stopping (``task_ids``, None: all of them)
    now, together, each killed after ``timeout_s``. ``remove``: the stopped containers go too (their service is
    gone: Swarm would remove them a few seconds later, holding up the image's removal)."""
    containers = [
        c for c in containers_of(client, service_id)
        if task_ids is None or (c.labels or {}).get(TASK_LABEL) in task_ids
    ]  # fmt: skip
    parallel([lambda c=c: _stop(c, timeout_s, remove) for c in containers])


def _stop(container: Any, timeout_s: float, remove: bool) -> None:
    try:
        container.stop(timeout=max(1, int(timeout_s)))  # SIGTERM: Celery's warm shutdown, then SIGKILL
        if remove:
            container.remove()
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        if exc.status_code not in (304, 409):  # already stopped, or being removed
            raise


def await_tasks_stopped(client: Any, service_id: str, task_ids: set[str], deadline: float) -> None:
    """Until none of ``task_ids`` that Swarm is stopping still runs (a scale-down's drain), or the deadline."""
    while time.monotonic() < deadline:
        stopping = [
            t for t in tasks_of(client, service_id)
            if t.get("ID") in task_ids and t.get("DesiredState") in STOPPING
            and (t.get("Status") or {}).get("State") in NOT_YET_STOPPED
        ]  # fmt: skip
        if not stopping:
            return
        time.sleep(POLL_S)


def await_service_gone(client: Any, service_id: str, deadline: float) -> None:
    """Until Swarm has no task and this node no running container of the removed service, or the deadline."""
    while tasks_of(client, service_id) or containers_of(client, service_id):
        if time.monotonic() > deadline:
            logger.warning("service %s: Swarm still lists its tasks %.0f s after its replicas stopped", service_id,
                           REMOVE_MARGIN_S)  # fmt: skip
            return
        time.sleep(POLL_S)


def await_containers_gone(client: Any, image_id: str, deadline: float) -> None:
    """Until no container of a removed swarm task still uses the image (Swarm removes them itself)."""
    while time.monotonic() < deadline:
        with docker_errors("containers", image=image_id):
            left = [
                c for c in client.containers.list(all=True, filters={"ancestor": image_id}, ignore_removed=True)
                if c.attrs.get("Image") == image_id and TASK_LABEL in (c.labels or {})
            ]  # fmt: skip
        if not left:
            return
        time.sleep(POLL_S)


def remove_owned(client: Any, name: str, wait_s: float) -> None:
    """The secret and network made for service ``name`` (the network frees once Swarm let go of its tasks; what is
    still in use after ``wait_s`` is left to :func:`remove_leftovers`). Only objects labelled ``mcs.managed=1``."""
    label = f"{LABEL_SERVICE}={name}"
    with docker_errors("remove secret", service=name):
        for secret in client.api.secrets(filters={"label": label}):
            if ((secret.get("Spec") or {}).get("Labels") or {}).get(LABEL_MANAGED) == "1":
                with contextlib.suppress(docker.errors.NotFound):
                    client.api.remove_secret(secret["ID"])
    deadline = time.monotonic() + wait_s
    with docker_errors("remove network", service=name):
        for network in client.networks.list(filters={"label": label}):
            if (network.attrs.get("Labels") or {}).get(LABEL_MANAGED) != "1":
                continue
            while True:
                try:
                    network.remove()
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError as exc:
                    if time.monotonic() > deadline:
                        logger.info("network %s still in use (%s); removed later", name, exc.explanation)
                        break
                    time.sleep(POLL_S * 5)


def remove_leftovers(client: Any, services: set[str]) -> None:
    """Secrets and networks of MCS whose service (by name) is not among ``services`` any more (a removal that could
    not wait for the network, a deploy worker that died mid-start), once older than LEFTOVER_AGE_S. A failure is
    logged, not raised: this is housekeeping on the way out of another call."""
    labels = [f"{LABEL_MANAGED}=1", LABEL_SERVICE]
    now = datetime.now(UTC)
    try:
        with docker_errors("leftovers"):
            for network in client.networks.list(filters={"label": labels}):
                owner = (network.attrs.get("Labels") or {}).get(LABEL_SERVICE)
                if owner and owner not in services and _older(network.attrs.get("Created"), now):
                    with contextlib.suppress(docker.errors.APIError):
                        network.remove()
            for secret in client.api.secrets(filters={"label": labels}):
                owner = ((secret.get("Spec") or {}).get("Labels") or {}).get(LABEL_SERVICE)
                if owner and owner not in services and _older(secret.get("CreatedAt"), now):
                    with contextlib.suppress(docker.errors.APIError):
                        client.api.remove_secret(secret["ID"])
    except MCSError:
        logger.exception("removing leftover secrets and networks")


def _older(created: Any, now: datetime) -> bool:
    parsed = parse_docker_time(created)
    return parsed is not None and (now - parsed).total_seconds() > LEFTOVER_AGE_S
