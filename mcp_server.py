"""MCS's MCP server (stdio): the tools an agent uses to generate, deploy, test, register and call Celery tasks.

Run it as Claude Desktop does: ``python mcp_server.py`` (stdout is the protocol; logs go to stderr).
Each tool is a thin edge: it validates its input, calls one plain function of the core, returns a result model.
"""

import itertools
import logging
import sys
from typing import Annotated, Any

import anyio.from_thread
from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field

from mcs.codegen import GeneratedTask, generate_task_folder
from mcs.core import protocol
from mcs.core.results import (
    CategoriesResult,
    CategoryTasksResult,
    DeploymentsResult,
    DeployResult,
    RegisterResult,
    TaskCallResult,
    TaskDetailsResult,
    TaskListResult,
    TaskLogsResult,
    TaskSentResult,
    TaskStatusResult,
    UndeployResult,
)
from mcs.core.settings import Settings, load_settings
from mcs.services import Services
from mcs.tool_edge import MCSServer, add_tool

INSTRUCTIONS = """\
MCS lets you grow your own capabilities as Celery tasks that run in isolated workers.
Workflow: generate_startMain_code (writes a task folder) -> deploy_task (builds and starts its worker, registers
it) -> trigger_celery_task (test it) -> any agent: get_available_tasks / get_task_details, then
trigger_celery_task (wait for the result) or send_celery_task + get_celery_result (long tasks).
Only registered tasks can be called. Errors come back with success=false, an error code and a message that says
what was wrong and what is accepted."""

UNDEPLOY_TIMEOUT_S = 120.0  # stopping workers (warm shutdown) and removing images
QUERY_TIMEOUT_S = 30.0  # list_deployments, get_task_logs

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
Description = Annotated[str, Field(description="what the task does, for other agents (max 2000 chars)")]
ReturnType = Annotated[str, Field(description="the return type, e.g. int, dict, Any")]


def build_server(settings: Settings | None = None, services: Services | None = None) -> MCPServer:
    """The MCS server with every tool registered; nothing connects until a tool needs it."""
    services = services or Services(settings or load_settings())
    server = MCSServer(name="MCS", instructions=INSTRUCTIONS, log_level=services.settings.log_level)

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

        States: PENDING (queued), STARTED, RETRY, SUCCESS (`result` holds the return value). A task that raised
        comes back as an error (task_failed) with the exception type, message and traceback, as from
        trigger_celery_task. An id MCS never issued, or whose result expired, is reported as unknown.
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
        description: Description,
        parameters: Parameters,
        return_type: ReturnType = "Any",
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

    def generate_startMain_code(
        task_name: TaskName,
        description: Description,
        parameters: Parameters,
        function_body: Annotated[
            str,
            Field(
                description="the body of the task function (Python; may import modules and helper files); "
                "it receives the parameters as arguments and returns the result"
            ),
        ],
        queue: Annotated[str, Field(description="queue the task's worker serves (lowercase, digits, '_')")] = "celery",
        return_type: ReturnType = "Any",
        tasks: Annotated[
            list[dict[str, Any]] | None,
            Field(
                description="extra tasks in the same worker: [{task_name, description, parameters, function_body, "
                "return_type}]"
            ),
        ] = None,
        additional_files: Annotated[
            list[dict[str, Any]] | None,
            Field(description='helper modules and text files: [{"filename": "pkg/util.py", "content": "..."}]'),
        ] = None,
        requirements: Annotated[
            list[str] | None, Field(description="the task's own pinned packages, e.g. ['requests==2.32.3']")
        ] = None,
        overwrite: Annotated[bool, Field(description="replace an existing folder of the same task and queue")] = False,
    ) -> GeneratedTask:
        """Generate a complete, runnable Celery task folder in generated_tasks/{task_name}_{queue}/.

        It holds app_{queue}.py (the Celery app and the task with a real signature), requirements.txt, a
        Dockerfile and a README. Everything is validated before anything is written (names, parameter names and
        types, file paths; the Python must compile). Review `main_content`, then call deploy_task.
        """
        return generate_task_folder(
            services.settings,
            task_name=task_name,
            description=description,
            parameters=parameters,
            function_body=function_body,
            queue=queue,
            return_type=return_type,
            tasks=tasks,
            additional_files=additional_files,
            requirements=requirements,
            overwrite=overwrite,
        )

    def deploy_task(
        task_name: TaskName,
        description: Description,
        parameters: Parameters,
        queue: Annotated[str, Field(description="queue the task's worker serves, as given to generate_startMain_code")],
        ctx: Context,
        category: Category = "general",
        code_folder_path: Annotated[
            str | None,
            Field(description="the task folder; default generated_tasks/{task_name}_{queue} (must be under it)"),
        ] = None,
        return_type: ReturnType = "Any",
    ) -> DeployResult:
        """Deploy a task folder as an isolated worker, check it answers, then register the task.

        The deploy worker builds an image from the folder (MCS's hardened recipe), starts the worker, waits until it
        answers, registers the task with its deployment details and only then retires the previous version. The
        same files again change nothing (idempotent); a failed deploy leaves the previous version serving and
        returns the step that failed with the tail of the build or worker log. Test it next with
        trigger_celery_task.
        """

        steps = itertools.count(1)

        def progress(step: str) -> None:  # called from this tool's worker thread: hop to the event loop
            anyio.from_thread.run(ctx.report_progress, next(steps), None, step)

        raw = services.deploy_client.deploy(
            task_name=task_name,
            description=description,
            parameters=parameters,
            queue=queue,
            category=category,
            return_type=return_type,
            code_folder_path=code_folder_path,
            on_progress=progress,
        )
        return DeployResult.model_validate(raw)

    def undeploy_task(task_name: TaskName) -> UndeployResult:
        """Remove a deployed task entirely: its worker, images, deployment folders, registry entry and queue."""
        raw = services.deploy_client.call(protocol.UNDEPLOY, {"task_name": task_name}, UNDEPLOY_TIMEOUT_S)
        return UndeployResult.model_validate(raw)

    def list_deployments() -> DeploymentsResult:
        """List deployed tasks with their version, runtime, image, container and the worker's live status."""
        raw = services.deploy_client.call(protocol.LIST_DEPLOYMENTS, {}, QUERY_TIMEOUT_S)
        return DeploymentsResult.model_validate(raw)

    def get_task_logs(
        task_name: TaskName,
        tail_lines: Annotated[int, Field(ge=1, le=500, description="how many of the last log lines")] = 100,
    ) -> TaskLogsResult:
        """Read the last lines of a deployed task's worker log (to debug a failing or silent task)."""
        payload = {"task_name": task_name, "tail_lines": tail_lines}
        raw = services.deploy_client.call(protocol.TASK_LOGS, payload, QUERY_TIMEOUT_S)
        return TaskLogsResult.model_validate(raw)

    add_tool(server, generate_startMain_code, read_only=False, destructive=True, title="Generate a task folder")
    add_tool(server, deploy_task, read_only=False, destructive=True, idempotent=True, title="Deploy a task", waits=True)
    add_tool(
        server, undeploy_task, read_only=False, destructive=True, idempotent=True, title="Undeploy a task", waits=True
    )
    add_tool(server, list_deployments, read_only=True, idempotent=True, title="List deployments")
    add_tool(server, get_task_logs, read_only=True, idempotent=True, title="A task worker's log")
    add_tool(server, trigger_celery_task, read_only=False, open_world=True, title="Run a task and wait", waits=True)
    add_tool(server, send_celery_task, read_only=False, open_world=True, title="Queue a task")
    add_tool(server, get_celery_result, read_only=True, idempotent=True, title="Get a task's result")
    add_tool(server, get_available_tasks, read_only=True, idempotent=True, title="List tasks")
    add_tool(server, get_task_details, read_only=True, idempotent=True, title="Task details")
    add_tool(server, register_task_info, read_only=False, idempotent=True, title="Register task metadata")
    add_tool(server, get_tasks_by_category_name, read_only=True, idempotent=True, title="Tasks of a category")
    add_tool(server, get_task_categories, read_only=True, idempotent=True, title="Task categories")
    return server


def main() -> None:
    settings = load_settings()
    logging.basicConfig(
        stream=sys.stderr, level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    build_server(settings).run("stdio")


if __name__ == "__main__":
    main()
