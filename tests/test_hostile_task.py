"""A hostile task, deployed through the tools like any other, tries every row of confinement.md's table; each is
asserted denied, and a victim task is asserted unaffected. Under runc and under gVisor.

The Redis here has an administrator's password and a unix socket (as the stack's embedded one), the deploy worker
runs from its script, and the MCP server over stdio: the real thing end to end. Also: no administrator secret in
workers' environments, images, logs, generated files or tool results; Redis users re-created after a Redis restart
that lost them.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mcs.core.celery_app import task_key_prefix
from Redis.server import LocalRedisServer
from tests.deploy_stage import Stage, open_stage
from tests.helpers import REQUIRE_DOCKER, TEST_LABEL

pytestmark = pytest.mark.docker

ADD = [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]
ATTACK_PARAMS = [
    {"name": "victim_id", "type": "str"},
    {"name": "victim_prefix", "type": "str"},
    {"name": "victim_queue", "type": "str"},
    {"name": "meta_prefix", "type": "str"},
    {"name": "meta_db", "type": "int"},
    {"name": "own_prefix", "type": "str"},
    {"name": "tcp_port", "type": "int"},
]
VICTIM_BODY = "import time\ntime.sleep(a if a < 10 else 0)\nreturn a + b"
# Each attempt's outcome: "ALLOWED", or "denied: <why>". Only the task's own key must be ALLOWED.
ATTACK_BODY = """
import os, socket
import redis

out = {"environment": sorted(os.environ.items())}
path = os.environ.get("REDIS_SOCKET")
user, password = os.environ.get("REDIS_USERNAME"), os.environ.get("REDIS_PASSWORD")


def client(db):
    if path:
        return redis.Redis(unix_socket_path=path, username=user, password=password, db=db, socket_timeout=5)
    host, port = os.environ["REDIS_HOST"], int(os.environ["REDIS_PORT"])
    return redis.Redis(host=host, port=port, username=user, password=password, db=db, socket_timeout=5)


broker, backend, meta = client(0), client(1), client(meta_db)


def attempt(name, action):
    try:
        action()
        out[name] = "ALLOWED"
    except Exception as exc:
        out[name] = "denied: " + type(exc).__name__ + ": " + str(exc)[:160]


attempt("own key", lambda: broker.set(own_prefix + "probe", "1"))
attempt("CONFIG GET requirepass", lambda: broker.config_get("requirepass"))
attempt("MONITOR", lambda: broker.execute_command("MONITOR"))
attempt("KEYS *", lambda: broker.keys("*"))
attempt("read the registry", lambda: meta.get(meta_prefix + "task:" + victim_queue.removesuffix("_q")))
attempt("rewrite the victim's record", lambda: meta.set(meta_prefix + "task:" + victim_queue.removesuffix("_q"), "{}"))
attempt("read the victim's result", lambda: backend.get(victim_prefix + "celery-task-meta-" + victim_id))
attempt("forge the victim's result", lambda: backend.set(victim_prefix + "celery-task-meta-" + victim_id, "{}"))
attempt("LPUSH onto the victim's queue", lambda: broker.lpush(victim_prefix + victim_queue, "{}"))
attempt("LPUSH onto an unprefixed queue", lambda: broker.lpush(victim_queue, "{}"))
attempt("read unacked (deploy bundles)", lambda: broker.hgetall("unacked"))
attempt("read the victim's unacked", lambda: broker.hgetall(victim_prefix + "unacked"))
attempt("remote control: the deploy worker", lambda: broker.publish("/0.celery.pidbox", "{}"))
attempt("remote control: the victim", lambda: broker.publish(victim_prefix + "/0.celery.pidbox", "{}"))
attempt("the default user", lambda: redis.Redis(unix_socket_path=path, socket_timeout=5).ping() if path else
        redis.Redis(host=os.environ["REDIS_HOST"], port=int(os.environ["REDIS_PORT"]), socket_timeout=5).ping())
attempt("TCP to a host service", lambda: socket.create_connection(("127.0.0.1", tcp_port), timeout=3).close())
attempt("write outside /tmp (/app)", lambda: open("/app/planted.py", "w").write("x"))
attempt("write outside /tmp (/etc)", lambda: open("/etc/planted", "w").write("x"))
return out
"""


@pytest.fixture(scope="module")
def stage(docker_client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    with open_stage(tmp_path_factory, acl_reconcile_every_s=1.0) as opened:
        yield opened


@pytest.fixture
def host_service() -> Iterator[int]:
    """A TCP service on the host's loopback, which no confined worker may reach."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def _require_gvisor(docker_client) -> None:
    if "runsc" not in (docker_client.info().get("Runtimes") or {}):
        reason = "dockerd has no runsc runtime (.ci/run registers it; see the README's gVisor section)"
        if REQUIRE_DOCKER:
            pytest.fail(reason + " [MCS_REQUIRE_DOCKER=1]")
        pytest.skip(reason)


def _deploy(stage: Stage, task: str, body: str, params: list[dict], sandbox: str) -> dict[str, Any]:
    queue = f"{task}_q"
    generated, deployed = stage.mcp(
        ("generate_startMain_code", {"task_name": task, "description": task, "parameters": params,
                                     "function_body": body, "queue": queue, "overwrite": True}),
        ("deploy_task", {"task_name": task, "description": task, "parameters": params, "queue": queue,
                         "sandbox": sandbox}),
    )  # fmt: skip
    assert generated["success"], generated
    assert deployed["success"], deployed
    return deployed


@pytest.mark.parametrize("sandbox", ["runc", "gvisor"])
def test_a_hostile_task_is_denied_and_its_victim_unaffected(
    stage: Stage, sandbox: str, host_service: int, docker_client
) -> None:
    if sandbox == "gvisor":
        _require_gvisor(docker_client)
    victim, attacker = f"victim_{sandbox}", f"attacker_{sandbox}"
    deployed = _deploy(stage, victim, VICTIM_BODY, ADD, sandbox)
    assert deployed["isolation"] == ("gvisor" if sandbox == "gvisor" else "container")
    assert deployed["network"] == "none" and deployed["warnings"] == []
    _deploy(stage, attacker, ATTACK_BODY, ATTACK_PARAMS, sandbox)
    record_before = stage.one("get_task_details", task_name=victim)["task"]

    running = stage.one("send_celery_task", task_name=victim, kwargs={"a": 3, "b": 1})  # 3 s: still running
    s = stage.settings
    attack = stage.one(
        "trigger_celery_task", task_name=attacker, timeout_s=120,
        kwargs={"victim_id": running["task_id"], "victim_prefix": task_key_prefix(s, victim),
                "victim_queue": f"{victim}_q", "meta_prefix": s.metadata_prefix, "meta_db": s.metadata_db,
                "own_prefix": task_key_prefix(s, attacker), "tcp_port": host_service},
    )  # fmt: skip
    assert attack["success"], attack
    outcome = attack["result"]
    environment = dict(outcome.pop("environment"))
    assert stage.admin_password not in json.dumps(environment)
    assert environment["REDIS_USERNAME"].startswith(f"mcs-t-{attacker}-")
    assert outcome.pop("own key") == "ALLOWED"  # the connection works: every denial below is a real one
    allowed = {action: result for action, result in outcome.items() if not result.startswith("denied")}
    assert allowed == {}, allowed
    assert len(outcome) == 17

    # The victim: its running call's real result, its next calls, its record, and the deploy worker, all intact.
    deadline = time.monotonic() + 30
    while (status := stage.one("get_celery_result", task_id=running["task_id"]))["status"] != "SUCCESS":
        assert status["success"] and time.monotonic() < deadline, status
        time.sleep(0.3)
    assert status["result"] == 4
    assert stage.one("trigger_celery_task", task_name=victim, kwargs={"a": 20, "b": 22})["result"] == 42
    assert stage.one("get_task_details", task_name=victim)["task"] == record_before
    listed = stage.one("list_deployments")
    assert {d["task_name"]: d["worker_status"] for d in listed["deployments"]}[victim] == "RUNNING"


def test_no_administrator_secret_in_workers_images_logs_files_or_results(stage: Stage, docker_client) -> None:
    _deploy(stage, "secretless", "return a + b", ADD, "runc")
    assert stage.one("trigger_celery_task", task_name="secretless", kwargs={"a": 1, "b": 2})["result"] == 3
    stage.one("get_task_logs", task_name="secretless")
    needle = stage.admin_password
    containers = docker_client.containers.list(all=True, filters={"label": [TEST_LABEL, "mcs.managed=1"]})
    assert containers
    for container in containers:
        assert needle not in json.dumps(container.attrs), container.name
        assert needle not in container.logs().decode("utf-8", "replace"), container.name
        image = docker_client.images.get(container.attrs["Image"])
        assert needle not in json.dumps(image.attrs) and needle not in json.dumps(image.history())
        for chunk in image.save(chunk_size=1 << 20):
            assert needle.encode() not in chunk
    for path in stage.settings.generated_tasks_dir.rglob("*"):
        if path.is_file():
            assert needle not in path.read_text(errors="replace"), path
    assert stage.results and all(needle not in text for text in stage.results)


def test_task_users_come_back_after_redis_restarts_without_them(stage: Stage) -> None:
    _deploy(stage, "survivor", "return a * b", ADD, "runc")
    assert stage.one("trigger_celery_task", task_name="survivor", kwargs={"a": 6, "b": 7})["result"] == 42
    port, data_dir, sock = stage.redis.port, stage.redis.data_dir, stage.redis.unix_socket
    stage.redis.stop()  # no ACL file: the task users are gone when it comes back; the registry is in the AOF
    stage.redis = LocalRedisServer(
        data_dir, port=port, password=stage.admin_password, persist=True, unix_socket=sock
    ).start()
    deadline = time.monotonic() + 90
    while True:  # the deploy worker re-creates the user, the worker reconnects with its own password
        answer = stage.one("trigger_celery_task", task_name="survivor", kwargs={"a": 6, "b": 7}, timeout_s=10)
        if answer.get("result") == 42:
            break
        assert time.monotonic() < deadline, answer
        time.sleep(1)
    assert stage.one("get_task_details", task_name="survivor")["task"]["deployment"]["acl_user"]
    redeployed = _deploy(stage, "survivor", "return a * b + 1", ADD, "runc")  # the first deploy after the restart
    assert redeployed["success"] and not redeployed["reused"]
    assert stage.one("trigger_celery_task", task_name="survivor", kwargs={"a": 6, "b": 7})["result"] == 43
