"""Deploy benchmark (Docker) against a baseline measured in the same run.

    .venv/bin/python bench/bench_deploy.py [--rounds 3]

Starts a private Redis and the deploy worker (its start script), talks to mcp_server.py over stdio like an agent.
For each round, with fresh file contents so that no build cache helps either side:
- baseline: `docker build` + `docker run` (Docker CLI) of the same folder with the same Dockerfile, plus the time
  until the worker answers a Celery ping;
- MCS cold deploy: deploy_task of a task not deployed yet (build, hardened run, health check, registry);
- MCS unchanged redeploy: deploy_task of the same files again;
- MCS changed redeploy: deploy_task after a one-line change (blue-green: includes the old worker's warm shutdown).
- MCS cold deploy under gVisor (when dockerd has the runsc runtime): the same, with sandbox "gvisor".
Then the call round trip (send_task + get under the task's prefix) to a confined worker under runc and under gVisor,
interleaved. MCS's workers are confined (their own Redis user, no network, Redis through its unix socket); the
baseline container is not. Prints medians, per-step timings of the cold deploy, and the ratios; targets: cold <= 1.3
x baseline, unchanged redeploy <= 0.2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy_mcp.docker.base_image import ensure_base_image
from mcs.codegen import generate_task_folder
from mcs.core.celery_app import create_celery_app, task_key_prefix
from mcs.core.settings import Settings
from mcs.core.worker_image import render_dockerfile, worker_command
from mcs.stack import Stack
from Redis.server import LocalRedisServer
from tests.mcp_clients import stdio_client

TASK, QUEUE = "bench_add", "bench_q"
PARAMS = [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]
LABEL = {"mcs.bench": "1"}


def generate(settings: Settings, nonce: str, task: str = TASK, queue: str = QUEUE) -> Path:
    result = generate_task_folder(
        settings, task_name=task, description="bench", parameters=PARAMS, queue=queue, return_type="int",
        function_body=f"# {nonce}\nreturn a + b", overwrite=True,
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
    """Seconds per send_task().get() to each deployed (task, queue), interleaved, under each task's prefix."""
    apps = {task: create_celery_app(settings, key_prefix=task_key_prefix(settings, task)) for task, _ in tasks}
    times: dict[str, list[float]] = {task: [] for task, _ in tasks}
    for i in range(ROUND_TRIPS + 5):
        for task, queue in tasks:
            start = time.perf_counter()
            assert apps[task].send_task(f"mcp_app.{task}", args=[i, 1], queue=queue).get(timeout=30) == i + 1
            if i >= 5:  # warm-up: connections, the result consumer's subscription
                times[task].append(time.perf_counter() - start)
    return times


async def mcs_deploys(settings: Settings, rounds: int, app, gvisor: bool) -> dict[str, list]:
    out: dict[str, list] = {"baseline": [], "cold": [], "unchanged": [], "changed": [], "steps": [], "cold_gvisor": []}
    deploy_args = {"task_name": TASK, "description": "bench", "parameters": PARAMS, "queue": QUEUE}
    gvisor_args = {**deploy_args, "task_name": GVISOR_TASK, "queue": GVISOR_QUEUE, "sandbox": "gvisor"}
    async with stdio_client(settings) as client:
        for i in range(rounds):
            folder = generate(settings, f"baseline {i} {uuid.uuid4()}")
            out["baseline"].append(baseline(settings, folder, app))
            (folder / "Dockerfile").unlink()
            generate(settings, f"cold {i} {uuid.uuid4()}")
            start = time.perf_counter()
            cold = (await client.call_tool("deploy_task", deploy_args)).structured_content
            out["cold"].append(time.perf_counter() - start)
            assert cold["success"] and not cold["reused"], cold
            out["steps"].append(cold["timings_ms"])
            start = time.perf_counter()
            same = (await client.call_tool("deploy_task", deploy_args)).structured_content
            out["unchanged"].append(time.perf_counter() - start)
            assert same["reused"], same
            generate(settings, f"changed {i} {uuid.uuid4()}")
            start = time.perf_counter()
            changed = (await client.call_tool("deploy_task", deploy_args)).structured_content
            out["changed"].append(time.perf_counter() - start)
            assert changed["success"] and not changed["reused"], changed
            if gvisor:
                generate(settings, f"gvisor {i} {uuid.uuid4()}", GVISOR_TASK, GVISOR_QUEUE)
                start = time.perf_counter()
                cold = (await client.call_tool("deploy_task", gvisor_args)).structured_content
                out["cold_gvisor"].append(time.perf_counter() - start)
                assert cold["success"] and cold["isolation"] == "gvisor", cold
            if i < rounds - 1:
                # The next round's cold deploy starts from nothing, like the baseline: no previous worker to retire.
                await client.call_tool("undeploy_task", {"task_name": TASK})
                if gvisor:
                    await client.call_tool("undeploy_task", {"task_name": GVISOR_TASK})
        tasks = [(TASK, QUEUE)] + ([(GVISOR_TASK, GVISOR_QUEUE)] if gvisor else [])
        out["trips"] = [round_trips(settings, tasks)]
        for task, _ in tasks:
            await client.call_tool("undeploy_task", {"task_name": task})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
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
        stack = Stack(settings, say=lambda m: None)
        try:
            stack.start_deploy_worker(tmp_path / "deploy_worker.log")
            results = asyncio.run(mcs_deploys(settings, rounds, create_celery_app(settings), gvisor))
        finally:
            stack.stop()
            server.stop()
    trips = results.pop("trips")[0]
    med = {k: statistics.median(v) for k, v in results.items() if k != "steps" and v}
    print(f"{'measurement (median of ' + str(rounds) + ')':48} {'seconds':>9}")
    print(f"{'baseline: docker build + docker run + first answer':48} {med['baseline']:9.3f}")
    print(f"{'MCS cold deploy (deploy_task, first version)':48} {med['cold']:9.3f}")
    print(f"{'MCS unchanged redeploy':48} {med['unchanged']:9.3f}")
    print(f"{'MCS changed redeploy (blue-green)':48} {med['changed']:9.3f}")
    ratio = med["cold"] / med["baseline"]
    print(f"{'ratio cold / baseline (target <= 1.3)':48} {ratio:9.3f}   {'MET' if ratio <= 1.3 else 'MISSED'}")
    unchanged_ok = "MET" if med["unchanged"] <= 0.2 else "MISSED"
    print(f"{'unchanged redeploy (target <= 0.2 s)':48} {med['unchanged']:9.3f}   {unchanged_ok}")
    steps = {k: statistics.median(s[k] for s in results["steps"]) for k in results["steps"][0]}
    print("cold deploy steps (ms, median): " + ", ".join(f"{k} {v:.0f}" for k, v in steps.items()))
    if "cold_gvisor" in med:
        ratio = med["cold_gvisor"] / med["cold"]
        print(f"{'MCS cold deploy under gVisor':48} {med['cold_gvisor']:9.3f}   ({ratio:.2f} x runc)")
    p50 = {task: statistics.median(v) * 1000 for task, v in trips.items()}
    p99 = {task: statistics.quantiles(v, n=100)[98] * 1000 for task, v in trips.items()}
    print(f"{'call round trip, confined worker (ms)':48} {'p50':>9} {'p99':>9}")
    print(f"{'  runc':48} {p50[TASK]:9.2f} {p99[TASK]:9.2f}")
    if GVISOR_TASK in p50:
        ratio = p50[GVISOR_TASK] / p50[TASK]
        print(f"{'  gVisor':48} {p50[GVISOR_TASK]:9.2f} {p99[GVISOR_TASK]:9.2f}   ({ratio:.2f} x runc)")


if __name__ == "__main__":
    main()
