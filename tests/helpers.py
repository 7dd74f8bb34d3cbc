"""Helpers that test modules import by name (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

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
