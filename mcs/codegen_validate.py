"""Checks on the tasks ``generate_startMain_code`` receives, before any file is rendered or written.

Each check returns the value in the form the renderer needs (a parsed annotation, a default as a Python literal,
parameters in signature order) or raises InvalidInput naming the field, the value and what would be accepted.
Type annotations are parsed with ``ast`` and rebuilt from a small allow-list, so what reaches the generated code is
the re-printed syntax tree, never the caller's text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from mcs.codegen_files import check_text
from mcs.core.errors import InvalidInput
from mcs.core.models import MAX_PARAMETERS, ParameterSpec, parse_model
from mcs.core.names import validate_description, validate_identifier, validate_task_name
from mcs.core.types import Annotation, parse_annotation

MAX_TASKS = 32
MAX_BODY_CHARS = 100_000
MAX_DEFAULT_CHARS = 2000


class TaskInput(BaseModel):
    """One entry of ``tasks``: an extra task in the same folder and queue."""

    model_config = ConfigDict(extra="forbid")

    task_name: str
    description: str = ""
    parameters: list[Any] | None = None
    function_body: str
    return_type: str = "Any"


@dataclass(frozen=True)
class Param:
    name: str
    annotation: Annotation
    required: bool
    default_source: str | None  # the default as a Python literal; None for a required parameter
    description: str


@dataclass(frozen=True)
class TaskPlan:
    """A validated task: what the renderer needs, parameters already in signature order."""

    name: str
    description: str
    params: tuple[Param, ...]
    returns: Annotation
    body: str
    field: str  # where the task came from, for error messages: "" or "tasks[2]."


def check_task(
    field_prefix: str, task_name: Any, description: Any, parameters: Any, function_body: Any, return_type: Any
) -> TaskPlan:
    """Validate one task; ``field_prefix`` is "" for the main task, "tasks[i]." for an extra one."""
    name = validate_task_name(task_name, field_prefix + "task_name")
    validate_description(description, field_prefix + "description")
    params = check_parameters(parameters, field_prefix + "parameters")
    returns = parse_annotation(return_type, field_prefix + "return_type")
    body = check_body(function_body, field_prefix + "function_body")
    return TaskPlan(name, description, params, returns, body, field_prefix)


def check_parameters(parameters: Any, field: str) -> tuple[Param, ...]:
    """Parse the parameter descriptors; return them required first, then optional, each group in given order."""
    if parameters is None:
        parameters = []
    if not isinstance(parameters, list | tuple):
        raise InvalidInput(field, parameters, "expected a list of {name, type, required, description, default}")
    if len(parameters) > MAX_PARAMETERS:
        raise InvalidInput(field, f"<{len(parameters)} parameters>", f"at most {MAX_PARAMETERS} parameters")
    seen: set[str] = set()
    params: list[Param] = []
    for index, item in enumerate(parameters):
        where = f"{field}[{index}]"
        if isinstance(item, dict) and "name" in item:  # name the exact field rather than "parameter name"
            validate_identifier(item["name"], where + ".name")
        spec: ParameterSpec = parse_model(ParameterSpec, item, where)
        if spec.name in seen:
            raise InvalidInput(where + ".name", spec.name, "parameter names must be unique within a task")
        seen.add(spec.name)
        annotation = parse_annotation(spec.type, where + ".type")
        default_source = None
        if spec.required:
            if spec.default is not None:
                raise InvalidInput(
                    where + ".default",
                    spec.default,
                    "a required parameter takes no default; set required=false to make it optional",
                )
        else:
            default_source = default_literal(spec.default, where + ".default")
        params.append(Param(spec.name, annotation, spec.required, default_source, spec.description))
    return tuple(sorted(params, key=lambda p: not p.required))  # sorted() is stable


def default_literal(value: Any, field: str) -> str:
    """The default of an optional parameter as a Python literal: JSON-like values only, so repr() round-trips."""
    _check_plain_value(value, field, depth=0)
    source = repr(value)
    if len(source) > MAX_DEFAULT_CHARS:
        raise InvalidInput(field, value, f"a default of at most {MAX_DEFAULT_CHARS} characters as a literal")
    return source


def _check_plain_value(value: Any, field: str, depth: int) -> None:
    rule = "a JSON value: null, true/false, a number, a string, a list or an object with string keys"
    if depth > 20:
        raise InvalidInput(field, value, "nested too deeply; " + rule)
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(field, value, "a finite number; " + rule)
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_plain_value(item, field, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(field, value, rule)
            _check_plain_value(item, field, depth + 1)
        return
    raise InvalidInput(field, value, rule)


def check_body(body: Any, field: str) -> str:
    """The function body as text with '\\n' line ends; its syntax is checked once the file is rendered."""
    if not isinstance(body, str) or not body.strip():
        raise InvalidInput(field, body, "the Python code of the function body, a non-empty string")
    if len(body) > MAX_BODY_CHARS:
        raise InvalidInput(field, f"<{len(body)} characters>", f"at most {MAX_BODY_CHARS} characters")
    check_text(body, field)
    return body.replace("\r\n", "\n").replace("\r", "\n")


def check_extra_tasks(tasks: Any) -> list[TaskPlan]:
    if tasks is None:
        return []
    if not isinstance(tasks, list | tuple):
        raise InvalidInput("tasks", tasks, "a list of {task_name, description, parameters, function_body, return_type}")
    if len(tasks) > MAX_TASKS:
        raise InvalidInput("tasks", f"<{len(tasks)} tasks>", f"at most {MAX_TASKS} extra tasks")
    plans = []
    for index, item in enumerate(tasks):
        where = f"tasks[{index}]"
        spec: TaskInput = parse_model(TaskInput, item, where)
        plans.append(
            check_task(
                where + ".", spec.task_name, spec.description, spec.parameters, spec.function_body, spec.return_type
            )
        )
    return plans
