"""Helpers that test modules import by name (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcs.core.settings import Settings

TEST_LABEL = "mcs.test"
REQUIRE_DOCKER = os.environ.get("MCS_REQUIRE_DOCKER") == "1"


def make_settings(tmp_path: Path, **overrides) -> Settings:
    values = {
        "generated_tasks_dir": tmp_path / "generated_tasks",
        "deployments_dir": tmp_path / "deployments",
        "deploy_secret_file": tmp_path / "deploy_secret",
        "state_dir": tmp_path / "state",
        "metadata_prefix": f"mcs-test-{uuid.uuid4().hex[:8]}:",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.2) -> Any:
    """``condition()``'s first truthy value, polled until ``timeout_s``; a failure naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what} (last: {value!r})")
        time.sleep(every_s)


class Tracker:
    """Removes every container and image a test made, whatever happened."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.containers: list[str] = []
        self.images: list[str] = []

    def cleanup(self) -> None:
        import docker.errors

        for ref in self.containers:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.containers.get(ref).remove(force=True)
        for ref in self.images:
            with contextlib.suppress(docker.errors.ImageNotFound):
                self.client.images.remove(ref, force=True)
