"""The scaling decisions of each task (who changed its workers, from how many to how many, why): a capped LIST per
task, newest first, shown by list_deployments. Also how many calls a task's workers hold (taken, not acknowledged)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from Redis.connection import RedisStore, make_client, redis_errors

KEPT_EVENTS = 20  # decisions kept per task


class ScalingLog(RedisStore):
    def record(self, task: str, from_replicas: int, to_replicas: int, reason: str) -> dict[str, Any]:
        event = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "from_replicas": int(from_replicas),
            "to_replicas": int(to_replicas),
            "reason": reason[:200],
        }
        key = self.keys.scaling(task)
        with redis_errors(self.settings):
            pipe = self.client.pipeline()
            pipe.lpush(key, json.dumps(event))
            pipe.ltrim(key, 0, KEPT_EVENTS - 1)
            pipe.execute()
        return event

    def recent(self, task: str, count: int = 5) -> list[dict[str, Any]]:
        with redis_errors(self.settings):
            raw = self.client.lrange(self.keys.scaling(task), 0, max(0, count - 1))
        return [json.loads(item) for item in raw]

    def forget(self, task: str) -> None:
        with redis_errors(self.settings):
            self.client.delete(self.keys.scaling(task), self.keys.workers(task))

    def saw_workers(self, task: str, desired: int, workers: list[dict[str, Any]], ttl_s: float) -> None:
        """What the watchdog saw of a task's workers this round (kept ``ttl_s``: a stale view expires)."""
        running = sum(1 for w in workers if w.get("state") == "RUNNING")
        view = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "desired": desired, "running": running,
                "workers": workers}  # fmt: skip
        with redis_errors(self.settings):
            self.client.set(self.keys.workers(task), json.dumps(view), px=max(1000, int(ttl_s * 1000)))

    def workers_seen(self, task: str) -> dict[str, Any] | None:
        with redis_errors(self.settings):
            raw = self.client.get(self.keys.workers(task))
        return json.loads(raw) if raw else None


def calls_held(settings: Any, key_prefix: str, client: Any = None) -> int:
    """Calls the workers of ``key_prefix`` took and have not acknowledged (running, or reserved by a worker): the
    entries of kombu's ``unacked`` hash under that prefix (one prefix per deployed task)."""
    broker = client or make_client(settings, settings.redis_broker_db)
    with redis_errors(settings):
        return int(broker.hlen(f"{key_prefix}unacked"))
