"""The image build of one task version: a temporary build context, its dependencies, the daemon's build stream.

The deployment folder is copied to a temporary context (so the folder stays as it was) and the task's validated
requirement lines replace its ``requirements.txt``. Their wheels are resolved once per requirement set
(:func:`deploy_mcp.docker.wheelhouse.resolve_wheelhouse`, cached). A Dockerfile that declares ``ARG
MCS_DEPS_IMAGE`` (MCS's rendered recipe) gets the task's dependency image (:mod:`deploy_mcp.docker.deps`: made once
per set and base image, shared by every task with that set), or the base image without requirements, and no
wheelhouse in its context; any other Dockerfile gets ``wheelhouse/`` in its context, as before, and installs
from it itself. A recipe made only of the instructions MCS's rendered one uses is applied without the builder,
by one container commit (:mod:`deploy_mcp.docker.assemble`); any other is built by the daemon with
``network_mode="none"``, its labels set by one ``LABEL`` step appended to the Dockerfile (the daemon would make
one step per label), or by the build's labels when a value is not plain. A failed build leaves neither step
containers nor the step images it created; images that existed before are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

import docker.errors

from deploy_mcp.docker.assemble import assemble_image, plan_assembly
from deploy_mcp.docker.client import docker_errors, get_image
from deploy_mcp.docker.containers import labels_of
from deploy_mcp.docker.deps import LABEL_DEPS, ensure_deps_image
from deploy_mcp.docker.wheelhouse import ResolvedSet, StaleWheel, resolve_wheelhouse
from deploy_mcp.runtime import LABEL_MANAGED, LABEL_TASK, LABEL_VERSION, BuildSpec, Progress, say
from mcs.core.errors import DeployError, MCSError, ServiceUnavailable
from mcs.core.worker_image import DEPS_ARG, uses_deps_image

logger = logging.getLogger(__name__)

BUILD_LOG_TAIL_LINES = 60
BUILD_MEMORY_BYTES = 2 * 1024**3  # for RUN steps during the build (pip install from the wheelhouse)

_STEP_IMAGE = re.compile(r" ---> ([0-9a-f]{12})")
_PLAIN_LABEL_KEY = re.compile(r"[A-Za-z0-9._/-]{1,128}")
_PLAIN_LABEL_VALUE = re.compile(r"[A-Za-z0-9._/:@+,=-]{1,1024}")
_STEP_CONTAINER = re.compile(r" ---> Running in ([0-9a-f]{12})")


def build_in_context(
    client: Any,
    spec: BuildSpec,
    tag: str,
    requirements: list[str],
    *,
    base_image: str,
    max_requirements: int,
    wheel_cache_dir: Path | None,
    progress: Progress | None,
) -> tuple[str, str]:
    """Build ``tag`` from a copy of ``spec.folder`` with ``spec.dockerfile``; returns (image id, build log tail)."""
    folder = Path(spec.folder)
    with_deps_arg = uses_deps_image(spec.dockerfile)
    labels = dict(spec.labels)
    buildargs: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="mcs-build-") as tmp:
        context = Path(tmp) / "context"
        try:
            shutil.copytree(folder, context, symlinks=True)
            wheelhouse = context / "wheelhouse"
            if (requirements or with_deps_arg) and (wheelhouse.is_symlink() or wheelhouse.exists()):
                # Never the folder's own: ours, or none (a deps-image recipe installs nothing from the context).
                if wheelhouse.is_symlink() or wheelhouse.is_file():
                    wheelhouse.unlink()
                else:
                    shutil.rmtree(wheelhouse)
            if requirements:
                # Exactly the validated lines: an option line in the folder's file cannot reach pip.
                (context / "requirements.txt").write_text("\n".join(requirements) + "\n")
        except OSError as exc:
            raise DeployError(
                f"cannot prepare the build context from {folder}: {exc}", step="build", folder=str(folder)
            ) from exc
        if requirements:
            resolve = {"base_image": base_image, "client": client, "max_requirements": max_requirements}
            resolve |= {"extra_labels": spec.extra_labels, "verify": False}
            resolved = resolve_wheelhouse(requirements, wheel_cache_dir, progress, **resolve)
            assert resolved is not None
            try:
                _use_wheels(client, resolved, spec, context, with_deps_arg, buildargs, progress)
            except StaleWheel:  # a cache file changed since it was stored: the set is resolved again
                resolved = resolve_wheelhouse(requirements, wheel_cache_dir, progress, **resolve)
                assert resolved is not None
                _use_wheels(client, resolved, spec, context, with_deps_arg, buildargs, progress)
            if with_deps_arg:
                labels[LABEL_DEPS] = "0"  # built on a dependency image, not one itself
        elif with_deps_arg:
            buildargs[DEPS_ARG] = base_image
        plan = plan_assembly(spec.dockerfile, buildargs)
        if plan is not None:
            try:
                (context / "Dockerfile").write_text(spec.dockerfile)
            except OSError as exc:
                raise DeployError(f"cannot write the build context: {exc}", step="build", folder=str(folder)) from exc
            assembled = assemble_image(client, context, tag, spec, plan, labels, progress)
            if assembled is not None:
                return assembled
        dockerfile = spec.dockerfile
        if _plain_labels(labels) and not dockerfile.rstrip().endswith("\\"):
            line = "LABEL " + " ".join(f"{key}={value}" for key, value in labels.items())
            dockerfile = dockerfile.rstrip("\n") + "\n# Added by the deploy worker (its labels):\n" + line + "\n"
            labels = {}
        try:
            (context / "Dockerfile").write_text(dockerfile)
        except OSError as exc:
            raise DeployError(f"cannot write the build context: {exc}", step="build", folder=str(folder)) from exc
        return build_image(client, context, tag, spec, progress, labels=labels, buildargs=buildargs)


def _use_wheels(
    client: Any,
    resolved: ResolvedSet,
    spec: BuildSpec,
    context: Path,
    with_deps_arg: bool,
    buildargs: dict[str, str],
    progress: Progress | None,
) -> None:
    """The dependency image as the build argument, or the wheels into the context's ``wheelhouse/``."""
    if with_deps_arg:
        deps = ensure_deps_image(client, resolved, extra_labels=spec.extra_labels, progress=progress)
        buildargs[DEPS_ARG] = deps.ref
    else:
        resolved.copy_to(context / "wheelhouse")


def _plain_labels(labels: dict[str, str]) -> bool:
    """Labels a ``LABEL`` line can carry as they are: no quoting, no variable substitution, nothing to escape."""
    return all(_PLAIN_LABEL_KEY.fullmatch(str(k)) and _PLAIN_LABEL_VALUE.fullmatch(str(v)) for k, v in labels.items())


def build_image(
    client: Any,
    context: Path,
    tag: str,
    spec: BuildSpec,
    progress: Progress | None,
    *,
    labels: dict[str, str] | None = None,
    buildargs: dict[str, str] | None = None,
) -> tuple[str, str]:
    """Run the daemon's build of ``context`` as ``tag``; returns (image id, the last lines of the build log).

    ``labels`` default to the spec's (an empty dict: the Dockerfile sets them itself).

    A failed build raises DeployError(step="build", build_log_tail=...) after removing what it left.
    """
    log: deque[str] = deque(maxlen=400)
    step_images: list[str] = []
    step_containers: list[str] = []
    error: str | None = None
    image_id: str | None = None
    pending = ""

    def take(line: str) -> None:
        log.append(line)
        if line.startswith("Step "):
            say(progress, line, logger)
        elif match := _STEP_CONTAINER.fullmatch(line):
            step_containers.append(match.group(1))
        elif match := _STEP_IMAGE.fullmatch(line):
            step_images.append(match.group(1))

    before = image_ids(client)
    try:
        with docker_errors(f"the build of {tag}", step="build", image=tag):
            try:
                stream = client.api.build(
                    path=str(context),
                    tag=tag,
                    dockerfile="Dockerfile",
                    network_mode="none",
                    rm=True,
                    forcerm=True,
                    pull=False,
                    labels=spec.labels if labels is None else labels,
                    buildargs=buildargs or None,
                    container_limits={"memory": BUILD_MEMORY_BYTES, "memswap": BUILD_MEMORY_BYTES},
                    decode=True,
                )
                for chunk in stream:
                    if "stream" in chunk:
                        pending += str(chunk["stream"])
                        *lines, pending = pending.split("\n")
                        for line in lines:
                            take(line.rstrip("\r"))
                    elif "error" in chunk or "errorDetail" in chunk:
                        error = str(chunk.get("error") or (chunk.get("errorDetail") or {}).get("message") or chunk)
                        log.append(error)
                    elif isinstance(chunk.get("aux"), dict) and chunk["aux"].get("ID"):
                        image_id = str(chunk["aux"]["ID"])
            except docker.errors.APIError as exc:  # e.g. a Dockerfile the daemon cannot parse
                error = exc.explanation or str(exc)
                log.append(error)
    except ServiceUnavailable:
        cleanup_failed_build(client, spec, before, step_images, step_containers)
        raise
    if pending:
        take(pending)
    tail = "\n".join(list(log)[-BUILD_LOG_TAIL_LINES:])
    if error is None:
        image = get_image(client, tag)
        if image is None:
            error = f"the build finished but {tag} is not there"
        elif labels_of(image.attrs).get(LABEL_VERSION) != spec.version:
            error = f"{tag} lacks the label {LABEL_VERSION}={spec.version}"
        elif image_id is not None and image.id != image_id:
            # A concurrent build of the same version tagged its image last: same content, keep that one.
            logger.info("%s was tagged by a concurrent build of the same version; using that image", tag)
            cleanup_failed_build(client, spec, before | {image.id}, step_images, step_containers)
            return image.id, tail
        else:
            logger.debug("build log of %s:\n%s", tag, "\n".join(log))
            return image.id, tail
    cleanup_failed_build(client, spec, before, step_images, step_containers)
    raise DeployError(
        f"the image build of {spec.task_name} (version {spec.version[:12]}) failed: {error}",
        step="build",
        image=tag,
        build_log_tail=tail,
    )


def cleanup_failed_build(
    client: Any, spec: BuildSpec, before: set[str], step_images: list[str], step_containers: list[str]
) -> None:
    """Remove what a failed build made: step containers (forcerm does too), new untagged step images, and
    dangling images labelled with this task and version. Images that existed before are never touched."""
    try:
        with docker_errors("cleanup of a failed build", step="build"):
            for short in step_containers:
                with contextlib.suppress(docker.errors.NotFound):
                    client.containers.get(short).remove(force=True)
            now = image_ids(client)
            created = [i for s in reversed(step_images) for i in now - before if i.split(":")[-1].startswith(s)]
            labelled = client.images.list(
                all=True,
                filters={
                    "dangling": True,
                    "label": [
                        f"{LABEL_MANAGED}=1",
                        f"{LABEL_TASK}={spec.task_name}",
                        f"{LABEL_VERSION}={spec.version}",
                    ],
                },
            )
            for image_id in [*(i.id for i in labelled), *created]:
                try:
                    if client.api.inspect_image(image_id).get("RepoTags"):
                        continue  # tagged by someone: not a leftover of this build
                    client.images.remove(image_id, force=False, noprune=True)
                    logger.info("removed image %s left by the build", image_id[:19])
                except docker.errors.APIError as exc:  # gone already, or a layer another image builds on
                    logger.debug("kept image %s: %s", image_id[:19], exc.explanation or exc)
    except MCSError as exc:
        logger.warning("could not remove everything the failed build of %s left: %s", spec.task_name, exc)


def image_ids(client: Any) -> set[str]:
    """The ids of every image the daemon has, intermediate ones included."""
    with docker_errors("list images"):
        return set(client.api.images(all=True, quiet=True))
