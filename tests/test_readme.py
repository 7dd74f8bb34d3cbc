"""The README stays true: its Claude Desktop entry starts a working server, its commands exist."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from mcp import Client, StdioServerParameters

from mcs.core.settings import PROJECT_ROOT, Settings

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
PLACEHOLDER = "/path/to/MCS"


def claude_entry() -> dict:
    for block in re.findall(r"```json\n(.*?)```", README, flags=re.S):
        if '"mcpServers"' in block:
            return json.loads(block)["mcpServers"]["mcs"]
    raise AssertionError("README has no claude_desktop_config.json block")


@pytest.mark.unit
def test_top_commands_exist() -> None:
    head = README[:1500]
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in head
        assert re.search(rf"^{target}:", makefile, flags=re.M), target


@pytest.mark.integration
def test_claude_desktop_entry_starts_a_working_server(settings: Settings) -> None:
    """Start the server exactly as the README's entry says (only the Redis port points at the test server)."""
    entry = claude_entry()
    command = entry["command"].replace(PLACEHOLDER, str(PROJECT_ROOT))
    args = [a.replace(PLACEHOLDER, str(PROJECT_ROOT)) for a in entry["args"]]
    assert command.endswith(".venv/bin/python") and args == [str(PROJECT_ROOT / "mcp_server.py")]
    env = dict(entry.get("env", {}))
    assert set(env) >= {"REDIS_HOST", "REDIS_PORT"}
    env["REDIS_PORT"] = str(settings.redis_port)
    env["MCS_METADATA_DB"] = str(settings.metadata_db)

    async def run():
        async with Client(StdioServerParameters(command=command, args=args, env=env)) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            categories = await client.call_tool("get_task_categories", {})
            return tools, categories

    tools, categories = asyncio.run(run())
    assert {"generate_startMain_code", "deploy_task", "trigger_celery_task"} <= tools
    assert not categories.is_error and categories.structured_content["count"] == 0
