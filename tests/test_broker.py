"""Redis/broker.py on a real Redis server, with messages in kombu's own format: published by a real kombu
Producer under a task's ``global_keyprefix`` (as MCS's Celery apps do) and consumed by a real kombu consumer
(BRPOP), so the order asserted here is the order a worker takes them in."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import kombu
import pytest
import redis

from mcs.core.celery_app import task_key_prefix, version_queue
from mcs.core.errors import InvalidInput
from mcs.core.settings import Settings
from Redis.broker import PRIORITY_SEP, move_queue, queue_depth, queue_keys, queue_lists, requeue_unacked
from Redis.connection import make_client

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix(settings: Settings) -> str:
    """A key prefix of this test alone (its metadata prefix is unique), like a deployed task's."""
    return task_key_prefix(settings, f"demo_{uuid.uuid4().hex[:6]}")


@pytest.fixture
def broker(settings: Settings, prefix: str) -> Iterator[redis.Redis]:
    """A client of the broker DB; every key under this test's prefix is deleted afterwards (the broker DB is
    shared with the session's workers, so nothing else is touched)."""
    client = make_client(settings, settings.redis_broker_db)
    yield client
    stale = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if stale:
        client.delete(*stale)
    client.close()


@pytest.fixture
def conn(settings: Settings, prefix: str) -> Iterator[kombu.Connection]:
    connection = kombu.Connection(settings.broker_url, transport_options={"global_keyprefix": prefix})
    yield connection
    connection.release()


def publish(conn: kombu.Connection, queue: str, *bodies: str, priority: int | None = None) -> None:
    """Publish with kombu's Redis transport (LPUSH onto ``<prefix><queue>``, or its priority list)."""
    simple = conn.SimpleQueue(queue)
    try:
        for body in bodies:
            simple.put(body, **({} if priority is None else {"priority": priority}))
    finally:
        simple.close()


def consume(conn: kombu.Connection, queue: str, count: int) -> list[str]:
    """Take ``count`` messages as a worker does (BRPOP over the queue's lists), acknowledging each; then the queue
    must be empty. On a connection of its own: a BRPOP still in flight when a consumer stops would take the next
    consumer's message."""
    taken: list[str] = []
    with conn.clone() as own:
        simple = own.SimpleQueue(queue)
        try:
            while len(taken) < count:
                try:
                    message = simple.get(block=True, timeout=2)
                except simple.Empty:
                    break
                taken.append(message.payload)
                message.ack()
            with pytest.raises(simple.Empty):  # nothing more waits in the queue's lists
                simple.get_nowait()
        finally:
            simple.close()
    return taken


def test_queue_keys_are_kombus(prefix: str) -> None:
    lists = queue_lists(f"{prefix}q")
    assert lists[0] == f"{prefix}q" and lists[3] == f"{prefix}q\x06\x163" and len(lists) == 10
    assert queue_keys(f"{prefix}q") == [*lists, f"_kombu.binding.{prefix}q"]
    from kombu.transport.redis import Channel

    assert Channel.sep == PRIORITY_SEP


def test_move_into_an_empty_queue_keeps_the_order(settings, prefix, broker, conn) -> None:
    publish(conn, "qa", "a1", "a2", "a3")
    assert queue_depth(settings, prefix, "qa", broker) == 3
    assert move_queue(settings, prefix, "qa", "qb", broker) == 3
    assert queue_depth(settings, prefix, "qa", broker) == 0
    assert queue_depth(settings, prefix, "qb", broker) == 3
    assert not broker.exists(f"{prefix}qa")
    assert consume(conn, "qb", 3) == ["a1", "a2", "a3"]  # oldest first, as they would have been taken from qa
    assert move_queue(settings, prefix, "qa", "qb", broker) == 0  # nothing left to move


def test_moved_messages_are_taken_before_the_targets_own(settings, prefix, broker, conn) -> None:
    publish(conn, "qb", "b1", "b2")
    publish(conn, "qa", "a1", "a2", "a3")
    assert move_queue(settings, prefix, "qa", "qb", broker) == 3
    assert queue_depth(settings, prefix, "qb", broker) == 5
    publish(conn, "qb", "b3")  # published after the move: taken after everything that was waiting
    assert consume(conn, "qb", 6) == ["a1", "a2", "a3", "b1", "b2", "b3"]


def test_raw_list_order_after_the_move(settings, prefix, broker) -> None:
    """The same as above on the raw lists: LPUSH publishes, BRPOP takes from the right."""
    broker.lpush(f"{prefix}qb", "b1", "b2")  # qb = [b2, b1]
    broker.lpush(f"{prefix}qa", "a1", "a2", "a3")  # qa = [a3, a2, a1]
    assert move_queue(settings, prefix, "qa", "qb", broker) == 3
    assert broker.lrange(f"{prefix}qb", 0, -1) == ["b2", "b1", "a3", "a2", "a1"]
    taken = [broker.brpop([f"{prefix}qb"], timeout=1)[1] for _ in range(5)]
    assert taken == ["a1", "a2", "a3", "b1", "b2"]


def test_priority_lists_move_to_the_same_priority(settings, prefix, broker, conn) -> None:
    publish(conn, "qa", "low1", "low2")
    publish(conn, "qa", "p6_1", "p6_2", priority=6)
    publish(conn, "qb", "b_p6", priority=6)
    assert broker.llen(f"{prefix}qa{PRIORITY_SEP}6") == 2  # kombu's own priority list
    assert queue_depth(settings, prefix, "qa", broker) == 4
    assert move_queue(settings, prefix, "qa", "qb", broker) == 4
    assert broker.llen(f"{prefix}qb") == 2
    assert broker.llen(f"{prefix}qb{PRIORITY_SEP}6") == 3
    assert queue_depth(settings, prefix, "qb", broker) == 5
    # kombu takes priority 0 (the plain list) first, then 3, 6, 9; within a list the moved ones come first
    assert consume(conn, "qb", 5) == ["low1", "low2", "p6_1", "p6_2", "b_p6"]


def test_many_messages_move_in_chunks(settings, prefix, broker) -> None:
    n = 2500  # more than one LRANGE chunk of the script
    broker.lpush(f"{prefix}qa", *(str(i) for i in range(n)))
    broker.lpush(f"{prefix}qb", "old")
    assert move_queue(settings, prefix, "qa", "qb", broker) == n
    assert broker.llen(f"{prefix}qa") == 0
    values = broker.lrange(f"{prefix}qb", 0, -1)
    assert values[::-1] == [*(str(i) for i in range(n)), "old"]  # right end first: the order BRPOP takes


def test_move_only_touches_the_given_prefix(settings, prefix, broker) -> None:
    other = prefix.replace(":t:", ":t:other_")
    try:
        broker.lpush(f"{other}qa", "theirs")
        broker.lpush(f"{prefix}qa", "ours")
        assert move_queue(settings, prefix, "qa", "qb", broker) == 1
        assert broker.lrange(f"{other}qa", 0, -1) == ["theirs"]
        assert not broker.exists(f"{other}qb")
    finally:
        broker.delete(f"{other}qa", f"{other}qb")


def test_move_refuses_bad_queues(settings, prefix, broker) -> None:
    with pytest.raises(InvalidInput) as caught:
        move_queue(settings, prefix, "qa", "qa", broker)
    assert caught.value.field == "target_queue"
    with pytest.raises(InvalidInput) as caught:
        move_queue(settings, prefix, "../x", "qb", broker)
    assert caught.value.field == "source_queue"
    for bad in ("unacked", "unacked_index", "_kombu.binding.qa", f"qa{PRIORITY_SEP}3", "", "q a", None):
        with pytest.raises(InvalidInput) as caught:
            move_queue(settings, prefix, "qa", bad, broker)  # kombu's own keys, or no queue name at all
        assert caught.value.field == "target_queue"
        with pytest.raises(InvalidInput):
            queue_depth(settings, prefix, bad, broker)


def test_version_queues_are_queues(settings, prefix, broker, conn) -> None:
    """A version's queue (``<queue>.<version[:12]>``, see version_queue) is moved from and onto like any queue."""
    old, new = version_queue("qa", "0123456789abcdef"), version_queue("qa", "fedcba9876543210")
    publish(conn, old, "v1_call")
    publish(conn, new, "v2_call")
    assert queue_depth(settings, prefix, old, broker) == 1
    assert move_queue(settings, prefix, old, new, broker) == 1
    assert consume(conn, new, 2) == ["v1_call", "v2_call"]


def test_queue_depth_counts_every_priority_in_one_batch(settings, prefix, broker) -> None:
    assert queue_depth(settings, prefix, "qa", broker) == 0
    broker.lpush(f"{prefix}qa", "x", "y")
    broker.lpush(f"{prefix}qa{PRIORITY_SEP}3", "z")
    broker.lpush(f"{prefix}qa{PRIORITY_SEP}9", "w")
    broker.lpush(f"{prefix}qb", "not counted")
    assert queue_depth(settings, prefix, "qa", broker) == 4
    before = broker.info("commandstats").get("cmdstat_llen", {}).get("calls", 0)
    queue_depth(settings, prefix, "qa", broker)
    assert broker.info("commandstats")["cmdstat_llen"]["calls"] - before == len(queue_lists("qa"))


# -- requeue_unacked ------------------------------------------------------------------------------------------


def take_unacked(broker: redis.Redis, conn: kombu.Connection, prefix: str, queue: str, body: str) -> str:
    """A call a worker took and did not acknowledge, as kombu keeps it: published by kombu, then moved from the
    queue into ``<prefix>unacked`` as ``[message, exchange, routing_key]`` under its delivery tag (what kombu's
    ack emulation writes when a worker takes it). Returns the message's task id header."""
    task_id = uuid.uuid4().hex
    simple = conn.SimpleQueue(queue)
    try:
        simple.put(body, headers={"id": task_id})
    finally:
        simple.close()
    raw = broker.rpop(f"{prefix}{queue}")
    message = json.loads(raw)
    tag = message["properties"]["delivery_tag"]
    broker.hset(f"{prefix}unacked", tag, json.dumps([message, queue, queue]))
    # scored by the time it was taken, as kombu does; an old score would let kombu's own restore_visible (run by
    # any consumer of the prefix) give it back before requeue_unacked is asked to
    broker.zadd(f"{prefix}unacked_index", {tag: time.time()})
    return task_id


def test_requeue_everything_by_default(settings, prefix, broker, conn) -> None:
    ida = take_unacked(broker, conn, prefix, "qa", "a1")
    idb = take_unacked(broker, conn, prefix, "qb", "b1")
    publish(conn, "qa", "a_waiting")
    given_back = requeue_unacked(settings, prefix, broker)
    assert sorted(given_back) == sorted([ida, idb])
    assert broker.hlen(f"{prefix}unacked") == 0 and broker.zcard(f"{prefix}unacked_index") == 0
    assert consume(conn, "qa", 2) == ["a1", "a_waiting"]  # given back at the front
    assert consume(conn, "qb", 1) == ["b1"]


def test_requeue_only_the_given_queues(settings, prefix, broker, conn) -> None:
    ida = take_unacked(broker, conn, prefix, "qa", "a1")
    take_unacked(broker, conn, prefix, "qb", "b1")  # another live worker's call
    assert requeue_unacked(settings, prefix, broker, queues={"qa"}) == [ida]
    assert consume(conn, "qa", 1) == ["a1"]
    assert queue_depth(settings, prefix, "qb", broker) == 0  # left alone, still unacked
    ((_tag, raw),) = broker.hgetall(f"{prefix}unacked").items()
    message, _exchange, routing_key = json.loads(raw)
    assert routing_key == "qb" and "redelivered" not in message["headers"]
    assert broker.zcard(f"{prefix}unacked_index") == 1
    assert requeue_unacked(settings, prefix, broker, queues=set()) == []  # none wanted: nothing touched
    assert broker.hlen(f"{prefix}unacked") == 1


def test_requeue_onto_another_queue(settings, prefix, broker, conn) -> None:
    ida = take_unacked(broker, conn, prefix, "qa", "a1")
    idb = take_unacked(broker, conn, prefix, "qb", "b1")
    publish(conn, "qc", "c_waiting")
    assert requeue_unacked(settings, prefix, broker, queues=["qa"], to_queue="qc") == [ida]
    assert queue_depth(settings, prefix, "qa", broker) == 0
    with conn.clone() as own:
        simple = own.SimpleQueue("qc")
        try:
            first = simple.get(block=True, timeout=1)
            assert first.payload == "a1" and first.headers["id"] == ida
            assert first.headers["redelivered"] is True and first.delivery_info["redelivered"] is True
            first.ack()
            last = simple.get(block=True, timeout=1)
            assert last.payload == "c_waiting" and "redelivered" not in last.headers
            last.ack()
        finally:
            simple.close()
    assert requeue_unacked(settings, prefix, broker, to_queue="qc") == [idb]
    assert consume(conn, "qc", 1) == ["b1"]
    with pytest.raises(InvalidInput) as caught:
        requeue_unacked(settings, prefix, broker, to_queue="unacked")
    assert caught.value.field == "to_queue"


def test_requeue_with_nothing_unacked(settings, prefix, broker) -> None:
    assert requeue_unacked(settings, prefix, broker) == []
    assert requeue_unacked(settings, prefix, broker, queues={"qa"}, to_queue="qb") == []
