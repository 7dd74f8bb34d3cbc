"""The registry swarm nodes pull task images from: tag and push (docker-py), and whether it answers.

Every node of a swarm must pull the same image, so a task image built locally is tagged
``<MCS_SWARM_REGISTRY>/mcs-<task>:<version>`` and pushed; the service names it pinned to the digest the registry
returned. The daemon talks to the registry (a loopback registry is plain HTTP for Docker by default; any other
must serve TLS or be listed in the daemon's ``insecure-registries``). Pushing needs no credentials for Debian's
``docker-registry`` as MCS runs it; a registry with authentication needs ``docker login`` on the host (docker-py
reads the same config file).
"""

from __future__ import annotations

import http.client
import logging
import time
from typing import Any

import docker.errors

from deploy_mcp.docker.client import docker_errors, get_image
from deploy_mcp.runtime import Progress, say
from mcs.core.errors import DeployError, ServiceUnavailable

logger = logging.getLogger(__name__)

PING_TIMEOUT_S = 3.0
LOOPBACK = ("127.", "localhost", "[::1]")
FIX_REGISTRY = (
    "start it (e.g. `docker-registry serve CONFIG` with `http: addr: 127.0.0.1:5000`) or set MCS_SWARM_REGISTRY"
)


def split_repository(ref: str) -> tuple[str, str]:
    """``host:port/path/name:tag`` -> (``host:port/path/name``, ``tag``)."""
    repository, _, tag = ref.rpartition(":")
    if not repository or "/" in tag:
        raise DeployError(f"image ref {ref} has no tag", step="push", image=ref)
    return repository, tag


def push(client: Any, image_id: str, ref: str, progress: Progress | None = None) -> str:
    """Tag ``image_id`` as ``ref`` and push it; the digest the registry stored (``sha256:...``). A push the
    registry or the daemon refused -> DeployError with its message (the stream reports errors as entries, not as
    an HTTP status)."""
    repository, tag = split_repository(ref)
    started = time.monotonic()
    digest = ""
    with docker_errors("push", image=ref):
        client.api.tag(image_id, repository, tag=tag)
        for entry in client.api.push(repository, tag=tag, stream=True, decode=True):
            if not isinstance(entry, dict):
                continue
            if entry.get("error") or entry.get("errorDetail"):
                detail = entry.get("errorDetail") or {}
                message = str(detail.get("message") or entry.get("error"))
                raise DeployError(f"the registry refused the push of {ref}: {message}", step="push", image=ref)
            aux = entry.get("aux") or {}
            digest = str(aux.get("Digest") or digest)
    if not digest.startswith("sha256:"):
        raise DeployError(f"the push of {ref} ended without a digest from the registry", step="push", image=ref)
    say(progress, f"pushed {ref} ({digest[:19]}) in {time.monotonic() - started:.1f} s", logger)
    return digest


def pinned_ref(client: Any, ref: str) -> str:
    """``ref@sha256:...``: every node runs exactly what was pushed, and a node that has it starts it without
    asking the registry (Swarm pulls a tag at each start). The digest is the local image's record of the push,
    else the registry's answer (through the daemon); ``ref`` itself when neither knows it."""
    image = get_image(client, ref)
    repository = split_repository(ref)[0]
    for digest in (image.attrs.get("RepoDigests") or []) if image is not None else []:
        if digest.startswith(repository + "@"):
            return f"{ref}@{digest.split('@', 1)[1]}"
    try:
        digest = str(client.api.inspect_distribution(ref)["Descriptor"]["digest"])
    except (docker.errors.APIError, KeyError, TypeError):
        return ref  # the node's pull of the tag then says what is wrong, in the replica's task error
    return f"{ref}@{digest}" if digest.startswith("sha256:") else ref


def local_image(client: Any, ref: str) -> tuple[Any, str]:
    """The local image of a registry ref and how to name it: by its tag, else (a node that pulled it by digest
    has no tag) by ``repository@digest``; (None, ref) when this daemon does not have it."""
    image = get_image(client, ref)
    if image is not None:
        return image, ref
    pinned = pinned_ref(client, ref)
    if "@" not in pinned:
        return None, ref
    by_digest = f"{split_repository(ref)[0]}@{pinned.split('@', 1)[1]}"
    return get_image(client, by_digest), by_digest


def registry_answers(registry: str, timeout_s: float = PING_TIMEOUT_S) -> str | None:
    """None when the registry answers its API root (``/v2/``, any HTTP status: 401 is an answer), else why not.

    Asked from this host: over HTTP for a loopback registry (as Docker does), else over HTTPS, then HTTP."""
    host = registry.split("/", 1)[0]
    schemes = ("http",) if host.startswith(LOOPBACK) else ("https", "http")
    reasons = []
    for scheme in schemes:
        kind = http.client.HTTPConnection if scheme == "http" else http.client.HTTPSConnection
        connection = kind(host, timeout=timeout_s)
        try:
            connection.request("GET", "/v2/")
            connection.getresponse().read(1024)
            return None
        except (OSError, http.client.HTTPException) as exc:
            reasons.append(f"{scheme}: {type(exc).__name__}: {exc}")
        finally:
            connection.close()
    return "; ".join(reasons)


def check_registry(registry: str) -> None:
    reason = registry_answers(registry)
    if reason is not None:
        raise ServiceUnavailable(
            f"the swarm registry {registry} (MCS_SWARM_REGISTRY) does not answer ({reason}); {FIX_REGISTRY}",
            service="registry",
            registry=registry,
        )
