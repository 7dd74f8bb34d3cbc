"""DockerRuntime end to end (build, hardened start, Celery round trip, state, logs, removal) and its pure parts.

``docker`` tests need a daemon and the package index (requirements are resolved from PyPI); ``unit`` tests need
nothing. Every container and image a test makes carries the label ``mcs.test=1`` and is removed in ``finally``.
Timings are logged (``-o log_cli=true --log-cli-level=INFO`` shows them).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pprint
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest

from deploy_mcp.docker.containers import (
    EXITED,
    LABEL_ARTIFACT,
    LABEL_HOSTNAME,
    MISSING,
    RESTARTING,
    RUNNING,
    container_name,
    image_tag,
    is_mcs_worker,
    state_from_attrs,
)
from deploy_mcp.docker.redaction import REDACTED, redact, secret_values
from deploy_mcp.docker.runtime import LOGS_MAX_CHARS, TMPFS, DockerRuntime
from deploy_mcp.runtime import (
    LABEL_MANAGED,
    LABEL_QUEUE,
    LABEL_TASK,
    LABEL_VERSION,
    Artifact,
    BuildSpec,
    RunSpec,
    WorkerHandle,
)
from mcs.core.celery_app import celery_config, create_celery_app
from mcs.core.errors import DeployError, InvalidInput, ServiceUnavailable
from mcs.core.settings import Settings
from mcs.core.worker_image import worker_command
from Redis.server import LocalRedisServer
from tests.helpers import TEST_LABEL, Tracker, make_settings

logger = logging.getLogger(__name__)

TASK = "rt_add"
QUEUE = "rt_queue"
BASE_IMAGE = Settings.model_fields["worker_base_image"].default
PING_DEADLINE_S = 60.0

APP_TEMPLATE = '''\
"""Celery worker module of the runtime test task (configured from environment variables)."""

import os
from urllib.parse import quote

from celery import Celery


def _url(db_variable, default_db):
    password = os.environ.get("REDIS_PASSWORD")
    auth = ":" + quote(password, safe="") + "@" if password else ""
    host = os.environ.get("REDIS_HOST", "127.0.0.1")
    port = int(os.environ.get("REDIS_PORT", "6379"))
    return "redis://" + auth + host + ":" + str(port) + "/" + str(int(os.environ.get(db_variable, default_db)))


celery_app = Celery("mcp_app", broker=_url("REDIS_BROKER_DB", "0"), backend=_url("REDIS_BACKEND_DB", "1"))
celery_app.conf.update(__CONFIG__)


@celery_app.task(name="mcp_app.rt_add", queue="rt_queue")
def rt_add(a, b):
    return a + b


@celery_app.task(name="mcp_app.rt_leak", queue="rt_queue")
def rt_leak():
    # A careless task printing the password: the runtime's logs() must not hand it out.
    print("password in the environment: " + str(os.environ.get("REDIS_PASSWORD")), flush=True)
    return len(os.environ.get("REDIS_PASSWORD") or "")
'''

CRASHING_APP = 'raise RuntimeError("rt_queue app refuses to import")\n'

PIP_INSTALL = (
    'RUN ["/opt/venv/bin/pip", "install", "--no-index", "--find-links", "/app/wheelhouse", '
    '"-r", "/app/requirements.txt"]'
)

# Runs inside the built image: the wheelhouse must be complete for the image's own interpreter. `--target`
# ignores what the base image has installed already (async-timeout is there), so a missing wheel fails here.
WHEELHOUSE_PROBE = """\
import json, os, subprocess, sys
import redis, six
out = subprocess.run(
    [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", "/app/wheelhouse", "--no-cache-dir",
     "--disable-pip-version-check", "--target", "/tmp/t", "-r", "/app/requirements.txt"],
    capture_output=True, text=True,
)
print(json.dumps({
    "python": sys.version.split()[0],
    "six": six.__version__,
    "redis": redis.__version__,
    "wheels": sorted(os.listdir("/app/wheelhouse")),
    "target_rc": out.returncode,
    "target_out": (out.stdout + out.stderr)[-1500:],
    "target_dirs": sorted(os.listdir("/tmp/t")) if os.path.isdir("/tmp/t") else [],
}))
"""

# Runs inside the hardened worker container (docker exec): what the process can actually do.
HARDENING_PROBE = """\
import json, os, subprocess
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
try:
    open("/probe", "w")
    root_writable = True
except OSError:
    root_writable = False
script = "/tmp/probe.sh"
with open(script, "w") as fh:
    fh.write("#!/bin/sh\\necho ran\\n")
os.chmod(script, 0o755)
try:
    subprocess.run([script], check=True, capture_output=True)
    tmp_exec = True
except (OSError, subprocess.CalledProcessError):
    tmp_exec = False
print(json.dumps({
    "uid": os.getuid(),
    "gid": os.getgid(),
    "cap_eff": status["CapEff"].strip(),
    "cap_bnd": status["CapBnd"].strip(),
    "no_new_privs": status.get("NoNewPrivs", "").strip(),
    "root_writable": root_writable,
    "tmp_exec": tmp_exec,
    "cwd": os.getcwd(),
    "docker_sock": os.path.exists("/var/run/docker.sock"),
}))
"""


# --- helpers -------------------------------------------------------------------------------------------------


def render_app(settings: Settings) -> str:
    """The worker module with ``celery_config(settings)`` rendered as a literal (as generated workers do)."""
    return APP_TEMPLATE.replace("__CONFIG__", pprint.pformat(celery_config(settings), indent=4, width=100))


def render_dockerfile(*, requirements: bool, extra: str = "") -> str:
    lines = [f"FROM {BASE_IMAGE}", "WORKDIR /app", "COPY . /app"]
    if requirements:
        lines.append(PIP_INSTALL)
    if extra:
        lines.append(extra)
    lines += [
        "USER 10001:10001",
        f'CMD ["celery", "-A", "app_{QUEUE}", "worker", "-Q", "{QUEUE}", "--loglevel", "INFO"]',
    ]
    return "\n".join(lines) + "\n"


def make_task(
    root: Path,
    settings: Settings,
    *,
    requirements: tuple[str, ...] = (),
    app_text: str | None = None,
    dockerfile: str | None = None,
) -> BuildSpec:
    """A deployment folder ``<root>/rt_add_rt_queue/<version>`` and its BuildSpec (a fresh version each time)."""
    version = uuid.uuid4().hex
    folder = root / f"{TASK}_{QUEUE}" / version
    folder.mkdir(parents=True)
    dockerfile = dockerfile or render_dockerfile(requirements=bool(requirements))
    (folder / f"app_{QUEUE}.py").write_text(app_text if app_text is not None else render_app(settings))
    (folder / "VERSION").write_text(version + "\n")  # makes every test's layers new (no build cache hits)
    (folder / "Dockerfile").write_text(dockerfile)
    if requirements:
        (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return BuildSpec(
        task_name=TASK,
        queue=QUEUE,
        version=version,
        folder=folder,
        dockerfile=dockerfile,
        requirements=list(requirements),
        extra_labels={TEST_LABEL: "1"},
    )


def make_run_spec(spec: BuildSpec, artifact: Artifact, settings: Settings, **overrides: Any) -> RunSpec:
    environment = {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(settings.redis_port),
        "REDIS_BROKER_DB": str(settings.redis_broker_db),
        "REDIS_BACKEND_DB": str(settings.redis_backend_db),
    }
    if settings.redis_password is not None:
        environment["REDIS_PASSWORD"] = settings.redis_password.get_secret_value()
    values: dict[str, Any] = {
        "task_name": spec.task_name,
        "queue": spec.queue,
        "version": spec.version,
        "artifact": artifact,
        "hostname": f"{spec.task_name}-{spec.version[:12]}@mcs",
        "environment": environment,
        "mem_limit_mb": settings.worker_mem_limit_mb,
        "cpus": settings.worker_cpus,
        "pids_limit": settings.worker_pids_limit,
        "network": "host",
        "extra_labels": {TEST_LABEL: "1"},
    }
    values.update(overrides)
    return RunSpec(**values)


def wait_for_ping(settings: Settings, runtime: DockerRuntime, handle: WorkerHandle) -> float:
    """Ping the worker's node name until it answers; returns the seconds it took. No fixed sleeps."""
    app = create_celery_app(settings)
    started = time.monotonic()
    deadline = started + PING_DEADLINE_S
    try:
        while time.monotonic() < deadline:
            replies = app.control.ping(destination=[handle.hostname], timeout=0.5)
            if any(handle.hostname in reply for reply in replies):
                return time.monotonic() - started
            if runtime.state(handle) in (EXITED, MISSING):
                pytest.fail(f"worker stopped before answering a ping:\n{runtime.logs(handle, 80)}")
        pytest.fail(f"worker did not answer a ping within {PING_DEADLINE_S} s:\n{runtime.logs(handle, 80)}")
    finally:
        app.close()


@pytest.fixture(scope="module")
def wheel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wheel-cache")


@pytest.fixture
def runtime(docker_client, settings: Settings, base_ready: str, wheel_cache: Path) -> DockerRuntime:
    return DockerRuntime(settings, client=docker_client, wheel_cache_dir=wheel_cache)


def _folder_listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- docker: the whole life of one worker --------------------------------------------------------------------


@pytest.mark.docker
def test_build_start_call_inspect_reuse_remove(
    runtime: DockerRuntime, docker_client, settings: Settings, tracker: Tracker, tmp_path: Path
) -> None:
    spec = make_task(tmp_path, settings)
    tag = image_tag(spec.task_name, spec.version)
    tracker.images.append(tag)
    before = _folder_listing(spec.folder)
    steps: list[str] = []

    started = time.monotonic()
    artifact = runtime.build(spec, progress=steps.append)
    build_s = time.monotonic() - started
    logger.info("image build without requirements: %.2f s", build_s)
    assert artifact == Artifact(runtime="docker", ref=tag, id=artifact.id, reused=False, build_log_tail=ANY_STR)
    assert any(step.startswith("Step ") for step in steps)
    # The labels come in one LABEL step the deploy worker appends (the daemon would make one step per label).
    assert [step.split(" : ", 1)[1].split()[0] for step in steps if step.startswith("Step ")][-1:] == ["LABEL"]
    assert sum(" : LABEL " in step for step in steps) == 1, steps
    assert _folder_listing(spec.folder) == before, "the deployment folder must stay as it was"
    image = docker_client.images.get(tag)
    assert image.id == artifact.id
    for key, value in spec.labels.items():
        assert image.labels[key] == value

    run_spec = make_run_spec(spec, artifact, settings)
    started = time.monotonic()
    handle = runtime.start(run_spec)
    tracker.containers.append(handle.id)
    wait_for_ping(settings, runtime, handle)
    first_ping_s = time.monotonic() - started
    logger.info("container start to first ping answer: %.2f s", first_ping_s)
    assert handle.runtime == "docker"
    assert handle.name == container_name(spec.task_name, spec.version, run_spec.hostname)
    assert (handle.task_name, handle.queue, handle.version) == (TASK, QUEUE, spec.version)
    assert handle.hostname == run_spec.hostname
    assert handle.artifact_ref == tag
    assert runtime.state(handle) == RUNNING

    app = create_celery_app(settings)
    try:
        started = time.monotonic()
        assert app.send_task("mcp_app.rt_add", args=[10, 20], queue=QUEUE).get(timeout=30) == 30
        logger.info("first send_task round trip: %.3f s", time.monotonic() - started)
    finally:
        app.close()

    # The same start again is refused: the running worker is never removed to make room.
    with pytest.raises(DeployError, match="exists already"):
        runtime.start(run_spec)
    assert runtime.state(handle) == RUNNING
    assert [w.id for w in runtime.workers(TASK)] == [handle.id]
    assert handle.id in [w.id for w in runtime.workers()]

    container = docker_client.containers.get(handle.id)
    assert_hardened(container.attrs, run_spec, settings)
    probe = container.exec_run(["python", "-c", HARDENING_PROBE])
    assert probe.exit_code == 0, probe.output
    seen = json.loads(probe.output.decode().strip().splitlines()[-1])
    assert (seen["uid"], seen["gid"]) == (10001, 10001)
    assert int(seen["cap_eff"], 16) == 0
    assert int(seen["cap_bnd"], 16) == 0
    assert seen["no_new_privs"] == "1"
    assert seen["root_writable"] is False
    assert seen["tmp_exec"] is False
    assert seen["cwd"] == "/app"
    assert seen["docker_sock"] is False

    logs = runtime.logs(handle, tail_lines=200)
    assert "ready" in logs
    assert len(runtime.logs(handle, tail_lines=10**9)) <= LOGS_MAX_CHARS + 10

    started = time.monotonic()
    again = runtime.build(spec)
    logger.info("second build of the same version (reuse): %.3f s", time.monotonic() - started)
    assert again.reused is True
    assert again.id == artifact.id

    runtime.remove(handle)
    assert runtime.state(handle) == MISSING
    runtime.remove(handle)  # already gone: no error
    assert runtime.workers(TASK) == []
    assert runtime.logs(handle) == ""

    runtime.remove_artifact(tag)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tag)
    runtime.remove_artifact(tag)  # already gone: no error


class _AnyStr:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str)


ANY_STR: Any = _AnyStr()


def assert_hardened(attrs: dict[str, Any], run_spec: RunSpec, settings: Settings) -> None:
    """Every row of the hardening table in security-testing.md, read from `docker inspect`."""
    host = attrs["HostConfig"]
    config = attrs["Config"]
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"]
    assert not host.get("CapAdd")
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == TMPFS
    assert "noexec" in host["Tmpfs"]["/tmp"] and "nosuid" in host["Tmpfs"]["/tmp"]
    assert config["User"] == "10001:10001"
    memory = settings.worker_mem_limit_mb * 1024 * 1024
    assert host["Memory"] == memory
    assert host["MemorySwap"] == memory
    assert host["NanoCpus"] == round(settings.worker_cpus * 1e9)
    assert host["PidsLimit"] == settings.worker_pids_limit > 0
    assert attrs["Mounts"] == []
    assert not host.get("Binds")
    assert not host.get("Mounts")
    assert not host.get("VolumesFrom")
    assert not host.get("Devices")
    assert "docker.sock" not in json.dumps(attrs)
    for mode in ("PidMode", "IpcMode", "UtsMode", "UsernsMode", "CgroupnsMode"):
        assert not str(host.get(mode) or "").startswith("host"), (mode, host.get(mode))
    assert host["CgroupnsMode"] == "private"
    assert not [opt for opt in host["SecurityOpt"] if "unconfined" in opt]
    assert host["NetworkMode"] == run_spec.network
    labels = config["Labels"]
    assert labels[LABEL_MANAGED] == "1"
    assert labels[LABEL_TASK] == run_spec.task_name
    assert labels[LABEL_QUEUE] == run_spec.queue
    assert labels[LABEL_VERSION] == run_spec.version
    assert labels[LABEL_HOSTNAME] == run_spec.hostname
    assert labels[LABEL_ARTIFACT] == run_spec.artifact.ref
    assert labels[TEST_LABEL] == "1"
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
    assert host["Init"] is True
    assert config["WorkingDir"] == "/app"
    assert config["Cmd"] == worker_command(run_spec.queue, run_spec.hostname)


# --- docker: builds that fail, requirements, crash loops, the password ---------------------------------------


@pytest.mark.docker
def test_failing_build_raises_with_log_tail_and_leaves_nothing(
    runtime: DockerRuntime, docker_client, settings: Settings, tracker: Tracker, tmp_path: Path
) -> None:
    spec = make_task(tmp_path, settings, dockerfile=render_dockerfile(requirements=False, extra='RUN ["/bin/false"]'))
    tag = image_tag(spec.task_name, spec.version)
    tracker.images.append(tag)
    base_id = docker_client.images.get(BASE_IMAGE).id

    with pytest.raises(DeployError) as caught:
        runtime.build(spec)
    error = caught.value
    assert error.details["step"] == "build"
    tail = error.details["build_log_tail"]
    assert "/bin/false" in tail
    assert "non-zero code" in tail
    assert len(tail.splitlines()) <= 60

    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tag)
    # The step images and step containers this build made are gone; the base image is not touched.
    step_images, cached = [], False
    for line in tail.splitlines():  # a step served from the layer cache names an image that existed before
        if line.startswith(" ---> Using cache"):
            cached = True
        elif line.startswith(" ---> ") and "Running" not in line:
            if not cached:
                step_images.append(line.split()[-1])
            cached = False
    step_containers = [line.split()[-1] for line in tail.splitlines() if line.startswith(" ---> Running in ")]
    assert step_images, tail  # WORKDIR and COPY made layers before RUN failed
    for short in step_images:
        if base_id.split(":")[-1].startswith(short):
            continue
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(short)
    for short in step_containers:
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(short)
    leftovers = docker_client.images.list(
        all=True, filters={"dangling": True, "label": [f"{LABEL_VERSION}={spec.version}"]}
    )
    assert leftovers == []
    docker_client.images.get(BASE_IMAGE)


@pytest.mark.docker
def test_requirements_install_offline_for_the_image_interpreter(
    runtime: DockerRuntime, docker_client, settings: Settings, tracker: Tracker, tmp_path: Path
) -> None:
    # six 1.16.0 differs from the base image's 1.17.0, so the import proves the wheelhouse install; redis 5.0.8
    # needs `async-timeout; python_full_version < "3.11.3"`, true for the image's 3.11.2, false for the host.
    spec = make_task(tmp_path, settings, requirements=("six==1.16.0", "redis==5.0.8"))
    tag = image_tag(spec.task_name, spec.version)
    tracker.images.append(tag)
    steps: list[str] = []

    started = time.monotonic()
    artifact = runtime.build(spec, progress=steps.append)
    logger.info("image build with requirements (wheelhouse included): %.2f s", time.monotonic() - started)
    assert not artifact.reused
    assert any("wheelhouse" in step for step in steps)
    assert not (spec.folder / "wheelhouse").exists(), "the wheelhouse goes into the build context, not the folder"

    probe = docker_client.containers.run(
        tag,
        command=["python", "-c", WHEELHOUSE_PROBE],
        detach=True,
        network_mode="none",
        user="10001:10001",
        read_only=True,
        tmpfs=dict(TMPFS),
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        labels={TEST_LABEL: "1"},
    )
    tracker.containers.append(probe.id)
    assert runtime.workers(TASK) == [], "a container run from a worker image is not a worker"
    assert probe.wait(timeout=120)["StatusCode"] == 0, probe.logs().decode()
    seen = json.loads(probe.logs(stdout=True, stderr=False).decode().strip().splitlines()[-1])
    assert seen["python"] == "3.11.2"
    assert seen["six"] == "1.16.0"
    assert seen["redis"] == "5.0.8"
    assert any(name.startswith("async_timeout-") for name in seen["wheels"]), seen["wheels"]
    assert seen["target_rc"] == 0, seen["target_out"]
    assert any(name.startswith("async_timeout") for name in seen["target_dirs"]), seen["target_dirs"]

    started = time.monotonic()
    assert runtime.build(spec).reused
    logger.info("second build with requirements (reuse): %.3f s", time.monotonic() - started)
    with pytest.raises(DeployError, match="still used by container"):  # the probe is not a worker of ours
        runtime.remove_artifact(tag)
    probe.remove(force=True)
    runtime.remove_artifact(tag)


@pytest.mark.docker
def test_crash_looping_worker_is_never_reported_running(
    runtime: DockerRuntime, docker_client, settings: Settings, tracker: Tracker, tmp_path: Path
) -> None:
    spec = make_task(tmp_path, settings, app_text=CRASHING_APP)
    tracker.images.append(image_tag(spec.task_name, spec.version))
    artifact = runtime.build(spec)
    handle = runtime.start(make_run_spec(spec, artifact, settings))
    tracker.containers.append(handle.id)

    seen: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        state = runtime.state(handle)
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == EXITED:
            break
        time.sleep(0.05)  # polling interval of the observation, not a wait for readiness
    logger.info("crash loop states: %s", seen)
    assert seen[-1] == EXITED, seen
    # Only the first start may be seen RUNNING (before the module fails to import); after that, never again.
    first_not_running = next(i for i, s in enumerate(seen) if s != RUNNING)
    assert RUNNING not in seen[first_not_running:], seen
    attrs = docker_client.containers.get(handle.id).attrs
    assert attrs["RestartCount"] == 5
    assert attrs["State"]["ExitCode"] != 0
    assert "refuses to import" in runtime.logs(handle, 50)
    runtime.remove(handle)
    runtime.remove_artifact(artifact.ref)


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisServer]:
    password = "p@ss/w:rd%#?& " + uuid.uuid4().hex  # characters that break unencoded URLs  # pragma: allowlist secret
    server = LocalRedisServer(tmp_path_factory.mktemp("redis-pw"), password=password).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.docker
def test_password_is_used_but_never_shown(
    docker_client,
    base_ready: str,
    wheel_cache: Path,
    password_redis: LocalRedisServer,
    tracker: Tracker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = password_redis.password
    assert password is not None
    settings = make_settings(tmp_path, redis_port=password_redis.port, redis_password=password)
    runtime = DockerRuntime(settings, client=docker_client, wheel_cache_dir=wheel_cache)
    spec = make_task(tmp_path, settings)
    tracker.images.append(image_tag(spec.task_name, spec.version))
    artifact = runtime.build(spec)
    run_spec = make_run_spec(spec, artifact, settings)
    assert run_spec.environment["REDIS_PASSWORD"] == password
    handle = runtime.start(run_spec)
    tracker.containers.append(handle.id)
    wait_for_ping(settings, runtime, handle)
    app = create_celery_app(settings)
    try:
        assert app.send_task("mcp_app.rt_add", args=[1, 2], queue=QUEUE).get(timeout=30) == 3
        assert app.send_task("mcp_app.rt_leak", queue=QUEUE).get(timeout=30) == len(password)
    finally:
        app.close()

    shown: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the printed line reaches the log driver shortly after the result
        logs = runtime.logs(handle, tail_lines=500)
        if "password in the environment:" in logs:
            break
        time.sleep(0.05)
    shown.append(logs)
    assert "password in the environment: " + REDACTED in logs
    shown += [repr(handle), repr(runtime.workers(TASK)), runtime.state(handle)]

    # Errors raised while starting with this environment do not carry it either.
    # (another version, so the name differs from the running worker's)
    for bad in ({"network": f"no-such-net-{uuid.uuid4().hex[:8]}"}, {"pids_limit": 0}):
        other = make_run_spec(spec, artifact, settings, version=uuid.uuid4().hex, **bad)
        tracker.containers.append(container_name(TASK, other.version, other.hostname))
        with pytest.raises((DeployError, InvalidInput)) as caught:
            runtime.start(other)
        shown += [str(caught.value), repr(caught.value.to_dict())]
        with pytest.raises(docker.errors.NotFound):  # a container that could not start is not left behind
            docker_client.containers.get(container_name(TASK, other.version, other.hostname))
    bad_env = make_run_spec(spec, artifact, settings, environment={"BAD KEY": password})
    with pytest.raises(InvalidInput) as caught:
        runtime.start(bad_env)
    shown += [str(caught.value), repr(caught.value.to_dict())]

    shown += [record.getMessage() for record in caplog.records]
    text = "\n".join(shown)
    assert password not in text
    assert password.split(" ")[0] not in text
    from urllib.parse import quote

    assert quote(password, safe="") not in text
    runtime.remove(handle)
    runtime.remove_artifact(artifact.ref)


@pytest.mark.docker
def test_remove_artifact_refuses_foreign_images_and_containers(
    runtime: DockerRuntime, docker_client, settings: Settings, tracker: Tracker, tmp_path: Path
) -> None:
    with pytest.raises(DeployError, match="not an MCS worker image"):
        runtime.remove_artifact(BASE_IMAGE)
    spec = make_task(tmp_path, settings)
    tag = image_tag(spec.task_name, spec.version)
    tracker.images.append(tag)
    runtime.build(spec)
    foreign = docker_client.containers.create(tag, command=["true"], labels={TEST_LABEL: "1"})
    tracker.containers.append(foreign.id)
    with pytest.raises(DeployError, match="still used by container"):
        runtime.remove_artifact(tag)
    docker_client.images.get(tag)
    foreign.remove(force=True)
    runtime.remove_artifact(tag)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tag)


# --- unit ----------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_image_and_container_names() -> None:
    version = "0123456789abcdef" * 4
    assert image_tag("simple_add", version) == f"mcs-simple_add:{version}"
    name = container_name("simple_add", version, "h@mcs")
    assert name.startswith("mcs-simple_add-0123456789ab-") and name != container_name("simple_add", version, "i@mcs")
    for bad_task in ("../x", "Foo", "a___b", "add_", "", "class"):
        with pytest.raises(InvalidInput):
            image_tag(bad_task, version)
    for bad_version in ("", "ABCDEF12", "1234", "g" * 12, "../../etc", "a" * 129):
        with pytest.raises(InvalidInput):
            image_tag("simple_add", bad_version)
    command = worker_command("q1", "h@mcs")
    assert command[:6] == ["celery", "-A", "app_q1", "worker", "-Q", "q1"]
    assert command[-2:] == ["--hostname", "h@mcs"] and "prefork" in command


@pytest.mark.unit
def test_state_from_inspect_data() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)

    def attrs(status: str, restarts: int = 0, up_s: float = 100.0, restarting: bool = False) -> dict[str, Any]:
        started = (now - timedelta(seconds=up_s)).strftime("%Y-%m-%dT%H:%M:%S.123456789Z")
        return {
            "State": {"Status": status, "Restarting": restarting, "StartedAt": started},
            "RestartCount": restarts,
        }

    assert state_from_attrs(attrs("running"), now) == RUNNING
    assert state_from_attrs(attrs("running", restarts=1, up_s=2), now) == RESTARTING
    assert state_from_attrs(attrs("running", restarts=3, up_s=600), now) == RUNNING  # recovered long ago
    assert state_from_attrs(attrs("running", restarting=True), now) == RESTARTING
    assert state_from_attrs(attrs("restarting", restarts=2), now) == RESTARTING
    for status in ("exited", "dead", "created", "paused", "removing"):
        assert state_from_attrs(attrs(status), now) == EXITED
    broken = {"State": {"Status": "running", "StartedAt": "garbage"}, "RestartCount": 1}
    assert state_from_attrs(broken, now) == RESTARTING


@pytest.mark.unit
def test_secrets_are_redacted_in_plain_and_percent_encoded_form() -> None:
    env = {
        "REDIS_PASSWORD": "p@ss/w rd",  # pragma: allowlist secret
        "REDIS_HOST": "127.0.0.1",
        "BROKER_URL": "redis://:x@h/0",  # pragma: allowlist secret
        "TOKEN": "ab",
    }
    secrets = secret_values(env)
    assert "p@ss/w rd" in secrets
    assert "p%40ss%2Fw%20rd" in secrets
    assert "127.0.0.1" not in secrets
    assert "redis://:x@h/0" in secrets
    assert "ab" not in secrets  # too short to redact without destroying the text
    text = "auth p@ss/w rd and p%40ss%2Fw%20rd at 127.0.0.1"
    assert redact(text, secrets) == f"auth {REDACTED} and {REDACTED} at 127.0.0.1"


class _Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"docker was called ({name}) before the input was validated")


@pytest.mark.unit
def test_invalid_specs_fail_before_any_docker_call(tmp_path: Path) -> None:
    runtime = DockerRuntime(make_settings(tmp_path), client=_Untouchable())
    version = "ab" * 16
    base = BuildSpec(task_name=TASK, queue=QUEUE, version=version, folder=tmp_path, dockerfile="FROM x\n")
    for changes in (
        {"requirements": ["--index-url=https://evil.example"]},
        {"requirements": ["six"]},
        {"task_name": "../etc"},
        {"queue": "Bad Queue"},
        {"version": "not-hex"},
    ):
        with pytest.raises(InvalidInput):
            runtime.build(dataclasses.replace(base, **changes))
    artifact = Artifact(runtime="docker", ref=f"mcs-{TASK}:{version}", id="sha256:x")
    run = make_run_spec(base, artifact, make_settings(tmp_path))
    for changes in (
        {"network": "container:abc"},
        {"hostname": "w%h"},
        {"pids_limit": 0},
        {"mem_limit_mb": 4},
        {"cpus": 0},
        {"environment": {"A=B": "x"}},
    ):
        with pytest.raises(InvalidInput):
            runtime.start(dataclasses.replace(run, **changes))


@pytest.mark.unit
def test_no_daemon_is_service_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kwargs: Any) -> Any:
        raise docker.errors.DockerException("Error while fetching server API version: connection refused")

    monkeypatch.setattr(docker, "from_env", refuse)
    runtime = DockerRuntime(make_settings(tmp_path))
    with pytest.raises(ServiceUnavailable, match="start dockerd / the Docker service") as caught:
        runtime.workers()
    assert caught.value.details["service"] == "docker"


@pytest.mark.unit
def test_handle_is_built_from_labels() -> None:
    labels = {
        LABEL_MANAGED: "1",
        LABEL_TASK: TASK,
        LABEL_QUEUE: QUEUE,
        LABEL_VERSION: "ab" * 16,
        LABEL_HOSTNAME: "rt_add-abab@mcs",
        LABEL_ARTIFACT: f"mcs-{TASK}:{'ab' * 16}",
    }
    container = SimpleNamespace(id="c" * 64, name="mcs-rt_add-abababababab", attrs={"Config": {"Labels": labels}})
    handle = DockerRuntime(Settings(_env_file=None), client=_Untouchable())._handle(container)
    assert handle == WorkerHandle(
        runtime="docker",
        id="c" * 64,
        name="mcs-rt_add-abababababab",
        hostname="rt_add-abab@mcs",
        task_name=TASK,
        queue=QUEUE,
        version="ab" * 16,
        artifact_ref=f"mcs-{TASK}:{'ab' * 16}",
    )


@pytest.mark.unit
def test_only_containers_started_as_workers_count_as_workers() -> None:
    version = "ab" * 16
    image_labels = {LABEL_MANAGED: "1", LABEL_TASK: TASK, LABEL_QUEUE: QUEUE, LABEL_VERSION: version}
    worker_labels = {**image_labels, LABEL_HOSTNAME: "h@mcs"}

    def container(name: str, labels: dict[str, str]) -> SimpleNamespace:
        return SimpleNamespace(name=name, attrs={"Config": {"Labels": labels}})

    assert is_mcs_worker(container(container_name(TASK, version, "h@mcs"), worker_labels))
    # Made from a worker image (labels inherited), but not started by the runtime:
    assert not is_mcs_worker(container("vigorous_albattani", image_labels))
    assert not is_mcs_worker(container("vigorous_albattani", worker_labels))
    assert not is_mcs_worker(container(container_name(TASK, version, "h@mcs"), image_labels))
    assert not is_mcs_worker(container(container_name(TASK, version, "h@mcs"), {**worker_labels, LABEL_VERSION: "zz"}))
    assert not is_mcs_worker(container(container_name(TASK, version, "h@mcs"), {}))


@pytest.mark.unit
def test_a_workers_cpu_limit_grows_with_its_pool_up_to_the_daemons_cpus(tmp_path) -> None:
    class Info:
        def info(self) -> dict[str, Any]:
            return {"NCPU": 2}

    runtime = DockerRuntime(make_settings(tmp_path), client=Info())
    artifact = Artifact("docker", "mcs-t:ab", "sha256:ab")

    def spec(concurrency: int, cpus: float) -> RunSpec:
        return RunSpec("t", "q", "ab" * 8, artifact, "t@mcs", {}, 256, cpus, 128, "none", concurrency=concurrency)

    assert runtime.worker_cpus(spec(1, 1.0)) == 1.0
    assert runtime.worker_cpus(spec(2, 0.5)) == 1.0
    assert runtime.worker_cpus(spec(8, 1.0)) == 2.0  # dockerd refuses a limit above its CPUs
