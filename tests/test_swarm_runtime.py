"""SwarmRuntime on a real swarm (a group of replicas, scaling, a killed replica, hardening, logs, removal) and the
pure parts of its service definition and task reading.

``swarm`` tests need a Docker daemon that is a swarm manager and the registry at MCS_SWARM_REGISTRY (see
``tests/swarm_fixtures.py``), a real Redis (the suite's own, through its unix socket) and real Celery workers;
``unit`` tests need nothing. Everything a test makes carries ``mcs.test=1`` and is removed afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery.utils.nodenames import default_nodename, host_format

from deploy_mcp.credentials import TaskCredentials
from deploy_mcp.docker.containers import LABEL_ARTIFACT, LABEL_HOSTNAME
from deploy_mcp.docker.redaction import REDACTED
from deploy_mcp.health import registered_tasks
from deploy_mcp.runtime import (
    LABEL_MANAGED,
    LABEL_TASK,
    Artifact,
    BuildSpec,
    RunSpec,
    WorkerHandle,
    replica_hostname,
)
from deploy_mcp.swarm.registry import registry_answers, split_repository
from deploy_mcp.swarm.runtime import SwarmRuntime
from deploy_mcp.swarm.service_spec import (
    LABEL_SERVICE,
    LAUNCHER,
    PASSWORD_FILE_ENV,
    REPLICA_HOSTNAME,
    SECRET_PATH,
    SERVICE_NAME_MAX,
    Secret,
    celery_hostname,
    drain_s,
    local_tag_of,
    registry_ref,
    service_definition,
    service_name,
)
from deploy_mcp.swarm.tasks import current_tasks, members_of, split_service_logs, task_problems, task_state
from mcs.codegen import generate_task_folder
from mcs.core.celery_app import PrefixedApps, create_celery_app, task_key_prefix, version_queue
from mcs.core.errors import DeployError, InvalidInput, ServiceUnavailable
from mcs.core.settings import Settings
from mcs.core.worker_image import render_dockerfile
from Redis.acl import AclUsers
from Redis.registry import TaskRegistry
from Redis.server import LocalRedisServer
from tests.helpers import TEST_LABEL, make_settings, wait_for
from tests.swarm_fixtures import REGISTRY, swarm_client

__all__ = ["swarm_client"]  # the fixture, imported by name

logger = logging.getLogger(__name__)

TASK = "swt_add"
QUEUE = "swt_q"
PARAMS = [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]
# A careless task that prints its password: logs() must not hand it out.
BODY = (
    'import os\nprint("password in the environment: " + os.environ.get("REDIS_PASSWORD", ""), flush=True)\nreturn a + b'
)
ANSWER_S = 90.0
DNS_LABEL = r"[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*"  # swarmkit's rule for service names


# --- pure parts (unit) -----------------------------------------------------------------------------------------


def spec_for(settings: Settings, **overrides: Any) -> RunSpec:
    version = "ab" * 16
    values: dict[str, Any] = {
        "task_name": TASK, "queue": QUEUE, "version": version,
        "artifact": Artifact("swarm", registry_ref(REGISTRY, TASK, version), "sha256:1"),
        "hostname": f"{TASK}-abababab-0a0b0c@mcs",
        "environment": {
            "REDIS_USERNAME": "u1",
            "REDIS_PASSWORD": "pw-" + "x" * 20,  # pragma: allowlist secret
            "MCS_KEY_PREFIX": "mcs:t:x:",
        },
        "mem_limit_mb": 256, "cpus": 0.5, "pids_limit": 100, "network": "none",
        "extra_labels": {TEST_LABEL: "1"}, "redis_socket": Path("/run/redis/redis.sock"),
        "serve_queue": version_queue(QUEUE, version), "concurrency": 2, "replicas": 3,
    }  # fmt: skip
    values.update(overrides)
    return RunSpec(**values)


def definition(settings: Settings, spec: RunSpec, api_version: str = "1.41") -> dict[str, Any]:
    return service_definition(
        spec, settings, name="svc", image=spec.artifact.ref, secret=Secret("sid", "svc"), network="netid",
        node_id="node1", api_version=api_version,
    )  # fmt: skip


@pytest.mark.unit
def test_service_names_are_valid_unique_and_short(tmp_path: Path) -> None:
    import re

    version = "0123456789abcdef" * 2
    a = service_name("simple_add", version, "h1@mcs")
    assert a.startswith("mcs-simple_add-0123456789ab-") and re.fullmatch(DNS_LABEL, a)
    assert a != service_name("simple_add", version, "h2@mcs")
    long = service_name("t" * 63, version, "h1@mcs")
    assert len(long) == SERVICE_NAME_MAX and re.fullmatch(DNS_LABEL, long) and long.endswith(a[-20:])
    assert service_name("ends_", version, "h@mcs").startswith("mcs-ends_-")
    with pytest.raises(InvalidInput):
        service_name("Bad-Name", version, "h@mcs")


@pytest.mark.unit
def test_registry_refs_and_local_tags() -> None:
    ref = registry_ref("127.0.0.1:5000", TASK, "ab" * 8)
    assert ref == f"127.0.0.1:5000/mcs-{TASK}:{'ab' * 8}"
    assert local_tag_of(ref, "127.0.0.1:5000") == f"mcs-{TASK}:{'ab' * 8}"
    assert local_tag_of(f"mcs-{TASK}:1", "127.0.0.1:5000") is None
    assert local_tag_of("127.0.0.1:5000/other/mcs-x:1", "127.0.0.1:5000") is None
    assert split_repository(ref) == (f"127.0.0.1:5000/mcs-{TASK}", "ab" * 8)
    with pytest.raises(DeployError):
        split_repository("127.0.0.1:5000/mcs-x")


@pytest.mark.unit
def test_celery_expands_the_replica_hostname_to_replica_hostname() -> None:
    """Celery's own expansion of ``--hostname`` (celery/bin/worker.py: host_format(default_nodename(value))) with
    the container hostname Swarm gives slot 2 yields the runtime's name for that slot."""
    group = "simple_add-1a2b3c4d-0f0e0d@mcs"
    assert celery_hostname(group) == "simple_add-1a2b3c4d-0f0e0d-%h@mcs"
    for slot in (1, 2, 17):
        expanded = host_format(default_nodename(celery_hostname(group)), host=f"r{slot}")
        assert expanded == replica_hostname(group, slot) == f"simple_add-1a2b3c4d-0f0e0d-r{slot}@mcs"
    assert REPLICA_HOSTNAME == "r{{.Task.Slot}}"


@pytest.mark.unit
def test_service_definition_is_hardened_and_keeps_the_password_out(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, task_time_limit_s=100, worker_child_mem_mb=64)
    spec = spec_for(settings)
    d = definition(settings, spec)
    template, container = d["task_template"], d["task_template"]["ContainerSpec"]
    assert d["name"] == "svc" and d["mode"] == {"replicated": {"Replicas": 3}}
    assert container["ReadOnly"] is True and container["User"] == "10001:10001" and container["Init"] is True
    assert container["CapabilityDrop"] == ["ALL"] and container["Hostname"] == REPLICA_HOSTNAME
    assert container["StopGracePeriod"] == drain_s(settings) * 10**9 == 105 * 10**9
    assert "Privileges" not in container  # API 1.41: no NoNewPrivileges for services
    env = dict(e.split("=", 1) for e in container["Env"])
    assert "REDIS_PASSWORD" not in env and env[PASSWORD_FILE_ENV] == SECRET_PATH
    assert env["REDIS_SOCKET"] == "/run/mcs-redis/redis.sock" and env["REDIS_USERNAME"] == "u1"
    assert "pw-" not in json.dumps(d, default=str)
    (secret,) = container["Secrets"]
    assert secret["SecretID"] == "sid" and secret["File"] == {  # pragma: allowlist secret
        "Name": "mcs-redis-password", "UID": "10001", "GID": "10001", "Mode": 0o400,
    }  # fmt: skip
    mounts = {m["Target"]: m for m in container["Mounts"]}
    assert mounts["/tmp"]["Type"] == "tmpfs" and mounts["/tmp"]["TmpfsOptions"]["SizeBytes"] == 64 * 1024**2
    assert mounts["/run/mcs-redis"] == {
        "Target": "/run/mcs-redis", "Source": "/run/redis", "Type": "bind", "ReadOnly": True,
    }  # fmt: skip
    command = container["Command"]
    assert command[:4] == ["/opt/venv/bin/python", "-I", "-c", LAUNCHER]
    assert command[4:7] == ["celery", "-A", f"app_{QUEUE}"]
    assert command[command.index("--hostname") + 1] == f"{TASK}-abababab-0a0b0c-%h@mcs"
    assert command[command.index("--concurrency") + 1] == "2" and command[command.index("-Q") + 1] == spec.serve_queue
    limits = template["Resources"]["Limits"]
    assert limits == {"NanoCPUs": 10**9, "MemoryBytes": (256 + 64) * 1024**2, "Pids": 100}  # 0.5 cpu x 2 processes
    assert template["RestartPolicy"]["Condition"] == "any" and template["RestartPolicy"]["MaxAttempts"] == 0
    assert template["Placement"]["Constraints"] == ["node.id==node1"]
    assert template["LogDriver"] == {"Name": "json-file", "Options": {"max-size": "10m", "max-file": "3"}}
    assert template["Networks"] == [{"Target": "netid"}]
    assert d["update_config"]["Order"] == "start-first" and d["endpoint_spec"]["Mode"] == "dnsrr"
    for labels in (d["labels"], container["Labels"]):
        assert labels[TEST_LABEL] == "1" and labels[LABEL_MANAGED] == "1" and labels[LABEL_TASK] == TASK
        assert labels[LABEL_HOSTNAME] == spec.hostname and labels[LABEL_ARTIFACT] == spec.artifact.ref


@pytest.mark.unit
def test_service_definition_variants(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    newer = definition(settings, spec_for(settings), api_version="1.46")["task_template"]["ContainerSpec"]
    assert newer["Privileges"] == {"NoNewPrivileges": True}
    egress = service_definition(
        spec_for(settings, network="host", redis_socket=None, environment={"REDIS_HOST": "127.0.0.1"}), settings,
        name="svc", image="i", secret=None, network=None, node_id=None, api_version="1.41",
    )  # fmt: skip
    container = egress["task_template"]["ContainerSpec"]
    assert egress["task_template"]["Networks"] == [{"Target": "host"}]
    assert "Placement" not in egress["task_template"] and "Secrets" not in container
    assert container["Command"][0] == "celery"  # no password: no launcher
    with pytest.raises(InvalidInput):  # network none needs the service's own network
        service_definition(spec_for(settings), settings, name="svc", image="i", secret=Secret("s", "svc"),
                           network=None, node_id=None, api_version="1.41")  # fmt: skip
    with pytest.raises(InvalidInput):  # a password needs its secret
        service_definition(spec_for(settings), settings, name="svc", image="i", secret=None, network="n",
                           node_id=None, api_version="1.41")  # fmt: skip


@pytest.mark.unit
def test_launcher_reads_the_password_file_then_becomes_the_worker(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("p@ss/w rd\n x")  # pragma: allowlist secret
    show = "import os, json, sys; print(json.dumps([os.environ.get(n) for n in sys.argv[1:]]))"
    env = {"PATH": os.environ["PATH"], PASSWORD_FILE_ENV: str(secret)}
    argv = [sys.executable, "-I", "-c", LAUNCHER, sys.executable, "-c", show, "REDIS_PASSWORD", PASSWORD_FILE_ENV]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == ["p@ss/w rd\n x", None]  # pragma: allowlist secret


def task(slot: int, desired: str, state: str, created: str, task_id: str = "", err: str = "") -> dict[str, Any]:
    return {"ID": task_id or f"t{slot}{created[-3:]}", "Slot": slot, "DesiredState": desired, "NodeID": "n1",
            "CreatedAt": f"2026-12-01T10:00:{created}Z", "Status": {"State": state, "Err": err}}  # fmt: skip


@pytest.mark.unit
def test_members_are_the_slots_current_tasks() -> None:
    tasks = [
        task(1, "running", "running", "05.000000001", "a1"),
        task(1, "shutdown", "failed", "01.000000000", "a0", err="task: non-zero exit (137)"),  # replaced
        task(2, "shutdown", "failed", "06.000000000", "b1", err="task: non-zero exit (137)"),  # just killed:
        task(2, "ready", "ready", "07.000000000", "b2"),  # its replacement waits out the restart delay
        task(3, "shutdown", "shutdown", "02.000000000", "c0"),  # scaled away
        task(4, "remove", "running", "03.000000000", "d0"),  # being scaled away, still draining
        task(5, "running", "preparing", "04.000000000", "e0"),
        task(6, "ready", "ready", "04.000000000", "f0"),  # a replacement whose predecessor is gone from history
    ]
    members = members_of(tasks, "x@mcs", "svc", {"n1": "host1"})
    assert [(m.slot, m.id, m.state, m.hostname) for m in members] == [
        (1, "a1", "RUNNING", "x-r1@mcs"),
        (2, "b1", "EXITED", "x-r2@mcs"),
        (5, "e0", "STARTING", "x-r5@mcs"),
        (6, "f0", "STARTING", "x-r6@mcs"),
    ]
    assert members[0].name == "svc.1.a1" and members[0].node == "host1"
    assert task_problems(tasks) == ["[swarm] slot 2 task b1: failed: task: non-zero exit (137)"]
    assert list(current_tasks([task(0, "running", "running", "01.0")])) == []  # a global service's task: no slot
    assert task_state({"Status": {"State": "weird"}}) == "MISSING"
    for state, expected in [("new", "STARTING"), ("assigned", "STARTING"), ("rejected", "EXITED"),
                            ("orphaned", "EXITED"), ("complete", "EXITED"), ("running", "RUNNING")]:  # fmt: skip
        assert task_state({"Status": {"State": state}}) == expected


@pytest.mark.unit
def test_service_logs_are_split_by_task() -> None:
    ctx = "com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,com.docker.swarm.task.id="
    raw = f"{ctx}t1 hello one\n{ctx}t2 hello two\n{ctx}t1 again one\nplain line\n".encode()
    assert split_service_logs(raw) == {"t1": ["hello one", "again one"], "t2": ["hello two"], "": ["plain line"]}


@pytest.mark.unit
def test_passwords_in_redis_urls_are_redacted() -> None:
    from deploy_mcp.swarm.runtime import _URL_PASSWORD

    text = (
        "redis+socket://u1:s3cr%40t@/run/r.sock?virtual_host=0 "  # pragma: allowlist secret
        "redis://:pw@h:1/0 rediss://u:x@h redis://h:1/0"  # pragma: allowlist secret
    )
    assert _URL_PASSWORD.sub(rf"\1{REDACTED}@", text) == (
        f"redis+socket://u1:{REDACTED}@/run/r.sock?virtual_host=0 redis://:{REDACTED}@h:1/0 rediss://u:{REDACTED}@h "
        "redis://h:1/0"
    )


@pytest.mark.unit
def test_registry_that_does_not_answer_is_named() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert "ConnectionRefused" in (registry_answers(f"127.0.0.1:{port}", timeout_s=1) or "")


class FakeClient:
    """Just enough of docker-py for check(): a daemon that answers, in a given swarm state."""

    def __init__(self, swarm: dict[str, Any]) -> None:
        self.swarm = swarm

    def ping(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        return {"Swarm": self.swarm}


@pytest.mark.unit
def test_check_names_what_is_missing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    for swarm in ({"LocalNodeState": "inactive"}, {"LocalNodeState": "active", "ControlAvailable": False}):
        with pytest.raises(ServiceUnavailable) as info:
            SwarmRuntime(settings, FakeClient(swarm)).check()
        assert "not a swarm manager" in info.value.message and "docker swarm init" in info.value.message
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = make_settings(tmp_path, swarm_registry=f"127.0.0.1:{port}")
    with pytest.raises(ServiceUnavailable) as info:
        SwarmRuntime(down, FakeClient({"LocalNodeState": "active", "ControlAvailable": True})).check()
    assert f"127.0.0.1:{port}" in info.value.message and "MCS_SWARM_REGISTRY" in info.value.message
    assert info.value.details["service"] == "registry"


@pytest.mark.unit
def test_gvisor_needs_runsc_as_the_default_runtime(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    runtime = SwarmRuntime(settings, FakeClient({}))
    with pytest.raises(InvalidInput) as info:
        runtime._check_sandbox(spec_for(settings, sandbox="gvisor"), {"DefaultRuntime": "runc"})
    assert info.value.field == "sandbox"
    runtime._check_sandbox(spec_for(settings, sandbox="gvisor"), {"DefaultRuntime": "runsc"})
    runtime._check_sandbox(spec_for(settings), {"DefaultRuntime": "runc"})


# --- on a real swarm -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image(swarm_client: Any, redis_server: LocalRedisServer, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """The test task's image, built once by the runtime (docker runtime's build, then the push)."""
    root = tmp_path_factory.mktemp("swarm-build")
    settings = make_settings(root, redis_port=redis_server.port, worker_labels={TEST_LABEL: "1"})
    generate_task_folder(settings, task_name=TASK, description="adds", parameters=PARAMS, function_body=BODY,
                         queue=QUEUE, return_type="int")  # fmt: skip
    folder = settings.generated_tasks_dir / f"{TASK}_{QUEUE}"
    version = uuid.uuid4().hex
    runtime = SwarmRuntime(settings, swarm_client)
    spec = BuildSpec(TASK, QUEUE, version, folder, render_dockerfile(settings, QUEUE, False), [], {TEST_LABEL: "1"})
    started = time.monotonic()
    artifact = runtime.build(spec, progress=lambda m: logger.info("build: %s", m))
    logger.info("build + push: %.1f s", time.monotonic() - started)
    assert artifact.runtime == "swarm" and artifact.ref == registry_ref(REGISTRY, TASK, version)
    return artifact


class Env(SimpleNamespace):
    runtime: SwarmRuntime
    settings: Settings
    prefix: str
    password: str
    username: str
    image: Artifact
    apps: PrefixedApps


@pytest.fixture
def env(swarm_client: Any, settings: Settings, image: Artifact) -> Iterator[Env]:
    """A runtime on the test settings (Redis through its socket), and a task user of its own (a real ACL user)."""
    s = settings.model_copy(update={"worker_labels": {TEST_LABEL: "1"}, "task_time_limit_s": 20})
    runtime = SwarmRuntime(s, swarm_client)
    credentials = TaskCredentials(s, AclUsers(s, TaskRegistry(s).client))
    user = credentials.issue(TASK)
    assert user is not None
    yield Env(runtime=runtime, settings=s, prefix=task_key_prefix(s, TASK), password=user.password,
              username=user.username, image=image, apps=PrefixedApps(s))  # fmt: skip
    for handle in runtime.workers(TASK):
        runtime.remove(handle)
    credentials.drop(user.username)


def run_spec(e: Env, replicas: int, **overrides: Any) -> RunSpec:
    s, version = e.settings, e.image.ref.rsplit(":", 1)[1]
    environment = {
        "REDIS_BROKER_DB": str(s.redis_broker_db), "REDIS_BACKEND_DB": str(s.redis_backend_db),
        "MCS_KEY_PREFIX": e.prefix, "REDIS_USERNAME": e.username, "REDIS_PASSWORD": e.password,
    }  # fmt: skip
    values: dict[str, Any] = {
        "task_name": TASK, "queue": QUEUE, "version": version, "artifact": e.image,
        "hostname": f"{TASK}-{version[:8]}-{uuid.uuid4().hex[:6]}@mcs", "environment": environment,
        "mem_limit_mb": 256, "cpus": 0.5, "pids_limit": 128, "network": "none", "extra_labels": {TEST_LABEL: "1"},
        "redis_socket": s.redis_socket, "serve_queue": version_queue(QUEUE, version), "replicas": replicas,
    }  # fmt: skip
    values.update(overrides)
    return RunSpec(**values)


def answers(e: Env, hostname: str) -> bool:
    return registered_tasks(e.apps, hostname, 0.5, key_prefix=e.prefix) is not None


def all_answer(e: Env, group: WorkerHandle, count: int) -> list[str]:
    """Until ``count`` replicas run and each answers a ping under its replica hostname; their hostnames."""

    def check() -> list[str] | None:
        members = e.runtime.members(group)
        running = [m for m in members if m.state == "RUNNING"]
        if len(members) != count or len(running) != count:
            return None
        return [m.hostname for m in running] if all(answers(e, m.hostname) for m in running) else None

    return wait_for(check, ANSWER_S, f"{count} replica(s) of {group.id} answering")


def call(e: Env, spec: RunSpec, a: int = 2, b: int = 3) -> int:
    app = create_celery_app(e.settings, key_prefix=e.prefix)
    return app.send_task(f"mcp_app.{TASK}", kwargs={"a": a, "b": b}, queue=spec.serve_queue).get(timeout=60)


@pytest.mark.swarm
def test_group_answers_scales_replaces_and_is_removed(env: Env, swarm_client: Any) -> None:
    e, runtime = env, env.runtime
    spec = run_spec(e, replicas=2)
    started = time.monotonic()
    group = runtime.start(spec)
    assert group.id == group.name == service_name(TASK, spec.version, spec.hostname)
    assert group.hostname == spec.hostname and group.group == "" and group.slot == 0
    hostnames = all_answer(e, group, 2)
    logger.info("2 replicas answered %.1f s after start", time.monotonic() - started)
    assert sorted(hostnames) == [replica_hostname(spec.hostname, 1), replica_hostname(spec.hostname, 2)]
    assert runtime.state(group) == "RUNNING" and call(e, spec) == 5
    (listed,) = runtime.workers(TASK)
    assert listed.id == group.id and listed.hostname == spec.hostname and listed.artifact_ref == e.image.ref
    first = {m.slot: m.id for m in runtime.members(group)}

    runtime.scale(group, spec, 3)
    all_answer(e, group, 3)
    members = {m.slot: m.id for m in runtime.members(group)}
    assert sorted(members) == [1, 2, 3] and all(members[slot] == first[slot] for slot in first)  # no restart

    runtime.scale(group, spec, 0, drain_s=30)
    assert runtime.members(group) == [] and runtime.state(group) == "MISSING"
    service = swarm_client.api.inspect_service(group.id)  # parked: the service stays, without replicas
    assert service["Spec"]["Mode"]["Replicated"]["Replicas"] == 0
    assert [h.id for h in runtime.workers(TASK)] == [group.id]

    runtime.scale(group, spec, 1)
    (hostname,) = all_answer(e, group, 1)
    (member,) = runtime.members(group)
    assert hostname == replica_hostname(spec.hostname, member.slot)

    # A killed replica: Swarm starts another in the same slot, under the same Celery hostname.
    (container,) = swarm_client.containers.list(filters={"label": f"com.docker.swarm.task.id={member.id}"})
    container.kill()
    seen: set[str] = set()

    def replaced() -> bool:
        (now,) = runtime.members(group) or [None]
        if now is not None:
            seen.add(now.state)
        return now is not None and now.id != member.id and now.slot == member.slot and now.state == "RUNNING"

    wait_for(replaced, 60, "the killed replica's replacement")
    assert all_answer(e, group, 1) == [hostname] and call(e, spec, 40, 2) == 42
    logger.info("states seen while replaced: %s", sorted(seen))

    started = time.monotonic()
    runtime.remove(group, drain_s=30)
    logger.info("remove took %.1f s", time.monotonic() - started)
    assert runtime.workers(TASK) == [] and runtime.members(group) == [] and runtime.state(group) == "MISSING"
    assert swarm_client.api.secrets(filters={"label": f"{LABEL_SERVICE}={group.id}"}) == []
    wait_for(lambda: not swarm_client.networks.list(filters={"label": f"{LABEL_SERVICE}={group.id}"}), 60,
             "the service's network to go")  # fmt: skip
    runtime.remove(group)  # already gone: no error


PROBE = """\
import json, os, subprocess
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
try:
    open("/probe", "w")
    root_writable = True
except OSError:
    root_writable = False
with open("/tmp/probe.sh", "w") as fh:
    fh.write("#!/bin/sh\\necho ran\\n")
os.chmod("/tmp/probe.sh", 0o755)
try:
    subprocess.run(["/tmp/probe.sh"], check=True, capture_output=True)
    tmp_exec = True
except (OSError, subprocess.CalledProcessError):
    tmp_exec = False
routes = [line.split()[1] for line in open("/proc/net/route").read().splitlines()[1:]]
secret = os.stat("/run/secrets/mcs-redis-password")
cmdlines = {p: open(f"/proc/{p}/cmdline", "rb").read() for p in os.listdir("/proc") if p.isdigit()}
workers = [p for p, cmdline in cmdlines.items() if b"/bin/celery" + bytes(1) in cmdline]
worker_env = open(f"/proc/{min(workers, key=int)}/environ", "rb").read().split(bytes(1))
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "cap_eff": status["CapEff"].strip(), "root_writable": root_writable,
    "tmp_exec": tmp_exec, "default_route": "00000000" in routes, "interfaces": sorted(os.listdir("/sys/class/net")),
    "secret": [secret.st_uid, oct(secret.st_mode & 0o777)],
    "exec_has_password": "REDIS_PASSWORD" in os.environ,  # pragma: allowlist secret
    "worker_has_password": any(v.startswith(b"REDIS_PASSWORD=") for v in worker_env),
    "pids_max": open("/sys/fs/cgroup/pids/pids.max").read().strip() if os.path.exists("/sys/fs/cgroup/pids/pids.max")
    else open("/sys/fs/cgroup/pids.max").read().strip(),
}))
"""


@pytest.mark.swarm
def test_service_is_hardened_and_its_password_is_a_secret(env: Env, swarm_client: Any) -> None:
    e, runtime = env, env.runtime
    spec = run_spec(e, replicas=1)
    group = runtime.start(spec)
    all_answer(e, group, 1)
    service = swarm_client.api.inspect_service(group.id)
    text = json.dumps(service)
    assert e.password not in text  # docker service inspect
    container_spec = service["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert container_spec["ReadOnly"] is True and container_spec["User"] == "10001:10001"
    assert container_spec["CapabilityDrop"] == ["ALL"] and container_spec["Init"] is True
    assert container_spec["Image"].startswith(e.image.ref + "@sha256:")  # pinned to what was pushed
    assert not any(v.startswith("REDIS_PASSWORD=") for v in container_spec["Env"])
    limits = service["Spec"]["TaskTemplate"]["Resources"]["Limits"]
    assert limits == {"NanoCPUs": 5 * 10**8, "MemoryBytes": 256 * 1024**2, "Pids": 128}
    for labels in (service["Spec"]["Labels"], container_spec["Labels"]):
        assert labels[TEST_LABEL] == "1" and labels[LABEL_HOSTNAME] == spec.hostname
        assert labels[LABEL_ARTIFACT] == e.image.ref
    (secret,) = swarm_client.api.secrets(filters={"label": f"{LABEL_SERVICE}={group.id}"})
    assert secret["Spec"]["Labels"][TEST_LABEL] == "1" and "Data" not in secret["Spec"]
    (network,) = swarm_client.networks.list(filters={"label": f"{LABEL_SERVICE}={group.id}"})
    assert network.attrs["Internal"] is True and network.attrs["Driver"] == "overlay"

    (member,) = runtime.members(group)
    (container,) = swarm_client.containers.list(filters={"label": f"com.docker.swarm.task.id={member.id}"})
    assert e.password not in json.dumps(container.attrs)  # docker inspect of the replica's container
    host = container.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["PidsLimit"] == 128 and host["Memory"] == 256 * 1024**2
    assert host["CapDrop"] == ["ALL"] and host["Init"] is True
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}}
    code, out = container.exec_run(["/opt/venv/bin/python", "-c", PROBE])
    assert code == 0, out
    probe = json.loads(out.decode().strip().splitlines()[-1])
    logger.info("inside the replica: %s", probe)
    assert probe["uid"] == 10001 and probe["gid"] == 10001 and probe["cap_eff"] == "0000000000000000"
    assert probe["root_writable"] is False and probe["tmp_exec"] is False
    assert probe["default_route"] is False and probe["interfaces"] == ["eth0", "lo"]  # internal: no way out
    assert probe["secret"] == [10001, "0o400"] and probe["pids_max"] == "128"
    # The launcher gave the worker its password; a `docker exec` (the container's configured environment) has none.
    assert probe["worker_has_password"] is True and probe["exec_has_password"] is False


@pytest.mark.swarm
def test_logs_by_replica_with_the_password_redacted(env: Env) -> None:
    e, runtime = env, env.runtime
    spec = run_spec(e, replicas=2)
    group = runtime.start(spec)
    all_answer(e, group, 2)
    assert call(e, spec) == 5

    def printed() -> str | None:
        text = runtime.logs(group, tail_lines=200)
        return text if "password in the environment: " in text else None

    text = wait_for(printed, 30, "the task's print in the logs")
    assert e.password not in text and f"password in the environment: {REDACTED}" in text
    assert "== slot 1 " in text and "== slot 2 " in text and "ready." in text  # Celery's banner, per replica
    assert len(runtime.logs(group, tail_lines=5)) < len(text)
    fresh = SwarmRuntime(e.settings, runtime.client)  # another process (a restarted deploy worker): it finds the
    again = fresh.logs(group, tail_lines=200)  # password where the deploy worker keeps it, not in Docker's secret
    assert e.password not in again and f"password in the environment: {REDACTED}" in again


@pytest.mark.swarm
def test_start_failure_and_foreign_objects(env: Env, swarm_client: Any) -> None:
    e, runtime = env, env.runtime
    with pytest.raises(InvalidInput):  # no gVisor per service
        runtime.start(run_spec(e, 1, sandbox="gvisor"))
    with pytest.raises(InvalidInput):
        runtime.start(run_spec(e, 1, hostname="bad%hostname@mcs"))
    assert runtime.workers(TASK) == []
    assert swarm_client.api.secrets(filters={"label": [f"{LABEL_MANAGED}=1", TEST_LABEL]}) == []

    # An image without mcs.managed=1 under a registry ref of ours is never removed.
    foreign = f"{REGISTRY}/mcs-foreign:{uuid.uuid4().hex[:12]}"
    base = swarm_client.images.get(e.settings.worker_base_image)
    base.tag(foreign)
    try:
        with pytest.raises(DeployError) as info:
            runtime.remove_artifact(foreign)
        assert "not an MCS worker image" in info.value.message
        assert foreign in swarm_client.images.get(base.id).tags
    finally:
        swarm_client.images.remove(foreign)  # the tag only


@pytest.mark.swarm
def test_remove_artifact_removes_the_local_tags(env: Env, swarm_client: Any) -> None:
    """Last in this file: it removes the module's image (the registry keeps its copy, so a start still works)."""
    e, runtime = env, env.runtime
    group = runtime.start(run_spec(e, 1))
    with pytest.raises(DeployError) as info:  # in use by a service
        runtime.remove_artifact(e.image.ref)
    assert group.id in info.value.message
    runtime.remove(group)
    runtime.remove_artifact(e.image.ref)
    local, repository = local_tag_of(e.image.ref, REGISTRY), e.image.ref.rsplit(":", 1)[0]
    for image in swarm_client.images.list():
        digests = image.attrs.get("RepoDigests") or []
        assert e.image.ref not in image.tags and local not in image.tags
        assert not any(d.startswith(repository + "@") for d in digests), (image.id, image.tags, digests)  # nor pulled
    runtime.remove_artifact(e.image.ref)  # already gone: no error
    again = runtime.start(run_spec(e, 1))  # the node pulls it back from the registry
    all_answer(e, again, 1)
