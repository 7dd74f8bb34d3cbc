"""Calling registered tasks through Celery: resolve, validate, send, wait, and read results back.

This is the one boundary where Celery and kombu errors become MCS errors. Only registered tasks can be called,
only on their registered queue, and never on the deploy queue, so nothing here can reach MCS's own deploy tasks.
Every task id MCS issues is remembered in Redis for ``result_expires_s``; any other id is reported as unknown
instead of Celery's eternal PENDING.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mcs.core.celery_app import PrefixedApps, celery_task_name
from mcs.core.errors import (
    InvalidInput,
    MCSError,
    NotFound,
    ServiceUnavailable,
    TaskFailed,
    TaskTimeout,
    WorkerLost,
)
from mcs.core.models import TaskRecord
from mcs.core.names import validate_queue, validate_task_name
from mcs.core.results import TaskCallResult, TaskSentResult, TaskStatusResult
from mcs.core.settings import Settings
from mcs.payload import check_call_arguments
from Redis.connection import is_connection_error
from Redis.issued import IssuedTasks
from Redis.registry import TaskRegistry

if TYPE_CHECKING:
    from celery import Celery
    from celery.result import AsyncResult

log = logging.getLogger(__name__)


def _install_deadline_drainer() -> None:
    """Make ``AsyncResult.get(timeout=t)`` keep its deadline to within t/10 (at most 1 s late).

    Celery's default result drainer waits for results in fixed 1 s slices, so a 0.2 s timeout fires after 1 s,
    or not at all when the result lands inside that second. ``register_drainer`` is Celery's extension point for
    this; the replacement only shortens the slice for short timeouts (it still waits on pub/sub, never polls).
    """
    from celery.backends.asynchronous import Drainer, drainers, register_drainer

    if getattr(drainers.get("default"), "mcs_deadline", False):
        return

    class DeadlineDrainer(Drainer):
        mcs_deadline = True

        def drain_events_until(self, p, timeout=None, interval=1, on_interval=None, wait=None):
            if timeout is not None:
                interval = min(interval, max(0.01, timeout / 10))
            return super().drain_events_until(p, timeout, interval, on_interval, wait)

    register_drainer("default")(DeadlineDrainer)


TASK_ID_RULE = "a task id as returned by trigger_celery_task or send_celery_task (a UUID)"
_TASK_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_TRACEBACK_CHARS = 4000
MAX_TIMEOUT_S = 3600.0


class TaskInvoker:
    def __init__(
        self,
        settings: Settings,
        registry: TaskRegistry,
        celery_app: Celery,
        issued: IssuedTasks | None = None,
        apps: PrefixedApps | None = None,
    ) -> None:
        _install_deadline_drainer()
        self.settings = settings
        self.registry = registry
        self.app = celery_app  # unprefixed: tasks registered by hand, whose workers MCS did not deploy
        self.issued = issued or IssuedTasks(settings, registry.client)
        self.apps = apps or PrefixedApps(settings)

    def _app(self, key_prefix: str) -> Celery:
        """The producer and result consumer of one task's prefix (a deployed task's keys are its own)."""
        return self.app if not key_prefix else self.apps.get(key_prefix)

    # -- sending ----------------------------------------------------------------------------------------------

    def resolve(self, task_name: Any, queue: Any = None) -> TaskRecord:
        """The registered record for ``task_name``; ``queue``, when given, must be the registered one."""
        validate_task_name(task_name, "task_name")
        if queue is not None:
            validate_queue(queue, "queue")
        record = self.registry.find(task_name)
        if record is None:
            suggestions = self.registry.similar(task_name)
            hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
            raise NotFound(
                f"task {task_name!r} is not registered, so nothing was sent{hint} "
                "(get_available_tasks lists the registered tasks)",
                task_name=task_name,
                suggestions=suggestions,
            )
        if queue is not None and queue != record.queue:
            raise InvalidInput("queue", queue, f"task {task_name!r} is served on queue {record.queue!r}; omit queue")
        if record.queue == self.settings.deploy_queue:
            raise InvalidInput("queue", record.queue, "the deploy queue is reserved for MCS's deploy worker")
        return record

    def send(self, task_name: Any, args: Any = None, kwargs: Any = None, queue: Any = None) -> TaskSentResult:
        record, result, _ = self._send(task_name, args, kwargs, queue)
        return TaskSentResult(
            task_id=result.id,
            task_name=record.name,
            queue=record.queue,
            message=f"task sent to queue {record.queue}, task_id {result.id}; use get_celery_result to follow it",
        )

    def trigger(
        self, task_name: Any, args: Any = None, kwargs: Any = None, queue: Any = None, timeout_s: Any = None
    ) -> TaskCallResult:
        timeout = self._timeout(timeout_s)
        started = time.perf_counter()
        record, result, canary = self._send(task_name, args, kwargs, queue)
        try:
            value = result.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)
        except Exception as exc:
            from celery.exceptions import TimeoutError as ResultTimeout

            if isinstance(exc, ResultTimeout):
                raise TaskTimeout(
                    f"task {record.name} did not finish within {timeout:g} s; it may still run: "
                    f"follow up with get_celery_result(task_id={result.id!r})",
                    task_id=result.id,
                    task_name=record.name,
                    queue=record.queue,
                    status=self._state(result),
                ) from None
            raise self._celery_error(exc) from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        state = result.state
        if canary:
            issued = {"task_name": record.name, "version": canary, "release": record.primary}
            self.issued.count_outcome(result.id, issued, succeeded=state == "SUCCESS")
        if state != "SUCCESS":
            raise self._failure(result, record.name, record.queue, state, value, record.key_prefix)
        return TaskCallResult(
            task_id=result.id,
            task_name=record.name,
            queue=record.queue,
            status=state,
            result=value,
            elapsed_ms=round(elapsed_ms, 3),
            message=f"task {record.name} succeeded: {_preview(value)}",
        )

    def _send(self, task_name: Any, args: Any, kwargs: Any, queue: Any) -> tuple[TaskRecord, AsyncResult, str | None]:
        """Validate, remember the task id (so get_celery_result knows it), then send: if Redis cannot record the
        id, nothing is sent. The third value: the version a call of a gradual release went to."""
        record = self.resolve(task_name, queue)
        args, kwargs = check_call_arguments(record, args, kwargs, self.settings.max_payload_bytes)
        task_id = str(uuid.uuid4())
        route, version = (
            record.deployment.route(record.queue, random.random())  # noqa: S311 - a traffic split, not a secret
            if record.deployment
            else (record.queue, None)
        )
        canary = version if record.deployment and record.deployment.canary else None
        self.issued.remember(
            task_id, record.name, record.queue, record.key_prefix, canary_version=canary, release=record.primary
        )
        try:
            result = self._app(record.key_prefix).send_task(
                celery_task_name(record.name), args=args, kwargs=kwargs, queue=route, task_id=task_id
            )
        except Exception as exc:
            raise self._celery_error(exc) from None
        log.debug("sent %s to queue %s as %s", record.name, route, task_id)
        return record, result, canary

    # -- results ----------------------------------------------------------------------------------------------

    def status(self, task_id: Any) -> TaskStatusResult:
        if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
            raise InvalidInput("task_id", task_id, TASK_ID_RULE)
        issued = self.issued.find(task_id)
        if issued is None:
            raise NotFound(
                f"task id {task_id} is unknown: MCS did not issue it, or its result expired "
                f"(results are kept {self.settings.result_expires_s} s)",
                task_id=task_id,
            )
        result = self._app(issued.get("key_prefix", "")).AsyncResult(task_id)
        state = self._state(result)
        base = {"task_id": task_id, "task_name": issued["task_name"], "queue": issued["queue"], "status": state}
        if state in ("SUCCESS", "FAILURE"):
            self.issued.count_outcome(task_id, issued, succeeded=state == "SUCCESS")
        if state == "SUCCESS":
            value = result.result
            return TaskStatusResult(**base, ready=True, result=value, message=f"task succeeded: {_preview(value)}")
        if state in ("FAILURE", "REVOKED"):
            # The same answer as trigger_celery_task gives for a task that raised: an isError result.
            raise self._failure(
                result, issued["task_name"], issued["queue"], state, result.result, issued.get("key_prefix", "")
            )
        # Still queued or running: keep remembering the id, however long the queue is.
        self.issued.keep(task_id)
        waiting = "waiting in the queue (is a worker serving it?)" if state == "PENDING" else "in progress"
        lost_at = issued.get("worker_lost_at")
        if lost_at is not None:
            when = datetime.fromtimestamp(lost_at, UTC).isoformat(timespec="seconds")
            waiting = f"its worker was lost at {when} and the call was delivered again ({waiting})"
            base["worker_lost_at"] = when
        return TaskStatusResult(**base, ready=False, message=f"task state {state}: {waiting}")

    def _state(self, result: AsyncResult) -> str:
        try:
            return result.state
        except Exception as exc:
            raise self._celery_error(exc) from None

    def _failure(
        self, result: AsyncResult, task_name: str, queue: str, state: str, value: Any, key_prefix: str = ""
    ) -> MCSError:
        exc_type = type(value).__name__ if isinstance(value, BaseException) else state
        kind = WorkerLost if exc_type in ("WorkerLost", "WorkerLostError") else TaskFailed
        attempts = self._attempts(result, key_prefix)
        tried = f" after {attempts} attempts (its retry policy)" if attempts else ""
        return kind(
            f"task {task_name} failed with {exc_type}{tried}: {value}",
            attempts=attempts or 1,
            task_id=result.id,
            task_name=task_name,
            queue=queue,
            status=state,
            exception_type=exc_type,
            exception_message=str(value),
            traceback=_bounded(result.traceback),
        )

    def _attempts(self, result: AsyncResult, key_prefix: str) -> int | None:
        """How often a failed call was tried, when its retry policy tried it again (the worker writes it)."""
        try:
            raw = self._app(key_prefix).backend.client.get(f"{key_prefix}mcs-attempts:{result.id}")
        except Exception:  # a courtesy: never let it hide the failure itself
            return None
        return int(raw) if raw else None

    def _timeout(self, timeout_s: Any) -> float:
        if timeout_s is None:
            return self.settings.trigger_timeout_s
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise InvalidInput("timeout_s", timeout_s, f"a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}")
        return float(timeout_s)

    def _celery_error(self, exc: Exception) -> MCSError:
        if isinstance(exc, MCSError):
            return exc
        from kombu.exceptions import OperationalError

        if isinstance(exc, OperationalError | ConnectionError) or is_connection_error(exc):
            return ServiceUnavailable(
                f"the Celery broker/backend (Redis at {self.settings.redis_location}) is not reachable: "
                f"{type(exc).__name__}; start Redis or check REDIS_HOST/REDIS_PORT",
                service="redis",
            )
        log.exception("unexpected Celery error")
        return MCSError(f"Celery error {type(exc).__name__}: {exc}")


def _bounded(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TRACEBACK_CHARS:
        return text
    return "...\n" + text[-MAX_TRACEBACK_CHARS:]


def _preview(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
