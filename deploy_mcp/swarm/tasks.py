"""What the runtime reads from Swarm's tasks: a group's members and their states, and its logs by replica.

Pure functions over ``client.api.tasks()`` data (no daemon calls), tested without a swarm.

A slot's task history, as Swarm keeps it: the task that runs it now (desired state ``running``), older ones that
ended (desired ``shutdown``), and, for ``RESTART_DELAY_S`` after a replica ended, its replacement waiting to start
(desired ``ready``). A scale-down or a removal marks the slot's task desired ``shutdown`` or ``remove`` without a
replacement: such a slot is no member any more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from deploy_mcp.docker.containers import EXITED, MISSING, RUNNING, parse_docker_time
from deploy_mcp.runtime import Replica, replica_hostname

STARTING = "STARTING"

#: Swarm task state (``Status.State``) -> the runtime's state of a worker.
TASK_STATES: dict[str, str] = {
    "running": RUNNING,
    **dict.fromkeys(
        ("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"), STARTING
    ),
    **dict.fromkeys(("complete", "shutdown", "failed", "rejected", "orphaned", "remove"), EXITED),
}
#: Desired states of a slot that is meant to have a worker: running now, or ready (waiting out the restart delay).
LIVE_DESIRED = ("running",)
WAITING_DESIRED = ("ready",)
#: Observed states of a task that ended by itself (not stopped by a scale-down or a removal).
ENDED = ("failed", "rejected", "orphaned", "complete")


def task_state(task: Mapping[str, Any]) -> str:
    return TASK_STATES.get(str((task.get("Status") or {}).get("State", "")), MISSING)


def _created(task: Mapping[str, Any]) -> float:
    parsed = parse_docker_time(task.get("CreatedAt"))
    return parsed.timestamp() if parsed else 0.0


def current_tasks(tasks: Iterable[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """Slot -> the task that stands for it: the one desired running; else, while a replacement waits out the
    restart delay, the task that ended (so an ended replica is seen, EXITED, before Swarm starts the next one);
    else the waiting replacement. Slots with neither (scaled away, removed) are left out."""
    by_slot: dict[int, list[Mapping[str, Any]]] = {}
    for task in tasks:
        slot = task.get("Slot")
        if isinstance(slot, int) and slot > 0:
            by_slot.setdefault(slot, []).append(task)
    chosen: dict[int, Mapping[str, Any]] = {}
    for slot, history in by_slot.items():
        history.sort(key=_created, reverse=True)
        live = [t for t in history if t.get("DesiredState") in LIVE_DESIRED]
        if live:
            chosen[slot] = live[0]
            continue
        waiting = [t for t in history if t.get("DesiredState") in WAITING_DESIRED]
        if not waiting:
            continue
        ended = [t for t in history if (t.get("Status") or {}).get("State") in ENDED]
        chosen[slot] = ended[0] if ended else waiting[0]
    return dict(sorted(chosen.items()))


def members_of(
    tasks: Iterable[Mapping[str, Any]], group_hostname: str, service_name: str, nodes: Mapping[str, str]
) -> list[Replica]:
    """The group's replicas by slot. ``nodes``: node id -> hostname (a replica's ``node``)."""
    return [
        Replica(
            id=str(task.get("ID", "")),
            slot=slot,
            hostname=replica_hostname(group_hostname, slot),
            state=task_state(task),
            name=f"{service_name}.{slot}.{task.get('ID', '')}",
            node=nodes.get(str(task.get("NodeID") or ""), str(task.get("NodeID") or "")),
        )
        for slot, task in current_tasks(tasks).items()
    ]


def task_problems(tasks: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per current task that ended with an error Swarm reported (an image it could not pull, a mount it
    could not make, an exit code), for the logs: such a replica may have written nothing itself."""
    lines = []
    for slot, task in current_tasks(tasks).items():
        status = task.get("Status") or {}
        err = status.get("Err")
        if status.get("State") in ENDED and err:
            lines.append(f"[swarm] slot {slot} task {task.get('ID', '')}: {status.get('State')}: {err}")
    return lines


def split_service_logs(raw: bytes) -> dict[str, list[str]]:
    """``service_logs(details=True)`` output -> task id -> its lines. Each line starts with the swarm context
    (``com.docker.swarm.node.id=...,com.docker.swarm.service.id=...,com.docker.swarm.task.id=...``), a space,
    then the line as the worker wrote it."""
    by_task: dict[str, list[str]] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        context, sep, text = line.partition(" ")
        task_id = ""
        if sep and "com.docker.swarm." in context:
            attrs = dict(item.split("=", 1) for item in context.split(",") if "=" in item)
            task_id = attrs.get("com.docker.swarm.task.id", "")
        else:
            text = line
        by_task.setdefault(task_id, []).append(text)
    return by_task
