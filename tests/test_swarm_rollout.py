"""A rolling redeploy on the swarm runtime loses no call: through the real Deployer, a task deployed with 2
replicas serves a steady stream of calls while a changed version replaces it; every call completes. A replica
killed mid-call loses none either: Swarm starts another in its slot, the watchdog gives the call back.

Marker ``swarm`` (a swarm manager and the registry, see ``tests/swarm_fixtures.py``), with the suite's own Redis
(workers reach it through its unix socket) and real Celery workers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from deploy_mcp.deployer import Deployer, registered_tasks
from deploy_mcp.swarm.runtime import SwarmRuntime
from deploy_mcp.watchdog import watch_workers
from mcs.codegen import generate_task_folder
from mcs.core.bundle import read_folder
from mcs.core.celery_app import PrefixedApps, create_celery_app, task_key_prefix
from mcs.core.settings import Settings
from Redis.registry import TaskRegistry
from tests.helpers import TEST_LABEL, wait_for
from tests.swarm_fixtures import swarm_client

__all__ = ["swarm_client"]  # the fixture, imported by name

pytestmark = pytest.mark.swarm
logger = logging.getLogger(__name__)

TASK = "swro_add"
QUEUE = "swro_q"
PARAMS = [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]


@pytest.fixture
def deployer(swarm_client: Any, settings: Settings) -> Iterator[Deployer]:
    s = settings.model_copy(update={"worker_labels": {TEST_LABEL: "1"}, "health_timeout_s": 90.0,
                                    "task_time_limit_s": 30})  # fmt: skip
    runtime = SwarmRuntime(s, swarm_client)
    deployer = Deployer(s, TaskRegistry(s), runtime, partial(registered_tasks, PrefixedApps(s)))
    yield deployer
    for handle in runtime.workers(TASK):
        with contextlib.suppress(Exception):
            runtime.remove(handle)


def request_for(
    settings: Settings, body: str, replicas: int, params: list[dict[str, Any]] = PARAMS, returns: str = "int"
) -> dict[str, Any]:
    generate_task_folder(
        settings, task_name=TASK, description="adds", parameters=params, function_body=body, queue=QUEUE,
        return_type=returns, overwrite=True,
    )  # fmt: skip
    files = read_folder(settings, settings.generated_tasks_dir / f"{TASK}_{QUEUE}")
    return {"task_name": TASK, "queue": QUEUE, "description": "adds", "parameters": params, "return_type": returns,
            "files": [f.model_dump() for f in files], "replicas": replicas}  # fmt: skip


class Caller(threading.Thread):
    """Sends a call every ``every_s`` (to the queue the registry names at that moment, as the MCP server does) and
    collects each result; one that fails or never comes is recorded as such."""

    def __init__(self, settings: Settings, every_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.settings, self.every_s = settings, every_s
        self.stop = threading.Event()
        self.pending: list[tuple[int, Any]] = []
        self.sent = 0

    def run(self) -> None:
        app = create_celery_app(self.settings, key_prefix=task_key_prefix(self.settings, TASK))
        registry = TaskRegistry(self.settings)
        while not self.stop.is_set():
            queue = registry.get(TASK).serve_queue
            self.pending.append((self.sent, app.send_task(f"mcp_app.{TASK}", kwargs={"a": self.sent, "b": 1},
                                                          queue=queue)))  # fmt: skip
            self.sent += 1
            time.sleep(self.every_s)

    def results(self, timeout_s: float) -> tuple[dict[int, int], dict[int, str]]:
        done, failed = {}, {}
        deadline = time.monotonic() + timeout_s
        for n, result in self.pending:
            try:
                done[n] = result.get(timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:
                failed[n] = f"{type(exc).__name__}: {exc}"
        return done, failed


def test_rolling_redeploy_loses_no_call(deployer: Deployer) -> None:
    s, runtime = deployer.settings, deployer.runtime
    started = time.monotonic()
    first = deployer.deploy(request_for(s, "return a + b", replicas=2))
    logger.info("first deploy: %.1f s %s", time.monotonic() - started, first.timings_ms)
    assert first.runtime == "swarm" and first.replicas == 2
    group = next(h for h in runtime.workers(TASK) if h.id == first.container_id)
    assert len([m for m in runtime.members(group) if m.state == "RUNNING"]) == 2

    caller = Caller(s)
    caller.start()
    try:
        wait_for(lambda: caller.sent >= 20, 30, "calls to the first version")
        started = time.monotonic()
        second = deployer.deploy(request_for(s, "return a + b + 1000", replicas=2))
        logger.info("redeploy: %.1f s %s", time.monotonic() - started, second.timings_ms)
        assert second.container_id != first.container_id and second.replicas == 2
        switched_at = caller.sent
        wait_for(lambda: caller.sent >= switched_at + 40, 30, "calls to the second version")
    finally:
        caller.stop.set()
        caller.join(10)
    done, failed = caller.results(timeout_s=120)
    assert not failed, f"{len(failed)} of {caller.sent} call(s) failed: {dict(list(failed.items())[:5])}"
    assert len(done) == caller.sent and caller.sent >= 60
    assert all(value in (n + 1, n + 1001) for n, value in done.items())
    assert all(done[n] == n + 1001 for n in range(switched_at, caller.sent))  # after the switch: the new version
    logger.info("%d calls, %d answered by the first version", caller.sent, sum(v == n + 1 for n, v in done.items()))
    # The previous version's service retires in the background (its replicas drain); the new one stays.
    wait_for(lambda: [h.id for h in runtime.workers(TASK)] == [second.container_id], 90, "the old service to go")
    deployer.undeploy(TASK)
    assert runtime.workers(TASK) == []


def test_killed_replica_loses_no_call(deployer: Deployer, swarm_client: Any) -> None:
    s, runtime = deployer.settings, deployer.runtime
    params = [{"name": "seconds", "type": "float"}]
    body = "import socket, time\ntime.sleep(seconds)\nreturn socket.gethostname()"
    deployed = deployer.deploy(request_for(s, body, replicas=2, params=params, returns="str"))
    group = next(h for h in runtime.workers(TASK) if h.id == deployed.container_id)
    app = create_celery_app(s, key_prefix=task_key_prefix(s, TASK))
    queue = TaskRegistry(s).get(TASK).serve_queue
    calls = [app.send_task(f"mcp_app.{TASK}", kwargs={"seconds": 4.0}, queue=queue) for _ in range(2)]
    wait_for(lambda: all(c.state == "STARTED" for c in calls), 30, "both calls to start")
    victim = runtime.members(group)[0]
    (container,) = swarm_client.containers.list(filters={"label": f"com.docker.swarm.task.id={victim.id}"})
    container.kill()  # mid-call

    def healed() -> bool:
        watch_workers(deployer)  # the deploy worker's watch round: gives the lost call back
        members = runtime.members(group)
        return (
            len(members) == 2
            and all(m.state == "RUNNING" for m in members)
            and victim.id not in {m.id for m in members}
        )

    wait_for(healed, 60, "the killed replica replaced", every_s=1.0)
    replaced = next(m for m in runtime.members(group) if m.slot == victim.slot)
    assert replaced.hostname == victim.hostname  # the same slot, the same Celery name
    ran_on = [c.get(timeout=90) for c in calls]  # both calls done: the killed one's was given back, and run again
    assert set(ran_on) <= {"r1", "r2"}, ran_on
    deployer.undeploy(TASK)
