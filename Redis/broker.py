"""What MCS does in the Celery broker DB itself: remove the queue of an undeployed task (kombu's Redis transport
keeps the queue's list, its priority lists and the exchange binding there), move a queue's pending calls onto
another queue, count them, and give a dead worker's unacknowledged calls back to a queue.

kombu publishes with LPUSH and its consumers take with BRPOP: the right end of a list is its oldest message, taken
next. A worker BRPOPs its queue's lists in this order: ``queue``, then ``queue\\x06\\x163``, ``...6``, ``...9``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection

import redis

from mcs.core.errors import InvalidInput
from mcs.core.names import KOMBU_RESERVED_QUEUES
from mcs.core.settings import Settings
from Redis.connection import make_client, redis_errors

PRIORITY_SEP = "\x06\x16"  # kombu's separator of a queue's name and a priority
_QUEUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")
QUEUE_RULE = (
    "a queue name of 1-200 letters, digits, '_', '.', ':' or '-' (a letter or digit first), such as a task's queue "
    "or one version's queue ('<queue>.<version>'), and not one of kombu's own keys (unacked, unacked_index, ...)"
)


def check_queue(value: object, field: str = "queue") -> str:
    """A queue MCS moves calls from or onto: a task's queue or a version's queue (``<queue>.<version[:12]>``), never
    one of kombu's own keys of the prefix (``unacked``, a binding, a priority list)."""
    if not isinstance(value, str) or not _QUEUE.fullmatch(value) or value in KOMBU_RESERVED_QUEUES:
        raise InvalidInput(field, value, QUEUE_RULE)
    return value


def queue_lists(queue: str) -> list[str]:
    """kombu's Redis lists of one queue: the queue itself, then its priority lists (``queue\\x06\\x16N``)."""
    return [queue, *(f"{queue}{PRIORITY_SEP}{p}" for p in range(1, 10))]


def queue_keys(queue: str) -> list[str]:
    """kombu's Redis keys of one queue: the list, its priority lists (``queue\\x06\\x16N``) and the binding."""
    return [*queue_lists(queue), f"_kombu.binding.{queue}"]


def purge_queue(settings: Settings, queue: str, client: redis.Redis | None = None) -> bool:
    """Drop the queue's pending messages and binding; True when there was anything to drop."""
    broker = client or make_client(settings, settings.redis_broker_db)
    with redis_errors(settings):
        return bool(broker.delete(*queue_keys(queue)))


# Moves every message of KEYS[2i-1] onto the right (taken-next) end of KEYS[2i], newest of the source first, so
# that the source's oldest message ends rightmost; in chunks (LRANGE + RPUSH), then the source is deleted. One
# script: no consumer, publisher or restore sees a half-moved queue.
_MOVE_SCRIPT = """
local moved = 0
for i = 1, #KEYS, 2 do
    local src, dst = KEYS[i], KEYS[i + 1]
    local n = redis.call('LLEN', src)
    for start = 0, n - 1, 1000 do
        local chunk = redis.call('LRANGE', src, start, math.min(start + 999, n - 1))
        redis.call('RPUSH', dst, unpack(chunk))
    end
    if n > 0 then
        redis.call('DEL', src)
    end
    moved = moved + n
end
return moved
"""


def move_queue(
    settings: Settings,
    key_prefix: str,
    source_queue: str,
    target_queue: str,
    client: redis.Redis | None = None,
) -> int:
    """Move every pending message of ``<prefix><source_queue>`` (and of each of its priority lists, onto the
    target's list of the same priority) to ``<prefix><target_queue>``; how many moved.

    The moved messages are taken first, oldest first, and after them the messages the target already held (in
    their own order): they were published before anything still waiting on the target was. One Lua script moves
    all the lists, so the move is atomic. The messages are moved as they are (kombu's JSON, headers and
    delivery info untouched), so the target's consumers take them like any message published to their queue."""
    check_queue(source_queue, "source_queue")
    check_queue(target_queue, "target_queue")
    if source_queue == target_queue:
        raise InvalidInput("target_queue", target_queue, "a queue other than the source queue")
    broker = client or make_client(settings, settings.redis_broker_db)
    pairs = zip(queue_lists(key_prefix + source_queue), queue_lists(key_prefix + target_queue), strict=True)
    keys = [key for pair in pairs for key in pair]
    with redis_errors(settings):
        return int(broker.eval(_MOVE_SCRIPT, len(keys), *keys))


def queue_depth(settings: Settings, key_prefix: str, queue: str, client: redis.Redis | None = None) -> int:
    """How many messages wait in ``<prefix><queue>`` and its priority lists (one pipelined batch of LLEN)."""
    check_queue(queue)
    broker = client or make_client(settings, settings.redis_broker_db)
    with redis_errors(settings):
        pipe = broker.pipeline(transaction=False)
        for key in queue_lists(key_prefix + queue):
            pipe.llen(key)
        return sum(pipe.execute())


def requeue_unacked(
    settings: Settings,
    key_prefix: str,
    client: redis.Redis | None = None,
    queues: Collection[str] | None = None,
    to_queue: str | None = None,
    keep_ids: Collection[str] = (),
) -> list[str]:
    """Give a dead worker's unacknowledged calls back to a queue, at the front; the task ids given back.

    kombu keeps each call a worker of the prefix took and has not acknowledged in the prefix's ``unacked`` hash, as
    ``[message, exchange, routing_key]``. With ``queues`` None, every entry is given back: with one worker per key
    prefix, every entry was taken by that worker. With ``queues`` (routing keys), only the entries routed by one of
    them are: the others stay untouched, taken by another live worker of the same prefix. MCS routes a call by its
    queue's name, so an entry goes back onto ``<prefix><routing_key>``, or onto ``<prefix><to_queue>`` when given,
    marked redelivered, as kombu's own restore does (``restore_by_tag``). Each entry moves in one transaction.
    ``keep_ids``: task ids a live worker of the prefix holds (running or reserved): never given back."""
    keep = set(keep_ids)
    if to_queue is not None:
        check_queue(to_queue, "to_queue")
    wanted = None if queues is None else set(queues)
    broker = client or make_client(settings, settings.redis_broker_db)
    unacked, index = f"{key_prefix}unacked", f"{key_prefix}unacked_index"
    given_back: list[str] = []
    with redis_errors(settings):
        for tag in broker.hkeys(unacked):

            def restore(pipe: redis.client.Pipeline, tag: str = tag) -> str | None:
                raw = pipe.hget(unacked, tag)
                message, routing_key = None, None
                if raw:
                    message, _exchange, routing_key = json.loads(raw)
                pipe.multi()
                if wanted is not None and routing_key not in wanted:
                    return None  # another worker's call (or gone already): left as it is
                if message is not None and str((message.get("headers") or {}).get("id", "")) in keep:
                    return None  # a live worker holds it
                pipe.hdel(unacked, tag)
                pipe.zrem(index, tag)
                if message is None:
                    return None
                message.setdefault("headers", {})["redelivered"] = True
                message.get("properties", {}).get("delivery_info", {})["redelivered"] = True
                pipe.rpush(f"{key_prefix}{to_queue or routing_key}", json.dumps(message))  # BRPOP takes it next
                return str(message["headers"].get("id", ""))

            task_id = broker.transaction(restore, unacked, value_from_callable=True)
            if task_id is not None:
                given_back.append(task_id)
    return [task_id for task_id in dict.fromkeys(given_back) if task_id]
