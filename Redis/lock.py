"""A Redis lock with a TTL, renewed while held and released only by its holder: one deploy at a time per task.

``SET key token NX PX ttl`` takes it; while the block runs, a daemon thread extends the TTL every third of it (only
while the key still holds our token), so a long deploy (a first base-image build) cannot outlive its lock, yet a
holder that dies frees it within one TTL. A compare-and-delete (WATCH/GET/MULTI/DEL, no Lua needed) releases it.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from mcs.errors import Conflict

log = logging.getLogger(__name__)


def _if_holder(client: redis.Redis, key: str, token: str, action) -> bool:
    """Run ``action(pipe)`` in a transaction only while ``key`` holds ``token``; True when it ran."""
    done = {"ran": False}

    def step(pipe: redis.client.Pipeline) -> None:
        if pipe.get(key) in (token, token.encode()):
            pipe.multi()
            action(pipe)
            done["ran"] = True

    client.transaction(step, key)
    return done["ran"]


@contextmanager
def redis_lock(
    client: redis.Redis, key: str, ttl_s: int, what: str, wait_s: float = 0.0, poll_s: float = 0.1
) -> Iterator[str]:
    """Hold ``key`` for the duration of the block; wait up to ``wait_s`` for it, else raise Conflict."""
    token = secrets.token_hex(16)
    ttl_ms = int(ttl_s * 1000)
    deadline = time.monotonic() + wait_s
    while not client.set(key, token, nx=True, px=ttl_ms):
        if time.monotonic() >= deadline:
            left_ms = client.pttl(key)
            raise Conflict(
                f"{what} is in progress; try again when it is done (the lock expires in {max(left_ms, 0) / 1000:.0f} "
                "s at the latest)",
            )
        time.sleep(poll_s)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            try:
                if not _if_holder(client, key, token, lambda pipe: pipe.pexpire(key, ttl_ms)):
                    log.warning("lost the lock %s", key)
                    return
            except redis.RedisError:
                log.warning("could not renew the lock %s", key, exc_info=True)

    renewer = threading.Thread(target=renew, name=f"renew {key}", daemon=True)
    renewer.start()
    try:
        yield token
    finally:
        stop.set()
        renewer.join()
        _if_holder(client, key, token, lambda pipe: pipe.delete(key))
