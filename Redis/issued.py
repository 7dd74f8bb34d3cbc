"""Task ids MCS issued: remembered for the result lifetime, so an id MCS never issued is reported as unknown
instead of Celery's eternal PENDING."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from mcs.core.settings import Settings
from Redis.connection import make_client, redis_errors
from Redis.keys import Keys


class IssuedTasks:
    """``mcs:issued:{task_id}`` -> {task_name, queue, sent_at}, with a TTL of ``result_expires_s``."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.metadata_prefix)
        self._client = client

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = make_client(self.settings)
        return self._client

    def remember(self, task_id: str, task_name: str, queue: str) -> None:
        issued = json.dumps({"task_name": task_name, "queue": queue, "sent_at": time.time()})
        with redis_errors(self.settings):
            self.client.set(self.keys.issued(task_id), issued, ex=self.settings.result_expires_s)

    def find(self, task_id: str) -> dict[str, Any] | None:
        """What was recorded when ``task_id`` was sent, or None for an id MCS did not issue (or forgot)."""
        with redis_errors(self.settings):
            raw = self.client.get(self.keys.issued(task_id))
        return None if raw is None else json.loads(raw)

    def keep(self, task_id: str) -> None:
        """Remember the id for another result lifetime (it is still queued or running)."""
        with redis_errors(self.settings):
            self.client.expire(self.keys.issued(task_id), self.settings.result_expires_s)
