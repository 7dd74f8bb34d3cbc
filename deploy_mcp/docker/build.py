"""The image build of one task version: a temporary build context, the wheelhouse, the daemon's build stream.

The deployment folder is copied to a temporary context (so the folder stays as it was); the task's validated
requirement lines and their wheelhouse (:func:`deploy_mcp.docker.wheelhouse.prepare_wheelhouse`) are added, and
the image is built with ``network_mode="none"``. A failed build leaves neither step containers nor the step
images it created; images that existed before are never touched.
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

from deploy_mcp.docker.client import docker_errors, get_image
from deploy_mcp.docker.containers import labels_of
from deploy_mcp.docker.wheelhouse import prepare_wheelhouse
from deploy_mcp.runtime import LABEL_MANAGED, LABEL_TASK, LABEL_VERSION, BuildSpec, Progress, say
from mcs.core.errors import DeployError, MCSError, ServiceUnavailable

logger = logging.getLogger(__name__)

BUILD_LOG_TAIL_LINES = 60
BUILD_MEMORY_BYTES = 2 * 1024**3  # for RUN steps during the build (pip install from the wheelhouse)

_STEP_IMAGE = re.compile(r" ---> ([0-9a-f]{12})")
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
    with tempfile.TemporaryDirectory(prefix="mcs-build-") as tmp:
        context = Path(tmp) / "context"
        try:
            shutil.copytree(folder, context, symlinks=True)
            (context / "Dockerfile").write_text(spec.dockerfile)
        except OSError as exc:
            raise DeployError(
                f"cannot prepare the build context from {folder}: {exc}", step="build", folder=str(folder)
            ) from exc
        if requirements:
            # Exactly the validated lines: an option line in the folder's file cannot reach pip.
            (context / "requirements.txt").write_text("\n".join(requirements) + "\n")
            wheelhouse = context / "wheelhouse"
            if wheelhouse.is_symlink() or wheelhouse.is_file():
                wheelhouse.unlink()
            elif wheelhouse.exists():
                shutil.rmtree(wheelhouse)
            prepare_wheelhouse(
                requirements,
                wheelhouse,
                wheel_cache_dir,
                progress,
                base_image=base_image,
                client=client,
                max_requirements=max_requirements,
                extra_labels=spec.extra_labels,
            )
        return build_image(client, context, tag, spec, progress)


def build_image(client: Any, context: Path, tag: str, spec: BuildSpec, progress: Progress | None) -> tuple[str, str]:
    """Run the daemon's build of ``context`` as ``tag``; returns (image id, the last lines of the build log).

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
                    labels=spec.labels,
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
