"""The audit log's tool: get_audit_log reads what agents (and people on the dashboard) changed, newest first.

The entries are written by the MCP edge around every changing tool (``mcs.tools.edge.audited``) and by the dashboard's
actions; this module only reads them."""

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from mcs.core.audit import AuditLogResult, check_tool_name, parse_since
from mcs.core.names import validate_name
from mcs.services import Services
from mcs.tools.edge import add_tool

MAX_ENTRIES = 1000


def register(server: MCPServer, services: Services) -> None:
    """Add get_audit_log."""

    def get_audit_log(
        task_name: Annotated[str | None, Field(description="only entries about this task")] = None,
        tool: Annotated[str | None, Field(description="only calls of this tool, e.g. deploy_task")] = None,
        since: Annotated[
            str | None,
            Field(description="only entries from then on: an ISO-8601 time, or an age such as 30m, 2h, 7d"),
        ] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_ENTRIES, description="at most this many entries")] = 50,
    ) -> AuditLogResult:
        """Read the audit log: every call of a tool that changed something (generate_startMain_code, deploy_task,
        undeploy_task, register_task_info, scale_task, rollback_task, promote_task, cancel_celery_task) and every
        action taken on the dashboard, newest first: when, which tool, which task, the arguments (secrets and file
        contents replaced by a sha256 digest and their length), the outcome (ok or the error code) and how long it
        took. Filter by task, tool and time."""
        wanted_task = validate_name(task_name, "task_name") if task_name is not None else None
        wanted_tool = check_tool_name(tool) if tool is not None else None
        when = parse_since(since) if since is not None else None
        entries = services.audit_log.read(wanted_task, wanted_tool, when, limit)
        filters = ", ".join(
            f"{k} {v}" for k, v in (("task", wanted_task), ("tool", wanted_tool), ("since", since)) if v is not None
        )
        return AuditLogResult(
            entries=entries,
            count=len(entries),
            max_entries=services.settings.audit_max_entries,
            message=f"{len(entries)} audit entr{'y' if len(entries) == 1 else 'ies'}"
            + (f" ({filters})" if filters else "")
            + ", newest first",
        )

    add_tool(server, get_audit_log, read_only=True, idempotent=True, title="The audit log")
