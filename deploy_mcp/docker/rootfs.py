"""The base image's root folder on the host: debootstrap, the venv with the pinned packages, the worker user,
slimming, and a removal that never walks through a mount.

Steps of :func:`deploy_mcp.docker.base_image.build_base_image`, run as root with argument lists only (never a
shell); a failing command becomes :class:`DeployError` with the tail of its output (:func:`host_tools.run`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from deploy_mcp.docker.recipe import BUILD_CA_IN_ROOT, FREEZE_FILE, chroot_argv, debootstrap_argv, pip_install_argv
from deploy_mcp.host_tools import HOST_CA_BUNDLE, run
from mcs.core.errors import DeployError
from mcs.core.worker_image import VENV_DIR, WORKER_GID, WORKER_UID, WORKER_USER

logger = logging.getLogger(__name__)

DEBOOTSTRAP_TIMEOUT_S = 1200.0
PIP_TIMEOUT_S = 900.0
SMALL_STEP_TIMEOUT_S = 120.0

FIX_BUILD = (
    "run `make base-image` (python -m deploy_mcp.docker.base_image) as root on a Debian/Ubuntu host with "
    "debootstrap installed (apt-get install -y debootstrap) and deb.debian.org and pypi.org reachable"
)


def check_build_prerequisites() -> None:
    """Root, the tools and the host CA bundle, or a DeployError saying how to get them."""
    if os.geteuid() != 0:
        raise DeployError(
            "building the base image needs root (debootstrap and chroot); " + FIX_BUILD,
            step="prerequisites",
        )
    missing = [tool for tool in ("debootstrap", "chroot", "tar", "umount") if shutil.which(tool) is None]
    if missing:
        raise DeployError(
            f"building the base image needs {', '.join(missing)} on PATH; " + FIX_BUILD,
            step="prerequisites",
            missing=missing,
        )
    if not HOST_CA_BUNDLE.is_file():
        raise DeployError(
            f"the host CA bundle {HOST_CA_BUNDLE} is missing (pip inside the build folder needs it); "
            "apt-get install -y ca-certificates",
            step="prerequisites",
        )


def debootstrap(root: Path) -> None:
    run("debootstrap", debootstrap_argv(root), timeout=DEBOOTSTRAP_TIMEOUT_S, env=_host_env())


def install_venv(root: Path) -> None:
    """The venv at /opt/venv with the pinned packages, checked by importing them, its pip freeze kept."""
    resolv = root / "etc" / "resolv.conf"
    ca_copy = root / BUILD_CA_IN_ROOT.lstrip("/")
    try:
        # Name resolution and TLS for pip inside the folder; both are removed again below.
        if Path("/etc/resolv.conf").is_file():
            resolv.unlink(missing_ok=True)
            shutil.copyfile("/etc/resolv.conf", resolv)
        ca_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HOST_CA_BUNDLE, ca_copy)
        run("venv", chroot_argv(root, "/usr/bin/python3", "-m", "venv", VENV_DIR), timeout=SMALL_STEP_TIMEOUT_S)
        run("pip install", chroot_argv(root, *pip_install_argv()), timeout=PIP_TIMEOUT_S)
        check = "import celery, kombu, redis; print(celery.__version__, kombu.__version__, redis.__version__)"
        versions = run("check", chroot_argv(root, f"{VENV_DIR}/bin/python", "-c", check), timeout=SMALL_STEP_TIMEOUT_S)
        logger.info("installed celery, kombu, redis: %s", versions.strip())
        freeze = run(
            "pip freeze",
            chroot_argv(root, f"{VENV_DIR}/bin/python", "-m", "pip", "--isolated", "freeze", "--all"),
            timeout=SMALL_STEP_TIMEOUT_S,
        )
        (root / FREEZE_FILE.lstrip("/")).write_text(freeze)
    finally:
        ca_copy.unlink(missing_ok=True)
        resolv.unlink(missing_ok=True)  # Docker provides /etc/resolv.conf at run time


def add_worker_user(root: Path) -> None:
    """Append user and group ``mcs`` (10001:10001) to the folder's passwd/group/shadow files; idempotent."""
    etc = root / "etc"
    entries = {
        "passwd": f"{WORKER_USER}:x:{WORKER_UID}:{WORKER_GID}:MCS worker:/tmp:/usr/sbin/nologin",
        "group": f"{WORKER_USER}:x:{WORKER_GID}:",
        "shadow": f"{WORKER_USER}:!:19000::::::",
        "gshadow": f"{WORKER_USER}:!::",
    }
    for name, line in entries.items():
        path = etc / name
        if not path.exists():
            if name in ("passwd", "group"):
                raise DeployError(f"{path} is missing: the root folder is not a Debian system", step="add user")
            continue
        text = path.read_text()
        lines = text.splitlines()
        if any(existing.split(":", 1)[0] == WORKER_USER for existing in lines):
            continue
        numeric_id = str(WORKER_UID if name == "passwd" else WORKER_GID)
        if name in ("passwd", "group") and any(existing.split(":")[2:3] == [numeric_id] for existing in lines):
            raise DeployError(f"id {numeric_id} is already taken in {path}", step="add user")
        with path.open("a") as fh:
            fh.write(("" if text.endswith("\n") or not text else "\n") + line + "\n")


def slim_rootfs(root: Path) -> None:
    """Remove what a worker never needs: apt lists and caches, pip caches, logs, man pages, docs (not licences)."""
    for pattern in (
        "var/lib/apt/lists/*",
        "var/cache/apt/*.bin",
        "var/cache/apt/archives/*.deb",
        "var/cache/debconf/*-old",
        "root/.cache",
        "tmp/*",
        "var/tmp/*",
        "usr/share/man/*",
        "usr/share/info/*",
        "var/log/*.log",
        "var/log/apt/*",
    ):
        for path in root.glob(pattern):
            if path.name in ("partial", "lock"):  # keep apt's own skeleton
                continue
            _remove_path(path)
    for path in (root / "usr/share/doc").glob("*/*"):
        if path.name != "copyright":
            _remove_path(path)
    (root / "etc" / "hostname").unlink(missing_ok=True)  # the build host's name; Docker provides its own


def remove_tree(workdir: Path) -> None:
    """Remove the build folder; detach any mounts left inside first, and never delete through a mount."""
    for point in mounts_under(workdir, _read_mountinfo()):
        logger.warning("detaching leftover mount %s", point)
        with contextlib.suppress(DeployError):
            run("umount", ["umount", "-l", point], timeout=SMALL_STEP_TIMEOUT_S)
    left = mounts_under(workdir, _read_mountinfo())
    if left:
        logger.error("not removing %s: mounts are still inside it: %s", workdir, left)
        return
    shutil.rmtree(workdir, ignore_errors=True)
    if workdir.exists():
        logger.error("could not remove the build folder %s completely", workdir)


def mounts_under(root: Path, mountinfo: str) -> list[str]:
    """Mount points at or below ``root`` in a ``/proc/self/mountinfo`` text, deepest first.

    Compared by path components, so ``/tmp/x2`` is not below ``/tmp/x``.
    """
    base = os.path.realpath(root)
    found = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        point = _unescape_mountinfo(fields[4])
        if os.path.commonpath([base, point]) == base:
            found.append(point)
    return sorted(set(found), key=lambda p: (p.count("/"), p), reverse=True)


def _unescape_mountinfo(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in mount points as 3-digit octal escapes.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _read_mountinfo() -> str:
    try:
        return Path("/proc/self/mountinfo").read_text()
    except OSError:
        return ""


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _host_env() -> dict[str, str]:
    """The environment for host-side tools (debootstrap): the host's, minus pip settings, in the C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["LC_ALL"] = "C"
    return env
