"""The deploy worker's watch over the workers of registered deployments: a worker that is gone (killed, exited
for good, removed) loses no call and is replaced, whatever stopped it.

Docker does not restart a container stopped by ``docker kill`` (a manual stop), and the calls a dead worker had
taken stay in its prefix's ``unacked`` hash until the visibility timeout (an hour). So, every
``MCS_WATCH_EVERY_S``, for each registered deployment whose worker is EXITED or MISSING: its unacknowledged calls
go back to the front of its queue (each marked in the issued-id record, so ``get_celery_result`` says what
happened), a new worker starts from the same artefact with the same Redis user, answers, and the registry points at
it. A deploy in progress for the task (its lock) is left alone. Crash loops stay Docker's own (on-failure
restarts): a RESTARTING worker is not touched.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import TYPE_CHECKING

from deploy_mcp.health import Timings, wait_healthy
from mcs.core.errors import Conflict
from mcs.core.models import TaskRecord
from Redis.broker import move_queue, queue_depth, requeue_unacked
from Redis.issued import IssuedTasks

if TYPE_CHECKING:
    from deploy_mcp.deployer import Deployer

log = logging.getLogger(__name__)

GONE = ("EXITED", "MISSING")


def watch_workers(deployer: Deployer) -> list[str]:
    """One round: heal every registered deployment's group whose workers are fewer than desired or one of which
    went away since the last round; returns the tasks healed."""
    healed = []
    seen: dict[str, dict[str, int]] = deployer.seen_members  # group id -> {worker id: slot} of the last round
    for record in deployer.registry.list():
        dep = record.deployment
        if dep is None or dep.runtime != deployer.runtime.name or not dep.key_prefix or record.primary != record.name:
            continue  # an extra task of a folder is watched through its folder's main task
        if dep.canary is not None:
            canary = deployer.group_of(dep.model_copy(update={"container_id": dep.canary.container_id}), record)
            if deployer.runtime.state(canary) in GONE:
                _end_lost_canary(deployer, record)
        group = deployer.group_of(dep, record)
        members = [] if dep.parked else deployer.runtime.members(group)
        _show(deployer, record.name, dep.desired_replicas, members)
        if dep.parked:
            seen.pop(group.id, None)
            continue  # no worker on purpose: the autoscaler (or a call) wakes it
        live = {m.id: m.slot for m in members if m.state not in GONE}
        # A worker of a slot still wanted that went away (a runtime that replaces workers itself, as Swarm does,
        # shows only its replacement): its calls are lost unless given back. Slots beyond the count were stopped.
        vanished = [i for i, slot in seen.get(group.id, {}).items() if i not in live and slot <= dep.desired_replicas]
        if len(live) >= dep.desired_replicas and not vanished:
            seen[group.id] = live
            _move_stragglers(deployer, record)
            continue
        try:
            with deployer._lock(record.name):
                if _heal(deployer, record):
                    healed.append(record.name)
                    seen[group.id] = {m.id: m.slot for m in deployer.runtime.members(group) if m.state not in GONE}
        except Conflict:
            continue  # a deploy of this task is running: it decides what serves
        except Exception:
            log.exception("could not replace the workers of %s", record.name)
    return healed


def _show(deployer: Deployer, task: str, desired: int, members: list) -> None:
    """Publish what this round saw of the task's workers, for get_task_details (a view, never a decision)."""
    workers = [{"slot": m.slot, "hostname": m.hostname, "state": m.state, "id": m.id, "node": m.node} for m in members]
    try:
        deployer.scaling_log.saw_workers(task, desired, workers, ttl_s=3 * deployer.settings.watch_every_s + 10)
    except Exception:
        log.warning("could not publish the workers of %s", task, exc_info=True)


def sweep_unregistered(deployer: Deployer) -> list[str]:
    """At start: remove what deploys that died left behind: workers no registration points at (a deploy worker died
    between starting a new version and registering it, or between registering it and retiring the previous one),
    Redis users no registration names, and versions (folder and image) no deploy ever registered. Tasks with a
    deploy in progress (their lock held by a live deploy worker) are left alone."""
    removed = []
    for task in sorted({h.task_name for h in deployer.runtime.workers()}):
        try:
            with deployer._lock(task):
                record = deployer.registry.find(task)
                dep = record.deployment if record else None
                keep = {dep.container_id, dep.canary.container_id if dep.canary else None} if dep else set()
                for handle in deployer.runtime.workers(task):
                    if handle.id not in keep:
                        deployer.runtime.remove(handle)
                        removed.append(handle.name)
                if dep is not None:
                    canary_user = dep.canary.acl_user if dep.canary else None
                    deployer.credentials.drop(*(u for u in deployer.credentials.others(task, dep.acl_user)
                                                if u != canary_user))  # fmt: skip
                    for entry in deployer.history.list(task):
                        if entry.status == "draining":  # its deploy worker died before it finished retiring it
                            deployer.history.set_status(task, entry.version, "kept")
                    removed += deployer.folders.remove_unregistered(task, record.queue, dep.version)
        except Conflict:
            continue
        except Exception:
            log.exception("could not sweep what deploys of %s left", task)
    if removed:
        log.warning("removed %d worker(s) no registration points at: %s", len(removed), ", ".join(removed))
    return removed


def _end_lost_canary(deployer: Deployer, record: TaskRecord) -> None:
    """The worker of a gradual release is gone: the release ends, every call goes to the version that serves
    (what waited for the new version, or was taken by it, moves over)."""
    try:
        with deployer._after_the_locks(), deployer._lock(record.name):
            current = deployer.registry.find(record.name)
            if current is None or current.deployment is None or current.deployment.canary is None:
                return
            deployer._end_canary(current, Timings(), lambda _msg: None)
            log.warning("the gradual release of %s lost its worker: rolled back to the serving version", record.name)
    except Conflict:
        return
    except Exception:
        log.exception("could not end the gradual release of %s", record.name)


def _move_stragglers(deployer: Deployer, record: TaskRecord) -> None:
    """A call sent to a retired version's queue (by a sender that read the registry just before a switch) goes on
    to the serving version's queue; without this it would wait there for ever. Looked at without the task's lock
    (a few LLENs), moved under it (a deploy in progress decides where calls go)."""
    dep = record.deployment
    if dep is None or not dep.serve_queue or not dep.key_prefix:
        return
    retired = deployer._retired_queues(record.name, record.queue, dep.serve_queue, None)
    if not any(queue_depth(deployer.settings, dep.key_prefix, q, deployer.broker) for q in retired):
        return
    try:
        with deployer._lock(record.name):
            current = deployer.registry.find(record.name)
            dep = current.deployment if current else None
            if dep is None or not dep.serve_queue:
                return
            for queue in sorted(deployer._retired_queues(record.name, record.queue, dep.serve_queue, None)):
                moved = move_queue(deployer.settings, dep.key_prefix, queue, dep.serve_queue, deployer.broker)
                if moved:
                    log.warning("moved %d call(s) of %s from retired queue %s to %s", moved, record.name, queue,
                                dep.serve_queue)  # fmt: skip
    except Conflict:
        return  # a deploy of the task is running: it moves what its switch leaves


def _heal(deployer: Deployer, stale: TaskRecord) -> bool:
    """Give back the calls that gone workers took (those no live worker of the group holds), then start the group's
    missing workers again (same slots, same names, same Redis user) and wait until they answer."""
    record = deployer.registry.find(stale.name)  # again, under the lock
    if record is None or record.deployment is None or record.deployment.container_id != stale.deployment.container_id:
        return False
    dep = record.deployment
    if dep.parked:
        return False
    group = deployer.group_of(dep, record)
    lost_at = time.time()
    live = [m.hostname for m in deployer.runtime.members(group) if m.state == "RUNNING"]
    held = deployer.held(live, dep.key_prefix) if live else set()
    # Not the calls a retiring version is still finishing: its worker lives (it took them, it acknowledges them).
    draining = {e.serve_queue for e in deployer.history.list(record.name) if e.status == "draining"}
    mine = {dep.serve_queue, *deployer._retired_queues(record.name, record.queue, dep.serve_queue, None)} - draining
    given_back: list[str] = []
    if held is None:
        log.warning("a live worker of %s did not say which calls it holds; giving back its lost calls next round",
                    record.name)  # fmt: skip
    else:
        given_back = requeue_unacked(
            deployer.settings, dep.key_prefix, deployer.broker, queues=mine, to_queue=dep.serve_queue, keep_ids=held
        )
    issued = IssuedTasks(deployer.settings, deployer.registry.client)
    for task_id in given_back:
        issued.mark_lost(task_id, lost_at)
    log.warning("a worker of %s is gone: %d call(s) given back to its queue; starting it again", record.name,
                len(given_back))  # fmt: skip
    spec = deployer.group_spec(record, dep, dep.desired_replicas)
    deployer.runtime.scale(group, spec, dep.desired_replicas)
    probe = partial(deployer.probe, key_prefix=dep.key_prefix)
    wait_healthy(deployer.runtime, probe, group, dep.tasks or record.name, deployer.settings.health_timeout_s,
                 dep.desired_replicas)  # fmt: skip
    log.warning("replaced the gone worker(s) of %s in group %s", record.name, group.id)
    return held is not None
