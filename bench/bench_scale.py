"""Scale-out benchmark (Docker): capacity layouts, CPU-bound throughput per replica, the send rate of one MCP
session, idle memory and cold start, each against a baseline measured in the same run.

    .venv/bin/python bench/bench_scale.py [--sends 1000] [--json out.json] [--before before.json]

Starts a private Redis (an administrator's password, a unix socket: workers have no network), the real deploy
worker (docker runtime) and mcp_server.py over stdio, and deploys one folder of three tasks as an agent would
(``bs_sleep(seconds)``, ``bs_spin(n)``: a busy loop, ``bs_noop()``). Then:

1. 8 concurrent 1 s ``trigger_celery_task`` calls (8 in flight through one MCP session) for the capacity layouts
   replicas x concurrency 1 x 1 (the baseline), 8 x 1, 2 x 4 and 1 x 8: the makespan as a multiple of one 1 s call
   alone, measured in the same layout. Target <= 1.25 x for capacity 8.
2. 64 calls of about 0.2 s of CPU (a busy loop sized first, in a worker): calls/s against replicas 1..nproc
   (concurrency 1), as a ratio to 1 replica. The calls are sent in flight, then read with one
   get_celery_result(task_ids, wait_s).
3. ``send_celery_task`` through one MCP session, sequential and with 20 in flight, against the baseline
   1 / (a no-op MCP tool call + a raw Celery publish) in the same mode, interleaved round by round. The no-op tool
   is a bare MCPServer over stdio (bench_mcp.py's); the raw publish is ``app.send_task(...)`` under the task's
   key prefix to its serving queue, without waiting (20 in flight: 20 threads; the faster of the two modes counts).
   Meanwhile the task's only worker runs one long call, so the sends queue up and no worker competes for the two
   cores (the same for the baseline's publishes); the call is cancelled afterwards and the queue drains.
   Target >= 0.8 x.
4. Idle memory per deployed task at concurrency 1 and 4 (docker stats of each of its containers, usage minus
   cache), the cold start from zero replicas (scale_task 0, no container left) to the first answer of
   trigger_celery_task, and, only with MCS_BENCH_SWARM=1 on a swarm manager with a registry, the deploy time on
   swarm against docker (bench/bench_swarm.py, one round).

Everything it starts carries the labels mcs.bench=1 and mcs.bench.run=<this run> and is removed at the end.
``--json`` keeps this run's figures, ``--before`` prints an earlier run's next to them (e.g. one made before a
change); the issue's own "before" figures are printed where it gives them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker
from mcp import Client, StdioServerParameters

from bench.bench_mcp import NOOP_SERVER
from deploy_mcp.docker.base_image import ensure_base_image
from mcs.codegen import generate_task_folder
from mcs.core.celery_app import create_celery_app
from mcs.core.processes import stop_group
from mcs.core.settings import PROJECT_ROOT, Settings
from mcs.stack import process_env
from Redis.broker import queue_depth
from Redis.connection import make_client
from Redis.deploy_state import DeployWorkerState
from Redis.registry import TaskRegistry
from Redis.server import LocalRedisServer
from tests.mcp_clients import data, stdio_client

TASK, SPIN, NOOP, QUEUE = "bs_sleep", "bs_spin", "bs_noop", "bs_q"
RUN = uuid.uuid4().hex[:8]
LABELS = {"mcs.bench": "1", "mcs.bench.run": RUN}
LAYOUTS = ((1, 1), (8, 1), (2, 4), (1, 8))  # (replicas, concurrency), capacity 8 but the first
SPIN_TARGET_S = 0.2
SPIN_CALLS = 64
SPIN_ROUNDS = 2
IN_FLIGHT = 20
SEND_ROUNDS = 10
#: Figures the issue gives for MCS before scale-out (2 cores): compared with this run's.
ISSUE_BEFORE = {
    "makespan.1x1": 7.9,
    "send.seq.mcs": 251.0,
    "send.flight.mcs": 487.0,
    "memory.c1": "60-70",
}

SLEEP_BODY = "import time\ntime.sleep(seconds)\nreturn seconds"
SPIN_BODY = (
    "import time\nstarted = time.perf_counter()\nx = 0\nfor i in range(n):\n    x += i\n"
    "return time.perf_counter() - started"
)


#: The deploy worker (``python -m deploy_mcp``) with its docker runtime's view narrowed to the containers carrying
#: this run's labels (MCS_WORKER_LABELS). Unnarrowed, a deploy worker takes every ``mcs.managed`` container on the
#: daemon for its own: at start it removes the workers of tasks its registry does not know, i.e. those of any
#: other MCS sharing this dockerd (another engineer's tests), and they remove this run's the same way.
DEPLOY_WORKER = """
import json, os
from deploy_mcp.docker.runtime import DockerRuntime
own = [f"{k}={v}" for k, v in json.loads(os.environ["MCS_WORKER_LABELS"]).items()]
every = DockerRuntime.workers
def workers(self, task_name=None):
    mine = {c.id for c in self.client.containers.list(all=True, filters={"label": own}, ignore_removed=True)}
    return [h for h in every(self, task_name) if h.id in mine]
DockerRuntime.workers = workers
from deploy_mcp.deploy_worker import main
main()
"""


class DeployWorker:
    """The real deploy worker in a process of its own (see DEPLOY_WORKER)."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", DEPLOY_WORKER], cwd=PROJECT_ROOT, env=process_env(self.settings),
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip
        state = DeployWorkerState(self.settings)
        wait_until(lambda: state.alive() or self.proc.poll() is not None, "the deploy worker started", 60)
        if self.proc.poll() is not None:
            raise RuntimeError(f"the deploy worker exited: {self.log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc.pid, child=self.proc)
            self.proc = None


def generate(settings: Settings) -> None:
    generate_task_folder(
        settings, task_name=TASK, description="sleeps", queue=QUEUE, return_type="float",
        parameters=[{"name": "seconds", "type": "float"}], function_body=SLEEP_BODY, overwrite=True,
        tasks=[
            {"task_name": SPIN, "description": "spins", "parameters": [{"name": "n", "type": "int"}],
             "function_body": SPIN_BODY, "return_type": "float"},
            {"task_name": NOOP, "description": "nothing", "function_body": "return 1", "return_type": "int"},
        ],
    )  # fmt: skip


async def tool(client: Client, name: str, args: dict[str, Any], timeout_s: float = 900) -> dict[str, Any]:
    result = await client.call_tool(name, args, read_timeout_seconds=timeout_s)
    out = data(result)
    if result.is_error:
        raise RuntimeError(f"{name}({args}) failed: {json.dumps(out)[:2000]}")
    return out


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.05)


class Bench:
    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client
        self.cores = os.cpu_count() or 1
        self.registry = TaskRegistry(settings)
        self.docker = docker.from_env()
        self.broker = make_client(settings, settings.redis_broker_db)
        self.out: dict[str, Any] = {}

    # -- layout ---------------------------------------------------------------------------------------------

    async def deploy(self, replicas: int, concurrency: int) -> None:
        args = {"task_name": TASK, "queue": QUEUE, "replicas": replicas, "concurrency": concurrency}
        await tool(self.client, "deploy_task", args)
        await self.running(replicas)

    async def scale(self, replicas: int) -> None:
        await tool(self.client, "scale_task", {"task_name": TASK, "replicas": replicas})
        await self.running(replicas)

    async def workers(self) -> list[dict[str, Any]]:
        listing = await tool(self.client, "list_deployments", {})
        return next(d for d in listing["deployments"] if d["task_name"] == TASK)["workers"]

    async def running(self, replicas: int) -> None:
        """Until ``replicas`` workers run and no other container of the task is left (a previous version retires,
        or a replica beyond the count stops, in the background): nothing else takes CPU from what is measured."""
        deadline = time.monotonic() + 120
        while (
            sum(w["state"] == "RUNNING" for w in await self.workers()) < replicas or len(self.containers()) > replicas
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{replicas} replicas of {TASK} not running: {await self.workers()}")
            await asyncio.sleep(0.2)

    def serving(self, task: str) -> tuple[str, str]:
        """(key prefix, serving queue) of a deployed task, from its registry record."""
        dep = self.registry.get(task).deployment
        assert dep is not None and dep.key_prefix and dep.serve_queue, dep
        return dep.key_prefix, dep.serve_queue

    def containers(self) -> list[Any]:
        labels = [f"{k}={v}" for k, v in LABELS.items()] + [f"mcs.task={TASK}"]
        return self.docker.containers.list(all=True, filters={"label": labels}, ignore_removed=True)

    # -- 1. capacity layouts --------------------------------------------------------------------------------

    async def trigger_sleep(self, seconds: float) -> float:
        started = time.perf_counter()
        await tool(self.client, "trigger_celery_task", {"task_name": TASK, "kwargs": {"seconds": seconds}})
        return time.perf_counter() - started

    async def makespan(self, replicas: int, concurrency: int) -> None:
        await asyncio.gather(*(self.trigger_sleep(0.05) for _ in range(8)))  # every pool process warm
        alone = statistics.median([await self.trigger_sleep(1.0) for _ in range(2)])
        started = time.perf_counter()
        await asyncio.gather(*(self.trigger_sleep(1.0) for _ in range(8)))
        eight = time.perf_counter() - started
        key = f"{replicas}x{concurrency}"
        self.out[f"alone.{key}"] = alone
        self.out[f"eight.{key}"] = eight
        self.out[f"makespan.{key}"] = eight / alone
        print(f"  layout {key}: one 1 s call {alone:.3f} s, 8 concurrent {eight:.3f} s", flush=True)

    # -- 2. CPU-bound throughput ----------------------------------------------------------------------------

    async def spin_once(self, n: int) -> float:
        result = await tool(self.client, "trigger_celery_task", {"task_name": SPIN, "kwargs": {"n": n}})
        return float(result["result"])

    async def calibrate_spin(self) -> int:
        """Iterations of the busy loop that take about SPIN_TARGET_S in a worker: sized on the host, then
        corrected by what the worker itself measures."""
        n, took = 100_000, 0.0
        while took < 0.05:
            n *= 2
            started = time.perf_counter()
            x = 0
            for i in range(n):
                x += i
            took = time.perf_counter() - started
        n = int(n * SPIN_TARGET_S / took)
        for _ in range(3):  # the quickest of 5: the machine is shared, what is slower was disturbed
            inside = min([await self.spin_once(n) for _ in range(5)])
            if abs(inside - SPIN_TARGET_S) < 0.05 * SPIN_TARGET_S:
                break
            n = int(n * SPIN_TARGET_S / inside)
        self.out["spin.n"] = n
        self.out["spin.s"] = statistics.median([await self.spin_once(n) for _ in range(5)])
        return n

    async def spin_throughput(self, replicas: int, n: int) -> None:
        started = time.perf_counter()
        sent = await asyncio.gather(
            *(tool(self.client, "send_celery_task", {"task_name": SPIN, "kwargs": {"n": n}}) for _ in range(SPIN_CALLS))
        )
        ids = [s["task_id"] for s in sent]
        while True:
            got = await tool(self.client, "get_celery_result", {"task_ids": ids, "wait_s": 60})
            if got["counts"]["ready"] == len(ids):
                break
        elapsed = time.perf_counter() - started
        assert all(r["status"] == "SUCCESS" for r in got["results"]), got["counts"]
        self.out.setdefault(f"spin.rates.{replicas}", []).append(SPIN_CALLS / elapsed)
        print(f"  {replicas} replica(s): {SPIN_CALLS} calls in {elapsed:.2f} s", flush=True)

    # -- 3. send rate ---------------------------------------------------------------------------------------

    async def send_rates(self, noop: Client, sends: int) -> None:
        prefix, queue = self.serving(NOOP)
        app = create_celery_app(self.settings, key_prefix=prefix)
        blocker = await tool(self.client, "send_celery_task", {"task_name": TASK, "kwargs": {"seconds": 200}})
        wait_until(lambda: queue_depth(self.settings, prefix, queue, self.broker) == 0, "the long call started")

        async def mcs_send(_: int) -> None:
            result = await self.client.call_tool("send_celery_task", {"task_name": NOOP})
            assert not result.is_error, data(result)

        async def noop_call(_: int) -> None:
            await noop.call_tool("noop", {})

        def publish(_: int) -> None:
            app.send_task(f"mcp_app.{NOOP}", queue=queue)

        for i in range(20):  # warm-up: connections, the liveness ping, the producer pool
            await mcs_send(i)
            await noop_call(i)
            publish(i)
        n = max(IN_FLIGHT, sends // SEND_ROUNDS)
        rates: dict[str, list[float]] = {}
        pool = ThreadPoolExecutor(IN_FLIGHT)
        try:
            for _ in range(SEND_ROUNDS):
                for name, fn in (("noop", noop_call), ("publish", publish), ("mcs", mcs_send)):
                    rates.setdefault(f"seq.{name}", []).append(await sequential(fn, n))
                    if name == "publish":
                        rate = await asyncio.to_thread(threaded, pool, publish, n)
                    else:
                        rate = await in_flight(fn, n)
                    rates.setdefault(f"flight.{name}", []).append(rate)
        finally:
            pool.shutdown()
        med = {k: statistics.median(v) for k, v in rates.items()}
        for mode in ("seq", "flight"):
            publish_rate = med["seq.publish"] if mode == "seq" else max(med["seq.publish"], med["flight.publish"])
            baseline = 1 / (1 / med[f"{mode}.noop"] + 1 / publish_rate)
            self.out[f"send.{mode}.noop"] = med[f"{mode}.noop"]
            self.out[f"send.{mode}.publish"] = med[f"{mode}.publish"]
            self.out[f"send.{mode}.baseline"] = baseline
            self.out[f"send.{mode}.mcs"] = med[f"{mode}.mcs"]
            self.out[f"send.{mode}.ratio"] = med[f"{mode}.mcs"] / baseline
            print(
                f"  {mode}: no-op {med[f'{mode}.noop']:.0f}/s, publish {med[f'{mode}.publish']:.0f}/s, baseline "
                f"{baseline:.0f}/s, send_celery_task {med[f'{mode}.mcs']:.0f}/s",
                flush=True,
            )
        await tool(self.client, "cancel_celery_task", {"task_id": blocker["task_id"], "terminate": True})
        wait_until(lambda: queue_depth(self.settings, prefix, queue, self.broker) == 0, "the sent calls ran", 300)
        await tool(self.client, "trigger_celery_task", {"task_name": NOOP, "timeout_s": 120})

    # -- 4. memory, cold start, swarm -----------------------------------------------------------------------

    async def idle_memory(self, concurrency: int) -> None:
        """MiB per worker (usage minus page cache) of the serving version's containers, once idle."""
        ids = [w["id"] for w in await self.workers()]
        used = []
        for container_id in ids:
            stats = self.docker.containers.get(container_id).stats(stream=False)
            memory = stats["memory_stats"]
            inner = memory.get("stats", {})
            cache = inner.get("cache", inner.get("inactive_file", 0))  # cgroup v1, v2
            used.append((memory["usage"] - cache) / 2**20)
        self.out[f"memory.c{concurrency}"] = statistics.mean(used)
        self.out[f"memory.task.c{concurrency}"] = sum(used)
        print(f"  concurrency {concurrency}: {', '.join(f'{u:.1f}' for u in used)} MiB per worker", flush=True)

    async def cold_start(self, rounds: int = 2) -> None:
        times = []
        for _ in range(rounds):
            await self.scale(0)  # returns once no container of the task is left
            started = time.perf_counter()
            await tool(self.client, "trigger_celery_task", {"task_name": NOOP, "timeout_s": 120})
            times.append(time.perf_counter() - started)
        self.out["cold_start"] = statistics.median(times)
        self.out["cold_start.rounds"] = times
        print(f"  cold start: {', '.join(f'{t:.2f}' for t in times)} s", flush=True)


async def sequential(fn: Callable[[int], Any], n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        out = fn(i)
        if asyncio.iscoroutine(out):
            await out
    return n / (time.perf_counter() - started)


async def in_flight(fn: Callable[[int], Awaitable[None]], n: int, width: int = IN_FLIGHT) -> float:
    async def lane(k: int) -> None:
        for i in range(k, n, width):
            await fn(i)

    started = time.perf_counter()
    await asyncio.gather(*(lane(k) for k in range(width)))
    return n / (time.perf_counter() - started)


def threaded(pool: ThreadPoolExecutor, fn: Callable[[int], None], n: int) -> float:
    started = time.perf_counter()
    list(pool.map(fn, range(n)))
    return n / (time.perf_counter() - started)


def swarm_row(settings: Settings, tmp: Path) -> dict[str, Any]:
    """Cold deploy on swarm and on docker (bench_swarm.py, one round), or why it was skipped."""
    if os.environ.get("MCS_BENCH_SWARM") != "1":
        return {"swarm.note": "skipped: set MCS_BENCH_SWARM=1 (needs a swarm manager and a registry)"}
    swarm = docker.from_env().info().get("Swarm", {})
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        return {"swarm.note": "skipped: this Docker daemon is not a swarm manager (docker swarm init)"}
    registry = settings.swarm_registry.split("/")[0]
    if not registry.startswith(("127.0.0.1:", "localhost:")):
        return {"swarm.note": f"skipped: the registry {registry} is not on loopback"}
    try:
        urllib.request.urlopen(f"http://{registry}/v2/", timeout=2).close()  # loopback only (checked above)
    except OSError as exc:
        return {"swarm.note": f"skipped: no registry answers at {registry} ({exc})"}
    script = Path(__file__).with_name("bench_swarm.py")
    if not script.exists():
        return {"swarm.note": "skipped: bench/bench_swarm.py is not there"}
    out = tmp / "swarm.json"
    run = subprocess.run(
        [sys.executable, str(script), "--rounds", "1", "--json", str(out)], capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    if run.returncode != 0 or not out.exists():
        return {"swarm.note": f"skipped: bench_swarm.py failed ({run.stderr.strip().splitlines()[-1:]})"}
    medians = json.loads(out.read_text())["medians"]
    docker_s, swarm_s = medians["docker"]["cold_s"], medians["swarm"]["cold_s"]
    return {"swarm.docker_s": docker_s, "swarm.swarm_s": swarm_s, "swarm.ratio": swarm_s / docker_s}


async def run(settings: Settings, sends: int, skip_send: bool) -> dict[str, Any]:
    generate(settings)
    noop_params = StdioServerParameters(command=sys.executable, args=["-c", NOOP_SERVER])
    async with stdio_client(settings) as client, Client(noop_params) as noop:
        bench = Bench(settings, client)
        cores = bench.cores
        print("1 x 1: deploy, idle memory, send rate, layout", flush=True)
        await bench.deploy(1, 1)
        await tool(client, "trigger_celery_task", {"task_name": NOOP})
        await bench.idle_memory(1)
        if not skip_send:
            await bench.send_rates(noop, sends)
        await bench.makespan(1, 1)
        print("capacity layouts", flush=True)
        for replicas, concurrency in LAYOUTS[1:]:
            if concurrency == 1:
                await bench.scale(replicas)
            else:
                await bench.deploy(replicas, concurrency)
            if concurrency == 4:
                await bench.idle_memory(4)
            await bench.makespan(replicas, concurrency)
        print("CPU-bound calls", flush=True)
        await bench.deploy(1, 1)
        n = await bench.calibrate_spin()
        for _ in range(SPIN_ROUNDS):  # interleaved: the machine is shared, the better round of each counts
            for replicas in range(1, cores + 1):
                await bench.scale(replicas)
                await bench.spin_throughput(replicas, n)
        for replicas in range(1, cores + 1):
            bench.out[f"spin.rate.{replicas}"] = max(bench.out.pop(f"spin.rates.{replicas}"))
            bench.out[f"spin.ratio.{replicas}"] = bench.out[f"spin.rate.{replicas}"] / bench.out["spin.rate.1"]
        print("cold start", flush=True)
        await bench.scale(1)
        await bench.cold_start()
        await tool(client, "undeploy_task", {"task_name": TASK})
        bench.out["cores"] = cores
        return bench.out


# --- report ------------------------------------------------------------------------------------------------------


def print_table(out: dict[str, Any], before: dict[str, Any] | None) -> None:
    rows: list[tuple[str, str | None, str, float | None, str]] = [
        # label, key (None: a heading), format, target, "<=" or ">="
        ("1. 8 concurrent 1 s calls: makespan / one call alone", None, "", None, ""),
    ]
    for replicas, concurrency in LAYOUTS:
        key = f"{replicas}x{concurrency}"
        what = " (baseline)" if key == "1x1" else ""
        rows.append((f"  {replicas} replica(s) x {concurrency}{what}", f"makespan.{key}", "x", None, ""))
        if key != "1x1":
            rows[-1] = (*rows[-1][:3], 1.25, "<=")
    rows.append(("  one 1 s call alone, 1 x 1 (s)", "alone.1x1", "s", None, ""))
    spin = f"{out.get('spin.s', 0):.3f} s each, loop of {out.get('spin.n', 0):,}"
    rows.append((f"2. {SPIN_CALLS} CPU-bound calls ({spin}), concurrency 1", None, "", None, ""))
    for replicas in range(1, int(out.get("cores", 1)) + 1):
        rows.append((f"  {replicas} replica(s): calls/s", f"spin.rate.{replicas}", "/s", None, ""))
        if replicas > 1:
            rows.append(("    / 1 replica", f"spin.ratio.{replicas}", "x", None, ""))
    rows.append(("3. send_celery_task, one MCP session (calls/s)", None, "", None, ""))
    for mode, title in (("seq", "sequential"), ("flight", f"{IN_FLIGHT} in flight")):
        rows += [
            (f"  {title}: no-op MCP tool", f"send.{mode}.noop", "/s", None, ""),
            (f"  {title}: raw Celery publish", f"send.{mode}.publish", "/s", None, ""),
            (f"  {title}: baseline 1/(no-op + publish)", f"send.{mode}.baseline", "/s", None, ""),
            (f"  {title}: send_celery_task", f"send.{mode}.mcs", "/s", None, ""),
            ("    / baseline", f"send.{mode}.ratio", "x", 0.8, ">="),
        ]
    rows += [
        ("4. idle memory per worker, concurrency 1 (MiB)", "memory.c1", "MiB", None, ""),
        ("   idle memory per worker, concurrency 4 (MiB)", "memory.c4", "MiB", None, ""),
        ("   idle memory of the task, 2 x 4 (MiB)", "memory.task.c4", "MiB", None, ""),
        ("   cold start, 0 replicas -> first answer (s)", "cold_start", "s", None, ""),
        ("   cold deploy on docker (s, bench_swarm.py)", "swarm.docker_s", "s", None, ""),
        ("   cold deploy on swarm (s, bench_swarm.py)", "swarm.swarm_s", "s", None, ""),
        ("     swarm / docker", "swarm.ratio", "x", None, ""),
    ]

    def shown(value: Any) -> str:
        if value is None:
            return f"{'-':>9}"
        return f"{value:>9}" if isinstance(value, str) else f"{value:9.3f}" if value < 100 else f"{value:9.0f}"

    print(f"\n{'measurement':58} {'issue':>9} {'before':>9} {'this run':>9}  target")
    for label, key, _unit, target, sense in rows:
        if key is None:
            print(label)
            continue
        if key not in out:
            continue
        value = out[key]
        verdict = ""
        if target is not None:
            met = value <= target if sense == "<=" else value >= target
            verdict = f"{sense} {target:g}  {'MET' if met else 'MISSED'}"
        old = before.get(key) if before else None
        print(f"{label:58} {shown(ISSUE_BEFORE.get(key))} {shown(old)} {shown(value)}  {verdict}")
    if "swarm.note" in out:
        print(f"   swarm against docker: {out['swarm.note']}")


def cleanup(settings: Settings) -> None:
    """Remove what this run left: its containers and images (by the run's label), never another's."""
    client = docker.from_env()
    labels = [f"{k}={v}" for k, v in LABELS.items()]
    for container in client.containers.list(all=True, filters={"label": labels}, ignore_removed=True):
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
    for image in client.images.list(filters={"label": labels}):
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(image.id, force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=1000, help="send_celery_task calls per mode (and baselines)")
    parser.add_argument("--skip-send", action="store_true", help="leave out the send rates (section 3)")
    parser.add_argument("--json", type=Path, help="write this run's figures to this file")
    parser.add_argument("--before", type=Path, help="an earlier run's --json file, printed next to this run")
    args = parser.parse_args()
    before = json.loads(args.before.read_text()) if args.before else None
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        password = secrets.token_hex(16)
        server = LocalRedisServer(tmp_path / "redis", password=password, unix_socket=tmp_path / "s" / "r.sock").start()
        settings = Settings(
            _env_file=None, redis_port=server.port, redis_password=password, redis_socket=server.unix_socket,
            metadata_prefix=f"mcs-bench-{RUN}:", worker_runtime="docker", generated_tasks_dir=tmp_path / "generated",
            deployments_dir=tmp_path / "deployments", deploy_secret_file=tmp_path / "secret",
            state_dir=tmp_path / "state", worker_labels=LABELS, health_timeout_s=120,
        )  # fmt: skip
        ensure_base_image(settings)
        deploy_worker = DeployWorker(settings, tmp_path / "deploy_worker.log")
        try:
            deploy_worker.start()
            out = asyncio.run(run(settings, args.sends, args.skip_send))
            out.update(swarm_row(settings, tmp_path))
        except BaseException:
            with contextlib.suppress(OSError):
                kept = Path(tempfile.gettempdir()) / "bench_scale_deploy_worker.log"
                shutil.copyfile(tmp_path / "deploy_worker.log", kept)
                print(f"the deploy worker's log: {kept}", file=sys.stderr)
            raise
        finally:
            deploy_worker.stop()
            server.stop()
            cleanup(settings)
    out["measured_at"] = time.time()
    print_table(out, before)
    print(f"\n({time.monotonic() - started:.0f} s, {out['cores']} cores)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
