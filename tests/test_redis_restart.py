"""Redis restarts are absorbed: calls sent while Redis is down for 1.6 s are all sent (bounded retries) and all
completed, and nothing registered or issued is lost (AOF)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mcs.core.celery_app import create_celery_app
from mcs.invoker import TaskInvoker
from Redis.registry import TaskRegistry
from Redis.server import LocalRedisServer
from tests.celery_worker import WorkerProcess
from tests.helpers import make_settings

pytestmark = pytest.mark.integration


def test_sends_ride_out_a_redis_restart_and_every_call_completes(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    server = LocalRedisServer(data, persist=True).start()
    settings = make_settings(tmp_path, redis_port=server.port)
    worker = WorkerProcess("tests.fixture_tasks", "mcs_test", server.port, tmp_path / "worker.log")
    servers = [server]
    try:
        worker.start(create_celery_app(settings))
        registry = TaskRegistry(settings)
        registry.register(name="test_echo", parameters=[{"name": "value", "required": False}], queue="mcs_test")
        invoker = TaskInvoker(settings, registry, create_celery_app(settings))

        def bounce() -> None:
            time.sleep(0.5)
            servers[0].stop()
            time.sleep(1.6)
            servers.append(LocalRedisServer(data, port=settings.redis_port, persist=True).start())

        thread = threading.Thread(target=bounce)
        thread.start()
        sent, failed = [], []
        for i in range(60):  # paced over 3 s: the outage falls in the middle
            try:
                sent.append((i, invoker.send("test_echo", args=[i]).task_id))
            except Exception as exc:
                failed.append(f"{i}: {type(exc).__name__}: {exc}")
            time.sleep(0.05)
        thread.join()
        assert failed == [] and len(sent) == 60
        deadline = time.monotonic() + 60
        for i, task_id in sent:
            while (status := invoker.status(task_id)).status != "SUCCESS":
                assert time.monotonic() < deadline, (i, status)
                time.sleep(0.1)
            assert status.result == i
        assert registry.get("test_echo").queue == "mcs_test"
    finally:
        worker.stop()
        for running in servers:
            running.stop()
