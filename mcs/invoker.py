"""Calling registered tasks through Celery: resolve, validate, send, wait, read results back, and cancel.

This is the one boundary where Celery and kombu errors become MCS errors. Only registered tasks can be called,
only on their registered queue, and never on the deploy queue, so nothing here can reach MCS's own deploy tasks.
Every task id MCS issues is remembered in Redis for ``result_expires_s``; any other id is reported as unknown
instead of Celery's eternal PENDING.

Before a deployed task's call is sent, its worker must answer a targeted Celery ping (cached ~10 s per worker), so
a task nobody serves answers within a second instead of a timeout. Waiting for results (trigger, and
get_celery_result's ``wait_s``) waits on Celery's result backend (Redis pub/sub), never in a sleep loop.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from mcs.core.results import CancelResult, TaskCallResult, TaskSentResult, TaskStatusEntry, TaskStatusResult
from mcs.core.settings import Settings
from mcs.core.worker_image import replica_hostnames
from mcs.payload import check_call_arguments
from Redis.broker import queue_lists
from Redis.connection import is_connection_error, make_client
from Redis.issued import REMEMBERED, IssuedTasks
from Redis.registry import TaskRegistry

if TYPE_CHECKING:
    import redis
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
MAX_ENTRY_TRACEBACK_CHARS = 1000  # per entry of get_celery_result(task_ids=...): 100 of them stay small
MAX_TIMEOUT_S = 3600.0
#: What get_celery_result(task_id) answers of an id's entry (a failure is an isError result instead).
SINGLE_ID_FIELDS = {
    "task_id",
    "task_name",
    "queue",
    "status",
    "ready",
    "result",
    "message",
    "worker_lost_at",
    "cancelled_at",
}
MAX_TASK_IDS = 100
MAX_WAIT_S = 60.0
TERMINATE_WAIT_S = 2.0  # cancel(terminate=True) of a running call: how long to wait for its worker to stop it

# Liveness of a deployed task's worker, asked before its call is sent (a targeted Celery ping under its prefix).
PING_TIMEOUT_S = 0.5
ALIVE_FOR_S = 10.0  # a worker that answered is not asked again for this long
GONE_FOR_S = 1.0  # nor, this long, one that did not (a burst of calls pays one ping, not one each)
WAKE_AGAIN_AFTER_S = 1.0  # a parked task's calls ask the deploy worker to wake it once in this long
MAX_REBROADCAST = 1000
MAX_RECORD_CHECKS = 3  # reads of a task's record while one call is sent (it changed under the previous ones)
MAX_KNOWN_RECORDS = 1024  # task records kept from their last call

READY_STATES = ("SUCCESS", "FAILURE", "REVOKED")
NOT_STARTED = ("PENDING", "RETRY")  # a remembered cancel of such a call answers REVOKED: it will not run


class TaskInvoker:
    def __init__(
        self,
        settings: Settings,
        registry: TaskRegistry,
        celery_app: Celery,
        issued: IssuedTasks | None = None,
        apps: PrefixedApps | None = None,
        broker: redis.Redis | None = None,
    ) -> None:
        _install_deadline_drainer()
        _install_publish_client_reuse()
        self.settings = settings
        self.registry = registry
        self.app = celery_app  # unprefixed: tasks registered by hand, whose workers MCS did not deploy
        self.issued = issued or IssuedTasks(settings, registry.client)
        self.apps = apps or PrefixedApps(settings)
        #: (id, wait_s) -> the state of an id that is not a task's (a pipeline's or a map's, mcs.pipelines), or None
        self.follow: Callable[[str, float], TaskStatusResult | None] | None = None
        #: Asks the deploy worker to wake a parked task (zero replicas) when a call for it is sent.
        self.wake: Callable[[str], Any] | None = None
        self._woken: dict[str, float] = {}  # task -> until when a wake request already sent stands
        #: Publishes a call nobody waits for here: (app, Celery task name, args, kwargs, queue, task id).
        self.publish: Callable[[Celery, str, list[Any], dict[str, Any], str, str], None] = publish_call
        self._broker = broker
        # hostname -> (answered, monotonic time until which that answer holds); one lock per hostname
        self._liveness: dict[str, tuple[bool, float]] = {}
        self._ping_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        # task name -> (JSON as stored, record) of its registry record at its last call (see _send)
        self._records: dict[str, tuple[str | bytes, TaskRecord]] = {}

    @property
    def broker(self) -> redis.Redis:
        """The broker DB's client (to take a cancelled call off its queue), made on first use."""
        if self._broker is None:
            self._broker = make_client(self.settings, self.settings.redis_broker_db)
        return self._broker

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
            raise self._not_registered(task_name)
        self._check_queue(record, queue)
        return record

    def _not_registered(self, task_name: str) -> NotFound:
        suggestions = self.registry.similar(task_name)
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        return NotFound(
            f"task {task_name!r} is not registered, so nothing was sent{hint} "
            "(get_available_tasks lists the registered tasks)",
            task_name=task_name,
            suggestions=suggestions,
        )

    def _check_queue(self, record: TaskRecord, queue: str | None) -> None:
        if queue is not None and queue != record.queue:
            raise InvalidInput("queue", queue, f"task {record.name!r} is served on queue {record.queue!r}; omit queue")
        if record.queue == self.settings.deploy_queue:
            raise InvalidInput("queue", record.queue, "the deploy queue is reserved for MCS's deploy worker")

    def send(self, task_name: Any, args: Any = None, kwargs: Any = None, queue: Any = None) -> TaskSentResult:
        record, task_id, _, _ = self._send(task_name, args, kwargs, queue, wait=False)
        return TaskSentResult(
            task_id=task_id,
            task_name=record.name,
            queue=record.queue,
            message=f"task sent to queue {record.queue}, task_id {task_id}; follow it with "
            "get_celery_result (wait_s waits for it: no polling loop needed)",
        )

    def trigger(
        self, task_name: Any, args: Any = None, kwargs: Any = None, queue: Any = None, timeout_s: Any = None
    ) -> TaskCallResult:
        timeout = self._timeout(timeout_s)
        started = time.perf_counter()
        record, _, result, canary = self._send(task_name, args, kwargs, queue, wait=True)
        assert result is not None
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

    def _send(
        self, task_name: Any, args: Any, kwargs: Any, queue: Any, wait: bool
    ) -> tuple[TaskRecord, str, AsyncResult | None, str | None]:
        """Validate (names, required ones, declared types), make sure a deployed task's worker answers, remember the
        task id (so get_celery_result knows it), then send: if Redis cannot record the id, nothing is sent. Returns
        the record, the task id, the AsyncResult to wait on (``wait``; else None: nobody waits here) and the version
        a call of a gradual release went to.

        The task's record is kept from its last call: the call is checked and routed against it, and the id is
        remembered in the same round trip as the check that the record is still that one (``remember_if_current``);
        a record that changed meanwhile (a deploy, a scale, a release) comes back from that check, and the call is
        checked, routed and remembered again against it. One round trip before the publish, not two."""
        validate_task_name(task_name, "task_name")
        if queue is not None:
            validate_queue(queue, "queue")
        task_id = str(uuid.uuid4())
        draw = random.random()  # noqa: S311 - a traffic split, not a secret
        record_key = self.registry.keys.task(task_name)
        known = self._records.get(task_name)
        read = False  # the record was read during this call (else it is the last call's: confirmed as it is sent)
        for attempt in range(MAX_RECORD_CHECKS):
            if known is None:
                known, read = self._known_record(task_name, self.issued.record_json(record_key)), True
            raw, record = known
            try:
                self._check_queue(record, queue)
                call_args, call_kwargs = check_call_arguments(record, args, kwargs, self.settings.max_payload_bytes)
                dep = record.deployment
                route, version = dep.route(record.queue, draw) if dep else (record.queue, None)
                canary = version if dep and dep.canary else None
                served = self._ensure_served(record, route, ask=read)
            except MCSError:
                if read:
                    raise
                served = False
            if not served:  # refused, or its worker must be asked: only ever against the record as it is now
                known = None
                continue
            issued = (task_id, record.name, record.queue, record.key_prefix, canary, record.primary, route)
            if attempt == MAX_RECORD_CHECKS - 1:  # it changes under every call: remember against this read
                self.issued.remember(*issued)
                break
            current = self.issued.remember_if_current(record_key, raw, *issued)
            if current is REMEMBERED:
                break
            known, read = self._known_record(task_name, current), True
        else:  # not reached: every pass after a read either raises or remembers the id
            raise MCSError(f"task {task_name!r}: its record changed under every check, so nothing was sent")
        app = self._app(record.key_prefix)
        name = celery_task_name(record.name)
        try:
            if wait:
                result = app.send_task(name, args=call_args, kwargs=call_kwargs, queue=route, task_id=task_id)
            else:
                result = None
                self.publish(app, name, call_args, call_kwargs, route, task_id)
        except Exception as exc:
            raise self._celery_error(exc) from None
        log.debug("sent %s to queue %s as %s", record.name, route, task_id)
        return record, task_id, result, canary

    def _known_record(self, task_name: str, raw: str | bytes | None) -> tuple[str | bytes, TaskRecord]:
        """(JSON as stored, record) of the registry record ``raw``, kept for the task's next call."""
        if raw is None:
            self._records.pop(task_name, None)
            raise self._not_registered(task_name)
        known = raw, TaskRecord.model_validate_json(raw)
        if len(self._records) >= MAX_KNOWN_RECORDS:
            self._records.clear()
        self._records[task_name] = known
        return known

    # -- results ----------------------------------------------------------------------------------------------

    def status(self, task_id: Any = None, task_ids: Any = None, wait_s: Any = None) -> TaskStatusResult:
        """The state of one id (``task_id``: a failed call raises, as trigger does) or of several (``task_ids``:
        one entry each). ``wait_s``: wait up to that long for every one of them to be ready (0: answer now)."""
        wait = self._wait_s(wait_s)
        if (task_id is None) == (task_ids is None):
            shown = {"task_id": task_id, "task_ids": task_ids}
            raise InvalidInput("task_id/task_ids", shown, f"give exactly one: task_id, or task_ids (1-{MAX_TASK_IDS})")
        if task_ids is not None:
            return self._statuses(task_ids, wait)
        _check_task_id(task_id, "task_id")
        issued = self.issued.find(task_id)
        if issued is None:
            followed = self.follow(task_id, wait) if self.follow is not None else None
            if followed is not None:  # a pipeline's or a map's id
                return followed
            raise NotFound(self._unknown(task_id), task_id=task_id)
        prefix = issued.get("key_prefix", "")
        result = self._app(prefix).AsyncResult(task_id)
        started = time.monotonic()
        if wait and self._observed(result, issued) not in READY_STATES:
            self._wait_ready({prefix: [result]}, started + wait)
        state = self._observed(result, issued)
        waited_ms = round((time.monotonic() - started) * 1000, 1) if wait else None
        if state == "FAILURE":
            # The same answer as trigger_celery_task gives for a task that raised: an isError result.
            self.issued.count_outcome(task_id, issued, succeeded=False)
            raise self._failure(result, issued["task_name"], issued["queue"], state, result.result, prefix)
        entry = self._entry(task_id, issued, result, state)
        if not entry.ready:  # still queued or running: keep remembering the id, however long the queue is
            self.issued.keep(task_id)
        shown = entry.model_dump(include=SINGLE_ID_FIELDS)
        return TaskStatusResult(**shown, waited_ms=waited_ms)

    def _statuses(self, task_ids: Any, wait: float) -> TaskStatusResult:
        if not isinstance(task_ids, list) or not 1 <= len(task_ids) <= MAX_TASK_IDS:
            shown = f"<{len(task_ids)} ids>" if isinstance(task_ids, list) else task_ids
            raise InvalidInput("task_ids", shown, f"a list of 1 to {MAX_TASK_IDS} task ids ({TASK_ID_RULE})")
        for index, task_id in enumerate(task_ids):
            _check_task_id(task_id, f"task_ids[{index}]")
        started = time.monotonic()
        records = self.issued.find_many(task_ids)
        results: dict[str, AsyncResult] = {}
        for task_id, issued in zip(task_ids, records, strict=True):
            if issued is not None and task_id not in results:
                results[task_id] = self._app(issued.get("key_prefix", "")).AsyncResult(task_id)
        if wait:
            groups: dict[str, list[AsyncResult]] = {}
            for task_id, issued in zip(task_ids, records, strict=True):
                result = results.get(task_id)
                if issued is not None and result is not None and self._observed(result, issued) not in READY_STATES:
                    prefix = issued.get("key_prefix", "")
                    if result not in groups.setdefault(prefix, []):
                        groups[prefix].append(result)
            if groups:
                self._wait_ready(groups, started + wait)
        entries = [
            self._entry(task_id, issued, results.get(task_id))
            for task_id, issued in zip(task_ids, records, strict=True)
        ]
        self.issued.keep_many(sorted({e.task_id for e in entries if not e.ready}))
        ready = sum(e.ready for e in entries)
        failed = sum(e.error is not None for e in entries)
        counts = {"total": len(entries), "ready": ready, "pending": len(entries) - ready, "failed": failed}
        waited = f" after waiting {time.monotonic() - started:.1f} s" if wait else ""
        message = f"{ready} of {len(entries)} ready ({failed} did not succeed), {counts['pending']} pending{waited}"
        return TaskStatusResult(
            ready=counts["pending"] == 0,
            results=entries,
            counts=counts,
            waited_ms=round((time.monotonic() - started) * 1000, 1) if wait else None,
            message=message,
        )

    def _entry(
        self, task_id: str, issued: dict[str, Any] | None, result: AsyncResult | None, state: str | None = None
    ) -> TaskStatusEntry:
        """One id's entry: a failure or an unknown id is an entry with its error, not an error of the call.
        ``state``: the call's state when the caller read it already."""
        if issued is None or result is None:
            return TaskStatusEntry(
                task_id=task_id, status="UNKNOWN", ready=True, error=NotFound.code, message=self._unknown(task_id)
            )
        state = state or self._observed(result, issued)
        base = {"task_id": task_id, "task_name": issued["task_name"], "queue": issued["queue"], "status": state}
        if state in ("SUCCESS", "FAILURE"):
            self.issued.count_outcome(task_id, issued, succeeded=state == "SUCCESS")
        if state == "SUCCESS":
            value = result.result
            return TaskStatusEntry(**base, ready=True, result=value, message=f"task succeeded: {_preview(value)}")
        if state == "FAILURE":
            error = self._failure(
                result, issued["task_name"], issued["queue"], state, result.result, issued.get("key_prefix", "")
            )
            details = error.details
            return TaskStatusEntry(
                **base,
                ready=True,
                error=error.code,
                message=error.message,
                exception_type=details.get("exception_type"),
                exception_message=details.get("exception_message"),
                traceback=_bounded(details.get("traceback"), MAX_ENTRY_TRACEBACK_CHARS),
            )
        if state == "REVOKED":
            cancelled_at = _when(issued.get("revoked_at"))
            return TaskStatusEntry(**base, ready=True, cancelled_at=cancelled_at, message=_revoked_message(issued))
        message, lost_at = _waiting(state, issued)
        return TaskStatusEntry(**base, ready=False, worker_lost_at=lost_at, message=message)

    def _observed(self, result: AsyncResult, issued: dict[str, Any]) -> str:
        """Celery's state, except that a call MCS revoked answers REVOKED while it has not started (a worker that
        took it before the revoke reached it may still run it: then its real state shows)."""
        state = self._state(result)
        return "REVOKED" if state in NOT_STARTED and issued.get("revoked_at") is not None else state

    def _wait_ready(self, groups: dict[str, list[AsyncResult]], deadline: float) -> None:
        """Wait until every result is ready or the deadline passes, on each prefix's result backend in turn (Celery's
        ResultSet: pub/sub on the results' keys, after a look at what is stored already). Results of a later
        prefix that finish meanwhile are found at once when their turn comes. ``interval=0``: that first look
        (one MGET) must not sleep its default 0.5 s before the pub/sub wait starts."""
        from celery.exceptions import TimeoutError as ResultTimeout
        from celery.result import ResultSet

        for prefix, results in groups.items():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                ResultSet(results, app=self._app(prefix)).join_native(
                    timeout=remaining, interval=0, propagate=False, disable_sync_subtasks=False
                )
            except ResultTimeout:
                return
            except Exception as exc:
                raise self._celery_error(exc) from None

    def _unknown(self, task_id: str) -> str:
        return (
            f"task id {task_id} is unknown: MCS did not issue it, or its result expired "
            f"(results are kept {self.settings.result_expires_s} s)"
        )

    # -- cancelling -------------------------------------------------------------------------------------------

    def cancel(self, task_id: Any, terminate: Any = False) -> CancelResult:
        """Revoke a call MCS issued: remembered (issued record, and under the task's prefix for its worker),
        broadcast to the task's workers, and, while it still waits in its queue, taken off the queue (then no
        worker, started now or later, receives it). ``terminate``: a running call is stopped too (SIGTERM to the
        worker's pool process running it). A finished call is left as it is (cancelled false)."""
        _check_task_id(task_id, "task_id")
        if not isinstance(terminate, bool):
            raise InvalidInput("terminate", terminate, "true or false")
        issued = self.issued.find(task_id)
        if issued is None:
            raise NotFound(self._unknown(task_id) + ", so there is nothing to cancel", task_id=task_id)
        prefix = issued.get("key_prefix", "")
        app = self._app(prefix)
        state = self._state(app.AsyncResult(task_id))
        base = {"task_id": task_id, "task_name": issued["task_name"], "queue": issued["queue"], "terminate": terminate}
        if state in READY_STATES:
            again = state == "REVOKED" and issued.get("revoked_at") is not None
            done = "was cancelled already" if again else f"had finished already ({state}): nothing was cancelled"
            return CancelResult(**base, status=state, cancelled=again, message=f"task {task_id} {done}")
        now = time.time()
        issued = self.issued.mark_revoked(task_id, now, terminate) or issued
        try:
            self.issued.remember_revoked(app.backend.client, prefix, task_id, now)
            app.control.revoke(task_id, terminate=terminate, signal="SIGTERM")
        except MCSError:
            raise
        except Exception as exc:
            raise self._celery_error(exc) from None
        removed = False
        if state == "PENDING":
            route = issued.get("route") or issued["queue"]
            removed = self.issued.remove_queued(self.broker, [prefix + key for key in queue_lists(route)], task_id)
            if removed:  # no worker will write its state: MCS does (and wakes whoever waits on it)
                try:
                    app.backend.mark_as_revoked(task_id, "cancelled with cancel_celery_task before it ran")
                except Exception as exc:
                    raise self._celery_error(exc) from None
        result = app.AsyncResult(task_id)
        if terminate and state == "STARTED":
            self._wait_ready({prefix: [result]}, time.monotonic() + TERMINATE_WAIT_S)
        now_state = self._observed(result, issued)
        return self._cancelled(base, state, now_state, removed)

    def _cancelled(self, base: dict[str, Any], before: str, state: str, removed: bool) -> CancelResult:
        task_id = base["task_id"]
        if removed:
            how = "it was taken off its queue before any worker received it: no worker will run it"
        elif before == "PENDING":
            how = (
                "a worker had received it already: its workers were told not to run it (a worker that took it and "
                "missed that message, e.g. one offline then, may still run it: get_celery_result shows its state)"
            )
        elif before == "RETRY":
            how = "it waits for a retry: its workers were told not to run it again"
        elif base["terminate"]:
            how = (
                "its worker was told to stop it"
                if state == "REVOKED"
                else f"its worker was told to stop it; it still runs after {TERMINATE_WAIT_S:g} s (follow it with "
                "get_celery_result)"
            )
        else:
            return CancelResult(
                **base,
                status=state,
                cancelled=False,
                message=f"task {task_id} is running ({state}) and keeps running: cancel_celery_task(task_id, "
                "terminate=true) stops it; a retry or a redelivery of it will not run",
            )
        if state in ("SUCCESS", "FAILURE"):  # it finished while it was being cancelled
            message = f"task {task_id} finished ({state}) before the cancel reached it"
            return CancelResult(**base, status=state, cancelled=False, message=message)
        return CancelResult(
            **base, status=state, cancelled=True, removed_from_queue=removed, message=f"task {task_id} cancelled: {how}"
        )

    # -- is anybody serving the task? -------------------------------------------------------------------------

    def _ensure_served(self, record: TaskRecord, route: str, ask: bool = True) -> bool:
        """A deployed task's worker (the one its call is routed to) must answer a targeted ping, else nothing is
        sent: ServiceUnavailable naming the cause and the fix, within about PING_TIMEOUT_S. A task registered by
        hand (no deployment, or none with a hostname) is not asked: its workers are not MCS's.

        ``ask`` False: only what needs no round trip (an answer still held); False when the worker would have to be
        asked, or a parked task woken (the caller then reads the task's record first: it may have changed)."""
        dep = record.deployment
        if dep is None:
            return True
        if dep.parked:  # zero replicas: the call waits in the queue while the deploy worker starts a worker
            if not ask:
                return False
            owner, now = record.primary or record.name, time.monotonic()
            if self.wake is not None and self._woken.get(owner, 0.0) <= now:  # one request per burst of calls
                self._woken[owner] = now + WAKE_AGAIN_AFTER_S
                try:
                    self.wake(owner)
                except Exception as exc:  # the autoscaler also sees the queue grow: the call is not lost
                    log.warning("could not ask the deploy worker to wake %s: %s", record.name, exc)
            return True
        self._woken.pop(record.primary or record.name, None)  # it serves: parked again later, a call wakes it at once
        canary = dep.canary
        if canary is not None and route == canary.serve_queue:
            group, replicas = canary.hostname, 1
        else:
            # Every slot the group may use (Swarm chooses which replicas a scale-down stops: slot 2 may be the one
            # left); a destination nobody answers to costs nothing, and the first answer ends the wait.
            group = dep.hostname
            replicas = max(dep.desired_replicas, dep.max_replicas or 0, self.settings.max_replicas)
        if not group:
            return True
        known = self._liveness.get(group)
        if known is not None and known[0] and known[1] > time.monotonic():
            return True  # the common path: answered within the last ALIVE_FOR_S, no round trip
        if not ask:
            return False
        hostnames = replica_hostnames(group, replicas)
        with self._ping_lock(group):
            known = self._liveness.get(group)  # another call may have asked while this one waited
            if known is not None and known[1] > time.monotonic():
                alive = known[0]
            else:
                answered = self._ping(record.key_prefix, hostnames)
                alive = bool(answered)
                self._remember_liveness(group, alive)
                if alive:
                    self._rebroadcast_revokes(record.key_prefix, hostnames)
        if not alive:
            raise ServiceUnavailable(
                f"task {record.name!r} is deployed but nobody serves it: none of its workers ({hostnames[0]}, ...) "
                f"answered a ping within {PING_TIMEOUT_S:g} s, so nothing was sent. The "
                "deploy worker's watchdog replaces a gone worker within MCS_WATCH_EVERY_S "
                f"({self.settings.watch_every_s:g} s): call again shortly; list_deployments shows the workers' status, "
                f"and deploy_task(task_name={record.name!r}) starts new ones (e.g. when no deploy worker runs)",
                service="task_worker",
                task_name=record.name,
                hostname=hostnames[0],
                queue=record.queue,
            )
        return True

    def _ping_lock(self, hostname: str) -> threading.Lock:
        with self._locks_lock:
            if len(self._ping_locks) > 1024:
                self._ping_locks.clear()
            return self._ping_locks.setdefault(hostname, threading.Lock())

    def _remember_liveness(self, hostname: str, alive: bool) -> None:
        now = time.monotonic()
        if len(self._liveness) > 1024:
            self._liveness = {h: v for h, v in self._liveness.items() if v[1] > now}
        self._liveness[hostname] = (alive, now + (ALIVE_FOR_S if alive else GONE_FOR_S))

    def _ping(self, key_prefix: str, hostnames: list[str]) -> list[str]:
        """Which of the workers ``hostnames`` answer a ping on their prefix's remote-control channel (MCS's
        credentials)? The first answer ends the wait."""
        from kombu.exceptions import OperationalError

        for attempt in range(2):
            app = self._app(key_prefix)
            try:
                replies = app.control.ping(destination=hostnames, timeout=PING_TIMEOUT_S, limit=1)
            except Exception as exc:
                lost = isinstance(exc, OperationalError | OSError) or is_connection_error(exc)
                if not lost or attempt or not key_prefix:
                    raise self._celery_error(exc) from None
                self.apps.forget(key_prefix)  # a connection kept from before a Redis restart: ask with a fresh app
                continue
            return [h for h in hostnames if any(h in reply for reply in replies or ())]
        return []

    def _rebroadcast_revokes(self, key_prefix: str, hostnames: list[str]) -> None:
        """Tell a worker that answered the calls MCS revoked under its prefix: Celery's workers keep revocations in
        memory only, so one started (or restarted) after a cancel learns them here. A courtesy: never fails a call."""
        try:
            app = self._app(key_prefix)
            ids = self.issued.revoked_ids(app.backend.client, key_prefix, MAX_REBROADCAST)
            if ids:
                app.control.revoke(ids, destination=hostnames)
        except Exception as exc:
            log.warning("could not broadcast the revoked calls of %s again: %s", ", ".join(hostnames), exc)

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
        what = f"was cancelled ({exc_type})" if state == "REVOKED" else f"failed with {exc_type}{tried}"
        return kind(
            f"task {task_name} {what}: {value}",
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

    def _wait_s(self, wait_s: Any) -> float:
        if wait_s is None:
            return 0.0
        if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not 0 <= wait_s <= MAX_WAIT_S:
            raise InvalidInput("wait_s", wait_s, f"a number of seconds from 0 (answer now) to {MAX_WAIT_S:g}")
        return float(wait_s)

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


def publish_call(app: Celery, name: str, args: list[Any], kwargs: dict[str, Any], queue: str, task_id: str) -> None:
    """Publish a call nobody waits for here (send_celery_task, map_celery_task): Celery's own message, routing,
    producer and publish retries, as ``app.send_task`` does, without what only a caller that waits needs: the
    AsyncResult, whose backend subscribes to the result's channel as the call is sent and unsubscribes when it is
    dropped (two pub/sub commands for a result read later by its id), and the queue declaration, which kombu checks
    against its cache on every publish by copying the queue: a call to a queue goes through kombu's default exchange
    straight onto the queue's list, which no binding routes (the worker declares the queue it consumes)."""
    amqp = app.amqp
    options = amqp.router.route({"queue": queue}, name, args, kwargs)
    message = amqp.create_task_message(
        task_id, name, args, kwargs, reply_to=app.thread_oid, create_sent_event=app.conf.task_send_sent_event
    )
    with _producer(app) as producer, producer.connection._reraise_as_library_errors():
        amqp.send_task_message(producer, name, message, **options, declare=[])


_free_producers: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
_free_producers_lock = threading.Lock()
MAX_FREE_PRODUCERS = 64  # per app: at most one per thread that sends at once


@contextmanager
def _producer(app: Celery) -> Iterator[Any]:
    """A producer of ``app`` that stays bound to a broker connection of its own between calls. Celery's producer
    pool binds its producer to a pooled connection again on every publish and lets go of it after (a sixth of a
    send's CPU); these are kept, one per thread that publishes at the same time, for as long as ``app`` is. One that
    failed (its connection may be broken) is dropped: the next call makes a new one."""
    with _free_producers_lock:
        free = _free_producers.setdefault(app, [])
    try:
        producer = free.pop()
    except IndexError:
        producer = app.amqp.Producer(app.connection_for_write())
    try:
        yield producer
    except BaseException:
        _close_quietly(producer)
        raise
    if len(free) < MAX_FREE_PRODUCERS:
        free.append(producer)
    else:
        _close_quietly(producer)


def _close_quietly(producer: Any) -> None:
    try:
        producer.connection.close()
    except Exception as exc:  # it failed already: closing it is a courtesy
        log.debug("closing a producer's connection: %s", exc)


def _install_publish_client_reuse() -> None:
    """Let each of kombu's Redis channels keep the client it publishes with.

    kombu's Redis channel makes a new ``redis.Redis`` for every message it publishes (``conn_or_acquire`` ->
    ``_create_client``), and redis-py fills each new client's table of about 200 response callbacks: measured in
    the MCP server, a sixth of a send's CPU. The client holds no connection of its own (it borrows one from the
    channel's pool per command, and is safe to share between threads), so the channel keeps one for as long as it
    keeps that pool. The proper home of this is a kombu Transport of MCS's own in its Celery configuration; until
    then, like the drainer above, installed once by the invoker (the MCP server's side only).
    """
    from kombu.transport import redis as kombu_redis

    channel = kombu_redis.Channel
    if getattr(channel._create_client, "mcs_reuse", False):
        return
    create = channel._create_client

    def _create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:
            return create(self, asynchronous)
        pool = self.pool
        client = self.__dict__.get("_mcs_publish_client")
        if client is None or client.connection_pool is not pool:
            client = self.__dict__["_mcs_publish_client"] = create(self, False)
        return client

    _create_client.mcs_reuse = True  # type: ignore[attr-defined]
    channel._create_client = _create_client


def _bounded(text: str | None, limit: int = MAX_TRACEBACK_CHARS) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return "...\n" + text[-limit:]


def _check_task_id(task_id: Any, field: str) -> None:
    if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
        raise InvalidInput(field, task_id, TASK_ID_RULE)


def _when(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _revoked_message(issued: dict[str, Any]) -> str:
    at = _when(issued.get("revoked_at"))
    return f"task cancelled (cancel_celery_task at {at}): it did not run to completion" if at else "task revoked"


def _waiting(state: str, issued: dict[str, Any]) -> tuple[str, str | None]:
    """The message of a call still queued or running, and when its worker was lost (if it was)."""
    waiting = "waiting in the queue (is a worker serving it?)" if state == "PENDING" else "in progress"
    lost_at = _when(issued.get("worker_lost_at"))
    if lost_at is not None:
        waiting = f"its worker was lost at {lost_at} and the call was delivered again ({waiting})"
    return f"task state {state}: {waiting}", lost_at


def _preview(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
