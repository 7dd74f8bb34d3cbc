"""What names and describes a task's image and worker container, and what the runtime reads from ``docker inspect``.

Pure functions (no daemon calls), so the naming rules and the state rules can be tested without Docker.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from deploy_mcp.runtime import LABEL_MANAGED, LABEL_TASK, LABEL_VERSION, RunSpec
from mcs.core.errors import InvalidInput
from mcs.core.names import validate_name

#: Labels the runtime adds to containers (next to those of ``RunSpec.labels``).
LABEL_HOSTNAME = "mcs.hostname"
LABEL_ARTIFACT = "mcs.artifact"

RUNNING = "RUNNING"
RESTARTING = "RESTARTING"
EXITED = "EXITED"
MISSING = "MISSING"

#: A container that restarted is reported RESTARTING until it has stayed up this long (a crash loop never does:
#: Docker's restart back-off starts at 100 ms and doubles, and is reset only after 10 s of uptime).
STABLE_AFTER_S = 30.0

_VERSION = re.compile(r"[0-9a-f]{8,128}")
_HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,254}")
_NETWORK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# One path component of a Docker repository name (distribution/reference grammar).
_REPO_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_BEYOND_MICROSECONDS = re.compile(r"(\.\d{6})\d+")


def image_tag(task_name: str, version: str) -> str:
    """``mcs-<task>:<version>``; InvalidInput when the pair cannot form a Docker reference."""
    validate_name(task_name, "task_name")
    validate_version(version)
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
    validate_version(version)
    return f"mcs-{task_name}-{version[:12]}-{hashlib.sha256(hostname.encode()).hexdigest()[:6]}"


def is_mcs_worker(container: Any) -> bool:
    """A worker container the runtime started, not merely one made from an MCS image.

    A container inherits its image's labels, so ``mcs.managed=1`` alone also marks any container someone runs
    from a worker image. Only ``start`` sets ``mcs.hostname`` and names the container after task and version.
    """
    labels = labels_of(container.attrs)
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
            started = parse_docker_time(state.get("StartedAt"))
            now = now or datetime.now(UTC)
            if started is None or (now - started).total_seconds() < STABLE_AFTER_S:
                return RESTARTING
        return RUNNING
    if status == "restarting":
        return RESTARTING
    return EXITED  # exited, dead, created (never started), paused, removing


def parse_docker_time(value: Any) -> datetime | None:
    """A Docker RFC 3339 timestamp as an aware datetime; None for Docker's zero time ``0001-...`` and garbage.

    Docker writes nanoseconds, datetime keeps microseconds: the extra digits are cut before parsing.
    """
    if not isinstance(value, str) or value.startswith("0001-"):
        return None
    try:
        parsed = datetime.fromisoformat(_BEYOND_MICROSECONDS.sub(r"\1", value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def labels_of(attrs: Mapping[str, Any]) -> dict[str, str]:
    """The labels of an image's or container's ``docker inspect`` data."""
    return dict((attrs.get("Config") or {}).get("Labels") or {})


def validate_version(version: Any) -> str:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise InvalidInput("version", version, "use 8-128 lowercase hex digits (the bundle's content hash)")
    return version


def validate_run_spec(spec: RunSpec) -> None:
    """Everything of a RunSpec that reaches the daemon, checked before any call (queue and names elsewhere)."""
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
