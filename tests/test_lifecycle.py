"""The life cycle on a fake runtime and fakeredis: deploy from the manifest, every task of a folder, test cases
that gate a version, version queues that never overlap, versions and rollback without a build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcs.core.celery_app import version_queue
from mcs.core.errors import Conflict, DeployError, InvalidInput
from mcs.core.manifest import MANIFEST_FILE, Manifest, ManifestTask
from tests.test_deployer import APP, Env

pytestmark = pytest.mark.unit

ADD = {"name": "simple_add", "description": "adds", "parameters": [{"name": "a", "type": "int"}], "category": "math"}


def manifest(*tasks: dict, **deploy: str) -> str:
    return Manifest(queue="test_queue", tasks=[ManifestTask(**t) for t in tasks], deploy=deploy).render()


@pytest.fixture
def env(tmp_path: Path) -> Env:
    env = Env(tmp_path)
    env.write(MANIFEST_FILE, manifest({**ADD, "tests": [{"args": [2, 3], "expect": 5}]}))
    return env


def bare(env: Env, **extra) -> dict:
    """A request with task_name and queue only (what an agent sends for a generated folder)."""
    request = env.request()
    for key in ("description", "parameters", "return_type", "category"):
        request.pop(key)
    return {**request, **extra}


def test_the_manifest_alone_deploys_and_the_result_says_where_values_came_from(env: Env) -> None:
    result = env.deployer.deploy(bare(env))
    record = env.registry.get("simple_add")
    assert record.description == "adds" and record.category == "math" and record.parameters[0].name == "a"
    assert result.sources["description"] == "manifest" and result.sources["retry"] == "default"
    assert result.tests.passed == 1 and result.tests.total == 1
    override = env.deployer.deploy(bare(env, description="adds numbers"))
    assert override.reused and override.sources["description"] == "argument"
    assert env.registry.get("simple_add").description == "adds numbers"


def test_a_folder_without_a_manifest_needs_description_and_parameters(env: Env) -> None:
    (env.folder / MANIFEST_FILE).unlink()
    with pytest.raises(InvalidInput, match=r"description.*manifest"):
        env.deployer.deploy(bare(env))
    assert env.deployer.deploy(env.request()).sources["description"] == "argument"


def test_the_manifest_must_match_the_deployed_name_and_queue(env: Env) -> None:
    with pytest.raises(InvalidInput, match="declares main task 'simple_add'"):
        env.deployer.deploy(bare(env, task_name="other"))
    env.write(MANIFEST_FILE, "{not json")
    with pytest.raises(InvalidInput, match=MANIFEST_FILE):
        env.deployer.deploy(bare(env))


def test_test_cases_run_against_the_new_version_queue_only(env: Env) -> None:
    result = env.deployer.deploy(bare(env))
    serve = version_queue("test_queue", result.version)
    assert env.calls == [(serve, "simple_add", [2, 3], {})]
    assert env.runtime.specs[-1].serve_queue == serve
    assert env.registry.get("simple_add").serve_queue == serve


def test_a_failing_case_refuses_the_version_and_the_old_one_keeps_serving(env: Env) -> None:
    first = env.deployer.deploy(bare(env))
    env.write("app_test_queue.py", APP + "# v2, broken\n")
    env.answer = lambda task, args, kwargs: {"state": "SUCCESS", "result": 6}
    with pytest.raises(DeployError) as info:
        env.deployer.deploy(bare(env))
    error = info.value
    assert error.details["step"] == "tests" and "keeps serving" in error.message
    [failure] = error.details["failures"]
    assert failure["args"] == [2, 3] and failure["expected"] == 5 and failure["got"] == 6
    assert list(env.runtime.running) == [first.container_id]
    assert env.registry.get("simple_add").deployment.version == first.version
    versions = env.deployer.versions("simple_add").versions
    assert [(v.status, v.tests_failed) for v in versions] == [("refused", 1), ("serving", 0)]


def test_expected_errors_and_tracebacks(env: Env) -> None:
    env.write(MANIFEST_FILE, manifest({**ADD, "tests": [{"args": ["x"], "expect_error": "TypeError"}]}))
    env.answer = lambda *a: {"state": "FAILURE", "error": "TypeError", "message": "bad", "traceback": "Traceback..."}
    assert env.deployer.deploy(bare(env)).tests.passed == 1
    assert env.deployer.versions("simple_add").count == 1  # a case expecting an error is stored readable
    env.write("app_test_queue.py", APP + "# v2\n")
    env.answer = lambda *a: {"state": "SUCCESS", "result": "x"}
    with pytest.raises(DeployError, match="expected TypeError, got"):
        env.deployer.deploy(bare(env))


def test_cases_passed_to_deploy_replace_the_manifest_ones(env: Env) -> None:
    result = env.deployer.deploy(bare(env, tests=[{"kwargs": {"a": 1}, "expect": 1}]))
    assert result.sources["tests"] == "argument" and env.calls[-1][3] == {"a": 1}
    with pytest.raises(InvalidInput, match=r"tests\[0\]"):
        env.deployer.deploy(bare(env, tests=[{"args": [1]}]))


def test_every_task_of_a_folder_is_deployed_and_removed_together(env: Env) -> None:
    double = {"name": "double", "description": "doubles", "parameters": [{"name": "x", "type": "int"}]}
    env.write(MANIFEST_FILE, manifest(ADD, double))
    env.registers = ["mcp_app.simple_add", "mcp_app.double"]
    result = env.deployer.deploy(bare(env))
    assert result.tasks == ["simple_add", "double"]
    main, extra = env.registry.get("simple_add"), env.registry.get("double")
    assert extra.deployment == main.deployment and extra.primary == "simple_add" and extra.queue == "test_queue"
    assert [d.tasks for d in env.deployer.deployments()] == [["simple_add", "double"]]
    with pytest.raises(Conflict, match="together with simple_add, double"):
        env.deployer.undeploy("double")
    removed = env.deployer.undeploy("simple_add").removed
    assert "task double" in removed and env.registry.find("double") is None
    assert env.registry.find("simple_add") is None and env.runtime.running == {}


def test_a_task_the_new_version_dropped_is_removed(env: Env) -> None:
    double = {"name": "double", "description": "doubles"}
    env.write(MANIFEST_FILE, manifest(ADD, double))
    env.registers = ["mcp_app.simple_add", "mcp_app.double"]
    env.deployer.deploy(bare(env))
    env.write(MANIFEST_FILE, manifest(ADD))
    env.deployer.deploy(bare(env))
    assert env.registry.find("double") is None and env.registry.get("simple_add").deployment.tasks == ["simple_add"]


def test_a_worker_missing_one_task_of_its_folder_fails_health(env: Env) -> None:
    env.write(MANIFEST_FILE, manifest(ADD, {"name": "double"}))
    with pytest.raises(DeployError, match=r"does not define mcp_app\.double"):
        env.deployer.deploy(bare(env))


def test_a_name_of_another_folder_is_refused(env: Env) -> None:
    env.deployer.deploy(bare(env))
    other = env.settings.generated_tasks_dir / "other_other_q"
    other.mkdir()
    (other / "app_other_q.py").write_text(APP)
    env.folder = other
    request = env.request(task_name="other", queue="other_q")
    request["files"].append({"path": MANIFEST_FILE, "encoding": "utf-8", "content": json.dumps(
        {"queue": "other_q", "tasks": [{"name": "other"}, {"name": "simple_add"}]})})  # fmt: skip
    with pytest.raises(Conflict, match="deployed in task 'simple_add'"):
        env.deployer.deploy({k: v for k, v in request.items() if k not in ("description", "parameters")})


def test_the_switch_moves_what_waited_for_the_old_version(env: Env) -> None:
    first = env.deployer.deploy(bare(env))
    prefix = env.registry.get("simple_add").key_prefix
    old_queue = version_queue("test_queue", first.version)
    env.broker.lpush(prefix + old_queue, json.dumps({"body": "waiting", "properties": {}}))
    env.write("app_test_queue.py", APP + "# v2\n")
    second = env.deployer.deploy(bare(env))
    new_queue = version_queue("test_queue", second.version)
    assert env.broker.llen(prefix + old_queue) == 0 and env.broker.llen(prefix + new_queue) == 1


def test_versions_and_rollback_without_a_build(env: Env) -> None:
    first = env.deployer.deploy(bare(env))
    env.write("app_test_queue.py", APP + "# v2\n")
    second = env.deployer.deploy(bare(env))
    listing = env.deployer.versions("simple_add")
    assert listing.serving == second.version
    assert [(v.version, v.status, v.can_roll_back) for v in listing.versions] == [
        (second.version, "serving", False),
        (first.version, "kept", True),
    ]
    builds, calls = env.runtime.builds, len(env.calls)
    back = env.deployer.rollback("simple_add", first.version[:8])
    assert env.runtime.builds == builds and len(env.calls) == calls + 1  # no build; its tests ran again
    assert back.version == first.version and "rolled back" in back.message
    assert env.registry.get("simple_add").deployment.version == first.version
    assert list(env.runtime.running) == [back.container_id]
    assert env.deployer.rollback("simple_add", first.version).reused
    statuses = {v.version: v.status for v in env.deployer.versions("simple_add").versions}
    assert statuses == {first.version: "serving", second.version: "kept"}


def test_rollback_refuses_what_is_not_kept(env: Env) -> None:
    env.deployer.deploy(bare(env))
    env.write("app_test_queue.py", APP + "# v2\n")
    env.answer = lambda *a: {"state": "SUCCESS", "result": 0}
    with pytest.raises(DeployError):
        env.deployer.deploy(bare(env))
    refused = env.deployer.versions("simple_add").versions[0]
    with pytest.raises(Conflict, match="refused, not kept"):
        env.deployer.rollback("simple_add", refused.version)


def test_a_retry_policy_is_registered_with_the_task(env: Env) -> None:
    env.write(MANIFEST_FILE, manifest({**ADD, "retry": {"on": ["ConnectionError"], "max_retries": 2}}))
    env.deployer.deploy(bare(env))
    assert env.registry.get("simple_add").retry.max_retries == 2


def test_a_gradual_release_splits_calls_until_promoted(env: Env) -> None:
    first = env.deployer.deploy(bare(env))
    env.write("app_test_queue.py", APP + "# v2\n")
    canary = env.deployer.deploy(bare(env, canary_percent=30))
    record = env.registry.get("simple_add")
    assert record.deployment.version == first.version and record.deployment.canary.version == canary.version
    assert len(env.runtime.running) == 2 and "30%" in canary.message
    routes = [record.deployment.route("test_queue", draw)[1] for draw in (0.0, 0.29, 0.3, 0.99)]
    assert routes == [canary.version, canary.version, first.version, first.version]
    listing = env.deployer.versions("simple_add")
    assert listing.canary == canary.version
    assert {v.version: v.traffic_percent for v in listing.versions} == {first.version: 70, canary.version: 30}
    with pytest.raises(Conflict, match="gradual release"):
        env.deployer.deploy(bare(env))
    promoted = env.deployer.promote("simple_add")
    record = env.registry.get("simple_add")
    assert record.deployment.version == canary.version and record.deployment.canary is None
    assert list(env.runtime.running) == [promoted.container_id] and promoted.container_id == canary.container_id


def test_rolling_a_gradual_release_back_keeps_the_serving_version(env: Env) -> None:
    first = env.deployer.deploy(bare(env))
    env.write("app_test_queue.py", APP + "# v2\n")
    canary = env.deployer.deploy(bare(env, canary_percent=50))
    prefix = env.registry.get("simple_add").key_prefix
    env.broker.lpush(prefix + version_queue("test_queue", canary.version), json.dumps({"body": "x", "properties": {}}))
    back = env.deployer.rollback("simple_add", first.version)
    record = env.registry.get("simple_add")
    assert record.deployment.canary is None and record.deployment.version == first.version and back.version
    assert list(env.runtime.running) == [first.container_id]
    assert env.broker.llen(prefix + version_queue("test_queue", first.version)) == 1  # the waiting call moved
    assert {v.version: v.status for v in env.deployer.versions("simple_add").versions}[canary.version] == "kept"


def test_a_gradual_release_needs_the_same_tasks_and_parameters(env: Env) -> None:
    with pytest.raises(InvalidInput, match="needs a version serving"):
        env.deployer.deploy(bare(env, canary_percent=10))
    env.deployer.deploy(bare(env))
    env.write(MANIFEST_FILE, manifest({**ADD, "parameters": [{"name": "b", "type": "int"}]}))
    with pytest.raises(Conflict, match="same tasks with the same parameters"):
        env.deployer.deploy(bare(env, canary_percent=10))


def test_the_previous_version_retires_after_the_deploy_answers(env: Env) -> None:
    later: list = []
    env.deployer.run_later = later.append  # what the deploy leaves to the background
    first = env.deployer.deploy(bare(env))
    env.write("app_test_queue.py", APP + "# v2\n")
    second = env.deployer.deploy(bare(env))
    assert env.registry.get("simple_add").deployment.version == second.version  # the new version serves
    assert set(env.runtime.running) == {first.container_id, second.container_id}  # the old one still finishes
    [status] = env.deployer.deployments()
    assert [(r.version, r.status) for r in status.retiring] == [(first.version, "draining")]
    for action in later:
        action()
    assert list(env.runtime.running) == [second.container_id]
    assert env.deployer.deployments()[0].retiring == []
    assert {v.version: v.status for v in env.deployer.versions("simple_add").versions}[first.version] == "kept"


def test_a_failure_while_retiring_is_reported_not_lost(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    first = env.deployer.deploy(bare(env))
    env.write("app_test_queue.py", APP + "# v2\n")

    def stuck(handle, drain_s=None) -> None:
        raise DeployError("the daemon did not stop the container", step="retire")

    monkeypatch.setattr(env.runtime, "remove", stuck)
    second = env.deployer.deploy(bare(env))
    assert second.worker_status == "RUNNING"
    [status] = env.deployer.deployments()
    [retiring] = status.retiring
    assert retiring.version == first.version and retiring.status == "drain_failed"
    assert "did not stop the container" in retiring.error


def test_a_late_retirement_never_touches_what_a_later_deploy_started(env: Env) -> None:
    later: list = []
    env.deployer.run_later = later.append
    env.deployer.deploy(bare(env))
    for n in (2, 3):
        env.write("app_test_queue.py", APP + f"# v{n}\n")
        last = env.deployer.deploy(bare(env))
    for action in reversed(later):  # the first deploy's retirement runs last
        action()
    assert list(env.runtime.running) == [last.container_id]
    record = env.registry.get("simple_add")
    assert record.deployment.version == last.version
    assert record.deployment.acl_user is None or record.deployment.acl_user in env.deployer.credentials._known()
    assert {v.version: v.status for v in env.deployer.versions("simple_add").versions}[last.version] == "serving"
