"""MCP resources and prompts: what an agent (or its user) can read and attach without a tool call.

Resources (JSON unless said otherwise):

- ``mcs://tasks``: every registered task, compact (name, description, parameters, return type, queue, category);
- ``mcs://tasks/{name}``: one task's full registry record (deployment included);
- ``mcs://tasks/{name}/logs``: the last lines of a deployed task's worker log (text);
- ``mcs://deployments``: the deployed tasks with their version, runtime and live worker status.

The last two ask the deploy worker (``services.deploy_client``), as list_deployments and get_task_logs do. A failure
is a JSON-RPC error whose message says what was wrong and what to do (no deploy worker running: how to start one)
and whose data is the tools' error shape (``success: false``, ``error``, ``message``, details).

Prompt ``build_a_task``: generate -> deploy (task_name and queue alone) -> test -> discover, for one task.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS
from pydantic import Field

from mcs.core import protocol
from mcs.core.errors import InvalidInput, MCSError, NotFound
from mcs.core.names import validate_name, validate_queue, validate_task_name
from mcs.core.results import DeploymentsResult, TaskLogsResult, TaskSummary
from mcs.search import keywords
from mcs.services import Services

log = logging.getLogger(__name__)

QUERY_TIMEOUT_S = 30.0  # the deploy worker's answer (deployments, logs), as for list_deployments
RESOURCE_MAX_TASKS = 1000  # mcs://tasks lists at most this many (get_available_tasks pages through the rest)
LOG_TAIL_LINES = 100
JSON = "application/json"

F = TypeVar("F", bound=Callable[..., Any])


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=str)


def as_protocol_errors(fn: F) -> F:
    """An MCSError raised while reading becomes a JSON-RPC error carrying its message and the tools' error shape:
    invalid params for a bad or unknown name, internal error for the rest (a service down, a deploy worker away)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MCSError as exc:
            log.info("resource %s: %s", fn.__name__, exc.code)
            code = INVALID_PARAMS if isinstance(exc, InvalidInput | NotFound) else INTERNAL_ERROR
            raise MCPError(code=code, message=exc.message, data={"success": False, **exc.to_dict()}) from None

    return wrapper  # type: ignore[return-value]


def register(server: MCPServer, services: Services) -> None:
    """Add the resources (mcs://tasks, mcs://deployments, mcs://tasks/{name}/logs, mcs://tasks/{name}) and the
    build_a_task prompt."""

    @server.resource("mcs://tasks", name="tasks", title="Registered tasks", mime_type=JSON)
    @as_protocol_errors
    def tasks() -> str:
        """Every registered task, compact and sorted by name: name, description, parameters, return type, queue,
        category (at most 1000; get_available_tasks pages and searches)."""
        registry = services.registry
        names = registry.names()
        records = registry.fetch(names[:RESOURCE_MAX_TASKS])
        shown = [TaskSummary.of(r).model_dump(mode="json", exclude_none=True) for r in records]
        return _json({"tasks": shown, "total_count": len(names), "truncated": len(names) > len(shown)})

    @server.resource("mcs://deployments", name="deployments", title="Deployments", mime_type=JSON)
    @as_protocol_errors
    def deployments() -> str:
        """The deployed tasks with their version, runtime, image, container and live worker status (asks the
        deploy worker, like list_deployments)."""
        raw = services.deploy_client.call(protocol.LIST_DEPLOYMENTS, {}, QUERY_TIMEOUT_S)
        return _json(DeploymentsResult.model_validate(raw).model_dump(mode="json"))

    # The logs template first: a URI is matched against the templates in the order they were added.
    @server.resource("mcs://tasks/{name}/logs", name="task_logs", title="A task worker's log", mime_type="text/plain")
    @as_protocol_errors
    def task_logs(name: str) -> str:
        """The last 100 lines of a deployed task's worker log (asks the deploy worker, like get_task_logs)."""
        payload = {"task_name": validate_name(name, "task_name"), "tail_lines": LOG_TAIL_LINES}
        raw = services.deploy_client.call(protocol.TASK_LOGS, payload, QUERY_TIMEOUT_S)
        return TaskLogsResult.model_validate(raw).logs

    @server.resource("mcs://tasks/{name}", name="task", title="A task's record", mime_type=JSON)
    @as_protocol_errors
    def task(name: str) -> str:
        """One registered task's full record: description, parameters, return type, category, queue, retry
        policy, timestamps and deployment (as get_task_details)."""
        record = services.registry.get(validate_name(name, "task_name"))
        return _json(record.model_dump(mode="json"))

    @server.prompt(name="build_a_task", title="Build a task")
    def build_a_task(
        goal: Annotated[str, Field(description="what the task should do, in a sentence")],
        task_name: Annotated[str, Field(description="the new task's name: lowercase letters, digits, '_'")],
        queue: Annotated[str | None, Field(description="its worker's queue (default: the task name)")] = None,
    ) -> str:
        """Walk through adding one capability to MCS: look for an existing task, generate the folder, deploy it
        with task_name and queue alone, test it, check that other agents find it."""
        return build_a_task_text(goal, task_name, queue)


def build_a_task_text(goal: str, task_name: str, queue: str | None = None) -> str:
    """The build_a_task prompt's text (an MCP invalid-params error for a name or queue MCS would refuse)."""
    try:
        validate_task_name(task_name)
        queue = validate_queue(queue or task_name, "queue")
    except InvalidInput as exc:
        raise MCPError(code=INVALID_PARAMS, message=exc.message, data={"success": False, **exc.to_dict()}) from None
    words = " ".join(list(keywords(goal).values())[:6]) or task_name.replace("_", " ")
    call = f'task_name="{task_name}", queue="{queue}"'
    return f"""\
Add this capability to MCS as the task `{task_name}`: {goal.strip()}

1. Look first. Call get_available_tasks(query="{words}"). If a task listed already does this, read it with
   get_task_details, try it with trigger_celery_task and stop: nothing needs building.
2. Generate. Call generate_startMain_code({call}, description=..., parameters=..., function_body=...,
   tests=...):
   - description: one or two sentences other agents will search by; say what goes in and what comes out;
   - parameters: [{{"name": "x", "type": "int", "required": true, "description": "..."}}] (types: int, float, str,
     bool, list, dict, Optional[...], Any);
   - function_body: the body of the function only; it receives the parameters as arguments and returns a JSON
     value; it may import modules (third-party ones pinned in requirements=["package==1.2.3"]) and helper files
     (additional_files);
   - tests: a few cases, [{{"kwargs": {{"x": 2}}, "expect": 4}}, {{"args": ["bad"], "expect_error": "ValueError"}}].
   Everything lands in the folder's manifest, mcs.json.
3. Deploy. Call deploy_task({call}) and nothing else: the manifest carries the rest. The test cases run
   against the new version before it takes any call. If one fails the deploy is refused, the previous version (if
   any) keeps serving, and the error lists each failing case: fix function_body, call generate_startMain_code again
   with overwrite=true, deploy again.
4. Test. Call trigger_celery_task(task_name="{task_name}", kwargs={{...}}) with an input of your own and check
   `result`. For long work use send_celery_task, then get_celery_result with its task_id. When a call fails, read
   its traceback, and the worker's log with get_task_logs(task_name="{task_name}") (resource
   mcs://tasks/{task_name}/logs).
5. Discover. Call get_available_tasks(query="{words}") as another agent would: `{task_name}` should come
   first. If it does not, improve its description with register_task_info.

A redeploy keeps the previous version: list_task_versions shows them, rollback_task serves one again.
"""
