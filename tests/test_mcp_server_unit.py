"""The MCP tools through the SDK's in-memory client, on fakeredis: interface, validation, errors (fast tier)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from mcp import Client

from mcp_server import build_server
from mcs.core.errors import InvalidInput
from mcs.services import Services
from Redis.registry import TaskRegistry
from tests.helpers import make_settings
from tests.mcp_clients import data, text_json

pytestmark = pytest.mark.unit

TOOLS = {
    "generate_startMain_code",
    "deploy_task",
    "trigger_celery_task",
    "send_celery_task",
    "get_celery_result",
    "cancel_celery_task",
    "run_pipeline",
    "map_celery_task",
    "get_available_tasks",
    "get_task_details",
    "register_task_info",
    "get_tasks_by_category_name",
    "get_task_categories",
    "undeploy_task",
    "list_deployments",
    "get_task_logs",
    "list_task_versions",
    "rollback_task",
    "promote_task",
    "get_audit_log",
    "scale_task",
}
READ_ONLY = {
    "get_celery_result",
    "get_available_tasks",
    "get_task_details",
    "get_tasks_by_category_name",
    "get_task_categories",
    "list_deployments",
    "get_task_logs",
    "list_task_versions",
    "get_audit_log",
}
DESTRUCTIVE = {
    "generate_startMain_code",
    "deploy_task",
    "undeploy_task",
    "rollback_task",
    "promote_task",
    "cancel_celery_task",
}


class NoCelery:
    """Stands in for the Celery app: any use means something was sent, which these tests forbid."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Celery was used ({name}) although the call should have been refused first")


@pytest.fixture
def services(tmp_path: Path) -> Services:
    s = Services(make_settings(tmp_path, max_payload_bytes=1000))
    s.__dict__["registry"] = TaskRegistry(s.settings, client=fakeredis.FakeRedis(decode_responses=True))
    s.__dict__["celery_app"] = NoCelery()
    return s


def call(services: Services, name: str, args: dict[str, Any] | None = None):
    async def run():
        async with Client(build_server(services=services)) as client:
            return await client.call_tool(name, args or {})

    return asyncio.run(run())


def list_tools(services: Services):
    async def run():
        async with Client(build_server(services=services)) as client:
            return (await client.list_tools()).tools

    return asyncio.run(run())


def register_add(services: Services, **overrides: Any) -> None:
    services.registry.register(
        name="simple_add",
        description="adds",
        parameters=[{"name": "a", "type": "int"}, {"name": "b", "type": "int"}],
        return_type="int",
        queue="test_queue",
        **overrides,
    )


def test_every_tool_is_described_for_the_model(services: Services) -> None:
    tools = {t.name: t for t in list_tools(services)}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert len(tool.description) > 40, tool.name
        assert tool.output_schema is not None, tool.name
        for pname, prop in tool.input_schema.get("properties", {}).items():
            assert prop.get("description"), f"{tool.name}.{pname} has no description"
        assert tool.annotations.read_only_hint is (tool.name in READ_ONLY), tool.name
        assert tool.annotations.destructive_hint is (tool.name in DESTRUCTIVE), tool.name


def test_original_parameters_and_defaults_are_kept(services: Services) -> None:
    tools = {t.name: t.input_schema for t in list_tools(services)}
    trigger = tools["trigger_celery_task"]
    assert trigger["required"] == ["task_name"]
    assert {"task_name", "args", "kwargs", "queue", "timeout_s"} == set(trigger["properties"])
    register = tools["register_task_info"]
    assert set(register["required"]) == {"task_name", "description", "parameters"}
    assert register["properties"]["category"]["default"] == "general"
    assert register["properties"]["queue"]["default"] == "celery"
    assert register["properties"]["return_type"]["default"] == "Any"
    result = tools["get_celery_result"]  # task_id as before, or task_ids; either way no argument is required
    assert {"task_id", "task_ids", "wait_s"} == set(result["properties"]) and "required" not in result
    assert tools["cancel_celery_task"]["required"] == ["task_id"]


def test_register_then_discover(services: Services) -> None:
    params = [{"name": "a", "type": "int", "required": True, "description": "first"}]
    result = call(
        services,
        "register_task_info",
        {
            "task_name": "simple_add",
            "description": "adds",
            "parameters": params,
            "return_type": "int",
            "category": "arithmetic",
            "queue": "test_queue",
        },
    )
    assert not result.is_error
    assert data(result)["success"] is True and data(result)["task_name"] == "simple_add"
    listed = data(call(services, "get_available_tasks"))
    assert listed["total_count"] == 1 and listed["tasks"][0]["return_type"] == "int"
    details = data(call(services, "get_task_details", {"task_name": "simple_add"}))
    assert details["task"]["parameters"][0]["description"] == "first"
    assert details["task"]["queue"] == "test_queue"
    by_cat = data(call(services, "get_tasks_by_category_name", {"category": "arithmetic"}))
    assert by_cat["count"] == 1 and by_cat["category"] == "arithmetic"
    cats = data(call(services, "get_task_categories"))
    assert cats["categories"] == ["arithmetic"] and cats["counts"] == {"arithmetic": 1} and cats["count"] == 1


def test_paging_and_category_filter(services: Services) -> None:
    for i in range(5):
        services.registry.register(name=f"t{i}", category="a" if i < 3 else "b")
    page = data(call(services, "get_available_tasks", {"offset": 1, "limit": 2}))
    assert [t["name"] for t in page["tasks"]] == ["t1", "t2"] and page["total_count"] == 5
    only_b = data(call(services, "get_available_tasks", {"category": "b"}))
    assert [t["name"] for t in only_b["tasks"]] == ["t3", "t4"] and only_b["total_count"] == 2


def assert_error(result, code: str, *fragments: str) -> dict[str, Any]:
    assert result.is_error, result
    body = data(result)
    assert body["success"] is False and body["error"] == code, body
    assert text_json(result) == body
    for fragment in fragments:
        assert fragment in body["message"], (fragment, body["message"])
    return body


@pytest.mark.parametrize("tool", ["trigger_celery_task", "send_celery_task"])
def test_unknown_task_is_refused_with_close_matches_and_nothing_sent(services: Services, tool: str) -> None:
    register_add(services)
    body = assert_error(call(services, tool, {"task_name": "simple_ad"}), "not_found", "nothing was sent")
    assert body["suggestions"] == ["simple_add"]


@pytest.mark.parametrize(
    ("arguments", "code", "fragment"),
    [
        ({"task_name": "../../etc"}, "invalid_input", "task_name"),
        ({"task_name": "$(id)"}, "invalid_input", "pattern"),
        ({"task_name": "simple_add", "queue": "deploy"}, "invalid_input", "served on queue 'test_queue'"),
        ({"task_name": "simple_add", "queue": "other"}, "invalid_input", "omit queue"),
        ({"task_name": "simple_add", "kwargs": {"a": 1, "b": 2, "c": 3}}, "invalid_input", "accepts only"),
        ({"task_name": "simple_add", "kwargs": {"a": 1}}, "invalid_input", "missing required"),
        ({"task_name": "simple_add", "args": [1, 2, 3]}, "invalid_input", "at most 2 positional"),
        ({"task_name": "simple_add", "args": [1], "kwargs": {"a": 1, "b": 2}}, "invalid_input", "both"),
        ({"task_name": "simple_add", "kwargs": {"a": "x" * 2000, "b": 1}}, "invalid_input", "at most 1000 bytes"),
        ({"task_name": "simple_add", "kwargs": {"a": 1, "b": 2}, "timeout_s": 0}, "invalid_input", "timeout_s"),
    ],
)
def test_bad_calls_are_refused_before_anything_is_sent(
    services: Services, arguments: dict[str, Any], code: str, fragment: str
) -> None:
    register_add(services)
    assert_error(call(services, "trigger_celery_task", arguments), code, fragment)


def test_nan_and_infinity_are_refused(services: Services) -> None:
    # Over MCP a client's JSON encoder already turns NaN into null, so check the invoker itself.
    register_add(services)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(InvalidInput, match="NaN and Infinity"):
            services.invoker.send("simple_add", kwargs={"a": [1, {"x": bad}], "b": 1})


@pytest.mark.parametrize(
    ("tool", "arguments", "field"),
    [
        ("trigger_celery_task", {"task_name": "x", "args": "not a list"}, "args"),
        ("register_task_info", {"task_name": "x"}, "description"),
        ("get_available_tasks", {"limit": 0}, "limit"),
    ],
)
def test_argument_validation_errors_are_structured(services: Services, tool: str, arguments: dict, field: str) -> None:
    body = assert_error(call(services, tool, arguments), "invalid_input")
    assert body["field"] == field and body["rule"]


def test_deploy_queue_cannot_be_registered(services: Services) -> None:
    result = call(
        services,
        "register_task_info",
        {
            "task_name": "deploy_code_folder",
            "description": "x",
            "parameters": [],
            "queue": "deploy",
        },
    )
    assert_error(result, "invalid_input", "reserved for MCS's deploy worker")


@pytest.mark.parametrize("task_id", ["not-a-uuid", "", "../x", "A" * 36])
def test_malformed_task_ids_are_refused(services: Services, task_id: str) -> None:
    assert_error(call(services, "get_celery_result", {"task_id": task_id}), "invalid_input", "UUID")


def test_unknown_task_id_is_unknown_not_pending(services: Services) -> None:
    result = call(services, "get_celery_result", {"task_id": "0b5a3c1e-5a0e-4b8e-9a55-3a6f8f7f2d11"})
    assert_error(result, "not_found", "unknown")


def test_details_of_unknown_task(services: Services) -> None:
    register_add(services)
    body = assert_error(call(services, "get_task_details", {"task_name": "simple"}), "not_found", "not registered")
    assert body["suggestions"] == ["simple_add"]


def test_bad_registration_names_the_rule(services: Services) -> None:
    result = call(
        services,
        "register_task_info",
        {
            "task_name": "Add",
            "description": "x",
            "parameters": [{"name": "class"}],
        },
    )
    assert_error(result, "invalid_input", "task_name", "lowercase")


def test_positions_follow_the_generated_signature_required_first(services: Services) -> None:
    from mcs.payload import check_call_arguments

    services.registry.register(
        name="mul", parameters=[{"name": "scale", "required": False, "default": 2}, {"name": "x"}], queue="q1"
    )
    record = services.registry.get("mul")
    assert check_call_arguments(record, [5], None, 1000) == ([5], {})  # def mul(x, scale=2): x=5
    with pytest.raises(InvalidInput, match="at most 2 positional"):
        check_call_arguments(record, [1, 2, 3], None, 1000)


def test_register_task_info_cannot_reroute_or_reshape_a_deployed_task(services: Services) -> None:
    deployment = {"deployment_id": "d1", "version": "abc", "key_prefix": "mcs:t:simple_add:"}
    services.registry.register(name="simple_add", queue="q1", parameters=[{"name": "a"}], deployment=deployment)
    base = {"task_name": "simple_add", "description": "adds", "parameters": [{"name": "a"}]}
    moved = data(call(services, "register_task_info", {**base, "queue": "q2"}))
    assert moved["success"] is False and moved["error"] == "conflict" and "deploy_task" in moved["message"]
    reshaped = data(call(services, "register_task_info", {**base, "queue": "q1", "parameters": []}))
    assert reshaped["error"] == "conflict" and reshaped["field"] == "parameters"
    intruder = data(call(services, "register_task_info", {**base, "task_name": "intruder", "queue": "q1"}))
    assert intruder["error"] == "conflict" and intruder["owner"] == "simple_add"
    edited = data(call(services, "register_task_info", {**base, "queue": "q1", "category": "math"}))
    assert edited["success"] and edited["task"]["category"] == "math"
    assert edited["task"]["deployment"]["key_prefix"] == "mcs:t:simple_add:"
