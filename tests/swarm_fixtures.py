"""Fixtures of the ``swarm`` tier: a Docker daemon that is a swarm manager, and the registry (MCS_SWARM_REGISTRY).

Skipped with the reason locally when either is missing; a failure under ``MCS_REQUIRE_SWARM=1`` (CI sets both up).
Import the fixtures into a test module by name (``from tests.swarm_fixtures import swarm_client``).

Cleanup touches only what swarm tests make: services, secrets and networks labelled ``mcs.test``, and images
labelled ``mcs.test`` that have a tag in the registry (the docker tier's cleanup leaves swarm objects alone, and
this one leaves the docker tier's containers alone: both may run on one daemon at once).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from deploy_mcp.swarm.registry import registry_answers
from mcs.core.settings import Settings
from tests.helpers import TEST_LABEL

REQUIRE_SWARM = os.environ.get("MCS_REQUIRE_SWARM") == "1"
REGISTRY = Settings.model_fields["swarm_registry"].default


def _why_no_swarm(client: Any) -> str | None:
    swarm = client.info().get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        return "the Docker daemon is not a swarm manager; run `docker swarm init --advertise-addr 127.0.0.1`"
    reason = registry_answers(REGISTRY)
    if reason is not None:
        return f"the registry {REGISTRY} does not answer ({reason}); run `docker-registry serve CONFIG` on it"
    return None


@pytest.fixture(scope="session")
def swarm_client() -> Iterator[Any]:
    """A docker-py client of a swarm manager with the registry answering, or a skip (a failure under
    MCS_REQUIRE_SWARM=1)."""
    import docker

    try:
        client = docker.from_env(timeout=120)
        reason = _why_no_swarm(client)
    except Exception as exc:
        client, reason = None, f"no Docker daemon answers ({type(exc).__name__}: {exc}); start dockerd"
    if reason is not None:
        if client is not None:
            client.close()
        if REQUIRE_SWARM:
            pytest.fail(reason + " [MCS_REQUIRE_SWARM=1]")
        pytest.skip(reason)
    remove_swarm_test_objects(client)
    yield client
    remove_swarm_test_objects(client)
    client.close()


def remove_swarm_test_objects(client: Any) -> None:
    """Services, secrets, networks and registry-tagged images of swarm tests (label ``mcs.test``), nothing else."""
    import docker.errors

    for service in client.api.services(filters={"label": TEST_LABEL}):
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_service(service["ID"])
    for secret in client.api.secrets(filters={"label": TEST_LABEL}):
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_secret(secret["ID"])
    networks = client.networks.list(filters={"label": TEST_LABEL})
    deadline = time.monotonic() + 60
    while networks and time.monotonic() < deadline:  # a network frees once Swarm let go of its tasks
        left = []
        for network in networks:
            try:
                network.remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                left.append(network)
        networks = left
        if networks:
            time.sleep(1)
    for image in client.images.list(filters={"label": TEST_LABEL}):
        refs = [*image.tags, *(image.attrs.get("RepoDigests") or [])]  # a pull by digest leaves no tag
        if any(ref.startswith(REGISTRY + "/") for ref in refs):
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image.id, force=True)
