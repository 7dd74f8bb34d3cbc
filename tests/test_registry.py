"""The task registry on fakeredis (fast tier) and on a real Redis server (integration tier)."""

from __future__ import annotations

import math
from pathlib import Path

import fakeredis
import pytest
import redis

from mcs.core.errors import NotFound, ServiceUnavailable
from mcs.core.settings import Settings
from mcs.search import rank
from Redis.registry import LIST_CHUNK, TaskRegistry
from Redis.server import LocalRedisServer
from tests.helpers import make_settings
from tests.registry_contract import RegistryContract


@pytest.mark.unit
class TestRegistryOnFakeRedis(RegistryContract):
    @pytest.fixture
    def registry(self, tmp_path: Path) -> TaskRegistry:
        return TaskRegistry(make_settings(tmp_path), client=fakeredis.FakeRedis(decode_responses=True))


@pytest.mark.integration
class TestRegistryOnRealRedis(RegistryContract):
    @pytest.fixture
    def registry(self, settings: Settings) -> TaskRegistry:
        return TaskRegistry(settings)


def command_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info",))


@pytest.fixture
def private_server(tmp_path: Path):
    """A Redis of this test alone: INFO commandstats then counts only this test's commands."""
    server = LocalRedisServer(tmp_path / "private").start()
    yield server
    server.stop()


@pytest.mark.integration
def test_ten_thousand_tasks_listed_in_bounded_round_trips(private_server: LocalRedisServer, tmp_path: Path) -> None:
    registry = TaskRegistry(make_settings(tmp_path, redis_port=private_server.port))
    for i in range(10_000):
        registry.register(name=f"task_{i:05d}", category=f"cat{i % 7}")
    before = command_calls(registry.client)
    records = registry.list()
    used = command_calls(registry.client) - before
    assert len(records) == 10_000
    assert [r.name for r in records[:2]] == ["task_00000", "task_00001"]
    assert used <= 1 + math.ceil(10_000 / LIST_CHUNK), used
    before = command_calls(registry.client)
    categories = registry.categories()
    assert command_calls(registry.client) - before <= 1 + len(categories)
    assert sum(categories.values()) == 10_000
    # A search (get_available_tasks(query=...)) reads every record of its scope the same way, then ranks in memory.
    before = command_calls(registry.client)
    hits = rank(registry.fetch(registry.names()), "task 04242")
    assert command_calls(registry.client) - before <= 1 + math.ceil(10_000 / LIST_CHUNK)
    assert hits[0].record.name == "task_04242"
    before = command_calls(registry.client)
    assert len(registry.fetch(registry.category_names("cat3"))) == len(registry.names("cat3"))
    assert command_calls(registry.client) - before <= 2 + math.ceil(10_000 / 7 / LIST_CHUNK)


@pytest.mark.unit
def test_category_names_of_an_unknown_category_is_not_found_naming_the_others(tmp_path: Path) -> None:
    registry = TaskRegistry(make_settings(tmp_path), client=fakeredis.FakeRedis(decode_responses=True))
    with pytest.raises(NotFound, match="no task is registered yet"):
        registry.category_names("math")
    registry.register(name="a", category="maths")
    registry.register(name="b", category="text")
    assert registry.category_names("maths") == ["a"]
    with pytest.raises(NotFound, match="the categories are: maths, text") as caught:
        registry.category_names("math")
    assert caught.value.details == {"category": "math", "categories": ["maths", "text"], "suggestions": ["maths"]}
    assert registry.names("math") == []  # names() itself still answers an empty list


@pytest.mark.unit
def test_fetch_keeps_the_order_given_and_skips_names_removed_meanwhile(tmp_path: Path) -> None:
    registry = TaskRegistry(make_settings(tmp_path), client=fakeredis.FakeRedis(decode_responses=True))
    for name in ("a", "b", "c"):
        registry.register(name=name)
    registry.remove("b")
    assert [r.name for r in registry.fetch(["c", "b", "a"])] == ["c", "a"]
    assert registry.fetch([]) == []


@pytest.mark.integration
def test_registry_recovers_when_redis_comes_back(tmp_path: Path) -> None:
    server = LocalRedisServer(tmp_path / "r").start()
    port = server.port
    registry = TaskRegistry(make_settings(tmp_path, redis_port=port, redis_socket_timeout_s=1))
    registry.register(name="before")
    server.stop()
    with pytest.raises(ServiceUnavailable, match=rf"127.0.0.1:{port} is not reachable"):
        registry.names()
    server = LocalRedisServer(tmp_path / "r2", port=port).start()
    try:
        registry.register(name="after")  # same registry object: no client frozen at creation
        assert registry.names() == ["after"]
    finally:
        server.stop()


@pytest.mark.integration
def test_registry_made_while_redis_is_down_works_later(tmp_path: Path) -> None:
    from Redis.server import free_port

    port = free_port()
    registry = TaskRegistry(make_settings(tmp_path, redis_port=port, redis_socket_timeout_s=1))
    with pytest.raises(ServiceUnavailable):
        registry.find("x")
    server = LocalRedisServer(tmp_path / "r", port=port).start()
    try:
        assert registry.find("x") is None
    finally:
        server.stop()


@pytest.mark.integration
def test_local_server_in_a_folder_with_spaces_and_quotes(tmp_path: Path) -> None:
    server = LocalRedisServer(tmp_path / 'My Projects "mcs"' / "redis").start()
    try:
        registry = TaskRegistry(make_settings(tmp_path, redis_port=server.port))
        registry.register(name="spaced")
        assert registry.names() == ["spaced"]
    finally:
        server.stop()
