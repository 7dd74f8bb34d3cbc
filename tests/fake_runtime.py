"""An in-memory WorkerRuntime for fast unit tests of the deploy logic (no Docker, no processes)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from deploy_mcp.runtime import LABEL_GROUP, LABEL_SLOT, Artifact, BuildSpec, RunSpec, WorkerHandle
from mcs.core.errors import DeployError


@dataclass
class FakeRuntime:
    name: str = "fake"
    fail_build: bool = False
    crash_on_start: bool = False
    artifacts: dict[str, BuildSpec] = field(default_factory=dict)
    running: dict[str, WorkerHandle] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    builds: int = 0
    specs: list[RunSpec] = field(default_factory=list)
    description: str = "fake (in memory)"
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    @staticmethod
    def worker_name(task_name: str, version: str, hostname: str) -> str:
        return f"mcs-{task_name}-{version[:12]}-{hostname}"

    def artifact_ref(self, task_name: str, version: str) -> str:
        return f"mcs-{task_name}:{version}"

    def build(self, spec: BuildSpec, progress=None) -> Artifact:
        ref = self.artifact_ref(spec.task_name, spec.version)
        if ref in self.artifacts:
            return Artifact(self.name, ref, ref, reused=True)
        if self.fail_build:
            raise DeployError("build failed: boom", step="build", build_log_tail="Step 3/7 : RUN false\nboom")
        self.builds += 1
        self.artifacts[ref] = spec
        return Artifact(self.name, ref, ref)

    def check(self) -> None:
        pass

    def prepare(self, progress=None) -> None:
        pass

    def start(self, spec: RunSpec) -> WorkerHandle:
        self.specs.append(spec)
        group, slot = spec.extra_labels.get(LABEL_GROUP, ""), int(spec.extra_labels.get(LABEL_SLOT, "0"))
        number = next(self._ids)
        # Like Docker's, a group's id is its slot-1 worker's name: here that worker's id.
        worker_id = group if slot == 1 else (f"{group}-{slot}" if group else f"c{number}")
        handle = WorkerHandle(
            self.name, worker_id, f"mcs-{spec.task_name}-{spec.version[:12]}", spec.hostname,
            spec.task_name, spec.queue, spec.version, spec.artifact.ref,
            group=group, slot=slot,
        )  # fmt: skip
        self.running[handle.id] = handle
        self.states[handle.id] = "EXITED" if self.crash_on_start else "RUNNING"
        return handle

    def state(self, handle: WorkerHandle) -> str:
        return self.states.get(handle.id, "MISSING") if handle.id in self.running else "MISSING"

    def logs(self, handle: WorkerHandle, tail_lines: int = 100) -> str:
        return "ImportError: No module named 'nope'\n" if self.crash_on_start else "celery@x ready.\n"

    def remove(self, handle: WorkerHandle, drain_s: float | None = None) -> None:
        self.running.pop(handle.id, None)

    def remove_artifact(self, artifact_ref: str) -> None:
        self.artifacts.pop(artifact_ref, None)

    def tidy(self) -> list[str]:
        return []

    def workers(self, task_name: str | None = None) -> list[WorkerHandle]:
        return [h for h in self.running.values() if task_name is None or h.task_name == task_name]
