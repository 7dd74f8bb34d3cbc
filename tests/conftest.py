"""Fixtures: a private Redis server per test session, settings pointing at it, a Docker client.

Helpers that tests import by name live in ``tests/helpers.py``.

Tiers (markers): ``unit`` needs nothing; ``integration`` uses the Redis server this suite starts itself;
``docker`` needs a daemon: skipped with the reason locally when none answers, a failure when MCS_REQUIRE_DOCKER=1.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from mcs.core.settings import Settings
from Redis.server import LocalRedisServer
from tests.helpers import REQUIRE_DOCKER, TEST_LABEL, Tracker, make_settings


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's own .env, Redis/redis_config.py or REDIS_* variables."""
    for name in list(os.environ):
        if name.startswith(("REDIS_", "MCS_")) and name != "MCS_REQUIRE_DOCKER":
            monkeypatch.delenv(name)
    monkeypatch.setenv("MCS_REDIS_CONFIG_FILE", str(tmp_path / "no_redis_config.py"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisServer]:
    socket = tmp_path_factory.mktemp("redis-socket") / "redis.sock"  # confined workers reach Redis through it
    server = LocalRedisServer(tmp_path_factory.mktemp("redis"), unix_socket=socket).start()
    try:
        yield server
    finally:
        server.stop()


TEST_METADATA_DB = 2


@pytest.fixture
def settings(redis_server: LocalRedisServer, tmp_path: Path) -> Settings:
    """Settings for the private server. Its metadata DB is flushed before each test; the broker and result DBs
    are left alone so that session-long workers keep their queue bindings (results use unique ids anyway)."""
    s = make_settings(
        tmp_path, redis_port=redis_server.port, metadata_db=TEST_METADATA_DB, redis_socket=redis_server.unix_socket
    )
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, db=TEST_METADATA_DB)
    client.flushdb()
    client.close()
    return s


@pytest.fixture(scope="session")
def docker_client():
    """A docker-py client, or a skip (a failure under MCS_REQUIRE_DOCKER=1) when no daemon answers."""
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        reason = f"no Docker daemon answers ({type(exc).__name__}: {exc}); start dockerd to run this test"
        if REQUIRE_DOCKER:
            pytest.fail(reason + " [MCS_REQUIRE_DOCKER=1]")
        pytest.skip(reason)
    _remove_labelled(client)
    yield client
    _remove_labelled(client)
    client.close()


@pytest.fixture(scope="session")
def base_ready(docker_client) -> str:
    """The worker base image, built once when missing (about a minute); its reference."""
    from deploy_mcp.docker.base_image import ensure_base_image

    return ensure_base_image(Settings(_env_file=None), docker_client)


@pytest.fixture
def tracker(docker_client) -> Iterator[Tracker]:
    """Containers and images a test made (append their ids or references), removed whatever happened."""
    made = Tracker(docker_client)
    try:
        yield made
    finally:
        made.cleanup()


def _remove_labelled(client) -> None:
    """Remove what tests made: containers and images labelled mcs.test (never anything else)."""
    for container in client.containers.list(all=True, filters={"label": TEST_LABEL}):
        container.remove(force=True)
    import docker.errors

    for image in client.images.list(filters={"label": TEST_LABEL}):
        with contextlib.suppress(docker.errors.NotFound):  # already gone with a parent removed before it
            client.images.remove(image.id, force=True)
