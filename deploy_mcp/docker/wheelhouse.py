"""Resolve a task's pinned requirements into a wheelhouse, so the image build itself needs no network.

The build runs with ``network_mode="none"`` and installs with ``pip install --no-index --find-links
/app/wheelhouse``. The wheelhouse must therefore hold every wheel the *image's* interpreter needs, and that is
where the interpreter-version trap lies: ``pip download --python-version 3.11.2`` sets the version used for
wheel tags and ``Requires-Python`` only, while pip evaluates environment markers against the interpreter that
runs pip. The host has CPython 3.11.7 and the base image 3.11.2, so redis-py's dependency
``async-timeout; python_full_version < "3.11.3"`` is left out (checked with pip 23.2.1: only the redis wheel is
downloaded), and an offline install of anything needing it fails in the image.

So ``pip download`` runs inside a throwaway container of the base image itself (``network_mode="host"``, as the
worker user without capabilities): markers, wheel tags and the glibc level are the image's own, for any base
image. Requirements and the host CA bundle go in with ``put_archive`` and the wheels come out with
``get_archive``: no bind mounts. About 1 s for a few small packages. pip runs with a clean environment: no host
``PIP_*`` variable and no pip configuration file (``PIP_CONFIG_FILE=/dev/null`` plus ``--isolated``), the CA
bundle given with ``--cert``, only the proxy variables forwarded, argument lists only.

Resolved sets are cached, content-addressed, in the deploy worker's data folder (``DockerRuntime`` passes
``settings.deployments_dir / ".wheelhouses"``; direct callers default to ``~/.cache/mcs/wheels``): ``wheels/``
holds the wheel files, ``sets/<key>.json`` the wheels and their sha256 for one requirement set and base image id.
Deploying the same requirement set again starts no resolver container and needs no network
(:func:`resolve_wheelhouse`); the wheels are checked against their digests whenever they are used. The resolved
set also names the task's dependency image (:mod:`deploy_mcp.docker.deps`), so a set whose image exists needs its
wheels no more.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from deploy_mcp.docker.client import docker_errors, get_image, make_client, wait_for_exit
from deploy_mcp.host_tools import HOST_CA_BUNDLE, proxy_environment, tail
from deploy_mcp.runtime import Progress, say
from mcs.core.errors import DeployError, InvalidInput
from mcs.core.requirements import parse_requirement
from mcs.core.settings import Settings
from mcs.core.worker_image import WORKER_GID, WORKER_UID, WORKER_USER_SPEC

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "mcs" / "wheels"
DEFAULT_MAX_REQUIREMENTS: int = Settings.model_fields["max_requirements"].default
PIP_TIMEOUT_S = 600.0
MAX_WHEELS = 500
MAX_WHEELHOUSE_BYTES = 4 * 1024**3
CACHE_FORMAT = 1

#: Labels of the throwaway resolver container (never ``mcs.managed``: it is not a worker).
LABEL_ROLE = "mcs.role"
ROLE_WHEELHOUSE = "wheelhouse"

_WHEEL_NAME = re.compile(r"[A-Za-z0-9_.+!-]+\.whl")


def requirement_lines(lines: Iterable[Any], max_requirements: int) -> list[str]:
    """The normalised ``name[extras]==version`` lines that may reach pip; blank lines and ``#`` comments dropped.

    Each line is checked with the one grammar of :mod:`mcs.core.requirements` (fields ``requirements line N``):
    options, URLs, paths, markers, ranges and non-strings raise InvalidInput before any Docker call. The policy on
    top (no package of the base image, no package twice) is the deployer's, with ``check_requirements``; here it
    is only made sure that nothing but pinned requirements reaches pip.
    """
    out = [
        parse_requirement(raw, f"requirements line {number}")[1]
        for number, raw in enumerate(lines, start=1)
        if not (isinstance(raw, str) and (not raw.strip() or raw.strip().startswith("#")))
    ]
    if len(out) > max_requirements:
        raise InvalidInput("requirements", f"{len(out)} lines", f"at most {max_requirements} requirements")
    return out


class StaleWheel(DeployError):
    """A cached wheel is missing or no longer has its digest; its set was forgotten."""


@dataclass(frozen=True)
class ResolvedSet:
    """One requirement set resolved for one base image: its wheels (file name -> sha256) in the cache."""

    key: str  # the set's cache key: a hash of the requirement lines and the base image id
    requirements: tuple[str, ...]  # the normalised lines, as given
    base_image_id: str
    wheels: Mapping[str, str]
    cache: Path
    resolved: bool  # True when the resolver container ran for this call (the set was not cached)

    def wheel_path(self, name: str) -> Path:
        return self.cache / "wheels" / name

    def verified_wheels(self) -> Iterator[tuple[str, Path]]:
        """(name, path) of each wheel, after checking its digest: a changed cache file raises DeployError (and the
        set is forgotten, so the next deploy resolves it again)."""
        for name, digest in sorted(self.wheels.items()):
            path = self.wheel_path(name)
            if not path.is_file() or _sha256(path) != digest:
                logger.warning("wheel cache entry %s is missing or changed; the set will be resolved again", name)
                (self.cache / "sets" / f"{self.key}.json").unlink(missing_ok=True)
                raise StaleWheel(
                    f"the cached wheel {name} is missing or changed; deploy again to resolve the requirements anew",
                    step="wheelhouse",
                    wheel=name,
                )
            yield name, path

    def copy_to(self, dest: Path) -> list[str]:
        """Copy the wheels into ``dest`` (created); returns their names, sorted."""
        dest.mkdir(parents=True, exist_ok=True)
        for name, path in self.verified_wheels():
            shutil.copyfile(path, dest / name)
        return sorted(self.wheels)


def resolve_wheelhouse(
    requirements: list[str],
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    *,
    base_image: str,
    client: Any = None,
    max_requirements: int = DEFAULT_MAX_REQUIREMENTS,
    extra_labels: Mapping[str, str] | None = None,
    timeout_s: float = PIP_TIMEOUT_S,
    verify: bool = True,
) -> ResolvedSet | None:
    """The wheels of ``requirements`` for ``base_image``: from the cache, else resolved and cached. None when there
    is no requirement.

    The set is resolved inside a throwaway container of ``base_image`` (exact for its interpreter; ``client`` is a
    docker-py client, ``extra_labels`` go onto that container). A set resolved before for the same image (its id)
    comes from ``cache_dir`` without any container or network. ``verify``: a cached set counts only when its wheels
    still have their digests (else it is resolved again); without it, only their presence is checked here (for a
    caller that may not need the files: the digests are checked again whenever they are used).
    Invalid lines raise InvalidInput; a failed resolution raises DeployError(step="wheelhouse", output_tail=...).
    """
    reqs = requirement_lines(requirements, max_requirements)
    if not reqs:
        return None
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    resolver = _ContainerResolver(base_image, client, dict(extra_labels or {}), timeout_s)
    identity = resolver.identity()
    key = _set_key(reqs, identity)
    cached = _cached_set(cache, key, verify)
    if cached is None:
        with cache_lock(cache, f"set-{key}"):  # one resolution per set, whatever runs at the same time
            cached = _cached_set(cache, key, verify)
            if cached is None:
                say(progress, f"wheelhouse: resolving {len(reqs)} requirements ({resolver.describe()})", logger)
                with tempfile.TemporaryDirectory(prefix="mcs-wheelhouse-") as tmp:
                    downloaded = Path(tmp) / "wheels"
                    downloaded.mkdir()
                    resolver.download(reqs, downloaded)
                    wheels = _store_in_cache(cache, downloaded)
                _write_set(cache, key, reqs, identity, wheels)
                say(progress, f"wheelhouse: {len(wheels)} wheels: {', '.join(sorted(wheels))}", logger)
                return ResolvedSet(key, tuple(reqs), identity["image_id"], wheels, cache, resolved=True)
    say(progress, f"wheelhouse: {len(cached)} wheels for {len(reqs)} requirements from the cache", logger)
    return ResolvedSet(key, tuple(reqs), identity["image_id"], cached, cache, resolved=False)


def prepare_wheelhouse(
    requirements: list[str],
    dest: Path,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    *,
    base_image: str,
    client: Any = None,
    max_requirements: int = DEFAULT_MAX_REQUIREMENTS,
    extra_labels: Mapping[str, str] | None = None,
    timeout_s: float = PIP_TIMEOUT_S,
) -> list[str]:
    """Put every wheel ``requirements`` need into ``dest`` (created); returns the wheel file names, sorted.

    :func:`resolve_wheelhouse`, then a copy of the wheels (for a Dockerfile that installs from ``wheelhouse/`` in
    its build context itself).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    options = {"base_image": base_image, "client": client, "max_requirements": max_requirements}
    options |= {"extra_labels": extra_labels, "timeout_s": timeout_s, "verify": False}
    resolved = resolve_wheelhouse(requirements, cache_dir, progress, **options)
    if resolved is None:
        return []
    try:
        return resolved.copy_to(dest)
    except StaleWheel:  # a cache file changed since it was stored: resolve the set again
        resolved = resolve_wheelhouse(requirements, cache_dir, progress, **options)
        assert resolved is not None
        return resolved.copy_to(dest)


class _ContainerResolver:
    """``pip download`` inside a container of the base image: the image's own interpreter decides."""

    WORKDIR = "/tmp/mcs-wheelhouse"  # noqa: S108 - inside the throwaway container (its own layer, not a tmpfs)

    def __init__(self, image: str, client: Any, labels: dict[str, str], timeout_s: float) -> None:
        self.image = image
        self._client = client
        self.labels = {LABEL_ROLE: ROLE_WHEELHOUSE, **labels}
        self.timeout_s = timeout_s
        self._image_id: str | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client()
        return self._client

    def identity(self) -> dict[str, Any]:
        if self._image_id is None:
            image = get_image(self.client, self.image)
            if image is None:
                raise DeployError(
                    f"base image {self.image} is missing: build it first (make base-image)",
                    step="wheelhouse",
                    image=self.image,
                )
            self._image_id = image.id
        return {"resolver": "container", "image_id": self._image_id}

    def describe(self) -> str:
        return f"in a container of {self.image}"

    def argv(self) -> list[str]:
        argv = [
            "python",
            "-m",
            "pip",
            "download",
            "--isolated",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-input",
            "--only-binary=:all:",
            "-d",
            f"{self.WORKDIR}/wheels",
            "-r",
            f"{self.WORKDIR}/requirements.txt",
        ]
        if HOST_CA_BUNDLE.is_file():
            argv[4:4] = ["--cert", f"{self.WORKDIR}/ca.crt"]
        return argv

    def download(self, reqs: list[str], dest: Path) -> None:
        files = {"requirements.txt": ("\n".join(reqs) + "\n").encode()}
        if HOST_CA_BUNDLE.is_file():
            files["ca.crt"] = HOST_CA_BUNDLE.read_bytes()
        env = {"PIP_CONFIG_FILE": os.devnull, "HOME": "/tmp", **proxy_environment()}  # noqa: S108 - in the container
        container = None
        try:
            with docker_errors("wheelhouse container", step="wheelhouse"):
                container = self.client.containers.create(
                    self.image,
                    command=self.argv(),
                    user=WORKER_USER_SPEC,
                    environment=env,
                    network_mode="host",  # pip needs the package index; nothing else runs in here
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges"],
                    mem_limit="1g",
                    memswap_limit="1g",
                    pids_limit=256,
                    labels=self.labels,
                    working_dir="/tmp",  # noqa: S108 - inside the container
                )
                container.put_archive("/", _tar_dir(self.WORKDIR.lstrip("/"), files))
                container.start()
            code, output = wait_for_exit(container, self.timeout_s, f"pip download in {self.image}", "wheelhouse")
            if code != 0:
                raise DeployError(
                    f"pip download in {self.image} failed with exit code {code}: {pip_error_line(output)}",
                    step="wheelhouse",
                    requirements=reqs,
                    output_tail=tail(output),
                )
            with docker_errors("wheelhouse copy", step="wheelhouse"):
                _extract_wheels(container.get_archive(f"{self.WORKDIR}/wheels")[0], dest)
        finally:
            if container is not None:
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True)


# --- Cache ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def cache_lock(cache: Path, name: str) -> Iterator[None]:
    """An exclusive lock of the cache for ``name`` (a set's resolution, a dependency image's build), held by this
    process until the block ends: deploys running in parallel (threads or processes) wait for each other's work
    instead of doing it twice. A lock file is left behind, empty."""
    locks = cache / "locks"
    locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (locks / f"{name}.lock").open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _set_key(reqs: list[str], identity: dict[str, Any]) -> str:
    canonical = json.dumps({"format": CACHE_FORMAT, "requirements": sorted(reqs), "target": identity}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _cached_set(cache: Path, key: str, verify: bool) -> dict[str, str] | None:
    path = cache / "sets" / f"{key}.json"
    try:
        wheels = json.loads(path.read_text())["wheels"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(wheels, dict):
        return None
    for name, digest in wheels.items():
        if not isinstance(name, str) or not _WHEEL_NAME.fullmatch(name) or not isinstance(digest, str):
            return None
        wheel = cache / "wheels" / name
        if not wheel.is_file() or (verify and _sha256(wheel) != digest):
            logger.info("wheel cache entry %s is missing or changed; resolving again", name)
            return None
    return wheels


def _store_in_cache(cache: Path, downloaded: Path) -> dict[str, str]:
    store = cache / "wheels"
    store.mkdir(parents=True, exist_ok=True, mode=0o700)
    wheels: dict[str, str] = {}
    for path in sorted(downloaded.iterdir()):
        if not path.is_file() or not _WHEEL_NAME.fullmatch(path.name):
            raise DeployError(
                f"pip left {path.name!r}, which is not a wheel, although only wheels were allowed",
                step="wheelhouse",
            )
        wheels[path.name] = _sha256(path)
        _atomic_copy(path, store / path.name)
    if not wheels:
        raise DeployError("pip downloaded no wheel at all", step="wheelhouse")
    return wheels


def _write_set(cache: Path, key: str, reqs: list[str], identity: dict[str, Any], wheels: dict[str, str]) -> None:
    sets = cache / "sets"
    sets.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {"requirements": reqs, "target": identity, "wheels": wheels}
    fd, tmp = tempfile.mkstemp(dir=sets, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, sets / f"{key}.json")


def _atomic_copy(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".tmp-")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- Helpers ---------------------------------------------------------------------------------------------------


def _tar_dir(directory: str, files: Mapping[str, bytes]) -> bytes:
    """A tar with ``directory`` (owned by the worker user, so pip can write below it) and ``files`` inside it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(directory)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        info.uid, info.gid = WORKER_UID, WORKER_GID
        tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{directory}/{name}")
            info.size = len(data)
            info.mode = 0o644
            info.uid, info.gid = WORKER_UID, WORKER_GID
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _extract_wheels(chunks: Iterable[bytes], dest: Path) -> None:
    """Take the regular ``*.whl`` files out of a ``get_archive`` stream; nothing else, no paths, bounded size."""
    with tempfile.TemporaryFile() as spool:
        total = 0
        for chunk in chunks:
            total += len(chunk)
            if total > MAX_WHEELHOUSE_BYTES + 10 * 1024**2:
                raise DeployError(f"the wheelhouse exceeds {MAX_WHEELHOUSE_BYTES // 1024**2} MB", step="wheelhouse")
            spool.write(chunk)
        spool.seek(0)
        count = 0
        with tarfile.open(fileobj=spool, mode="r|") as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or not _WHEEL_NAME.fullmatch(name):
                    continue
                count += 1
                if count > MAX_WHEELS:
                    raise DeployError(f"more than {MAX_WHEELS} wheels", step="wheelhouse")
                source = tar.extractfile(member)
                if source is None:
                    continue
                with (dest / name).open("wb") as out:
                    shutil.copyfileobj(source, out)


def pip_error_line(output: str) -> str:
    errors = [line.strip() for line in output.splitlines() if line.startswith("ERROR:")]
    return errors[0] if errors else "see output_tail"
