"""Run a real ``celery worker`` subprocess for a test and stop it by its pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from mcs.core.settings import PROJECT_ROOT


class WorkerProcess:
    def __init__(
        self,
        app: str,
        queue: str,
        redis_port: int,
        log_path: Path,
        cwd: Path = PROJECT_ROOT,
        pool: str = "threads",
        concurrency: int = 8,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        # Slot 1's name of a group, as MCS names a deployed version's first worker (test-...@localhost the group).
        self.hostname = f"test-{queue}-{uuid.uuid4().hex[:8]}-r1@localhost"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "MCS_"))}
        env.update(
            {
                "REDIS_HOST": "127.0.0.1",
                "REDIS_PORT": str(redis_port),
                "MCS_REDIS_CONFIG_FILE": str(log_path.parent / "no_redis_config.py"),
                "MCS_ENV_FILE": os.devnull,
                "PYTHONPATH": str(PROJECT_ROOT),
                **(extra_env or {}),
            }
        )
        self.command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "-Q",
            queue,
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--hostname",
            self.hostname,
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        self.cwd = cwd
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self, ping_app, timeout_s: float = 30.0) -> WorkerProcess:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-2000:]}")
            if ping_app.control.ping(destination=[self.hostname], timeout=0.5):
                return self
        self.stop()
        raise RuntimeError(f"worker did not answer within {timeout_s} s: {self.log_path.read_text()[-2000:]}")

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout_s)
