"""Resolve a task's pinned requirements into a wheelhouse, so the image build itself needs no network.

The build runs with ``network_mode="none"`` and installs with ``pip install --no-index --find-links
/app/wheelhouse``. The wheelhouse must therefore hold every wheel the *image's* interpreter needs, and that is
where the interpreter-version trap lies: ``pip download --python-version 3.11.2`` sets the version used for
wheel tags and ``Requires-Python`` only, while pip evaluates environment markers against the interpreter that
runs pip. The host has CPython 3.11.7 and the base image 3.11.2, so redis-py's dependency
``async-timeout; python_full_version < "3.11.3"`` is left out (checked with pip 23.2.1: only the redis wheel is
downloaded), and an offline install of anything needing it fails in the image.

Two resolvers, both exact for markers:

``container`` (what :class:`~deploy_mcp.docker_runtime.DockerRuntime` uses)
    ``pip download`` runs inside a throwaway container of the base image itself (``network_mode="host"``, as uid
    10001 without capabilities), so markers, wheel tags and the glibc level are the image's own, for any base
    image. Requirements and the host CA bundle go in with ``put_archive`` and the wheels come out with
    ``get_archive``: no bind mounts. About 1 s for a few small packages.

``host`` (when no base image is given)
    ``pip download`` on the host with the target's tags (``--python-version 3.11.2 --implementation cp --abi
    cp311 --platform manylinux..._<machine>``) *and* the target's marker environment: pip is started through a
    two-line shim that replaces pip's ``default_environment()`` for markers with the target's values
    (``python_full_version`` 3.11.2 ...). This uses a pip internal (``pip._vendor.packaging.markers``); when it is
    missing, the resolver stops with a DeployError instead of silently resolving for the host.

Both run pip with a clean environment: no host ``PIP_*`` variable and no pip configuration file
(``PIP_CONFIG_FILE=/dev/null`` plus ``--isolated``; this host's pip configuration adds find-links, extra indexes
and a constraints file that would change the resolution), the CA bundle given with ``--cert``, argument lists only.

Resolved sets are cached in ``~/.cache/mcs/wheels`` (``wheels/`` holds the files, ``sets/<key>.json`` the list
for one requirement set and target): deploying the same requirements again copies the wheels without network.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcs.core.errors import DeployError, InvalidInput, MCSError, ServiceUnavailable
from mcs.core.requirements import REQUIREMENT_RULE, parse_requirement

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "mcs" / "wheels"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PIP_TIMEOUT_S = 600.0
OUTPUT_TAIL_CHARS = 3000
MAX_REQUIREMENTS = 200
MAX_WHEELS = 500
MAX_WHEELHOUSE_BYTES = 4 * 1024**3
CACHE_FORMAT = 1

#: Labels of the throwaway resolver container (never ``mcs.managed``: it is not a worker).
LABEL_ROLE = "mcs.role"
ROLE_WHEELHOUSE = "wheelhouse"

_WHEEL_NAME = re.compile(r"[A-Za-z0-9_.+!-]+\.whl")
_FORWARDED_PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")

# Runs pip with the target's marker environment (argv[1], JSON) instead of the running interpreter's.
_PIP_WITH_TARGET_MARKERS = """\
import json, sys
try:
    import pip._vendor.packaging.markers as _markers
    from pip._internal.cli.main import main as _pip_main
except ImportError as exc:
    sys.stderr.write(f"MCS_SHIM_UNSUPPORTED: this pip has no {exc.name}\\n")
    sys.exit(97)
_target = json.loads(sys.argv[1])
_host = _markers.default_environment
_markers.default_environment = lambda: {**_host(), **_target}
sys.exit(_pip_main(sys.argv[2:]))
"""
_SHIM_UNSUPPORTED_EXIT = 97


@dataclass(frozen=True)
class TargetPython:
    """The interpreter a wheelhouse is resolved for by the host resolver (default: the base image's)."""

    version: str = "3.11.2"
    machine: str = field(default_factory=platform.machine)
    glibc: tuple[int, int] = (2, 36)  # Debian bookworm

    @property
    def short_version(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @property
    def abi(self) -> str:
        return "cp" + self.short_version.replace(".", "")

    def marker_environment(self) -> dict[str, str]:
        """The PEP 508 marker values of the target (kernel fields stay the host's: containers share it)."""
        return {
            "implementation_name": "cpython",
            "implementation_version": self.version,
            "os_name": "posix",
            "platform_machine": self.machine,
            "platform_python_implementation": "CPython",
            "platform_system": "Linux",
            "python_full_version": self.version,
            "python_version": self.short_version,
            "sys_platform": "linux",
        }

    def platforms(self) -> list[str]:
        """manylinux tags the target accepts, newest first, then the legacy aliases and plain linux."""
        arch = self.machine
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)]
        tags.append(f"manylinux2014_{arch}")
        if arch in ("x86_64", "i686"):
            tags += [f"manylinux2010_{arch}", f"manylinux1_{arch}"]
        tags.append(f"linux_{arch}")
        return tags

    def pip_args(self) -> list[str]:
        args = ["--python-version", self.version, "--implementation", "cp", "--abi", self.abi]
        for tag in self.platforms():
            args += ["--platform", tag]
        return args


MCS_BASE_TARGET = TargetPython()


# --- Requirement lines ---------------------------------------------------------------------------------------


def validate_requirements(lines: Iterable[Any]) -> list[str]:
    """Normalised ``name[extras]==version`` lines; blank lines and ``#`` comments are dropped.

    Anything else raises InvalidInput naming the line: options (``-e``, ``--index-url``, ``-r``), URLs, paths,
    ``@`` references, markers, ranges, wildcards and non-strings.
    """
    out: list[str] = []
    for number, raw in enumerate(lines, start=1):
        field_name = f"requirements line {number}"
        if not isinstance(raw, str):
            raise InvalidInput(field_name, raw, "expected a string; " + REQUIREMENT_RULE)
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        out.append(parse_requirement(line, field_name)[1])
    if len(out) > MAX_REQUIREMENTS:
        raise InvalidInput("requirements", f"{len(out)} lines", f"at most {MAX_REQUIREMENTS} requirements")
    return out


# --- Public API ----------------------------------------------------------------------------------------------


def prepare_wheelhouse(
    requirements: list[str],
    dest: Path,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    *,
    base_image: str | None = None,
    client: Any = None,
    target: TargetPython = MCS_BASE_TARGET,
    extra_labels: Mapping[str, str] | None = None,
    timeout_s: float = PIP_TIMEOUT_S,
) -> list[str]:
    """Put every wheel ``requirements`` need into ``dest`` (created); returns the wheel file names, sorted.

    With ``base_image`` the set is resolved inside a throwaway container of that image (exact for its
    interpreter; ``client`` is a docker-py client, ``extra_labels`` go onto that container); without it, on the
    host for ``target``. A set resolved before for the same target comes from ``cache_dir`` without network.
    Invalid lines raise InvalidInput; a failed resolution raises DeployError(step="wheelhouse", output_tail=...).
    """
    reqs = validate_requirements(requirements)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if not reqs:
        return []
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    if base_image is not None:
        resolver = _ContainerResolver(base_image, client, dict(extra_labels or {}), timeout_s)
    else:
        resolver = _HostResolver(target, timeout_s)
    key = _set_key(reqs, resolver.identity())
    cached = _cached_set(cache, key)
    if cached is not None:
        _say(progress, f"wheelhouse: {len(cached)} wheels for {len(reqs)} requirements from the cache")
        return _copy_out(cache, cached, dest)
    _say(progress, f"wheelhouse: resolving {len(reqs)} requirements ({resolver.describe()})")
    with tempfile.TemporaryDirectory(prefix="mcs-wheelhouse-") as tmp:
        downloaded = Path(tmp) / "wheels"
        downloaded.mkdir()
        resolver.download(reqs, downloaded)
        wheels = _store_in_cache(cache, downloaded)
    _write_set(cache, key, reqs, resolver.identity(), wheels)
    _say(progress, f"wheelhouse: {len(wheels)} wheels: {', '.join(sorted(wheels))}")
    return _copy_out(cache, wheels, dest)


# --- Resolvers -----------------------------------------------------------------------------------------------


class _HostResolver:
    def __init__(self, target: TargetPython, timeout_s: float) -> None:
        self.target = target
        self.timeout_s = timeout_s

    def identity(self) -> dict[str, Any]:
        return {"resolver": "host", "markers": self.target.marker_environment(), "platforms": self.target.platforms()}

    def describe(self) -> str:
        return f"on the host for CPython {self.target.version} {self.target.machine}"

    def download(self, reqs: list[str], dest: Path) -> None:
        reqfile = dest.parent / "requirements.txt"
        reqfile.write_text("\n".join(reqs) + "\n")
        argv = host_pip_download_argv(reqfile, dest, self.target)
        code, output = _run(argv, env=pip_environment(), timeout_s=self.timeout_s)
        if code == _SHIM_UNSUPPORTED_EXIT and "MCS_SHIM_UNSUPPORTED" in output:
            raise DeployError(
                "the host's pip cannot resolve for another interpreter's markers (its internals changed); "
                "resolve inside the base image instead (prepare_wheelhouse(..., base_image=...))",
                step="wheelhouse",
                output_tail=_tail(output),
            )
        if code != 0:
            raise DeployError(
                f"pip download on the host failed with exit code {code}: {_pip_error_line(output)}",
                step="wheelhouse",
                requirements=reqs,
                output_tail=_tail(output),
            )


def host_pip_download_argv(reqfile: Path, dest: Path, target: TargetPython = MCS_BASE_TARGET) -> list[str]:
    """The host resolver's command: pip (with the target's markers) downloading wheels only, for the target."""
    argv = [
        sys.executable,
        "-c",
        _PIP_WITH_TARGET_MARKERS,
        json.dumps(target.marker_environment(), sort_keys=True),
        "download",
        "--isolated",
        "--disable-pip-version-check",
        "--no-input",
        "--only-binary=:all:",
        *target.pip_args(),
        "-d",
        str(dest),
        "-r",
        str(reqfile),
    ]
    if HOST_CA_BUNDLE.is_file():
        argv[5:5] = ["--cert", str(HOST_CA_BUNDLE)]
    return argv


def pip_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for pip: no host PIP_* variables, no pip configuration files, proxies kept."""
    environ = os.environ if environ is None else environ
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": environ.get("HOME", "/root"),
        "LC_ALL": "C.UTF-8",
        "PIP_CONFIG_FILE": os.devnull,  # pip skips every configuration file (global ones too) when it is devnull
    }
    env.update({k: environ[k] for k in _FORWARDED_PROXY_VARS if environ.get(k)})
    return env


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
            import docker
            import docker.errors

            try:
                self._client = docker.from_env(timeout=300)
            except docker.errors.DockerException as exc:
                raise ServiceUnavailable(
                    f"the Docker daemon does not answer ({exc}); start dockerd / the Docker service",
                    service="docker",
                ) from exc
        return self._client

    def identity(self) -> dict[str, Any]:
        if self._image_id is None:
            with _docker_errors("inspect base image"):
                import docker.errors

                try:
                    self._image_id = self.client.images.get(self.image).id
                except docker.errors.ImageNotFound as exc:
                    raise DeployError(
                        f"base image {self.image} is missing: build it first (make base-image)",
                        step="wheelhouse",
                        image=self.image,
                    ) from exc
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
        import docker.errors

        files = {"requirements.txt": ("\n".join(reqs) + "\n").encode()}
        if HOST_CA_BUNDLE.is_file():
            files["ca.crt"] = HOST_CA_BUNDLE.read_bytes()
        env = {"PIP_CONFIG_FILE": os.devnull, "HOME": "/tmp"}  # noqa: S108 - inside the container
        env.update({k: os.environ[k] for k in _FORWARDED_PROXY_VARS if os.environ.get(k)})
        container = None
        try:
            with _docker_errors("wheelhouse container"):
                container = self.client.containers.create(
                    self.image,
                    command=self.argv(),
                    user="10001:10001",
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
            try:
                result = container.wait(timeout=self.timeout_s)
            except Exception as exc:  # requests' ReadTimeout, or the daemon going away
                with contextlib.suppress(docker.errors.DockerException):
                    container.kill()
                raise DeployError(
                    f"pip download in {self.image} did not finish within {self.timeout_s:.0f} s",
                    step="wheelhouse",
                    output_tail=_tail(_container_logs(container)),
                ) from exc
            code = int(result.get("StatusCode", -1))
            output = _container_logs(container)
            if code != 0:
                raise DeployError(
                    f"pip download in {self.image} failed with exit code {code}: {_pip_error_line(output)}",
                    step="wheelhouse",
                    requirements=reqs,
                    output_tail=_tail(output),
                )
            with _docker_errors("wheelhouse copy"):
                _extract_wheels(container.get_archive(f"{self.WORKDIR}/wheels")[0], dest)
        finally:
            if container is not None:
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True)


# --- Cache ---------------------------------------------------------------------------------------------------


def _set_key(reqs: list[str], identity: dict[str, Any]) -> str:
    canonical = json.dumps({"format": CACHE_FORMAT, "requirements": sorted(reqs), "target": identity}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _cached_set(cache: Path, key: str) -> dict[str, str] | None:
    path = cache / "sets" / f"{key}.json"
    try:
        wheels = json.loads(path.read_text())["wheels"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(wheels, dict):
        return None
    for name, digest in wheels.items():
        if not isinstance(name, str) or not _WHEEL_NAME.fullmatch(name):
            return None
        wheel = cache / "wheels" / name
        if not wheel.is_file() or _sha256(wheel) != digest:
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


def _copy_out(cache: Path, wheels: Mapping[str, str], dest: Path) -> list[str]:
    for name in wheels:
        shutil.copyfile(cache / "wheels" / name, dest / name)
    return sorted(wheels)


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


# --- Helpers -------------------------------------------------------------------------------------------------


def _tar_dir(directory: str, files: Mapping[str, bytes]) -> bytes:
    """A tar with ``directory`` (owned by 10001, so pip can write below it) and ``files`` inside it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(directory)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        info.uid = info.gid = 10001
        tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{directory}/{name}")
            info.size = len(data)
            info.mode = 0o644
            info.uid = info.gid = 10001
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


def _container_logs(container: Any) -> str:
    import docker.errors

    try:
        return container.logs(stdout=True, stderr=True, tail=200).decode("utf-8", "replace")
    except docker.errors.DockerException:
        return ""


@contextlib.contextmanager
def _docker_errors(step: str):
    """docker-py errors -> MCS errors at this boundary (daemon gone: ServiceUnavailable; the rest DeployError)."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except MCSError:
        raise
    except docker.errors.APIError as exc:
        explanation = exc.explanation or str(exc)
        raise DeployError(f"docker {step} failed: {explanation}", step="wheelhouse") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise ServiceUnavailable(
            f"the Docker daemon did not answer during {step} ({exc}); start dockerd / the Docker service",
            service="docker",
        ) from exc


def _run(argv: list[str], *, env: Mapping[str, str], timeout_s: float) -> tuple[int, str]:
    logger.debug("run %s", argv[:1] + argv[3:])
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DeployError(
            f"pip download did not finish within {timeout_s:.0f} s",
            step="wheelhouse",
            output_tail=_tail(exc.output or b""),
        ) from exc
    except OSError as exc:
        raise DeployError(f"cannot start pip ({argv[0]}): {exc}", step="wheelhouse") from exc
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


def _pip_error_line(output: str) -> str:
    errors = [line.strip() for line in output.splitlines() if line.startswith("ERROR:")]
    return errors[0] if errors else "see output_tail"


def _tail(output: bytes | str, limit: int = OUTPUT_TAIL_CHARS) -> str:
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
    return text if len(text) <= limit else "..." + text[-limit:]


def _say(progress: Progress | None, message: str) -> None:
    logger.info(message)
    if progress is not None:
        progress(message)
