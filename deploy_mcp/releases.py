"""Versions of a deployed task: list them, roll back to a kept one without a build, and gradual releases (a new
version taking a share of the calls until it is promoted or rolled back). A mixin of
:class:`deploy_mcp.deployer.Deployer`, whose state and go-live path it uses."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from deploy_mcp.health import Timings, wait_healthy
from deploy_mcp.launch import Launch
from deploy_mcp.runtime import Artifact, Progress
from mcs.core.errors import Conflict, InvalidInput, NotFound
from mcs.core.manifest import DeployPlan
from mcs.core.models import CanaryInfo, TaskRecord
from mcs.core.names import validate_name
from mcs.core.results import DeployResult, VersionInfo, VersionsResult


class Releases:
    def versions(self, task_name: str) -> VersionsResult:
        record = self._deployed_main(task_name)
        entries = self.history.list(record.name)
        serving = record.deployment.version if record.deployment else None
        canary = record.deployment.canary if record.deployment else None
        calls = self.issued.calls(record.name) if canary else {}
        share = {serving: 100 - canary.percent, canary.version: canary.percent} if canary else {serving: 100}
        items = [
            VersionInfo(
                version=e.version,
                deployed_at=e.deployed_at.isoformat(),
                status="serving" if e.version == serving else e.status,
                image=e.image,
                tests_total=e.tests.total if e.tests else 0,
                tests_passed=e.tests.passed if e.tests else 0,
                tests_failed=e.tests.failed if e.tests else 0,
                can_roll_back=e.version != serving and e.status in ("kept", "draining"),
                traffic_percent=share.get(e.version, 0),
                calls=calls.get(e.version),
            )
            for e in entries
        ]
        split = f"; {canary.version[:12]} takes {canary.percent}% of the calls" if canary else ""
        return VersionsResult(
            task_name=record.name,
            serving=serving,
            versions=items,
            count=len(items),
            keep_versions=self.settings.keep_versions,
            canary=canary.version if canary else None,
            message=f"{len(items)} version(s) of {record.name}; serving {serving[:12] if serving else 'none'}{split}",
        )

    def rollback(self, task_name: str, version: Any, progress: Progress | None = None) -> DeployResult:
        """Serve a kept version again: no build (its artefact is kept), its test cases run again first."""
        say = progress or (lambda _msg: None)
        timings = Timings()
        record = self._deployed_main(task_name)
        entry = self.history.find(record.name, version)
        with self._after_the_locks(), self._request_lock(record.name), self._queue_lock(record.queue):
            current = self.registry.get(record.name)
            dep = current.deployment
            if dep is not None and dep.canary is not None:
                if entry.version == dep.version:
                    return self._end_canary(current, timings, say)
                raise Conflict(
                    f"a gradual release of {record.name!r} is running (version {dep.canary.version[:12]}): "
                    f"rollback_task to {(dep.version or '')[:12]} ends it, promote_task completes it",
                    task_name=record.name,
                )
            if dep is not None and dep.version == entry.version:
                handle = self._running_same(current, entry.version, current.queue, self.options_of(dep))
                if handle is not None:
                    plan = DeployPlan([current], [], dep.network, dep.sandbox)
                    timings.total()
                    return self._result([current], handle, entry.version, True, dep.dockerfile or "rendered",
                                        timings, "already serves this version", plan)  # fmt: skip
            folder = self.folders.task_dir(record.name, record.queue) / entry.version
            if entry.status not in ("kept", "draining") or not folder.is_dir():
                raise Conflict(
                    f"version {entry.version[:12]} of {record.name!r} is {entry.status}, not kept: only kept versions "
                    "can be rolled back to (list_task_versions); deploy its files again instead",
                    task_name=record.name,
                    version=entry.version,
                )
            ref = self.runtime.artifact_ref(record.name, entry.version)
            artifact = Artifact(self.runtime.name, ref, ref, reused=True)
            drafts = [TaskRecord.model_validate({**t, "queue": record.queue}) for t in entry.tasks] or [current]
            plan = DeployPlan(drafts, list(entry.cases), entry.options.get("network"), entry.options.get("sandbox"))
            options = self._options(plan.network, plan.sandbox, current=current)  # the current capacity
            live = Launch(plan, entry.version, artifact, options, entry.dockerfile or "rendered", rollback=True)
            say(f"rolling {record.name} back to version {entry.version[:12]}")
            return self._go_live(live, current, say, timings, f"rolled back from {(dep.version or '')[:12]}")

    def _deployed_main(self, task_name: str) -> TaskRecord:
        record = self.registry.get(validate_name(task_name))
        if record.deployment is None:
            raise NotFound(
                f"task {task_name!r} is registered but not deployed: it has no versions", task_name=task_name
            )
        if record.primary != record.name:
            raise Conflict(
                f"task {task_name!r} is deployed in task {record.primary!r}'s folder: its versions are "
                f"{record.primary!r}'s",
                task_name=task_name,
                owner=record.primary,
            )
        return record

    # -- gradual release --------------------------------------------------------------------------------------

    @staticmethod
    def _canary_percent(value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 99:
            raise InvalidInput("canary_percent", value, "a whole number from 1 to 99 (the new version's share)")
        return value

    def _check_release(self, current: TaskRecord | None, plan: DeployPlan, canary: int | None) -> None:
        """One gradual release at a time, of a folder with the same tasks and parameters as the one serving (both
        versions take the same calls)."""
        dep = current.deployment if current else None
        if dep is not None and dep.canary is not None:
            raise Conflict(
                f"a gradual release of {current.name!r} is running (version {dep.canary.version[:12]} takes "
                f"{dep.canary.percent}% of the calls): promote_task or rollback_task before deploying again",
                task_name=current.name,
            )
        if canary is None:
            return
        if dep is None:
            raise InvalidInput("canary_percent", canary, "a gradual release needs a version serving: deploy first")
        serving = {}
        for name in dep.tasks or [current.name]:
            found = self.registry.find(name)
            serving[name] = [p.model_dump() for p in found.parameters] if found else None
        new = {r.name: [p.model_dump() for p in r.parameters] for r in plan.records}
        if serving != new:
            raise Conflict(
                "a gradual release needs the same tasks with the same parameters in both versions (both take the "
                f"same calls): serving {sorted(serving)}, new {sorted(new)}; deploy without canary_percent",
                task_name=current.name,
            )

    def _start_canary(self, live: Launch, current: TaskRecord, deployment: Any, run: Any) -> list[TaskRecord]:
        """Point a share of the calls at the new version: every task of the folder keeps its deployment, which
        gains the canary."""
        canary = CanaryInfo(
            version=deployment.version,
            serve_queue=deployment.serve_queue,
            percent=live.canary_percent,
            container_id=deployment.container_id,
            hostname=deployment.hostname,
            image=deployment.image,
            acl_user=deployment.acl_user,
            started_at=datetime.now(UTC),
            tests_passed=deployment.tests_passed,
        )
        self.issued.forget_calls(current.name)
        records = self._register_all(live.plan, current.deployment.model_copy(update={"canary": canary}), current)
        self.folders.mark_registered(current.name, current.queue, live.version)
        self._history_entry(live, "canary", run, deployment.serve_queue)
        return records

    def promote(self, task_name: str, progress: Progress | None = None) -> DeployResult:
        """The gradual release's version takes every call; the version that served retires."""
        say = progress or (lambda _msg: None)
        timings = Timings()
        record = self._deployed_main(task_name)
        with self._after_the_locks(), self._request_lock(record.name), self._queue_lock(record.queue):
            current = self.registry.get(record.name)
            dep = current.deployment
            canary = dep.canary if dep else None
            if canary is None:
                raise Conflict(f"no gradual release of {record.name!r} is running", task_name=record.name)
            handle = next((h for h in self.runtime.workers(record.name) if h.id == canary.container_id), None)
            if handle is None or self.runtime.state(handle) != "RUNNING":
                raise Conflict(
                    f"the gradual release's worker of {record.name!r} is not running: rollback_task to "
                    f"{(dep.version or '')[:12]} ends the release (the watchdog also ends it)",
                    task_name=record.name,
                )
            entry = self.history.get(record.name, canary.version)
            promoted = dep.model_copy(update={
                "deployment_id": str(uuid.uuid4()), "version": canary.version, "image": canary.image,
                "container_id": canary.container_id, "hostname": canary.hostname, "acl_user": canary.acl_user,
                "serve_queue": canary.serve_queue, "deployed_at": datetime.now(UTC),
                "tests_passed": canary.tests_passed, "canary": None,
            })  # fmt: skip
            drafts = [TaskRecord.model_validate({**t, "queue": record.queue}) for t in entry.tasks] if entry else []
            plan = DeployPlan(drafts or [current], [], dep.network, dep.sandbox)
            if promoted.desired_replicas > 1:  # the release ran on one worker: it gets the task's replicas first
                say(f"starting {promoted.desired_replicas - 1} more worker(s) of version {canary.version[:12]}")
                self.runtime.scale(handle, self.group_spec(current, promoted, promoted.desired_replicas),
                                   promoted.desired_replicas)  # fmt: skip
                probe = partial(self.probe, key_prefix=promoted.key_prefix)
                wait_healthy(self.runtime, probe, handle, promoted.tasks or record.name,
                             self.settings.health_timeout_s, promoted.desired_replicas)  # fmt: skip
            records = self._register_all(plan, promoted, current)
            self.history.set_status(record.name, canary.version, "serving")
            say(f"retiring version {(dep.version or '')[:12]} (in the background)")
            self._retire_later(record.name, record.queue, keep=handle, keep_user=canary.acl_user, old=current)
            timings.total()
            return self._result(records, handle, canary.version, False, dep.dockerfile or "rendered", timings,
                                f"promoted from {(dep.version or '')[:12]}", plan)  # fmt: skip

    def _end_canary(self, current: TaskRecord, timings: Timings, say: Callable[[str], None]) -> DeployResult:
        """Roll a gradual release back: every call goes to the version that served; the new one retires, and what
        waited on its queue moves over."""
        dep = current.deployment
        canary = dep.canary
        plan = DeployPlan([current], [], dep.network, dep.sandbox)
        records = self._register_all(plan, dep.model_copy(update={"canary": None}), current)
        say(f"retiring version {canary.version[:12]} (in the background)")
        # Like any retiring version: its worker finishes the calls it took (up to the task time limit), then what
        # waited on its queue, or was taken and not acknowledged, moves to the serving version's queue.
        handles = [h for h in self.runtime.workers(current.name) if h.id == canary.container_id]
        self.history.set_status(current.name, canary.version, "draining")
        users = [canary.acl_user] if canary.acl_user else []
        self._later(lambda: self._drain(current.name, current.queue, handles, users, None, [canary.version]))
        handle = next((h for h in self.runtime.workers(current.name) if h.id == dep.container_id), None)
        if handle is None:
            raise Conflict(
                f"the serving worker of {current.name!r} is gone; the watchdog replaces it", task_name=current.name
            )
        timings.total()
        return self._result(records, handle, dep.version or "", False, dep.dockerfile or "rendered", timings,
                            f"rolled back from the gradual release of {canary.version[:12]}", plan)  # fmt: skip
