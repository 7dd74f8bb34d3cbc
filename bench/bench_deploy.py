"""Deploy benchmark (Docker) against a baseline measured in the same run.

    .venv/bin/python bench/bench_deploy.py [--rounds 3] [--json out.json] [--before before.json]

Starts a private Redis and the deploy worker (its start script), talks to mcp_server.py over stdio like an agent.
For each round, with fresh file contents so that no build cache helps either side:
- baseline: `docker build` + `docker run` (Docker CLI) of the same folder with the same Dockerfile, plus the time
  until the worker answers a Celery ping;
- MCS cold deploy: deploy_task of a task not deployed yet (build, hardened run, health check, registry);
- MCS unchanged redeploy: deploy_task of the same files again;
- MCS changed redeploy: deploy_task after a one-line change (blue-green: includes what the retirement of the old
  worker costs on the deploy's path today);
- rollback: rollback_task to the cold deploy's version (kept, no rebuild), through the same MCP path;
- changed redeploy with a test case (deploy_task with `tests`): against the changed redeploy without one;
- MCS cold deploy under gVisor (when dockerd has the runsc runtime): the same, with sandbox "gvisor";
- with numpy==2.2.6 (a third-party requirement; the package index is needed): the first deploy of the requirement
  set (nothing of it known: wheelhouse resolved, dependencies installed), a code-only change of that task, a second
  task with the same requirement set, that task again unchanged, and a first deploy with only the wheelhouse
  known (its dependency image forgotten).
Then where a worker's time from `docker start` to its first answer goes (timestamps written by the worker's own
process, the health probe's answer), and the call round trip (send_task + get under the task's prefix) to a
confined worker under runc and under gVisor, interleaved. MCS's workers are confined (their own Redis user, no
network, Redis through its unix socket); the baseline container is not.

Prints medians and the ratios against the targets. `--json` keeps the medians, `--before` prints an earlier run's
medians (for instance one made before a change) next to this run's.
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
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from deploy_mcp.docker.base_image import ensure_base_image
from deploy_mcp.docker.runtime import TMPFS
from deploy_mcp.health import probe_timeouts, registered_tasks
from mcs.codegen import generate_task_folder
from mcs.core.celery_app import PrefixedApps, create_celery_app, task_key_prefix, version_queue
from mcs.core.settings import Settings
from mcs.core.worker_image import render_dockerfile, worker_command
from mcs.stack import Stack
from Redis.server import LocalRedisServer
from tests.mcp_clients import stdio_client

TASK, QUEUE = "bench_add", "bench_q"
PARAMS = [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]
LABEL = {"mcs.bench": "1"}
NUMPY = ["numpy==2.2.6"]
NP_TASK, NP_QUEUE = "bench_np", "bench_np_q"
NP_TASK2, NP_QUEUE2 = "bench_np_two", "bench_np_two_q"
NP_BODY = "import numpy\n# {nonce}\nreturn int(numpy.add(a, b))"
CASES = [{"args": [2, 3], "expect": 5}]


def generate(
    settings: Settings,
    nonce: str,
    task: str = TASK,
    queue: str = QUEUE,
    requirements: list[str] | None = None,
    body: str = "# {nonce}\nreturn a + b",
) -> Path:
    result = generate_task_folder(
        settings, task_name=task, description="bench", parameters=PARAMS, queue=queue, return_type="int",
        function_body=body.format(nonce=nonce), requirements=requirements, overwrite=True,
    )  # fmt: skip
    return Path(result.folder)


def baseline(settings: Settings, folder: Path, app) -> float:
    """docker build + docker run with the CLI, then wait for the worker's first answer."""
    tag = f"mcs-bench-baseline:{uuid.uuid4().hex[:8]}"
    name = f"mcs-bench-baseline-{uuid.uuid4().hex[:8]}"
    hostname = f"baseline-{uuid.uuid4().hex[:6]}@bench"
    (folder / "Dockerfile").write_text(render_dockerfile(settings, QUEUE, has_requirements=False))
    start = time.perf_counter()
    try:
        subprocess.run(["docker", "build", "-q", "--network", "none", "--label", "mcs.bench=1", "-t", tag,
                        str(folder)], check=True, capture_output=True)  # fmt: skip
        command = worker_command(QUEUE, hostname)  # the same worker command line MCS runs
        command[command.index("-Q") + 1] = f"{QUEUE}_baseline"
        env_file = folder.parent / f".{name}.env"  # the password in a 0600 file, not on a command line
        env_file.touch(mode=0o600)
        password = settings.redis_password.get_secret_value() if settings.redis_password else ""
        env_file.write_text(f"REDIS_PORT={settings.redis_port}\nREDIS_PASSWORD={password}\n")
        subprocess.run(["docker", "run", "-d", "--name", name, "--network", "host", "--label", "mcs.bench=1",
                        "--env-file", str(env_file), tag, *command], check=True, capture_output=True)  # fmt: skip
        env_file.unlink()
        while not app.control.ping(destination=[hostname], timeout=0.2):
            pass
        return time.perf_counter() - start
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


GVISOR_TASK, GVISOR_QUEUE = "bench_gv", "bench_gv_q"
ROUND_TRIPS = 100


def round_trips(settings: Settings, tasks: list[tuple[str, str]]) -> dict[str, list[float]]:
    """Seconds per send_task().get() to each deployed (task, serving version's queue), interleaved, under each
    task's prefix (as MCS's own calls go)."""
    apps = {task: create_celery_app(settings, key_prefix=task_key_prefix(settings, task)) for task, _ in tasks}
    times: dict[str, list[float]] = {task: [] for task, _ in tasks}
    for i in range(ROUND_TRIPS + 5):
        for task, queue in tasks:
            start = time.perf_counter()
            assert apps[task].send_task(f"mcp_app.{task}", args=[i, 1], queue=queue).get(timeout=30) == i + 1
            if i >= 5:  # warm-up: connections, the result consumer's subscription
                times[task].append(time.perf_counter() - start)
    return times


def forget_requirement_set(settings: Settings, home: Path, wheelhouse_too: bool) -> None:
    """Make the next deploy with numpy a first one: the bench's dependency images (label mcs.deps=1 plus the
    bench's label) and, with ``wheelhouse_too``, the resolved wheelhouses (the deploy worker's own cache, and the
    per-user cache older versions used, under the deploy worker's HOME, which is the bench's)."""
    listing = subprocess.run(
        ["docker", "images", "-q", "--no-trunc", "--filter", "label=mcs.deps=1", "--filter", "label=mcs.bench=1"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    for image in dict.fromkeys(listing):
        subprocess.run(["docker", "rmi", image], capture_output=True, check=False)
    if wheelhouse_too:
        shutil.rmtree(settings.deployments_dir / ".wheelhouses", ignore_errors=True)
        shutil.rmtree(home / ".cache" / "mcs" / "wheels", ignore_errors=True)


async def timed(client, tool: str, args: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    result = (await client.call_tool(tool, args, read_timeout_seconds=900)).structured_content
    return time.perf_counter() - start, result


async def mcs_deploys(settings: Settings, rounds: int, app, gvisor: bool, home: Path) -> dict[str, list]:
    out: dict[str, list] = {
        k: []
        for k in (
            "baseline", "cold", "unchanged", "changed", "rollback", "changed_tests", "steps", "changed_steps",
            "cold_gvisor", "np_first", "np_code", "np_second", "np_unchanged", "np_first_wheels", "np_steps",
            "np_code_steps", "np_second_steps",
        )
    }  # fmt: skip
    deploy_args = {"task_name": TASK, "description": "bench", "parameters": PARAMS, "queue": QUEUE}
    gvisor_args = {**deploy_args, "task_name": GVISOR_TASK, "queue": GVISOR_QUEUE, "sandbox": "gvisor"}
    np_args = {**deploy_args, "task_name": NP_TASK, "queue": NP_QUEUE}
    np_args2 = {**deploy_args, "task_name": NP_TASK2, "queue": NP_QUEUE2}
    async with stdio_client(settings) as client:
        for i in range(rounds):
            folder = generate(settings, f"baseline {i} {uuid.uuid4()}")
            out["baseline"].append(baseline(settings, folder, app))
            (folder / "Dockerfile").unlink()
            generate(settings, f"cold {i} {uuid.uuid4()}")
            seconds, cold = await timed(client, "deploy_task", deploy_args)
            out["cold"].append(seconds)
            assert cold["success"] and not cold["reused"], cold
            out["steps"].append(cold["timings_ms"])
            seconds, same = await timed(client, "deploy_task", deploy_args)
            out["unchanged"].append(seconds)
            assert same["reused"], same
            generate(settings, f"changed {i} {uuid.uuid4()}")
            seconds, changed = await timed(client, "deploy_task", deploy_args)
            out["changed"].append(seconds)
            out["changed_steps"].append(changed["timings_ms"])
            assert changed["success"] and not changed["reused"], changed
            seconds, back = await timed(client, "rollback_task", {"task_name": TASK, "version": cold["version"]})
            assert back["success"] and back["version"] == cold["version"], back
            out["rollback"].append(seconds)
            generate(settings, f"changed tests {i} {uuid.uuid4()}")
            seconds, tested = await timed(client, "deploy_task", {**deploy_args, "tests": CASES})
            assert tested["success"] and not tested["reused"], tested
            out["changed_tests"].append(seconds)
            serving = {TASK: tested["version"]}
            if gvisor:
                generate(settings, f"gvisor {i} {uuid.uuid4()}", GVISOR_TASK, GVISOR_QUEUE)
                seconds, cold = await timed(client, "deploy_task", gvisor_args)
                out["cold_gvisor"].append(seconds)
                assert cold["success"] and cold["isolation"] == "gvisor", cold
                serving[GVISOR_TASK] = cold["version"]

            # A third-party requirement: numpy.
            forget_requirement_set(settings, home, wheelhouse_too=True)
            generate(settings, f"np first {i} {uuid.uuid4()}", NP_TASK, NP_QUEUE, NUMPY, NP_BODY)
            seconds, first = await timed(client, "deploy_task", np_args)
            assert first["success"] and not first["reused"], first
            out["np_first"].append(seconds)
            out["np_steps"].append(first["timings_ms"])
            generate(settings, f"np code {i} {uuid.uuid4()}", NP_TASK, NP_QUEUE, NUMPY, NP_BODY)
            seconds, code = await timed(client, "deploy_task", np_args)
            assert code["success"] and not code["reused"], code
            out["np_code"].append(seconds)
            out["np_code_steps"].append(code["timings_ms"])
            generate(settings, f"np second {i} {uuid.uuid4()}", NP_TASK2, NP_QUEUE2, NUMPY, NP_BODY)
            seconds, second = await timed(client, "deploy_task", np_args2)
            assert second["success"] and not second["reused"], second
            out["np_second"].append(seconds)
            out["np_second_steps"].append(second["timings_ms"])
            seconds, same = await timed(client, "deploy_task", np_args2)
            assert same["reused"], same
            out["np_unchanged"].append(seconds)
            for task in (NP_TASK, NP_TASK2):
                await client.call_tool("undeploy_task", {"task_name": task})
            forget_requirement_set(settings, home, wheelhouse_too=False)
            generate(settings, f"np wheels {i} {uuid.uuid4()}", NP_TASK, NP_QUEUE, NUMPY, NP_BODY)
            seconds, again = await timed(client, "deploy_task", np_args)
            assert again["success"] and not again["reused"], again
            out["np_first_wheels"].append(seconds)
            await client.call_tool("undeploy_task", {"task_name": NP_TASK})

            if i < rounds - 1:
                # The next round's cold deploy starts from nothing, like the baseline: no previous worker to retire.
                await client.call_tool("undeploy_task", {"task_name": TASK})
                if gvisor:
                    await client.call_tool("undeploy_task", {"task_name": GVISOR_TASK})
        tasks = [(TASK, QUEUE)] + ([(GVISOR_TASK, GVISOR_QUEUE)] if gvisor else [])
        out["trips"] = [round_trips(settings, [(task, version_queue(queue, serving[task])) for task, queue in tasks])]
        for task, _ in tasks:
            await client.call_tool("undeploy_task", {"task_name": task})
    forget_requirement_set(settings, home, wheelhouse_too=True)
    return out


# --- where a worker's start time goes ----------------------------------------------------------------------------

#: Runs as the container's command instead of `celery` itself: the same worker, with timestamps written straight to
#: the container's stdout (fd 1: Celery redirects sys.stdout to its logger) at each phase.
STAMPED_WORKER = r"""
import os, sys, time
def _stamp(what, **_):
    os.write(1, ("MCS-STAMP %s %r\n" % (what, time.time())).encode())
_stamp("python")
from celery import signals
_stamp("celery")
from celery.bin.celery import main
_stamp("celery_cli")
sys.path.insert(0, "/app")
__import__(sys.argv[1])
_stamp("app_module")
for _name in ("worker_init", "worker_process_init", "worker_ready"):
    getattr(signals, _name).connect(lambda _n=_name, **kw: _stamp(_n), weak=False)
sys.argv = ["celery", *sys.argv[2:]]
main()
"""
PHASES = (
    ("container created", "created"),
    ("container started (start call returned)", "started"),
    ("python running", "python"),
    ("celery imported", "celery"),
    ("celery command line imported", "celery_cli"),
    ("app module imported", "app_module"),
    ("worker initialised", "worker_init"),
    ("pool child running", "worker_process_init"),
    ("worker ready (broker, remote control)", "worker_ready"),
    ("first answer to the health probe", "answer"),
)


def startup_breakdown(settings: Settings, rounds: int) -> dict[str, float]:
    """Medians, in seconds since the container's create call, of each phase of a worker's start (one image built
    from a generated folder, hardened like MCS's workers, network host), and of its first answer to the health
    probe the deploy worker uses (deploy_mcp.health.registered_tasks in wait_healthy's loop)."""
    client = docker.from_env()
    folder = generate(settings, f"startup {uuid.uuid4()}")
    tag = f"mcs-bench-startup:{uuid.uuid4().hex[:8]}"
    (folder / "Dockerfile").write_text(render_dockerfile(settings, QUEUE, has_requirements=False))
    subprocess.run(["docker", "build", "-q", "--network", "none", "--label", "mcs.bench=1", "-t", tag, str(folder)],
                   check=True, capture_output=True)  # fmt: skip
    apps = PrefixedApps(settings)
    password = settings.redis_password.get_secret_value() if settings.redis_password else ""
    samples: list[dict[str, float]] = []
    try:
        for _ in range(rounds):
            hostname = f"startup-{uuid.uuid4().hex[:6]}@bench"
            command = worker_command(QUEUE, hostname)
            command[command.index("-Q") + 1] = f"{QUEUE}_startup"
            t0 = time.time()
            container = client.containers.create(
                tag, command=["python", "-c", STAMPED_WORKER, f"app_{QUEUE}", *command[1:]], user="10001:10001",
                read_only=True, tmpfs=dict(TMPFS), cap_drop=["ALL"], security_opt=["no-new-privileges"], init=True,
                network_mode="host", environment={"REDIS_PORT": str(settings.redis_port), "REDIS_PASSWORD": password},
                mem_limit=f"{settings.worker_mem_limit_mb}m", memswap_limit=f"{settings.worker_mem_limit_mb}m",
                nano_cpus=round(settings.worker_cpus * 1e9), pids_limit=settings.worker_pids_limit, labels=LABEL,
            )  # fmt: skip
            row = {"created": time.time() - t0}
            try:
                container.start()
                row["started"] = time.time() - t0
                deadline = time.monotonic() + 60
                for timeout in probe_timeouts():  # what wait_healthy asks, with its timeouts
                    if registered_tasks(apps, hostname, timeout) is not None:
                        break
                    assert time.monotonic() < deadline, container.logs().decode()[-2000:]
                row["answer"] = time.time() - t0
                for line in container.logs(stdout=True, stderr=False).decode().splitlines():
                    if line.startswith("MCS-STAMP "):
                        _, what, stamp = line.split()
                        row.setdefault(what, float(stamp) - t0)
            finally:
                container.remove(force=True)
            samples.append(row)
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
        apps.forget("")
    return {key: statistics.median(s[key] for s in samples if key in s) for _, key in PHASES if key in samples[0]}


# --- report ------------------------------------------------------------------------------------------------------


def medians(results: dict[str, list]) -> dict[str, float]:
    med = {k: statistics.median(v) for k, v in results.items() if v and not k.endswith("steps")}
    ratios = {
        "cold/baseline": ("cold", "baseline"),
        "changed/baseline": ("changed", "baseline"),
        "np_code/np_first": ("np_code", "np_first"),
        "np_second/np_first": ("np_second", "np_first"),
        "np_code/np_first_wheels": ("np_code", "np_first_wheels"),
        "np_second/np_first_wheels": ("np_second", "np_first_wheels"),
        "changed_tests/changed": ("changed_tests", "changed"),
        "cold_gvisor/cold": ("cold_gvisor", "cold"),
    }
    for name, (a, b) in ratios.items():
        if a in med and b in med:
            med[name] = med[a] / med[b]
    return med


ROWS: tuple[tuple[str, str, str, float | None], ...] = (
    # label, key, unit, target (upper bound)
    ("baseline: docker build + docker run + first answer", "baseline", "s", None),
    ("cold deploy, no third-party requirement", "cold", "s", None),
    ("  / baseline", "cold/baseline", "x", 0.8),
    ("changed redeploy, no third-party requirement", "changed", "s", None),
    ("  / baseline", "changed/baseline", "x", 1.0),
    ("unchanged redeploy", "unchanged", "s", 0.2),
    ("rollback to a kept version", "rollback", "s", None),
    ("changed redeploy with a test case", "changed_tests", "s", None),
    ("  / without", "changed_tests/changed", "x", None),
    ("cold deploy under gVisor", "cold_gvisor", "s", None),
    ("  / runc", "cold_gvisor/cold", "x", None),
    ("numpy: first deploy of the requirement set", "np_first", "s", None),
    ("numpy: code-only change", "np_code", "s", None),
    ("  / first", "np_code/np_first", "x", 0.35),
    ("numpy: second task, same requirement set", "np_second", "s", None),
    ("  / first", "np_second/np_first", "x", 0.5),
    ("numpy: unchanged redeploy", "np_unchanged", "s", 0.2),
    ("numpy: first deploy, wheelhouse already resolved", "np_first_wheels", "s", None),
    ("  code-only change / that", "np_code/np_first_wheels", "x", 0.35),
    ("  second task / that", "np_second/np_first_wheels", "x", 0.5),
)


def print_table(med: dict[str, float], before: dict[str, float] | None, rounds: int) -> None:
    print(f"\n{'measurement (median of ' + str(rounds) + ')':52} {'before':>8} {'after':>8}  target")
    for label, key, unit, target in ROWS:
        if key not in med:
            continue
        old = f"{before[key]:8.3f}" if before and key in before else f"{'-':>8}"
        verdict = ""
        if target is not None:
            verdict = f"<= {target:g}{' s' if unit == 's' else ' x'}  {'MET' if med[key] <= target else 'MISSED'}"
        print(f"{label:52} {old} {med[key]:8.3f}  {verdict}")


def print_steps(title: str, steps: list[dict[str, float]]) -> None:
    if steps:
        keys = [k for k in steps[0] if all(k in s for s in steps)]
        print(f"{title} (ms, median): " + ", ".join(f"{k} {statistics.median(s[k] for s in steps):.0f}" for k in keys))


def print_startup(after: dict[str, float], before: dict[str, float] | None) -> None:
    print(f"\n{'worker start (s since the create call, median)':52} {'before':>8} {'after':>8}")
    for label, key in PHASES:
        if key in after or (before and key in before):
            old = f"{before[key]:8.3f}" if before and key in before else f"{'-':>8}"
            new = f"{after[key]:8.3f}" if key in after else f"{'-':>8}"
            print(f"{label:52} {old} {new}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write this run's medians to this file")
    parser.add_argument("--before", type=Path, help="an earlier run's --json file, printed next to this run")
    args = parser.parse_args()
    rounds = args.rounds
    before = json.loads(args.before.read_text()) if args.before else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        password = secrets.token_hex(16)
        server = LocalRedisServer(tmp_path / "redis", password=password, unix_socket=tmp_path / "s" / "r.sock").start()
        settings = Settings(
            _env_file=None, redis_port=server.port, redis_password=password, redis_socket=server.unix_socket,
            metadata_prefix="mcs-bench:", worker_runtime="docker", generated_tasks_dir=tmp_path / "generated",
            deployments_dir=tmp_path / "deployments", deploy_secret_file=tmp_path / "secret", worker_labels=LABEL,
        )  # fmt: skip
        ensure_base_image(settings)
        runtimes = json.loads(subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"],
                                             capture_output=True, text=True, check=True).stdout)  # fmt: skip
        gvisor = "runsc" in runtimes
        home = tmp_path / "home"  # the deploy worker's HOME: no per-user cache of an earlier run helps it
        home.mkdir()
        stack = Stack(settings, say=lambda m: None)
        saved_home = os.environ.get("HOME")
        try:
            os.environ["HOME"] = str(home)
            try:
                stack.start_deploy_worker(tmp_path / "deploy_worker.log")
            finally:
                if saved_home is not None:
                    os.environ["HOME"] = saved_home
            results = asyncio.run(mcs_deploys(settings, rounds, create_celery_app(settings), gvisor, home))
            startup = startup_breakdown(settings, max(rounds, 5))
        except BaseException:
            with contextlib.suppress(OSError):
                kept = Path(tempfile.gettempdir()) / "bench_deploy_worker.log"
                shutil.copyfile(tmp_path / "deploy_worker.log", kept)
                print(f"the deploy worker's log: {kept}", file=sys.stderr)
            raise
        finally:
            stack.stop()
            server.stop()
    trips = results.pop("trips")[0]
    med = medians(results)
    med.update({f"startup.{k}": v for k, v in startup.items()})
    p50 = {task: statistics.median(v) * 1000 for task, v in trips.items()}
    p99 = {task: statistics.quantiles(v, n=100)[98] * 1000 for task, v in trips.items()}
    med.update({f"trip_p50.{task}": v for task, v in p50.items()})
    med["measured_at"] = time.time()  # type: ignore[assignment]
    print_table(med, before, rounds)
    print()
    print_steps("cold deploy steps", results["steps"])
    print_steps("changed redeploy steps", results["changed_steps"])
    print_steps("numpy first deploy steps", results["np_steps"])
    print_steps("numpy code-only change steps", results["np_code_steps"])
    print_steps("numpy second task steps", results["np_second_steps"])
    old_startup = {k.removeprefix("startup."): v for k, v in (before or {}).items() if k.startswith("startup.")}
    print_startup(startup, old_startup or None)
    print(f"\n{'call round trip, confined worker (ms)':52} {'p50':>8} {'p99':>8}")
    print(f"{'  runc':52} {p50[TASK]:8.2f} {p99[TASK]:8.2f}")
    if GVISOR_TASK in p50:
        ratio = p50[GVISOR_TASK] / p50[TASK]
        print(f"{'  gVisor':52} {p50[GVISOR_TASK]:8.2f} {p99[GVISOR_TASK]:8.2f}   ({ratio:.2f} x runc)")
    if args.json:
        args.json.write_text(json.dumps(med, indent=1, sort_keys=True) + "\n")
        print(f"\nmedians written to {args.json} ({datetime.now().isoformat(timespec='seconds')})")


if __name__ == "__main__":
    main()
