"""Tools that call registered tasks: trigger_celery_task (wait), send_celery_task (queue) and get_celery_result."""

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from mcs.core.results import TaskCallResult, TaskSentResult, TaskStatusResult
from mcs.services import Services
from mcs.tools.edge import add_tool
from mcs.tools.params import Args, Kwargs, Queue, TaskName


def register(server: MCPServer, services: Services) -> None:
    """Add trigger_celery_task, send_celery_task and get_celery_result, in that order."""

    def trigger_celery_task(
        task_name: TaskName,
        args: Args = None,
        kwargs: Kwargs = None,
        queue: Queue = None,
        timeout_s: Annotated[
            float | None,
            Field(strict=True, description="seconds to wait for the result (default from settings, 30)"),
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

    add_tool(server, trigger_celery_task, read_only=False, open_world=True, title="Run a task and wait", waits=True)
    add_tool(server, send_celery_task, read_only=False, open_world=True, title="Queue a task")
    add_tool(server, get_celery_result, read_only=True, idempotent=True, title="Get a task's result")
