"""The worker base image: built locally when missing, with no container registry.

Recipe (checked on the reference machines, see ``/work/shared/reference/environment.md``; the values are in
:mod:`deploy_mcp.docker.recipe`, the host-side steps in :mod:`deploy_mcp.docker.rootfs`):

1. ``debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm ROOT MIRROR``
2. inside ROOT, under ``chroot`` with a clean environment (``/usr/bin/env -i``), create a venv at ``/opt/venv``
   with the folder's own interpreter and pip-install the pinned ``BASE_PINS`` of :mod:`mcs.core.worker_image`
   into it (the host's CA bundle is copied in for pip and removed afterwards; ``pip --isolated`` ignores any pip
   configuration)
3. add the non-root worker user ``mcs`` (uid/gid 10001), remove caches, apt lists, logs and docs
4. stream ``tar -C ROOT -c .`` into the Docker engine's image import, with ``ENV``/``LABEL`` changes

The temporary root folder is always removed, also on failure (mounts debootstrap may leave behind are detached
first, so the removal never walks into the host's ``/proc``, ``/sys`` or ``/dev``). Failures are MCS errors with
the tail of the failing command's output in ``details["output_tail"]``.

Command line: ``python -m deploy_mcp.docker.base_image [--force]`` (``make base-image``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import docker.errors

from deploy_mcp.docker import rootfs
from deploy_mcp.docker.client import DAEMON_ERRORS, client_or_own, docker_errors, get_image
from deploy_mcp.docker.recipe import (
    BASE_IMAGE_PREFIX,
    LABEL_BASE,
    LABEL_RECIPE,
    SUITE,
    import_changes,
    is_local_recipe_image,
    recipe_hash,
    split_image_ref,
    tar_argv,
)
from deploy_mcp.host_tools import tail
from deploy_mcp.runtime import Progress, say
from mcs.core.errors import DeployError, MCSError, ServiceUnavailable
from mcs.core.settings import Settings
from mcs.core.worker_image import BASE_PINS, VENV_DIR, WORKER_GID, WORKER_UID, WORKER_USER

logger = logging.getLogger("deploy_mcp.docker.base_image")  # the same name under `python -m`


def ensure_base_image(settings: Settings, client: Any = None, progress: Progress | None = None) -> str:
    """Return ``settings.worker_base_image``, making it available first when it is missing.

    Present already: returns after one image lookup (a few ms). An ``mcs-base*`` image that an older recipe made
    (its ``mcs.base.recipe`` label differs from :func:`recipe_hash`) is rebuilt. Missing ``mcs-base*``: built
    with :func:`build_base_image`. Missing other image (``python:3.12-slim``): pulled; a failed pull raises
    :class:`ServiceUnavailable` (registry unreachable) or :class:`DeployError` (no such image) saying how to fix it.
    """
    ref = settings.worker_base_image
    with client_or_own(client) as docker_client:
        image = get_image(docker_client, ref)
        if image is not None:
            if not _is_stale(image):
                return ref
            logger.warning("base image %s was built from an older recipe; rebuilding it", ref)
        if not is_local_recipe_image(ref):
            return _pull(docker_client, ref, progress)
        with _build_lock(ref):
            # Another process may have built it while this one waited for the lock.
            image = get_image(docker_client, ref)
            if image is not None and not _is_stale(image):
                return ref
            return build_base_image(settings, docker_client, progress)


def build_base_image(settings: Settings, client: Any, progress: Progress | None = None) -> str:
    """Build ``settings.worker_base_image`` from scratch with the recipe (always; no existence check)."""
    ref = settings.worker_base_image
    if not is_local_recipe_image(ref):
        raise DeployError(
            f"{ref!r} is not built locally: only images named {BASE_IMAGE_PREFIX}* are; pull it instead "
            "(ensure_base_image does) or set MCS_WORKER_BASE_IMAGE to the default mcs-base:bookworm-py311",
            step="build_base_image",
            image=ref,
        )
    rootfs.check_build_prerequisites()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="mcs-base-"))
    root = workdir / "rootfs"
    try:
        root.mkdir()
        say(progress, f"debootstrap {SUITE} (about 40 s)", logger)
        t0 = time.monotonic()
        rootfs.debootstrap(root)
        logger.info("debootstrap done in %.1f s", time.monotonic() - t0)

        say(progress, f"pip install {' '.join(BASE_PINS)} into {VENV_DIR} (about 10 s)", logger)
        t0 = time.monotonic()
        rootfs.install_venv(root)
        logger.info("venv and pip install done in %.1f s", time.monotonic() - t0)

        say(progress, f"add user {WORKER_USER} ({WORKER_UID}:{WORKER_GID}) and slim the root folder", logger)
        rootfs.add_worker_user(root)
        rootfs.slim_rootfs(root)

        say(progress, f"import image {ref} (about 5 s)", logger)
        t0 = time.monotonic()
        image_id = _import(client, root, ref, workdir)
        logger.info("import done in %.1f s", time.monotonic() - t0)
    finally:
        rootfs.remove_tree(workdir)
    image = get_image(client, ref)
    size = int(image.attrs.get("Size", 0)) if image is not None else 0
    say(progress, f"built {ref} ({image_id[:19]}, {size / 1e6:.0f} MB) in {time.monotonic() - started:.0f} s", logger)
    return ref


def _import(client: Any, root: Path, ref: str, workdir: Path) -> str:
    """Stream ``tar -C root -c .`` into the engine's image import; returns the new image id."""
    repo, tag = split_image_ref(ref)
    argv = tar_argv(root)
    with (workdir / "tar.stderr").open("w+b") as tar_err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=tar_err, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        try:
            with docker_errors("import", image=ref):
                try:
                    raw = client.api.import_image(
                        src=proc.stdout, repository=repo, tag=tag, changes=import_changes(), stream_src=True
                    )
                finally:
                    proc.stdout.close()
                    returncode = proc.wait(timeout=rootfs.SMALL_STEP_TIMEOUT_S)
        except MCSError as exc:
            proc.kill()
            tar_err.seek(0)
            exc.details.setdefault("output_tail", tail(tar_err.read()))
            raise
        tar_err.seek(0)
        tar_output = tar_err.read()
    if returncode != 0:
        raise DeployError(
            f"tar of the base image folder failed with exit code {returncode}",
            step="import",
            command=argv,
            returncode=returncode,
            output_tail=tail(tar_output),
        )
    image_id = ""
    for line in str(raw).splitlines():
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict) and message.get("error"):
                raise DeployError(f"docker import of {ref} failed: {message['error']}", step="import", image=ref)
            if isinstance(message, dict) and str(message.get("status", "")).startswith("sha256:"):
                image_id = message["status"]
    if get_image(client, ref) is None:
        raise DeployError(
            f"docker import finished but {ref} is not there", step="import", image=ref, output_tail=tail(raw)
        )
    return image_id


def _is_stale(image: Any) -> bool:
    """An image this module built (label mcs.base=1) from a different recipe. Foreign images are never stale."""
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    return labels.get(LABEL_BASE) == "1" and labels.get(LABEL_RECIPE) != recipe_hash()


def _pull(client: Any, ref: str, progress: Progress | None) -> str:
    """Pull a registry image; here a failure means the registry, not the daemon: its own translation."""
    repo, tag = split_image_ref(ref)
    say(progress, f"pull {ref}", logger)
    fix = (
        "no registry answered here: use the locally built base image (unset MCS_WORKER_BASE_IMAGE, default "
        "mcs-base:bookworm-py311, then `make base-image`), or load the image yourself (docker load -i FILE)"
    )
    try:
        client.images.pull(repo, tag=tag)
    except docker.errors.NotFound as exc:
        raise DeployError(
            f"base image {ref} does not exist in its registry (or access is denied): {exc}; {fix}",
            step="pull",
            image=ref,
        ) from exc
    except DAEMON_ERRORS as exc:
        raise ServiceUnavailable(f"cannot pull base image {ref}: {exc}; {fix}", service="registry", image=ref) from exc
    return ref


@contextlib.contextmanager
def _build_lock(ref: str) -> Iterator[None]:
    """One build per image name on this machine at a time (other processes wait, then find the image)."""
    name = hashlib.sha256(ref.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"mcs-base-image-{name}.lock"
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- Command line --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy_mcp.docker.base_image",
        description="Build the MCS worker base image locally (debootstrap + pinned Celery), without a registry.",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when the image already exists")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command and its output")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )

    def progress(message: str) -> None:
        print(f"[base-image] {message}", file=sys.stderr, flush=True)

    from mcs.core.settings import load_settings

    try:
        settings = load_settings()
        with client_or_own(None) as client:
            if args.force:
                if not is_local_recipe_image(settings.worker_base_image):
                    ref = _pull(client, settings.worker_base_image, progress)
                else:
                    with _build_lock(settings.worker_base_image):
                        ref = build_base_image(settings, client, progress)
            else:
                ref = ensure_base_image(settings, client, progress)
    except MCSError as exc:
        print(f"[base-image] error: {exc.message}", file=sys.stderr)
        for key, value in exc.details.items():
            print(f"[base-image]   {key}: {value}", file=sys.stderr)
        return 1
    progress(f"ready: {ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
