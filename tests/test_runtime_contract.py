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

QUEUE = "contract_q"
PARAMS = [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]


def make_runtime(kind: str, settings: Settings, request: pytest.FixtureRequest):
    if kind == "process":
        return ProcessRuntime(settings)
    request.getfixturevalue("docker_client")  # skips, or fails under MCS_REQUIRE_DOCKER=1, without a daemon
    from deploy_mcp.docker.runtime import DockerRuntime

    return DockerRuntime(settings)


@pytest.fixture(
    params=[pytest.param("process", marks=pytest.mark.integration), pytest.param("docker", marks=pytest.mark.docker)]
)
def deployer(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Deployer]:
    settings = settings.model_copy(update={"worker_labels": {TEST_LABEL: "1"}, "health_timeout_s": 90.0})
    runtime = make_runtime(request.param, settings, request)
    deployer = Deployer(settings, TaskRegistry(settings), runtime, partial(registered_tasks, PrefixedApps(settings)))
    yield deployer
    for handle in runtime.workers():
        with contextlib.suppress(Exception):
            runtime.remove(handle)


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
    s, runtime = deployer.settings, deployer.runtime
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
