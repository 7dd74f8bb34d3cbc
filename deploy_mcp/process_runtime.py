"""The local process runtime: each task version's worker is a ``celery worker`` subprocess in its own virtualenv.

Used where no Docker daemon answers (MCS_WORKER_RUNTIME=auto) or when chosen (``process``). It is reported plainly
as "process (no container isolation)": the worker runs as the deploy worker's user, with the host's file system and
network. What it keeps: its own virtualenv per version (the task's pinned requirements installed into it; celery and
redis come from MCS's own environment through a .pth file), a minimal environment (only the Redis settings, never
MCS's other variables), its own process group, a log file, and a record file that lets a restarted deploy worker
find and stop it. Processes are stopped by pid (their process group), never by name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

from deploy_mcp.host_tools import HOST_CA_BUNDLE
from deploy_mcp.runtime import LABEL_GROUP, LABEL_SLOT, Artifact, BuildSpec, Progress, RunSpec, WorkerHandle
from mcs.core.errors import DeployError
from mcs.core.processes import is_running, start_time, stop_group
from mcs.core.settings import Settings
from mcs.core.worker_image import worker_command

log = logging.getLogger(__name__)

READY = "mcs-ready"
MAX_LOG_CHARS = 20_000
STOP_TIMEOUT_S = 10.0
PIP_TIMEOUT_S = 600


class ProcessRuntime:
    name = "process"
    description = "process (no container isolation)"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.deployments_dir / ".process"
        self._children: dict[int, subprocess.Popen] = {}

    def check(self) -> None:
        """Local processes always work."""

    def prepare(self, progress: Progress | None = None) -> None:
        """Nothing to prepare: each version's virtualenv is made by build()."""

    # -- artefacts: one virtualenv per task version -----------------------------------------------------------

    def artifact_ref(self, task_name: str, version: str) -> str:
        return str(self.root / "venvs" / f"{task_name}-{version}")

    def build(self, spec: BuildSpec, progress: Progress | None = None) -> Artifact:
        venv = Path(self.artifact_ref(spec.task_name, spec.version))
        if (venv / READY).is_file():
            return Artifact(self.name, str(venv), str(venv), reused=True)
        staging = venv.with_name(f".{venv.name}-{uuid.uuid4().hex[:8]}")
        staging.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._run([sys.executable, "-m", "venv", "--without-pip", str(staging)], "venv")
            purelib = _venv_purelib(staging)
            # celery and redis come from MCS's own environment, after the venv's own packages on sys.path.
            (purelib / "mcs_base.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
            output = ""
            if spec.requirements:
                if progress:
                    progress(f"installing {len(spec.requirements)} requirement(s) into the worker's virtualenv")
                output = self._run(
                    [sys.executable, "-m", "pip", "--python", str(staging / "bin" / "python"), "install",
                     "--no-input", "--disable-pip-version-check", "--only-binary=:all:", *spec.requirements],
                    "requirements",
                )  # fmt: skip
            (staging / READY).write_text(spec.version + "\n")
            if venv.exists():  # a half-built leftover without READY
                shutil.rmtree(venv)
            staging.rename(venv)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return Artifact(self.name, str(venv), str(venv), build_log_tail=output[-3000:])

    def _run(self, command: list[str], step: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "REDIS_", "MCS_"))}
        env["PIP_CERT"] = os.environ.get("PIP_CERT", str(HOST_CA_BUNDLE))
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise DeployError(f"{step} took longer than {PIP_TIMEOUT_S} s", step="build") from None
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise DeployError(
                f"building the worker's virtualenv failed at {step} (exit {done.returncode})",
                step="build",
                build_log_tail=output[-3000:],
            )
        return output

    def remove_artifact(self, artifact_ref: str) -> None:
        path = Path(artifact_ref)
        if path.parent == self.root / "venvs":
            shutil.rmtree(path, ignore_errors=True)

    def tidy(self) -> list[str]:
        return []  # each version's environment is its own artefact: nothing is shared between them

    # -- workers: one process group each ----------------------------------------------------------------------

    def start(self, spec: RunSpec) -> WorkerHandle:
        venv = Path(spec.artifact.ref)
        folder = self.settings.deployments_dir / f"{spec.task_name}_{spec.queue}" / spec.version
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{spec.task_name}-{spec.version}-{uuid.uuid4().hex[:6]}.log"
        env = {
            "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            **spec.environment,
        }
        if spec.redis_socket is not None:
            env["REDIS_SOCKET"] = str(spec.redis_socket)
        worker = worker_command(spec.queue, spec.hostname, spec.serve_queue, spec.concurrency)
        command = [str(venv / "bin" / "python"), "-m", *worker]
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                command, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        self._children[proc.pid] = proc
        handle = WorkerHandle(
            runtime=self.name,
            id=f"pid-{proc.pid}",
            name=f"mcs-{spec.task_name}-{spec.version[:12]}",
            hostname=spec.hostname,
            task_name=spec.task_name,
            queue=spec.queue,
            version=spec.version,
            artifact_ref=str(venv),
            group=spec.extra_labels.get(LABEL_GROUP, ""),
            slot=int(spec.extra_labels.get(LABEL_SLOT, "0")),
        )
        record = {
            **handle.__dict__,
            "pid": proc.pid,
            "started": start_time(proc.pid),
            "log": str(log_path),
            "labels": spec.labels,
        }
        self._record_path(handle).parent.mkdir(parents=True, exist_ok=True)
        self._record_path(handle).write_text(json.dumps(record))
        return handle

    def _record_path(self, handle: WorkerHandle) -> Path:
        return self.root / "workers" / f"{handle.id}.json"

    def _record(self, handle: WorkerHandle) -> dict | None:
        try:
            return json.loads(self._record_path(handle).read_text())
        except (OSError, ValueError):
            return None

    def state(self, handle: WorkerHandle) -> str:
        record = self._record(handle)
        if record is None:
            return "MISSING"
        return "RUNNING" if self._alive(record) else "EXITED"

    def _alive(self, record: dict) -> bool:
        # The same start time means the pid is still our worker, not a reused one (Celery rewrites its cmdline).
        return is_running(record["pid"], record["started"], self._children.get(record["pid"]))

    def logs(self, handle: WorkerHandle, tail_lines: int = 100) -> str:
        record = self._record(handle)
        if record is None:
            return ""
        try:
            text = Path(record["log"]).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-tail_lines:])[-MAX_LOG_CHARS:]

    def remove(self, handle: WorkerHandle, drain_s: float | None = None) -> None:
        record = self._record(handle)
        if record is None:
            return
        pid = record["pid"]
        timeout = drain_s or STOP_TIMEOUT_S
        stop_group(pid, record["started"], timeout, self._children.pop(pid, None), leader_only=True)
        self._record_path(handle).unlink(missing_ok=True)
        Path(record["log"]).unlink(missing_ok=True)

    def workers(self, task_name: str | None = None) -> list[WorkerHandle]:
        handles = []
        for path in sorted((self.root / "workers").glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if task_name is None or record["task_name"] == task_name:
                fields = WorkerHandle.__dataclass_fields__
                handles.append(WorkerHandle(**{k: v for k, v in record.items() if k in fields}))
        return handles


def _venv_purelib(venv: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    path = venv / "lib" / version / "site-packages"
    path.mkdir(parents=True, exist_ok=True)
    return path
