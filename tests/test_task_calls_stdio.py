"""Task calls over a real stdio client, a real Redis and real Celery workers: long-poll of several ids, cancel,
typed arguments, and a deployed task nobody serves."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from mcs.core.celery_app import create_celery_app, task_key_prefix
from mcs.core.settings import Settings
from mcs.core.worker_image import replica_hostname
from Redis.registry import TaskRegistry
from Redis.server import LocalRedisServer
from tests.celery_worker import WorkerProcess
from tests.helpers import make_settings
from tests.mcp_clients import data, stdio_client

pytestmark = pytest.mark.integration

QUEUE = "mcs_calls"
PARAMS = {
    "test_add": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}],
    "test_slow": [{"name": "seconds", "type": "float", "required": False}],
    "test_fail": [{"name": "message", "type": "str"}],
    "test_echo": [{"name": "value", "type": "Any", "required": False}],
}


def _worker(redis_server: LocalRedisServer, log_dir, queue: str, **options: Any) -> WorkerProcess:
    app = create_celery_app(make_settings(log_dir, redis_port=redis_server.port))
    worker = WorkerProcess(
        "tests.fixture_tasks", queue, redis_server.port, log_dir / f"{queue}.log",
        extra_env={"MCS_TEST_QUEUE": queue}, **options,
    )  # fmt: skip
    return worker.start(app)


@pytest.fixture(scope="module")
def calls_worker(redis_server: LocalRedisServer, tmp_path_factory: pytest.TempPathFactory):
    worker = _worker(redis_server, tmp_path_factory.mktemp("calls-worker"), QUEUE)
    yield worker
    worker.stop()


@pytest.fixture
def registry(settings: Settings, calls_worker: WorkerProcess) -> TaskRegistry:
    registry = TaskRegistry(settings)
    for name, params in PARAMS.items():
        registry.register(name=name, description=f"fixture task {name}", parameters=params, queue=QUEUE)
    return registry


def session(settings: Settings, script) -> Any:
    async def run():
        async with stdio_client(settings) as client:
            return await script(client)

    return asyncio.run(run())


async def timed(client, tool: str, arguments: dict[str, Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await client.call_tool(tool, arguments)
    return result, time.perf_counter() - started


async def send(client, task_name: str, **kwargs: Any) -> str:
    sent = data(await client.call_tool("send_celery_task", {"task_name": task_name, "kwargs": kwargs}))
    assert sent.get("status") == "SENT", sent
    return sent["task_id"]


def test_several_ids_return_as_soon_as_all_are_ready(settings: Settings, registry: TaskRegistry) -> None:
    async def script(client):
        ids = [await send(client, "test_add", a=i, b=1) for i in range(3)]
        ids.append(await send(client, "test_slow", seconds=0.3))
        ids.append(await send(client, "test_fail", message="listed boom"))
        return ids, await timed(client, "get_celery_result", {"task_ids": ids, "wait_s": 20})

    ids, (result, elapsed) = session(settings, script)
    body = data(result)
    assert not result.is_error, body
    assert elapsed < 5, f"waited {elapsed:.2f} s for tasks that take 0.3 s (wait_s 20)"
    assert body["ready"] is True and body["counts"] == {"total": 5, "ready": 5, "pending": 0, "failed": 1}
    entries = body["results"]
    assert [e["task_id"] for e in entries] == ids
    assert [e["result"] for e in entries[:4]] == [1, 2, 3, {"slept": 0.3}]
    failed = entries[4]
    assert failed["status"] == "FAILURE" and failed["error"] == "task_failed" and failed["ready"] is True
    assert failed["exception_type"] == "ValueError" and failed["exception_message"] == "listed boom"
    assert "raise ValueError" in failed["traceback"] and len(failed["traceback"]) <= 1100


def test_a_slow_task_is_pending_when_the_wait_ends(settings: Settings, registry: TaskRegistry) -> None:
    async def script(client):
        slow = await send(client, "test_slow", seconds=6)
        fast = await send(client, "test_add", a=2, b=2)
        many = await timed(client, "get_celery_result", {"task_ids": [slow, fast], "wait_s": 1})
        one = await timed(client, "get_celery_result", {"task_id": slow, "wait_s": 0.5})
        return slow, fast, many, one

    slow, _fast, (many, many_s), (one, one_s) = session(settings, script)
    body = data(many)
    assert 0.9 <= many_s < 3, many_s
    assert body["ready"] is False and body["counts"]["pending"] == 1 and body["counts"]["ready"] == 1
    assert [e["status"] for e in body["results"]] in (["STARTED", "SUCCESS"], ["PENDING", "SUCCESS"])
    assert body["results"][0]["ready"] is False and body["results"][1]["result"] == 4
    single = data(one)
    assert 0.45 <= one_s < 2.5 and single["task_id"] == slow and single["ready"] is False
    assert single["status"] in ("PENDING", "STARTED") and single["results"] is None


def test_concurrent_long_polls_and_triggers_each_return_when_ready(settings: Settings, registry: TaskRegistry) -> None:
    async def script(client):
        ids = [await send(client, "test_slow", seconds=0.5) for _ in range(16)]  # 8 threads: two rounds of 0.5 s
        started = time.perf_counter()
        calls = [client.call_tool("get_celery_result", {"task_ids": ids[i::4], "wait_s": 20}) for i in range(4)]
        calls += [client.call_tool("get_celery_result", {"task_id": task_id, "wait_s": 20}) for task_id in ids[:6]]
        trigger = {"task_name": "test_slow", "kwargs": {"seconds": 0.5}}
        calls += [client.call_tool("trigger_celery_task", trigger) for _ in range(4)]
        return await asyncio.gather(*calls), time.perf_counter() - started

    answers, elapsed = session(settings, script)
    assert all(not a.is_error and data(a).get("ready", True) for a in answers), [data(a) for a in answers]
    assert all(data(a)["counts"]["ready"] == 4 for a in answers[:4])
    assert elapsed < 6, f"{elapsed:.2f} s for about 1.5 s of work"


def test_one_id_with_wait_s_keeps_its_shape(settings: Settings, registry: TaskRegistry) -> None:
    async def script(client):
        task_id = await send(client, "test_slow", seconds=0.3)
        done = await timed(client, "get_celery_result", {"task_id": task_id, "wait_s": 20})
        failed_id = await send(client, "test_fail", message="late")
        failed = await client.call_tool("get_celery_result", {"task_id": failed_id, "wait_s": 20})
        return task_id, done, failed

    task_id, (done, elapsed), failed = session(settings, script)
    body = data(done)
    assert elapsed < 5 and body["task_id"] == task_id and body["status"] == "SUCCESS"
    assert body["result"] == {"slept": 0.3} and body["ready"] is True
    assert failed.is_error and data(failed)["error"] == "task_failed"  # as before: a failed task is an error


def test_typed_arguments_are_checked_before_sending(settings: Settings, registry: TaskRegistry) -> None:
    async def script(client):
        wrong = await client.call_tool("trigger_celery_task", {"task_name": "test_add", "kwargs": {"a": "2", "b": 1}})
        flag = await client.call_tool("send_celery_task", {"task_name": "test_add", "args": [True, 1]})
        widened = await client.call_tool("trigger_celery_task", {"task_name": "test_slow", "kwargs": {"seconds": 0}})
        return wrong, flag, widened

    wrong, flag, widened = session(settings, script)
    body = data(wrong)
    assert wrong.is_error and body["error"] == "invalid_input" and body["field"] == "kwargs.a"
    assert "declared int" in body["message"] and '"2"' in body["message"] and body["parameter"] == "a"
    assert data(flag)["field"] == "args[0]" and "boolean" in data(flag)["message"]
    assert not widened.is_error and data(widened)["result"] == {"slept": 0}  # an int where a float is declared


def test_cancel_of_a_queued_call_is_honoured_by_a_worker_started_later(
    settings: Settings, redis_server: LocalRedisServer, tmp_path
) -> None:
    queue = f"cancel_{uuid.uuid4().hex[:8]}"  # nobody consumes it yet
    TaskRegistry(settings).register(name="test_echo", parameters=PARAMS["test_echo"], queue=queue)

    async def before(client):
        cancelled = await send(client, "test_echo", value="must not run")
        kept = await send(client, "test_echo", value="runs")
        answer = data(await client.call_tool("cancel_celery_task", {"task_id": cancelled}))
        status = await client.call_tool("get_celery_result", {"task_id": cancelled})
        unknown = data(await client.call_tool("cancel_celery_task", {"task_id": str(uuid.uuid4())}))
        return cancelled, kept, answer, status, unknown

    cancelled, kept, answer, status, unknown = session(settings, before)
    assert answer["cancelled"] is True and answer["removed_from_queue"] is True and answer["status"] == "REVOKED"
    assert not status.is_error and data(status)["status"] == "REVOKED" and data(status)["ready"] is True
    assert data(status)["cancelled_at"] and unknown["error"] == "not_found"

    worker = _worker(redis_server, tmp_path, queue)  # a worker that never received the revoke
    try:

        async def after(client):
            done = data(await client.call_tool("get_celery_result", {"task_id": kept, "wait_s": 20}))
            both = data(await client.call_tool("get_celery_result", {"task_ids": [cancelled, kept]}))
            again = data(await client.call_tool("cancel_celery_task", {"task_id": kept}))
            return done, both, again

        done, both, again = session(settings, after)
    finally:
        worker.stop()
    assert done["result"] == "runs"
    assert [e["status"] for e in both["results"]] == ["REVOKED", "SUCCESS"]
    assert again["cancelled"] is False and again["status"] == "SUCCESS"  # finished: left as it was
    assert "must not run" not in (tmp_path / f"{queue}.log").read_text()


def test_terminate_stops_a_running_call(settings: Settings, redis_server: LocalRedisServer, tmp_path) -> None:
    queue = f"terminate_{uuid.uuid4().hex[:8]}"
    registry = TaskRegistry(settings)
    registry.register(name="test_slow", parameters=PARAMS["test_slow"], queue=queue)
    registry.register(name="test_add", parameters=PARAMS["test_add"], queue=queue)
    worker = _worker(redis_server, tmp_path, queue, pool="prefork", concurrency=1)  # a deployed worker's pool
    try:

        async def script(client):
            task_id = await send(client, "test_slow", seconds=60)
            deadline = time.monotonic() + 20
            while data(await client.call_tool("get_celery_result", {"task_id": task_id}))["status"] != "STARTED":
                assert time.monotonic() < deadline, "the call did not start"
                await asyncio.sleep(0.05)
            kept = data(await client.call_tool("cancel_celery_task", {"task_id": task_id}))
            stopped = await timed(client, "cancel_celery_task", {"task_id": task_id, "terminate": True})
            status = data(await client.call_tool("get_celery_result", {"task_id": task_id}))
            after = data(await client.call_tool("trigger_celery_task", {"task_name": "test_add", "args": [1, 2]}))
            return kept, stopped, status, after

        kept, (stopped, elapsed), status, after = session(settings, script)
    finally:
        worker.stop()
    assert kept["cancelled"] is False and kept["status"] == "STARTED" and "terminate=true" in kept["message"]
    body = data(stopped)
    assert body["cancelled"] is True and body["status"] == "REVOKED" and elapsed < 5, (body, elapsed)
    assert status["status"] == "REVOKED" and after["result"] == 3  # the worker serves the next call


def test_a_deployed_task_nobody_serves_answers_within_a_second(
    settings: Settings, registry: TaskRegistry, calls_worker: WorkerProcess
) -> None:
    ghost = {
        "deployment_id": "ghost",
        "version": "v1",
        "hostname": f"ghost-{uuid.uuid4().hex[:6]}@mcs",
        "key_prefix": task_key_prefix(settings, "ghost"),
        "serve_queue": "ghost_q.v1",
    }
    registry.register(name="ghost", parameters=[{"name": "a", "type": "int"}], queue="ghost_q", deployment=ghost)
    # Alive, and pinged: the worker answers to slot 1's name of the group hostname registered.
    served = {"deployment_id": "echo", "version": "v1", "hostname": calls_worker.hostname.replace("-r1@", "@")}
    registry.register(name="test_echo", parameters=PARAMS["test_echo"], queue=QUEUE, deployment=served)

    async def script(client):
        await client.call_tool("trigger_celery_task", {"task_name": "test_add", "args": [1, 1]})  # Celery loaded
        first = await timed(client, "trigger_celery_task", {"task_name": "ghost", "args": [1]})
        await asyncio.sleep(1.1)  # past the remembered "no answer"
        second = await timed(client, "send_celery_task", {"task_name": "ghost", "args": [1]})
        alive = [await timed(client, "send_celery_task", {"task_name": "test_echo", "args": [i]}) for i in range(5)]
        return first, second, alive

    (first, first_s), (second, second_s), alive = session(settings, script)
    for result, elapsed in ((first, first_s), (second, second_s)):
        body = data(result)
        assert result.is_error and body["error"] == "service_unavailable" and body["service"] == "task_worker"
        assert elapsed < 1.0, f"answered after {elapsed:.2f} s"
        assert replica_hostname(ghost["hostname"], 1) in body["message"] and "list_deployments" in body["message"]
        assert "deploy_task" in body["message"] and "nothing was sent" in body["message"]
    assert all(not r.is_error for r, _ in alive)
    first_alive, rest = alive[0][1], [s for _, s in alive[1:]]
    assert first_alive < 0.5 and max(rest) < 0.25, (first_alive, rest)  # one ping, then the cached answer
