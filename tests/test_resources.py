"""MCP resources, the build_a_task prompt, the server instructions and the error shape in the output schemas.

Over a real stdio client (the resources listed and read, the prompt listed and rendered), with a real deploy worker
(deployments and a worker's log as resources), and with the MCP Inspector CLI as a third-party client.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS

from mcp_server import OPTIONAL_LINES, build_server, instructions
from mcs.core.results import ErrorResult
from mcs.core.settings import PROJECT_ROOT, Settings
from mcs.services import Services
from mcs.stack import Stack
from mcs.tools.resources import build_a_task_text
from Redis.registry import TaskRegistry
from tests.helpers import TEST_LABEL, make_settings
from tests.mcp_clients import SERVER_SCRIPT, data, server_env, stdio_client

RESOURCES = ["mcs://tasks", "mcs://deployments"]
TEMPLATES = ["mcs://tasks/{name}/logs", "mcs://tasks/{name}"]
#: The Inspector CLI (npm install @modelcontextprotocol/inspector): MCP_INSPECTOR, else on PATH, else node_modules.
INSPECTOR = (
    os.environ.get("MCP_INSPECTOR")
    or shutil.which("mcp-inspector")
    or next((str(p) for p in [PROJECT_ROOT / "node_modules" / ".bin" / "mcp-inspector"] if p.exists()), None)
)


def register_adder(registry: TaskRegistry) -> None:
    registry.register(
        name="simple_add",
        description="Adds two integers",
        parameters=[{"name": "a", "type": "int"}, {"name": "b", "type": "int"}],
        return_type="int",
        category="arithmetic",
        queue="q_add",
    )


def read_error(client: Client, uri: str) -> Any:
    async def read():
        with pytest.raises(MCPError) as caught:
            await client.read_resource(uri)
        return caught.value

    return read()


# -- in memory: shapes, errors, instructions ------------------------------------------------------------------------


@pytest.fixture
def services(tmp_path: Path) -> Services:
    s = Services(make_settings(tmp_path))
    s.__dict__["registry"] = TaskRegistry(s.settings, client=fakeredis.FakeRedis(decode_responses=True))
    return s


def in_memory(services: Services, script) -> Any:
    async def run():
        async with Client(build_server(services=services)) as client:
            return await script(client)

    return asyncio.run(run())


@pytest.mark.unit
def test_every_output_schema_describes_the_error_result_too(services: Services) -> None:
    async def script(client):
        return (await client.list_tools()).tools

    error_schema = ErrorResult.model_json_schema()
    assert {"success", "error", "message", "field", "rule", "suggestions"} <= set(error_schema["properties"])
    for tool in in_memory(services, script):
        schema = tool.output_schema
        assert schema["$defs"]["ErrorResult"] == error_schema, tool.name
        assert "isError" in schema["description"] and "$defs.ErrorResult" in schema["description"], tool.name
        assert schema["properties"]["success"], tool.name  # the root is still the success shape


@pytest.mark.unit
def test_an_error_result_matches_the_error_shape_of_the_schema(services: Services) -> None:
    import jsonschema

    async def script(client):
        tools = {t.name: t for t in (await client.list_tools()).tools}
        result = await client.call_tool("get_task_details", {"task_name": "simple_ad"})
        return tools["get_task_details"].output_schema, result

    register_adder(services.registry)
    schema, result = in_memory(services, script)
    assert result.is_error
    error_shape = {**schema["$defs"]["ErrorResult"], "$defs": schema["$defs"]}
    jsonschema.validate(data(result), error_shape)
    assert data(result)["suggestions"] == ["simple_add"]


@pytest.mark.unit
def test_resource_errors_carry_the_error_shape(services: Services) -> None:
    async def script(client):
        return [await read_error(client, uri) for uri in ("mcs://tasks/simple_ad", "mcs://tasks/Bad", *RESOURCES[1:])]

    register_adder(services.registry)
    unknown, bad, deployments = in_memory(services, script)
    assert unknown.code == INVALID_PARAMS and unknown.data["error"] == "not_found"
    assert unknown.data["suggestions"] == ["simple_add"] and "not registered" in unknown.message
    assert bad.code == INVALID_PARAMS and bad.data["error"] == "invalid_input" and bad.data["field"] == "task_name"
    assert deployments.code == INTERNAL_ERROR and deployments.data["error"] == "service_unavailable"
    assert "no deploy worker is running" in deployments.message and "make up" in deployments.message


@pytest.mark.unit
def test_the_instructions_tell_the_whole_surface_and_only_what_is_there(services: Services) -> None:
    text = build_server(services=services).instructions
    for name in ("get_available_tasks", "query=", "deploy_task(task_name, queue)", "mcs.json", "rollback_task"):
        assert name in text
    for name in ("promote_task", "list_task_versions", "get_celery_result", "build_a_task", "$defs.ErrorResult"):
        assert name in text
    assert "mcs://tasks/{name}" in text and len(text.splitlines()) <= 20
    assert "wait_s" not in instructions({"get_celery_result": {"task_id"}})
    grown = instructions({"get_celery_result": {"task_ids", "wait_s"}, **{n: set() for n in OPTIONAL_LINES}})
    assert "wait_s long-polls" in grown and "task_ids" in grown and max(map(len, grown.splitlines())) <= 120
    assert all(line in grown for line in OPTIONAL_LINES.values())
    registered = {t.name for t in asyncio.run(build_server(services=services).list_tools())}
    assert all((line in text) == (name in registered) for name, line in OPTIONAL_LINES.items())


@pytest.mark.unit
def test_the_prompt_refuses_names_mcs_would_refuse() -> None:
    for name, queue in (("Bad", None), ("list", None), ("ok_name", "Q!")):
        with pytest.raises(MCPError) as caught:
            build_a_task_text("do it", name, queue)
        assert caught.value.code == INVALID_PARAMS and caught.value.data["error"] == "invalid_input"
    text = build_a_task_text("Resize the images to thumbnails", "make_thumbnail", "thumbs")
    assert 'query="resize images thumbnails"' in text
    assert 'deploy_task(task_name="make_thumbnail", queue="thumbs") and nothing else' in text


# -- over a real stdio client ---------------------------------------------------------------------------------------


@pytest.mark.integration
def test_resources_and_the_prompt_over_stdio(settings: Settings) -> None:
    register_adder(TaskRegistry(settings))

    async def script():
        async with stdio_client(settings) as client:
            listed = (await client.list_resources()).resources
            templates = (await client.list_resource_templates()).resource_templates
            prompts = (await client.list_prompts()).prompts
            record = await client.read_resource("mcs://tasks/simple_add")
            every = await client.read_resource("mcs://tasks")
            unknown = await read_error(client, "mcs://tasks/simple_ad")
            no_worker = await read_error(client, "mcs://deployments")
            no_logs = await read_error(client, "mcs://tasks/simple_add/logs")
            prompt = await client.get_prompt(
                "build_a_task", {"goal": "Add two integers", "task_name": "adder", "queue": "adder_q"}
            )
            return listed, templates, prompts, record, every, unknown, no_worker, no_logs, prompt

    listed, templates, prompts, record, every, unknown, no_worker, no_logs, prompt = asyncio.run(script())
    assert [r.uri for r in listed] == RESOURCES and all(r.description for r in listed)
    assert [t.uri_template for t in templates] == TEMPLATES and all(t.description for t in templates)
    (content,) = record.contents
    assert content.mime_type == "application/json"
    task = json.loads(content.text)
    assert task["name"] == "simple_add" and task["queue"] == "q_add" and task["parameters"][1]["name"] == "b"
    assert "created_at" in task and task["deployment"] is None
    listing = json.loads(every.contents[0].text)
    assert listing["total_count"] == 1 and listing["truncated"] is False
    assert listing["tasks"] == [
        {
            "name": "simple_add",
            "description": "Adds two integers",
            "parameters": [
                {"name": "a", "type": "int", "required": True, "description": ""},
                {"name": "b", "type": "int", "required": True, "description": ""},
            ],
            "return_type": "int",
            "queue": "q_add",
            "category": "arithmetic",
        }
    ]
    assert unknown.data["error"] == "not_found" and unknown.data["suggestions"] == ["simple_add"]
    for error in (no_worker, no_logs):
        assert error.data["error"] == "service_unavailable" and "no deploy worker is running" in error.message
    (build,) = prompts
    assert build.name == "build_a_task" and build.description
    assert [(a.name, a.required) for a in build.arguments] == [("goal", True), ("task_name", True), ("queue", False)]
    (message,) = prompt.messages
    text = message.content.text
    assert message.role == "user" and "Add two integers" in text
    steps = {"1. Look first": "get_available_tasks", "2. Generate": "generate_startMain_code"}
    steps |= {"3. Deploy": "deploy_task", "4. Test": "trigger_celery_task", "5. Discover": "get_available_tasks"}
    starts = [text.index(step) for step in steps]
    assert starts == sorted(starts)
    for (step, tool), end in zip(steps.items(), [*starts[1:], len(text)], strict=True):
        assert tool in text[text.index(step) : end], (step, tool)
    assert 'deploy_task(task_name="adder", queue="adder_q") and nothing else' in text and "mcs.json" in text


@pytest.mark.integration
def test_deployments_and_logs_as_resources_with_a_deploy_worker(settings: Settings, tmp_path: Path) -> None:
    """A real deploy worker (process runtime): the deployed task shows in mcs://deployments, its worker's log in
    mcs://tasks/{name}/logs, its deployment in mcs://tasks/{name}."""
    stack = Stack(
        settings.model_copy(update={"worker_runtime": "process", "worker_labels": {TEST_LABEL: "1"}}),
        say=lambda _: None,
    )
    task = {
        "task_name": "res_echo",
        "queue": "res_q",
        "description": "Echo a word back",
        "parameters": [{"name": "word", "type": "str"}],
        "function_body": "print('echoing', word)\nreturn word",
        "tests": [{"kwargs": {"word": "hi"}, "expect": "hi"}],
        "overwrite": True,
    }

    async def script(s: Settings):
        async with stdio_client(s) as client:
            generated = await client.call_tool("generate_startMain_code", task)
            assert not generated.is_error, data(generated)
            deployed = await client.call_tool("deploy_task", {"task_name": "res_echo", "queue": "res_q"})
            assert not deployed.is_error, data(deployed)
            try:
                await client.call_tool("trigger_celery_task", {"task_name": "res_echo", "args": ["hello"]})
                deployments = json.loads((await client.read_resource("mcs://deployments")).contents[0].text)
                logs = (await client.read_resource("mcs://tasks/res_echo/logs")).contents[0]
                record = json.loads((await client.read_resource("mcs://tasks/res_echo")).contents[0].text)
            finally:
                await client.call_tool("undeploy_task", {"task_name": "res_echo"})
            return deployments, logs, record

    try:
        stack.start_redis()
        stack.choose_runtime()
        stack.start_deploy_worker(tmp_path / "deploy_worker.log")
        deployments, logs, record = asyncio.run(script(stack.settings))
    finally:
        stack.stop()
    (mine,) = [d for d in deployments["deployments"] if d["task_name"] == "res_echo"]
    assert mine["queue"] == "res_q" and mine["runtime"] == "process" and deployments["success"] is True
    assert logs.mime_type == "text/plain" and logs.text.strip()
    assert record["deployment"]["version"] == mine["version"]


# -- the MCP Inspector CLI ------------------------------------------------------------------------------------------


def inspector(settings: Settings, *args: str) -> dict[str, Any]:
    env = [f"{k}={v}" for k, v in server_env(settings).items()]
    command = [INSPECTOR, "--cli", *[a for kv in env for a in ("-e", kv)], sys.executable, str(SERVER_SCRIPT), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.integration
def test_the_inspector_lists_tools_resources_and_prompts(settings: Settings) -> None:
    if INSPECTOR is None:
        reason = ("the MCP Inspector CLI is not installed: npm install @modelcontextprotocol/inspector, then put "
                  "mcp-inspector on PATH or point MCP_INSPECTOR at it")  # fmt: skip
        if os.environ.get("MCS_REQUIRE_INSPECTOR") == "1":  # CI installs it: missing there is a failure
            pytest.fail(reason + " [MCS_REQUIRE_INSPECTOR=1]")
        pytest.skip(reason)
    register_adder(TaskRegistry(settings))
    tools = inspector(settings, "--method", "tools/list")["tools"]
    assert "get_available_tasks" in [t["name"] for t in tools] and len(tools) >= 16
    assert all("ErrorResult" in t["outputSchema"]["$defs"] for t in tools)
    assert [r["uri"] for r in inspector(settings, "--method", "resources/list")["resources"]] == RESOURCES
    templates = inspector(settings, "--method", "resources/templates/list")["resourceTemplates"]
    assert [t["uriTemplate"] for t in templates] == TEMPLATES
    assert [p["name"] for p in inspector(settings, "--method", "prompts/list")["prompts"]] == ["build_a_task"]
    record = inspector(settings, "--method", "resources/read", "--uri", "mcs://tasks/simple_add")
    assert json.loads(record["contents"][0]["text"])["queue"] == "q_add"
    found = inspector(
        settings, "--method", "tools/call", "--tool-name", "get_available_tasks", "--tool-arg", "query=add integers"
    )
    assert found["structuredContent"]["tasks"][0]["name"] == "simple_add"
    get = ["--method", "prompts/get", "--prompt-name", "build_a_task", "--prompt-args", "goal=Add", "task_name=adder"]
    prompt = inspector(settings, *get)
    assert 'deploy_task(task_name="adder"' in prompt["messages"][0]["content"]["text"]
