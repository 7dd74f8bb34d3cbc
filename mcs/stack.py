"""Start and stop what MCS needs around the MCP server: Redis (embedded when none is configured), the deploy worker
and the dashboard.

``python -m mcs.stack up`` (``make up``) starts them in the background, records their pids under ``.mcs/run/``,
prints the dashboard's address and the ``claude_desktop_config.json`` block; ``python -m mcs.stack down``
(``make down``) stops exactly those pids. ``mcs.demo`` uses the same pieces in the foreground. Progress and
problems go to stderr; the config block to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from mcs.core.errors import MCSError, ServiceUnavailable
from mcs.core.processes import is_running, start_time, stop_group
from mcs.core.secret_files import read_or_create_secret
from mcs.core.settings import PROJECT_ROOT, Settings, load_settings
from Redis.connection import redis_answers
from Redis.deploy_state import DeployWorkerState
from Redis.server import MAX_SOCKET_PATH, LocalRedisServer

log = logging.getLogger(__name__)

SERVER_SCRIPT = PROJECT_ROOT / "mcp_server.py"


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a child process (MCP server, deploy worker) these very settings: every field,
    under its environment variable, so the child sees what its parent sees whatever source each value came from."""
    env = {"MCS_ENV_FILE": os.devnull, "MCS_REDIS_CONFIG_FILE": os.devnull + ".absent"}  # no second source
    env.update(settings.to_environment())
    env.update(extra)
    return env


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Stack:
    """Redis (used or embedded) plus a deploy worker, for one settings object."""

    settings: Settings
    say: Any = field(default=lambda msg: print(msg, file=sys.stderr))
    redis_server: LocalRedisServer | None = None
    deploy_worker: subprocess.Popen | None = None
    dashboard: subprocess.Popen | None = None
    redis_note: str = ""
    runtime_note: str = ""

    def start_redis(self) -> Settings:
        """Use the configured Redis (it must answer), or one answering on localhost, or start an embedded one."""
        s = self.settings
        data_dir = s.state_dir / "redis"
        configured = {"redis_host", "redis_port"} & s.model_fields_set
        if redis_answers(s):
            self.redis_note = f"Redis at {s.redis_location} ({'configured' if configured else 'found on localhost'})"
            return s
        if configured:
            raise ServiceUnavailable(
                f"Redis at {s.redis_location} is configured but does not answer: start it, or unset "
                "REDIS_HOST/REDIS_PORT to let MCS start an embedded one",
                service="redis",
            )
        # The default port when it is free, so the Claude Desktop block stays the same from one `make up` to the next.
        port = s.redis_port if port_is_free(s.redis_port) else 0
        # An administrator's password of its own (a worker must not connect as the default user), kept in a 0600
        # file that the MCP server reads; and a unix socket, the only way confined workers reach Redis.
        password = read_or_create_secret(self.password_file)
        self.redis_server = LocalRedisServer(
            data_dir,
            port=port,
            password=password,
            persist=True,
            server=s.local_redis_server,
            unix_socket=socket_path(s),
        ).start()
        self.settings = s.model_copy(
            update={
                "redis_host": "127.0.0.1",
                "redis_port": self.redis_server.port,
                "redis_password": SecretStr(password),
                "redis_socket": self.redis_server.unix_socket,
            }
        )
        self.redis_note = (
            f"embedded Redis ({self.redis_server.kind}) on 127.0.0.1:{self.redis_server.port} and "
            f"{self.redis_server.unix_socket}, data in {data_dir}"
        )
        return self.settings

    @property
    def password_file(self) -> Path:
        return self.settings.state_dir / "redis-password"

    def choose_runtime(self, process_without_docker: bool = False) -> Settings:
        """Let the deploy side choose and prepare its runtime (Docker, building the base image when missing); the
        deploy worker is then started with exactly that runtime. Without a Docker daemon, ``auto`` is an error;
        ``process_without_docker`` (the demo) then chooses the process runtime explicitly, and says so."""
        s = self.settings
        if s.worker_runtime in ("auto", "docker"):
            self.say(f"  checking the worker runtime (base image {s.worker_base_image}: built once, about a minute)")
        try:
            answer = self._prepare_runtime(s)
        except MCSError as exc:
            if not (process_without_docker and s.worker_runtime == "auto" and exc.details.get("service") == "docker"):
                raise
            self.say("  no Docker daemon answers: this run CHOOSES the process runtime (MCS_WORKER_RUNTIME=process):")
            self.say("  task code runs on this host WITHOUT isolation; start dockerd for confined workers")
            s = s.model_copy(update={"worker_runtime": "process"})
            answer = self._prepare_runtime(s)
        self.settings = s.model_copy(update={"worker_runtime": answer["runtime"]})
        self.runtime_note = answer["description"] + (": chosen explicitly" if answer["runtime"] == "process" else "")
        return self.settings

    def _prepare_runtime(self, s: Settings) -> dict[str, Any]:
        env = process_env(s)
        done = subprocess.run(
            [sys.executable, "-m", "deploy_mcp.runtimes", "prepare"], cwd=PROJECT_ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=None, text=True, check=False,
        )  # fmt: skip
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            why = f"exit {done.returncode}: {done.stdout[-500:]}"
            raise MCSError(f"preparing the worker runtime failed ({why})") from None
        if done.returncode != 0:
            raise MCSError.from_dict(answer)
        return answer

    def start_deploy_worker(self, log_path: Path, timeout_s: float = 60.0) -> int:
        env = process_env(self.settings)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            self.deploy_worker = subprocess.Popen(
                [sys.executable, "-m", "deploy_mcp"], cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=out, start_new_session=True,
            )  # fmt: skip
        state = DeployWorkerState(self.settings)
        deadline = time.monotonic() + timeout_s
        while not state.alive():
            if self.deploy_worker.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise ServiceUnavailable(f"the deploy worker did not start; its log ends with:\n{tail}")
            time.sleep(0.1)
        return self.deploy_worker.pid

    def start_dashboard(self, log_path: Path, timeout_s: float = 30.0) -> tuple[int, str] | None:
        """Start the dashboard (``python -m mcs.dashboard``) with these settings; (pid, address) once it answers, or
        None when it could not (its port taken, ...): the stack runs without it, and says why."""
        s = self.settings
        url = f"http://{s.dashboard_host}:{s.dashboard_port}/"
        if s.dashboard_host in ("127.0.0.1", "localhost") and not port_is_free(s.dashboard_port):
            self.say(
                f"  the dashboard's port {s.dashboard_port} is taken: set MCS_DASHBOARD_PORT, then `make dashboard`"
            )
            return None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            self.dashboard = subprocess.Popen(
                [sys.executable, "-m", "mcs.dashboard"], cwd=PROJECT_ROOT, env=process_env(s),
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not _answers(url + "healthz"):
            if self.dashboard.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-1000:]
                stop_group(self.dashboard.pid, child=self.dashboard)
                self.dashboard = None
                self.say(f"  the dashboard did not start; its log ends with:\n{tail}")
                return None
            time.sleep(0.1)
        return self.dashboard.pid, url

    def stop(self) -> None:
        if self.dashboard is not None:
            stop_group(self.dashboard.pid, child=self.dashboard)
            self.dashboard = None
        if self.deploy_worker is not None:
            stop_group(self.deploy_worker.pid, child=self.deploy_worker)
            self.deploy_worker = None
        if self.redis_server is not None:
            self.redis_server.stop()
            self.redis_server = None


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (our own loopback address)
            return response.status == 200
    except OSError:
        return False


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The whole environment of a child process of MCS: this process's, without any REDIS_* or MCS_* variable of
    its own, plus these settings (``child_env``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "MCS_"))}
    return env | child_env(settings, **extra)


def socket_path(settings: Settings) -> Path:
    """The local Redis's unix socket: in the state folder, or (a path too long for a socket) under /tmp."""
    path = settings.state_dir / "redis-socket" / "redis.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(settings.state_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"mcs-redis-{digest}" / "redis.sock"


def claude_desktop_config(settings: Settings, password_file: Path | None = None) -> dict[str, Any]:
    """The block for claude_desktop_config.json: absolute paths, and the environment this stack uses."""
    wanted = ("MCS_DEPLOY_SECRET_FILE", "MCS_REDIS_SOCKET")
    env = {k: v for k, v in child_env(settings).items() if k.startswith("REDIS_") or k in wanted}
    env.pop("REDIS_PASSWORD", None)  # never printed: add it yourself if your Redis has one
    if password_file is not None:  # the local Redis's password: the server reads it from this 0600 file
        env["MCS_REDIS_PASSWORD_FILE"] = str(password_file)
    return {"mcpServers": {"mcs": {"command": str(Path(sys.executable)), "args": [str(SERVER_SCRIPT)], "env": env}}}


def run_dir(settings: Settings) -> Path:
    return settings.state_dir / "run"


def up(settings: Settings) -> int:
    stack = Stack(settings)
    state_file = run_dir(settings) / "stack.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
        worker = state["deploy_worker"]
        if is_running(worker["pid"], worker["started"]):
            if state.get("dashboard"):
                stack.say(f"dashboard: {state['dashboard']['url']}")
            stack.say("MCS is already up (make down first); its Claude Desktop block:")
            print(json.dumps(state["claude"], indent=2))
            return 0
        stack.say(f"found a stale {state_file} (its deploy worker is gone): starting afresh")
        down(settings)
    run_dir(settings).mkdir(parents=True, exist_ok=True)
    try:
        stack.start_redis()
        stack.say(f"[1/4] {stack.redis_note}")
        stack.choose_runtime()
        stack.say(f"[2/4] worker runtime: {stack.runtime_note}")
        log_path = run_dir(settings) / "deploy_worker.log"
        pid = stack.start_deploy_worker(log_path)
    except BaseException:
        stack.stop()  # nothing half-started is left behind
        raise
    stack.say(f"[3/4] deploy worker started (pid {pid}, log {log_path})")
    dashboard = stack.start_dashboard(run_dir(settings) / "dashboard.log")
    if dashboard is not None:
        token = "" if settings.dashboard_token else " (read-only: set MCS_DASHBOARD_TOKEN to act from it)"
        stack.say(f"[4/4] dashboard: {dashboard[1]}{token}, Prometheus metrics at {dashboard[1]}metrics")
    else:
        stack.say("[4/4] dashboard not started (see above); `make dashboard` starts it by itself")
    config = claude_desktop_config(stack.settings, stack.password_file if stack.redis_server else None)
    redis_pid = stack.redis_server.pid if stack.redis_server else None
    state = {
        "deploy_worker": {"pid": pid, "started": start_time(pid)},
        "redis": {"pid": redis_pid, "started": start_time(redis_pid)} if redis_pid else None,
        "dashboard": {"pid": dashboard[0], "started": start_time(dashboard[0]), "url": dashboard[1]}
        if dashboard
        else None,
        "claude": config,
    }
    state_file.write_text(json.dumps(state, indent=2))
    stack.say("MCS is up. Add this to claude_desktop_config.json (then restart Claude Desktop); `make down` stops it:")
    print(json.dumps(config, indent=2))
    return 0


def down(settings: Settings) -> int:
    """Stop exactly the processes `up` recorded (pid and start time), then forget them."""
    path = run_dir(settings) / "stack.json"
    if not path.exists():
        print(f"MCS is not up (no {path})", file=sys.stderr)
        return 0
    state = json.loads(path.read_text())
    for name in ("dashboard", "deploy_worker", "redis"):
        proc = state.get(name)
        if proc:
            stopped = stop_group(proc["pid"], proc["started"])
            print(f"{name}: {'stopped' if stopped else 'was not running'} (pid {proc['pid']})", file=sys.stderr)
    path.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcs.stack", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("up", "down"))
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    try:
        settings = load_settings()
        return up(settings) if args.command == "up" else down(settings)
    except MCSError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


def up_main() -> int:
    """``mcs-up``."""
    return main(["up"])


def down_main() -> int:
    """``mcs-down``."""
    return main(["down"])


if __name__ == "__main__":
    sys.exit(main())
