"""The dependency image: requirements installed once per requirement set and base image, shared, never re-run.

``docker`` tests need a daemon and the package index (six 1.16.0, a small pure-python wheel, is resolved from PyPI
once per test module); ``unit`` tests need nothing. Reuse is asserted from what the daemon and the build report
(image ids, layer lists and their files, the build's log), not from timings. Every image and container a test
makes carries ``mcs.test=1`` and is removed in ``finally`` (task images first: the dependency image is their parent).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from deploy_mcp.docker import deps as deps_module
from deploy_mcp.docker import wheelhouse
from deploy_mcp.docker.build import _plain_labels
from deploy_mcp.docker.containers import image_tag
from deploy_mcp.docker.deps import (
    DEPS_REPOSITORY,
    LABEL_DEPS,
    LABEL_DEPS_BASE,
    LABEL_DEPS_KEY,
    LABEL_DEPS_REQUIREMENTS,
    deps_key,
    prune_deps_images,
)
from deploy_mcp.docker.runtime import TMPFS, WHEELHOUSES, DockerRuntime
from deploy_mcp.docker.wheelhouse import ResolvedSet
from deploy_mcp.runtime import LABEL_MANAGED, LABEL_VERSION, BuildSpec
from mcs.core.settings import Settings
from mcs.core.worker_image import DEPS_WHEELHOUSE, render_dockerfile, uses_deps_image
from tests.helpers import TEST_LABEL, Tracker, make_settings

REQUIREMENT = "six==1.16.0"  # differs from the base image's six 1.17.0: the import proves the install
APP = """\
from celery import Celery

celery_app = Celery("mcp_app")


@celery_app.task(name="mcp_app.{task}")
def {task}():
    import six

    return six.__version__  # {nonce}
"""


class Made(Tracker):
    """Images and containers a test made, removed in an order the daemon accepts (children before parents), and the
    test's dependency images."""

    def cleanup(self) -> None:
        super().cleanup()
        for image in self.client.images.list(filters={"label": [f"{LABEL_DEPS}=1", f"{TEST_LABEL}=1"]}):
            with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                self.client.images.remove(image.id, force=True)


@pytest.fixture
def made(docker_client) -> Iterator[Made]:
    m = Made(docker_client)
    m.cleanup()  # a dependency image of an earlier run would make the first build a reuse
    try:
        yield m
    finally:
        m.cleanup()


def make_spec(settings: Settings, root: Path, task: str, queue: str, requirements: tuple[str, ...]) -> BuildSpec:
    """A deployment folder with MCS's rendered Dockerfile (a fresh version each time)."""
    version = uuid.uuid4().hex
    folder = root / f"{task}_{queue}" / version
    folder.mkdir(parents=True)
    dockerfile = render_dockerfile(settings, queue, has_requirements=bool(requirements))
    (folder / f"app_{queue}.py").write_text(APP.format(task=task, nonce=version))
    (folder / "Dockerfile").write_text(dockerfile)
    if requirements:
        (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return BuildSpec(task, queue, version, folder, dockerfile, list(requirements), {TEST_LABEL: "1"})


def layers(client: Any, ref: str) -> list[str]:
    return list(client.images.get(ref).attrs["RootFS"]["Layers"])


def run_in(client: Any, made: Made, image: str, code: str) -> dict[str, Any]:
    """Run ``code`` in a hardened container of ``image``; its last stdout line, as JSON."""
    container = client.containers.run(
        image, command=["python", "-c", code], detach=True, network_mode="none", user="10001:10001", read_only=True,
        tmpfs=dict(TMPFS), cap_drop=["ALL"], security_opt=["no-new-privileges"], labels={TEST_LABEL: "1"},
    )  # fmt: skip
    made.containers.append(container.id)
    assert container.wait(timeout=120)["StatusCode"] == 0, container.logs().decode()
    return json.loads(container.logs(stdout=True, stderr=False).decode().strip().splitlines()[-1])


PROBE = """\
import json, os, six
print(json.dumps({
    "six": six.__version__,
    "wheelhouse": [p for p in ("/mcs-wheelhouse", "/app/wheelhouse", "/app/requirements.txt") if os.path.exists(p)],
    "six_wheels": [os.path.join(d, f) for d, _, fs in os.walk("/", topdown=True) for f in fs
                   if f.startswith("six-1.16.0") and f.endswith(".whl") and not d.startswith("/proc")],
    "app_owner": [os.stat("/app/" + f).st_uid for f in os.listdir("/app")],
    "app_writable": [f for f in os.listdir("/app") if os.access("/app/" + f, os.W_OK)],
    "six_compiled": any(f.startswith("six.") and f.endswith(".pyc") for f in os.listdir(
        os.path.join(os.path.dirname(six.__file__), "__pycache__"))),
}))
"""


def top_layer_names(client: Any, ref: str, below: str) -> list[str]:
    """The file names in the layers of ``ref`` that ``below`` does not have (from ``docker save``)."""
    own = set(layers(client, below))
    with tarfile.open(fileobj=io.BytesIO(b"".join(client.images.get(ref).save())), mode="r:") as saved:
        manifest = json.load(saved.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(saved.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        names: list[str] = []
        for path, diff_id in zip(manifest[0]["Layers"], config["rootfs"]["diff_ids"], strict=True):
            if diff_id in own:
                continue
            with tarfile.open(fileobj=saved.extractfile(path), mode="r:") as layer:
                names += layer.getnames()
    return names


# --- docker --------------------------------------------------------------------------------------------------


@pytest.mark.docker
def test_requirements_install_once_per_set_and_are_shared(
    docker_client, base_ready: str, made: Made, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    runtime = DockerRuntime(settings, client=docker_client, wheel_cache_dir=tmp_path / "wheelhouses")
    first = make_spec(settings, tmp_path, "dl_one", "dl_one_q", (REQUIREMENT,))
    made.images.append(image_tag(first.task_name, first.version))
    steps: list[str] = []
    built = runtime.build(first, progress=steps.append)
    assert any(s.startswith("wheelhouse: resolving") for s in steps), steps
    assert any(s.startswith("dependencies: installing") for s in steps), steps
    [deps] = docker_client.images.list(filters={"label": [f"{LABEL_DEPS}=1", f"{TEST_LABEL}=1"]})
    [deps_ref] = deps.tags
    assert deps_ref.startswith(f"{DEPS_REPOSITORY}:")
    labels = deps.labels
    assert labels[LABEL_MANAGED] == "1" and labels[LABEL_DEPS_REQUIREMENTS] == REQUIREMENT
    assert labels[LABEL_DEPS_BASE] == docker_client.images.get(base_ready).id
    assert deps_ref == f"{DEPS_REPOSITORY}:{labels[LABEL_DEPS_KEY]}"
    assert docker_client.containers.list(all=True, filters={"name": deps_module.INSTALL_CONTAINER_PREFIX}) == []
    # The task image is the dependency image plus the task's own steps; it is not a dependency image itself.
    assert layers(docker_client, built.ref)[: len(layers(docker_client, deps_ref))] == layers(docker_client, deps_ref)
    task_labels = docker_client.images.get(built.ref).labels
    assert task_labels[LABEL_DEPS] == "0" and task_labels[LABEL_VERSION] == first.version
    # The rendered recipe was applied without the builder, FROM the dependency image: one layer of the task's files.
    assert built.build_log_tail.startswith(f"assembled {built.ref} "), built.build_log_tail
    assert f"FROM {deps_ref} ({deps.id[:19]})" in built.build_log_tail.splitlines(), built.build_log_tail
    assert len(layers(docker_client, built.ref)) == len(layers(docker_client, deps_ref)) + 1
    # No wheel anywhere: not in the file system, and not in a layer of the dependency image (its only own layer
    # is the commit of the install; the wheels were put and deleted in that same container).
    seen = run_in(docker_client, made, built.ref, PROBE)
    assert seen["six"] == "1.16.0" and seen["six_compiled"] is True
    assert seen["wheelhouse"] == ["/app/requirements.txt"] and seen["six_wheels"] == []
    assert set(seen["app_owner"]) == {0} and seen["app_writable"] == []
    own = top_layer_names(docker_client, deps_ref, base_ready)
    assert any(name.endswith("site-packages/six.py") for name in own), own[:20]
    assert not [n for n in own if n.endswith(".whl") or DEPS_WHEELHOUSE.lstrip("/") in n], own

    # From here on nothing may resolve or install: a second task with the same set, and a code-only change.
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the requirement set was resolved or installed again")

    monkeypatch.setattr(wheelhouse._ContainerResolver, "download", forbidden)
    monkeypatch.setattr(deps_module, "_make", forbidden)
    second = make_spec(settings, tmp_path, "dl_two", "dl_two_q", (REQUIREMENT,))
    changed = make_spec(settings, tmp_path, "dl_one", "dl_one_q", (REQUIREMENT,))
    for spec in (second, changed):
        made.images.append(image_tag(spec.task_name, spec.version))
        steps = []
        artifact = runtime.build(spec, progress=steps.append)
        assert not artifact.reused
        assert not any("resolving" in s or "installing" in s for s in steps), steps
        assert any(s.startswith("wheelhouse:") and "from the cache" in s for s in steps), steps
        assert any(s.startswith("dependencies:") and "reusing" in s for s in steps), steps
        # The same dependency image (id), under the new task image; no pip in the build.
        assert docker_client.images.get(deps_ref).id == deps.id
        own_layers = layers(docker_client, artifact.ref)
        assert own_layers[: len(layers(docker_client, deps_ref))] == layers(docker_client, deps_ref)
        assert "pip" not in artifact.build_log_tail
        # Its one own layer holds the task's files and nothing else: nothing was installed for it.
        assert len(own_layers) == len(layers(docker_client, deps_ref)) + 1
        own = top_layer_names(docker_client, artifact.ref, deps_ref)
        assert own and all(name == "app" or name.startswith("app/") for name in own), own
        assert run_in(docker_client, made, artifact.ref, PROBE)["six"] == "1.16.0"
    assert len(docker_client.images.list(filters={"label": [f"{LABEL_DEPS}=1", f"{TEST_LABEL}=1"]})) == 1


@pytest.mark.docker
def test_a_changed_cached_wheel_is_resolved_again_and_a_dead_install_is_cleared(
    docker_client, base_ready: str, made: Made, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    cache = tmp_path / "wheelhouses"
    runtime = DockerRuntime(settings, client=docker_client, wheel_cache_dir=cache)
    first = make_spec(settings, tmp_path, "dl_stale", "dl_stale_q", (REQUIREMENT,))
    made.images.append(image_tag(first.task_name, first.version))
    runtime.build(first)
    [deps] = docker_client.images.list(filters={"label": [f"{LABEL_DEPS}=1", f"{TEST_LABEL}=1"]})
    key = deps.labels[LABEL_DEPS_KEY]
    made.cleanup()  # the dependency image goes: the next build needs the wheels themselves
    [wheel] = (cache / "wheels").iterdir()
    wheel.write_bytes(b"tampered")
    # What a deploy worker that died during the install of this key would have left: removed by the next install.
    dead = f"{deps_module.INSTALL_CONTAINER_PREFIX}{key}-dead00"
    made.containers.append(
        docker_client.containers.create(base_ready, ["true"], name=dead, labels={TEST_LABEL: "1"}).id
    )
    again = make_spec(settings, tmp_path, "dl_stale", "dl_stale_q", (REQUIREMENT,))
    made.images.append(image_tag(again.task_name, again.version))
    steps: list[str] = []
    artifact = runtime.build(again, progress=steps.append)
    assert any(s.startswith("wheelhouse: resolving") for s in steps), steps
    assert run_in(docker_client, made, artifact.ref, PROBE)["six"] == "1.16.0"
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(dead)
    [deps] = docker_client.images.list(filters={"label": [f"{LABEL_DEPS}=1", f"{TEST_LABEL}=1"]})
    assert deps.labels[LABEL_DEPS_KEY] == key  # the same wheels again: the same dependency image


@pytest.mark.docker
def test_a_dependency_image_nothing_is_built_on_is_removed_after_it_was_kept_a_while(
    docker_client, base_ready: str, made: Made, tmp_path: Path
) -> None:
    cache = tmp_path / "wheelhouses"
    settings = make_settings(tmp_path, deps_keep_unused_s=900)
    runtime = DockerRuntime(settings, client=docker_client, wheel_cache_dir=cache)
    one = make_spec(settings, tmp_path, "dl_keep", "dl_keep_q", (REQUIREMENT,))
    two = make_spec(settings, tmp_path, "dl_keep_two", "dl_keep_two_q", (REQUIREMENT,))
    refs = [image_tag(spec.task_name, spec.version) for spec in (one, two)]
    made.images += refs
    for spec in (one, two):
        runtime.build(spec)
    [deps] = docker_client.images.list(filters={"label": [f"{LABEL_DEPS}=1", f"{TEST_LABEL}=1"]})
    key = deps.labels[LABEL_DEPS_KEY]
    ours = {TEST_LABEL: "1"}
    later = time.time() + 901  # past the time it is kept

    def prune(now: float) -> list[str]:
        return prune_deps_images(docker_client, cache, settings.deps_keep_unused_s, now=now, labels=ours)

    # In use (a task image is built on it): kept, however long ago it was last used.
    assert prune(later) == []
    runtime.remove_artifact(refs[0])
    assert prune(later) == [] and docker_client.images.get(deps.id)
    # Nothing built on it any more: the removal's own tidy saw it unused and kept it (used moments ago).
    runtime.remove_artifact(refs[1])
    assert docker_client.images.get(deps.id) and (cache / "deps" / f"{key}.unused").exists()
    assert prune(time.time()) == []
    # Unused for long, but a deploy used it again (and its image went again): kept for the time after that use.
    unused = cache / "deps" / f"{key}.unused"
    os.utime(unused, (time.time() - 2000, time.time() - 2000))
    three = make_spec(settings, tmp_path, "dl_keep", "dl_keep_q", (REQUIREMENT,))
    made.images.append(image_tag(three.task_name, three.version))
    runtime.remove_artifact(runtime.build(three).ref)
    assert prune(time.time() + 100) == [] and docker_client.images.get(deps.id)
    assert prune(time.time() + 901) == [f"{DEPS_REPOSITORY}:{key}"]
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(deps.id)
    assert not (cache / "deps" / f"{key}.unused").exists() and not (cache / "deps" / f"{key}.used").exists()


# --- unit ----------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_the_rendered_recipe_asks_for_the_dependency_image_only_with_requirements(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with_reqs = render_dockerfile(settings, "q", has_requirements=True)
    without = render_dockerfile(settings, "q", has_requirements=False)
    assert uses_deps_image(with_reqs) and not uses_deps_image(without)
    assert "/app/wheelhouse" not in with_reqs and not any(
        line.startswith("RUN") and "pip" in line for line in with_reqs.splitlines()
    )
    assert uses_deps_image("# x\nARG MCS_DEPS_IMAGE=mcs-base:1\nFROM ${MCS_DEPS_IMAGE}\n")
    assert not uses_deps_image("FROM x\n# ARG MCS_DEPS_IMAGE\n")
    assert not uses_deps_image("FROM x\nARG MCS_DEPS_IMAGE_OTHER\n")


@pytest.mark.unit
def test_the_dependency_key_covers_base_image_wheels_and_lines(tmp_path: Path) -> None:
    def resolved(**changes: Any) -> ResolvedSet:
        values: dict[str, Any] = {
            "key": "k", "requirements": ("six==1.16.0",), "base_image_id": "sha256:" + "a" * 64,
            "wheels": {"six-1.16.0-py2.py3-none-any.whl": "d" * 64}, "cache": tmp_path, "resolved": False,
        }  # fmt: skip
        values.update(changes)
        return ResolvedSet(**values)

    key = deps_key(resolved())
    assert key == deps_key(resolved(key="other", resolved=True, cache=tmp_path / "x"))  # where it came from: no
    assert key != deps_key(resolved(base_image_id="sha256:" + "b" * 64))
    assert key != deps_key(resolved(wheels={"six-1.16.0-py2.py3-none-any.whl": "e" * 64}))
    assert key != deps_key(resolved(requirements=("six==1.16.0", "idna==3.7")))


@pytest.mark.unit
def test_labels_go_into_one_label_step_only_when_plain() -> None:
    assert _plain_labels({"mcs.task": "simple_add", "mcs.version": "ab12", "mcs.bench": "1", "mcs.test": "1"})
    assert _plain_labels({"mcs.deps.requirements": "six==1.16.0,idna==3.7"})
    for value in ("a b", "x$HOME", 'q"uote', "back\\slash", "new\nline", ""):
        assert not _plain_labels({"mcs.extra": value}), value
    assert not _plain_labels({"a=b": "1"}) and not _plain_labels({"a b": "1"})


@pytest.mark.unit
def test_wheelhouses_live_in_the_deploy_workers_data_folder(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert DockerRuntime(settings, client=object()).wheel_cache_dir == settings.deployments_dir / WHEELHOUSES
    assert DockerRuntime(settings, client=object(), wheel_cache_dir=tmp_path / "w").wheel_cache_dir == tmp_path / "w"
