"""Result models of the MCP tools: the original's keys (success, message, ...) plus typed fields.

Every model is what a client receives as ``structuredContent`` and what its ``outputSchema`` describes. Failures
come back as ``isError`` results with ``success: false``, ``error`` (a short code) and ``message`` (what was wrong
and what is accepted), plus the error's details: ``ErrorResult`` describes them (the edge adds it to every tool's
outputSchema as ``$defs.ErrorResult``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from mcs.core.lifecycle import TestRun
from mcs.core.models import ParameterSpec, TaskRecord


class ToolResult(BaseModel):
    success: bool = True
    message: str


class ErrorResult(BaseModel):
    """What every tool returns when it fails: an ``isError`` result whose structuredContent (and JSON text) is this
    object. Each tool's outputSchema carries it under ``$defs.ErrorResult``; the keys besides success, error and
    message depend on the error (the ones listed are the common ones; others may appear)."""

    model_config = ConfigDict(extra="allow")

    success: Literal[False] = False
    error: str = Field(
        description="a short code: invalid_input, not_found, conflict, service_unavailable, timeout, task_failed, "
        "worker_lost, deploy_failed, unauthorized or mcs_error"
    )
    message: str = Field(description="what was wrong, with which value, and what is accepted or what to do")
    field: str | None = Field(None, description="invalid_input: the argument at fault, e.g. parameters[0].type")
    rule: str | None = Field(None, description="invalid_input: what the argument must be")
    suggestions: list[str] | None = Field(None, description="not_found: close names that do exist")
    task_name: str | None = None
    task_id: str | None = Field(None, description="timeout, task_failed: the call, for get_celery_result")
    status: str | None = Field(None, description="the call's Celery state (timeout, task_failed)")
    exception_type: str | None = Field(None, description="task_failed: the exception the task raised")
    exception_message: str | None = None
    traceback: str | None = Field(None, description="task_failed: the task's traceback (bounded)")
    step: str | None = Field(None, description="deploy_failed: the deploy step that failed")
    service: str | None = Field(None, description="service_unavailable: redis or deploy_worker")
    categories: list[str] | None = Field(None, description="not_found (category): the categories that exist")


class TaskCallResult(ToolResult):
    """A task run to completion by trigger_celery_task."""

    task_id: str
    task_name: str
    queue: str
    status: str = Field(description="Celery's final state: SUCCESS")
    result: Any = Field(None, description="the task's return value, as JSON")
    error: str | None = None
    elapsed_ms: float = Field(description="time from sending the task to receiving its result")


class TaskSentResult(ToolResult):
    """A task queued by send_celery_task; follow up with get_celery_result(task_id)."""

    task_id: str
    task_name: str
    queue: str
    status: str = "SENT"


class TaskStatusEntry(BaseModel):
    """One id of get_celery_result(task_ids=...): its state, and its result or its error (an entry, not a failure of
    the whole call)."""

    task_id: str
    task_name: str | None = None
    queue: str | None = None
    status: str = Field(
        description="PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED, or UNKNOWN (an id MCS did not issue, or "
        "whose result expired)"
    )
    ready: bool = Field(description="finished: SUCCESS, FAILURE, REVOKED or UNKNOWN; nothing more will change")
    result: Any = Field(None, description="the return value (SUCCESS)")
    error: str | None = Field(None, description="task_failed, worker_lost or not_found when the call did not succeed")
    message: str
    exception_type: str | None = None
    exception_message: str | None = None
    traceback: str | None = Field(None, description="the end of the traceback (bounded)")
    worker_lost_at: str | None = None
    cancelled_at: str | None = Field(None, description="when cancel_celery_task revoked the call")


class TaskStatusResult(ToolResult):
    """The state of a task id MCS issued (a task that failed comes back as an error result, task_failed), or, with
    task_ids, of several: one entry each, in the order given, with counts."""

    task_id: str | None = Field(None, description="the id asked for (task_id; absent with task_ids)")
    task_name: str | None = None
    queue: str | None = None
    status: str | None = Field(
        None, description="PENDING, STARTED, RETRY, SUCCESS or REVOKED (task_id; with task_ids: in each entry)"
    )
    ready: bool = Field(description="finished (with task_ids: every one of them)")
    result: Any = None
    error: str | None = None
    worker_lost_at: str | None = Field(None, description="when the call's worker died (the call was delivered again)")
    cancelled_at: str | None = Field(None, description="when cancel_celery_task revoked the call")
    results: list[TaskStatusEntry] | None = Field(
        None, description="with task_ids: one entry per id, in the order given"
    )
    counts: dict[str, int] | None = Field(
        None, description="with task_ids: total, ready, pending, and failed (ready ones that did not succeed)"
    )
    waited_ms: float | None = Field(None, description="how long the call waited for results (wait_s)")


class CancelResult(ToolResult):
    """A call cancel_celery_task revoked, or found finished already."""

    task_id: str
    task_name: str
    queue: str
    status: str = Field(
        description="the call's state now: REVOKED once cancelled; a finished call's final state; STARTED for a "
        "running call (terminate=false leaves it running; terminate=true stops it)"
    )
    cancelled: bool = Field(
        description="true: the call will not run (or, with terminate, is stopped); false: it had finished "
        "already, or it runs and terminate was false"
    )
    terminate: bool = Field(description="whether a running call was to be stopped")
    removed_from_queue: bool = Field(
        False, description="the call still waited in its queue and was taken off it: no worker will receive it"
    )


class TaskSummary(BaseModel):
    """A task as a listing shows it: what an agent needs to choose and call it (get_task_details has the rest)."""

    name: str
    description: str
    parameters: list[ParameterSpec]
    return_type: str
    queue: str
    category: str
    score: float | None = Field(None, description="relevance to the query (BM25 over name, description, ...)")
    matched: list[str] | None = Field(None, description="the words of the query this task matched")

    @model_serializer(mode="wrap")
    def _lean(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """score and matched only when there was a query: a listing stays as small as it can."""
        data = handler(self)
        for key in ("score", "matched"):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    @classmethod
    def of(cls, record: TaskRecord, score: float | None = None, matched: list[str] | None = None) -> TaskSummary:
        return cls(
            name=record.name,
            description=record.description,
            parameters=record.parameters,
            return_type=record.return_type,
            queue=record.queue,
            category=record.category,
            score=score,
            matched=matched,
        )


class TaskListResult(ToolResult):
    tasks: list[TaskSummary | TaskRecord] = Field(
        description="compact summaries (detail compact, the default) or the full records (detail full); with a "
        "query, best match first"
    )
    total_count: int = Field(description="how many tasks match, over all pages")
    offset: int = 0
    limit: int
    query: str | None = Field(None, description="the query the tasks were ranked by")
    detail: str = Field("compact", description="compact or full")


class TaskDetailsResult(ToolResult):
    task: TaskRecord
    replicas_running: int | None = Field(None, description="a deployed task's workers running (the watchdog's view)")
    workers: list[ReplicaStatus] | None = Field(None, description="each worker's slot, hostname, state and id")
    workers_seen_at: str | None = Field(None, description="when the deploy worker last looked at them")


class RegisterResult(ToolResult):
    task_name: str
    task: TaskRecord


class CategoryTasksResult(ToolResult):
    category: str
    tasks: list[TaskSummary | TaskRecord] = Field(description="compact summaries (the default) or full records")
    count: int
    detail: str = Field("compact", description="compact or full")


class CategoriesResult(ToolResult):
    categories: list[str]
    counts: dict[str, int] = Field(description="number of tasks in each category")
    count: int


class DeployResult(ToolResult):
    """A deployment: the original's keys at top level, plus version, runtime and per-step timings."""

    task_name: str
    queue: str
    deployment_id: str
    docker_image: str = Field(description="the worker image (docker runtime) or environment (process runtime)")
    container_id: str = Field(
        description="the id of the version's worker group: its slot-1 container's name (docker), its service (swarm)"
    )
    worker_status: str = Field(description="RUNNING once the new workers answered a Celery ping; PARKED at zero")
    version: str = Field(description="content hash of the deployed files")
    runtime: str = Field(description="docker, or process (no container isolation)")
    reused: bool = Field(description="true when the same files were already deployed: nothing rebuilt or restarted")
    dockerfile: str = Field(description="rendered (MCS's recipe) or custom (the folder's own Dockerfile)")
    isolation: str = Field("none", description="container, gvisor, or none (the process runtime: no isolation)")
    network: str = Field("none", description="none (the worker reaches Redis only) or egress")
    sandbox: str | None = Field(None, description="runc or gvisor (containers only)")
    timings_ms: dict[str, float] = Field(default_factory=dict)
    warnings: list[str] = Field(
        default_factory=list, description="what limits the worker's confinement, and problems retiring older versions"
    )
    tasks: list[str] = Field(
        default_factory=list,
        description="every task of the folder this deploy registered (get_task_details shows each)",
    )
    sources: dict[str, str] = Field(
        default_factory=dict, description="where each value came from: argument, manifest (mcs.json) or default"
    )
    tests: TestRun | None = Field(None, description="the test cases run against this version before it served")
    concurrency: int = Field(1, description="pool processes per worker: calls one worker runs at once")
    replicas: int = Field(1, description="workers desired (0: parked, the first call wakes it)")
    min_replicas: int | None = Field(None, description="autoscaling floor")
    max_replicas: int | None = Field(None, description="autoscaling ceiling")


class VersionInfo(BaseModel):
    version: str
    deployed_at: str = Field(description="when the version last went live (or was refused)")
    status: str = Field(description="serving, kept (can be rolled back to), refused (its tests failed) or removed")
    image: str | None = None
    tests_total: int = 0
    tests_passed: int = 0
    tests_failed: int = 0
    can_roll_back: bool = False
    traffic_percent: int = Field(0, description="the share of the task's calls this version takes")
    calls: dict[str, int] | None = Field(
        None, description="during a gradual release: the calls sent to this version, succeeded and failed"
    )


class VersionsResult(ToolResult):
    task_name: str
    serving: str | None
    versions: list[VersionInfo] = Field(description="newest first")
    count: int
    keep_versions: int = Field(description="how many versions are kept (MCS_KEEP_VERSIONS)")
    canary: str | None = Field(None, description="the version of a gradual release in progress")


class RetiringVersion(BaseModel):
    version: str
    status: str = Field(description="draining (finishing the calls it took) or drain_failed")
    error: str | None = Field(None, description="why retiring it failed (its worker may still run)")


class ReplicaStatus(BaseModel):
    slot: int
    hostname: str
    state: str = Field(description="RUNNING, STARTING, RESTARTING, EXITED or MISSING")
    id: str
    node: str = ""


class ScalingEvent(BaseModel):
    at: str
    from_replicas: int
    to_replicas: int
    reason: str


class ScaleResult(ToolResult):
    task_name: str
    replicas: int = Field(description="workers desired now")
    previous: int = Field(description="workers desired before")
    replicas_running: int
    workers: list[ReplicaStatus] = Field(default_factory=list)
    min_replicas: int | None = None
    max_replicas: int | None = None


class DeploymentStatus(BaseModel):
    task_name: str
    queue: str
    version: str | None
    runtime: str | None
    docker_image: str | None
    container_id: str | None
    worker_status: str
    deployed_at: str | None
    isolation: str = "none"
    network: str = "none"
    sandbox: str | None = None
    warnings: list[str] = Field(default_factory=list)
    tasks: list[str] = Field(default_factory=list, description="every task the folder's worker serves")
    tests_passed: int | None = None
    canary: str | None = Field(None, description="the version of a gradual release in progress")
    retiring: list[RetiringVersion] = Field(
        default_factory=list, description="previous versions still finishing their calls, or that failed to retire"
    )
    concurrency: int = Field(1, description="pool processes per worker")
    replicas: int = Field(1, description="workers desired (0: parked until a call wakes it)")
    replicas_running: int = Field(0, description="workers running now")
    min_replicas: int | None = None
    max_replicas: int | None = None
    workers: list[ReplicaStatus] = Field(default_factory=list, description="each worker of the serving version")
    scaling: list[ScalingEvent] = Field(default_factory=list, description="recent scaling decisions, newest first")


class DeploymentsResult(ToolResult):
    deployments: list[DeploymentStatus]
    count: int


class UndeployResult(ToolResult):
    task_name: str
    removed: list[str] = Field(description="what was removed: containers, images, folders, registry entry, queue")


class TaskLogsResult(ToolResult):
    task_name: str
    container_id: str
    lines: int
    logs: str


class PipelineStep(BaseModel):
    index: int
    task_name: str
    status: str = Field(description="WAITING, STARTED, SUCCESS or FAILURE")
    task_id: str | None = None
    elapsed_ms: float | None = None
    error: str | None = Field(None, description="the error code of a failed step (task_failed, timeout, ...)")
    message: str | None = None


class PipelineResult(ToolResult):
    """run_pipeline: the final result and each step's status and time (wait=false: the id to follow)."""

    pipeline_id: str = Field(description="follow it with get_celery_result(task_id=pipeline_id, wait_s=...)")
    status: str = Field(description="RUNNING (wait=false) or SUCCESS (a failed step is a task_failed error)")
    result: Any = Field(None, description="the last step's result")
    steps: list[PipelineStep]
    elapsed_ms: float | None = None


class MapResult(ToolResult):
    """map_celery_task: one task over many argument sets, one batch id, results in order."""

    batch_id: str = Field(description="follow it with get_celery_result(task_id=batch_id, wait_s=...)")
    task_name: str
    task_ids: list[str] = Field(description="one call per item, in order")
    count: int
    ready: bool = Field(description="every call finished within wait_s")
    results: list[TaskStatusEntry] | None = Field(None, description="with wait_s: one entry per item, in order")
    counts: dict[str, int] | None = None
