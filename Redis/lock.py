"""A Redis lock with a TTL, renewed while held and released only by its holder: one deploy at a time per task.

redis-py's ``Lock`` does the owner-checked acquire, extend and release (``SET NX PX`` and Lua scripts that act only
while the key still holds the holder's token). While the block runs, a daemon thread extends the TTL every third
of it, so a long deploy (a first base-image build) cannot outlive its lock, yet a holder that dies frees it within
one TTL.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import LockError

from mcs.core.errors import Conflict

log = logging.getLogger(__name__)


def _free_if_holder_dead(client: redis.Redis, key: str, holder_alive: Callable[[str], bool]) -> bool:
    """Delete the lock when its holder (the part of its token before '/') is no longer alive; True when freed."""
    token = client.get(key)
    token = token.decode() if isinstance(token, bytes) else token
    if not token or "/" not in token or holder_alive(token.split("/", 1)[0]):
        return False
    freed = {"done": False}

    def delete(pipe: redis.client.Pipeline) -> None:
        if pipe.get(key) in (token, token.encode()):
            pipe.multi()
            pipe.delete(key)
            freed["done"] = True

    client.transaction(delete, key)
    if freed["done"]:
        log.warning("freed the lock %s: its holder %s is no longer alive", key, token.split("/", 1)[0])
    return freed["done"]


@contextmanager
def redis_lock(
    client: redis.Redis,
    key: str,
    ttl_s: int,
    what: str,
    wait_s: float = 0.0,
    poll_s: float = 0.1,
    holder: str | None = None,
    holder_alive: Callable[[str], bool] | None = None,
) -> Iterator[str]:
    """Hold ``key`` for the duration of the block (yields the holder's token); wait up to ``wait_s`` for it, else
    raise Conflict saying what is in progress. With ``holder`` the token names it, and a lock whose holder
    ``holder_alive`` says is dead is taken over at once instead of after its TTL."""
    lock = client.lock(key, timeout=ttl_s, sleep=poll_s, blocking=wait_s > 0, blocking_timeout=wait_s or None,
                       thread_local=False)  # fmt: skip
    token_of = f"{holder}/{secrets.token_hex(16)}" if holder else None
    acquired = lock.acquire(token=token_of)
    if not acquired and holder_alive is not None and _free_if_holder_dead(client, key, holder_alive):
        acquired = lock.acquire(token=token_of)
    if not acquired:
        left_ms = client.pttl(key)
        raise Conflict(
            f"{what} is in progress; try again when it is done (the lock expires in {max(left_ms, 0) / 1000:.0f} "
            "s at the latest)",
        )
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            try:
                lock.extend(ttl_s, replace_ttl=True)
            except LockError:
                log.warning("lost the lock %s", key)
                return
            except redis.RedisError:
                log.warning("could not renew the lock %s", key, exc_info=True)

    renewer = threading.Thread(target=renew, name=f"renew {key}", daemon=True)
    renewer.start()
    token = lock.local.token
    try:
        yield token.decode() if isinstance(token, bytes) else str(token)
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(LockError):  # expired and taken by another holder: theirs now, not ours to free
            lock.release()
