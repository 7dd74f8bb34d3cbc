"""Result models of the MCP tools: the original's keys (success, message, ...) plus typed fields.

Every model is what a client receives as ``structuredContent`` and what its ``outputSchema`` describes. Failures
are not modelled here: they come back as ``isError`` results with ``success: false``, ``error`` (a short code) and
``message`` (what was wrong and what is accepted), plus the error's details.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mcs.core.lifecycle import TestRun
from mcs.core.models import TaskRecord


class ToolResult(BaseModel):
    success: bool = True
    message: str


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


class TaskStatusResult(ToolResult):
    """The state of a task id MCS issued (a task that failed comes back as an error result, task_failed)."""

    task_id: str
    task_name: str | None = None
    queue: str | None = None
    status: str = Field(description="PENDING, STARTED, RETRY or SUCCESS")
    ready: bool
    result: Any = None
    error: str | None = None
    worker_lost_at: str | None = Field(None, description="when the call's worker died (the call was delivered again)")


class TaskListResult(ToolResult):
    tasks: list[TaskRecord]
    total_count: int = Field(description="how many tasks match, over all pages")
    offset: int = 0
    limit: int


class TaskDetailsResult(ToolResult):
    task: TaskRecord


class RegisterResult(ToolResult):
    task_name: str
    task: TaskRecord


class CategoryTasksResult(ToolResult):
    category: str
    tasks: list[TaskRecord]
    count: int


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
    container_id: str = Field(description="the worker container id (docker) or process id (process runtime)")
    worker_status: str = Field(description="RUNNING once the new worker answered a Celery ping")
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
