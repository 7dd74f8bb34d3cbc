"""A whole MCS for docker-tier tests: a Redis with an administrator's password and a unix socket (as the stack's),
the deploy worker from its script, and the MCP server over stdio for each batch of tool calls."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mcs.core.settings import PROJECT_ROOT, Settings
from mcs.stack import process_env
from Redis.deploy_state import DeployWorkerState
from Redis.server import LocalRedisServer
from tests.helpers import TEST_LABEL, make_settings
from tests.mcp_clients import data, stdio_client


@dataclass
class Stage:
    settings: Settings
    redis: LocalRedisServer
    admin_password: str
    worker: subprocess.Popen
    results: list[str] = field(default_factory=list)  # every tool result's JSON text, for the secret grep

    def mcp(self, *calls: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
        async def run() -> list[dict[str, Any]]:
            async with stdio_client(self.settings, MCS_WORKER_LABELS=json.dumps({TEST_LABEL: "1"})) as client:
                answers = []
                for name, args in calls:
                    result = await client.call_tool(name, args, read_timeout_seconds=600)
                    self.results.append(json.dumps(data(result), default=str))
                    answers.append(data(result))
                return answers

        return asyncio.run(run())

    def one(self, name: str, **args: Any) -> dict[str, Any]:
        return self.mcp((name, args))[0]


def _start_deploy_worker(settings: Settings, log: Path) -> subprocess.Popen:
    env = process_env(settings, MCS_WORKER_LABELS=json.dumps({TEST_LABEL: "1"}))
    proc = subprocess.Popen(
        [str(PROJECT_ROOT / "deploy_mcp" / "start_deploy_worker.sh")], cwd="/", env=env,
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    state = DeployWorkerState(settings)
    deadline = time.monotonic() + 60
    while not state.alive():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the deploy worker did not come up"
        time.sleep(0.1)
    return proc


@contextmanager
def open_stage(tmp_path_factory: pytest.TempPathFactory, **overrides: Any) -> Iterator[Stage]:
    tmp = tmp_path_factory.mktemp("stage")
    password = secrets.token_hex(24)
    redis_server = LocalRedisServer(
        tmp / "redis", password=password, persist=True, unix_socket=tmp_path_factory.mktemp("sock") / "redis.sock"
    ).start()
    values: dict[str, Any] = {
        "redis_port": redis_server.port, "redis_password": password, "redis_socket": redis_server.unix_socket,
        "metadata_prefix": f"mcs-stage-{secrets.token_hex(3)}:", "worker_labels": {TEST_LABEL: "1"},
        "health_timeout_s": 120,
    }  # fmt: skip
    settings = make_settings(tmp, **(values | overrides))
    worker = _start_deploy_worker(settings, tmp / "deploy_worker.log")
    stage = Stage(settings, redis_server, password, worker)
    try:
        yield stage
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        stage.redis.stop()
