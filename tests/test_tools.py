"""The tools package's shape: build_server's tool order and flags, each module's register, its import boundary."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer

from mcp_server import build_server
from mcs.core.settings import PROJECT_ROOT
from mcs.services import Services
from mcs.tools import audit_tools, deploy_tools, pipeline_tools, registry_tools, task_calls
from tests.helpers import make_settings

pytestmark = pytest.mark.unit

# name: (title, read_only, destructive, idempotent, open_world), in the order a client's tools/list shows them
EXPECTED = {
    "generate_startMain_code": ("Generate a task folder", False, True, False, False),
    "deploy_task": ("Deploy a task", False, True, True, False),
    "undeploy_task": ("Undeploy a task", False, True, True, False),
    "scale_task": ("Scale a task", False, False, True, False),
    "list_deployments": ("List deployments", True, False, True, False),
    "get_task_logs": ("A task worker's log", True, False, True, False),
    "list_task_versions": ("A task's versions", True, False, True, False),
    "rollback_task": ("Roll back", False, True, True, False),
    "promote_task": ("Promote a release", False, True, False, False),
    "trigger_celery_task": ("Run a task and wait", False, False, False, True),
    "send_celery_task": ("Queue a task", False, False, False, True),
    "get_celery_result": ("Get a task's result", True, False, True, False),
    "cancel_celery_task": ("Cancel a task call", False, True, True, False),
    "run_pipeline": ("Run a pipeline", False, False, False, True),
    "map_celery_task": ("Map a task over items", False, False, False, True),
    "get_available_tasks": ("List tasks", True, False, True, False),
    "get_task_details": ("Task details", True, False, True, False),
    "register_task_info": ("Register task metadata", False, False, True, False),
    "get_tasks_by_category_name": ("Tasks of a category", True, False, True, False),
    "get_task_categories": ("Task categories", True, False, True, False),
    "get_audit_log": ("The audit log", True, False, True, False),
}
MODULES = {
    deploy_tools: list(EXPECTED)[:9],
    task_calls: list(EXPECTED)[9:13],
    pipeline_tools: list(EXPECTED)[13:15],
    registry_tools: list(EXPECTED)[15:20],
    audit_tools: list(EXPECTED)[20:],
}
TOOLS_DIR = PROJECT_ROOT / "mcs" / "tools"


@pytest.fixture
def services(tmp_path: Path) -> Services:
    return Services(make_settings(tmp_path))


def test_build_server_lists_the_20_tools_in_order_with_their_annotations(services: Services) -> None:
    async def listed():
        async with Client(build_server(services=services)) as client:
            return (await client.list_tools()).tools

    tools = asyncio.run(listed())
    assert [t.name for t in tools] == list(EXPECTED)
    for tool in tools:
        a = tool.annotations
        assert (a.title, a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint) == EXPECTED[
            tool.name
        ]
        assert tool.title == EXPECTED[tool.name][0] and tool.description and tool.output_schema


@pytest.mark.parametrize("module", list(MODULES), ids=lambda m: m.__name__)
def test_each_module_registers_its_own_tools(module, services: Services) -> None:
    server = MCPServer(name="t")
    module.register(server, services)
    assert [t.name for t in asyncio.run(server.list_tools())] == MODULES[module]


def test_tools_modules_never_import_the_entry_point_or_the_deploy_side() -> None:
    forbidden = {"mcp_server", "mcp_app", "deploy_mcp", "celery", "redis", "docker"}
    for path in sorted(TOOLS_DIR.glob("*.py")):
        for node in ast.parse(path.read_text()).body:  # module level only: lazy imports inside functions are fine
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & forbidden, f"{path.name} imports {names}"


def test_building_the_server_loads_no_celery_redis_or_docker() -> None:
    code = (
        "import sys, mcp_server; mcp_server.build_server()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'celery', 'redis', 'docker', 'kombu'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
