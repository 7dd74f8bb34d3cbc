"""One contract for every worker runtime (process, docker): deploy, call, redeploy, a failure, undeploy.

The same scenario runs against each runtime through the real Deployer, a real Redis and real Celery workers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from deploy_mcp.deployer import Deployer, registered_tasks
from deploy_mcp.process_runtime import ProcessRuntime
from mcs.codegen import generate_task_folder
from mcs.core.bundle import read_folder
from mcs.core.celery_app import PrefixedApps, create_celery_app, task_key_prefix
from mcs.core.errors import DeployError
from mcs.core.settings import Settings
from Redis.registry import TaskRegistry
from tests.helpers import TEST_LABEL
from tests.swarm_fixtures import swarm_client

__all__ = ["swarm_client"]  # the swarm tier's fixture, imported by name

QUEUE = "contract_q"
PARAMS = [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]


def make_runtime(kind: str, settings: Settings, request: pytest.FixtureRequest):
    if kind == "process":
        return ProcessRuntime(settings)
    if kind == "swarm":
        request.getfixturevalue("swarm_client")  # skips, or fails under MCS_REQUIRE_SWARM=1, without a swarm
        from deploy_mcp.swarm.runtime import SwarmRuntime

        return SwarmRuntime(settings)
    request.getfixturevalue("docker_client")  # skips, or fails under MCS_REQUIRE_DOCKER=1, without a daemon
    from deploy_mcp.docker.runtime import DockerRuntime

    return DockerRuntime(settings)


@pytest.fixture(
    params=[
        pytest.param("process", marks=pytest.mark.integration),
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("swarm", marks=pytest.mark.swarm),
    ]
)
def deployer(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Deployer]:
    settings = settings.model_copy(update={"worker_labels": {TEST_LABEL: "1"}, "health_timeout_s": 90.0})
    runtime = make_runtime(request.param, settings, request)
    deployer = Deployer(settings, TaskRegistry(settings), runtime, partial(registered_tasks, PrefixedApps(settings)))
    yield deployer
    for handle in deployer.runtime.workers():
        with contextlib.suppress(Exception):
            deployer.runtime.remove(handle)


def request_for(settings: Settings, task: str, body: str) -> dict:
    generate_task_folder(
        settings, task_name=task, description="adds", parameters=PARAMS, function_body=body, queue=QUEUE,
        return_type="int", overwrite=True,
    )  # fmt: skip
    files = read_folder(settings, settings.generated_tasks_dir / f"{task}_{QUEUE}")
    return {"task_name": task, "queue": QUEUE, "description": "adds", "parameters": PARAMS, "return_type": "int",
            "files": [f.model_dump() for f in files]}  # fmt: skip


def workers_settle(runtime, task: str, timeout_s: float = 60.0) -> list[str]:
    """The task's workers once the previous version's background retirement is over (one worker left)."""
    deadline = time.monotonic() + timeout_s
    while len(ids := [h.id for h in runtime.workers(task)]) > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    return ids


def call(settings: Settings, task: str, a: int = 10, b: int = 20):
    app = create_celery_app(settings, key_prefix=task_key_prefix(settings, task))  # the deployed task's keys
    queue = TaskRegistry(settings).get(task).serve_queue  # the serving version's own queue
    return app.send_task(f"mcp_app.{task}", kwargs={"a": a, "b": b}, queue=queue).get(timeout=60)


def test_deploy_call_redeploy_fail_undeploy(deployer: Deployer) -> None:
    s, runtime = deployer.settings, deployer.runtime  # a group runtime: one handle per version's workers
    task = f"contract_{runtime.name}"
    first = deployer.deploy(request_for(s, task, "return a + b"))
    assert first.runtime == runtime.name and first.worker_status == "RUNNING"
    assert call(s, task) == 30

    again = deployer.deploy(request_for(s, task, "return a + b"))
    assert again.reused and again.container_id == first.container_id

    changed = deployer.deploy(request_for(s, task, "return a + b + 1000"))
    assert changed.container_id != first.container_id and call(s, task) == 1030
    assert workers_settle(runtime, task) == [changed.container_id]  # the old one retires in the background

    broken = request_for(s, task, "return a - b")
    for f in broken["files"]:
        if f["path"] == f"app_{QUEUE}.py":
            f["content"] = "import module_that_does_not_exist_anywhere\n" + f["content"]
    with pytest.raises(DeployError) as info:
        deployer.deploy(broken)
    assert "module_that_does_not_exist_anywhere" in info.value.details.get("log_tail", "")
    assert call(s, task) == 1030  # the previous version keeps serving
    assert [h.id for h in runtime.workers(task)] == [changed.container_id]
    task_dir = s.deployments_dir / f"{task}_{QUEUE}"
    assert sorted(p.name for p in task_dir.iterdir()) == sorted({first.version, changed.version})

    deployer.undeploy(task)
    assert runtime.workers(task) == []
    assert not task_dir.exists()
    assert TaskRegistry(s).find(task) is None
    for version in (first.version, changed.version):
        ref = runtime.artifact_ref(task, version)
        if runtime.name == "process":
            assert not Path(ref).exists()


WHO = (
    "import os, socket, time\n"
    "started = time.time()\n"
    "time.sleep(seconds)\n"
    "return {'worker': f'{socket.gethostname()}:{os.getppid()}', 'started': started, 'ended': time.time()}"
)


def test_replicas_serve_in_parallel_scale_park_and_wake(deployer: Deployer) -> None:
    s, runtime = deployer.settings, deployer.runtime
    task, params = f"replicas_{runtime.name}", [{"name": "seconds", "type": "float"}]
    generate_task_folder(
        s, task_name=task, description="says who ran it", parameters=params, function_body=WHO, queue=QUEUE,
        return_type="dict", overwrite=True,
    )  # fmt: skip
    files = [f.model_dump() for f in read_folder(s, s.generated_tasks_dir / f"{task}_{QUEUE}")]
    deployed = deployer.deploy({"task_name": task, "queue": QUEUE, "files": files, "replicas": 2, "concurrency": 2})
    assert (deployed.replicas, deployed.concurrency) == (2, 2)
    group = next(h for h in runtime.workers(task) if h.id == deployed.container_id)
    assert [(m.slot, m.state) for m in runtime.members(group)] == [(1, "RUNNING"), (2, "RUNNING")]

    app = create_celery_app(s, key_prefix=task_key_prefix(s, task))
    queue = TaskRegistry(s).get(task).serve_queue
    calls = [app.send_task(f"mcp_app.{task}", kwargs={"seconds": 2.0}, queue=queue) for _ in range(4)]
    results = [c.get(timeout=60) for c in calls]
    assert len({r["worker"] for r in results}) >= 2, results  # more than one worker process served them
    # All four ran at the same time: each started before any of them ended (capacity 2 x 2 = 4).
    assert max(r["started"] for r in results) < min(r["ended"] for r in results), results

    scaled = deployer.scale(task, 3)
    assert (scaled.previous, scaled.replicas, scaled.replicas_running) == (2, 3, 3)
    assert len({w.hostname for w in scaled.workers}) == 3
    (listed,) = [d for d in deployer.deployments() if d.task_name == task]
    assert (listed.replicas, listed.replicas_running) == (3, 3) and listed.scaling[0].to_replicas == 3

    parked = deployer.scale(task, 0)
    assert parked.replicas == 0
    deadline = time.monotonic() + 60
    while runtime.members(group) and time.monotonic() < deadline:  # the extra workers stop in the background
        time.sleep(0.3)
    assert runtime.members(group) == []  # parked: no worker at all
    waiting = app.send_task(f"mcp_app.{task}", kwargs={"seconds": 0.0}, queue=queue)
    woke = deployer.wake(task)  # what the MCP server asks when it sends a parked task's call
    assert woke.replicas == 1 and woke.replicas_running == 1
    assert waiting.get(timeout=60)["ended"] > 0  # the call that waited while parked is served
    deployer.undeploy(task)
    assert runtime.workers(task) == []
