"""A deploy worker killed in the middle of a deploy: the waiting deploy_task learns it within 30 s, the next deploy
worker removes the new worker nothing registered, and its lock does not hold the next deploy back for its TTL."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from mcs.codegen import generate_task_folder
from mcs.core.celery_app import create_celery_app
from mcs.core.errors import MCSError, ServiceUnavailable
from mcs.core.settings import Settings
from mcs.deploy_client import DeployClient
from mcs.stack import Stack
from Redis.deploy_state import DeployWorkerState

pytestmark = pytest.mark.integration

TASK, QUEUE = "slowpoke", "slow_q"
PARAMS = [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]


def _folder(settings: Settings, slow_start_s: float) -> Path:
    result = generate_task_folder(
        settings, task_name=TASK, description="adds", parameters=PARAMS, function_body="return a + b", queue=QUEUE,
        return_type="int", overwrite=True,
    )  # fmt: skip
    app = Path(result.folder) / f"app_{QUEUE}.py"
    if slow_start_s:  # the worker takes this long to answer: the deploy sits in its health step
        app.write_text(f"import time as _t\n_t.sleep({slow_start_s})\n" + app.read_text())
    return Path(result.folder)


def _deploy(client: DeployClient) -> dict:
    return client.deploy(task_name=TASK, description="adds", parameters=PARAMS, queue=QUEUE, category="general",
                         return_type="int", code_folder_path=None)  # fmt: skip


def test_a_deploy_worker_killed_mid_deploy_is_noticed_and_leaves_nothing_behind(settings: Settings) -> None:
    s = settings.model_copy(update={"worker_runtime": "process", "health_timeout_s": 60.0})
    client = DeployClient(s, DeployWorkerState(s), create_celery_app(s))
    first = Stack(s, say=lambda m: None)
    first.start_deploy_worker(s.state_dir / "first.log")
    outcome: dict = {}
    _folder(s, slow_start_s=20)

    def deploy() -> None:
        try:
            outcome["result"] = _deploy(client)
        except MCSError as exc:
            outcome["error"] = exc
        outcome["at"] = time.monotonic()

    waiting = threading.Thread(target=deploy)
    waiting.start()
    from deploy_mcp.process_runtime import ProcessRuntime

    runtime = ProcessRuntime(s)
    deadline = time.monotonic() + 30
    while not runtime.workers(TASK):  # the new worker has started: the deploy is in its health step
        assert time.monotonic() < deadline and waiting.is_alive(), outcome
        time.sleep(0.1)
    os.killpg(first.deploy_worker.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    first.deploy_worker.wait(10)
    waiting.join(60)
    assert isinstance(outcome.get("error"), ServiceUnavailable), outcome
    assert "stopped" in outcome["error"].message and outcome["at"] - killed_at < 30
    orphan = runtime.workers(TASK)
    assert orphan  # the unregistered worker the dead deploy worker left running

    second = Stack(s, say=lambda m: None)
    try:
        second.start_deploy_worker(s.state_dir / "second.log")
        deadline = time.monotonic() + 30
        while runtime.workers(TASK):  # swept at start
            assert time.monotonic() < deadline, runtime.workers(TASK)
            time.sleep(0.2)
        _folder(s, slow_start_s=0)
        started = time.monotonic()
        deployed = _deploy(client)  # the dead holder's lock does not make it wait for its 15 min TTL
        assert deployed["success"] and time.monotonic() - started < 60
        assert [h.group for h in runtime.workers(TASK)] == [deployed["container_id"]]  # the one group's worker
    finally:
        for handle in runtime.workers():
            runtime.remove(handle)
        second.stop()
