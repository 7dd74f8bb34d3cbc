"""The deployment folders of a task: ``deployments/{task}_{queue}/{version}``, written through a staging folder
and one rename (no reader sees a half-written version), pruned to ``keep_versions``, removed with their artefacts."""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from pathlib import Path

from deploy_mcp.runtime import WorkerRuntime
from mcs.core.bundle import BundleFile, write_bundle
from mcs.core.settings import Settings

STAGING = ".staging"
REGISTERED = ".registered"  # deployments/.registered/{task}_{queue}/{version}: versions that were ever registered


class VersionFolders:
    def __init__(self, settings: Settings, runtime: WorkerRuntime) -> None:
        self.settings = settings
        self.runtime = runtime

    def task_dir(self, task: str, queue: str) -> Path:
        return self.settings.deployments_dir / f"{task}_{queue}"

    def place(self, files: list[BundleFile], task: str, queue: str, version: str) -> tuple[Path, bool]:
        """The version's folder; written through a staging folder and one rename. Returns (folder, created)."""
        folder = self.task_dir(task, queue) / version
        if folder.is_dir():  # content-addressed: an existing folder of this version holds these very files
            return folder, False
        staging = self.settings.deployments_dir / STAGING / f"{task}-{uuid.uuid4().hex}"
        staging.parent.mkdir(parents=True, exist_ok=True)
        self.sweep_staging(staging.parent)
        try:
            write_bundle(files, staging)
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return folder, True

    def sweep_staging(self, staging_root: Path) -> None:
        """Staging folders older than the lock TTL belong to a deploy worker that died mid-write: remove them."""
        cutoff = time.time() - self.settings.deploy_lock_ttl_s
        for leftover in staging_root.iterdir():
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover, ignore_errors=True)

    def prune(self, task: str, queue: str, keep: str, also_keep: set[str | None] = frozenset()) -> None:
        """Keep ``keep`` (serving), ``also_keep`` (a gradual release's) and the newest others up to keep_versions."""
        task_dir = self.task_dir(task, queue)
        versions = sorted(
            (p for p in task_dir.iterdir() if p.is_dir() and p.name != keep and p.name not in also_keep),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in versions[max(0, self.settings.keep_versions - 1) :]:
            self.remove_version(task, old)

    def remove_versions(self, task: str, queue: str, keep: str | None) -> list[str]:
        task_dir = self.task_dir(task, queue)
        removed = []
        if task_dir.is_dir():
            for folder in task_dir.iterdir():
                if folder.is_dir() and folder.name != keep:
                    removed.append(self.remove_version(task, folder))
            if keep is None:
                shutil.rmtree(task_dir, ignore_errors=True)
        return removed

    def remove_version(self, task: str, folder: Path) -> str:
        ref = self.runtime.artifact_ref(task, folder.name)
        self.runtime.remove_artifact(ref)
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._marker(folder.parent.name, folder.name).unlink()
        return ref

    def _marker(self, task_dir_name: str, version: str) -> Path:
        return self.settings.deployments_dir / REGISTERED / task_dir_name / version

    def mark_registered(self, task: str, queue: str, version: str) -> None:
        """This version served once (it may be kept for later); a folder without the mark was never registered."""
        marker = self._marker(f"{task}_{queue}", version)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    def remove_unregistered(self, task: str, queue: str, current: str | None) -> list[str]:
        """Remove the versions (folder and artefact) of deploys that died before registering them."""
        task_dir = self.task_dir(task, queue)
        removed = []
        for folder in task_dir.iterdir() if task_dir.is_dir() else ():
            if folder.is_dir() and folder.name != current and not self._marker(task_dir.name, folder.name).exists():
                removed.append(self.remove_version(task, folder))
        return removed
