"""The deploy worker: a Celery worker on the deploy queue that builds, runs and retires task workers.

Start it with ``deploy_mcp/start_deploy_worker.sh`` or ``mcs-deploy-worker`` (with the MCP server's settings),
which are read when the worker starts (when Celery first needs its configuration), not at import. Every message
must carry a valid signature (``mcs.core.signing``): an unsigned or forged message is refused before anything
touches the disk or Docker. Results are JSON: the operation's result model, or ``{"success": false, "error",
"message", ...}``; file contents never come back.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from celery import Celery, signals
from pydantic import BaseModel

from deploy_mcp.deployer import Deployer, registered_tasks
from deploy_mcp.runtimes import select_runtime
from deploy_mcp.scaling import autoscale_forever
from deploy_mcp.selftest import celery_case_caller
from deploy_mcp.watchdog import sweep_unregistered, watch_workers
from mcs.core import protocol
from mcs.core.celery_app import APP_NAME, PrefixedApps, celery_config
from mcs.core.errors import MCSError
from mcs.core.results import DeploymentsResult
from mcs.core.settings import Settings, load_settings
from mcs.core.signing import CLOCK_SKEW_S, MAX_AGE_S, deploy_secret, verify
from Redis.deploy_state import DeployWorkerState
from Redis.registry import TaskRegistry

log = logging.getLogger(__name__)

#: How often the watchdog's thread removes what builds left and nothing uses (unused dependency images).
TIDY_EVERY_S = 60.0


@functools.cache
def settings() -> Settings:
    return load_settings()


def _configuration() -> dict[str, Any]:
    s = settings()
    return {
        "broker_url": s.broker_url,
        "result_backend": s.result_backend_url,
        **celery_config(s),
        "task_default_queue": s.deploy_queue,
        # The thread pool enforces no task time limits: each deploy step bounds itself (build, health check
        # timeouts). A deploy that dies with its worker is not redelivered: the client reports the failure and a
        # new deploy of the same files is cheap (content-addressed versions).
        "task_reject_on_worker_lost": False,
    }


app = Celery(APP_NAME, set_as_current=False)
app.add_defaults(_configuration)  # evaluated when Celery first reads its configuration: at worker start


@functools.cache
def worker_id() -> str:
    """This deploy worker, as named in the locks it holds (a host and a process)."""
    return f"{socket.gethostname()}-{os.getpid()}"


@functools.cache
def deployer() -> Deployer:
    s = settings()
    apps = PrefixedApps(s)
    probe = partial(registered_tasks, apps)
    return Deployer(
        s,
        TaskRegistry(s),
        select_runtime(s),
        probe,
        holder=worker_id(),
        holder_alive=state().holder_alive,
        caller=celery_case_caller(apps),
    )


@functools.cache
def state() -> DeployWorkerState:
    return DeployWorkerState(settings())


def _first_use(nonce: str) -> bool:
    return state().first_use(nonce, int(MAX_AGE_S + CLOCK_SKEW_S))


def _run(kind: str, message: Any, operation: Callable[[dict[str, Any]], BaseModel]) -> dict[str, Any]:
    try:
        payload = verify(deploy_secret(settings()), kind, message, first_use=_first_use)
        return operation(payload).model_dump(mode="json")
    except MCSError as exc:
        log.warning("%s refused or failed: %s", kind, exc.message)
        return {"success": False, **exc.to_dict()}


class _Progress:
    """Report each step as the task's PROGRESS state (the client relays it as MCP progress notifications) and keep
    them: the result carries them too, for the steps a client's polling did not see (a fast deploy)."""

    def __init__(self, task: Any, what: str) -> None:
        self.task, self.what, self.steps = task, what, []

    def __call__(self, step: str) -> None:
        log.info("%s: %s", self.what, step)
        self.steps.append(step)
        if self.task.request.id:
            self.task.update_state(state="PROGRESS", meta={"step": step})


def _run_reporting(task: Any, kind: str, message: Any, operation: Callable[..., BaseModel]) -> dict[str, Any]:
    progress = _Progress(task, kind)
    answer = _run(kind, message, lambda payload: operation(payload, progress))
    return {**answer, "steps": progress.steps}


@app.task(name=protocol.DEPLOY, bind=True)
def deploy_code_folder(self, message: Any) -> dict[str, Any]:
    return _run_reporting(self, "deploy", message, lambda payload, progress: deployer().deploy(payload, progress))


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


@app.task(name=protocol.LIST_VERSIONS)
def list_versions(message: Any) -> dict[str, Any]:
    return _run("versions", message, lambda payload: deployer().versions(payload.get("task_name")))


@app.task(name=protocol.ROLLBACK, bind=True)
def rollback_task(self, message: Any) -> dict[str, Any]:
    return _run_reporting(
        self,
        "rollback",
        message,
        lambda p, progress: deployer().rollback(p.get("task_name"), p.get("version"), progress),
    )


@app.task(name=protocol.PROMOTE, bind=True)
def promote_task(self, message: Any) -> dict[str, Any]:
    return _run_reporting(
        self, "promote", message, lambda p, progress: deployer().promote(p.get("task_name"), progress)
    )


@app.task(name=protocol.SCALE)
def scale_task(message: Any) -> dict[str, Any]:
    return _run(
        "scale",
        message,
        lambda p: deployer().scale(
            p.get("task_name"),
            p.get("replicas"),
            min_replicas=p.get("min_replicas"),
            max_replicas=p.get("max_replicas"),
        ),
    )


@app.task(name=protocol.WAKE)
def wake_task(message: Any) -> dict[str, Any]:
    return _run("wake", message, lambda p: deployer().wake(p.get("task_name")))


_alive_stop = threading.Event()


@signals.worker_ready.connect
def _start_heartbeat(**_: Any) -> None:
    """Refresh the 'a deploy worker is alive' key, so deploy_task can fail fast when none runs."""

    def beat() -> None:
        next_reconcile = 0.0
        while not _alive_stop.is_set():
            try:
                state().beat(protocol.ALIVE_TTL_S, worker_id())
            except Exception:
                log.warning("could not refresh the deploy worker's heartbeat", exc_info=True)
            if time.monotonic() >= next_reconcile:
                next_reconcile = time.monotonic() + settings().acl_reconcile_every_s
                _reconcile()
            _alive_stop.wait(min(protocol.ALIVE_EVERY_S, settings().acl_reconcile_every_s))

    threading.Thread(target=beat, name="mcs-deploy-alive", daemon=True).start()
    threading.Thread(target=_watch, name="mcs-watchdog", daemon=True).start()
    threading.Thread(
        target=autoscale_forever, args=(deployer(), _alive_stop, settings().autoscale_every_s), name="mcs-autoscaler",
        daemon=True,
    ).start()  # fmt: skip


def _reconcile() -> None:
    """Give Redis back the ACL users of deployed tasks it lost (at start, then every MCS_ACL_RECONCILE_EVERY_S)."""
    try:
        recreated = deployer().reconcile_credentials()
    except Exception:
        log.warning("could not reconcile the Redis users of deployed tasks", exc_info=True)
        return
    if recreated:
        log.warning("re-created %d Redis user(s) of deployed tasks: %s", len(recreated), ", ".join(recreated))


def _watch() -> None:
    """Replace the gone workers of registered deployments, every MCS_WATCH_EVERY_S (its own thread: a replacement
    waits for the new worker's answer, which must not hold up the heartbeat). First, what dead deploys left."""
    try:
        sweep_unregistered(deployer())
    except Exception:
        log.warning("could not sweep what earlier deploys left", exc_info=True)
    tidied = 0.0
    while not _alive_stop.wait(settings().watch_every_s):
        if time.monotonic() - tidied >= TIDY_EVERY_S:
            tidied = time.monotonic()
            try:
                deployer().runtime.tidy()
            except Exception:
                log.warning("could not tidy what builds left", exc_info=True)
        try:
            replaced = watch_workers(deployer())
        except Exception:
            log.warning("could not watch the task workers", exc_info=True)
            continue
        if replaced:
            log.warning("replaced the gone worker(s) of %s", ", ".join(replaced))


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    _alive_stop.set()
    try:
        state().clear(worker_id())
    except Exception:
        log.warning("could not clear the alive key", exc_info=True)


def main(argv: list[str] | None = None) -> None:
    """``mcs-deploy-worker``: the deploy worker on the deploy queue, a thread pool of MCS_DEPLOY_CONCURRENCY (4)."""
    hostname = f"mcs-deploy-{os.getpid()}@%h"
    default = ["worker", "--pool", "threads", "--concurrency", str(settings().deploy_concurrency)]
    default += ["--hostname", hostname, "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    app.worker_main(argv or default)
