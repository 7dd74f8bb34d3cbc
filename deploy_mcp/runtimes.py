"""The worker runtimes, chosen in one place: one table of backends (as kombu resolves its transports) and one
function that picks the configured one, or with ``auto`` Docker when a daemon answers, else local processes.

``python -m deploy_mcp.runtimes prepare`` chooses and prepares the runtime the deploy worker will use (for Docker:
the base image, built when missing, progress on stderr) and prints ``{"runtime", "description"}`` on stdout: the
stack (``make up`` / ``make demo``) runs it before it starts the deploy worker with that runtime. ``auto`` means
Docker: without a daemon it is an error, never task code running unconfined on the host. ``swarm`` is chosen
explicitly; its check wants the daemon to be a swarm manager and ``MCS_SWARM_REGISTRY`` to answer.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from deploy_mcp.runtime import Progress, WorkerRuntime
from mcs.core.errors import MCSError, ServiceUnavailable
from mcs.core.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: name -> "module:class" of each runtime (imported only when chosen: docker-py is not needed for processes).
RUNTIMES = {
    "docker": "deploy_mcp.docker.runtime:DockerRuntime",
    "swarm": "deploy_mcp.swarm.runtime:SwarmRuntime",
    "process": "deploy_mcp.process_runtime:ProcessRuntime",
}


NO_DOCKER = (
    "no Docker daemon answers, and MCS_WORKER_RUNTIME=auto never runs task code on this host unconfined: start "
    "dockerd, or choose MCS_WORKER_RUNTIME=process explicitly to accept workers without any isolation"
)


def runtime_name(settings: Settings) -> str:
    """The configured runtime; ``auto`` -> docker, when a Docker daemon answers. Never a silent fall back to host
    processes: the process runtime runs task code unconfined, so it runs only when chosen explicitly."""
    if settings.worker_runtime != "auto":
        return settings.worker_runtime
    from deploy_mcp.docker import client

    if client.docker_answers():
        return "docker"
    raise ServiceUnavailable(NO_DOCKER, service="docker")


def select_runtime(settings: Settings) -> WorkerRuntime:
    """The runtime object for ``settings`` (a chosen Docker runtime whose daemon does not answer fails here)."""
    module, _, cls = RUNTIMES[runtime_name(settings)].partition(":")
    runtime: WorkerRuntime = getattr(importlib.import_module(module), cls)(settings)
    runtime.check()
    return runtime


def prepare(settings: Settings, progress: Progress) -> WorkerRuntime:
    """Choose the runtime and make it ready to build workers (the Docker base image)."""
    runtime = select_runtime(settings)
    runtime.prepare(progress)
    return runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy_mcp.runtimes", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("prepare",))
    parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    try:
        runtime = prepare(load_settings(), lambda step: print(f"  {step}", file=sys.stderr, flush=True))
    except MCSError as exc:
        sys.stdout.write(json.dumps({"success": False, **exc.to_dict()}, default=str) + "\n")  # the CLI's answer
        return 1
    sys.stdout.write(json.dumps({"runtime": runtime.name, "description": runtime.description}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
