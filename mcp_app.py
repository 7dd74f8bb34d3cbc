"""The ``celery -A mcp_app`` face of MCS's Celery client app, built from the settings.

The configuration and task naming live in ``mcs.core.celery_app`` (one definition for the client, the deploy
worker and every generated task worker); this module re-exports them under the original's names.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from mcs.core.celery_app import APP_NAME, celery_config, celery_task_name, create_celery_app
from mcs.core.settings import load_settings

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["APP_NAME", "celery_config", "celery_task_name", "create_celery_app"]


def __getattr__(name: str) -> Any:
    # ``celery -A mcp_app`` and the original's ``from mcp_app import celery_app`` still work, without building
    # the app (or reading settings) at import time.
    if name in ("celery_app", "app"):
        return _default_app()
    raise AttributeError(name)


@functools.cache
def _default_app() -> Celery:
    return create_celery_app(load_settings())
