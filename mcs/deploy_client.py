"""The MCP server's side of deploys: read the task folder, sign, send to the deploy worker, follow its progress.

The server never touches Docker: every deploy operation is a signed message to the deploy worker over the broker.
Waiting happens in a worker thread (never on the event loop) and reports the worker's steps as progress.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcs.core import protocol
from mcs.core.bundle import read_folder
from mcs.core.capacity import check_capacity, check_replicas
from mcs.core.errors import DeployError, MCSError, ServiceUnavailable, TaskTimeout
from mcs.core.manifest import MANIFEST_FILE, check_retry, check_test_cases, parse_manifest, plan_deploy
from mcs.core.models import check_task_record
from mcs.core.names import validate_name, validate_queue, validate_task_name
from mcs.core.settings import Settings
from mcs.core.signing import deploy_secret, sign
from Redis.deploy_state import DeployWorkerState

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

OnProgress = Callable[[str], None]
ALIVE_CHECK_EVERY_S = 5.0  # with the heartbeat's 15 s TTL: a dead deploy worker is noticed within 20 s
SCALE_MARGIN_S = 30.0  # a scale-up waits for its workers' health check, and for the task's lock a little


class DeployClient:
    def __init__(self, settings: Settings, state: DeployWorkerState, celery_app: Celery) -> None:
        self.settings = settings
        self.state = state
        self.app = celery_app

    def deploy(
        self,
        *,
        task_name: str,
        queue: str,
        description: str | None = None,
        parameters: list[dict[str, Any]] | None = None,
        category: str | None = None,
        return_type: str | None = None,
        code_folder_path: str | None = None,
        network: str | None = None,
        sandbox: str | None = None,
        tests: list[dict[str, Any]] | None = None,
        retry: dict[str, Any] | None = None,
        canary_percent: int | None = None,
        concurrency: int | None = None,
        replicas: int | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        on_progress: OnProgress | None = None,
    ) -> dict[str, Any]:
        """Deploy a folder: the arguments given (not None) override its manifest (``mcs.json``)."""
        capacity = {"concurrency": concurrency, "replicas": replicas, "min_replicas": min_replicas,
                    "max_replicas": max_replicas}  # fmt: skip
        check_capacity({k: v for k, v in capacity.items() if v is not None}, self.settings)
        validate_task_name(task_name, "task_name")
        validate_queue(queue, "queue")
        given = {"description": description, "parameters": parameters, "category": category, "return_type": return_type}
        check_task_record({"name": task_name, "queue": queue, **{k: v for k, v in given.items() if v is not None}})
        check_retry(retry)
        if tests is not None:
            check_test_cases(tests, task_name)
        folder = code_folder_path or str(self.settings.generated_tasks_dir / f"{task_name}_{queue}")
        files = read_folder(self.settings, folder)
        request = {
            "task_name": task_name,
            "queue": queue,
            "description": description,
            "parameters": parameters,
            "category": category,
            "return_type": return_type,
            "network": network,
            "sandbox": sandbox,
            "tests": tests,
            "retry": retry,
            "canary_percent": canary_percent,
            **capacity,
        }
        # The deploy worker checks again; checking here answers bad metadata at once, with or without a worker.
        shipped = next((f for f in files if f.path == MANIFEST_FILE), None)
        plan_deploy(request, parse_manifest(shipped.data()) if shipped is not None else None)
        payload = {**request, "files": [f.model_dump() for f in files]}
        return self.call(protocol.DEPLOY, payload, self.settings.deploy_timeout_s, on_progress)

    def scale(
        self,
        task_name: str,
        replicas: int,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
    ) -> dict[str, Any]:
        """Set a deployed task's workers (0 parks it), optionally its autoscaling range; checked here first."""
        check_replicas(replicas, self.settings)
        given = {"replicas": replicas, "min_replicas": min_replicas, "max_replicas": max_replicas}
        given = {k: v for k, v in given.items() if v is not None}
        check_capacity(given, self.settings)  # the deploy worker checks again, against the task's range
        payload: dict[str, Any] = {"task_name": task_name, **given}
        return self.call(protocol.SCALE, payload, self.settings.health_timeout_s + SCALE_MARGIN_S)

    def wake(self, task_name: str) -> str:
        """Ask the deploy worker to start a parked task's workers, without waiting (a call is on its way)."""
        validate_name(task_name, "task_name")
        message = sign(deploy_secret(self.settings), protocol.KINDS[protocol.WAKE], {"task_name": task_name})
        return self.app.send_task(protocol.WAKE, kwargs={"message": message}, queue=self.settings.deploy_queue).id

    def call(
        self, task: str, payload: dict[str, Any], timeout_s: float, on_progress: OnProgress | None = None
    ) -> dict[str, Any]:
        """Send one signed operation to the deploy worker and wait for its JSON result."""
        if "task_name" in payload:
            validate_name(payload["task_name"], "task_name")
        self._require_worker()
        message = sign(deploy_secret(self.settings), protocol.KINDS[task], payload)
        try:
            result = self.app.send_task(task, kwargs={"message": message}, queue=self.settings.deploy_queue)
        except Exception as exc:
            raise ServiceUnavailable(
                f"could not reach the broker (Redis at {self.settings.redis_location}): {type(exc).__name__}",
                service="redis",
            ) from None
        deadline = time.monotonic() + timeout_s
        last_step = None
        relayed: list[str] = []
        next_check = time.monotonic() + ALIVE_CHECK_EVERY_S
        while True:
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + ALIVE_CHECK_EVERY_S
                self._require_worker(during=result.id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TaskTimeout(
                    f"the deploy worker did not finish within {timeout_s:g} s; it may still be working "
                    f"(see deploy_mcp logs); task_id {result.id}",
                    task_id=result.id,
                )
            try:
                value = result.get(timeout=min(0.5, remaining), propagate=False)
            except Exception as exc:
                from celery.exceptions import TimeoutError as ResultTimeout

                if not isinstance(exc, ResultTimeout):
                    raise ServiceUnavailable(
                        f"lost the result backend: {type(exc).__name__}", service="redis"
                    ) from None
                info = result.info if result.state == "PROGRESS" else None
                step = info.get("step") if isinstance(info, dict) else None
                if step and step != last_step and on_progress:
                    on_progress(step)
                    relayed.append(step)
                last_step = step or last_step
                continue
            if on_progress and isinstance(value, dict):
                for step in value.get("steps") or []:  # what the polling did not see (a step shorter than a poll)
                    if step not in relayed:
                        on_progress(step)
            return self._outcome(result, value)

    def _outcome(self, result: Any, value: Any) -> dict[str, Any]:
        if result.state != "SUCCESS" or not isinstance(value, dict):
            raise DeployError(f"the deploy worker crashed: {type(value).__name__}: {value}", step="worker")
        if value.get("success") is False:
            raise MCSError.from_dict(value)
        return value

    def _require_worker(self, during: str | None = None) -> None:
        if during is not None and not self.state.alive():
            raise ServiceUnavailable(
                "the deploy worker stopped (its heartbeat lapsed) while it handled this request; whatever was "
                "serving before keeps serving, and the next deploy worker cleans up what this one left: start it "
                f"again and retry (task_id {during})",
                service="deploy_worker",
                task_id=during,
            )
        if not self.state.alive():
            raise ServiceUnavailable(
                "no deploy worker is running: start it with deploy_mcp/start_deploy_worker.sh (or `make up`), "
                "with the same Redis settings as this server",
                service="deploy_worker",
            )
