"""Confinement decided by the deploy logic (fake runtime, fakeredis with ACLs): a Redis user per deployed version
limited to the task's prefix, the administrator's password kept out of the worker, no network without a reason,
users replaced on redeploy and removed on undeploy, re-created when Redis lost them, and no silent fall back to
unconfined host processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy_mcp import runtimes
from mcs.core.errors import MCSError, ServiceUnavailable
from mcs.core.settings import Settings
from Redis.acl import AclUnavailable, acl_rules, new_task_user, users_of_task
from tests.test_deployer import Env

pytestmark = pytest.mark.unit

ADMIN = "admin-password-of-the-operator"  # pragma: allowlist secret


def make_env(tmp_path: Path, **overrides) -> Env:
    overrides.setdefault("redis_socket", tmp_path / "sock" / "redis.sock")
    return Env(tmp_path, redis_password=ADMIN, **overrides)


def acl_users(env: Env) -> list[str]:
    return users_of_task(env.registry.client.execute_command("ACL", "USERS"), "simple_add")


def test_a_worker_gets_its_own_user_prefix_and_no_network(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    result = env.deployer.deploy(env.request())
    spec = env.runtime.specs[-1]
    dep = env.registry.get("simple_add").deployment
    assert dep.key_prefix == env.settings.metadata_prefix + "t:simple_add:"
    assert spec.environment["MCS_KEY_PREFIX"] == dep.key_prefix
    assert spec.environment["REDIS_USERNAME"] == dep.acl_user and acl_users(env) == [dep.acl_user]
    assert spec.environment["REDIS_PASSWORD"] != ADMIN and ADMIN not in str(spec.environment)
    assert "REDIS_HOST" not in spec.environment and spec.redis_socket == env.settings.redis_socket
    assert spec.network == "none" and dep.network == "none" and result.network == "none"
    assert result.isolation == "container" and result.warnings == []
    assert env.probed_prefixes and set(env.probed_prefixes) == {dep.key_prefix}  # health asked on its channel


def test_the_users_rules_are_its_prefix_only(tmp_path: Path) -> None:
    user = new_task_user("simple_add", "mcs:t:simple_add:")
    rules = acl_rules(user, broker_db=0)
    assert rules[:2] == ["reset", "on"] and "+@all" in rules and rules[-1] == "-@dangerous"
    assert [r for r in rules if r.startswith(("~", "&"))] == [
        "~mcs:t:simple_add:*", "&mcs:t:simple_add:*", "&mcs:t:simple_add:/0.celery.pidbox",
        "&mcs:t:simple_add:/0.celeryev/worker.*",
    ]  # fmt: skip
    assert user.password not in repr(user)
    assert users_of_task([user.username, "mcs-t-simple_add_more-0a1b2c3d"], "simple_add") == [user.username]


def test_egress_is_asked_for_and_recorded(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    result = env.deployer.deploy(env.request(network="egress"))
    assert env.runtime.specs[-1].network == env.settings.worker_network == "host"
    assert result.network == "egress" and env.registry.get("simple_add").deployment.network == "egress"
    with pytest.raises(MCSError, match=r"none .* or egress"):
        env.deployer.deploy(env.request(network="bridge"))


def test_without_a_redis_socket_the_worker_shares_the_host_network_and_is_told(tmp_path: Path) -> None:
    env = make_env(tmp_path, redis_socket=None)
    result = env.deployer.deploy(env.request())
    spec = env.runtime.specs[-1]
    assert spec.network == "host" and spec.environment["REDIS_HOST"] == env.settings.redis_host
    assert result.network == "host" and any("no unix socket" in w for w in result.warnings)


def test_redeploy_replaces_the_user_and_undeploy_removes_it(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.deployer.deploy(env.request())
    first = env.registry.get("simple_add").deployment.acl_user
    env.write("app_test_queue.py", "from celery import Celery\napp = Celery()\n# v2\n")
    env.deployer.deploy(env.request())
    second = env.registry.get("simple_add").deployment.acl_user
    assert second != first and acl_users(env) == [second]
    credentials = env.settings.deployments_dir / ".credentials"
    assert [p.stem for p in credentials.iterdir()] == [second]
    assert oct(credentials.stat().st_mode & 0o777) == "0o700"
    assert oct((credentials / f"{second}.json").stat().st_mode & 0o777) == "0o600"
    removed = env.deployer.undeploy("simple_add").removed
    assert f"redis user {second}" in removed and acl_users(env) == [] and list(credentials.iterdir()) == []


def test_a_failed_deploy_leaves_no_user(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.answering = False
    with pytest.raises(MCSError):
        env.deployer.deploy(env.request())
    assert acl_users(env) == []


def test_users_redis_lost_are_recreated(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.deployer.deploy(env.request())
    user = env.registry.get("simple_add").deployment.acl_user
    before = env.registry.client.execute_command("ACL", "GETUSER", user)
    env.registry.client.execute_command("ACL", "DELUSER", user)  # what a restart without an ACL file does
    assert env.deployer.reconcile_credentials() == [user]
    assert env.registry.client.execute_command("ACL", "GETUSER", user) == before  # the same password and rules
    assert env.deployer.reconcile_credentials() == []


def test_a_redis_without_acls_refuses_the_deploy_unless_shared_credentials_are_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self, user) -> None:
        raise AclUnavailable("Redis refused ACL SETUSER (NOPERM)", service="redis", step="credentials")

    monkeypatch.setattr("Redis.acl.AclUsers.put", refuse)
    env = make_env(tmp_path)
    with pytest.raises(ServiceUnavailable, match="ACL SETUSER"):
        env.deployer.deploy(env.request())
    assert env.registry.find("simple_add") is None and env.runtime.running == {}

    shared = make_env(tmp_path / "shared", allow_shared_credentials=True)
    result = shared.deployer.deploy(shared.request())
    assert shared.runtime.specs[-1].environment["REDIS_PASSWORD"] == ADMIN
    assert any("share MCS's Redis credentials" in w for w in result.warnings)
    listed = shared.deployer.deployments()
    assert any("share MCS's Redis credentials" in w for w in listed[0].warnings)


def test_the_process_runtime_says_it_does_not_isolate(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.runtime.name = "process"
    result = env.deployer.deploy(env.request())
    assert result.isolation == "none" and any("no isolation" in w for w in result.warnings)
    assert env.registry.get("simple_add").deployment.isolation == "none"


def test_auto_never_falls_back_to_host_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy_mcp.docker import client

    monkeypatch.setattr(client, "docker_answers", lambda timeout_s=5.0: False)
    settings = Settings(_env_file=None, worker_runtime="auto", deployments_dir=tmp_path)
    with pytest.raises(ServiceUnavailable, match="never runs task code on this host unconfined"):
        runtimes.select_runtime(settings)
    chosen = runtimes.select_runtime(settings.model_copy(update={"worker_runtime": "process"}))
    assert chosen.name == "process"
