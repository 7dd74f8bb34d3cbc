"""What a version going live carries through a deploy, a rollback or a gradual release."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deploy_mcp.runtime import Artifact
from mcs.core.capacity import Capacity
from mcs.core.manifest import DeployPlan


@dataclass(frozen=True)
class DeployOptions:
    network: str  # none: Redis only; egress: the network of MCS_WORKER_NETWORK
    sandbox: str  # runc or gvisor
    capacity: Capacity = field(default_factory=Capacity)  # pool processes, workers, autoscaling range


@dataclass(frozen=True)
class Launch:
    """A version about to go live: what it registers and tests, its artefact and its choices."""

    plan: DeployPlan
    version: str
    artifact: Artifact
    options: DeployOptions
    source: str  # rendered or custom: the recipe the artefact was built with
    fresh_folder: Path | None = None  # the version folder this deploy wrote (removed if the deploy fails)
    rollback: bool = False  # the artefact is a kept one: never removed on failure
    canary_percent: int | None = None  # a gradual release: this share of the calls, the rest to what serves
