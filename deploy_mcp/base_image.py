"""The worker base image: built locally when missing, with no container registry.

Recipe (checked on the reference machines, see ``/work/shared/reference/environment.md``):

1. ``debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm ROOT MIRROR``
2. inside ROOT, under ``chroot`` with a clean environment (``/usr/bin/env -i``), create a venv at ``/opt/venv``
   with the folder's own interpreter and pip-install the pinned :data:`PINNED_PACKAGES` into it (the host's CA
   bundle is copied in for pip and removed afterwards; ``pip --isolated`` ignores any pip configuration)
3. add the non-root worker user ``mcs`` (uid/gid 10001), remove caches, apt lists, logs and docs
4. stream ``tar -C ROOT -c .`` into the Docker engine's image import, with ``ENV``/``LABEL`` changes

The temporary root folder is always removed, also on failure (mounts debootstrap may leave behind are detached
first, so the removal never walks into the host's ``/proc``, ``/sys`` or ``/dev``).

Docker and subprocess failures are translated into :class:`~mcs.errors.MCSError` subclasses here, at this one
boundary, with the tail of the failing command's output in ``details["output_tail"]``.

Command line: ``python -m deploy_mcp.base_image [--force]`` (``make base-image``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mcs.core.errors import DeployError, MCSError, ServiceUnavailable
from mcs.core.settings import Settings

logger = logging.getLogger("deploy_mcp.base_image")  # the same name under `python -m`

Progress = Callable[[str], None]

# --- The recipe. Everything that shapes the image is here; recipe_hash() covers all of it. ---------------------

#: Python packages installed into /opt/venv. Changing a pin changes the recipe hash (label ``mcs.base.recipe``),
#: and ensure_base_image() then rebuilds an image that an older recipe made.
PINNED_PACKAGES: tuple[str, ...] = ("celery[redis]==5.7.0", "kombu==5.7.0", "redis==8.1.0")

BASE_IMAGE_PREFIX = "mcs-base"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_VARIANT = "minbase"
DEBOOTSTRAP_INCLUDE: tuple[str, ...] = ("python3", "python3-venv", "ca-certificates")
VENV_DIR = "/opt/venv"
WORKER_USER = "mcs"
WORKER_UID = 10001
WORKER_GID = 10001
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

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_BUILD_CA_IN_ROOT = "/root/mcs-build-ca.crt"  # removed again right after pip ran
_CHROOT_ENV: tuple[tuple[str, str], ...] = (("PATH", "/usr/bin:/bin"), ("HOME", "/root"))
#: The only host variables forwarded into the chroot: a proxied network needs them; nothing else leaks in.
_FORWARDED_PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")

DEBOOTSTRAP_TIMEOUT_S = 1200.0
PIP_TIMEOUT_S = 900.0
SMALL_STEP_TIMEOUT_S = 120.0
OUTPUT_TAIL_CHARS = 3000

_FIX_BUILD = (
    "run `make base-image` (python -m deploy_mcp.base_image) as root on a Debian/Ubuntu host with debootstrap "
    "installed (apt-get install -y debootstrap) and deb.debian.org and pypi.org reachable"
)


def recipe(pins: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything that determines the image's content, as plain data (hashed into the recipe label)."""
    return {
        "recipe_version": RECIPE_VERSION,
        "suite": SUITE,
        "mirror": MIRROR,
        "variant": DEBOOTSTRAP_VARIANT,
        "include": list(DEBOOTSTRAP_INCLUDE),
        "venv": VENV_DIR,
        "pins": list(PINNED_PACKAGES if pins is None else pins),
        "user": [WORKER_USER, WORKER_UID, WORKER_GID],
        "env": [list(kv) for kv in IMAGE_ENV],
    }


def recipe_hash(pins: Sequence[str] | None = None) -> str:
    """A short, stable hash of :func:`recipe`; it changes whenever a pin or a build parameter changes."""
    canonical = json.dumps(recipe(pins), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def import_changes(pins: Sequence[str] | None = None) -> list[str]:
    """The Dockerfile instructions applied at import (``docker import -c``)."""
    pins = PINNED_PACKAGES if pins is None else pins
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
    environ = os.environ if environ is None else environ
    assigns = [f"{k}={v}" for k, v in _CHROOT_ENV]
    assigns += [f"{k}={environ[k]}" for k in _FORWARDED_PROXY_VARS if environ.get(k)]
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
    pins = PINNED_PACKAGES if pins is None else pins
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
        _BUILD_CA_IN_ROOT,
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


# --- Public API ----------------------------------------------------------------------------------------------


def ensure_base_image(settings: Settings, client: Any = None, progress: Progress | None = None) -> str:
    """Return ``settings.worker_base_image``, making it available first when it is missing.

    Present already: returns after one image lookup (a few ms). An ``mcs-base*`` image that an older recipe made
    (its ``mcs.base.recipe`` label differs from :func:`recipe_hash`) is rebuilt. Missing ``mcs-base*``: built
    with :func:`build_base_image`. Missing other image (``python:3.12-slim``): pulled; a failed pull raises
    :class:`ServiceUnavailable` (registry unreachable) or :class:`DeployError` (no such image) saying how to fix it.
    """
    ref = settings.worker_base_image
    with _docker_client(client) as docker_client:
        image = _get_image(docker_client, ref)
        if image is not None:
            if not _is_stale(image):
                return ref
            logger.warning("base image %s was built from an older recipe; rebuilding it", ref)
        if not is_local_recipe_image(ref):
            return _pull(docker_client, ref, progress)
        with _build_lock(ref):
            # Another process may have built it while this one waited for the lock.
            image = _get_image(docker_client, ref)
            if image is not None and not _is_stale(image):
                return ref
            return build_base_image(settings, docker_client, progress)


def build_base_image(settings: Settings, client: Any, progress: Progress | None = None) -> str:
    """Build ``settings.worker_base_image`` from scratch with the recipe above (always; no existence check)."""
    ref = settings.worker_base_image
    if not is_local_recipe_image(ref):
        raise DeployError(
            f"{ref!r} is not built locally: only images named {BASE_IMAGE_PREFIX}* are; pull it instead "
            "(ensure_base_image does) or set MCS_WORKER_BASE_IMAGE to the default mcs-base:bookworm-py311",
            step="build_base_image",
            image=ref,
        )
    _check_build_prerequisites()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="mcs-base-"))
    root = workdir / "rootfs"
    try:
        root.mkdir()
        _say(progress, f"debootstrap {SUITE} (about 40 s)")
        t0 = time.monotonic()
        _run("debootstrap", debootstrap_argv(root), timeout=DEBOOTSTRAP_TIMEOUT_S, env=_host_env())
        logger.info("debootstrap done in %.1f s", time.monotonic() - t0)

        _say(progress, f"pip install {' '.join(PINNED_PACKAGES)} into {VENV_DIR} (about 10 s)")
        t0 = time.monotonic()
        _install_venv(root)
        logger.info("venv and pip install done in %.1f s", time.monotonic() - t0)

        _say(progress, f"add user {WORKER_USER} ({WORKER_UID}:{WORKER_GID}) and slim the root folder")
        add_worker_user(root)
        _slim_rootfs(root)

        _say(progress, f"import image {ref} (about 5 s)")
        t0 = time.monotonic()
        image_id = _import(client, root, ref, workdir)
        logger.info("import done in %.1f s", time.monotonic() - t0)
    finally:
        _remove_tree(workdir)
    size = _image_size(client, ref)
    _say(progress, f"built {ref} ({image_id[:19]}, {size / 1e6:.0f} MB) in {time.monotonic() - started:.0f} s")
    return ref


# --- Build steps ---------------------------------------------------------------------------------------------


def _check_build_prerequisites() -> None:
    if os.geteuid() != 0:
        raise DeployError(
            "building the base image needs root (debootstrap and chroot); " + _FIX_BUILD,
            step="prerequisites",
        )
    missing = [tool for tool in ("debootstrap", "chroot", "tar", "umount") if shutil.which(tool) is None]
    if missing:
        raise DeployError(
            f"building the base image needs {', '.join(missing)} on PATH; " + _FIX_BUILD,
            step="prerequisites",
            missing=missing,
        )
    if not HOST_CA_BUNDLE.is_file():
        raise DeployError(
            f"the host CA bundle {HOST_CA_BUNDLE} is missing (pip inside the build folder needs it); "
            "apt-get install -y ca-certificates",
            step="prerequisites",
        )


def _install_venv(root: Path) -> None:
    resolv = root / "etc" / "resolv.conf"
    ca_copy = root / _BUILD_CA_IN_ROOT.lstrip("/")
    try:
        # Name resolution and TLS for pip inside the folder; both are removed again below.
        if Path("/etc/resolv.conf").is_file():
            resolv.unlink(missing_ok=True)
            shutil.copyfile("/etc/resolv.conf", resolv)
        ca_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HOST_CA_BUNDLE, ca_copy)
        _run("venv", chroot_argv(root, "/usr/bin/python3", "-m", "venv", VENV_DIR), timeout=SMALL_STEP_TIMEOUT_S)
        _run("pip install", chroot_argv(root, *pip_install_argv()), timeout=PIP_TIMEOUT_S)
        check = "import celery, kombu, redis; print(celery.__version__, kombu.__version__, redis.__version__)"
        versions = _run("check", chroot_argv(root, f"{VENV_DIR}/bin/python", "-c", check), timeout=SMALL_STEP_TIMEOUT_S)
        logger.info("installed celery, kombu, redis: %s", versions.strip())
        freeze = _run(
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


def _slim_rootfs(root: Path) -> None:
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


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _import(client: Any, root: Path, ref: str, workdir: Path) -> str:
    """Stream ``tar -C root -c .`` into the engine's image import; returns the new image id."""
    import docker.errors
    import requests.exceptions

    repo, tag = split_image_ref(ref)
    argv = tar_argv(root)
    with (workdir / "tar.stderr").open("w+b") as tar_err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=tar_err, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        try:
            try:
                raw = client.api.import_image(
                    src=proc.stdout, repository=repo, tag=tag, changes=import_changes(), stream_src=True
                )
            finally:
                proc.stdout.close()
                returncode = proc.wait(timeout=SMALL_STEP_TIMEOUT_S)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            proc.kill()
            tar_err.seek(0)
            raise _docker_error("import", exc, image=ref, output_tail=_tail(tar_err.read())) from exc
        tar_err.seek(0)
        tar_output = tar_err.read()
    if returncode != 0:
        raise DeployError(
            f"tar of the base image folder failed with exit code {returncode}",
            step="import",
            command=argv,
            returncode=returncode,
            output_tail=_tail(tar_output),
        )
    image_id = ""
    for line in str(raw).splitlines():
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict) and message.get("error"):
                raise DeployError(f"docker import of {ref} failed: {message['error']}", step="import", image=ref)
            if isinstance(message, dict) and str(message.get("status", "")).startswith("sha256:"):
                image_id = message["status"]
    if _get_image(client, ref) is None:
        raise DeployError(
            f"docker import finished but {ref} is not there", step="import", image=ref, output_tail=_tail(raw)
        )
    return image_id


# --- Docker helpers ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _docker_client(client: Any) -> Iterator[Any]:
    if client is not None:
        yield client
        return
    import docker
    import docker.errors

    try:
        own = docker.from_env(timeout=300)
    except docker.errors.DockerException as exc:
        raise ServiceUnavailable(
            f"the Docker daemon does not answer ({exc}); start it (dockerd or systemctl start docker)",
            service="docker",
        ) from exc
    try:
        yield own
    finally:
        own.close()


def _get_image(client: Any, ref: str) -> Any:
    import docker.errors
    import requests.exceptions

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise _docker_error("inspect", exc, image=ref) from exc


def _is_stale(image: Any) -> bool:
    """An image this module built (label mcs.base=1) from a different recipe. Foreign images are never stale."""
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    return labels.get(LABEL_BASE) == "1" and labels.get(LABEL_RECIPE) != recipe_hash()


def _image_size(client: Any, ref: str) -> int:
    image = _get_image(client, ref)
    return int(image.attrs.get("Size", 0)) if image is not None else 0


def _pull(client: Any, ref: str, progress: Progress | None) -> str:
    import docker.errors
    import requests.exceptions

    repo, tag = split_image_ref(ref)
    _say(progress, f"pull {ref}")
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
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise ServiceUnavailable(f"cannot pull base image {ref}: {exc}; {fix}", service="registry", image=ref) from exc
    return ref


def _docker_error(step: str, exc: Exception, **details: Any) -> MCSError:
    """Docker-side failure -> MCS error: a daemon that does not answer is ServiceUnavailable, the rest DeployError."""
    import docker.errors
    import requests.exceptions

    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout) or (
        isinstance(exc, docker.errors.DockerException) and not isinstance(exc, docker.errors.APIError)
    ):
        return ServiceUnavailable(
            f"the Docker daemon did not answer during {step}: {exc}", service="docker", step=step, **details
        )
    explanation = getattr(exc, "explanation", None) or str(exc)
    return DeployError(f"docker {step} failed: {explanation}", step=step, **details)


# --- Processes, files, locks ---------------------------------------------------------------------------------


def _host_env() -> dict[str, str]:
    """The environment for host-side tools (debootstrap): the host's, minus pip settings, in the C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["LC_ALL"] = "C"
    return env


def _clean_env() -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def _run(step: str, argv: list[str], *, timeout: float, env: Mapping[str, str] | None = None) -> str:
    """Run an argument list (never a shell), output captured; failures become DeployError with the output tail."""
    logger.debug("%s: %s", step, argv)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else _clean_env(),
            start_new_session=True,  # so a timeout can stop the whole process group
        )
    except OSError as exc:
        raise DeployError(f"{step}: cannot start {argv[0]}: {exc}", step=step, command=argv) from exc
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_group(proc)
        output, _ = proc.communicate()
        raise DeployError(
            f"{step} did not finish within {timeout:.0f} s", step=step, command=argv, output_tail=_tail(output)
        ) from exc
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    text = output.decode("utf-8", "replace")
    logger.debug("%s output:\n%s", step, text)
    if proc.returncode != 0:
        raise DeployError(
            f"{step} failed with exit code {proc.returncode}",
            step=step,
            command=argv,
            returncode=proc.returncode,
            output_tail=_tail(text),
        )
    return text


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(output: bytes | str, limit: int = OUTPUT_TAIL_CHARS) -> str:
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
    return text if len(text) <= limit else "..." + text[-limit:]


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


def _remove_tree(workdir: Path) -> None:
    """Remove the build folder; detach any mounts left inside first, and never delete through a mount."""
    for point in mounts_under(workdir, _read_mountinfo()):
        logger.warning("detaching leftover mount %s", point)
        with contextlib.suppress(DeployError):
            _run("umount", ["umount", "-l", point], timeout=SMALL_STEP_TIMEOUT_S)
    left = mounts_under(workdir, _read_mountinfo())
    if left:
        logger.error("not removing %s: mounts are still inside it: %s", workdir, left)
        return
    shutil.rmtree(workdir, ignore_errors=True)
    if workdir.exists():
        logger.error("could not remove the build folder %s completely", workdir)


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


def _say(progress: Progress | None, message: str) -> None:
    logger.info(message)
    if progress is not None:
        progress(message)


# --- Command line --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy_mcp.base_image",
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
        with _docker_client(None) as client:
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
