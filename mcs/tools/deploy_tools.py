"""Tools that make and manage workers: generate_startMain_code (writes a task folder), deploy_task, undeploy_task,
list_deployments and get_task_logs (the last four talk to the deploy worker through ``services.deploy_client``)."""

import itertools
from typing import Annotated, Any, Literal

import anyio.from_thread
from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field, StrictBool

from mcs.codegen import GeneratedTask, generate_task_folder
from mcs.core import protocol
from mcs.core.results import DeploymentsResult, DeployResult, TaskLogsResult, UndeployResult
from mcs.services import Services
from mcs.tools.edge import add_tool
from mcs.tools.params import Category, Description, Parameters, ReturnType, TaskName

UNDEPLOY_TIMEOUT_S = 120.0  # stopping workers (warm shutdown) and removing images
QUERY_TIMEOUT_S = 30.0  # list_deployments, get_task_logs


def register(server: MCPServer, services: Services) -> None:
    """Add generate_startMain_code, deploy_task, undeploy_task, list_deployments and get_task_logs, in that order."""

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
        overwrite: Annotated[
            StrictBool, Field(description="replace an existing folder of the same task and queue")
        ] = False,
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
        network: Annotated[
            Literal["none", "egress"],
            Field(description="none: the worker reaches Redis only (default); egress: the task needs the network"),
        ] = "none",
        sandbox: Annotated[
            Literal["runc", "gvisor"] | None,
            Field(description="runc (hardened container) or gvisor (user-space kernel); default from settings"),
        ] = None,
    ) -> DeployResult:
        """Deploy a task folder as an isolated worker, check it answers, then register the task.

        The worker gets a Redis user of its own that reaches only the task's queue and results, and no network
        unless `network` is "egress"; `isolation`, `network` and `warnings` in the result say what confines it.

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
            network=network,
            sandbox=sandbox,
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
