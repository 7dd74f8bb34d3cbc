"""Helpers to talk to the MCS server as a real client would: over stdio (a subprocess) or in memory."""

from __future__ import annotations

import json
import sys
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from mcs.core.settings import PROJECT_ROOT, Settings
from mcs.stack import child_env

SERVER_SCRIPT = PROJECT_ROOT / "mcp_server.py"


def server_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a Claude Desktop entry would give the server, pointed at the test's Redis."""
    return child_env(settings, **extra)


def stdio_client(settings: Settings, **extra_env: str) -> Client:
    params = StdioServerParameters(
        command=sys.executable, args=[str(SERVER_SCRIPT)], env=server_env(settings, **extra_env)
    )
    return Client(params, read_timeout_seconds=120)


def data(result: CallToolResult) -> dict[str, Any]:
    """The structured result; for errors too (MCS puts success/error/message in structuredContent)."""
    if result.structured_content is not None:
        return result.structured_content
    return {"text": result.content[0].text if result.content else ""}


def text_json(result: CallToolResult) -> dict[str, Any]:
    return json.loads(result.content[0].text)
