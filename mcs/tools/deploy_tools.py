"""Tools that make and manage workers: generate_startMain_code (writes a task folder), deploy_task, scale_task,
undeploy_task, list_deployments and get_task_logs (all but the first talk to the deploy worker through
``services.deploy_client``)."""

import itertools
from collections.abc import Callable
from typing import Annotated, Any, Literal

import anyio.from_thread
from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field, StrictBool

from mcs.codegen import GeneratedTask, generate_task_folder
from mcs.core import protocol
from mcs.core.lifecycle import check_version_ref
from mcs.core.names import validate_name
from mcs.core.results import (
    DeploymentsResult,
    DeployResult,
    ScaleResult,
    TaskLogsResult,
    UndeployResult,
    VersionsResult,
)
from mcs.services import Services
from mcs.tools.edge import add_tool
from mcs.tools.params import (
    Category,
    Concurrency,
    Description,
    MaxReplicas,
    MinReplicas,
    Network,
    Parameters,
    Replicas,
    Retry,
    ReturnType,
    Sandbox,
    TaskName,
    TestCases,
)

UNDEPLOY_TIMEOUT_S = 120.0  # stopping workers (warm shutdown) and removing images
QUERY_TIMEOUT_S = 30.0  # list_deployments, get_task_logs


def _reporter(ctx: Context) -> Callable[[str], None]:
    """Relay the deploy worker's steps as MCP progress notifications (called from the tool's worker thread)."""
    steps = itertools.count(1)

    def progress(step: str) -> None:
        anyio.from_thread.run(ctx.report_progress, next(steps), None, step)

    return progress


def register(server: MCPServer, services: Services) -> None:
    """Add generate_startMain_code, deploy_task, undeploy_task, list_deployments, get_task_logs, list_task_versions,
    rollback_task and promote_task, in that order."""

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
        category: Category = "general",
        tests: TestCases = None,
        retry: Retry = None,
        network: Network = None,
        sandbox: Sandbox = None,
        show: Annotated[
            Literal["tasks", "full", "none"],
            Field(description="main_content: the task functions (default), the whole app file, or nothing"),
        ] = "tasks",
        concurrency: Concurrency = None,
        replicas: Replicas = None,
        min_replicas: MinReplicas = None,
        max_replicas: MaxReplicas = None,
    ) -> GeneratedTask:
        """Generate a complete, runnable Celery task folder in generated_tasks/{task_name}_{queue}/.

        It holds app_{queue}.py (the Celery app and the task with a real signature), requirements.txt, a
        Dockerfile, a README and mcs.json, the manifest: every task's metadata, tests, retry policy and deploy
        choices, so that deploy_task(task_name, queue) alone deploys it. Everything is validated before anything is
        written (names, parameter names and types, file paths; the Python must compile). Review `main_content`
        (the task functions; show="full" for the whole file), then call deploy_task(task_name, queue).
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
            category=category,
            tests=tests,
            retry=retry,
            network=network,
            sandbox=sandbox,
            show=show,
            concurrency=concurrency,
            replicas=replicas,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
        )

    def deploy_task(
        task_name: TaskName,
        queue: Annotated[str, Field(description="queue the task's worker serves, as given to generate_startMain_code")],
        ctx: Context,
        description: Annotated[str | None, Field(description="overrides the manifest's (required without one)")] = None,
        parameters: Annotated[
            list[dict[str, Any]] | None, Field(description="overrides the manifest's (required without one)")
        ] = None,
        category: Annotated[str | None, Field(description="overrides the manifest's; default general")] = None,
        code_folder_path: Annotated[
            str | None,
            Field(description="the task folder; default generated_tasks/{task_name}_{queue} (must be under it)"),
        ] = None,
        return_type: Annotated[str | None, Field(description="overrides the manifest's; default Any")] = None,
        network: Network = None,
        sandbox: Sandbox = None,
        tests: TestCases = None,
        retry: Retry = None,
        canary_percent: Annotated[
            int | None,
            Field(
                ge=1,
                le=99,
                description="a gradual release: the new version takes this share of the calls while the serving "
                "one takes the rest, until promote_task or rollback_task",
            ),
        ] = None,
        concurrency: Concurrency = None,
        replicas: Replicas = None,
        min_replicas: MinReplicas = None,
        max_replicas: MaxReplicas = None,
    ) -> DeployResult:
        """Deploy a task folder as an isolated worker, test it, then register every task of the folder.

        A folder from generate_startMain_code carries its manifest (mcs.json): task_name and queue alone deploy
        it; any other argument given overrides the manifest, and `sources` in the result says where each value
        came from. A hand-written folder without a manifest needs description and parameters.

        The deploy worker builds an image (MCS's hardened recipe), starts the new version on a queue of its own,
        waits until it answers, runs the test cases against it (one failure: the version is removed, the previous
        keeps serving, and the error lists each failing case), then points the registry at it (from then on every
        call goes to it, none to the previous version) and retires the previous version, whose waiting calls move
        over. The worker gets a Redis user of its own and no network unless `network` is "egress". The same files
        again change nothing (idempotent). Earlier versions stay for rollback_task (list_task_versions).

        Capacity: `concurrency` calls per worker at once, `replicas` workers (scale_task changes it later); with
        `min_replicas` and `max_replicas` the deploy worker scales on the queue's depth, and `min_replicas` 0 parks
        an idle task (no worker; the first call wakes it). A value not given keeps the deployed one.
        """

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
            tests=tests,
            retry=retry,
            canary_percent=canary_percent,
            concurrency=concurrency,
            replicas=replicas,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            on_progress=_reporter(ctx),
        )
        return DeployResult.model_validate(raw)

    def list_task_versions(task_name: TaskName) -> VersionsResult:
        """List a deployed task's versions, newest first: deployed_at, status (serving, kept, refused), its test
        results and image. Kept versions can be served again with rollback_task, without a rebuild."""
        raw = services.deploy_client.call(protocol.LIST_VERSIONS, {"task_name": task_name}, QUERY_TIMEOUT_S)
        return VersionsResult.model_validate(raw)

    def rollback_task(
        task_name: TaskName,
        version: Annotated[str, Field(description="a kept version from list_task_versions (or its first 6+ chars)")],
        ctx: Context,
    ) -> DeployResult:
        """Serve a kept version of a task again, without a rebuild: it starts on its own queue, its test cases run
        again, then every call goes to it and the version that served retires (its waiting calls move over). During
        a gradual release, rolling back to the serving version ends the release."""
        payload = {"task_name": validate_name(task_name), "version": check_version_ref(version)}
        raw = services.deploy_client.call(
            protocol.ROLLBACK, payload, services.settings.deploy_timeout_s, on_progress=_reporter(ctx)
        )
        return DeployResult.model_validate(raw)

    def promote_task(task_name: TaskName, ctx: Context) -> DeployResult:
        """End a gradual release (deploy_task with canary_percent): its version takes every call and the version
        that served retires. list_task_versions compares the two first (calls, successes, failures)."""
        payload = {"task_name": validate_name(task_name)}
        raw = services.deploy_client.call(
            protocol.PROMOTE, payload, services.settings.deploy_timeout_s, on_progress=_reporter(ctx)
        )
        return DeployResult.model_validate(raw)

    def scale_task(
        task_name: TaskName,
        replicas: Annotated[int, Field(ge=0, description="workers wanted now; 0 parks it (the first call wakes it)")],
        min_replicas: MinReplicas = None,
        max_replicas: MaxReplicas = None,
    ) -> ScaleResult:
        """Change how many workers serve a deployed task, without a redeploy: new workers start and answer before
        this returns; workers beyond the count stop after finishing their calls. With min_replicas and
        max_replicas, the deploy worker then scales the task on its queue's depth within that range."""
        raw = services.deploy_client.scale(task_name, replicas, min_replicas, max_replicas)
        return ScaleResult.model_validate(raw)

    def undeploy_task(task_name: TaskName) -> UndeployResult:
        """Remove a deployed task entirely: its worker, images, deployment folders, registry entry and queue. For a
        folder with several tasks, undeploy its main task: every task of the folder goes with it."""
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
    add_tool(server, scale_task, read_only=False, destructive=False, idempotent=True, title="Scale a task", waits=True)
    add_tool(server, list_deployments, read_only=True, idempotent=True, title="List deployments")
    add_tool(server, get_task_logs, read_only=True, idempotent=True, title="A task worker's log")
    add_tool(server, list_task_versions, read_only=True, idempotent=True, title="A task's versions")
    add_tool(server, rollback_task, read_only=False, destructive=True, idempotent=True, title="Roll back", waits=True)
    add_tool(server, promote_task, read_only=False, destructive=True, title="Promote a release", waits=True)
