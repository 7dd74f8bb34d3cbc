"""Deploy benchmark (Docker) against a baseline measured in the same run.

    .venv/bin/python bench/bench_deploy.py [--rounds 3]

Starts a private Redis and the deploy worker (its start script), talks to mcp_server.py over stdio like an agent.
For each round, with fresh file contents so that no build cache helps either side:
- baseline: `docker build` + `docker run` (Docker CLI) of the same folder with the same Dockerfile, plus the time
  until the worker answers a Celery ping;
- MCS cold deploy: deploy_task of a task not deployed yet (build, hardened run, health check, registry);
- MCS unchanged redeploy: deploy_task of the same files again;
- MCS changed redeploy: deploy_task after a one-line change (blue-green: includes the old worker's warm shutdown).
Prints medians, per-step timings of the cold deploy, and the ratios; targets: cold <= 1.3 x baseline,
unchanged redeploy <= 0.2 s.
"""

from __future__ import annotations

import argparse
import asyncio
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
from mcs.core.celery_app import create_celery_app
from mcs.core.settings import Settings
from mcs.core.worker_image import render_dockerfile, worker_command
from mcs.stack import Stack
from Redis.server import LocalRedisServer
from tests.mcp_clients import stdio_client

TASK, QUEUE = "bench_add", "bench_q"
PARAMS = [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]
LABEL = {"mcs.bench": "1"}


def generate(settings: Settings, nonce: str) -> Path:
    result = generate_task_folder(
        settings, task_name=TASK, description="bench", parameters=PARAMS, queue=QUEUE, return_type="int",
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
        subprocess.run(["docker", "run", "-d", "--name", name, "--network", "host", "--label", "mcs.bench=1",
                        "-e", f"REDIS_PORT={settings.redis_port}", tag, *command],
                       check=True, capture_output=True)  # fmt: skip
        while not app.control.ping(destination=[hostname], timeout=0.2):
            pass
        return time.perf_counter() - start
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


async def mcs_deploys(settings: Settings, rounds: int, app) -> dict[str, list]:
    out: dict[str, list] = {"baseline": [], "cold": [], "unchanged": [], "changed": [], "steps": []}
    deploy_args = {"task_name": TASK, "description": "bench", "parameters": PARAMS, "queue": QUEUE}
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
            # The next round's cold deploy starts from nothing, like the baseline: no previous worker to retire.
            await client.call_tool("undeploy_task", {"task_name": TASK})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        server = LocalRedisServer(tmp_path / "redis").start()
        settings = Settings(
            _env_file=None, redis_port=server.port, metadata_prefix="mcs-bench:", worker_runtime="docker",
            generated_tasks_dir=tmp_path / "generated", deployments_dir=tmp_path / "deployments",
            deploy_secret_file=tmp_path / "secret", worker_labels=LABEL,
        )  # fmt: skip
        ensure_base_image(settings)
        stack = Stack(settings, say=lambda m: None)
        try:
            stack.start_deploy_worker(tmp_path / "deploy_worker.log")
            results = asyncio.run(mcs_deploys(settings, rounds, create_celery_app(settings)))
        finally:
            stack.stop()
            server.stop()
    med = {k: statistics.median(v) for k, v in results.items() if k != "steps"}
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


if __name__ == "__main__":
    main()
