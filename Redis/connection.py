"""Redis clients made lazily from the settings, and the one place Redis errors become MCS errors.

No client connects at import time: ``redis.Redis`` opens connections on first use and reconnects by itself, so a
registry made while Redis is down starts working as soon as Redis is back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from mcs.core.errors import ServiceUnavailable
from mcs.core.settings import Settings
from Redis.keys import Keys


def make_client(settings: Settings, db: int | None = None) -> redis.Redis:
    """A client that rides out a Redis restart: a refused or dropped connection is retried with backoff for about
    ``MCS_REDIS_RETRIES`` x 0.5 s before it becomes ServiceUnavailable."""
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), settings.redis_retries)
    return redis.Redis(**settings.redis_kwargs(db), retry=retry, retry_on_error=[redis.ConnectionError])


class RedisStore:
    """What every store of ``Redis/`` shares: the settings, the key schema, and a client made on first use (or
    the one given, e.g. fakeredis in unit tests)."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.metadata_prefix)
        self._client = client

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = make_client(self.settings)
        return self._client


def is_connection_error(exc: BaseException) -> bool:
    """True for redis-py's connection errors (as raised through Celery's result backend)."""
    return isinstance(exc, redis.ConnectionError)


@contextmanager
def redis_errors(settings: Settings) -> Iterator[None]:
    """Translate redis-py's connection and auth errors into ServiceUnavailable with the fix in the message."""
    try:
        yield
    except redis.AuthenticationError:
        raise ServiceUnavailable(
            f"Redis at {settings.redis_location} refused the credentials: check REDIS_PASSWORD",
            service="redis",
        ) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ServiceUnavailable(
            f"Redis at {settings.redis_location} is not reachable ({type(exc).__name__}): start Redis "
            "or set REDIS_HOST/REDIS_PORT; MCS reconnects by itself once it answers",
            service="redis",
        ) from None


def redis_answers(settings: Settings, timeout_s: float = 1.0) -> bool:
    """True when the configured Redis answers a PING within ``timeout_s`` (with the configured credentials)."""
    kwargs = settings.redis_kwargs() | {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    client = redis.Redis(**kwargs)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()
