"""Unit tests of what generate_startMain_code adds for a task's life cycle: the manifest mcs.json (checked with the
deploy plan made from it), the test cases, the retry policies and their checks, and the retry logic of the
generated worker (run in this process against a fake backend). No services."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from mcs.core.errors import InvalidInput
from mcs.core.manifest import MAX_MANIFEST_BYTES, parse_manifest, plan_deploy
from mcs.core.settings import Settings
from tests.helpers import make_settings
from tests.test_codegen import ADD, entries, gen, load_app  # noqa: F401 (load_app: a fixture)

pytestmark = [
    pytest.mark.unit,
    pytest.mark.filterwarnings("error::celery.exceptions.DuplicateTaskNameWarning"),
]

RETRY = {"on": ["ConnectionError", "requests.exceptions.Timeout"], "max_retries": 4, "backoff_s": 0.5}
NEG = {"task_name": "neg", "parameters": [{"name": "x", "type": "float"}], "function_body": "return -x"}


@pytest.fixture
def s(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


def manifest_of(result) -> dict[str, Any]:
    return json.loads((Path(result.folder) / result.manifest).read_text())


# --- the manifest ------------------------------------------------------------------------------------------------


def test_manifest_of_a_plain_task(s: Settings) -> None:
    result = gen(s)
    assert result.manifest == "mcs.json" and "mcs.json" in result.files
    path = Path(result.folder) / "mcs.json"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert manifest_of(result) == {
        "manifest_version": 1,
        "queue": "math",
        "tasks": [
            {
                "name": "add_numbers",
                "description": "Add two numbers.",
                "parameters": [
                    {"name": "a", "type": "int", "required": True, "description": "first"},
                    {"name": "b", "type": "int", "required": True, "description": "second"},
                ],
                "return_type": "int",
                "category": "general",
                "tests": [],
            }
        ],
        "requirements": [],
        "deploy": {},
    }
    plan = plan_deploy({"task_name": "add_numbers", "queue": "math"}, parse_manifest(path.read_text()))
    assert plan.names == ["add_numbers"] and plan.cases == []
    assert plan.main.retry is None and plan.network is None and plan.sandbox is None
    assert plan.sources["description"] == "manifest" and plan.sources["retry"] == "default"
    assert plan.sources["tests"] == "default" and plan.sources["network"] == "default"


def test_manifest_carries_tests_retry_category_and_deploy_choices(s: Settings) -> None:
    tests = [
        {"args": [1, 2], "expect": 3},
        {"kwargs": {"a": "x", "b": 1}, "expect_error": "TypeError", "timeout_s": 5},
        {"task": "neg", "args": [2], "expect": -2},  # a case of the main task's list that checks an extra task
    ]
    result = gen(
        s,
        category="arithmetic",
        tests=tests,
        retry=RETRY,
        network="egress",
        sandbox="gvisor",
        requirements=["requests==2.32.3"],
        tasks=[
            {**NEG, "category": "signs", "retry": {"on": ["ValueError"]}, "tests": [{"args": [0], "expect": None}]},
            {"task_name": "zero", "function_body": "return 0"},
        ],
    )
    data = manifest_of(result)
    assert data["queue"] == "math" and data["requirements"] == ["requests==2.32.3"]
    assert data["deploy"] == {"network": "egress", "sandbox": "gvisor"}
    main, neg, zero = data["tasks"]
    assert main["category"] == "arithmetic"
    assert main["retry"] == {**RETRY, "backoff_max_s": 60.0}
    assert main["tests"] == [
        {"args": [1, 2], "expect": 3},
        {"kwargs": {"a": "x", "b": 1}, "expect_error": "TypeError", "timeout_s": 5.0},
    ]
    assert neg["category"] == "signs" and neg["retry"]["on"] == ["ValueError"]
    # The main task's list comes first; an expected null is kept.
    assert neg["tests"] == [{"args": [2], "expect": -2}, {"args": [0], "expect": None}]
    assert zero == {"name": "zero", "description": "", "parameters": [], "return_type": "Any",
                    "category": "general", "tests": []}  # fmt: skip

    manifest = parse_manifest((Path(result.folder) / "mcs.json").read_text())
    plan = plan_deploy({"task_name": "add_numbers", "queue": "math"}, manifest)
    assert plan.names == ["add_numbers", "neg", "zero"]
    assert plan.main.description == "Add two numbers." and plan.main.category == "arithmetic"
    assert [p.model_dump(exclude_none=True) for p in plan.main.parameters] == ADD["parameters"]
    assert plan.main.return_type == "int"
    assert plan.main.retry is not None and plan.main.retry.model_dump() == {**RETRY, "backoff_max_s": 60.0}
    assert plan.records[1].retry is not None and plan.records[1].retry.on == ["ValueError"]
    assert plan.records[1].category == "signs" and plan.records[2].retry is None
    assert {r.queue for r in plan.records} == {"math"}
    assert [(c.task, c.args, c.expects_error) for c in plan.cases] == [
        ("add_numbers", [1, 2], False), ("add_numbers", [], True), ("neg", [2], False), ("neg", [0], False),
    ]  # fmt: skip
    assert plan.cases[1].kwargs == {"a": "x", "b": 1} and plan.cases[1].timeout_s == 5
    assert plan.cases[2].expect == -2 and plan.cases[3].expect is None
    for name in ("description", "parameters", "return_type", "category", "retry", "tests", "network", "sandbox"):
        assert plan.sources[name] == "manifest", name
    assert (plan.network, plan.sandbox) == ("egress", "gvisor")


def test_manifest_parameters_are_normalized_in_signature_order(s: Settings) -> None:
    result = gen(
        s,
        parameters=[
            {"name": "limit", "type": "int", "required": False, "default": 10},
            {"name": "tags", "type": "typing.Optional[list[str]]", "required": False},
            {"name": "a", "type": "typing.Dict[str,  int]", "description": "first"},
        ],
        function_body="return limit",
        return_type="int  # a comment",
    )
    task = manifest_of(result)["tasks"][0]
    assert task["parameters"] == [
        {"name": "a", "type": "Dict[str, int]", "required": True, "description": "first"},
        {"name": "limit", "type": "int", "required": False, "description": "", "default": 10},
        {"name": "tags", "type": "Optional[list[str]]", "required": False, "description": ""},
    ]
    assert task["return_type"] == "int"
    plan = plan_deploy({"task_name": "add_numbers", "queue": "math"}, parse_manifest(json.dumps(manifest_of(result))))
    assert [p.name for p in plan.main.parameters] == ["a", "limit", "tags"]


def test_tests_listed_under_an_extra_task_may_name_the_main_one(s: Settings) -> None:
    result = gen(s, tasks=[{**NEG, "tests": [{"args": [1], "expect": -1}, {"task": "add_numbers", "args": [1, 1],
                                                                              "expect": 2}]}])  # fmt: skip
    main, neg = manifest_of(result)["tasks"]
    assert main["tests"] == [{"args": [1, 1], "expect": 2}] and neg["tests"] == [{"args": [1], "expect": -1}]
    assert "its 2 test cases run against the new version" in " ".join(result.next_steps)


def test_next_steps_without_tests_say_how_to_add_them(s: Settings) -> None:
    steps = " ".join(gen(s).next_steps)
    assert "deploy_task(task_name='add_numbers', queue='math')" in steps
    assert "test cases in mcs.json" in steps and "registers every task" not in steps


def test_readme_names_the_manifest_and_the_short_deploy(s: Settings) -> None:
    readme = (Path(gen(s).folder) / "README.md").read_text()
    assert 'deploy_task(task_name="add_numbers", queue="math")' in readme
    assert "`mcs.json`" in readme and "code_folder_path" not in readme


# --- validation: a clear error and nothing written ---------------------------------------------------------------

CASE = {"args": [1, 2], "expect": 3}
BAD = {
    "tests not a list": ({"tests": {"args": []}}, "tests"),
    "case without expectation": ({"tests": [{"args": [1, 2]}]}, "tests[0]"),
    "case with both expectations": ({"tests": [CASE, {"expect": 1, "expect_error": "ValueError"}]}, "tests[1]"),
    "case bad error name": ({"tests": [{"expect_error": "not a class"}]}, "tests[0]"),
    "case unknown key": ({"tests": [{**CASE, "expected": 3}]}, "tests[0].expected"),
    "case args not a list": ({"tests": [{"args": "1, 2", "expect": 3}]}, "tests[0].args"),
    "case kwargs key not a string": ({"tests": [{"kwargs": {1: 2}, "expect": 3}]}, "tests[0].kwargs.1.[key]"),
    "case expect not json": ({"tests": [{"expect": {1, 2}}]}, "tests[0].expect"),
    "case kwargs not finite": ({"tests": [{"kwargs": {"a": float("inf")}, "expect": 1}]}, "tests[0].kwargs"),
    "case timeout": ({"tests": [{**CASE, "timeout_s": 0}]}, "tests[0].timeout_s"),
    "case not a dict": ({"tests": ["add(1, 2) == 3"]}, "tests[0]"),
    "case unknown task": ({"tests": [CASE, {**CASE, "task": "mul"}]}, "tests[1].task"),
    "case task not a string": ({"tests": [{**CASE, "task": 3}]}, "tests[0].task"),
    "extra task case unknown task": (
        {"tasks": [{**NEG, "tests": [{**CASE, "task": "sub"}]}]},
        "tasks[0].tests[0].task",
    ),
    "extra task bad case": ({"tasks": [{**NEG, "tests": [{"args": [1]}]}]}, "tasks[0].tests[0]"),
    "extra task tests not a list": ({"tasks": [{**NEG, "tests": "none"}]}, "tasks[0].tests"),
    "too many cases": ({"tests": [CASE] * 21}, "tests"),
    "too many cases in all": ({"tests": [CASE] * 11, "tasks": [{**NEG, "tests": [CASE] * 10}]}, "tests"),
    "retry not a dict": ({"retry": ["ConnectionError"]}, "retry"),
    "retry without names": ({"retry": {"on": []}}, "retry.on"),
    "retry missing names": ({"retry": {"max_retries": 2}}, "retry.on"),
    "retry bad name": ({"retry": {"on": ["ConnectionError", "os.system('id')"]}}, "retry.on"),
    "retry name not a string": ({"retry": {"on": [3]}}, "retry.on.0"),
    "retry zero retries": ({"retry": {"on": ["ValueError"], "max_retries": 0}}, "retry.max_retries"),
    "retry too many retries": ({"retry": {"on": ["ValueError"], "max_retries": 21}}, "retry.max_retries"),
    "retry negative backoff": ({"retry": {"on": ["ValueError"], "backoff_s": -1}}, "retry.backoff_s"),
    "retry backoff not finite": ({"retry": {"on": ["ValueError"], "backoff_s": float("nan")}}, "retry.backoff_s"),
    "retry unknown key": ({"retry": {"on": ["ValueError"], "delay": 1}}, "retry.delay"),
    "extra task retry bad name": ({"tasks": [{**NEG, "retry": {"on": ["a-b"]}}]}, "tasks[0].retry.on"),
    "extra task retry unknown key": (
        {"tasks": [NEG, {**NEG, "task_name": "n2", "retry": {"on": ["E"], "x": 1}}]},
        "tasks[1].retry.x",
    ),
    "category": ({"category": "Bad Category!"}, "category"),
    "category not a string": ({"category": 3}, "category"),
    "extra task category": ({"tasks": [{**NEG, "category": ""}]}, "tasks[0].category"),
    "network": ({"network": "internet"}, "network"),
    "network not a string": ({"network": True}, "network"),
    "sandbox": ({"sandbox": "docker"}, "sandbox"),
    "concurrency": ({"concurrency": 0}, "concurrency"),
    "replicas over the maximum": ({"replicas": 99}, "replicas"),
    "a range without its top": ({"min_replicas": 0}, "max_replicas"),
    "replicas outside the range": ({"min_replicas": 1, "max_replicas": 2, "replicas": 3}, "replicas"),
    "file mcs.json": (
        {"additional_files": [{"filename": "mcs.json", "content": "{}"}]},
        "additional_files[0].filename",
    ),
    "file MCS.JSON": (
        {"additional_files": [{"filename": "MCS.JSON", "content": "{}"}]},
        "additional_files[0].filename",
    ),
    "file under mcs.json": ({"additional_files": [{"filename": "mcs.json/x.py", "content": ""}]}, "additional_files"),
}


@pytest.mark.parametrize(("overrides", "field"), BAD.values(), ids=BAD.keys())
def test_invalid_life_cycle_input_is_refused_and_nothing_is_written(s: Settings, overrides: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        gen(s, **overrides)
    assert info.value.field == field
    assert info.value.rule and str(info.value).startswith(f"invalid {field} ")
    assert entries(s) == []


def test_a_manifest_over_its_size_limit_is_refused(s: Settings) -> None:
    params = [{"name": f"p{i}", "type": "int", "description": "d" * 1000} for i in range(64)]
    tasks = [{"task_name": f"t{i}", "parameters": params, "function_body": "return 1"} for i in range(4)]
    with pytest.raises(InvalidInput) as info:
        gen(s, parameters=params, function_body="return 1", tasks=tasks)
    assert info.value.field == "mcs.json" and str(MAX_MANIFEST_BYTES) in info.value.rule
    assert entries(s) == []


def test_accepted_values(s: Settings) -> None:
    result = gen(s, network="none", sandbox="runc", retry={"on": ["builtins.ConnectionError"]}, tests=[])
    assert manifest_of(result)["deploy"] == {"network": "none", "sandbox": "runc"}
    assert manifest_of(result)["tasks"][0]["retry"]["max_retries"] == 3


def test_capacity_goes_into_the_manifest_and_the_deploy_plan(s: Settings) -> None:
    result = gen(s, concurrency=4, min_replicas=0, max_replicas=3)
    data, result_queue = manifest_of(result), manifest_of(result)["queue"]
    assert data["deploy"] == {"concurrency": 4, "min_replicas": 0, "max_replicas": 3}
    plan = plan_deploy({"task_name": "add_numbers", "queue": result_queue}, parse_manifest(json.dumps(data)))
    assert plan.capacity == {"concurrency": 4, "replicas": None, "min_replicas": 0, "max_replicas": 3}
    assert plan.sources["concurrency"] == "manifest" and plan.sources["replicas"] == "default"
    override = plan_deploy({"task_name": "add_numbers", "queue": result_queue, "concurrency": 2}, parse_manifest(
        json.dumps(data)))  # fmt: skip
    assert override.capacity["concurrency"] == 2 and override.sources["concurrency"] == "argument"


# --- the generated worker's retry logic ----------------------------------------------------------------------------


class Retried(Exception):
    """What the fake ``Task.retry`` returns, to be raised."""


class FakeClient:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.sets: list[tuple[str, Any, int | None]] = []
        self.fail_set = False

    def pipeline(self, transaction: bool = True) -> FakeClient:
        self.queued: list[str] = []
        return self

    def incr(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        self.queued.append(key)

    def expire(self, key: str, seconds: int) -> None:
        pass

    def zscore(self, key: str, member: str) -> None:
        self.revoked_key = key  # no call of these tests was cancelled

    def execute(self) -> list[Any]:
        return [self.counts[self.queued[0]], True, None]

    def set(self, key: str, value: Any, ex: int | None = None) -> None:
        if self.fail_set:
            raise OSError("redis is down")
        self.sets.append((key, value, ex))


class FakeBackend:
    def __init__(self) -> None:
        self.client = FakeClient()


@pytest.fixture
def worker(s: Settings, load_app, monkeypatch: pytest.MonkeyPatch):  # noqa: F811 (load_app: the fixture)
    """The generated module, with one task per behaviour, a fake backend, and ``call(name, retries, *args)`` that runs
    a task as the worker does (a request pushed, not called directly). Returns (module, call, client, retry calls)."""
    monkeypatch.setenv("MCS_KEY_PREFIX", "mcs:t:add_numbers:")
    monkeypatch.delitem(sys.modules, "flaky_errors", raising=False)  # restored (absent) afterwards
    body = (
        "import flaky_errors as errors\n\n"
        "raise {'conn': ConnectionRefusedError, 'value': ValueError, 'flaky': errors.Flaky}[kind]('boom')"
    )
    result = gen(
        s,
        parameters=[{"name": "kind", "type": "str"}],
        function_body=body,
        retry={"on": ["ConnectionError", "flaky_errors.Flaky"], "max_retries": 3,
               "backoff_s": 1.5, "backoff_max_s": 5},
        tasks=[{"task_name": "plain", "function_body": "raise ConnectionError('no retry policy')"}],
        additional_files=[{"filename": "flaky_errors.py",
                           "content": "class Flaky(Exception):\n    pass\n"}],
    )  # fmt: skip
    module = load_app(result)
    backend = FakeBackend()
    retried: list[dict[str, Any]] = []

    def call(name: str, retries: int, *args: Any) -> Any:
        task = module.celery_app.tasks[f"mcp_app.{name}"]
        task.backend = backend
        task.retry = lambda **options: retried.append(options) or Retried(options)
        task.push_request(id="call-1", retries=retries, called_directly=False)
        try:
            return task(*args)
        finally:
            task.pop_request()

    return module, call, backend.client, retried


def test_worker_task_classes_carry_their_retry_policy(worker) -> None:
    module, _, _, _ = worker
    assert module.add_numbers.mcs_retry == {
        "on": ["ConnectionError", "flaky_errors.Flaky"],
        "max_retries": 3,
        "backoff_s": 1.5,
        "backoff_max_s": 5.0,
    }
    assert module.plain.mcs_retry is None


@pytest.mark.parametrize(("retries", "countdown"), [(0, 1.5), (1, 3.0), (2, 5.0)])
def test_worker_retries_a_named_exception_with_backoff(worker, retries: int, countdown: float) -> None:
    _, call, client, retried = worker
    with pytest.raises(Retried):
        call("add_numbers", retries, "conn")  # ConnectionRefusedError: a subclass of the named ConnectionError
    assert len(retried) == 1 and isinstance(retried[0].pop("exc"), ConnectionRefusedError)
    assert retried == [{"countdown": countdown, "max_retries": 3}]
    assert client.sets == []
    assert client.counts == {"mcs:t:add_numbers:mcs-deliveries:call-1": 1}


def test_worker_matches_a_dotted_name(worker) -> None:
    _, call, _, retried = worker
    with pytest.raises(Retried):
        call("add_numbers", 0, "flaky")
    assert len(retried) == 1


def test_worker_last_failure_records_the_attempts_and_raises_the_original(worker) -> None:
    _, call, client, retried = worker
    with pytest.raises(ConnectionRefusedError, match="boom"):
        call("add_numbers", 3, "conn")
    assert retried == []
    assert client.sets == [("mcs:t:add_numbers:mcs-attempts:call-1", 4, 86400)]


def test_worker_attempts_write_failing_keeps_the_original_exception(worker) -> None:
    _, call, client, _ = worker
    client.fail_set = True
    with pytest.raises(ConnectionRefusedError, match="boom"):
        call("add_numbers", 3, "conn")


def test_worker_does_not_retry_other_exceptions(worker) -> None:
    _, call, client, retried = worker
    with pytest.raises(ValueError, match="boom"):
        call("add_numbers", 0, "value")
    with pytest.raises(ConnectionError, match="no retry policy"):
        call("plain", 0)
    assert retried == [] and client.sets == []


def test_worker_direct_calls_are_not_retried(worker) -> None:
    module, _, _, _ = worker
    with pytest.raises(ConnectionRefusedError):
        module.add_numbers("conn")  # called directly: no request of a worker
