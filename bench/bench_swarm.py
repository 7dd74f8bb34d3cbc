"""Deploy time on the swarm runtime against the docker runtime, for the same folders, and the push's share.

    .venv/bin/python bench/bench_swarm.py [--rounds 3] [--replicas 1] [--json out.json]

Needs a Docker daemon that is a swarm manager and the registry at MCS_SWARM_REGISTRY's default (127.0.0.1:5000).
Starts a private Redis (workers reach it through its unix socket) and drives the real Deployer in this process (as
the deploy worker does, without the MCP hop) for each runtime in turn, interleaved round by round, with fresh file
contents each round so that no build cache helps either side:

- cold deploy: a task not deployed yet (build, for swarm also tag + push, start, every replica answering);
- changed redeploy: a one-line change (a new version next to the serving one, then the switch), and how long
  after it the previous version's retirement (off the deploy's path) was over;
- undeploy.

The push's own time comes from the swarm build's progress line ("pushed ... in X s"). Everything made carries the
label ``mcs.bench.swarm=<this run's id>`` and is removed at the end (the images too; the registry keeps its copies).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from deploy_mcp.deployer import Deployer
from deploy_mcp.docker.runtime import DockerRuntime
from deploy_mcp.health import registered_tasks
from deploy_mcp.swarm.runtime import SwarmRuntime
from mcs.codegen import generate_task_folder
from mcs.core.bundle import read_folder
from mcs.core.celery_app import PrefixedApps
from mcs.core.settings import Settings
from Redis.registry import TaskRegistry
from Redis.server import LocalRedisServer

LABEL = "mcs.bench.swarm"  # its value: this run's id; only images of this run are removed at the end
PARAMS = [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]
SHOWN = ("cold_s", "cold_build_s", "cold_health_s", "changed_s", "retired_after_s", "undeploy_s", "push_cold_s")
_PUSHED = re.compile(r"pushed .* in ([0-9.]+) s")


def request_for(settings: Settings, task: str, queue: str, body: str, replicas: int) -> dict[str, Any]:
    generate_task_folder(settings, task_name=task, description="adds", parameters=PARAMS, function_body=body,
                         queue=queue, return_type="int", overwrite=True)  # fmt: skip
    files = read_folder(settings, settings.generated_tasks_dir / f"{task}_{queue}")
    return {"task_name": task, "queue": queue, "description": "adds", "parameters": PARAMS, "return_type": "int",
            "files": [f.model_dump() for f in files], "replicas": replicas}  # fmt: skip


def one_round(deployer: Deployer, kind: str, n: int, replicas: int) -> dict[str, float]:
    s = deployer.settings
    task, queue = f"bench_{kind}_{n}_{uuid.uuid4().hex[:4]}", f"bq_{kind}_{n}"
    salt = uuid.uuid4().hex
    pushes: list[float] = []

    def progress(message: str) -> None:
        if match := _PUSHED.search(message):
            pushes.append(float(match.group(1)))

    out: dict[str, float] = {}
    started = time.monotonic()
    cold = deployer.deploy(request_for(s, task, queue, f"# {salt}\nreturn a + b", replicas), progress)
    out["cold_s"] = time.monotonic() - started
    out.update({f"cold_{k}_s": v / 1000 for k, v in cold.timings_ms.items() if k != "total"})
    started = time.monotonic()
    changed = deployer.deploy(request_for(s, task, queue, f"# {salt}\nreturn a + b + 1", replicas), progress)
    out["changed_s"] = time.monotonic() - started
    out.update({f"changed_{k}_s": v / 1000 for k, v in changed.timings_ms.items() if k != "total"})
    started, deadline = time.monotonic(), time.monotonic() + 120
    while time.monotonic() < deadline and (  # the previous version retires in the background: not on the path
        len(deployer.runtime.workers(task)) > 1 or any(e.status == "draining" for e in deployer.history.list(task))
    ):
        time.sleep(0.1)
    out["retired_after_s"] = time.monotonic() - started
    started = time.monotonic()
    deployer.undeploy(task)
    out["undeploy_s"] = time.monotonic() - started
    if pushes:
        out["push_cold_s"], out["push_changed_s"] = pushes[0], pushes[-1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    client = docker.from_env(timeout=300)
    run = uuid.uuid4().hex[:12]
    with tempfile.TemporaryDirectory(prefix="mcs-bench-swarm-") as tmp:
        root = Path(tmp)
        redis = LocalRedisServer(root / "redis", unix_socket=root / "sock" / "redis.sock").start()
        try:
            settings = Settings(
                _env_file=None, redis_port=redis.port, redis_socket=redis.unix_socket, metadata_db=3,
                metadata_prefix=f"mcs-bench-{uuid.uuid4().hex[:6]}:", generated_tasks_dir=root / "generated",
                deployments_dir=root / "deployments", deploy_secret_file=root / "secret", state_dir=root / "state",
                worker_labels={LABEL: run}, health_timeout_s=120.0, task_time_limit_s=30,
            )  # fmt: skip
            probe = partial(registered_tasks, PrefixedApps(settings))
            runtimes = {"docker": DockerRuntime(settings, client), "swarm": SwarmRuntime(settings, client)}
            deployers = {k: Deployer(settings, TaskRegistry(settings), r, probe) for k, r in runtimes.items()}
            results: dict[str, list[dict[str, float]]] = {kind: [] for kind in deployers}
            for n in range(args.rounds):
                for kind, deployer in deployers.items():
                    results[kind].append(one_round(deployer, kind, n, args.replicas))
                    shown = {k: v for k, v in results[kind][-1].items() if k in SHOWN}
                    print(f"round {n + 1} {kind}: " + ", ".join(f"{k} {v:.2f}" for k, v in shown.items()), flush=True)
        finally:
            redis.stop()
            for image in client.images.list(filters={"label": f"{LABEL}={run}"}):
                try:
                    client.images.remove(image.id, force=True)
                except docker.errors.APIError as exc:
                    print(f"could not remove image {image.short_id}: {exc}", file=sys.stderr)
    medians = {
        kind: {key: round(statistics.median(r[key] for r in rounds if key in r), 2) for key in rounds[0]}
        for kind, rounds in results.items()
    }
    print(json.dumps({"rounds": args.rounds, "replicas": args.replicas, "medians": medians}, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
