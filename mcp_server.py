"""MCS's MCP server (stdio): the tools an agent uses to generate, deploy, test, register and call Celery tasks.

Run it as Claude Desktop does: ``python mcp_server.py`` (stdout is the protocol; logs go to stderr).
Each tool is a thin edge: it validates its input, calls one plain function of the core, returns a result model.
The tools live in ``mcs.tools``, grouped by concern (deploy_tools, task_calls, registry_tools; resources and the
prompt in resources); this module builds the server, adds them in a fixed order (the order a client's tools/list
shows) and composes the instructions from what was registered.
"""

import logging
import sys

from mcp.server.mcpserver import MCPServer

from mcs.core.settings import Settings, load_settings
from mcs.services import Services
from mcs.tools import audit_tools, deploy_tools, pipeline_tools, registry_tools, resources, task_calls
from mcs.tools.edge import MCSServer

INSTRUCTIONS = """\
MCS grows your own capabilities as Celery tasks, each served by an isolated worker and callable by any agent.
Look first: get_available_tasks(query="words of what you need") ranks the registered tasks, compact (name,
description, parameters, queue, category); get_task_details (or detail="full") gives the whole record.
Build: generate_startMain_code writes a task folder whose manifest mcs.json holds its metadata and test cases ->
deploy_task(task_name, queue) alone deploys it (the test cases gate the new version; every task of the folder is
registered) -> trigger_celery_task tries it. The build_a_task prompt walks through it.
Versions: a redeploy keeps the previous version: list_task_versions, rollback_task (no rebuild); deploy_task with
canary_percent starts a gradual release that promote_task or rollback_task ends. list_deployments, get_task_logs
and undeploy_task manage workers.
Call: trigger_celery_task waits for the result; send_celery_task returns a task_id for get_celery_result.
{more}Only registered tasks can be called; arguments are checked before anything is sent.
Failures are isError results: success false, error (a code), message (what was wrong, what is accepted) and
details such as field, rule, suggestions, task_id ($defs.ErrorResult in every outputSchema).
Resources: mcs://tasks, mcs://tasks/{{name}}, mcs://tasks/{{name}}/logs, mcs://deployments."""

#: Lines about tools that may or may not be registered (the surface grows): each is told only when its tool is.
OPTIONAL_LINES = {
    "run_pipeline": "run_pipeline chains registered tasks on the server, each result passed to the next step.",
    "map_celery_task": "map_celery_task runs one task over many argument sets, results in order.",
    "cancel_celery_task": "cancel_celery_task revokes a call; get_celery_result then answers REVOKED.",
    "get_audit_log": "get_audit_log says what was changed (deploys, scaling, rollbacks, undeploys...), by whom, with "
    "what outcome.",
}


def instructions(tool_inputs: dict[str, set[str]]) -> str:
    """The server instructions for the tools registered (name -> parameter names): the whole surface in a few
    lines, never a tool or a parameter that is not there."""
    lines = []
    result_params = tool_inputs.get("get_celery_result", set())
    if "wait_s" in result_params:
        several = " (several at once with task_ids)" if "task_ids" in result_params else ""
        lines.append(f"get_celery_result with wait_s long-polls until the result is ready{several}: no polling loop.")
    lines += [line for name, line in OPTIONAL_LINES.items() if name in tool_inputs]
    return INSTRUCTIONS.format(more="".join(line + "\n" for line in lines))


def build_server(settings: Settings | None = None, services: Services | None = None) -> MCPServer:
    """The MCS server with every tool, resource and prompt registered; nothing connects until one needs it."""
    services = services or Services(settings or load_settings())
    settings = services.settings
    server = MCSServer(
        name="MCS", log_level=settings.log_level, max_json_depth=settings.max_json_depth, auditor=services.auditor
    )
    deploy_tools.register(server, services)  # generate_startMain_code, deploy_task, undeploy_task, ...
    task_calls.register(server, services)  # trigger_celery_task, send_celery_task, get_celery_result
    pipeline_tools.register(server, services)  # run_pipeline, map_celery_task
    registry_tools.register(server, services)  # get_available_tasks, get_task_details, ...
    audit_tools.register(server, services)  # get_audit_log
    resources.register(server, services)  # mcs://tasks, mcs://tasks/{name}, ..., the build_a_task prompt
    server.set_instructions(instructions(server.tool_inputs()))
    return server


def main() -> None:
    settings = load_settings()
    logging.basicConfig(
        stream=sys.stderr, level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    build_server(settings).run("stdio")


if __name__ == "__main__":
    main()
