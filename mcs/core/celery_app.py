"""The Celery configuration of MCS and its task naming: one definition for the MCS client, the deploy worker and
every generated task worker.

Redis is broker and result backend. Task names follow the original: ``mcp_app.<task_name>``, routed to the task's
own queue. Generated task workers render the same values into their ``app_{queue}.py``. Celery itself is imported
only when an app is made, so importing this module costs nothing.
"""

from __future__ import annotations

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
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def create_celery_app(settings: Settings, name: str = APP_NAME) -> Celery:
    """A Celery app for ``settings``. Creating it does not connect; the first send or get does."""
    from celery import Celery  # imported here: the MCP server starts without paying for Celery

    app = Celery(name, broker=settings.broker_url, backend=settings.result_backend_url, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
