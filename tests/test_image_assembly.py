"""The task image without the builder: MCS's rendered recipe applied by a container commit, and what it refuses.

``unit`` tests read recipes; ``docker`` tests build one context both ways (the daemon's classic builder and the
assembly) and compare the two images: configuration, labels, and every file under ``/app`` with its owner, mode,
size, content and link target. Every image and container a test makes carries ``mcs.test=1`` and is removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import uuid
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from deploy_mcp.docker.assemble import (
    ASSEMBLE_CONTAINER_PREFIX,
    Assembly,
    assemble_image,
    plan_assembly,
    remove_stale_assemblies,
)
from deploy_mcp.docker.build import build_image, build_in_context
from deploy_mcp.runtime import BuildSpec
from mcs.core.errors import DeployError
from mcs.core.settings import Settings
from mcs.core.worker_image import DEPS_ARG, render_dockerfile, worker_command
from tests.helpers import TEST_LABEL, Tracker

BASE = Settings.model_fields["worker_base_image"].default
RENDERED = render_dockerfile(Settings(_env_file=None), "asm_q", has_requirements=False)
RENDERED_DEPS = render_dockerfile(Settings(_env_file=None), "asm_q", has_requirements=True)
TAIL = (
    "FROM {base}\nUSER root\nWORKDIR /app\nENV A=1\n" 'CMD ["celery"]\n'
    "COPY --chown=0:0 . /app\n" 'RUN ["chmod", "-R", "u=rwX,go=rX", "/app"]\nUSER 10001:10001\n'
)  # fmt: skip


def recipe(**replace: str) -> str:
    """The minimal recipe the assembly applies, with lines replaced (``{"old line": "new line"}`` via kwargs)."""
    text = TAIL.format(base=BASE)
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


# --- unit: which recipes are applied without the builder ------------------------------------------------------


@pytest.mark.unit
def test_the_rendered_recipes_are_assembled() -> None:
    plain = plan_assembly(RENDERED, {})
    assert plain == Assembly(
        base=BASE,
        dest="/app",
        changes=(
            "USER root",
            "WORKDIR /app",
            "ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1",
            "CMD " + json.dumps(worker_command("asm_q")),
            "USER 10001:10001",
        ),
    )
    with_deps = plan_assembly(RENDERED_DEPS, {DEPS_ARG: "mcs-deps:0123abcd"})
    assert with_deps is not None and with_deps.base == "mcs-deps:0123abcd" and with_deps.changes == plain.changes
    # Without the build argument the recipe cannot say what it starts from.
    assert plan_assembly(RENDERED_DEPS, {}) is None


REFUSED = {
    "another RUN": recipe(**{"USER 10001:10001\n": 'RUN ["true"]\nUSER 10001:10001\n'}),
    "shell-form RUN of the chmod": recipe(
        **{'RUN ["chmod", "-R", "u=rwX,go=rX", "/app"]': "RUN chmod -R u=rwX,go=rX /app"}
    ),
    "another chmod rule": recipe(**{"u=rwX,go=rX": "u=rwX,go=rwX"}),
    "chmod of another folder": recipe(**{'"/app"]': '"/"]'}),
    "chmod as the worker user": recipe(**{"USER root\n": "USER 10001:10001\n"}),
    "no user before the chmod": recipe(**{"USER root\n": ""}),
    "no chmod": recipe(**{'RUN ["chmod", "-R", "u=rwX,go=rX", "/app"]\n': ""}),
    "COPY without --chown": recipe(**{"COPY --chown=0:0 . /app": "COPY . /app"}),
    "COPY of a part of the context": recipe(**{"COPY --chown=0:0 . /app": "COPY --chown=0:0 src /app"}),
    "COPY to a relative folder": recipe(**{"COPY --chown=0:0 . /app": "COPY --chown=0:0 . app"}),
    "two COPY": recipe(**{"USER 10001:10001\n": "COPY --chown=0:0 . /app\nUSER 10001:10001\n"}),
    "ADD": recipe(**{"COPY --chown=0:0 . /app": "ADD --chown=0:0 . /app"}),
    "WORKDIR elsewhere": recipe(**{"WORKDIR /app": "WORKDIR /srv"}),
    "a variable in ENV": recipe(**{"ENV A=1": "ENV A=$PATH"}),
    "quotes in ENV": recipe(**{"ENV A=1": 'ENV A="1 2"'}),
    "ENV in the old form": recipe(**{"ENV A=1": "ENV A 1"}),
    "shell-form CMD": recipe(**{'CMD ["celery"]': "CMD celery worker"}),
    "no CMD": recipe(**{'CMD ["celery"]\n': ""}),
    "a continuation line": recipe(**{"ENV A=1": "ENV A=1 \\\n    B=2"}),
    "a parser directive": "# escape=`\n" + recipe(),
    "FROM AS a stage": recipe(**{f"FROM {BASE}": f"FROM {BASE} AS worker"}),
    "a build argument not given": "ARG OTHER\nFROM ${OTHER}\n" + recipe().split("\n", 1)[1],
    "a variable in FROM": recipe(**{f"FROM {BASE}": "FROM $UNDECLARED"}),
    "no FROM": recipe().split("\n", 1)[1],
    "VOLUME": recipe(**{"ENV A=1": "VOLUME /data"}),
    "HEALTHCHECK": recipe(**{"ENV A=1": "HEALTHCHECK CMD true"}),
    "ONBUILD": recipe(**{"ENV A=1": "ONBUILD RUN true"}),
    "a destination with ..": recipe(**{" . /app": " . /srv/../app"}),
    "a carriage return inside a comment": recipe(**{"USER root\n": "USER root\n# note\rUSER 0\n"}),
    "a form feed": recipe(**{"ENV A=1": "ENV A=1\x0c"}),
    "non-ASCII": recipe(**{"ENV A=1": "ENV A=\u00e9"}),
}


@pytest.mark.unit
@pytest.mark.parametrize("text", REFUSED.values(), ids=REFUSED.keys())
def test_anything_else_is_left_to_the_builder(text: str) -> None:
    assert plan_assembly(text, {}) is None


@pytest.mark.unit
def test_the_minimal_recipe_and_comments_are_assembled() -> None:
    assert plan_assembly("# a comment\n\n" + recipe(), {}) is not None
    assert plan_assembly(recipe(**{"ENV A=1": "LABEL x.y=1 z=two"}), {}) is not None


# --- docker: the same image both ways -------------------------------------------------------------------------


def make_context(root: Path, dockerfile: str) -> Path:
    """A context with what a task folder may hold: modes that the recipe's chmod changes, a package, an empty
    folder, a link."""
    context = root / f"ctx-{uuid.uuid4().hex[:6]}"
    (context / "pkg" / "sub").mkdir(parents=True)
    (context / "empty").mkdir()
    (context / "app_asm_q.py").write_text(f"# {uuid.uuid4()}\nx = 1\n")
    (context / "private.py").write_text("secret_mode = 0o600\n")
    os.chmod(context / "private.py", 0o600)
    (context / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(context / "tool.sh", 0o700)
    (context / "open.txt").write_text("everyone may write me\n")
    os.chmod(context / "open.txt", 0o666)  # noqa: S103 - the chmod of the recipe must take it back
    (context / "pkg" / "__init__.py").write_text("")
    (context / "pkg" / "sub" / "data.json").write_text('{"a": 1}\n')
    os.chmod(context / "pkg" / "sub", 0o700)
    os.symlink("pkg/sub/data.json", context / "link.json")
    (context / "Dockerfile").write_text(dockerfile)
    os.chmod(context / "pkg", 0o2750)  # noqa: S103 - a set-group-ID folder: chmod keeps the bit, so must we
    if os.geteuid() == 0:  # files of another owner: the recipe's --chown=0:0 must make them root's
        for path in [context, *context.rglob("*")]:
            os.lchown(path, 1000, 1000)
    return context


def spec_for(context: Path, dockerfile: str) -> BuildSpec:
    return BuildSpec("asm_task", "asm_q", uuid.uuid4().hex, context, dockerfile, [], {TEST_LABEL: "1"})


def app_files(client: Any, tracker: Tracker, image: str) -> dict[str, tuple]:
    """Every entry under /app: (type, uid, gid, mode, size, sha256 of the content, link target)."""
    container = client.api.create_container(image, command=["true"], labels={TEST_LABEL: "1"})
    tracker.containers.append(container["Id"])
    stream, _ = client.api.get_archive(container["Id"], "/app")
    out: dict[str, tuple] = {}
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream)), mode="r:") as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member).read() if member.isreg() else b""  # type: ignore[union-attr]
            mode = None if member.issym() else member.mode & 0o7777
            digest = hashlib.sha256(data).hexdigest()
            out[member.name] = (member.type, member.uid, member.gid, mode, member.size, digest, member.linkname)
    return out


def left_behind(client: Any) -> list[dict[str, Any]]:
    """This test session's assembly containers (they carry the spec's labels, the test label among them)."""
    return client.api.containers(all=True, filters={"name": ASSEMBLE_CONTAINER_PREFIX, "label": [f"{TEST_LABEL}=1"]})


def config_of(client: Any, image: str) -> dict[str, Any]:
    config = client.api.inspect_image(image)["Config"]
    keys = ("User", "WorkingDir", "Cmd", "Entrypoint", "Labels", "Volumes", "ExposedPorts", "StopSignal",
            "Healthcheck", "OnBuild", "Shell")  # fmt: skip
    return {key: config.get(key) for key in keys} | {"Env": sorted(config.get("Env") or [])}


@pytest.mark.docker
def test_the_assembled_image_is_the_built_one(docker_client, base_ready: str, tracker: Tracker, tmp_path: Path) -> None:
    context = make_context(tmp_path, RENDERED)
    spec = spec_for(context, RENDERED)
    built_tag, assembled_tag = f"mcs-asm-built:{spec.version[:12]}", f"mcs-asm-assembled:{spec.version[:12]}"
    tracker.images += [assembled_tag, built_tag]
    built_id, build_log = build_image(docker_client, context, built_tag, spec, None)
    assert "Step " in build_log
    plan = plan_assembly(RENDERED, {})
    assert plan is not None
    steps: list[str] = []
    assembled = assemble_image(docker_client, context, assembled_tag, spec, plan, spec.labels, steps.append)
    assert assembled is not None
    assembled_id, log = assembled
    assert assembled_id != built_id and log.startswith(f"assembled {assembled_tag} ")
    assert any(s.startswith(f"assembled {assembled_tag}") for s in steps), steps

    assert config_of(docker_client, assembled_tag) == config_of(docker_client, built_tag)
    files = app_files(docker_client, tracker, assembled_tag)
    assert files == app_files(docker_client, tracker, built_tag)
    # What the recipe's chmod makes: root's files, nothing writable by the worker, the execute bit kept.
    assert files["app/open.txt"][1:4] == (0, 0, 0o644) and files["app/private.py"][3] == 0o644
    assert files["app/tool.sh"][3] == 0o755 and files["app/pkg/sub"][3] == 0o755 and files["app/empty"][3] == 0o755
    assert files["app/pkg"][3] == 0o2755
    assert {(entry[1], entry[2]) for entry in files.values()} == {(0, 0)}
    assert files["app/link.json"][6] == "pkg/sub/data.json"
    # One layer over the FROM image's, and no container left.
    base_layers = docker_client.api.inspect_image(base_ready)["RootFS"]["Layers"]
    layers = docker_client.api.inspect_image(assembled_tag)["RootFS"]["Layers"]
    assert layers[: len(base_layers)] == base_layers and len(layers) == len(base_layers) + 1
    assert left_behind(docker_client) == []


@pytest.mark.docker
def test_a_deploy_build_of_the_rendered_recipe_is_assembled_and_a_custom_one_built(
    docker_client, base_ready: str, tracker: Tracker, tmp_path: Path
) -> None:
    def deploy_build(dockerfile: str) -> tuple[str, str]:
        """build_in_context of a new folder with ``dockerfile``, as a deploy runs it: (tag, log)."""
        spec = spec_for(make_context(tmp_path, dockerfile), dockerfile)
        tag = f"mcs-asm_task:{spec.version}"
        tracker.images.append(tag)
        kwargs = {"base_image": BASE, "max_requirements": 10, "wheel_cache_dir": tmp_path / "w", "progress": None}
        return tag, build_in_context(docker_client, spec, tag, [], **kwargs)[1]

    tag, log = deploy_build(RENDERED)
    assert log.startswith(f"assembled {tag} ") and "Step " not in log
    labels = docker_client.api.inspect_image(tag)["Config"]["Labels"]
    assert labels["mcs.version"] == tag.split(":")[1] and labels[TEST_LABEL] == "1" and labels["mcs.base"] == "1"
    # A Dockerfile with a step of its own goes to the builder, as before.
    _, log = deploy_build(RENDERED.replace("USER 10001:10001", 'RUN ["true"]\nUSER 10001:10001'))
    assert "Step " in log and not log.startswith("assembled")
    # A recipe's LABEL of a key the deploy worker sets: the builder, whose labels come last, so that the worker's
    # win (an assembly would let the recipe's win).
    claims = RENDERED.replace("USER 10001:10001", "LABEL mcs.task=someone_else mcs.managed=1\nUSER 10001:10001")
    claiming_tag, log = deploy_build(claims)
    assert "Step " in log and not log.startswith("assembled")
    assert docker_client.api.inspect_image(claiming_tag)["Config"]["Labels"]["mcs.task"] == "asm_task"


FROM_IMAGES = {
    "that has the folder (the copy would merge into it)": ({}, True),
    "with a VOLUME (a container of it gets a volume the commit leaves out)": ({"changes": ["VOLUME /data"]}, False),
    "with ONBUILD triggers (the builder runs them)": ({"changes": ["ONBUILD RUN true"]}, False),
}


@pytest.mark.docker
@pytest.mark.parametrize(("commit", "with_app"), FROM_IMAGES.values(), ids=FROM_IMAGES.keys())
def test_from_images_the_assembly_leaves_to_the_builder(
    docker_client, base_ready: str, tracker: Tracker, tmp_path: Path, commit: dict[str, Any], with_app: bool
) -> None:
    holder = docker_client.api.create_container(base_ready, command=["true"], labels={TEST_LABEL: "1"})
    tracker.containers.append(holder["Id"])
    if with_app:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo("app")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        docker_client.api.put_archive(holder["Id"], "/", buffer.getvalue())
    from_ref = f"mcs-asm-from:{uuid.uuid4().hex[:8]}"
    docker_client.api.commit(holder["Id"], *from_ref.split(":"), conf={"Labels": {TEST_LABEL: "1"}}, **commit)
    tracker.images.append(from_ref)
    dockerfile = recipe(**{f"FROM {BASE}": f"FROM {from_ref}"})
    spec = spec_for(make_context(tmp_path, dockerfile), dockerfile)
    plan = plan_assembly(dockerfile, {})
    assert plan is not None
    tag = f"mcs-asm-x:{spec.version[:12]}"
    tracker.images.append(tag)
    assert assemble_image(docker_client, spec.folder, tag, spec, plan, spec.labels, None) is None
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tag)
    assert left_behind(docker_client) == []
    assert not docker_client.api.volumes(filters={"dangling": True}).get("Volumes")


@pytest.mark.docker
def test_a_failed_assembly_leaves_no_container_and_no_image(
    docker_client, base_ready: str, tracker: Tracker, tmp_path: Path
) -> None:
    spec = spec_for(make_context(tmp_path, RENDERED), RENDERED)
    tag = f"mcs-asm-fail:{spec.version[:12]}"
    tracker.images.append(tag)
    bad = Assembly(base=BASE, dest="/app", changes=("USER root", "NOSUCHINSTRUCTION x"))
    with pytest.raises(DeployError) as caught:
        assemble_image(docker_client, spec.folder, tag, spec, bad, spec.labels, None)
    assert caught.value.details["step"] == "build"
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tag)
    assert left_behind(docker_client) == []

    # A pipe in the context is not a file the recipe could copy: refused, and nothing left.
    fifo_context = make_context(tmp_path, RENDERED)
    os.mkfifo(fifo_context / "pipe")
    plan = plan_assembly(RENDERED, {})
    assert plan is not None
    with pytest.raises(DeployError, match="not a file, folder or link"):
        assemble_image(docker_client, fifo_context, tag, spec, plan, spec.labels, None)
    assert left_behind(docker_client) == []

    # A container an assembly left (its deploy worker died) is removed by the runtime's housekeeping once it is old.
    name = f"{ASSEMBLE_CONTAINER_PREFIX}{spec.task_name}-{spec.version[:12]}-dead00"
    left = docker_client.api.create_container(base_ready, command=["true"], name=name, labels={TEST_LABEL: "1"})
    tracker.containers.append(left["Id"])
    assert assemble_image(docker_client, spec.folder, tag, spec, plan, spec.labels, None) is not None  # not in its way
    ours = {TEST_LABEL: "1"}
    assert remove_stale_assemblies(docker_client, labels=ours) == []  # new: it may be an assembly under way
    assert remove_stale_assemblies(docker_client, older_than_s=0, labels=ours) == [name]
