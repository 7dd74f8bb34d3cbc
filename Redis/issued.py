"""Task ids MCS issued: remembered for the result lifetime, so an id MCS never issued is reported as unknown
instead of Celery's eternal PENDING."""

from __future__ import annotations

import json
import time
from typing import Any

from Redis.connection import RedisStore, redis_errors


class IssuedTasks(RedisStore):
    """``mcs:issued:{task_id}`` -> {task_name, queue, sent_at, key_prefix}, with a TTL of ``result_expires_s``."""

    def remember(
        self,
        task_id: str,
        task_name: str,
        queue: str,
        key_prefix: str = "",
        canary_version: str | None = None,
        release: str | None = None,
    ) -> None:
        """``key_prefix``: where the task's result will be (its deployment's prefix when it was sent).
        ``canary_version``: the version a call sent during a gradual release went to; its calls are counted under
        ``release``, the folder's main task (default: the task itself)."""
        issued = {"task_name": task_name, "queue": queue, "sent_at": time.time()}
        if key_prefix:
            issued["key_prefix"] = key_prefix
        if canary_version:
            issued["version"] = canary_version
            issued["release"] = release or task_name
        with redis_errors(self.settings):
            pipe = self.client.pipeline(transaction=False)  # one round trip either way
            pipe.set(self.keys.issued(task_id), json.dumps(issued), ex=self.settings.result_expires_s)
            if canary_version:
                pipe.hincrby(self.keys.calls(issued["release"]), f"{canary_version}:sent", 1)
            pipe.execute()

    def count_outcome(self, task_id: str, issued: dict[str, Any], succeeded: bool) -> None:
        """Count a finished call of a gradual release against its version, once however often it is read."""
        version = issued.get("version")
        if not version:
            return
        with redis_errors(self.settings):
            if self.client.set(self.keys.counted(task_id), 1, nx=True, ex=self.settings.result_expires_s):
                field = f"{version}:{'succeeded' if succeeded else 'failed'}"
                self.client.hincrby(self.keys.calls(issued.get("release") or issued["task_name"]), field, 1)

    def calls(self, task_name: str) -> dict[str, dict[str, int]]:
        """{version: {sent, succeeded, failed}} of the calls counted during gradual releases of ``task_name``."""
        with redis_errors(self.settings):
            raw = self.client.hgetall(self.keys.calls(task_name))
        counts: dict[str, dict[str, int]] = {}
        for field, value in raw.items():
            version, _, kind = (field.decode() if isinstance(field, bytes) else field).partition(":")
            counts.setdefault(version, {"sent": 0, "succeeded": 0, "failed": 0})[kind] = int(value)
        return counts

    def forget_calls(self, task_name: str) -> None:
        with redis_errors(self.settings):
            self.client.delete(self.keys.calls(task_name))

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
