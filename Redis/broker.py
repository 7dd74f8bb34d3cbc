"""What MCS does in the Celery broker DB itself: remove the queue of an undeployed task (kombu's Redis transport
keeps the queue's list, its priority lists and the exchange binding there), and give a dead worker's
unacknowledged calls back to their queue."""

from __future__ import annotations

import json

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


def requeue_unacked(settings: Settings, key_prefix: str, client: redis.Redis | None = None) -> list[str]:
    """Give a dead worker's unacknowledged calls back to their queues, at the front; the task ids given back.

    With one worker per key prefix, every entry of the prefix's ``unacked`` hash was taken by that worker. kombu keeps
    each as ``[message, exchange, routing_key]``; MCS routes a call by its queue's name, so it goes back onto
    ``<prefix><routing_key>``, marked redelivered, as kombu's own restore does (``restore_by_tag``)."""
    broker = client or make_client(settings, settings.redis_broker_db)
    unacked, index = f"{key_prefix}unacked", f"{key_prefix}unacked_index"
    given_back: list[str] = []
    with redis_errors(settings):
        for tag in broker.hkeys(unacked):

            def restore(pipe: redis.client.Pipeline, tag: str = tag) -> None:
                raw = pipe.hget(unacked, tag)
                pipe.multi()
                pipe.hdel(unacked, tag)
                pipe.zrem(index, tag)
                if raw:
                    message, _exchange, routing_key = json.loads(raw)
                    message.setdefault("headers", {})["redelivered"] = True
                    message.get("properties", {}).get("delivery_info", {})["redelivered"] = True
                    pipe.rpush(f"{key_prefix}{routing_key}", json.dumps(message))  # BRPOP takes it next
                    given_back.append(str(message["headers"].get("id", "")))

            broker.transaction(restore, unacked)
    return [task_id for task_id in dict.fromkeys(given_back) if task_id]
