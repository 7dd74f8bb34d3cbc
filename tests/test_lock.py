"""The deploy lock: exclusive, renewed while held, released only by its holder."""

from __future__ import annotations

import time

import fakeredis
import pytest

from mcs.core.errors import Conflict
from Redis.lock import redis_lock

pytestmark = pytest.mark.unit


def test_second_holder_is_refused_then_admitted_after_release() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    first = redis_lock(client, "k", 30, what="a deploy of task 't'")
    second = redis_lock(client, "k", 30, what="a deploy of task 't'")
    with first, pytest.raises(Conflict, match="a deploy of task 't' is in progress"), second:
        pass
    with redis_lock(client, "k", 30, what="x"):
        assert client.exists("k")
    assert not client.exists("k")


def test_lock_outlives_its_ttl_while_held() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    with redis_lock(client, "k", 1, what="x") as token:
        time.sleep(1.6)  # longer than the TTL: the renewer must have extended it
        assert client.get("k") == token


def test_release_never_deletes_a_lock_someone_else_holds() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    with redis_lock(client, "k", 30, what="x"):
        client.set("k", "someone-else")  # our lock expired and another deploy took it
    assert client.get("k") == "someone-else"


def test_a_lock_whose_holder_died_is_free_at_once() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    client.set("k", "dead-worker/abc", px=900_000)  # its deploy worker was killed mid-deploy: a 15 min TTL left
    alive = {"live-worker"}
    with redis_lock(client, "k", 30, what="x", holder="live-worker", holder_alive=alive.__contains__) as token:
        assert token.startswith("live-worker/") and client.get("k") == token
        other = redis_lock(client, "k", 30, what="x", holder="other", holder_alive=alive.__contains__)
        with pytest.raises(Conflict), other:  # a live holder's lock is not taken over
            pass
