"""The task record stored in the registry, and the parameter descriptor the original's tools pass around."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from mcs.core.errors import InvalidInput
from mcs.core.lifecycle import RetryPolicy
from mcs.core.names import (
    validate_category,
    validate_description,
    validate_identifier,
    validate_name,
    validate_queue,
    validate_task_name,
)
from mcs.core.types import MAX_TYPE_CHARS, parse_annotation

MAX_PARAMETERS = 64
MAX_PARAM_DESCRIPTION_CHARS = 1000


def utc_now() -> datetime:
    return datetime.now(UTC)


class ParameterSpec(BaseModel):
    """One parameter of a task: ``{"name", "type", "required", "description"}`` and optionally ``default``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: str = Field("Any", min_length=1, max_length=MAX_TYPE_CHARS)
    required: StrictBool = True
    description: str = Field("", max_length=MAX_PARAM_DESCRIPTION_CHARS)
    default: Any = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_identifier(value, "parameter name")


class CanaryInfo(BaseModel):
    """A new version taking ``percent`` of the task's calls while the deployed one serves the rest."""

    version: str
    serve_queue: str
    percent: int = Field(ge=1, le=99)
    container_id: str | None = None
    hostname: str | None = None
    image: str | None = None
    acl_user: str | None = None
    started_at: datetime | None = None
    tests_passed: int | None = None


class DeploymentInfo(BaseModel):
    """Where and how a task's worker runs; filled by the deploy worker."""

    model_config = ConfigDict(extra="allow")

    deployment_id: str | None = None
    version: str | None = None
    image: str | None = None
    container_id: str | None = None
    runtime: str | None = None
    hostname: str | None = None
    dockerfile: str | None = None
    deployed_at: datetime | None = None
    key_prefix: str | None = Field(None, description="every Redis key and channel of the task's workers is under it")
    acl_user: str | None = Field(None, description="the Redis ACL user of the task's workers (its password: theirs)")
    network: str | None = Field(None, description="none (Redis only) or egress (the network the task asked for)")
    sandbox: str | None = Field(None, description="the container runtime: runc or gvisor")
    isolation: str | None = Field(None, description="container, gvisor, or none (process runtime: no isolation)")
    serve_queue: str | None = Field(
        None, description="the version's own queue, where MCS sends the task's calls (the worker consumes only it)"
    )
    primary: str | None = Field(None, description="the task whose folder this is (its deploy registers every task)")
    tasks: list[str] = Field(default_factory=list, description="every task of the folder, served by this worker")
    tests_passed: int | None = Field(None, description="how many test cases this version passed before serving")
    canary: CanaryInfo | None = Field(None, description="a new version taking a share of the calls (gradual release)")
    concurrency: int | None = Field(None, description="pool processes per worker: calls one worker runs at once")
    replicas: int | None = Field(None, description="workers desired now (0: parked, the first call wakes it)")
    min_replicas: int | None = Field(None, description="autoscaling floor (0 parks an idle task)")
    max_replicas: int | None = Field(None, description="autoscaling ceiling (above replicas: scaled on queue depth)")

    @property
    def desired_replicas(self) -> int:
        return 1 if self.replicas is None else self.replicas

    @property
    def autoscaled(self) -> bool:
        low, high = self.min_replicas, self.max_replicas
        return low is not None and high is not None and high > low

    @property
    def parked(self) -> bool:
        return self.replicas == 0

    def route_queue(self, queue: str) -> str:
        return self.serve_queue or queue

    def route(self, queue: str, draw: float) -> tuple[str, str | None]:
        """(queue, version) of one call; ``draw`` in [0, 1) picks the canary for its share of the calls."""
        if self.canary is not None and draw * 100 < self.canary.percent:
            return self.canary.serve_queue, self.canary.version
        return self.route_queue(queue), self.version


class TaskMetadata(BaseModel):
    """A task as its author describes it: in the registry (TaskRecord) and in a folder's manifest."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    parameters: list[ParameterSpec] = Field(default_factory=list, max_length=MAX_PARAMETERS)
    return_type: str = Field("Any", min_length=1, max_length=MAX_TYPE_CHARS)
    category: str = "general"
    retry: RetryPolicy | None = Field(None, description="which exceptions are tried again, how often, how soon")


class TaskRecord(TaskMetadata):
    """What the registry knows of one task. Timestamps are UTC."""

    queue: str = "celery"
    created_at: datetime = Field(default_factory=utc_now)
    last_updated: datetime = Field(default_factory=utc_now)
    deployment: DeploymentInfo | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_name(value, "task_name")

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str) -> str:
        return validate_queue(value, "queue")

    @field_validator("category")
    @classmethod
    def _category(cls, value: str) -> str:
        return validate_category(value)

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        return validate_description(value)

    @property
    def key_prefix(self) -> str:
        """Where the task's calls and results live: its deployment's prefix ('' for a task registered by hand)."""
        return (self.deployment.key_prefix if self.deployment else None) or ""

    @property
    def serve_queue(self) -> str:
        """Where calls go: the deployed version's own queue, or the registered queue (a task registered by hand)."""
        return self.deployment.route_queue(self.queue) if self.deployment else self.queue

    @property
    def primary(self) -> str:
        """The task whose folder (and worker) serves this one: itself, unless it is an extra task of a folder."""
        return (self.deployment.primary if self.deployment else None) or self.name

    @model_validator(mode="after")
    def _unique_parameters(self) -> TaskRecord:
        seen: set[str] = set()
        for spec in self.parameters:
            if spec.name in seen:
                raise InvalidInput("parameters", spec.name, "parameter names must be unique")
            seen.add(spec.name)
        return self


def parse_model(model: type[BaseModel], data: Any, field: str) -> Any:
    """Validate ``data`` as ``model``; a pydantic error becomes InvalidInput naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or field
        raise InvalidInput(f"{field}.{where}" if where != field else field, first.get("input"), first["msg"]) from None


def check_task_record(data: Any) -> TaskRecord:
    """A task's metadata as every tool accepts it (generate, register, deploy): the record's rules, a task name that
    is not reserved, and parameter and return types of the one type grammar. Records already stored are read with
    TaskRecord alone, so whatever an older version stored stays readable."""
    if isinstance(data, dict):
        validate_task_name(data.get("name"))  # the name first: it is what the caller is told about first
    if isinstance(data, dict) and isinstance(data.get("parameters"), list):
        for index, item in enumerate(data["parameters"]):  # name the exact field rather than "parameter name"
            if isinstance(item, dict) and "name" in item:
                validate_identifier(item["name"], f"parameters[{index}].name")
    record: TaskRecord = parse_model(TaskRecord, data, "task")
    validate_task_name(record.name)
    for index, spec in enumerate(record.parameters):
        parse_annotation(spec.type, f"parameters[{index}].type")
    parse_annotation(record.return_type, "return_type")
    return record
