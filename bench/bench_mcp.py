"""Benchmark of the MCP task tools against baselines measured in the same run.

    .venv/bin/python bench/bench_mcp.py [--n 300]

Starts a private Redis and a real Celery worker (tests/fixture_tasks.py, thread pool of 8), then measures:
raw Celery ``send_task(...).get()``; a no-op MCP tool over stdio (a bare MCPServer: the SDK's floor);
``trigger_celery_task`` over stdio; 8 concurrent 0.2 s triggers versus one. Prints a table and the two targets:
trigger p50 <= raw p50 + no-op p50 + 0.3 ms, and 8 concurrent <= 1.2 x one.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcp import Client, StdioServerParameters

from mcs.core.celery_app import create_celery_app, task_key_prefix
from mcs.core.settings import Settings
from Redis.registry import TaskRegistry
from Redis.server import LocalRedisServer
from tests.celery_worker import WorkerProcess
from tests.mcp_clients import stdio_client

NOOP_SERVER = """
from mcp.server.mcpserver import MCPServer
server = MCPServer(name="noop")
@server.tool()
def noop() -> str:
    return "ok"
server.run("stdio")
"""


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def bench_calls(settings: Settings, n: int) -> dict[str, list[float]]:
    """Raw Celery, the no-op tool and trigger, interleaved call by call so that drift hits all three alike."""
    app = create_celery_app(settings)
    noop_params = StdioServerParameters(command=sys.executable, args=["-c", NOOP_SERVER])
    samples: dict[str, list[float]] = {"raw": [], "noop": [], "trigger": [], "confined": []}
    async with Client(noop_params) as noop, stdio_client(settings) as mcs:

        def raw_call(i: int):
            return app.send_task("mcp_app.test_echo", args=[i], queue="mcs_test").get(timeout=10)

        async def noop_call(i: int):
            return await noop.call_tool("noop", {})

        async def trigger_call(i: int):
            result = await mcs.call_tool("trigger_celery_task", {"task_name": "test_echo", "args": [i]})
            assert not result.is_error, result
            return result

        async def confined_call(i: int):  # a deployed task's: sent and read under its key prefix
            result = await mcs.call_tool("trigger_celery_task", {"task_name": "test_echo_confined", "args": [i]})
            assert not result.is_error, result
            return result

        calls = (("raw", raw_call), ("noop", noop_call), ("trigger", trigger_call), ("confined", confined_call))
        for i in range(n + 20):
            for name, fn in calls:
                start = time.perf_counter()
                out = fn(i)
                if asyncio.iscoroutine(out):
                    await out
                if i >= 20:  # the first calls warm up connections
                    samples[name].append(time.perf_counter() - start)
    return samples


async def bench_concurrency(settings: Settings, rounds: int = 5) -> tuple[float, float]:
    slow = {"task_name": "test_slow", "kwargs": {"seconds": 0.2}}
    ones, eights = [], []
    async with stdio_client(settings) as client:
        await asyncio.gather(*[client.call_tool("trigger_celery_task", slow) for _ in range(8)])
        for _ in range(rounds):
            start = time.perf_counter()
            await client.call_tool("trigger_celery_task", slow)
            ones.append(time.perf_counter() - start)
            start = time.perf_counter()
            results = await asyncio.gather(*[client.call_tool("trigger_celery_task", slow) for _ in range(8)])
            eights.append(time.perf_counter() - start)
            assert not any(r.is_error for r in results)
    return statistics.median(ones), statistics.median(eights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="calls per measurement")
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalRedisServer(Path(tmp) / "redis").start()
        settings = Settings(_env_file=None, redis_port=server.port, metadata_prefix="mcs-bench:")
        worker = WorkerProcess("tests.fixture_tasks", "mcs_test", server.port, Path(tmp) / "worker.log")
        prefix = task_key_prefix(settings, "test_echo_confined")
        confined = WorkerProcess(
            "tests.fixture_tasks", "mcs_test_c", server.port, Path(tmp) / "confined.log",
            extra_env={"MCS_KEY_PREFIX": prefix, "MCS_TEST_QUEUE": "mcs_test_c"},
        )  # fmt: skip
        try:
            worker.start(create_celery_app(settings))
            confined.start(create_celery_app(settings, key_prefix=prefix))
            registry = TaskRegistry(settings)
            registry.register(name="test_echo", parameters=[{"name": "value", "required": False}], queue="mcs_test")
            registry.register(name="test_slow", parameters=[{"name": "seconds", "required": False}], queue="mcs_test")
            registry.register(
                name="test_echo_confined", parameters=[{"name": "value", "required": False}], queue="mcs_test_c",
                deployment={"deployment_id": "bench", "key_prefix": prefix},
            )  # fmt: skip
            samples = asyncio.run(bench_calls(settings, n))
            raw, noop, trig, conf = (percentiles(samples[k]) for k in ("raw", "noop", "trigger", "confined"))
            one, eight = asyncio.run(bench_concurrency(settings))
        finally:
            worker.stop()
            confined.stop()
            server.stop()
    print(f"{'measurement':44} {'p50 ms':>9} {'p99 ms':>9}")
    print(f"{'raw Celery send_task().get()':44} {raw[0]:9.3f} {raw[1]:9.3f}")
    print(f"{'no-op MCP tool over stdio (SDK floor)':44} {noop[0]:9.3f} {noop[1]:9.3f}")
    print(f"{'trigger_celery_task over stdio':44} {trig[0]:9.3f} {trig[1]:9.3f}")
    print(f"{'  the same, a deployed task (its key prefix)':44} {conf[0]:9.3f} {conf[1]:9.3f}")
    budget = raw[0] + noop[0] + 0.3
    print(f"{'target: trigger p50 <= raw + no-op + 0.3':44} {budget:9.3f}   {'MET' if trig[0] <= budget else 'MISSED'}")
    print(f"{'one 0.2 s trigger (s)':44} {one:9.3f}")
    print(f"{'8 concurrent 0.2 s triggers (s)':44} {eight:9.3f}")
    ratio = eight / one
    print(f"{'ratio 8 concurrent / one (target <= 1.2)':44} {ratio:9.3f}   {'MET' if ratio <= 1.2 else 'MISSED'}")


if __name__ == "__main__":
    main()
