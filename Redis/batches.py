"""Pipelines and maps MCS runs on its trusted side: their state, so that ``get_celery_result`` follows their id as it
follows a task id. ``mcs:batch:{id}`` -> JSON, kept for the result lifetime."""

from __future__ import annotations

import json
from typing import Any

from Redis.connection import RedisStore, redis_errors


class Batches(RedisStore):
    def save(self, batch_id: str, state: dict[str, Any]) -> None:
        with redis_errors(self.settings):
            self.client.set(
                self.keys.batch(batch_id), json.dumps(state, default=str), ex=self.settings.result_expires_s
            )

    def find(self, batch_id: str) -> dict[str, Any] | None:
        with redis_errors(self.settings):
            raw = self.client.get(self.keys.batch(batch_id))
        return None if raw is None else json.loads(raw)
