"""The parameter types the tools share: each carries the description the model reads in the tool's input schema."""

from typing import Annotated, Any, Literal

from pydantic import Field

TaskName = Annotated[str, Field(description="registered task name: lowercase letters, digits, '_' (e.g. simple_add)")]
Args = Annotated[list[Any] | None, Field(description="positional arguments, a JSON array (optional)")]
Kwargs = Annotated[
    dict[str, Any] | None, Field(description="keyword arguments by parameter name, a JSON object (optional)")
]
Queue = Annotated[
    str | None, Field(description="queue of the task; omit it: MCS uses the queue the task is registered on")
]
TaskId = Annotated[str, Field(description="the task_id returned by send_celery_task or trigger_celery_task")]
OneTaskId = Annotated[
    str | None,
    Field(description="the task_id returned by send_celery_task or trigger_celery_task (or give task_ids)"),
]
TaskIds = Annotated[
    list[str] | None,
    Field(description="several task ids at once (1-100), instead of task_id: one entry each, in this order"),
]
WaitS = Annotated[
    float | None,
    Field(
        strict=True,
        description="seconds to wait (0-60) until every task is finished; answers as soon as they are (default 0: "
        "answer now)",
    ),
]
Terminate = Annotated[
    bool,
    Field(strict=True, description="also stop the call if it is running (its worker process gets SIGTERM)"),
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
TestCases = Annotated[
    list[dict[str, Any]] | None,
    Field(
        description='test cases run against the new version before it takes calls: [{"args": [2, 3], "expect": 5}, '
        '{"kwargs": {"a": "x"}, "expect_error": "TypeError"}]; a case may name "task" (another task of the folder)'
    ),
]
Retry = Annotated[
    dict[str, Any] | None,
    Field(
        description='retry policy: {"on": ["ConnectionError"], "max_retries": 3, "backoff_s": 1.0, '
        '"backoff_max_s": 60}: a call raising one of `on` (or a subclass) is tried again after backoff_s * 2**n s'
    ),
]
Network = Annotated[
    Literal["none", "egress"] | None,
    Field(description="none: the worker reaches Redis only (default); egress: the task needs the network"),
]
Concurrency = Annotated[
    int | None,
    Field(ge=1, le=64, description="calls one worker runs at once (pool processes); default from settings (1)"),
]
Replicas = Annotated[
    int | None, Field(ge=0, le=256, description="workers of the task; 0 parks it until a call; default 1")
]
MinReplicas = Annotated[
    int | None,
    Field(ge=0, le=256, description="autoscaling floor (with max_replicas); 0 parks the task when idle"),
]
MaxReplicas = Annotated[
    int | None, Field(ge=1, le=256, description="autoscaling ceiling (with min_replicas): scaled on queue depth")
]
Sandbox = Annotated[
    Literal["runc", "gvisor"] | None,
    Field(description="runc (hardened container) or gvisor (user-space kernel); default from settings"),
]
