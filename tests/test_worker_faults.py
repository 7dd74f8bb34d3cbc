"""Faults of task workers: a call that kills its worker process is delivered again, at most MCS_MAX_DELIVERIES
times, then fails with worker_lost (it does not kill workers for ever), and the task keeps serving other calls."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from functools import partial

import pytest

from deploy_mcp.deployer import Deployer, registered_tasks
from deploy_mcp.process_runtime import ProcessRuntime
from mcs.codegen import generate_task_folder
from mcs.core.bundle import read_folder
from mcs.core.celery_app import PrefixedApps, create_celery_app, task_key_prefix
from mcs.core.errors import WorkerLost
from mcs.core.settings import Settings
from mcs.invoker import TaskInvoker
from Redis.registry import TaskRegistry

pytestmark = pytest.mark.integration

TASK, QUEUE = "fragile", "fragile_q"
PARAMS = [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]
# 666 kills the pool process that runs the call, as the kernel's OOM killer does to a call over the memory limit.
BODY = "import os, signal\nif a == 666:\n    os.kill(os.getpid(), signal.SIGKILL)\nreturn a + b"


@pytest.fixture
def deployed(settings: Settings) -> Iterator[Settings]:
    runtime = ProcessRuntime(settings)
    deployer = Deployer(settings, TaskRegistry(settings), runtime, partial(registered_tasks, PrefixedApps(settings)))
    generate_task_folder(settings, task_name=TASK, description="fragile", parameters=PARAMS, function_body=BODY,
                         queue=QUEUE, return_type="int", overwrite=True)  # fmt: skip
    files = read_folder(settings, settings.generated_tasks_dir / f"{TASK}_{QUEUE}")
    deployer.deploy({"task_name": TASK, "queue": QUEUE, "parameters": PARAMS, "return_type": "int",
                     "files": [f.model_dump() for f in files]})  # fmt: skip
    try:
        yield settings
    finally:
        for handle in runtime.workers():
            with contextlib.suppress(Exception):
                runtime.remove(handle)


def test_a_call_that_kills_its_worker_ends_with_worker_lost_and_the_task_keeps_serving(deployed: Settings) -> None:
    s = deployed
    invoker = TaskInvoker(s, TaskRegistry(s), create_celery_app(s))
    started = time.monotonic()
    with pytest.raises(WorkerLost) as lost:
        invoker.trigger(TASK, kwargs={"a": 666, "b": 0}, timeout_s=60)
    assert time.monotonic() - started < 60
    assert lost.value.code == "worker_lost" and f"each of its {s.max_deliveries} deliveries" in lost.value.message
    assert lost.value.details["exception_type"] == "WorkerLost"
    app = create_celery_app(s, key_prefix=task_key_prefix(s, TASK))
    deliveries = app.backend.client.get(task_key_prefix(s, TASK) + "mcs-deliveries:" + lost.value.details["task_id"])
    assert int(deliveries) == s.max_deliveries + 1  # killed twice, refused the third time without running
    assert invoker.trigger(TASK, kwargs={"a": 2, "b": 3}, timeout_s=30).result == 5  # still serving
    status = invoker.status(invoker.send(TASK, kwargs={"a": 1, "b": 1}).task_id)
    assert status.status in ("PENDING", "STARTED", "SUCCESS")


@pytest.mark.unit
def test_a_gone_worker_is_replaced_and_its_calls_given_back(tmp_path) -> None:
    import json

    from deploy_mcp.watchdog import watch_workers
    from Redis.issued import IssuedTasks
    from tests.test_deployer import Env

    env = Env(tmp_path)
    first = env.deployer.deploy(env.request())
    prefix = env.registry.get("simple_add").deployment.key_prefix
    issued = IssuedTasks(env.settings, env.registry.client)
    issued.remember("id-1", "simple_add", "test_queue", prefix)
    message = {"body": "e30=", "headers": {"id": "id-1"}, "properties": {"delivery_info": {}, "delivery_tag": "t1"}}
    env.broker.hset(f"{prefix}unacked", "t1", json.dumps([message, "test_queue", "test_queue"]))
    env.broker.zadd(f"{prefix}unacked_index", {"t1": 1.0})

    assert watch_workers(env.deployer) == []  # a running worker is left alone
    env.runtime.states[first.container_id] = "EXITED"  # killed: Docker will not restart it
    starts = len(env.runtime.specs)
    assert watch_workers(env.deployer) == ["simple_add"]
    record = env.registry.get("simple_add")
    # The group stays, its worker started again in the same slot under the same name.
    assert record.deployment.container_id == first.container_id and list(env.runtime.running) == [first.container_id]
    assert len(env.runtime.specs) == starts + 1 and env.runtime.states[first.container_id] == "RUNNING"
    assert env.runtime.specs[-1].hostname == env.runtime.specs[starts - 1].hostname
    assert record.deployment.acl_user == env.runtime.specs[-1].environment["REDIS_USERNAME"]  # its own user again
    assert env.broker.hlen(f"{prefix}unacked") == 0 and env.broker.zcard(f"{prefix}unacked_index") == 0
    (requeued,) = env.broker.lrange(f"{prefix}{record.serve_queue}", 0, -1)  # onto the version's own queue
    assert json.loads(requeued)["headers"] == {"id": "id-1", "redelivered": True}
    assert issued.find("id-1")["redelivered"] == 1 and issued.find("id-1")["worker_lost_at"] > 0
    assert watch_workers(env.deployer) == []


@pytest.fixture(scope="module")
def stage(docker_client, tmp_path_factory: pytest.TempPathFactory):
    from tests.deploy_stage import open_stage

    with open_stage(tmp_path_factory, watch_every_s=1.0) as opened:
        yield opened


@pytest.mark.docker
def test_a_killed_worker_loses_no_call_and_is_replaced(stage, docker_client) -> None:
    params = [{"name": "seconds", "type": "float"}]
    generated, deployed = stage.mcp(  # both must succeed
        ("generate_startMain_code", {"task_name": "sturdy", "description": "sleeps", "parameters": params,
                                     "function_body": "import time\ntime.sleep(seconds)\nreturn seconds",
                                     "queue": "sturdy_q", "overwrite": True}),
        ("deploy_task", {"task_name": "sturdy", "description": "sleeps", "parameters": params, "queue": "sturdy_q"}),
    )  # fmt: skip
    assert generated["success"] and deployed["success"], deployed
    sent = stage.one("send_celery_task", task_name="sturdy", kwargs={"seconds": 5})
    deadline = time.monotonic() + 30
    while stage.one("get_celery_result", task_id=sent["task_id"])["status"] != "STARTED":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)
    killed = docker_client.containers.get(deployed["container_id"])  # the group's slot-1 worker
    killed.kill()  # a manual stop: Docker does not restart it
    killed_at = time.monotonic()
    said_lost = False
    while (status := stage.one("get_celery_result", task_id=sent["task_id"]))["status"] != "SUCCESS":
        assert status["success"], status
        said_lost = said_lost or bool(status.get("worker_lost_at"))
        assert time.monotonic() - killed_at < stage.settings.task_time_limit_s + 60, status
        time.sleep(0.5)
    assert status["result"] == 5
    assert said_lost, "get_celery_result never said the worker was lost"
    record = stage.one("get_task_details", task_name="sturdy")["task"]
    replaced = docker_client.containers.get(record["deployment"]["container_id"])  # the same slot, started again
    assert replaced.id != killed.id and replaced.status == "running"
    again = stage.one("trigger_celery_task", task_name="sturdy", kwargs={"seconds": 0})
    assert again.get("result") == 0, again


@pytest.mark.docker
def test_a_replica_killed_mid_call_loses_no_call_and_is_replaced(stage, docker_client) -> None:
    """Two replicas: the one running a call is killed; the call completes (given back: the other replica holds its
    own calls, which are not given back twice), and the killed replica's slot runs again under the same name."""
    from deploy_mcp.health import held_calls
    from Redis.issued import IssuedTasks

    params = [{"name": "seconds", "type": "float"}]
    body = "import os, socket, time\ntime.sleep(seconds)\nreturn socket.gethostname()"
    generated, deployed = stage.mcp(  # both must succeed
        ("generate_startMain_code", {"task_name": "twins", "description": "sleeps", "parameters": params,
                                     "function_body": body, "queue": "twins_q", "return_type": "str",
                                     "overwrite": True}),
        ("deploy_task", {"task_name": "twins", "queue": "twins_q", "replicas": 2}),
    )  # fmt: skip
    assert generated["success"] and deployed["success"] and deployed["replicas"] == 2, deployed
    (listed,) = [d for d in stage.one("list_deployments")["deployments"] if d["task_name"] == "twins"]
    assert [w["state"] for w in listed["workers"]] == ["RUNNING", "RUNNING"]
    by_host = {w["hostname"]: w["id"] for w in listed["workers"]}
    doomed = stage.one("send_celery_task", task_name="twins", kwargs={"seconds": 4})["task_id"]
    other = stage.one("send_celery_task", task_name="twins", kwargs={"seconds": 4})["task_id"]
    prefix = task_key_prefix(stage.settings, "twins")
    apps, deadline = PrefixedApps(stage.settings), time.monotonic() + 30
    while True:  # which replica runs which call
        holders = {h: held_calls(apps, [h], prefix) or set() for h in by_host}
        if all(any(i in held for held in holders.values()) for i in (doomed, other)):
            break
        assert time.monotonic() < deadline, holders
        time.sleep(0.2)
    victim = next(h for h, held in holders.items() if doomed in held)
    docker_client.containers.get(by_host[victim]).kill()
    for task_id in (doomed, other):
        deadline = time.monotonic() + 120
        while (status := stage.one("get_celery_result", task_id=task_id, wait_s=20))["status"] != "SUCCESS":
            assert status["success"] and time.monotonic() < deadline, status
    issued = IssuedTasks(stage.settings, TaskRegistry(stage.settings).client)
    assert issued.find(doomed).get("redelivered", 0) >= 1  # given back once its worker died
    assert not issued.find(other).get("redelivered")  # the live replica's call was not given back (no double run)
    deadline = time.monotonic() + 60
    while True:
        (listed,) = [d for d in stage.one("list_deployments")["deployments"] if d["task_name"] == "twins"]
        if listed["replicas_running"] == 2 and by_host[victim] not in {w["id"] for w in listed["workers"]}:
            break
        assert time.monotonic() < deadline, listed
        time.sleep(0.5)
    assert {w["hostname"] for w in listed["workers"]} == set(by_host)  # the slot runs again under its name
    assert stage.one("undeploy_task", task_name="twins")["success"]


@pytest.mark.docker
def test_a_call_over_the_memory_limit_ends_with_worker_lost(stage) -> None:
    params = [{"name": "mib", "type": "int"}]
    body = "block = bytearray(mib * 1024 * 1024)\nreturn len(block) // (1024 * 1024)"
    generated, deployed = stage.mcp(  # both must succeed
        ("generate_startMain_code", {"task_name": "hungry", "description": "allocates", "parameters": params,
                                     "function_body": body, "queue": "hungry_q", "overwrite": True}),
        ("deploy_task", {"task_name": "hungry", "description": "allocates", "parameters": params, "queue": "hungry_q"}),
    )  # fmt: skip
    assert generated["success"] and deployed["success"], deployed
    started = time.monotonic()
    lost = stage.one("trigger_celery_task", task_name="hungry", kwargs={"mib": 1024}, timeout_s=120)
    assert lost["success"] is False and lost["error"] == "worker_lost", lost
    assert "memory limit of 256 MiB" in lost["message"] and time.monotonic() - started < 120
    assert stage.one("trigger_celery_task", task_name="hungry", kwargs={"mib": 8})["result"] == 8  # still serving


@pytest.mark.unit
def test_at_start_workers_no_registration_points_at_are_removed(tmp_path) -> None:
    from deploy_mcp.runtime import Artifact
    from deploy_mcp.watchdog import sweep_unregistered
    from tests.test_deployer import Env

    env = Env(tmp_path)
    serving = env.deployer.deploy(env.request())
    record = env.registry.get("simple_add")
    options = env.deployer.options_of(record.deployment)
    artifact = Artifact("fake", record.deployment.image, record.deployment.image, reused=True)
    # A deploy worker that died after starting a new version, before registering it: the worker runs, unregistered.
    orphan = env.runtime.start(env.deployer.run_spec("simple_add", "test_queue", "f" * 16, artifact, None, options))
    never_registered = env.settings.deployments_dir / "simple_add_test_queue" / ("f" * 16)
    never_registered.mkdir()
    env.runtime.artifacts[env.runtime.artifact_ref("simple_add", "f" * 16)] = None
    assert sweep_unregistered(env.deployer) == [orphan.name, f"mcs-simple_add:{'f' * 16}"]
    assert list(env.runtime.running) == [serving.container_id] and not never_registered.exists()
    assert list(env.runtime.artifacts) == [f"mcs-simple_add:{serving.version}"]  # the registered version is kept


LEAVER = (
    "import subprocess\n"
    "out = subprocess.run(['sh', '-c', 'sleep 300 >/dev/null 2>&1 & echo $!'], capture_output=True, text=True)\n"
    "return int(out.stdout.strip())"
)


def test_what_a_call_started_does_not_outlive_it(settings: Settings) -> None:
    import os

    runtime = ProcessRuntime(settings)
    deployer = Deployer(settings, TaskRegistry(settings), runtime, partial(registered_tasks, PrefixedApps(settings)))
    generate_task_folder(settings, task_name="leaver", description="leaves a process", parameters=[],
                         function_body=LEAVER, queue="leaver_q", return_type="int", overwrite=True)  # fmt: skip
    files = read_folder(settings, settings.generated_tasks_dir / "leaver_leaver_q")
    deployer.deploy({"task_name": "leaver", "queue": "leaver_q", "return_type": "int",
                     "files": [f.model_dump() for f in files]})  # fmt: skip
    try:
        invoker = TaskInvoker(settings, TaskRegistry(settings), create_celery_app(settings))
        pid = invoker.trigger("leaver", timeout_s=30).result  # a double-forked `sleep 300`
        deadline = time.monotonic() + 5
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, f"process {pid} outlived the call that started it"
            time.sleep(0.1)
    finally:
        for handle in runtime.workers():
            with contextlib.suppress(Exception):
                runtime.remove(handle)
