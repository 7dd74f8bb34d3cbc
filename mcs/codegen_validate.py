"""Checks on the tasks ``generate_startMain_code`` receives, before any file is rendered or written.

Each check returns the value in the form the renderer needs (a parsed annotation, a default as a Python literal,
parameters in signature order) or raises InvalidInput naming the field, the value and what would be accepted.
Type annotations are parsed with ``ast`` and rebuilt from a small allow-list, so what reaches the generated code is
the re-printed syntax tree, never the caller's text. A task's category, retry policy and test cases are checked here
too (``mcs.core.lifecycle``): they go into the folder's manifest, and the retry policy also into the worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from mcs.codegen_files import check_text
from mcs.core.errors import InvalidInput
from mcs.core.lifecycle import MAX_TEST_CASES, RetryPolicy, TestCase
from mcs.core.models import MAX_PARAMETERS, ParameterSpec, parse_model
from mcs.core.names import validate_category, validate_description, validate_identifier, validate_task_name
from mcs.core.protocol import NETWORKS, SANDBOXES
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
    category: Any = "general"
    retry: Any = None
    tests: Any = None


@dataclass(frozen=True)
class Param:
    name: str
    annotation: Annotation
    required: bool
    default_source: str | None  # the default as a Python literal; None for a required parameter
    description: str
    spec: ParameterSpec  # the parameter as given, validated, its type re-printed from the parsed annotation


@dataclass(frozen=True)
class TaskPlan:
    """A validated task: what the renderer needs, parameters already in signature order."""

    name: str
    description: str
    params: tuple[Param, ...]  # in signature order: required first, then optional
    returns: Annotation
    body: str
    field: str  # where the task came from, for error messages: "" or "tasks[2]."
    category: str = "general"
    retry: RetryPolicy | None = None
    tests: tuple[TestCase, ...] = ()  # the cases listed under this task (a case's ``task`` may name another one)


def check_task(
    field_prefix: str,
    task_name: Any,
    description: Any,
    parameters: Any,
    function_body: Any,
    return_type: Any,
    category: Any = "general",
    retry: Any = None,
    tests: Any = None,
) -> TaskPlan:
    """Validate one task; ``field_prefix`` is "" for the main task, "tasks[i]." for an extra one."""
    name = validate_task_name(task_name, field_prefix + "task_name")
    validate_description(description, field_prefix + "description")
    params = check_parameters(parameters, field_prefix + "parameters")
    returns = parse_annotation(return_type, field_prefix + "return_type")
    body = check_body(function_body, field_prefix + "function_body")
    validate_category(category, field_prefix + "category")
    policy = check_retry(retry, field_prefix + "retry")
    cases = check_tests(tests, field_prefix + "tests")
    return TaskPlan(name, description, params, returns, body, field_prefix, category, policy, cases)


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
        normalized = spec.model_copy(update={"type": annotation.source})
        params.append(Param(spec.name, annotation, spec.required, default_source, spec.description, normalized))
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
                where + ".",
                spec.task_name,
                spec.description,
                spec.parameters,
                spec.function_body,
                spec.return_type,
                spec.category,
                spec.retry,
                spec.tests,
            )
        )
    return plans


TESTS_RULE = "a list of test cases {args, kwargs, expect} or {args, kwargs, expect_error: 'ValueError'}"


def _parse_part(model: type[BaseModel], data: Any, field: str) -> Any:
    """parse_model, and a validator's own InvalidInput ("expect", "retry.on[0]") placed under ``field`` too."""
    try:
        return parse_model(model, data, field)
    except InvalidInput as exc:
        if exc.field == field or exc.field.startswith((field + ".", field + "[")):
            raise
        parent, _, last = field.rpartition(".")  # "tasks[1].retry" -> "tasks[1]", "retry"
        if exc.field == last or exc.field.startswith((last + ".", last + "[")):
            inner = f"{parent}.{exc.field}" if parent else exc.field
        else:
            inner = f"{field}.{exc.field}"
        raise InvalidInput(inner, exc.value, exc.rule) from None


def check_retry(retry: Any, field: str) -> RetryPolicy | None:
    if retry is None:
        return None
    policy: RetryPolicy = _parse_part(RetryPolicy, retry, field)
    return policy


def check_tests(tests: Any, field: str) -> tuple[TestCase, ...]:
    """The test cases listed under one task; their values must be JSON (they are written to the manifest)."""
    if tests is None:
        return ()
    if not isinstance(tests, list | tuple):
        raise InvalidInput(field, tests, TESTS_RULE)
    if len(tests) > MAX_TEST_CASES:
        raise InvalidInput(field, f"<{len(tests)} cases>", f"at most {MAX_TEST_CASES} test cases per folder")
    cases = []
    for index, item in enumerate(tests):
        where = f"{field}[{index}]"
        case: TestCase = _parse_part(TestCase, item, where)
        for name in ("args", "kwargs", "expect"):
            _check_plain_value(getattr(case, name), f"{where}.{name}", depth=0)
        cases.append(case)
    return tuple(cases)


def assign_tests(plans: list[TaskPlan]) -> dict[str, list[TestCase]]:
    """Each task's test cases: those listed under it and those elsewhere that name it (``task`` dropped, as the
    task they are listed under in the manifest is the one they call). Refuses an unknown task and too many cases."""
    names = [plan.name for plan in plans]
    assigned: dict[str, list[TestCase]] = {name: [] for name in names}
    total = 0
    for plan in plans:
        for index, case in enumerate(plan.tests):
            target = case.task or plan.name
            if target not in assigned:
                raise InvalidInput(
                    f"{plan.field}tests[{index}].task", case.task, f"a task of this folder: {', '.join(names)}"
                )
            assigned[target].append(case.model_copy(update={"task": None}))
            total += 1
    if total > MAX_TEST_CASES:
        raise InvalidInput(
            "tests", f"<{total} cases>", f"at most {MAX_TEST_CASES} test cases per folder, all its tasks together"
        )
    return assigned


def check_deploy_choice(value: Any, field: str, accepted: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in accepted:
        raise InvalidInput(field, value, f"one of {', '.join(accepted)} (or null for the deploy's default)")
    return value


def check_network(value: Any) -> str | None:
    return check_deploy_choice(value, "network", NETWORKS)


def check_sandbox(value: Any) -> str | None:
    return check_deploy_choice(value, "sandbox", SANDBOXES)
