"""A task's dependency image: the base image plus its requirements, made once per requirement set and shared.

``mcs-deps:<key>`` is the base image with the wheels of one resolved requirement set installed into its venv by
:func:`mcs.core.worker_image.deps_install_argv`. ``<key>`` hashes the base image's id, the requirement lines, the
resolved wheels (names and sha256) and that command, so every task with the same requirement set on the same base
image builds ``FROM`` the same image (``ARG MCS_DEPS_IMAGE`` of the rendered Dockerfile): a code-only change, or a
second task with the same set, installs nothing.

It is made without a Dockerfile, because the classic builder has no way to use a file in a ``RUN`` step without a
layer holding it: a container of the base image (no network, all capabilities dropped, root in it only so that it
can write the root-owned venv) gets the wheelhouse with ``put_archive`` at ``/mcs-wheelhouse``, runs pip and then
deletes the wheelhouse in the same process, and is committed. The wheels are written and deleted in the
container's own writable layer, so the committed layer does not hold them (the install fails when the wheelhouse
could not be deleted). The container is named ``mcs-deps-install-<key>-<random>`` and removed whatever happens
(one a dead deploy worker left is removed by the next install of its key).

The image keeps the base image's user, working folder and command, and carries the labels ``mcs.managed=1``,
``mcs.deps=1``, ``mcs.deps.key``, ``mcs.deps.base`` (the base image id) and ``mcs.deps.requirements``. Task images
built on it say ``mcs.deps=0`` (they inherit its other labels, which name the dependency image they are built
on). Builds of the same key wait for each other (a lock in the wheelhouse cache), and an image that exists with
its key is used as it is. :func:`prune_deps_images` removes the ones no image is built on any more, some time
after their last use (``MCS_DEPS_KEEP_UNUSED_S``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import tarfile
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from deploy_mcp.docker.client import docker_errors, get_image, wait_for_exit
from deploy_mcp.docker.containers import labels_of
from deploy_mcp.docker.wheelhouse import ResolvedSet, cache_lock, pip_error_line
from deploy_mcp.host_tools import tail
from deploy_mcp.runtime import LABEL_MANAGED, Progress, say
from mcs.core.errors import DeployError, MCSError
from mcs.core.worker_image import DEPS_WHEELHOUSE, VENV_DIR, deps_install_argv

logger = logging.getLogger(__name__)

DEPS_REPOSITORY = "mcs-deps"
LABEL_DEPS = "mcs.deps"
LABEL_DEPS_KEY = "mcs.deps.key"
LABEL_DEPS_BASE = "mcs.deps.base"
LABEL_DEPS_REQUIREMENTS = "mcs.deps.requirements"
#: The name of the container an install runs in (``mcs-deps-install-<key>-<random>``): removed when it is done.
INSTALL_CONTAINER_PREFIX = "mcs-deps-install-"
#: Bump when the way the image is made changes in a way the key's other parts do not capture.
DEPS_FORMAT = 1
INSTALL_TIMEOUT_S = 900.0
INSTALL_MEMORY_BYTES = 2 * 1024**3
INSTALL_PIDS = 512

#: Runs in the container: pip (argv[2:]), then the wheelhouse (argv[1]) is deleted whatever pip did; the exit code
#: is pip's, and not 0 when the wheelhouse is still there.
_INSTALL_SCRIPT = (
    "import os, shutil, subprocess, sys\n"
    "try:\n"
    "    code = subprocess.call(sys.argv[2:])\n"
    "finally:\n"
    "    shutil.rmtree(sys.argv[1], ignore_errors=True)\n"
    "if os.path.lexists(sys.argv[1]):\n"
    "    print('ERROR: the wheelhouse could not be deleted', flush=True)\n"
    "    code = code or 3\n"
    "sys.exit(code)\n"
)


@dataclass(frozen=True)
class DepsImage:
    ref: str  # mcs-deps:<key>
    id: str
    key: str
    reused: bool  # True when it existed already: nothing was installed


def deps_key(resolved: ResolvedSet) -> str:
    canonical = json.dumps(
        {
            "format": DEPS_FORMAT,
            "base_image_id": resolved.base_image_id,
            "requirements": sorted(resolved.requirements),
            "wheels": dict(sorted(resolved.wheels.items())),
            "install": deps_install_argv(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def deps_image_ref(resolved: ResolvedSet) -> str:
    return f"{DEPS_REPOSITORY}:{deps_key(resolved)}"


def find_deps_image(client: Any, resolved: ResolvedSet) -> DepsImage | None:
    """The dependency image of ``resolved`` when it exists (with its key and base image labels), else None."""
    key = deps_key(resolved)
    ref = f"{DEPS_REPOSITORY}:{key}"
    image = get_image(client, ref)
    if image is None:
        return None
    labels = labels_of(image.attrs)
    if labels.get(LABEL_DEPS_KEY) != key or labels.get(LABEL_DEPS_BASE) != resolved.base_image_id:
        logger.warning("%s exists but does not carry its key; making it again", ref)
        return None
    return DepsImage(ref=ref, id=image.id, key=key, reused=True)


def ensure_deps_image(
    client: Any,
    resolved: ResolvedSet,
    *,
    extra_labels: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    timeout_s: float = INSTALL_TIMEOUT_S,
) -> DepsImage:
    """The dependency image of ``resolved``: the existing one, else made now (see the module's docstring).

    The wheels' digests are checked as they are packed (a changed cache file raises
    :class:`~deploy_mcp.docker.wheelhouse.StaleWheel`); a failed install raises DeployError(step="dependencies",
    output_tail=...) and leaves no container and no image.
    """
    key = deps_key(resolved)
    # Under the key's lock, as its removal is (prune_deps_images): an image found here is marked used before a
    # prune can look at it again.
    with cache_lock(resolved.cache, f"deps-{key}"):
        found = find_deps_image(client, resolved)
        if found is not None:
            _mark(resolved.cache, key, USED)
            say(progress, f"dependencies: {found.ref} exists ({len(resolved.wheels)} wheels installed); reusing it",
                logger)  # fmt: skip
            return found
        say(progress, f"dependencies: installing {len(resolved.wheels)} wheels into {DEPS_REPOSITORY}:{key}", logger)
        made = _make(client, resolved, key, dict(extra_labels or {}), timeout_s)
        _mark(resolved.cache, key, USED)
        return made


def prune_deps_images(
    client: Any,
    cache: Path,
    keep_unused_s: float,
    *,
    now: float | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[str]:
    """Remove the dependency images no image is built on any more; returns their references.

    An image is in use while any other image carries its key (task images inherit ``mcs.deps.key``, and so does
    an image a person built on it). One that is not is kept until ``keep_unused_s`` have passed both since a
    deploy last used it and since a prune first saw it unused (a task undeployed and deployed again soon after
    installs nothing); then it is removed under its key's lock, which a deploy holds while it picks the image.
    ``labels`` narrow it to the dependency images that carry them too (a test's). Failures are logged, never
    raised: pruning is housekeeping.
    """
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        with docker_errors("list dependency images", step="prune"):
            ours = {
                "label": [f"{LABEL_MANAGED}=1", f"{LABEL_DEPS}=1", *(f"{k}={v}" for k, v in (labels or {}).items())]
            }
            deps = client.images.list(name=DEPS_REPOSITORY, filters=ours)
            keyed = client.images.list(filters={"label": [LABEL_DEPS_KEY]})
        for image in deps:
            key = labels_of(image.attrs).get(LABEL_DEPS_KEY, "")
            ref = f"{DEPS_REPOSITORY}:{key}"
            if not _KEY.fullmatch(key) or ref not in image.tags:
                continue  # not one this module made (it tags each by its key)
            if any(other.id != image.id and labels_of(other.attrs).get(LABEL_DEPS_KEY) == key for other in keyed):
                _unmark(cache, key, UNUSED)
                continue
            with cache_lock(cache, f"deps-{key}"):
                unused_since = _mark(cache, key, UNUSED, only_if_missing=True)
                last = max(unused_since, _marked(cache, key, USED))
                if now - last < keep_unused_s:
                    continue
                with docker_errors("remove a dependency image", step="prune", image=ref):
                    try:
                        client.images.remove(ref, force=False, noprune=False)
                    except docker.errors.ImageNotFound:
                        pass
                    except docker.errors.APIError as exc:  # an image built on it meanwhile, a container of it
                        logger.info("kept %s: %s", ref, exc.explanation or exc)
                        continue
                _unmark(cache, key, UNUSED)
                _unmark(cache, key, USED)
            logger.info("removed %s: no image is built on it and it was not used for %.0f s", ref, now - last)
            removed.append(ref)
    except (MCSError, OSError) as exc:  # the daemon, or the cache's lock and stamp files
        logger.warning("could not prune dependency images: %s", exc)
    return removed


USED, UNUSED = "used", "unused"
_KEY = re.compile(r"[0-9a-f]{32}")


def _stamp(cache: Path, key: str, what: str) -> Path:
    return cache / "deps" / f"{key}.{what}"


def _mark(cache: Path, key: str, what: str, *, only_if_missing: bool = False) -> float:
    """Record ``what`` for ``key`` now (or keep the earlier record); returns the time recorded."""
    path = _stamp(cache, key, what)
    try:
        if only_if_missing and path.exists():
            return path.stat().st_mtime
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch()
        return path.stat().st_mtime
    except OSError as exc:
        logger.warning("could not record that %s was %s: %s", key, what, exc)
        return time.time()


def _marked(cache: Path, key: str, what: str) -> float:
    """When ``what`` was recorded for ``key``, or 0."""
    try:
        return _stamp(cache, key, what).stat().st_mtime
    except OSError:
        return 0.0


def _unmark(cache: Path, key: str, what: str) -> None:
    with contextlib.suppress(OSError):
        _stamp(cache, key, what).unlink()


def _make(client: Any, resolved: ResolvedSet, key: str, extra_labels: dict[str, str], timeout_s: float) -> DepsImage:
    ref = f"{DEPS_REPOSITORY}:{key}"
    labels = {
        **extra_labels,
        LABEL_MANAGED: "1",
        LABEL_DEPS: "1",
        LABEL_DEPS_KEY: key,
        LABEL_DEPS_BASE: resolved.base_image_id,
        LABEL_DEPS_REQUIREMENTS: ",".join(resolved.requirements),
    }
    with docker_errors("inspect base image", step="dependencies"):
        base = client.api.inspect_image(resolved.base_image_id)
    config = base.get("Config") or {}
    name = f"{INSTALL_CONTAINER_PREFIX}{key}-"
    with docker_errors("dependency install leftovers", step="dependencies"):
        # Under the key's lock: an install container of this key is what a deploy worker that died mid-install left.
        for leftover in client.containers.list(all=True, filters={"name": name}, ignore_removed=True):
            if leftover.name.startswith(name):
                logger.info("removing %s, left by an install that did not finish", leftover.name)
                with contextlib.suppress(docker.errors.NotFound):
                    leftover.remove(force=True)
    container = None
    with tempfile.TemporaryFile() as archive:
        _pack(resolved, archive)
        archive.seek(0)
        try:
            with docker_errors("dependency install container", step="dependencies"):
                container = client.containers.create(
                    resolved.base_image_id,
                    command=[f"{VENV_DIR}/bin/python", "-c", _INSTALL_SCRIPT, DEPS_WHEELHOUSE, *deps_install_argv()],
                    user="0:0",  # the venv belongs to root
                    network_mode="none",
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges"],
                    mem_limit=INSTALL_MEMORY_BYTES,
                    memswap_limit=INSTALL_MEMORY_BYTES,
                    pids_limit=INSTALL_PIDS,
                    name=f"{name}{uuid.uuid4().hex[:6]}",
                    labels=extra_labels,  # they end up on the image (with the ones of the commit below)
                    working_dir="/",
                )
                container.put_archive("/", archive)
                container.start()
            what = f"the install of {len(resolved.requirements)} requirements"
            code, output = wait_for_exit(container, timeout_s, what, "dependencies")
            if code != 0:
                raise DeployError(
                    f"pip install of the requirements failed with exit code {code}: {pip_error_line(output)}",
                    step="dependencies",
                    requirements=list(resolved.requirements),
                    output_tail=tail(output),
                )
            with docker_errors("dependency image commit", step="dependencies"):
                # The base image's user, folder and command again (a base image without one: its venv's python).
                changes = [
                    f"USER {config.get('User') or 'root'}",
                    f"WORKDIR {config.get('WorkingDir') or '/'}",
                    f"CMD {json.dumps(config.get('Cmd') or ['python'])}",
                ]
                image = container.commit(
                    repository=DEPS_REPOSITORY,
                    tag=key,
                    message=f"MCS dependencies: {', '.join(resolved.requirements)}",
                    changes=changes,
                    conf={"Labels": {**(config.get("Labels") or {}), **labels}},
                )
        finally:
            if container is not None:
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True)
    logger.info("made %s (%s) for %s", ref, image.id[:19], ", ".join(resolved.requirements))
    return DepsImage(ref=ref, id=image.id, key=key, reused=False)


def _pack(resolved: ResolvedSet, out: Any) -> None:
    """A tar of ``/mcs-wheelhouse``: requirements.txt and the verified wheels, root-owned, readable."""
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(DEPS_WHEELHOUSE.lstrip("/"))
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        data = ("\n".join(resolved.requirements) + "\n").encode()
        info = tarfile.TarInfo(f"{DEPS_WHEELHOUSE.lstrip('/')}/requirements.txt")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
        for name, path in resolved.verified_wheels():
            info = tarfile.TarInfo(f"{DEPS_WHEELHOUSE.lstrip('/')}/{name}")
            info.size, info.mode = path.stat().st_size, 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
