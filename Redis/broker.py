"""What MCS removes from the Celery broker DB itself: a queue of an undeployed task (kombu's Redis transport keeps
the queue's list, its priority lists and the exchange binding there)."""

from __future__ import annotations

import redis

from mcs.core.settings import Settings
from Redis.connection import make_client, redis_errors


def queue_keys(queue: str) -> list[str]:
    """kombu's Redis keys of one queue: the list, its priority lists (``queue\\x06\\x16N``) and the binding."""
    return [queue, *(f"{queue}\x06\x16{p}" for p in range(1, 10)), f"_kombu.binding.{queue}"]


def purge_queue(settings: Settings, queue: str, client: redis.Redis | None = None) -> bool:
    """Drop the queue's pending messages and binding; True when there was anything to drop."""
    broker = client or make_client(settings, settings.redis_broker_db)
    with redis_errors(settings):
        return bool(broker.delete(*queue_keys(queue)))
