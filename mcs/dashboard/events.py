"""Celery events from the task workers, received per key prefix: what the dashboard knows of calls and workers.

Every deployed task's workers publish their events under the task's key prefix (``mcs:t:<task>:/<db>.celeryev/...``,
which the task's Redis user may publish to); tasks registered by hand publish without a prefix. The dashboard
listens with Celery's own receiver (``app.events.Receiver``), one per prefix, in a thread each, with MCS's
administrator credentials, and keeps what it heard in Celery's own ``events.State`` (what Flower keeps): the recent
calls with state, runtime, exception and traceback, and the workers with their heartbeats. Each event is also passed
to ``on_event`` (the Prometheus counters).

Generated workers send task events (``mcs.core.celery_app.task_worker_config``); every Celery worker sends worker
events (heartbeats, online, offline). A worker whose heartbeats stop without an offline event is *lost*
(:meth:`EventMonitor.lost_workers`): a warm shutdown (a retirement, an undeploy, scaling down) says goodbye first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcs.core.celery_app import APP_NAME, PrefixedApps

if TYPE_CHECKING:
    from celery.events.state import State

    from mcs.core.settings import Settings

log = logging.getLogger(__name__)

RECONNECT_S = 1.0  # a receiver whose connection broke tries again after this long
MAX_PREFIXES = 256  # prefixes listened to at once (each is a thread and a Redis connection)
TASK_PREFIX = APP_NAME + "."


@dataclass(frozen=True)
class Call:
    """One call as the events told it."""

    task_id: str
    task_name: str
    state: str
    received: float | None
    started: float | None
    finished: float | None
    runtime_s: float | None
    worker: str | None
    exception: str | None
    traceback: str | None
    retries: int


def task_of(celery_name: str | None) -> str | None:
    """``mcp_app.simple_add`` -> ``simple_add``; None for a name that is not an MCS task's."""
    if not celery_name or not celery_name.startswith(TASK_PREFIX):
        return None
    return celery_name[len(TASK_PREFIX) :]


class EventMonitor:
    """Receivers for a changing set of key prefixes, feeding one ``State``."""

    def __init__(self, settings: Settings, on_event: Callable[[str, dict[str, Any], Any], None] | None = None):
        from celery.events.state import State

        self.settings = settings
        self.on_event = on_event
        self.state: State = State(max_tasks_in_memory=settings.dashboard_recent_calls, max_workers_in_memory=1000)
        self.apps = PrefixedApps(settings, limit=MAX_PREFIXES, name="mcs-dashboard")
        self._threads: dict[str, tuple[threading.Thread, threading.Event, list[Any]]] = {}
        self._lock = threading.Lock()
        self._left: set[str] = set()  # hostnames that sent worker-offline
        self._lost: set[str] = set()  # hostnames counted as lost (once each)
        self._seen_alive: dict[str, str] = {}  # hostname -> prefix, of workers that were alive once
        self._ready: set[str] = set()  # prefixes whose receiver is consuming
        self.events_seen = 0

    # -- which prefixes -------------------------------------------------------------------------------------

    def watch(self, prefixes: Iterable[str]) -> None:
        """Listen to exactly these prefixes ('' is the unprefixed channel of tasks registered by hand)."""
        wanted = set(list(dict.fromkeys(prefixes))[:MAX_PREFIXES])
        with self._lock:
            for prefix in set(self._threads) - wanted:
                _thread, stop, receiver = self._threads.pop(prefix)
                self._ready.discard(prefix)
                stop.set()
                if receiver:
                    receiver[0].should_stop = True
            for prefix in wanted - set(self._threads):
                stop = threading.Event()
                holder: list[Any] = []
                thread = threading.Thread(
                    target=self._listen, args=(prefix, stop, holder), name=f"events:{prefix or '-'}", daemon=True
                )
                self._threads[prefix] = (thread, stop, holder)
                thread.start()

    def watching(self) -> list[str]:
        with self._lock:
            return sorted(self._threads)

    def listening(self, prefix: str) -> bool:
        """Whether the receiver of ``prefix`` consumes (calls from now on are heard)."""
        return prefix in self._ready

    def stop(self) -> None:
        self.watch([])

    def _listen(self, prefix: str, stop: threading.Event, holder: list[Any]) -> None:
        app = self.apps.get(prefix)
        handler = self._handler(prefix)
        while not stop.is_set():
            try:
                with app.connection_for_read() as connection:
                    receiver = app.events.Receiver(connection, handlers={"*": handler})
                    ready = receiver.on_consume_ready

                    def on_ready(*args: Any, _ready: Any = ready, **kwargs: Any) -> None:
                        _ready(*args, **kwargs)  # wakeup: the prefix's workers send a heartbeat at once
                        self._ready.add(prefix)

                    receiver.on_consume_ready = on_ready
                    holder[:] = [receiver]
                    if stop.is_set():
                        return
                    receiver.capture(limit=None, timeout=None, wakeup=True)
            except Exception as exc:  # Redis restarted, or the prefix's app broke: listen again shortly
                self._ready.discard(prefix)
                if stop.is_set():
                    return
                log.info("events of prefix %r: %s: %s (listening again)", prefix, type(exc).__name__, exc)
                self.apps.forget(prefix)
                app = self.apps.get(prefix)
                stop.wait(RECONNECT_S)

    def _handler(self, prefix: str) -> Callable[[dict[str, Any]], None]:
        def handle(event: dict[str, Any]) -> None:
            try:
                kind = event.get("type", "")
                if kind == "worker-offline":
                    self._left.add(str(event.get("hostname")))
                elif kind in ("worker-online", "worker-heartbeat"):
                    hostname = str(event.get("hostname"))
                    self._left.discard(hostname)
                    self._lost.discard(hostname)
                    self._seen_alive[hostname] = prefix
                (obj, _created), _subject = self.state.event(event)
                self.events_seen += 1
                if self.on_event is not None and kind.startswith("task-"):
                    self.on_event(kind, event, obj)
            except Exception:  # one odd event must not end the receiver
                log.exception("could not handle a Celery event of prefix %r", prefix)

        return handle

    # -- reading --------------------------------------------------------------------------------------------

    def calls(self, task_name: str | None = None, limit: int = 50) -> list[Call]:
        """The most recent calls (newest first), of one task or of all."""
        found: list[Call] = []
        for _uuid, task in self.state.tasks_by_time(reverse=True):
            name = task_of(task.name)
            if name is None or (task_name and name != task_name):
                continue
            found.append(_call(task, name))
            if len(found) >= limit:
                break
        return found

    def workers(self, prefix: str) -> list[dict[str, Any]]:
        """The workers of one prefix heard from: hostname, alive, last heartbeat, calls processed, active."""
        seen = [h for h, p in self._seen_alive.items() if p == prefix]
        result = []
        for hostname in sorted(seen):
            worker = self.state.workers.get(hostname)
            if worker is None:
                continue
            result.append(
                {
                    "hostname": hostname,
                    "alive": bool(worker.alive),
                    "heartbeat": worker.heartbeats[-1] if worker.heartbeats else None,
                    "processed": worker.processed,
                    "active": worker.active,
                    "left": hostname in self._left,
                }
            )
        return result

    def lost_workers(self) -> list[tuple[str, str]]:
        """(prefix, hostname) of workers that stopped beating without saying goodbye, each reported once."""
        lost = []
        for hostname, prefix in list(self._seen_alive.items()):
            worker = self.state.workers.get(hostname)
            if worker is None or worker.alive or hostname in self._left or hostname in self._lost:
                continue
            self._lost.add(hostname)
            lost.append((prefix, hostname))
        return lost


def _call(task: Any, name: str) -> Call:
    finished = task.succeeded or task.failed or task.revoked
    runtime = task.runtime
    if runtime is None and finished and task.started:
        runtime = max(0.0, finished - task.started)
    return Call(
        task_id=task.uuid,
        task_name=name,
        state=task.state or "PENDING",
        received=task.received,
        started=task.started,
        finished=finished,
        runtime_s=runtime,
        worker=task.worker.hostname if task.worker is not None else None,
        exception=task.exception,
        traceback=task.traceback,
        retries=int(task.retries or 0),
    )
