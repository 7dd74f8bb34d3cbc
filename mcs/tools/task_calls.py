"""Tools that call registered tasks: trigger_celery_task (wait), send_celery_task (queue), get_celery_result
(one id or several, optionally waiting for them) and cancel_celery_task."""

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from mcs.core.results import CancelResult, TaskCallResult, TaskSentResult, TaskStatusResult
from mcs.services import Services
from mcs.tools.edge import add_tool
from mcs.tools.params import Args, Kwargs, OneTaskId, Queue, TaskId, TaskIds, TaskName, Terminate, WaitS


def register(server: MCPServer, services: Services) -> None:
    """Add trigger_celery_task, send_celery_task, get_celery_result and cancel_celery_task, in that order."""

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
        exception type, message and a bounded traceback. Arguments are checked against the task's declared
        parameter types before anything is sent; a deployed task whose worker does not answer is refused at once
        (service_unavailable, with the fix).
        """
        return services.invoker.trigger(task_name, args, kwargs, queue, timeout_s)

    def send_celery_task(
        task_name: TaskName, args: Args = None, kwargs: Kwargs = None, queue: Queue = None
    ) -> TaskSentResult:
        """Queue a registered task without waiting (asynchronous mode), for long-running work.

        Returns at once with `task_id` and status SENT; follow it with get_celery_result(task_id, wait_s=...), or
        several sends at once with get_celery_result(task_ids=[...], wait_s=...). Arguments are checked as for
        trigger_celery_task.
        """
        return services.invoker.send(task_name, args, kwargs, queue)

    def get_celery_result(
        task_id: OneTaskId = None, task_ids: TaskIds = None, wait_s: WaitS = None
    ) -> TaskStatusResult:
        """Get the state and, when finished, the result of a task MCS sent, or of several at once.

        Give `task_id` (one id) or `task_ids` (up to 100), not both. `wait_s` (0-60, default 0: answer now) waits
        until every one is finished or the time is up, and answers as soon as they are: no polling loop needed.
        States: PENDING (queued), STARTED, RETRY, SUCCESS (`result` holds the return value), REVOKED (cancelled).
        With `task_id`, a task that raised comes back as an error (task_failed) with the exception type, message
        and traceback, as from trigger_celery_task, and an id MCS never issued, or whose result expired, is
        unknown (not_found). With `task_ids`, `results` has one entry per id in the order given (a failed or
        unknown one is an entry with its `error`), and `counts` says how many are ready and pending.
        """
        return services.invoker.status(task_id, task_ids, wait_s)

    def cancel_celery_task(task_id: TaskId, terminate: Terminate = False) -> CancelResult:
        """Cancel a call MCS sent: revoke it so that no worker runs it, and get_celery_result answers REVOKED.

        A call still waiting in its queue is taken off it (no worker, started now or later, receives it). A
        running call keeps running unless `terminate` is true (its worker process is stopped). A call that
        finished already is left as it was (cancelled false, its final status). Unknown ids are not_found.
        """
        return services.invoker.cancel(task_id, terminate)

    add_tool(server, trigger_celery_task, read_only=False, open_world=True, title="Run a task and wait", waits=True)
    add_tool(server, send_celery_task, read_only=False, open_world=True, title="Queue a task")
    add_tool(server, get_celery_result, read_only=True, idempotent=True, title="Get a task's result", waits=True)
    add_tool(
        server,
        cancel_celery_task,
        read_only=False,
        destructive=True,
        idempotent=True,
        title="Cancel a task call",
        waits=True,
    )
