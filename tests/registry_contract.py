"""Registry behaviour that must hold on any Redis: run by test_registry.py on fakeredis and on a real server."""

from __future__ import annotations

import pytest

from mcs.core.errors import Conflict, InvalidInput, NotFound
from Redis.registry import TaskRegistry

ADD_PARAMS = [
    {"name": "a", "type": "int", "required": True, "description": "first"},
    {"name": "b", "type": "int", "required": True, "description": "second"},
]


def all_keys(registry: TaskRegistry) -> set[str]:
    return {k for k in registry.client.scan_iter(match=registry.keys.prefix + "*")}


class RegistryContract:
    """Subclasses provide a ``registry`` fixture."""

    def test_register_and_get(self, registry: TaskRegistry) -> None:
        record = registry.register(
            name="add_numbers",
            description="两数相加",
            parameters=ADD_PARAMS,
            return_type="int",
            category="arithmetic",
            queue="math",
        )
        got = registry.get("add_numbers")
        assert got == record
        assert got.return_type == "int"
        assert got.parameters[0].name == "a"
        assert got.created_at.tzinfo is not None and got.created_at.utcoffset().total_seconds() == 0
        assert got.created_at == got.last_updated

    def test_reregister_keeps_created_at(self, registry: TaskRegistry) -> None:
        first = registry.register(name="t1", description="v1")
        second = registry.register(name="t1", description="v2")
        assert second.created_at == first.created_at
        assert second.last_updated > first.last_updated
        assert registry.get("t1").description == "v2"

    def test_category_move_leaves_no_stale_membership(self, registry: TaskRegistry) -> None:
        registry.register(name="t1", category="old")
        registry.register(name="t1", category="new")
        assert registry.names("old") == []
        assert registry.names("new") == ["t1"]
        assert registry.categories() == {"new": 1}

    def test_category_move_keeps_others_in_old_category(self, registry: TaskRegistry) -> None:
        registry.register(name="t1", category="old")
        registry.register(name="t2", category="old")
        registry.register(name="t1", category="new")
        assert registry.categories() == {"new": 1, "old": 1}

    def test_list_by_category_and_paging(self, registry: TaskRegistry) -> None:
        for i in range(5):
            registry.register(name=f"t{i}", category="even" if i % 2 == 0 else "odd")
        assert [r.name for r in registry.list()] == ["t0", "t1", "t2", "t3", "t4"]
        assert [r.name for r in registry.list(category="odd")] == ["t1", "t3"]
        assert [r.name for r in registry.list(offset=1, limit=2)] == ["t1", "t2"]
        assert registry.categories() == {"even": 3, "odd": 2}

    def test_remove_leaves_no_key_behind(self, registry: TaskRegistry) -> None:
        registry.register(name="t1", category="solo")
        registry.register(name="t2", category="shared")
        registry.register(name="t3", category="shared")
        assert registry.remove("t1") is True
        assert registry.remove("t2") is True
        assert registry.remove("t3") is True
        assert all_keys(registry) == set()
        assert registry.remove("t3") is False

    def test_get_unknown_suggests_close_names(self, registry: TaskRegistry) -> None:
        registry.register(name="simple_add")
        with pytest.raises(NotFound) as info:
            registry.get("simple_ad")
        assert info.value.details["suggestions"] == ["simple_add"]

    @pytest.mark.parametrize(
        ("field", "kwargs"),
        [
            ("task_name", {"name": "../../etc"}),
            ("queue", {"name": "ok", "queue": "$(id)"}),
            ("category", {"name": "ok", "category": "A B"}),
            ("parameters[0].name", {"name": "ok", "parameters": [{"name": "class"}]}),
            ("parameters", {"name": "ok", "parameters": [{"name": "a"}, {"name": "a"}]}),
            ("task.parameters.0.bogus", {"name": "ok", "parameters": [{"name": "a", "bogus": 1}]}),
        ],
    )
    def test_bad_input_is_rejected_and_nothing_written(self, registry: TaskRegistry, field: str, kwargs) -> None:
        with pytest.raises(InvalidInput) as info:
            registry.register(**kwargs)
        assert field in str(info.value)
        assert all_keys(registry) == set()

    def test_metadata_update_keeps_the_deployment_and_its_queue(self, registry: TaskRegistry) -> None:
        deployment = {"deployment_id": "d1", "version": "abc", "container_id": "c1", "runtime": "docker"}
        registry.register(name="t1", queue="q1", deployment=deployment)
        updated = registry.register(name="t1", queue="q1", description="better words")
        assert updated.deployment is not None and updated.deployment.container_id == "c1"
        with pytest.raises(Conflict, match="redeploy it with deploy_task to change its queue"):
            registry.register(name="t1", queue="q2")
        assert registry.get("t1").queue == "q1"

    def test_a_deployed_tasks_parameters_are_its_codes(self, registry: TaskRegistry) -> None:
        deployment = {"deployment_id": "d1", "version": "abc", "container_id": "c1", "runtime": "docker"}
        registry.register(name="t1", queue="q1", parameters=[{"name": "a"}], deployment=deployment)
        with pytest.raises(Conflict, match="deploy_task"):
            registry.register(name="t1", queue="q1", parameters=[{"name": "a"}, {"name": "b"}])
        assert [p.name for p in registry.get("t1").parameters] == ["a"]
        updated = registry.register(name="t1", queue="q1", parameters=[{"name": "a"}], category="math")
        assert updated.category == "math" and updated.deployment is not None

    def test_a_queue_another_deployment_serves_is_refused(self, registry: TaskRegistry) -> None:
        deployment = {"deployment_id": "d1", "version": "abc", "container_id": "c1", "runtime": "docker"}
        registry.register(name="owner", queue="q1", deployment=deployment)
        with pytest.raises(Conflict, match="served by task 'owner'"):
            registry.register(name="intruder", queue="q1")
        assert registry.find("intruder") is None
