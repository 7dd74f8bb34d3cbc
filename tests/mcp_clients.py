"""Helpers to talk to the MCS server as a real client would: over stdio (a subprocess) or in memory."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from mcs.settings import PROJECT_ROOT, Settings

SERVER_SCRIPT = PROJECT_ROOT / "mcp_server.py"


def server_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a Claude Desktop entry would give the server, pointed at the test's Redis."""
    env = {
        "REDIS_HOST": settings.redis_host,
        "REDIS_PORT": str(settings.redis_port),
        "REDIS_BROKER_DB": str(settings.redis_broker_db),
        "REDIS_BACKEND_DB": str(settings.redis_backend_db),
        "MCS_METADATA_DB": str(settings.metadata_db),
        "MCS_METADATA_PREFIX": settings.metadata_prefix,
        "MCS_GENERATED_TASKS_DIR": str(settings.generated_tasks_dir),
        "MCS_DEPLOYMENTS_DIR": str(settings.deployments_dir),
        "MCS_DEPLOY_SECRET_FILE": str(settings.deploy_secret_file),
        "MCS_ENV_FILE": os.devnull,
        "MCS_REDIS_CONFIG_FILE": os.devnull + ".absent",
    }
    if settings.redis_password is not None:
        env["REDIS_PASSWORD"] = settings.redis_password.get_secret_value()
    env.update(extra)
    return env


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
