"""The deploy worker: a Celery worker on the deploy queue that builds, runs and retires task workers.

Start it with ``deploy_mcp/start_deploy_worker.sh`` (same settings as the MCP server). Every message must carry
a valid signature (``deploy_mcp.signing``): an unsigned or forged message is refused before anything touches
the disk or Docker. Results are JSON: the operation's result model, or ``{"success": false, "error", "message",
...}``; file contents never come back.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from celery import signals
from pydantic import BaseModel

from deploy_mcp import protocol
from deploy_mcp.deployer import Deployer, registered_tasks
from deploy_mcp.signing import CLOCK_SKEW_S, MAX_AGE_S, deploy_secret, verify
from mcp_app import create_celery_app
from mcs.errors import MCSError, ServiceUnavailable
from mcs.results import DeploymentsResult
from mcs.settings import Settings, load_settings
from Redis.registry import TaskRegistry

log = logging.getLogger(__name__)

settings: Settings = load_settings()
app = create_celery_app(settings)
app.conf.update(
    task_default_queue=settings.deploy_queue,
    # The thread pool enforces no task time limits: each deploy step bounds itself (build, health check timeouts).
    # A deploy that dies with its worker is not redelivered: the client reports the failure and a new deploy of
    # the same files is cheap (content-addressed versions).
    task_reject_on_worker_lost=False,
)


def select_runtime(settings: Settings):
    """The worker runtime: Docker when chosen or (auto) when a daemon answers, else the local process runtime."""
    from deploy_mcp.process_runtime import ProcessRuntime

    if settings.worker_runtime == "process":
        return ProcessRuntime(settings)
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:
        if settings.worker_runtime == "docker":
            raise ServiceUnavailable(
                f"MCS_WORKER_RUNTIME=docker but no Docker daemon answers ({type(exc).__name__}): start dockerd",
                service="docker",
            ) from None
        log.warning("no Docker daemon answers: task workers run as local processes (no container isolation)")
        return ProcessRuntime(settings)
    from deploy_mcp.docker_runtime import DockerRuntime

    return DockerRuntime(settings)


@functools.cache
def deployer() -> Deployer:
    return Deployer(settings, TaskRegistry(settings), select_runtime(settings), partial(registered_tasks, app))


def _first_use(nonce: str) -> bool:
    registry = deployer().registry
    key = registry.keys.deploy_nonce(nonce)
    return bool(registry.client.set(key, "1", nx=True, ex=int(MAX_AGE_S + CLOCK_SKEW_S)))


def _run(kind: str, message: Any, operation: Callable[[dict[str, Any]], BaseModel]) -> dict[str, Any]:
    try:
        payload = verify(deploy_secret(settings), kind, message, first_use=_first_use)
        return operation(payload).model_dump(mode="json")
    except MCSError as exc:
        log.warning("%s refused or failed: %s", kind, exc.message)
        return {"success": False, **exc.to_dict()}


@app.task(name=protocol.DEPLOY, bind=True)
def deploy_code_folder(self, message: Any) -> dict[str, Any]:
    def progress(step: str) -> None:
        log.info("deploy: %s", step)
        if self.request.id:
            self.update_state(state="PROGRESS", meta={"step": step})

    return _run("deploy", message, lambda payload: deployer().deploy(payload, progress))


@app.task(name=protocol.UNDEPLOY)
def undeploy_task(message: Any) -> dict[str, Any]:
    return _run("undeploy", message, lambda payload: deployer().undeploy(payload.get("task_name")))


@app.task(name=protocol.LIST_DEPLOYMENTS)
def list_deployments(message: Any) -> dict[str, Any]:
    def listing(_payload: dict[str, Any]) -> DeploymentsResult:
        items = deployer().deployments()
        return DeploymentsResult(deployments=items, count=len(items), message=f"{len(items)} deployment(s)")

    return _run("list", message, listing)


@app.task(name=protocol.TASK_LOGS)
def task_logs(message: Any) -> dict[str, Any]:
    return _run("logs", message, lambda p: deployer().task_logs(p.get("task_name"), p.get("tail_lines", 100)))


_alive_stop = threading.Event()


@signals.worker_ready.connect
def _start_heartbeat(**_: Any) -> None:
    """Refresh the 'a deploy worker is alive' key, so deploy_task can fail fast when none runs."""
    registry = TaskRegistry(settings)
    key = registry.keys.deploy_worker_alive()

    def beat() -> None:
        while not _alive_stop.is_set():
            try:
                registry.client.set(key, "1", ex=protocol.ALIVE_TTL_S)
            except Exception:
                log.warning("could not refresh %s", key, exc_info=True)
            _alive_stop.wait(protocol.ALIVE_EVERY_S)

    threading.Thread(target=beat, name="mcs-deploy-alive", daemon=True).start()


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    _alive_stop.set()
    try:
        registry = TaskRegistry(settings)
        registry.client.delete(registry.keys.deploy_worker_alive())
    except Exception:
        log.warning("could not clear the alive key", exc_info=True)
