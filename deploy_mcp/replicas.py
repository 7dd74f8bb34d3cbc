"""A version's workers as one group: a per-container runtime (docker, process) made a
:class:`~deploy_mcp.runtime.GroupRuntime`.

A group is the workers labelled with its id (``mcs.group``), one per slot (``mcs.slot``); the worker in slot ``i``
answers to ``replica_hostname(group hostname, i)``, and a replacement in that slot to the same name. For Docker the
group's id is the name of its slot-1 container, so ``docker inspect <container_id>`` of a deploy result shows a
worker of it. Build-side calls (build, artefacts, check, prepare) go to the wrapped runtime unchanged.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from deploy_mcp.runtime import (
    LABEL_GROUP,
    LABEL_SLOT,
    GroupRuntime,
    Replica,
    RunSpec,
    WorkerHandle,
    WorkerRuntime,
    replica_hostname,
)

log = logging.getLogger(__name__)

GONE = ("EXITED", "MISSING")
_SLOT_SUFFIX = re.compile(r"-r\d+(@|$)")


def as_group_runtime(runtime: WorkerRuntime | GroupRuntime) -> GroupRuntime:
    """``runtime`` itself when it manages groups (swarm, or already wrapped), else it wrapped in :class:`Replicated`."""
    if hasattr(runtime, "members") and hasattr(runtime, "scale"):
        return runtime  # type: ignore[return-value]
    return Replicated(runtime)


def group_state(states: list[str]) -> str:
    """A group's state from its workers': RUNNING if one runs, else RESTARTING, STARTING, EXITED; MISSING if none."""
    for state in ("RUNNING", "RESTARTING", "STARTING", "EXITED"):
        if state in states:
            return state
    return "MISSING"


def group_hostname(hostname: str) -> str:
    """The group's hostname from one of its workers' (``x-r2@mcs`` -> ``x@mcs``)."""
    return _SLOT_SUFFIX.sub(r"\1", hostname, count=1)


def parallel(actions: list[Any]) -> None:
    """Run the callables together (stopping workers that each drain their calls), raising the first error."""
    if len(actions) <= 1:
        for action in actions:
            action()
        return
    with ThreadPoolExecutor(max_workers=min(8, len(actions))) as pool:
        for future in [pool.submit(action) for action in actions]:
            future.result()


class Replicated:
    """:class:`GroupRuntime` over a runtime that runs one worker per ``start`` (docker, process)."""

    def __init__(self, inner: WorkerRuntime) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def description(self) -> str:
        return self.inner.description

    def __getattr__(self, name: str) -> Any:  # build, artifact_ref, check, prepare, close, settings, client, ...
        return getattr(self.inner, name)

    # -- groups -----------------------------------------------------------------------------------------------

    def _group_id(self, spec: RunSpec) -> str:
        first = replica_hostname(spec.hostname, 1)
        worker_name = getattr(self.inner, "worker_name", None)
        return worker_name(spec.task_name, spec.version, first) if worker_name else first

    def start(self, spec: RunSpec) -> WorkerHandle:
        gid = self._group_id(spec)
        group = WorkerHandle(
            runtime=self.name, id=gid, name=gid, hostname=spec.hostname,
            task_name=spec.task_name, queue=spec.queue, version=spec.version, artifact_ref=spec.artifact.ref,
        )  # fmt: skip
        try:
            for slot in range(1, max(1, spec.replicas) + 1):
                self._start_slot(group, spec, slot)
        except BaseException:
            self.remove(group)
            raise
        return group

    def _start_slot(self, group: WorkerHandle, spec: RunSpec, slot: int) -> WorkerHandle:
        labels = {**spec.extra_labels, LABEL_GROUP: group.id, LABEL_SLOT: str(slot)}
        one = replace(spec, hostname=replica_hostname(spec.hostname, slot), extra_labels=labels, replicas=1)
        return self.inner.start(one)

    def _handles(self, group: WorkerHandle) -> list[WorkerHandle]:
        handles = self.inner.workers(group.task_name or None)
        mine = [h for h in handles if h.group == group.id]
        if not mine:  # a worker started before groups (no label) is a group of its own
            mine = [h for h in handles if not h.group and h.id == group.id]
        return sorted(mine, key=lambda h: h.slot)

    def members(self, group: WorkerHandle) -> list[Replica]:
        return [
            Replica(id=h.id, slot=h.slot or 1, hostname=h.hostname, state=self.inner.state(h), name=h.name)
            for h in self._handles(group)
        ]

    def state(self, handle: WorkerHandle) -> str:
        return group_state([m.state for m in self.members(handle)])

    def logs(self, handle: WorkerHandle, tail_lines: int = 100) -> str:
        handles = self._handles(handle)
        if len(handles) == 1:
            return self.inner.logs(handles[0], tail_lines)
        return "\n".join(f"== slot {h.slot} ({h.hostname}) ==\n{self.inner.logs(h, tail_lines)}" for h in handles)

    def remove(self, handle: WorkerHandle, drain_s: float | None = None) -> None:
        parallel([lambda h=h: self.inner.remove(h, drain_s=drain_s) for h in self._handles(handle)])

    def scale(self, group: WorkerHandle, spec: RunSpec, replicas: int, drain_s: float | None = None) -> None:
        handles = self._handles(group)
        gone = [h for h in handles if self.inner.state(h) in GONE]
        for handle in gone:  # a dead worker's slot is started again, under the same name
            self.inner.remove(handle)
        live = {h.slot: h for h in handles if h not in gone}
        started = [self._start_slot(group, spec, slot) for slot in range(1, replicas + 1) if slot not in live]
        extra = [h for slot, h in live.items() if slot > replicas]
        parallel([lambda h=h: self.inner.remove(h, drain_s=drain_s) for h in extra])
        if started or extra or gone:
            log.info("group %s of %s: %d started, %d stopped, %d gone replaced", group.id, group.task_name,
                     len(started), len(extra), len(gone))  # fmt: skip

    def workers(self, task_name: str | None = None) -> list[WorkerHandle]:
        groups: dict[str, WorkerHandle] = {}
        for h in sorted(self.inner.workers(task_name), key=lambda h: h.slot):
            gid = h.group or h.id
            if gid not in groups:
                groups[gid] = replace(h, id=gid, name=gid if h.group else h.name, hostname=group_hostname(h.hostname)
                                      if h.group else h.hostname, group="", slot=0)  # fmt: skip
        return list(groups.values())
