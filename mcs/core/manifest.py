"""The manifest of a task folder (``mcs.json``), and the deploy plan made from it and a deploy request.

``generate_startMain_code`` writes the manifest: every task of the folder (name, description, parameters, return
type, category, retry policy, test cases), the requirements and the deploy choices. ``deploy_task(task_name,
queue)`` alone then deploys the folder; whatever the request gives overrides the manifest, and the plan says where
each value came from (``argument``, ``manifest`` or ``default``). A hand-written folder without a manifest deploys
from the request alone, as before manifests existed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mcs.core.errors import InvalidInput
from mcs.core.lifecycle import MAX_TEST_CASES, RetryPolicy, TestCase
from mcs.core.models import TaskMetadata, TaskRecord, check_task_record, parse_model

MANIFEST_FILE = "mcs.json"
MANIFEST_VERSION = 1
MAX_FOLDER_TASKS = 32
MAX_MANIFEST_BYTES = 256 * 1024


class ManifestTask(TaskMetadata):
    """One task of the folder: its metadata and the test cases that gate each deploy of it."""

    tests: list[TestCase] = Field(default_factory=list, max_length=MAX_TEST_CASES)


class DeployChoices(BaseModel):
    model_config = ConfigDict(extra="forbid")

    network: str | None = None
    sandbox: str | None = None
    concurrency: int | None = None
    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None


#: The deploy choices a request, or else the manifest, makes (besides the tasks' metadata and test cases).
CHOICES = ("network", "sandbox", "concurrency", "replicas", "min_replicas", "max_replicas")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    manifest_version: int = MANIFEST_VERSION
    queue: str
    tasks: list[ManifestTask] = Field(min_length=1, max_length=MAX_FOLDER_TASKS)
    requirements: list[str] = Field(default_factory=list)
    deploy: DeployChoices = Field(default_factory=DeployChoices)

    @property
    def main(self) -> ManifestTask:
        return self.tasks[0]

    def render(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        for task, dumped in zip(self.tasks, data["tasks"], strict=True):
            dumped["tests"] = [case.public() for case in task.tests]  # an expected null stays in the file
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def parse_manifest(text: str | bytes) -> Manifest:
    """The folder's ``mcs.json``; InvalidInput names the manifest's bad field."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise InvalidInput(MANIFEST_FILE, f"<{len(text)} bytes>", f"at most {MAX_MANIFEST_BYTES} bytes")
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(MANIFEST_FILE, str(exc)[:200], "a JSON object (the folder's manifest)") from None
    manifest: Manifest = parse_model(Manifest, data, MANIFEST_FILE)
    if manifest.manifest_version != MANIFEST_VERSION:
        raise InvalidInput(f"{MANIFEST_FILE}.manifest_version", manifest.manifest_version, f"{MANIFEST_VERSION}")
    return manifest


@dataclass
class DeployPlan:
    """What one deploy registers and checks: the folder's tasks (the main one first), the test cases (each naming its
    task), the deploy choices, and where each of the main task's values came from."""

    records: list[TaskRecord]
    cases: list[TestCase]
    network: str | None
    sandbox: str | None
    sources: dict[str, str] = field(default_factory=dict)
    capacity: dict[str, Any] = field(default_factory=dict)  # concurrency, replicas, min/max_replicas: None = default

    @property
    def main(self) -> TaskRecord:
        return self.records[0]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]


MAIN_FIELDS = ("description", "parameters", "return_type", "category", "retry")


def plan_deploy(request: dict[str, Any], manifest: Manifest | None) -> DeployPlan:
    """Merge a deploy request (``None`` = not given) over the folder's manifest. Without a manifest the request must
    carry the description and parameters, as a hand-written folder always needed."""
    task_name, queue = request.get("task_name"), request.get("queue")
    sources: dict[str, str] = {}
    main: dict[str, Any] = {"name": task_name, "queue": queue}
    extra: list[ManifestTask] = []
    manifest_cases: list[TestCase] = []
    if manifest is not None:
        if manifest.queue != queue:
            raise InvalidInput(
                "queue", queue, f"the folder's {MANIFEST_FILE} is for queue {manifest.queue!r}: deploy it on that one"
            )
        if manifest.main.name != task_name:
            raise InvalidInput(
                "task_name", task_name, f"the folder's {MANIFEST_FILE} declares main task {manifest.main.name!r}"
            )
        extra = manifest.tasks[1:]
        for task in manifest.tasks:
            manifest_cases += [c.model_copy(update={"task": c.task or task.name}) for c in task.tests]
    check_retry(request.get("retry"))
    for name in MAIN_FIELDS:
        given = request.get(name)
        if given is not None:
            main[name], sources[name] = given, "argument"
        elif manifest is not None and name in manifest.main.model_fields_set:
            main[name], sources[name] = _plain(getattr(manifest.main, name)), "manifest"
        elif manifest is None and name in ("description", "parameters"):
            raise InvalidInput(
                name, None, f"required: the folder has no {MANIFEST_FILE} manifest (generate_startMain_code writes one)"
            )
        else:
            sources[name] = "default"
    records = [check_task_record(main)]
    for index, task in enumerate(extra, start=1):
        data = task.model_dump(exclude={"tests"}) | {"queue": queue}
        try:
            records.append(check_task_record(data))
        except InvalidInput as exc:
            raise InvalidInput(f"{MANIFEST_FILE}.tasks[{index}].{exc.field}", exc.value, exc.rule) from None
    names = [r.name for r in records]
    if len(set(names)) != len(names):
        raise InvalidInput(f"{MANIFEST_FILE}.tasks", names, "task names must be unique within the folder")

    if request.get("tests") is not None:
        cases, sources["tests"] = check_test_cases(request["tests"], names[0]), "argument"
    else:
        cases, sources["tests"] = manifest_cases, ("manifest" if manifest_cases else "default")
    for index, case in enumerate(cases):
        if case.task not in names:
            raise InvalidInput(f"tests[{index}].task", case.task, f"a task of this folder: {', '.join(names)}")
    if len(cases) > MAX_TEST_CASES:
        raise InvalidInput("tests", f"<{len(cases)} cases>", f"at most {MAX_TEST_CASES} test cases per folder")

    choices = manifest.deploy if manifest is not None else DeployChoices()
    chosen: dict[str, Any] = {}
    for name in CHOICES:
        given = request.get(name)
        if given is not None:
            chosen[name], sources[name] = given, "argument"
        elif getattr(choices, name) is not None:
            chosen[name], sources[name] = getattr(choices, name), "manifest"
        else:
            chosen[name], sources[name] = None, "default"
    capacity = {name: chosen[name] for name in CHOICES[2:]}
    return DeployPlan(records, cases, chosen["network"], chosen["sandbox"], sources, capacity)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def check_retry(raw: Any, field: str = "retry") -> RetryPolicy | None:
    return None if raw is None else parse_model(RetryPolicy, raw, field)


def check_test_cases(raw: Any, main: str) -> list[TestCase]:
    """Test cases as a tool receives them; a case without ``task`` is the main task's."""
    if not isinstance(raw, list):
        raise InvalidInput("tests", raw, "a list of test cases {args, kwargs, expect | expect_error}")
    cases = []
    for index, item in enumerate(raw):
        case: TestCase = parse_model(TestCase, item, f"tests[{index}]")
        cases.append(case.model_copy(update={"task": case.task or main}))
    return cases
