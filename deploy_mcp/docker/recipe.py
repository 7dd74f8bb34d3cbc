"""The recipe of the worker base image: everything that shapes it, as data and argument lists, and its hash.

The worker side of it (user, venv, pins) is the worker image contract of :mod:`mcs.core.worker_image`; this
module adds how the image is made (Debian suite, mirror, debootstrap variant and packages, image environment).
:func:`recipe_hash` covers all of it and is stored in the image's ``mcs.base.recipe`` label, so an image an
older recipe made is recognised and rebuilt. Pure functions: no process runs and no daemon is asked here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deploy_mcp.host_tools import proxy_environment
from mcs.core.worker_image import BASE_PINS, VENV_DIR, WORKER_GID, WORKER_UID, WORKER_USER

BASE_IMAGE_PREFIX = "mcs-base"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_VARIANT = "minbase"
DEBOOTSTRAP_INCLUDE: tuple[str, ...] = ("python3", "python3-venv", "ca-certificates")
IMAGE_ENV: tuple[tuple[str, str], ...] = (
    ("PATH", f"{VENV_DIR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ("HOME", "/tmp"),  # noqa: S108 - inside the container: its tmpfs, the only writable place
    ("PYTHONDONTWRITEBYTECODE", "1"),
    ("PYTHONUNBUFFERED", "1"),
)
#: Bump when the build steps change in a way the values above do not capture.
RECIPE_VERSION = 1

LABEL_BASE = "mcs.base"
LABEL_RECIPE = "mcs.base.recipe"
LABEL_PINS = "mcs.base.pins"

#: Where the pip freeze of the venv is kept inside the image, for people debugging a worker.
FREEZE_FILE = "/etc/mcs-base-freeze.txt"
#: The host's CA bundle, copied here inside the root folder for pip and removed right after pip ran.
BUILD_CA_IN_ROOT = "/root/mcs-build-ca.crt"
_CHROOT_ENV: tuple[tuple[str, str], ...] = (("PATH", "/usr/bin:/bin"), ("HOME", "/root"))


def recipe(pins: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything that determines the image's content, as plain data (hashed into the recipe label)."""
    return {
        "recipe_version": RECIPE_VERSION,
        "suite": SUITE,
        "mirror": MIRROR,
        "variant": DEBOOTSTRAP_VARIANT,
        "include": list(DEBOOTSTRAP_INCLUDE),
        "venv": VENV_DIR,
        "pins": list(BASE_PINS if pins is None else pins),
        "user": [WORKER_USER, WORKER_UID, WORKER_GID],
        "env": [list(kv) for kv in IMAGE_ENV],
    }


def recipe_hash(pins: Sequence[str] | None = None) -> str:
    """A short, stable hash of :func:`recipe`; it changes whenever a pin or a build parameter changes."""
    canonical = json.dumps(recipe(pins), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def import_changes(pins: Sequence[str] | None = None) -> list[str]:
    """The Dockerfile instructions applied at import (``docker import -c``)."""
    pins = BASE_PINS if pins is None else pins
    changes = [f"ENV {name}={value}" for name, value in IMAGE_ENV]
    changes += [
        f"LABEL {LABEL_BASE}=1",
        f"LABEL {LABEL_RECIPE}={recipe_hash(pins)}",
        f"LABEL {LABEL_PINS}={','.join(pins)}",
    ]
    return changes


def chroot_argv(root: Path, *argv: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """``chroot ROOT /usr/bin/env -i PATH=... HOME=/root ARGV...``: an argument list with a clean environment.

    Only proxy variables are forwarded from ``environ`` (default ``os.environ``); ``PIP_*`` and everything else
    stay outside, because the host's pip settings (find-links, certs) break the install inside the folder.
    """
    assigns = [f"{k}={v}" for k, v in (*_CHROOT_ENV, *proxy_environment(environ).items())]
    return ["chroot", str(root), "/usr/bin/env", "-i", *assigns, *argv]


def debootstrap_argv(root: Path) -> list[str]:
    return [
        "debootstrap",
        f"--variant={DEBOOTSTRAP_VARIANT}",
        "--include=" + ",".join(DEBOOTSTRAP_INCLUDE),
        SUITE,
        str(root),
        MIRROR,
    ]


def pip_install_argv(pins: Sequence[str] | None = None) -> list[str]:
    """pip inside the folder: isolated from any pip config, no cache, wheels only (no setup.py runs)."""
    pins = BASE_PINS if pins is None else pins
    return [
        f"{VENV_DIR}/bin/python",
        "-m",
        "pip",
        "install",
        "--isolated",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-input",
        "--only-binary=:all:",
        "--cert",
        BUILD_CA_IN_ROOT,
        *pins,
    ]


def tar_argv(root: Path) -> list[str]:
    return ["tar", "--numeric-owner", "--one-file-system", "-C", str(root), "-c", "."]


def split_image_ref(ref: str) -> tuple[str, str]:
    """``repo[:tag]`` -> (repo, tag); a registry port (``host:5000/x``) is not mistaken for a tag."""
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
        return repo, tag
    return ref, "latest"


def is_local_recipe_image(ref: str) -> bool:
    """Images named ``mcs-base...`` are built here; anything else (``python:3.12-slim``) comes from a registry."""
    return ref.startswith(BASE_IMAGE_PREFIX)
