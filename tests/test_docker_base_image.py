"""The worker base image: built locally without a registry, usable FROM, non-root, hardened; and its pure parts.

The docker tests build the base image from scratch when it is missing (about 1-2 minutes; a machine with no
images at all is fine). Each test carries its own marker: ``docker`` for those that need the daemon, ``unit`` for
the pure parts, so ``-m unit`` and ``-m "not docker"`` select what they say.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import docker.errors
import pytest

from deploy_mcp import host_tools
from deploy_mcp.docker import base_image, recipe, rootfs
from deploy_mcp.docker.base_image import ensure_base_image
from deploy_mcp.docker.recipe import LABEL_BASE, LABEL_RECIPE, chroot_argv, recipe_hash
from mcs.core.errors import DeployError, ServiceUnavailable
from mcs.core.settings import Settings
from mcs.core.worker_image import BASE_PINS
from tests.helpers import TEST_LABEL

DEFAULT_BASE_IMAGE = Settings.model_fields["worker_base_image"].default

PROBE = """\
import json, os, pwd, sys
import celery, kombu, redis
try:
    open("/probe-write", "w")
    root_writable = True
except OSError:
    root_writable = False
print(json.dumps({
    "celery": celery.__version__,
    "kombu": kombu.__version__,
    "redis": redis.__version__,
    "uid": os.getuid(),
    "gid": os.getgid(),
    "user": pwd.getpwuid(os.getuid()).pw_name,
    "executable": sys.executable,
    "home": os.environ.get("HOME"),
    "root_writable": root_writable,
}))
"""


def _settings() -> Settings:
    return Settings(_env_file=None, worker_base_image=DEFAULT_BASE_IMAGE)


@pytest.fixture(scope="module")
def base_image_ref(docker_client) -> str:
    steps: list[str] = []
    started = time.monotonic()
    ref = ensure_base_image(_settings(), docker_client, progress=steps.append)
    print(f"ensure_base_image: {time.monotonic() - started:.1f} s, steps: {steps}", file=sys.stderr)
    return ref


@pytest.mark.docker
def test_base_image_runs_celery_as_uid_10001_in_a_hardened_container(docker_client, base_image_ref, tmp_path):
    base = docker_client.images.get(base_image_ref)
    labels = base.attrs["Config"]["Labels"]
    assert labels[LABEL_BASE] == "1"
    assert labels[LABEL_RECIPE] == recipe_hash()
    env = base.attrs["Config"]["Env"]
    assert any(item.startswith("PATH=/opt/venv/bin:") for item in env)
    assert "PYTHONDONTWRITEBYTECODE=1" in env

    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "Dockerfile").write_text(
        f'FROM {base_image_ref}\nCOPY probe.py /opt/probe/probe.py\nCMD ["python", "/opt/probe/probe.py"]\n'
    )
    tag = f"mcs-test-base-probe:{uuid.uuid4().hex[:8]}"
    image = container = None
    try:
        image, _ = docker_client.images.build(
            path=str(tmp_path),
            tag=tag,
            network_mode="none",
            rm=True,
            forcerm=True,
            pull=False,
            labels={TEST_LABEL: "1"},
        )
        container = docker_client.containers.run(
            tag,
            detach=True,
            labels={TEST_LABEL: "1"},
            network_mode="none",
            user="10001:10001",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
        )
        status = container.wait(timeout=120)
        stdout = container.logs(stdout=True, stderr=False).decode()
        stderr = container.logs(stdout=False, stderr=True).decode()
        assert status["StatusCode"] == 0, stderr
        report = json.loads(stdout.strip().splitlines()[-1])
    finally:
        if container is not None:
            container.remove(force=True)
        if image is not None:
            docker_client.images.remove(image.id, force=True)

    assert report["celery"] == "5.7.0"
    assert report["kombu"] == "5.7.0"
    assert report["redis"] == "8.1.0"
    assert (report["uid"], report["gid"]) == (10001, 10001)
    assert report["user"] == "mcs"
    assert report["executable"].startswith("/opt/venv/bin/")
    assert report["home"] == "/tmp"
    assert report["root_writable"] is False
    assert not docker_client.images.list(name=tag)


@pytest.mark.docker
def test_second_ensure_finds_the_image_and_does_not_rebuild(docker_client, base_image_ref, monkeypatch):
    before = docker_client.images.get(base_image_ref).id

    def no_build(*args, **kwargs):
        raise AssertionError("ensure_base_image rebuilt an image that exists")

    monkeypatch.setattr(base_image, "build_base_image", no_build)
    steps: list[str] = []
    started = time.monotonic()
    assert ensure_base_image(_settings(), docker_client, progress=steps.append) == base_image_ref
    print(f"second ensure_base_image: {(time.monotonic() - started) * 1000:.1f} ms", file=sys.stderr)
    assert steps == []
    assert docker_client.images.get(base_image_ref).id == before


# --- Pure parts ---------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_recipe_hash_is_stable_and_changes_with_the_pins():
    assert recipe_hash() == recipe_hash(BASE_PINS)
    bumped = tuple(p.replace("celery[redis]==5.7.0", "celery[redis]==5.7.1") for p in BASE_PINS)
    assert bumped != BASE_PINS
    assert recipe_hash(bumped) != recipe_hash()
    assert f"LABEL {LABEL_RECIPE}={recipe_hash()}" in recipe.import_changes()


@pytest.mark.unit
def test_chroot_command_is_an_argument_list_with_a_clean_environment(monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_CERT", "/nowhere.crt")
    monkeypatch.setenv("PYTHONPATH", "/host/lib")
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    argv = chroot_argv(Path("/tmp/root dir"), *recipe.pip_install_argv())
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    assert argv[:4] == ["chroot", "/tmp/root dir", "/usr/bin/env", "-i"]
    assert "PATH=/usr/bin:/bin" in argv and "HOME=/root" in argv
    assert not [a for a in argv if a.startswith(("PIP_", "PYTHONPATH"))]
    pip = argv[argv.index("/opt/venv/bin/python") :]
    assert pip[:4] == ["/opt/venv/bin/python", "-m", "pip", "install"]
    assert "--isolated" in pip and "--no-cache-dir" in pip
    assert pip[-len(BASE_PINS) :] == list(BASE_PINS)
    # A proxy (needed on proxied networks) is the only thing forwarded.
    assert "https_proxy=http://proxy:3128" in chroot_argv(
        Path("/r"), "true", environ={"https_proxy": "http://proxy:3128"}
    )


@pytest.mark.unit
def test_import_changes_set_the_environment_and_labels():
    changes = recipe.import_changes()
    assert "ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in changes
    assert {"ENV HOME=/tmp", "ENV PYTHONDONTWRITEBYTECODE=1", "ENV PYTHONUNBUFFERED=1", "LABEL mcs.base=1"} <= set(
        changes
    )
    assert recipe.tar_argv(Path("/x"))[:1] == ["tar"]


@pytest.mark.unit
def test_add_worker_user_appends_once(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:")  # no trailing newline
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    rootfs.add_worker_user(tmp_path)
    rootfs.add_worker_user(tmp_path)
    assert (etc / "passwd").read_text().splitlines()[-1] == "mcs:x:10001:10001:MCS worker:/tmp:/usr/sbin/nologin"
    assert (etc / "group").read_text().splitlines() == ["root:x:0:", "mcs:x:10001:"]
    assert (etc / "shadow").read_text().count("mcs:") == 1
    assert not (etc / "gshadow").exists()


@pytest.mark.unit
def test_add_worker_user_refuses_a_taken_uid(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("other:x:10001:10001::/:/bin/sh\n")
    (etc / "group").write_text("")
    with pytest.raises(DeployError, match="10001"):
        rootfs.add_worker_user(tmp_path)


@pytest.mark.unit
def test_mounts_under_compares_path_components_and_unescapes():
    mountinfo = "\n".join(
        [
            "22 1 8:1 / / rw - ext4 /dev/vda rw",
            "30 22 0:5 / /tmp/build/rootfs/proc rw - proc proc rw",
            "31 22 0:6 / /tmp/build/rootfs/dev/pts rw - devpts devpts rw",
            "32 22 0:7 / /tmp/build/rootfs/dev rw - tmpfs nodev rw",
            "33 22 0:8 / /tmp/build2/rootfs/proc rw - proc proc rw",
            "34 22 0:9 / /tmp/build/with\\040space rw - tmpfs t rw",
        ]
    )
    assert rootfs.mounts_under(Path("/tmp/build"), mountinfo) == [
        "/tmp/build/rootfs/dev/pts",
        "/tmp/build/rootfs/proc",
        "/tmp/build/rootfs/dev",
        "/tmp/build/with space",
    ]


@pytest.mark.unit
def test_failed_command_becomes_deploy_error_with_output_tail():
    argv = [sys.executable, "-c", "print('x' * 5000); print('the real reason'); raise SystemExit(3)"]
    with pytest.raises(DeployError) as info:
        host_tools.run("probe", argv, timeout=30)
    assert info.value.details["returncode"] == 3
    assert info.value.details["command"] == argv
    tail = info.value.details["output_tail"]
    assert "the real reason" in tail and len(tail) <= host_tools.OUTPUT_TAIL_CHARS + 3


class FakeImages:
    def __init__(self, present: dict[str, dict], pull_error: Exception | None = None):
        self.present = present
        self.pull_error = pull_error
        self.pulled: list[tuple[str, str]] = []

    def get(self, ref):
        if ref not in self.present:
            raise docker.errors.ImageNotFound(f"No such image: {ref}")
        return SimpleNamespace(id="sha256:abc", attrs=self.present[ref])

    def pull(self, repo, tag=None):
        self.pulled.append((repo, tag))
        if self.pull_error is not None:
            raise self.pull_error


@pytest.mark.unit
def test_ensure_returns_an_existing_image_without_building(monkeypatch):
    monkeypatch.setattr(base_image, "build_base_image", lambda *a, **k: pytest.fail("built"))
    current = {"Config": {"Labels": {LABEL_BASE: "1", LABEL_RECIPE: recipe_hash()}}}
    client = SimpleNamespace(images=FakeImages({DEFAULT_BASE_IMAGE: current}))
    assert ensure_base_image(_settings(), client) == DEFAULT_BASE_IMAGE


@pytest.mark.unit
def test_ensure_rebuilds_an_image_from_an_older_recipe(monkeypatch):
    built = []
    monkeypatch.setattr(base_image, "build_base_image", lambda s, c, p=None: built.append(s) or s.worker_base_image)
    stale = {"Config": {"Labels": {LABEL_BASE: "1", LABEL_RECIPE: "0000000000000000"}}}
    client = SimpleNamespace(images=FakeImages({DEFAULT_BASE_IMAGE: stale}))
    assert ensure_base_image(_settings(), client) == DEFAULT_BASE_IMAGE
    assert len(built) == 1


@pytest.mark.unit
def test_registry_image_is_pulled_and_a_failed_pull_says_how_to_fix_it():
    settings = Settings(_env_file=None, worker_base_image="python:3.12-slim")
    images = FakeImages({}, pull_error=docker.errors.APIError("Get https://registry-1.docker.io/v2/: dial tcp"))
    with pytest.raises(ServiceUnavailable) as info:
        ensure_base_image(settings, SimpleNamespace(images=images))
    assert images.pulled == [("python", "3.12-slim")]
    assert "mcs-base:bookworm-py311" in info.value.message and "make base-image" in info.value.message

    images = FakeImages({}, pull_error=docker.errors.NotFound("manifest unknown"))
    with pytest.raises(DeployError):
        ensure_base_image(settings, SimpleNamespace(images=images))


@pytest.mark.unit
def test_split_image_ref_keeps_registry_ports():
    assert recipe.split_image_ref("mcs-base:bookworm-py311") == ("mcs-base", "bookworm-py311")
    assert recipe.split_image_ref("localhost:5000/py") == ("localhost:5000/py", "latest")
    assert recipe.split_image_ref("localhost:5000/py:3.12") == ("localhost:5000/py", "3.12")
