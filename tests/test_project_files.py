"""Project files that must stay in step: pins mirrored in requirement.txt, ignored secret files, examples."""

from __future__ import annotations

import subprocess
import tomllib

import pytest

from mcs.core.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.unit


def test_requirement_txt_mirrors_pyproject_dependencies() -> None:
    pins = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [
        line.strip()
        for line in (PROJECT_ROOT / "requirement.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == pins
    assert all("==" in pin for pin in pins)


def test_secret_files_are_git_ignored() -> None:
    for path in (".env", "Redis/redis_config.py"):
        result = subprocess.run(["git", "-C", str(PROJECT_ROOT), "check-ignore", "-q", path], check=False)
        assert result.returncode == 0, f"{path} must be git-ignored"


def test_env_example_names_only_real_settings() -> None:
    names = set()
    for line in (PROJECT_ROOT / ".env.example").read_text().splitlines():
        line = line.lstrip("# ").strip()
        if "=" in line and line.split("=")[0].isupper():
            names.add(line.split("=")[0])
    aliases = {Settings.env_name(field) for field in Settings.model_fields}
    assert names and names <= aliases, names - aliases
