"""The MCP server as Claude Desktop runs it: a subprocess over stdio, a real Redis, a real Celery worker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mcs.core.celery_app import create_celery_app
from mcs.core.settings import Settings
from Redis.registry import TaskRegistry
from Redis.server import LocalRedisServer
from tests.celery_worker import WorkerProcess
from tests.helpers import make_settings
from tests.mcp_clients import SERVER_SCRIPT, data, server_env, stdio_client

pytestmark = pytest.mark.integration

QUEUE = "mcs_test"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}


@pytest.fixture(scope="session")
def worker(redis_server: LocalRedisServer, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    app = create_celery_app(make_settings(log.parent, redis_port=redis_server.port))
    proc = WorkerProcess("tests.fixture_tasks", QUEUE, redis_server.port, log).start(app)
    yield proc
    proc.stop()


@pytest.fixture
def registry(settings: Settings, worker) -> TaskRegistry:
    registry = TaskRegistry(settings)
    for name, params in {
        "test_add": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}],
        "test_slow": [{"name": "seconds", "type": "float", "required": False}],
        "test_fail": [{"name": "message", "type": "str"}],
        "test_echo": [{"name": "value", "type": "Any", "required": False}],
    }.items():
        registry.register(name=name, description=f"fixture task {name}", parameters=params, queue=QUEUE)
    return registry


async def wait_ready(client, task_id: str, deadline_s: float = 20.0):
    """Poll get_celery_result until the task is ready (or failed), with a deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = await client.call_tool("get_celery_result", {"task_id": task_id})
        if result.is_error or data(result)["ready"] or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


def session(settings: Settings, script, **env: str) -> Any:
    async def run():
        async with stdio_client(settings, **env) as client:
            return await script(client)

    return asyncio.run(run())


def test_trigger_returns_the_value_as_json(settings: Settings, registry: TaskRegistry) -> None:
    async def script(client):
        return await client.call_tool("trigger_celery_task", {"task_name": "test_add", "kwargs": {"a": 10, "b": 20}})

    result = session(settings, script)
    body = data(result)
    assert not result.is_error, body
    assert body["result"] == 30 and body["status"] == "SUCCESS"
    assert body["task_name"] == "test_add" and body["queue"] == QUEUE and body["success"] is True
    assert "30" in body["message"]


def test_send_then_get_result(settings: Settings, registry: TaskRegistry) -> None:
    async def script(client):
        sent = data(await client.call_tool("send_celery_task", {"task_name": "test_echo", "args": [{"k": [1, 2]}]}))
        return sent, data(await wait_ready(client, sent["task_id"]))

    sent, got = session(settings, script)
    assert sent["status"] == "SENT" and sent["queue"] == QUEUE
    assert got["status"] == "SUCCESS" and got["result"] == {"k": [1, 2]} and got["task_name"] == "test_echo"


def test_task_that_raises_reports_type_message_and_traceback(settings: Settings, registry: TaskRegistry) -> None:
    async def script(client):
        return await client.call_tool("trigger_celery_task", {"task_name": "test_fail", "args": ["boom 42"]})

    result = session(settings, script)
    body = data(result)
    assert result.is_error and body["success"] is False and body["error"] == "task_failed"
    assert body["exception_type"] == "ValueError" and body["exception_message"] == "boom 42"
    assert body["status"] == "FAILURE"
    assert "raise ValueError(message)" in body["traceback"] and len(body["traceback"]) <= 4100


def test_timeout_carries_the_task_id_and_the_result_arrives_later(settings: Settings, registry: TaskRegistry) -> None:
    async def script(client):
        timed_out = data(
            await client.call_tool(
                "trigger_celery_task", {"task_name": "test_slow", "kwargs": {"seconds": 1.0}, "timeout_s": 0.2}
            )
        )
        return timed_out, data(await wait_ready(client, timed_out["task_id"]))

    timed_out, got = session(settings, script)
    assert timed_out["error"] == "timeout" and "get_celery_result" in timed_out["message"]
    assert timed_out["status"] in ("PENDING", "STARTED")
    assert got["status"] == "SUCCESS" and got["result"] == {"slept": 1.0}


def test_concurrent_triggers_take_about_the_time_of_one(settings: Settings, registry: TaskRegistry) -> None:
    async def script(client):
        args = {"task_name": "test_slow", "kwargs": {"seconds": 0.2}}
        await client.call_tool("trigger_celery_task", args)  # warm up connections
        start = time.perf_counter()
        await client.call_tool("trigger_celery_task", args)
        one = time.perf_counter() - start
        start = time.perf_counter()
        results = await asyncio.gather(*[client.call_tool("trigger_celery_task", args) for _ in range(8)])
        eight = time.perf_counter() - start
        return one, eight, results

    one, eight, results = session(settings, script)
    assert all(not r.is_error for r in results)
    assert eight < 2.0 * one, f"8 concurrent triggers took {eight:.3f} s, one took {one:.3f} s"


def test_redis_down_is_a_clear_error_not_a_crash(tmp_path: Path) -> None:
    from Redis.server import free_port

    settings = make_settings(tmp_path, redis_port=free_port(), redis_socket_timeout_s=1)

    async def script(client):
        first = await client.call_tool("get_available_tasks", {})
        second = await client.call_tool("trigger_celery_task", {"task_name": "test_add", "args": [1, 2]})
        return first, second

    first, second = session(settings, script, MCS_REDIS_SOCKET_TIMEOUT_S="1")
    for result in (first, second):
        assert result.is_error and data(result)["error"] == "service_unavailable"
        assert "not reachable" in data(result)["message"]


def test_stdout_carries_only_json_rpc(settings: Settings, registry: TaskRegistry) -> None:
    """Provoke errors and logs; every line the server writes to stdout must be a JSON-RPC message."""
    requests = [
        INITIALIZE,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "trigger_celery_task", "arguments": {"task_name": "test_fail", "args": ["x"]}},
        },
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "tools/call",
            "params": {"name": "trigger_celery_task", "arguments": {"task_name": "../x"}},
        },
        {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "no_such_tool", "arguments": {}}},
        {
            "jsonrpc": "2.0",
            "id": 6,
            "method": "tools/call",
            "params": {"name": "trigger_celery_task", "arguments": {"task_name": "test_add", "args": [1, 2]}},
        },
    ]
    env = {"PATH": "/usr/bin:/bin", **server_env(settings)}
    proc = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    for request in requests:
        proc.stdin.write(json.dumps(request) + "\n")
    proc.stdin.write("this is not json\n")
    proc.stdin.flush()
    messages: list[dict] = []
    deadline = time.monotonic() + 60
    while not {1, 2, 3, 4, 5, 6} <= {m.get("id") for m in messages} and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        messages.append(json.loads(line))  # raises if a line is not JSON
    proc.stdin.close()
    rest = proc.stdout.read()
    stderr = proc.stderr.read()
    proc.wait(30)
    messages += [json.loads(line) for line in rest.splitlines() if line.strip()]
    assert all(m.get("jsonrpc") == "2.0" for m in messages)
    by_id = {m.get("id"): m for m in messages}
    assert {1, 2, 3, 4, 5, 6} <= set(by_id)
    assert by_id[3]["result"]["isError"] is True
    assert by_id[4]["result"]["structuredContent"]["error"] == "invalid_input"
    assert by_id[6]["result"]["structuredContent"]["result"] == 3
    assert "tool trigger_celery_task" in stderr  # logs went to stderr


def test_server_starts_quickly(settings: Settings) -> None:
    """Spawn + initialize stays near the SDK's floor: compare with a bare MCPServer in the same run."""
    bare = "from mcp.server.mcpserver import MCPServer\nMCPServer(name='bare').run('stdio')\n"

    def spawn_and_initialize(args: list[str]) -> float:
        init = json.dumps(INITIALIZE)
        env = {"PATH": "/usr/bin:/bin", **server_env(settings)}
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        proc.stdin.write(init + "\n")
        proc.stdin.flush()
        proc.stdout.readline()
        elapsed = time.perf_counter() - start
        proc.stdin.close()
        proc.wait(10)
        return elapsed

    ours = min(spawn_and_initialize([str(SERVER_SCRIPT)]) for _ in range(3))
    floor = min(spawn_and_initialize(["-c", bare]) for _ in range(3))
    assert ours < 1.5 * floor, f"MCS {ours:.3f} s vs bare SDK {floor:.3f} s"


def test_get_result_of_a_failed_task_is_the_same_error_as_trigger(settings: Settings, registry: TaskRegistry) -> None:
    async def script(client):
        sent = data(await client.call_tool("send_celery_task", {"task_name": "test_fail", "args": ["late boom"]}))
        return await wait_ready(client, sent["task_id"])

    result = session(settings, script)
    body = data(result)
    assert result.is_error and body["error"] == "task_failed" and body["exception_type"] == "ValueError"
    assert body["exception_message"] == "late boom" and "raise ValueError" in body["traceback"]


def test_many_waiting_triggers_do_not_starve_quick_tools(settings: Settings) -> None:
    TaskRegistry(settings).register(name="nobody_serves", queue="queue_without_worker")

    async def script(client):
        waits = [
            asyncio.ensure_future(
                client.call_tool("trigger_celery_task", {"task_name": "nobody_serves", "timeout_s": 4})
            )
            for _ in range(48)  # more than the SDK's 40 default threads
        ]
        await asyncio.sleep(0.5)
        quick = await client.call_tool("get_task_categories", {})
        answered_while_all_wait = not any(w.done() for w in waits)
        timed_out = await asyncio.gather(*waits)
        return quick, answered_while_all_wait, timed_out

    quick, answered_while_all_wait, timed_out = session(settings, script)
    assert not quick.is_error and answered_while_all_wait
    assert all(data(r)["error"] == "timeout" for r in timed_out)
