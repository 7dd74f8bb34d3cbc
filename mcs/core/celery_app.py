"""The Celery configuration of MCS and its task naming: one definition for the MCS client, the deploy worker and
every generated task worker.

Redis is broker and result backend. Task names follow the original: ``mcp_app.<task_name>``, routed to the task's
own queue. Generated task workers render the same values into their ``app_{queue}.py``. Celery itself is imported
only when an app is made, so importing this module costs nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from mcs.core.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

APP_NAME = "mcp_app"


def celery_task_name(task_name: str) -> str:
    """The Celery name of an MCS task: ``mcp_app.<task_name>``."""
    return f"{APP_NAME}.{task_name}"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the MCS client, the deploy worker and every generated task worker."""
    return {
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "result_expires": settings.result_expires_s,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        # A message not acknowledged within the visibility timeout is delivered again: keep it above the
        # hard time limit so a long task is not run twice while it is still running.
        "broker_transport_options": {"visibility_timeout": max(3600, 2 * settings.task_time_limit_s)},
        "broker_connection_retry_on_startup": True,
        # A send rides out a Redis restart of a few seconds (about 3.5 s of retries) instead of failing at once.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 8,
            "interval_start": 0.05,
            "interval_step": 0.25,
            "interval_max": 0.5,
        },
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def task_worker_config(settings: Settings) -> dict[str, Any]:
    """The configuration a generated task worker gets: :func:`celery_config` plus task events.

    A task worker publishes its task events (received, started, succeeded, failed with the traceback, retried) on its
    own prefix's event channel (``<prefix>/<db>.celeryev/task.*``, within its Redis user's rights), where the
    dashboard's receivers hear them (``mcs.dashboard.events``): its recent calls, failures and latency metrics.
    Workers send their worker events (heartbeats) in any case. The deploy worker and MCS's clients keep task events
    off: no one reads them, and a deploy call's arguments are a signed bundle."""
    return {**celery_config(settings), "worker_send_task_events": True}


def task_key_prefix(settings: Settings, task_name: str) -> str:
    """The prefix of every broker and result key and channel of one deployed task (``mcs:t:<task>:``).

    Celery's ``global_keyprefix`` puts the task's queue, kombu's ``unacked`` bookkeeping, its results and its
    remote-control channels under it, and the task's Redis ACL user may touch nothing else."""
    return f"{settings.metadata_prefix}t:{task_name}:"


def prefixed(config: dict[str, Any], key_prefix: str) -> dict[str, Any]:
    """``config`` with every broker and result key and channel under ``key_prefix`` ('' leaves it as it is)."""
    if not key_prefix:
        return config
    return {
        **config,
        "broker_transport_options": {**config.get("broker_transport_options", {}), "global_keyprefix": key_prefix},
        "result_backend_transport_options": {
            **config.get("result_backend_transport_options", {}),
            "global_keyprefix": key_prefix,
        },
    }


def create_celery_app(settings: Settings, name: str = APP_NAME, key_prefix: str = "") -> Celery:
    """A Celery app for ``settings`` (its keys under ``key_prefix``). Creating it does not connect; the first send
    or get does."""
    from celery import Celery  # imported here: the MCP server starts without paying for Celery

    app = Celery(name, broker=settings.broker_url, backend=settings.result_backend_url, set_as_current=False)
    app.conf.update(prefixed(celery_config(settings), key_prefix))
    return app


class PrefixedApps:
    """One Celery app (producer and result consumer) per key prefix, made on first use, at most ``limit`` kept: the
    least recently used one is dropped when another is needed (a call still waiting on it keeps it alive). The MCP
    server sends each call and reads each result under its task's prefix; the deploy worker probes each new worker
    under its prefix."""

    def __init__(self, settings: Settings, limit: int = 64, name: str = APP_NAME) -> None:
        self.settings = settings
        self.limit = limit
        self.name = name
        self._apps: OrderedDict[str, Celery] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key_prefix: str) -> Celery:
        with self._lock:
            app = self._apps.get(key_prefix)
            if app is not None:
                self._apps.move_to_end(key_prefix)
                return app
            app = self._apps[key_prefix] = create_celery_app(self.settings, self.name, key_prefix)
            if len(self._apps) > self.limit:
                self._apps.popitem(last=False)
        return app

    def forget(self, key_prefix: str) -> None:
        """Drop the app of a prefix (its connections broke): the next ``get`` makes a fresh one."""
        with self._lock:
            self._apps.pop(key_prefix, None)

    def __len__(self) -> int:
        return len(self._apps)


def version_queue(queue: str, version: str) -> str:
    """The queue one version of a deployed task consumes (under the task's prefix): MCS routes the task's calls to
    the serving version's queue, so two versions never take calls from the same queue."""
    return f"{queue}.{version[:12]}"
