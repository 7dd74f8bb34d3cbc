"""A Redis lock with a TTL, released only by its holder: one deploy at a time per task.

``SET key token NX PX ttl`` takes it; a compare-and-delete (WATCH/GET/MULTI/DEL, no Lua needed) releases it, so
a holder whose lock expired cannot release somebody else's.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from mcs.errors import Conflict


@contextmanager
def redis_lock(
    client: redis.Redis, key: str, ttl_s: int, what: str, wait_s: float = 0.0, poll_s: float = 0.1
) -> Iterator[str]:
    """Hold ``key`` for the duration of the block; wait up to ``wait_s`` for it, else raise Conflict."""
    token = secrets.token_hex(16)
    deadline = time.monotonic() + wait_s
    while not client.set(key, token, nx=True, px=int(ttl_s * 1000)):
        if time.monotonic() >= deadline:
            ttl_ms = client.pttl(key)
            raise Conflict(
                f"{what} is in progress; try again when it is done (the lock expires in {max(ttl_ms, 0) / 1000:.0f} s "
                "at the latest)",
            )
        time.sleep(poll_s)
    try:
        yield token
    finally:

        def release(pipe: redis.client.Pipeline) -> None:
            if pipe.get(key) in (token, token.encode()):
                pipe.multi()
                pipe.delete(key)

        client.transaction(release, key)
