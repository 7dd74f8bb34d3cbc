"""The Docker worker runtime: one hardened container per task version, built from a local image.

``build`` makes the image ``mcs-<task>:<version>`` from the deployment folder (copied to a temporary build
context, so the folder stays as it was) with ``network_mode="none"``: the task's pinned requirements are resolved
beforehand into ``wheelhouse/`` by :func:`deploy_mcp.wheelhouse.prepare_wheelhouse`, inside a throwaway container
of the base image, so the wheels match the image's own interpreter (see that module for the 3.11.2 marker trap).
An image with that tag and the same ``mcs.version`` label is reused, not rebuilt. A failed build leaves neither
intermediate containers nor the intermediate images it created.

``start`` runs the Celery worker with every setting of the hardening table (``/work/shared/reference/
security-testing.md``): non-root 10001:10001, read-only root with a ``noexec`` tmpfs ``/tmp``, all capabilities
dropped, ``no-new-privileges``, memory without extra swap, CPU and pid limits, no mounts at all, no host
namespaces other than the configured network, bounded json-file logs, an init process, ``on-failure`` restarts
(5 at most). The environment (Redis settings with the password) is given to the container only: it is never
logged, never put into an error message, and redacted from the logs this module returns.

Every docker-py error is translated here: a daemon that does not answer becomes :class:`ServiceUnavailable`,
anything else :class:`DeployError` with the daemon's explanation; "already gone" is not an error where the
protocol says so. docker-py only: no docker CLI, no shell.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from deploy_mcp.base_image import ensure_base_image
from deploy_mcp.runtime import (
    LABEL_MANAGED,
    LABEL_QUEUE,
    LABEL_TASK,
    LABEL_VERSION,
    Artifact,
    BuildSpec,
    Progress,
    RunSpec,
    WorkerHandle,
)
from deploy_mcp.wheelhouse import prepare_wheelhouse, validate_requirements
from mcs.core.errors import DeployError, InvalidInput, MCSError, ServiceUnavailable
from mcs.core.names import validate_name, validate_queue
from mcs.core.settings import Settings
from mcs.core.worker_image import worker_command

logger = logging.getLogger(__name__)

#: Labels this runtime adds to containers (next to those of ``RunSpec.labels``).
LABEL_HOSTNAME = "mcs.hostname"
LABEL_ARTIFACT = "mcs.artifact"

RUNNING = "RUNNING"
RESTARTING = "RESTARTING"
EXITED = "EXITED"
MISSING = "MISSING"

WORKER_USER = "10001:10001"
TMPFS = {"/tmp": "rw,noexec,nosuid,nodev,size=64m"}  # noqa: S108 - the container's own scratch tmpfs
RESTART_POLICY = {"Name": "on-failure", "MaximumRetryCount": 5}
LOG_MAX_SIZE = "10m"
LOG_MAX_FILE = "3"
WORKDIR = "/app"
STOP_TIMEOUT_S = 10
#: A container that restarted is reported RESTARTING until it has stayed up this long (a crash loop never does:
#: Docker's restart back-off starts at 100 ms and doubles, and is reset only after 10 s of uptime).
STABLE_AFTER_S = 30.0
BUILD_LOG_TAIL_LINES = 60
BUILD_MEMORY_BYTES = 2 * 1024**3  # for RUN steps during the build (pip install from the wheelhouse)
LOGS_MAX_CHARS = 20_000
LOGS_MAX_LINES = 10_000
DOCKER_TIMEOUT_S = 600
REDACTED = "[redacted]"

_FIX_DAEMON = "start dockerd / the Docker service"
_VERSION = re.compile(r"[0-9a-f]{8,128}")
_HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,254}")
_NETWORK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# One path component of a Docker repository name (distribution/reference grammar).
_REPO_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_SENSITIVE_KEY = re.compile(r"(?i)pass|secret|token|key|auth|cred|url")
_STEP_IMAGE = re.compile(r" ---> ([0-9a-f]{12})")
_STEP_CONTAINER = re.compile(r" ---> Running in ([0-9a-f]{12})")


def docker_answers(timeout_s: float = 5.0) -> bool:
    """True when a Docker daemon answers a ping (the ``auto`` runtime choice)."""
    try:
        import docker

        client = docker.from_env(timeout=timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def image_tag(task_name: str, version: str) -> str:
    """``mcs-<task>:<version>``; InvalidInput when the pair cannot form a Docker reference."""
    validate_name(task_name, "task_name")
    _validate_version(version)
    repo = f"mcs-{task_name}"
    if not _REPO_COMPONENT.fullmatch(repo):
        raise InvalidInput(
            "task_name",
            task_name,
            "this name cannot be a Docker image name (no '___' and no '_' at the end); rename the task",
        )
    return f"{repo}:{version}"


def container_name(task_name: str, version: str, hostname: str) -> str:
    """``mcs-<task>-<version[:12]>-<6 hex of the worker's hostname>``: unique per start, so a redeploy of the same
    version never has to remove the container that is still serving."""
    validate_name(task_name, "task_name")
    _validate_version(version)
    return f"mcs-{task_name}-{version[:12]}-{hashlib.sha256(hostname.encode()).hexdigest()[:6]}"


def is_mcs_worker(container: Any) -> bool:
    """A worker container this runtime started, not merely one made from an MCS image.

    A container inherits its image's labels, so ``mcs.managed=1`` alone also marks any container someone runs
    from a worker image. Only ``start`` sets ``mcs.hostname`` and names the container after task and version.
    """
    labels = _labels(container.attrs)
    if labels.get(LABEL_MANAGED) != "1" or not labels.get(LABEL_HOSTNAME):
        return False
    try:
        expected = container_name(labels.get(LABEL_TASK, ""), labels.get(LABEL_VERSION, ""), labels[LABEL_HOSTNAME])
    except InvalidInput:
        return False
    return str(container.name).lstrip("/") == expected


def state_from_attrs(attrs: Mapping[str, Any], now: datetime | None = None) -> str:
    """RUNNING, RESTARTING or EXITED from ``docker inspect`` data. A crash-looping container is never RUNNING."""
    state = attrs.get("State") or {}
    status = state.get("Status")
    if status == "running":
        if state.get("Restarting"):
            return RESTARTING
        if int(attrs.get("RestartCount") or 0) > 0:
            started = _parse_docker_time(state.get("StartedAt"))
            now = now or datetime.now(UTC)
            if started is None or (now - started).total_seconds() < STABLE_AFTER_S:
                return RESTARTING
        return RUNNING
    if status == "restarting":
        return RESTARTING
    return EXITED  # exited, dead, created (never started), paused, removing


def secret_values(environment: Mapping[str, str]) -> list[str]:
    """Values to keep out of logs and messages: those of PASSWORD/SECRET/TOKEN/KEY/AUTH/URL-like variables."""
    found: set[str] = set()
    for key, value in environment.items():
        if isinstance(value, str) and len(value) >= 3 and _SENSITIVE_KEY.search(key):
            found.add(value)
            found.add(quote(value, safe=""))
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


class DockerRuntime:
    """:class:`~deploy_mcp.runtime.WorkerRuntime` on a local Docker daemon (docker-py)."""

    name = "docker"

    def __init__(self, settings: Settings, client: Any = None, *, wheel_cache_dir: Path | None = None) -> None:
        self.settings = settings
        self._client = client
        self._own_client = False
        self.wheel_cache_dir = wheel_cache_dir
        self.description = f"docker (hardened containers from {settings.worker_base_image})"

    def check(self) -> None:
        with self._errors("ping"):
            self.client.ping()

    def prepare(self, progress: Progress | None = None) -> None:
        ensure_base_image(self.settings, self.client, progress)

    @property
    def client(self) -> Any:
        """The docker-py client; made on first use. A daemon that does not answer -> ServiceUnavailable."""
        if self._client is None:
            import docker
            import docker.errors
            import requests.exceptions

            try:
                self._client = docker.from_env(timeout=DOCKER_TIMEOUT_S)  # asks the daemon for its API version
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise ServiceUnavailable(
                    f"the Docker daemon does not answer ({exc}); {_FIX_DAEMON}", service="docker"
                ) from exc
            self._own_client = True
        return self._client

    def close(self) -> None:
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None
            self._own_client = False

    # --- build -----------------------------------------------------------------------------------------------

    def artifact_ref(self, task_name: str, version: str) -> str:
        return image_tag(task_name, version)

    def build(self, spec: BuildSpec, progress: Progress | None = None) -> Artifact:
        tag = image_tag(spec.task_name, spec.version)
        validate_queue(spec.queue, "queue")
        requirements = validate_requirements(spec.requirements)
        existing = self._get_image(tag)
        if existing is not None and _labels(existing.attrs).get(LABEL_VERSION) == spec.version:
            _say(progress, f"image {tag} exists already ({existing.short_id}); reusing it")
            return Artifact(runtime=self.name, ref=tag, id=existing.id, reused=True)
        folder = Path(spec.folder)
        if not folder.is_dir():
            raise DeployError(f"the deployment folder {folder} does not exist", step="build", folder=str(folder))
        started = time.monotonic()
        ensure_base_image(self.settings, self.client, progress)
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
                    self.wheel_cache_dir,
                    progress,
                    base_image=self.settings.worker_base_image,
                    client=self.client,
                    extra_labels=spec.extra_labels,
                )
            image_id, log_tail = self._build_image(context, tag, spec, progress)
        if existing is not None and existing.id != image_id:
            # The tag pointed at an image of another version label: it is untagged now; drop it if unused.
            with contextlib.suppress(MCSError), self._errors("remove old image"):
                self.client.images.remove(existing.id, noprune=False)
        _say(progress, f"built {tag} ({image_id[:19]}) in {time.monotonic() - started:.1f} s")
        return Artifact(runtime=self.name, ref=tag, id=image_id, reused=False, build_log_tail=log_tail)

    def _build_image(self, context: Path, tag: str, spec: BuildSpec, progress: Progress | None) -> tuple[str, str]:
        import docker.errors
        import requests.exceptions

        log: deque[str] = deque(maxlen=400)
        step_images: list[str] = []
        step_containers: list[str] = []
        error: str | None = None
        image_id: str | None = None
        pending = ""

        def take(line: str) -> None:
            log.append(line)
            if line.startswith("Step "):
                _say(progress, line)
            elif match := _STEP_CONTAINER.fullmatch(line):
                step_containers.append(match.group(1))
            elif match := _STEP_IMAGE.fullmatch(line):
                step_images.append(match.group(1))

        before = self._image_ids()
        try:
            stream = self.client.api.build(
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
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            self._cleanup_failed_build(spec, before, step_images, step_containers)
            raise ServiceUnavailable(
                f"the Docker daemon did not answer during the build of {tag} ({exc}); {_FIX_DAEMON}",
                service="docker",
                step="build",
            ) from exc
        if pending:
            take(pending)
        tail = "\n".join(list(log)[-BUILD_LOG_TAIL_LINES:])
        if error is None:
            image = self._get_image(tag)
            if image is None:
                error = f"the build finished but {tag} is not there"
            elif _labels(image.attrs).get(LABEL_VERSION) != spec.version:
                error = f"{tag} lacks the label {LABEL_VERSION}={spec.version}"
            elif image_id is not None and image.id != image_id:
                # A concurrent build of the same version tagged its image last: same content, keep that one.
                logger.info("%s was tagged by a concurrent build of the same version; using that image", tag)
                self._cleanup_failed_build(spec, before | {image.id}, step_images, step_containers)
                return image.id, tail
            else:
                logger.debug("build log of %s:\n%s", tag, "\n".join(log))
                return image.id, tail
        self._cleanup_failed_build(spec, before, step_images, step_containers)
        raise DeployError(
            f"the image build of {spec.task_name} (version {spec.version[:12]}) failed: {error}",
            step="build",
            image=tag,
            build_log_tail=tail,
        )

    def _cleanup_failed_build(
        self, spec: BuildSpec, before: set[str], step_images: list[str], step_containers: list[str]
    ) -> None:
        """Remove what a failed build made: step containers (forcerm does too), new untagged step images, and
        dangling images labelled with this task and version. Images that existed before are never touched."""
        import docker.errors
        import requests.exceptions

        try:
            for short in step_containers:
                with contextlib.suppress(docker.errors.NotFound):
                    self.client.containers.get(short).remove(force=True)
            now = self._image_ids()
            created = [i for s in reversed(step_images) for i in now - before if i.split(":")[-1].startswith(s)]
            labelled = self.client.images.list(
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
                    if self.client.api.inspect_image(image_id).get("RepoTags"):
                        continue  # tagged by someone: not a leftover of this build
                    self.client.images.remove(image_id, force=False, noprune=True)
                    logger.info("removed image %s left by the build", image_id[:19])
                except docker.errors.APIError as exc:  # gone already, or a layer another image builds on
                    logger.debug("kept image %s: %s", image_id[:19], exc.explanation or exc)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            logger.warning("could not remove everything the failed build of %s left: %s", spec.task_name, exc)

    # --- run -------------------------------------------------------------------------------------------------

    def start(self, spec: RunSpec) -> WorkerHandle:
        import docker.errors
        from docker.types import LogConfig

        name = container_name(spec.task_name, spec.version, spec.hostname)
        validate_queue(spec.queue, "queue")
        _validate_run_spec(spec)
        secrets = secret_values(spec.environment)
        labels = {**spec.labels, LABEL_HOSTNAME: spec.hostname, LABEL_ARTIFACT: spec.artifact.ref}
        with self._errors("start", secrets=secrets, container=name):
            if self._get_container(name) is not None:  # a unique hostname makes this a real collision
                raise DeployError(f"a container named {name} exists already", step="start", container=name)
            memory = f"{spec.mem_limit_mb}m"
            container = self.client.containers.create(
                spec.artifact.ref,
                command=worker_command(spec.queue, spec.hostname),
                name=name,
                environment=dict(spec.environment),
                user=WORKER_USER,
                working_dir=WORKDIR,
                read_only=True,
                tmpfs=dict(TMPFS),
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                privileged=False,
                mem_limit=memory,
                memswap_limit=memory,
                nano_cpus=round(spec.cpus * 1e9),
                pids_limit=spec.pids_limit,
                network_mode=spec.network,
                cgroupns="private",
                labels=labels,
                restart_policy=dict(RESTART_POLICY),
                log_config=LogConfig(type="json-file", config={"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILE}),
                init=True,
            )
            try:
                container.start()
                container.reload()
            except BaseException:
                # A container that could not start (no such network, image gone) is not left behind.
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True)
                raise
        logger.info("started worker %s (%s) for %s", name, container.short_id, spec.hostname)
        return self._handle(container)

    def state(self, handle: WorkerHandle) -> str:
        with self._errors("state", container=handle.name):
            container = self._get_container(handle.id)
            return MISSING if container is None else state_from_attrs(container.attrs)

    def logs(self, handle: WorkerHandle, tail_lines: int = 100) -> str:
        """The last ``tail_lines`` lines (stdout and stderr), at most 20 KB, secrets of its environment redacted."""
        import docker.errors

        lines = max(1, min(int(tail_lines), LOGS_MAX_LINES))
        with self._errors("logs", container=handle.name):
            container = self._get_container(handle.id)
            if container is None:
                return ""
            try:
                raw = container.logs(stdout=True, stderr=True, tail=lines, timestamps=False)
            except docker.errors.NotFound:
                return ""
        env = dict(
            item.split("=", 1) for item in ((container.attrs.get("Config") or {}).get("Env") or []) if "=" in item
        )
        text = redact(raw.decode("utf-8", "replace"), secret_values(env))
        if len(text) > LOGS_MAX_CHARS:
            text = "...\n" + text[-LOGS_MAX_CHARS:]
        return text

    def remove(self, handle: WorkerHandle) -> None:
        with self._errors("remove", container=handle.name):
            container = self._get_container(handle.id)
            if container is None:
                return
            if not is_mcs_worker(container):
                raise DeployError(
                    f"container {container.name} is not an MCS worker; not removing it",
                    step="remove",
                    container=container.name,
                )
            self._stop_and_remove(container)
        logger.info("removed worker %s", handle.name)

    def remove_artifact(self, artifact_ref: str) -> None:
        import docker.errors

        with self._errors("remove_artifact", image=artifact_ref):
            image = self._get_image(artifact_ref)
            if image is None:
                return
            labels = _labels(image.attrs)
            if labels.get(LABEL_MANAGED) != "1":
                raise DeployError(
                    f"image {artifact_ref} is not an MCS worker image (no {LABEL_MANAGED}=1 label); not removing it",
                    step="remove_artifact",
                    image=artifact_ref,
                )
            users = [
                c
                for c in self.client.containers.list(all=True, filters={"ancestor": image.id}, ignore_removed=True)
                if c.attrs.get("Image") == image.id
            ]
            for container in users:
                found = _labels(container.attrs)
                ours = (
                    is_mcs_worker(container)
                    and found.get(LABEL_TASK) == labels.get(LABEL_TASK)
                    and found.get(LABEL_VERSION) == labels.get(LABEL_VERSION)
                )
                if not ours:
                    raise DeployError(
                        f"image {artifact_ref} is still used by container {container.name}, which is not an MCS "
                        "worker of this version; remove that container first",
                        step="remove_artifact",
                        image=artifact_ref,
                        container=container.name,
                    )
                self._stop_and_remove(container)
            try:
                self.client.images.remove(artifact_ref, force=False, noprune=False)
            except docker.errors.ImageNotFound:
                return
        logger.info("removed image %s", artifact_ref)

    def workers(self, task_name: str | None = None) -> list[WorkerHandle]:
        filters = [f"{LABEL_MANAGED}=1"]
        if task_name is not None:
            filters.append(f"{LABEL_TASK}={validate_name(task_name, 'task_name')}")
        with self._errors("workers"):
            containers = self.client.containers.list(all=True, filters={"label": filters}, ignore_removed=True)
        return [self._handle(c) for c in containers if is_mcs_worker(c)]

    # --- helpers ---------------------------------------------------------------------------------------------

    def _handle(self, container: Any) -> WorkerHandle:
        labels = _labels(container.attrs)
        tags = getattr(container.image, "tags", None) if labels.get(LABEL_ARTIFACT) is None else None
        return WorkerHandle(
            runtime=self.name,
            id=container.id,
            name=container.name,
            hostname=labels.get(LABEL_HOSTNAME, ""),
            task_name=labels.get(LABEL_TASK, ""),
            queue=labels.get(LABEL_QUEUE, ""),
            version=labels.get(LABEL_VERSION, ""),
            artifact_ref=labels.get(LABEL_ARTIFACT) or (tags[0] if tags else ""),
        )

    def _stop_and_remove(self, container: Any) -> None:
        import docker.errors

        try:
            if container.status in ("running", "restarting", "paused"):
                container.stop(timeout=STOP_TIMEOUT_S)
            container.remove(force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc.explanation or ""):
                return
            raise

    def _get_container(self, ref: str) -> Any:
        import docker.errors

        try:
            return self.client.containers.get(ref)
        except docker.errors.NotFound:
            return None

    def _get_image(self, ref: str) -> Any:
        import docker.errors

        with self._errors("inspect image", image=ref):
            try:
                return self.client.images.get(ref)
            except docker.errors.ImageNotFound:
                return None

    def _image_ids(self) -> set[str]:
        with self._errors("list images"):
            return set(self.client.api.images(all=True, quiet=True))

    @contextlib.contextmanager
    def _errors(self, step: str, *, secrets: list[str] | None = None, **details: Any) -> Iterator[None]:
        """docker-py errors -> MCS errors (this module's one boundary); secrets are redacted from the message."""
        import docker.errors
        import requests.exceptions

        try:
            yield
        except MCSError:
            raise
        except docker.errors.APIError as exc:
            explanation = redact(str(exc.explanation or exc), secrets or [])
            error = DeployError(f"docker {step} failed: {explanation}", step=step, **details)
            if secrets:
                raise error from None  # the chained original would carry the unredacted text
            raise error from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            message = redact(str(exc), secrets or [])
            unavailable = ServiceUnavailable(
                f"the Docker daemon did not answer during {step} ({message}); {_FIX_DAEMON}",
                service="docker",
                step=step,
            )
            if secrets:
                raise unavailable from None
            raise unavailable from exc


# --- module helpers ----------------------------------------------------------------------------------------


def _validate_version(version: Any) -> str:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise InvalidInput("version", version, "use 8-128 lowercase hex digits (the bundle's content hash)")
    return version


def _validate_run_spec(spec: RunSpec) -> None:
    if not _HOSTNAME.fullmatch(spec.hostname or ""):
        raise InvalidInput("hostname", spec.hostname, "use 1-255 of A-Z a-z 0-9 _ . @ - (no '%' expansions)")
    if not _NETWORK.fullmatch(spec.network or ""):
        raise InvalidInput("network", spec.network, "use host, none or a Docker network name (no 'container:')")
    if not isinstance(spec.mem_limit_mb, int) or spec.mem_limit_mb < 16:
        raise InvalidInput("mem_limit_mb", spec.mem_limit_mb, "use an integer of at least 16")
    if not isinstance(spec.pids_limit, int) or spec.pids_limit < 1:
        raise InvalidInput("pids_limit", spec.pids_limit, "use an integer of at least 1 (0 would mean unlimited)")
    if not isinstance(spec.cpus, int | float) or not 0 < spec.cpus <= 64:
        raise InvalidInput("cpus", spec.cpus, "use a number above 0 and at most 64")
    for key, value in spec.environment.items():
        if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
            raise InvalidInput("environment", key, "variable names are letters, digits and '_'")
        if not isinstance(value, str) or "\x00" in value:
            raise InvalidInput("environment", key, "values are strings without NUL (value not shown)")


def _labels(attrs: Mapping[str, Any]) -> dict[str, str]:
    return dict((attrs.get("Config") or {}).get("Labels") or {})


def _parse_docker_time(value: Any) -> datetime | None:
    """Docker's RFC 3339 timestamps carry nanoseconds; datetime takes microseconds."""
    if not isinstance(value, str) or value.startswith("0001-"):
        return None
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value)
    if match is None:
        return None
    fraction = (match.group(2) or "0")[:6].ljust(6, "0")
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    try:
        return datetime.fromisoformat(f"{match.group(1)}.{fraction}{zone}")
    except ValueError:
        return None


def _say(progress: Progress | None, message: str) -> None:
    logger.info(message)
    if progress is not None:
        progress(message)
