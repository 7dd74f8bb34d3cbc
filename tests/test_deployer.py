"""Deploy logic on a fake runtime and fakeredis: versions, idempotence, blue-green, failure cleanup, locking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis
import pytest

from deploy_mcp.deployer import Deployer
from mcs.core.bundle import read_folder
from mcs.core.errors import Conflict, DeployError, InvalidInput, NotFound, ServiceUnavailable
from mcs.core.settings import Settings
from Redis.lock import redis_lock
from Redis.registry import TaskRegistry
from tests.fake_runtime import FakeRuntime
from tests.helpers import make_settings

pytestmark = pytest.mark.unit

APP = "from celery import Celery\napp = Celery()\n"


class Env:
    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.settings: Settings = make_settings(tmp_path, health_timeout_s=1, **overrides)
        self.registry = TaskRegistry(self.settings, client=fakeredis.FakeRedis(decode_responses=True))
        self.runtime = FakeRuntime()
        self.answering = True
        self.probed_prefixes: list[str] = []
        self.registers = ["mcp_app.simple_add"]
        self.broker = fakeredis.FakeRedis(decode_responses=True)
        self.calls: list[tuple[str, str, list, dict]] = []  # (queue, task, args, kwargs) the test cases sent
        self.answer = lambda task, args, kwargs: {"state": "SUCCESS", "result": sum(args) + sum(kwargs.values())}
        self.deployer = Deployer(
            self.settings, self.registry, self.runtime, self.probe, broker=self.broker, caller=self.call
        )
        self.deployer.run_later = lambda action: action()  # the previous version retires before deploy returns
        self.folder = self.settings.generated_tasks_dir / "simple_add_test_queue"
        self.folder.mkdir(parents=True)
        self.write("app_test_queue.py", APP)

    def probe(self, hostname: str, timeout_s: float, key_prefix: str = "") -> list[str] | None:
        self.probed_prefixes.append(key_prefix)
        return self.registers if self.answering else None

    def call(self, key_prefix: str, queue: str, task: str, args: list, kwargs: dict, timeout_s: float) -> dict:
        self.calls.append((queue, task, args, kwargs))
        return self.answer(task, args, kwargs)

    def write(self, name: str, text: str) -> None:
        (self.folder / name).write_text(text)

    def request(self, **overrides: Any) -> dict[str, Any]:
        request = {
            "task_name": "simple_add",
            "queue": "test_queue",
            "description": "adds",
            "parameters": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}],
            "return_type": "int",
            "category": "arithmetic",
            "files": [f.model_dump() for f in read_folder(self.settings, self.folder)],
        }
        request.update(overrides)
        return request

    def versions(self) -> list[str]:
        task_dir = self.settings.deployments_dir / "simple_add_test_queue"
        return sorted(p.name for p in task_dir.iterdir()) if task_dir.exists() else []


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_first_deploy_registers_with_deployment_details(env: Env) -> None:
    steps: list[str] = []
    result = env.deployer.deploy(env.request(), progress=steps.append)
    assert result.worker_status == "RUNNING" and not result.reused and result.dockerfile == "rendered"
    record = env.registry.get("simple_add")
    assert record.return_type == "int" and record.category == "arithmetic"
    assert record.deployment.version == result.version and record.deployment.container_id == result.container_id
    assert record.deployment.runtime == "fake" and record.deployment.deployed_at is not None
    assert env.versions() == [result.version]
    assert (env.settings.deployments_dir / "simple_add_test_queue" / result.version / "app_test_queue.py").exists()
    assert {"stage", "build", "start", "health", "register", "total"} <= set(result.timings_ms)
    assert any("waiting for the worker" in s for s in steps)
    assert not list((env.settings.deployments_dir / ".staging").iterdir())


def test_unchanged_redeploy_rebuilds_and_restarts_nothing(env: Env) -> None:
    first = env.deployer.deploy(env.request())
    again = env.deployer.deploy(env.request(description="adds two numbers"))
    assert again.reused and again.container_id == first.container_id and again.version == first.version
    assert env.runtime.builds == 1 and len(env.runtime.running) == 1
    assert env.registry.get("simple_add").description == "adds two numbers"


def test_changed_redeploy_is_blue_green(env: Env) -> None:
    first = env.deployer.deploy(env.request())
    env.write("app_test_queue.py", APP + "# v2\n")
    second = env.deployer.deploy(env.request())
    assert second.version != first.version and second.container_id != first.container_id
    assert list(env.runtime.running) == [second.container_id]  # the old worker is gone
    assert env.registry.get("simple_add").deployment.version == second.version


def test_failed_health_check_keeps_the_old_version_and_leaves_nothing(env: Env) -> None:
    first = env.deployer.deploy(env.request())
    env.write("app_test_queue.py", APP + "import nope\n")
    env.runtime.crash_on_start = True
    with pytest.raises(DeployError) as info:
        env.deployer.deploy(env.request())
    assert info.value.details["step"] == "health"
    assert "No module named 'nope'" in info.value.details["log_tail"]
    assert "keeps serving" in info.value.message
    assert list(env.runtime.running) == [first.container_id]
    assert list(env.runtime.artifacts) == [f"mcs-simple_add:{first.version}"]
    assert env.versions() == [first.version]
    assert env.registry.get("simple_add").deployment.version == first.version


def test_worker_that_never_answers_fails_the_deploy(env: Env) -> None:
    env.answering = False
    with pytest.raises(DeployError, match="did not answer within"):
        env.deployer.deploy(env.request())
    assert env.runtime.running == {} and env.runtime.artifacts == {} and env.versions() == []
    assert env.registry.find("simple_add") is None


def test_build_failure_carries_the_build_log(env: Env) -> None:
    env.runtime.fail_build = True
    with pytest.raises(DeployError) as info:
        env.deployer.deploy(env.request())
    assert info.value.details["step"] == "build" and "RUN false" in info.value.details["log_tail"]
    assert env.versions() == []


def test_old_versions_are_pruned(tmp_path: Path) -> None:
    env = Env(tmp_path, keep_versions=2)
    seen = []
    for i in range(4):
        env.write("app_test_queue.py", APP + f"# v{i}\n")
        seen.append(env.deployer.deploy(env.request()).version)
    assert set(env.versions()) == set(seen[-2:])
    assert set(env.runtime.artifacts) == {f"mcs-simple_add:{v}" for v in seen[-2:]}


def test_a_second_deploy_of_the_same_task_is_told_it_is_in_progress(env: Env) -> None:
    key = env.registry.keys.deploy_lock("simple_add")
    with redis_lock(env.registry.client, key, 60, what="test"), pytest.raises(Conflict, match="in progress"):
        env.deployer.deploy(env.request())


def test_missing_app_file_is_explained(env: Env) -> None:
    (env.folder / "app_test_queue.py").rename(env.folder / "app_other.py")
    with pytest.raises(InvalidInput, match=r"must hold app_test_queue\.py"):
        env.deployer.deploy(env.request())


def test_shipped_dockerfile_is_ignored_unless_allowed(tmp_path: Path) -> None:
    for allowed, expected in ((False, "rendered"), (True, "custom")):
        env = Env(tmp_path / str(allowed), allow_custom_dockerfile=allowed)
        env.write("Dockerfile", "FROM scratch\n")
        result = env.deployer.deploy(env.request())
        assert result.dockerfile == expected
        spec = env.runtime.artifacts[f"mcs-simple_add:{result.version}"]
        assert (spec.dockerfile == "FROM scratch\n") is allowed


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"task_name": "../x"}, "task_name"),
        ({"queue": "deploy"}, "reserved"),
        ({"files": [{"path": "../evil.py", "encoding": "utf-8", "content": ""}]}, "relative path"),
        ({"files": []}, "non-empty"),
    ],
)
def test_worker_side_validation(env: Env, overrides: dict, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        env.deployer.deploy(env.request(**overrides))
    assert not env.settings.deployments_dir.exists() or env.versions() == []


def test_requirements_are_checked_on_the_worker(env: Env) -> None:
    env.write("requirements.txt", "-e git+https://example.invalid/x\n")
    with pytest.raises(InvalidInput, match="pip options"):
        env.deployer.deploy(env.request())


def test_undeploy_removes_everything(env: Env) -> None:
    env.deployer.deploy(env.request())
    env.broker.lpush("test_queue", "pending message")
    env.broker.sadd("_kombu.binding.test_queue", "binding")
    result = env.deployer.undeploy("simple_add")
    assert "registry entry" in result.removed
    assert env.runtime.running == {} and env.runtime.artifacts == {}
    assert not (env.settings.deployments_dir / "simple_add_test_queue").exists()
    assert env.registry.find("simple_add") is None
    assert "queue test_queue" in result.removed and env.broker.keys("*") == []
    with pytest.raises(NotFound):
        env.deployer.undeploy("simple_add")


def test_deployments_and_logs(env: Env) -> None:
    result = env.deployer.deploy(env.request())
    [status] = env.deployer.deployments()
    assert status.worker_status == "RUNNING" and status.version == result.version
    logs = env.deployer.task_logs("simple_add", 10)
    assert "ready" in logs.logs and logs.container_id == result.container_id
    env.runtime.running.clear()
    assert env.deployer.deployments()[0].worker_status == "MISSING"


def test_a_queue_served_by_another_task_is_refused(env: Env) -> None:
    env.deployer.deploy(env.request())
    with pytest.raises(Conflict, match="served by task 'simple_add'"):
        env.deployer.deploy(env.request(task_name="other_task"))
    assert [h.task_name for h in env.runtime.running.values()] == ["simple_add"]


def test_worker_that_does_not_define_the_task_fails_the_deploy(env: Env) -> None:
    env.registers = ["mcp_app.something_else"]
    with pytest.raises(DeployError, match=r"does not define mcp_app\.simple_add"):
        env.deployer.deploy(env.request())
    assert env.runtime.running == {} and env.versions() == []


def test_a_new_build_recipe_is_a_new_version(tmp_path: Path) -> None:
    env = Env(tmp_path)
    first = env.deployer.deploy(env.request())
    env.deployer.settings = env.settings.model_copy(update={"worker_base_image": "mcs-base:newer"})
    second = env.deployer.deploy(env.request())
    assert second.version != first.version and not second.reused


def test_failure_to_register_removes_the_new_worker(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    first = env.deployer.deploy(env.request())
    env.write("app_test_queue.py", APP + "# v2\n")

    def broken(*args, **kwargs):
        raise ServiceUnavailable("Redis at 127.0.0.1:6379 is not reachable")

    monkeypatch.setattr(env.deployer, "register", broken)
    with pytest.raises(ServiceUnavailable):
        env.deployer.deploy(env.request())
    assert list(env.runtime.running) == [first.container_id] and env.versions() == [first.version]


def test_stale_staging_folders_are_swept(env: Env) -> None:
    import os

    stale = env.settings.deployments_dir / ".staging" / "simple_add-dead"
    stale.mkdir(parents=True)
    old = stale.stat().st_mtime - env.settings.deploy_lock_ttl_s - 10
    os.utime(stale, (old, old))
    env.deployer.deploy(env.request())
    assert not stale.exists()
