"""Deploys for real: the deploy worker (started by its script), a Docker daemon, the MCP server over stdio.

Scenario of the issue: deploy a generated simple_add and call it; redeploy unchanged (no rebuild, same container);
redeploy changed (new code answers, old container gone); deploy code that fails to import (the old version keeps
answering, nothing left behind); concurrent deploys of one task; undeploy; every hardening setting; unsigned and
path-traversal messages pushed straight at the deploy queue write nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from mcs.core import protocol
from mcs.core.celery_app import create_celery_app
from mcs.core.settings import PROJECT_ROOT, Settings
from mcs.core.signing import deploy_secret, sign
from mcs.stack import process_env
from Redis.registry import TaskRegistry
from Redis.server import LocalRedisServer
from tests.helpers import TEST_LABEL, make_settings
from tests.mcp_clients import data, stdio_client

pytestmark = pytest.mark.docker

TASK = "simple_add"
QUEUE = "test_queue"
PARAMS = [
    {"name": "a", "type": "int", "required": True, "description": "first"},
    {"name": "b", "type": "int", "required": True, "description": "second"},
]


@pytest.fixture(scope="module")
def deploy_settings(redis_server: LocalRedisServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tmp = tmp_path_factory.mktemp("deploy")
    return make_settings(
        tmp,
        redis_port=redis_server.port,
        redis_socket=redis_server.unix_socket,
        metadata_db=3,
        metadata_prefix="mcs-deploy-test:",
        worker_labels={TEST_LABEL: "1"},
        health_timeout_s=90,
    )


@pytest.fixture(scope="module")
def deploy_worker(deploy_settings: Settings, docker_client) -> Iterator[subprocess.Popen]:
    env = process_env(deploy_settings, MCS_WORKER_LABELS=json.dumps({TEST_LABEL: "1"}), MCS_HEALTH_TIMEOUT_S="90")
    log = (deploy_settings.deployments_dir.parent / "deploy_worker.log").open("wb")
    proc = subprocess.Popen(
        [str(PROJECT_ROOT / "deploy_mcp" / "start_deploy_worker.sh")],
        cwd="/",  # the script must work from any directory
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    registry = TaskRegistry(deploy_settings)
    deadline = time.monotonic() + 60
    while not registry.client.exists(registry.keys.deploy_worker_alive()):
        assert proc.poll() is None, Path(log.name).read_text()[-3000:]
        assert time.monotonic() < deadline, "the deploy worker did not come up"
        time.sleep(0.1)
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    registry.client.flushdb()


def mcp(settings: Settings, *calls: tuple[str, dict[str, Any]]) -> list:
    """Run tool calls in order over one real stdio session."""

    async def run():
        async with stdio_client(settings, MCS_WORKER_LABELS=json.dumps({TEST_LABEL: "1"})) as client:
            return [await client.call_tool(name, args, read_timeout_seconds=600) for name, args in calls]

    return asyncio.run(run())


def generate(body: str, overwrite: bool = True, task: str = TASK) -> tuple[str, dict[str, Any]]:
    return (
        "generate_startMain_code",
        {
            "task_name": task,
            "description": "adds two numbers",
            "parameters": PARAMS,
            "function_body": body,
            "queue": QUEUE,
            "return_type": "int",
            "overwrite": overwrite,
        },
    )


def deploy(task: str = TASK) -> tuple[str, dict[str, Any]]:
    return ("deploy_task", {"task_name": task, "description": "adds two numbers", "parameters": PARAMS,
                            "queue": QUEUE, "category": "arithmetic", "return_type": "int"})  # fmt: skip


def trigger(a: int = 10, b: int = 20, task: str = TASK) -> tuple[str, dict[str, Any]]:
    return ("trigger_celery_task", {"task_name": task, "kwargs": {"a": a, "b": b}, "timeout_s": 30})


def ok(result) -> dict[str, Any]:
    body = data(result)
    assert not result.is_error, body
    return body


def images_of(client, task: str) -> list[str]:
    return [t for image in client.images.list(name=f"mcs-{task}") for t in image.tags]


def test_deploy_call_redeploy_fail_undeploy(deploy_settings: Settings, deploy_worker, docker_client) -> None:
    s = deploy_settings
    gen, first, called, listed, logs, again = mcp(
        s, generate("return a + b"), deploy(), trigger(), ("list_deployments", {}),
        ("get_task_logs", {"task_name": TASK, "tail_lines": 50}), deploy(),
    )  # fmt: skip
    ok(gen)
    first = ok(first)
    assert first["worker_status"] == "RUNNING" and first["runtime"] == "docker" and first["dockerfile"] == "rendered"
    assert first["docker_image"] == f"mcs-{TASK}:{first['version']}"
    assert ok(called)["result"] == 30
    [dep] = ok(listed)["deployments"]
    assert dep["worker_status"] == "RUNNING" and dep["version"] == first["version"]
    assert "ready" in ok(logs)["logs"]
    again = ok(again)
    assert again["reused"] is True and again["container_id"] == first["container_id"]
    assert again["timings_ms"]["total"] < 200, again["timings_ms"]

    _, changed, called = mcp(s, generate("return a + b + 1000"), deploy(), trigger())
    changed = ok(changed)
    assert changed["version"] != first["version"] and changed["container_id"] != first["container_id"]
    assert ok(called)["result"] == 1030
    deadline = time.monotonic() + 60  # the previous worker retires in the background, after the deploy answered
    while any(c.name == first["container_id"] for c in docker_client.containers.list(all=True)):  # its group
        assert time.monotonic() < deadline, "the previous worker was not retired"
        time.sleep(0.2)

    # Code that fails to import: the worker cannot start, so the deploy must fail and the old one keep serving.
    folder = s.generated_tasks_dir / f"{TASK}_{QUEUE}"
    app_file = folder / f"app_{QUEUE}.py"
    app_file.write_text("import module_that_does_not_exist_anywhere\n" + app_file.read_text())
    before = {c.name for c in docker_client.containers.list(all=True, filters={"label": f"mcs.task={TASK}"})}
    images_before = set(images_of(docker_client, TASK))
    failed, called = mcp(s, deploy(), trigger())
    assert failed.is_error
    body = data(failed)
    assert body["step"] == "health" and "module_that_does_not_exist_anywhere" in body["log_tail"]
    assert "keeps serving" in body["message"]
    assert ok(called)["result"] == 1030  # the previous version still answers
    after = {c.name for c in docker_client.containers.list(all=True, filters={"label": f"mcs.task={TASK}"})}
    assert after == before == {changed["container_id"]}  # the group's id: its slot-1 container's name
    assert set(images_of(docker_client, TASK)) == images_before
    versions = sorted(p.name for p in (s.deployments_dir / f"{TASK}_{QUEUE}").iterdir())
    assert changed["version"] in versions and len(versions) <= s.keep_versions
    assert not list((s.deployments_dir / ".staging").iterdir())

    undeployed, details, called = mcp(
        s, ("undeploy_task", {"task_name": TASK}), ("get_task_details", {"task_name": TASK}), trigger()
    )
    assert ok(undeployed)["task_name"] == TASK
    assert data(details)["error"] == "not_found" and data(called)["error"] == "not_found"
    assert docker_client.containers.list(all=True, filters={"label": f"mcs.task={TASK}"}) == []
    assert images_of(docker_client, TASK) == []
    assert not (s.deployments_dir / f"{TASK}_{QUEUE}").exists()
    broker = redis.Redis(port=s.redis_port, db=s.redis_broker_db)
    assert not broker.exists(QUEUE, f"_kombu.binding.{QUEUE}")


def test_worker_container_is_hardened(deploy_settings: Settings, deploy_worker, docker_client) -> None:
    task = "hardened_add"
    _, deployed, called = mcp(deploy_settings, generate("return a + b", task=task), deploy(task), trigger(task=task))
    container = docker_client.containers.get(ok(deployed)["container_id"])
    try:
        assert ok(called)["result"] == 30
        config, host = container.attrs["Config"], container.attrs["HostConfig"]
        assert config["User"] == "10001:10001"
        assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
        assert "no-new-privileges" in host["SecurityOpt"]
        assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
        assert host["Memory"] == host["MemorySwap"] == deploy_settings.worker_mem_limit_mb * 1024 * 1024
        assert host["NanoCpus"] == int(deploy_settings.worker_cpus * 1e9)
        assert host["PidsLimit"] == deploy_settings.worker_pids_limit
        assert host["Privileged"] is False
        assert host.get("PidMode") in ("", None) and host.get("IpcMode") in ("", "private", "shareable")
        assert host.get("UtsMode") in ("", None)
        assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}
        assert host["LogConfig"]["Config"].get("max-size") == "10m"
        assert host["Init"] is True
        # One mount only: the Redis socket's folder, read-only; and no network at all (confinement).
        (mount,) = container.attrs["Mounts"]
        assert mount["Destination"] == "/run/mcs-redis" and mount["RW"] is False and mount["Type"] == "bind"
        assert mount["Source"] == str(deploy_settings.redis_socket.parent) and not host.get("Binds")
        assert host["NetworkMode"] == "none"
        env = dict(e.split("=", 1) for e in config["Env"])
        assert env["REDIS_USERNAME"].startswith(f"mcs-t-{task}-") and env["MCS_KEY_PREFIX"].endswith(f"t:{task}:")
        assert config["Labels"]["mcs.task"] == task and config["Labels"][TEST_LABEL] == "1"
        # No secret in the image's layers or config: the Redis settings arrive as environment at start only.
        image_env = docker_client.images.get(config["Image"]).attrs["Config"]["Env"]
        assert not any(e.startswith("REDIS_") for e in image_env)
    finally:
        mcp(deploy_settings, ("undeploy_task", {"task_name": task}))


def test_concurrent_deploys_of_one_task(deploy_settings: Settings, deploy_worker, docker_client) -> None:
    task = "racy_add"
    mcp(deploy_settings, generate("return a + b", task=task))

    async def race():
        async with stdio_client(deploy_settings) as client:
            return await asyncio.gather(*[client.call_tool(*deploy(task), read_timeout_seconds=600) for _ in range(2)])

    try:
        results = asyncio.run(race())
        outcomes = sorted("ok" if not r.is_error else data(r)["error"] for r in results)
        assert outcomes in (["ok", "ok"], ["conflict", "ok"]), [data(r) for r in results]
        running = docker_client.containers.list(filters={"label": f"mcs.task={task}"})
        assert len(running) == 1
        [called] = mcp(deploy_settings, trigger(task=task))
        assert ok(called)["result"] == 30
    finally:
        mcp(deploy_settings, ("undeploy_task", {"task_name": task}))


def test_tasks_with_one_requirement_set_share_its_dependency_image(
    deploy_settings: Settings, deploy_worker, docker_client
) -> None:
    """Dependencies are installed once per requirement set: a second task with the same set and a code-only change
    build on the same dependency image (same id, its layers under theirs), and the wheelhouse is resolved once."""
    s, tasks = deploy_settings, ("deps_one", "deps_two")
    body = 'import six\nreturn a + b + int(six.__version__.split(".")[1])  # {}'  # six 1.16.0: + 16

    def gen(task: str, nonce: str) -> tuple[str, dict[str, Any]]:
        name, args = generate(body.format(nonce), task=task)
        return name, {**args, "queue": f"{task}_q", "requirements": ["six==1.16.0"]}

    def dep(task: str) -> tuple[str, dict[str, Any]]:
        return "deploy_task", {"task_name": task, "queue": f"{task}_q"}

    def deps_images() -> list[Any]:
        return docker_client.images.list(filters={"label": ["mcs.deps=1", f"{TEST_LABEL}=1"]})

    for image in deps_images():  # an earlier run's would make the first deploy a reuse
        docker_client.images.remove(image.id, force=True)
    try:
        first = ok(mcp(s, gen(tasks[0], "v1"), dep(tasks[0]))[1])
        [deps] = deps_images()
        results = mcp(
            s, gen(tasks[0], "v2"), dep(tasks[0]), gen(tasks[1], "v1"), dep(tasks[1]), trigger(task=tasks[0]),
            trigger(task=tasks[1]),
        )  # fmt: skip
        changed, second = ok(results[1]), ok(results[3])
        assert ok(results[4])["result"] == ok(results[5])["result"] == 46
        assert changed["version"] != first["version"]
        assert [image.id for image in deps_images()] == [deps.id]  # neither deploy made another one
        deps_layers = deps.attrs["RootFS"]["Layers"]
        for result in (changed, second):
            image = docker_client.images.get(result["docker_image"])
            assert image.attrs["RootFS"]["Layers"][: len(deps_layers)] == deps_layers
            assert image.labels["mcs.deps"] == "0" and image.labels["mcs.deps.key"] == deps.labels["mcs.deps.key"]
        sets = list((s.deployments_dir / ".wheelhouses" / "sets").glob("*.json"))
        assert len(sets) == 1, sets  # resolved once, in the deploy worker's data folder
    finally:
        mcp(s, *[("undeploy_task", {"task_name": task}) for task in tasks])
        for image in deps_images():
            docker_client.images.remove(image.id, force=True)


def raw_deploy(settings: Settings, message: Any) -> dict[str, Any]:
    """Push a deploy message at the deploy queue as anyone with broker access could."""
    app = create_celery_app(settings)
    return app.send_task(protocol.DEPLOY, kwargs={"message": message}, queue=settings.deploy_queue).get(timeout=60)


def payload(task: str, files: list[dict[str, str]]) -> dict[str, Any]:
    return {"task_name": task, "queue": QUEUE, "description": "x", "parameters": [], "files": files}


def test_unsigned_and_forged_messages_write_nothing(deploy_settings: Settings, deploy_worker) -> None:
    files = [{"path": f"app_{QUEUE}.py", "encoding": "utf-8", "content": "import os\nos.system('id')\n"}]
    unsigned = {"kind": "deploy", "payload": payload("evil_task", files), "issued_at": time.time(), "signature": "0"}
    forged = sign(b"not-the-secret" * 4, "deploy", payload("evil_task", files))
    for message in (payload("evil_task", files), unsigned, forged):
        result = raw_deploy(deploy_settings, message)
        assert result["success"] is False and result["error"] == "unauthorized", result
    assert not (deploy_settings.deployments_dir / f"evil_task_{QUEUE}").exists()
    assert TaskRegistry(deploy_settings).find("evil_task") is None


def test_path_traversal_file_name_is_rejected(deploy_settings: Settings, deploy_worker) -> None:
    target = deploy_settings.deployments_dir / "escaped.py"
    files = [
        {"path": f"app_{QUEUE}.py", "encoding": "utf-8", "content": "x = 1\n"},
        {"path": "../../escaped.py", "encoding": "utf-8", "content": "owned = True\n"},
    ]
    message = sign(deploy_secret(deploy_settings), "deploy", payload("traversal_task", files))
    result = raw_deploy(deploy_settings, message)
    assert result["success"] is False and result["error"] == "invalid_input" and "relative path" in result["message"]
    assert not target.exists() and not (deploy_settings.deployments_dir / f"traversal_task_{QUEUE}").exists()
