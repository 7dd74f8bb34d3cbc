"""MCS's MCP server (stdio): the tools an agent uses to generate, deploy, test, register and call Celery tasks.

Run it as Claude Desktop does: ``python mcp_server.py`` (stdout is the protocol; logs go to stderr).
Each tool is a thin edge: it validates its input, calls one plain function of the core, returns a result model.
"""

import logging
import sys
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from mcs.results import (
    CategoriesResult,
    CategoryTasksResult,
    RegisterResult,
    TaskCallResult,
    TaskDetailsResult,
    TaskListResult,
    TaskSentResult,
    TaskStatusResult,
)
from mcs.services import Services
from mcs.settings import Settings, load_settings
from mcs.tool_edge import add_tool

INSTRUCTIONS = """\
MCS lets you grow your own capabilities as Celery tasks that run in isolated workers.
Workflow: generate_startMain_code (writes a task folder) -> deploy_task (builds and starts its worker, registers
it) -> trigger_celery_task (test it) -> any agent: get_available_tasks / get_task_details, then
trigger_celery_task (wait for the result) or send_celery_task + get_celery_result (long tasks).
Only registered tasks can be called. Errors come back with success=false, an error code and a message that says
what was wrong and what is accepted."""

TaskName = Annotated[str, Field(description="registered task name: lowercase letters, digits, '_' (e.g. simple_add)")]
Args = Annotated[list[Any] | None, Field(description="positional arguments, a JSON array (optional)")]
Kwargs = Annotated[
    dict[str, Any] | None, Field(description="keyword arguments by parameter name, a JSON object (optional)")
]
Queue = Annotated[
    str | None, Field(description="queue of the task; omit it: MCS uses the queue the task is registered on")
]
Parameters = Annotated[
    list[dict[str, Any]],
    Field(
        description='parameter descriptors: [{"name": "a", "type": "int", "required": true, '
        '"description": "first number", "default": null}]'
    ),
]
Category = Annotated[str, Field(description="category: lowercase letters, digits, '_' or '-' (e.g. arithmetic)")]


def build_server(settings: Settings | None = None, services: Services | None = None) -> MCPServer:
    """The MCS server with every tool registered; nothing connects until a tool needs it."""
    services = services or Services(settings or load_settings())
    server = MCPServer(name="MCS", instructions=INSTRUCTIONS)

    def trigger_celery_task(
        task_name: TaskName,
        args: Args = None,
        kwargs: Kwargs = None,
        queue: Queue = None,
        timeout_s: Annotated[
            float | None, Field(description="seconds to wait for the result (default from settings, 30)")
        ] = None,
    ) -> TaskCallResult:
        """Run a registered task and wait for its result (synchronous mode).

        Use it to test a freshly deployed task or for quick calls. Returns the task's return value as JSON in
        `result` and Celery's final `status`. If the task takes longer than `timeout_s` the error carries the
        `task_id`: follow up with get_celery_result. A task that raised returns success=false with the
        exception type, message and a bounded traceback.
        """
        return services.invoker.trigger(task_name, args, kwargs, queue, timeout_s)

    def send_celery_task(
        task_name: TaskName, args: Args = None, kwargs: Kwargs = None, queue: Queue = None
    ) -> TaskSentResult:
        """Queue a registered task without waiting (asynchronous mode), for long-running work.

        Returns at once with `task_id` and status SENT; poll get_celery_result(task_id) for the outcome.
        """
        return services.invoker.send(task_name, args, kwargs, queue)

    def get_celery_result(
        task_id: Annotated[str, Field(description="the task_id returned by send_celery_task or trigger_celery_task")],
    ) -> TaskStatusResult:
        """Get the state and, when finished, the result of a task MCS sent.

        States: PENDING (queued), STARTED, RETRY, SUCCESS (`result` holds the return value) or FAILURE (`error`,
        `exception_type`, `traceback`). An id MCS never issued, or whose result expired, is reported as unknown.
        """
        return services.invoker.status(task_id)

    def get_available_tasks(
        category: Annotated[str | None, Field(description="only tasks of this category (optional)")] = None,
        offset: Annotated[int, Field(ge=0, description="skip this many tasks (paging)")] = 0,
        limit: Annotated[int, Field(ge=1, le=1000, description="at most this many tasks")] = 100,
    ) -> TaskListResult:
        """List the registered tasks any agent can call, sorted by name, with their parameters and queues.

        Use it to discover capabilities before calling trigger_celery_task or send_celery_task.
        """
        registry = services.registry
        names = registry.names(category)
        tasks = registry.list(category, offset, limit)
        return TaskListResult(
            tasks=tasks,
            total_count=len(names),
            offset=offset,
            limit=limit,
            message=f"{len(tasks)} of {len(names)} available task(s)",
        )

    def get_task_details(task_name: TaskName) -> TaskDetailsResult:
        """Get everything the registry knows of one task: description, parameters, return type, category,
        queue, timestamps and deployment details."""
        record = services.registry.get(task_name)
        return TaskDetailsResult(task=record, message=f"task {record.name} on queue {record.queue}")

    def register_task_info(
        task_name: TaskName,
        description: Annotated[str, Field(description="what the task does, for other agents (max 2000 chars)")],
        parameters: Parameters,
        return_type: Annotated[str, Field(description="the return type, e.g. int, dict, Any")] = "Any",
        category: Category = "general",
        queue: Annotated[str, Field(description="the queue its worker serves")] = "celery",
    ) -> RegisterResult:
        """Register (or update) a task's metadata so agents can discover and call it.

        deploy_task registers automatically; use this to fix a description or parameters, or to register a
        worker you run yourself. An update keeps created_at and moves the task between categories atomically.
        """
        record = services.registry.register(
            name=task_name,
            description=description,
            parameters=parameters,
            return_type=return_type,
            category=category,
            queue=queue,
        )
        return RegisterResult(task_name=record.name, task=record, message=f"task {record.name} registered")

    def get_tasks_by_category_name(category: Category) -> CategoryTasksResult:
        """List the registered tasks of one category (see get_task_categories for the categories)."""
        tasks = services.registry.list(category)
        return CategoryTasksResult(
            category=category, tasks=tasks, count=len(tasks), message=f"{len(tasks)} task(s) in {category}"
        )

    def get_task_categories() -> CategoriesResult:
        """List the categories that have registered tasks, with the number of tasks in each."""
        counts = services.registry.categories()
        return CategoriesResult(
            categories=list(counts), counts=counts, count=len(counts), message=f"{len(counts)} categories"
        )

    add_tool(server, trigger_celery_task, read_only=False, open_world=True, title="Run a task and wait")
    add_tool(server, send_celery_task, read_only=False, open_world=True, title="Queue a task")
    add_tool(server, get_celery_result, read_only=True, idempotent=True, title="Get a task's result")
    add_tool(server, get_available_tasks, read_only=True, idempotent=True, title="List tasks")
    add_tool(server, get_task_details, read_only=True, idempotent=True, title="Task details")
    add_tool(server, register_task_info, read_only=False, idempotent=True, title="Register task metadata")
    add_tool(server, get_tasks_by_category_name, read_only=True, idempotent=True, title="Tasks of a category")
    add_tool(server, get_task_categories, read_only=True, idempotent=True, title="Task categories")
    return server


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    build_server(load_settings()).run("stdio")


if __name__ == "__main__":
    main()
