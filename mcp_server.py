"""MCS's MCP server (stdio): the tools an agent uses to generate, deploy, test, register and call Celery tasks.

Run it as Claude Desktop does: ``python mcp_server.py`` (stdout is the protocol; logs go to stderr).
Each tool is a thin edge: it validates its input, calls one plain function of the core, returns a result model.
The tools live in ``mcs.tools``, grouped by concern (deploy_tools, task_calls, registry_tools); this module
builds the server and adds them in a fixed order (the order a client's tools/list shows).
"""

import logging
import sys

from mcp.server.mcpserver import MCPServer

from mcs.core.settings import Settings, load_settings
from mcs.services import Services
from mcs.tools import deploy_tools, registry_tools, task_calls
from mcs.tools.edge import MCSServer

INSTRUCTIONS = """\
MCS lets you grow your own capabilities as Celery tasks that run in isolated workers.
Workflow: generate_startMain_code (writes a task folder) -> deploy_task (builds and starts its worker, registers
it) -> trigger_celery_task (test it) -> any agent: get_available_tasks / get_task_details, then
trigger_celery_task (wait for the result) or send_celery_task + get_celery_result (long tasks).
Only registered tasks can be called. Errors come back with success=false, an error code and a message that says
what was wrong and what is accepted."""


def build_server(settings: Settings | None = None, services: Services | None = None) -> MCPServer:
    """The MCS server with every tool registered; nothing connects until a tool needs it."""
    services = services or Services(settings or load_settings())
    settings = services.settings
    server = MCSServer(
        name="MCS", instructions=INSTRUCTIONS, log_level=settings.log_level, max_json_depth=settings.max_json_depth
    )
    deploy_tools.register(server, services)  # generate_startMain_code, deploy_task, undeploy_task, ...
    task_calls.register(server, services)  # trigger_celery_task, send_celery_task, get_celery_result
    registry_tools.register(server, services)  # get_available_tasks, get_task_details, ...
    return server


def main() -> None:
    settings = load_settings()
    logging.basicConfig(
        stream=sys.stderr, level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    build_server(settings).run("stdio")


if __name__ == "__main__":
    main()
