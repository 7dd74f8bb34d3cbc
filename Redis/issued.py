"""Task ids MCS issued: remembered for the result lifetime, so an id MCS never issued is reported as unknown
instead of Celery's eternal PENDING."""

from __future__ import annotations

import json
import time
from typing import Any

from Redis.connection import RedisStore, redis_errors


class IssuedTasks(RedisStore):
    """``mcs:issued:{task_id}`` -> {task_name, queue, sent_at, key_prefix}, with a TTL of ``result_expires_s``."""

    def remember(self, task_id: str, task_name: str, queue: str, key_prefix: str = "") -> None:
        """``key_prefix``: where the task's result will be (its deployment's prefix when it was sent)."""
        issued = {"task_name": task_name, "queue": queue, "sent_at": time.time()}
        if key_prefix:
            issued["key_prefix"] = key_prefix
        issued = json.dumps(issued)
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

    def mark_lost(self, task_id: str, lost_at: float) -> None:
        """The call's worker died at ``lost_at`` and the call was delivered again (get_celery_result says so)."""
        key = self.keys.issued(task_id)
        with redis_errors(self.settings):
            raw = self.client.get(key)
            if raw is None:
                return
            issued = json.loads(raw)
            issued["worker_lost_at"] = lost_at
            issued["redelivered"] = int(issued.get("redelivered", 0)) + 1
            self.client.set(key, json.dumps(issued), keepttl=True)
