"""What an agent pays for six jobs, the old way and the new way, measured in one run (issue 14's figures).

    .venv/bin/python bench/bench_agent.py [--records 20] [--fanout 8] [--long-s 5] [--repeat 1]

Starts a private Redis, one real Celery worker (bench/agent_tasks.py, thread pool, served as a deployed task's worker
is: its keys under its prefix, its version queue, answering MCS's liveness ping) and the MCS server over stdio, as a
real MCP client. It registers ten tasks (the seven served here and three never called) with deployment blocks shaped
as the deploy worker writes them, so that listings have their real size. Then it plays each job as an agent would,
first the old way (what the tools allowed before issue 14, emulated with today's tools), then the new way:

1. the seed's ETL (extract -> clean -> transform -> stats): old, four trigger_celery_task calls, the agent relaying
   each result into the next call's arguments; new, one run_pipeline call (pass_result_as);
2. 8 sends of a 1 s task: old, 8 send_celery_task + get_celery_result(task_id) for each pending id every 0.5 s;
   new, 8 sends + one get_celery_result(task_ids=[...], wait_s=30); and one map_celery_task(wait_s=30);
3. a 5 s task: old, send + poll every 0.5 s; new, send + get_celery_result(task_id, wait_s=30);
4. discovery among the ten tasks: old, get_available_tasks(detail="full") (today's full listing, as the old
   default was); new, get_available_tasks(query=...) (compact, ranked);
5. "2" for a float parameter: old, the call is sent and fails inside the worker (emulated: the same code registered
   with the parameter declared Any, so the check lets it through; the TypeError comes back from the worker); new,
   refused before anything is sent (invalid_input);
6. generate_startMain_code of a one-line body: old, show="full" (the whole app file in main_content, as the old
   reply had); new, the default show="tasks". Written into a temporary generated_tasks_dir.

Bytes are what passes through the agent's context: the JSON text of each tool call's arguments plus the JSON text
of its result (the text content block; the wire carries the same data a second time as structuredContent). Time is
the job's wall time from the agent's side, poll sleeps included. With --repeat N each job runs N times: medians.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcp import Client
from mcp.types import CallToolResult

from mcs.core.celery_app import create_celery_app, task_key_prefix, version_queue
from mcs.core.settings import Settings
from Redis.registry import TaskRegistry
from Redis.server import LocalRedisServer
from tests.celery_worker import WorkerProcess
from tests.helpers import make_settings
from tests.mcp_clients import stdio_client

QUEUE = "bench_etl"
PRIMARY = "etl_extract"  # the folder whose worker serves every task called here
WAIT_S = 30.0


# -- the registered tasks ---------------------------------------------------------------------------------------


def _param(name: str, type_: str, description: str, required: bool = True, default: Any = None) -> dict[str, Any]:
    spec = {"name": name, "type": type_, "required": required, "description": description}
    return spec if required else {**spec, "default": default}


RECORDS = _param("records", "list", "the records, as the previous stage returned them")
SERVED = [
    dict(name="etl_extract", description="Extract n raw customer records from the CSV export (the ETL's first stage).",
         parameters=[_param("n", "int", "how many records", required=False, default=20)], return_type="list",
         category="etl"),
    dict(name="etl_clean", description="Clean customer records: drop those whose amount does not parse, trim and "
         "normalise names, emails and cities.", parameters=[RECORDS], return_type="list", category="etl"),
    dict(name="etl_transform", description="Transform cleaned customer records: add the amount in cents and a tier.",
         parameters=[RECORDS], return_type="list", category="etl"),
    dict(name="etl_stats", description="Compute statistics of customer records: count, total, mean, min, max of the "
         "amounts and the total per city.", parameters=[RECORDS], return_type="dict", category="etl"),
    dict(name="bench_sleep", description="Sleep for a number of seconds and return how long it slept.",
         parameters=[_param("seconds", "float", "how long to sleep", required=False, default=1.0)],
         return_type="dict", category="utility"),
    dict(name="scale", description="Multiply a number by a factor.",
         parameters=[_param("value", "float", "the number"),
                     _param("factor", "float", "the factor", required=False, default=2.0)],
         return_type="float", category="math"),
    dict(name="scale_any", description="Multiply a number by a factor (its value declared Any: no type check).",
         parameters=[_param("value", "Any", "the number"),
                     _param("factor", "float", "the factor", required=False, default=2.0)],
         return_type="Any", category="math"),
]  # fmt: skip
NEVER_CALLED = [
    dict(name="simple_add", description="Add two integers and return their sum.",
         parameters=[_param("a", "int", "first addend"), _param("b", "int", "second addend")], return_type="int",
         category="math"),
    dict(name="slugify_text", description="Turn a title into a URL slug (lowercase ASCII words joined by '-'), "
         "transliterating accents with python-slugify.",
         parameters=[_param("text", "str", "the title"),
                     _param("max_length", "int", "cut the slug to this length", required=False, default=80)],
         return_type="str", category="text"),
    dict(name="make_thumbnail", description="Make a PNG thumbnail of an image given as base64, keeping its aspect "
         "ratio (Pillow).",
         parameters=[_param("image_b64", "str", "the image, base64"),
                     _param("size", "int", "the longest side in pixels", required=False, default=128)],
         return_type="str", category="images"),
]  # fmt: skip


def deployment(settings: Settings, primary: str, tasks: list[str], hostname: str) -> dict[str, Any]:
    """A deployment block as the deploy worker writes one (docker runtime), so that full listings have their size."""
    version = hashlib.sha256(primary.encode()).hexdigest()
    return {
        "deployment_id": str(uuid.uuid4()),
        "version": version,
        "image": f"mcs-task-{primary}:{version[:12]}",
        "container_id": hashlib.sha256(f"container {primary}".encode()).hexdigest(),
        "runtime": "docker",
        "hostname": hostname,
        "dockerfile": "rendered",
        "deployed_at": datetime.now(UTC).isoformat(),
        "key_prefix": task_key_prefix(settings, primary),
        "acl_user": f"mcs-task-{primary}",
        "network": "none",
        "sandbox": "runc",
        "isolation": "container",
        "serve_queue": version_queue(f"q_{primary}" if primary != PRIMARY else QUEUE, version),
        "primary": primary,
        "tasks": tasks,
        "tests_passed": 2,
    }


def register_tasks(settings: Settings, hostname: str) -> None:
    registry = TaskRegistry(settings)
    served = deployment(settings, PRIMARY, [t["name"] for t in SERVED], hostname)
    for task in SERVED:
        registry.register(**task, queue=QUEUE, deployment=served)
    for task in NEVER_CALLED:
        name = task["name"]
        dep = deployment(settings, name, [name], f"mcs-{name}-{uuid.uuid4().hex[:8]}@worker")
        registry.register(**task, queue=f"q_{name}", deployment=dep)


# -- the agent's side -------------------------------------------------------------------------------------------


def text_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


@dataclass
class Tally:
    calls: int = 0
    sent: int = 0
    received: int = 0
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return self.sent + self.received


class Agent:
    """Calls tools as an agent does, one after another, counting calls and the JSON text in and out."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def call(self, tally: Tally, tool: str, arguments: dict[str, Any]) -> tuple[CallToolResult, dict[str, Any]]:
        result = await self.client.call_tool(tool, arguments)
        text = "".join(getattr(block, "text", "") for block in result.content)
        tally.calls += 1
        tally.sent += text_bytes(arguments)
        tally.received += len(text.encode())
        data = result.structured_content if result.structured_content is not None else json.loads(text or "{}")
        return result, data

    async def ok(self, tally: Tally, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result, data = await self.call(tally, tool, arguments)
        if result.is_error:
            raise RuntimeError(f"{tool} failed: {json.dumps(data)[:1000]}")
        return data


async def timed(job) -> Tally:
    tally = Tally()
    started = time.perf_counter()
    await job(tally)
    tally.seconds = time.perf_counter() - started
    return tally


async def poll_until_ready(agent: Agent, tally: Tally, task_ids: list[str], every_s: float) -> list[Any]:
    """The old loop: get_celery_result(task_id) for each pending id, then sleep, until every one is ready."""
    results: dict[str, Any] = {}
    pending = list(task_ids)
    rounds = 0
    while pending:
        rounds += 1
        for task_id in list(pending):
            data = await agent.ok(tally, "get_celery_result", {"task_id": task_id})
            if data["ready"]:
                results[task_id] = data["result"]
                pending.remove(task_id)
        if pending:
            await asyncio.sleep(every_s)
    tally.notes["poll rounds"] = rounds
    return [results[t] for t in task_ids]


# -- the jobs ---------------------------------------------------------------------------------------------------


async def job_etl(agent: Agent, opts: argparse.Namespace) -> list[Tally]:
    stages = ["etl_clean", "etl_transform", "etl_stats"]
    finals = []

    async def old(tally: Tally) -> None:
        data = await agent.ok(tally, "trigger_celery_task", {"task_name": "etl_extract", "kwargs": {"n": opts.records}})
        relayed = 0
        for stage in stages:
            arguments = {"task_name": stage, "kwargs": {"records": data["result"]}}
            relayed += text_bytes(data["result"])
            data = await agent.ok(tally, "trigger_celery_task", arguments)
        tally.notes["relayed bytes (results pasted into arguments)"] = relayed
        finals.append(data["result"])

    async def new(tally: Tally) -> None:
        steps = [{"task_name": "etl_extract", "kwargs": {"n": opts.records}}]
        steps += [{"task_name": stage, "pass_result_as": "records"} for stage in stages]
        data = await agent.ok(tally, "run_pipeline", {"steps": steps})
        finals.append(data["result"])

    tallies = [await timed(old), await timed(new)]
    assert finals[0] == finals[1], finals
    return tallies


async def job_fanout(agent: Agent, opts: argparse.Namespace) -> list[Tally]:
    call = {"task_name": "bench_sleep", "kwargs": {"seconds": opts.fanout_s}}
    expected = [{"slept": opts.fanout_s}] * opts.fanout

    async def send_all(tally: Tally) -> list[str]:
        return [(await agent.ok(tally, "send_celery_task", call))["task_id"] for _ in range(opts.fanout)]

    async def old(tally: Tally) -> None:
        ids = await send_all(tally)
        assert await poll_until_ready(agent, tally, ids, opts.poll_s) == expected

    async def new_ids(tally: Tally) -> None:
        ids = await send_all(tally)
        data = await agent.ok(tally, "get_celery_result", {"task_ids": ids, "wait_s": WAIT_S})
        assert data["ready"] and [e["result"] for e in data["results"]] == expected, data

    async def new_map(tally: Tally) -> None:
        items = [{"kwargs": {"seconds": opts.fanout_s}} for _ in range(opts.fanout)]
        data = await agent.ok(tally, "map_celery_task", {"task_name": "bench_sleep", "items": items, "wait_s": WAIT_S})
        assert data["ready"] and [e["result"] for e in data["results"]] == expected, data

    return [await timed(old), await timed(new_ids), await timed(new_map)]


async def job_long(agent: Agent, opts: argparse.Namespace) -> list[Tally]:
    call = {"task_name": "bench_sleep", "kwargs": {"seconds": opts.long_s}}

    async def old(tally: Tally) -> None:
        task_id = (await agent.ok(tally, "send_celery_task", call))["task_id"]
        assert await poll_until_ready(agent, tally, [task_id], opts.poll_s) == [{"slept": opts.long_s}]

    async def new(tally: Tally) -> None:
        task_id = (await agent.ok(tally, "send_celery_task", call))["task_id"]
        data = await agent.ok(tally, "get_celery_result", {"task_id": task_id, "wait_s": WAIT_S})
        assert data["ready"] and data["result"] == {"slept": opts.long_s}, data

    return [await timed(old), await timed(new)]


async def job_discovery(agent: Agent, opts: argparse.Namespace) -> list[Tally]:
    async def old(tally: Tally) -> None:
        data = await agent.ok(tally, "get_available_tasks", {"detail": "full"})
        names = [t["name"] for t in data["tasks"]]
        assert "etl_stats" in names, names  # the agent reads them all and picks
        tally.notes["tasks listed"] = len(names)

    async def new(tally: Tally) -> None:
        data = await agent.ok(tally, "get_available_tasks", {"query": opts.query})
        names = [t["name"] for t in data["tasks"]]
        assert names and names[0] == "etl_stats", names
        tally.notes["tasks listed"] = len(names)

    async def compact(tally: Tally) -> None:  # no query: today's default listing, for reference
        data = await agent.ok(tally, "get_available_tasks", {})
        tally.notes["tasks listed"] = len(data["tasks"])

    return [await timed(old), await timed(new), await timed(compact)]


async def job_bad_type(agent: Agent, opts: argparse.Namespace) -> list[Tally]:
    async def old(tally: Tally) -> None:
        arguments = {"task_name": "scale_any", "kwargs": {"value": "2", "factor": 1.5}}
        result, data = await agent.call(tally, "trigger_celery_task", arguments)
        assert result.is_error and data.get("exception_type") == "TypeError", data
        tally.notes["error"] = f"{data['error']} ({data['exception_type']}, from the worker)"

    async def new(tally: Tally) -> None:
        arguments = {"task_name": "scale", "kwargs": {"value": "2", "factor": 1.5}}
        result, data = await agent.call(tally, "trigger_celery_task", arguments)
        assert result.is_error and data.get("error") == "invalid_input", data
        tally.notes["error"] = f"{data['error']} (nothing sent)"

    return [await timed(old), await timed(new)]


async def job_generate(agent: Agent, opts: argparse.Namespace) -> list[Tally]:
    base = {
        "task_name": "bench_add",
        "description": "Add two integers.",
        "parameters": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}],
        "function_body": "return a + b",
        "queue": "bench_gen",
        "return_type": "int",
        "overwrite": True,
    }

    async def old(tally: Tally) -> None:
        data = await agent.ok(tally, "generate_startMain_code", {**base, "show": "full"})
        tally.notes["main_content bytes"] = len(data["main_content"].encode())

    async def new(tally: Tally) -> None:
        data = await agent.ok(tally, "generate_startMain_code", base)
        tally.notes["main_content bytes"] = len(data["main_content"].encode())

    return [await timed(old), await timed(new)]


JOBS = [
    ("1. ETL, 4 stages", job_etl, ["old: 4 triggers, results relayed", "new: run_pipeline"]),
    ("2. 8 sends of a 1 s task", job_fanout,
     ["old: 8 sends + polling", "new: 8 sends + get_celery_result(task_ids, wait_s)", "new: map_celery_task"]),
    ("3. a 5 s task", job_long, ["old: send + polling", "new: send + get_celery_result(wait_s)"]),
    ("4. discovery, 10 tasks", job_discovery,
     ["old: get_available_tasks(detail=full)", "new: get_available_tasks(query)", "compact, no query"]),
    ('5. "2" for a float', job_bad_type, ["old: sent, fails in the worker", "new: refused before sending"]),
    ("6. generate, one-line body", job_generate, ["old: show=full", "new: show=tasks (default)"]),
]  # fmt: skip


def median_tally(tallies: list[Tally]) -> Tally:
    return Tally(
        calls=round(statistics.median(t.calls for t in tallies)),
        sent=round(statistics.median(t.sent for t in tallies)),
        received=round(statistics.median(t.received for t in tallies)),
        seconds=statistics.median(t.seconds for t in tallies),
        notes=tallies[-1].notes,
    )


async def run_jobs(settings: Settings, opts: argparse.Namespace) -> list[tuple[str, list[str], list[Tally]]]:
    async with stdio_client(settings) as client:
        agent = Agent(client)
        warm = Tally()  # first connections, the worker's liveness ping: not any job's cost
        await agent.ok(warm, "trigger_celery_task", {"task_name": "etl_extract", "kwargs": {"n": 1}})
        await agent.ok(warm, "get_available_tasks", {"limit": 1})
        out = []
        for title, job, labels in JOBS:
            runs = [await job(agent, opts) for _ in range(opts.repeat)]
            out.append((title, labels, [median_tally([run[i] for run in runs]) for i in range(len(labels))]))
    return out


# -- the report -------------------------------------------------------------------------------------------------


def ratio(new: float, old: float) -> str:
    return f"{new / old:.3f}" if old else "-"


def report(results: list[tuple[str, list[str], list[Tally]]]) -> None:
    head = "| job | old calls | old bytes | new calls | new bytes | bytes new/old | time old | time new |"
    print(head)
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    total_old, total_new = Tally(), Tally()
    for title, labels, tallies in results:
        old = tallies[0]
        for label, new in zip(labels[1:], tallies[1:], strict=True):
            if not label.startswith("new"):
                continue
            several = sum(x.startswith("new") for x in labels) > 1
            name = f"{title}, {label[5:]}" if several else title
            print(
                f"| {name} | {old.calls} | {old.bytes} | {new.calls} | {new.bytes} | {ratio(new.bytes, old.bytes)} "
                f"| {old.seconds:.3f} s | {new.seconds:.3f} s |"
            )
        for kind, tally in ((total_old, old), (total_new, tallies[1])):
            kind.calls += tally.calls
            kind.sent += tally.sent
            kind.received += tally.received
            kind.seconds += tally.seconds
    print(
        f"| total (first new way of each job) | {total_old.calls} | {total_old.bytes} | {total_new.calls} | "
        f"{total_new.bytes} | {ratio(total_new.bytes, total_old.bytes)} | {total_old.seconds:.3f} s | "
        f"{total_new.seconds:.3f} s |"
    )
    print()
    print("Details (calls; bytes sent + received; wall time; notes):")
    for title, labels, tallies in results:
        print(f"  {title}")
        for label, t in zip(labels, tallies, strict=True):
            notes = "".join(f"; {k}: {v}" for k, v in t.notes.items())
            print(f"    {label:52} {t.calls:3} calls  {t.sent:6} + {t.received:6} B  {t.seconds:7.3f} s{notes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20, help="records the ETL extracts")
    parser.add_argument("--fanout", type=int, default=8, help="parallel sends")
    parser.add_argument("--fanout-s", type=float, default=1.0, help="seconds each parallel task sleeps")
    parser.add_argument("--long-s", type=float, default=5.0, help="seconds the long task sleeps")
    parser.add_argument("--poll-s", type=float, default=0.5, help="the old way's poll interval")
    parser.add_argument("--query", default="statistics of customer records", help="the discovery query")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each job (medians reported)")
    parser.add_argument("--quick", action="store_true", help="the defaults (one run of each job, about 30 s)")
    opts = parser.parse_args()
    if opts.quick:
        opts.repeat = 1
    with tempfile.TemporaryDirectory(prefix="mcs-bench-agent-") as tmp:
        root = Path(tmp)
        redis = LocalRedisServer(root / "redis").start()
        settings = make_settings(root, redis_port=redis.port, metadata_prefix="mcs-bench-agent:", log_level="WARNING")
        prefix = task_key_prefix(settings, PRIMARY)
        serve_queue = deployment(settings, PRIMARY, [], "")["serve_queue"]
        worker = WorkerProcess(
            "bench.agent_tasks", serve_queue, redis.port, root / "worker.log",
            concurrency=max(10, opts.fanout + 2), extra_env={"MCS_KEY_PREFIX": prefix, "MCS_BENCH_QUEUE": serve_queue},
        )  # fmt: skip
        try:
            worker.start(create_celery_app(settings, key_prefix=prefix))
            register_tasks(settings, worker.hostname)
            started = time.perf_counter()
            results = asyncio.run(run_jobs(settings, opts))
            elapsed = time.perf_counter() - started
        finally:
            worker.stop()
            redis.stop()
    report(results)
    print(f"\nJobs ran in {elapsed:.1f} s (server, worker and Redis started and stopped by this run).")


if __name__ == "__main__":
    main()
