"""security_check.sh against a scratch repository with planted secrets."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mcs.core.settings import PROJECT_ROOT

pytestmark = pytest.mark.unit

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"  # pragma: allowlist secret
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n"  # pragma: allowlist secret


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "Redis").mkdir(parents=True)
    (root / "generated_tasks").mkdir()
    shutil.copy(PROJECT_ROOT / "security_check.sh", root / "security_check.sh")
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "detect-secrets").symlink_to(PROJECT_ROOT / ".venv" / "bin" / "detect-secrets")
    (root / ".gitignore").write_text(".env\nRedis/redis_config.py\ngenerated_tasks/\n.venv/\n")
    (root / "app.py").write_text("print('hello')\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    return root


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def run_check(root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["bash", str(root / "security_check.sh")], capture_output=True, text=True, env=env)


def test_clean_repository_passes(repo: Path) -> None:
    result = run_check(repo)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_tracked_env_file_fails(repo: Path) -> None:
    (repo / ".env").write_text("REDIS_HOST=localhost\n")
    git(repo, "add", "-f", ".env")
    result = run_check(repo)
    assert result.returncode == 1
    assert ".env is tracked by git" in result.stderr


def test_tracked_redis_config_fails(repo: Path) -> None:
    (repo / "Redis" / "redis_config.py").write_text("X = 1\n")
    git(repo, "add", "-f", "Redis/redis_config.py")
    result = run_check(repo)
    assert result.returncode == 1
    assert "Redis/redis_config.py is tracked by git" in result.stderr


def test_untracked_env_file_is_fine(repo: Path) -> None:
    (repo / ".env").write_text("REDIS_PASSWORD=whatever-local\n")
    assert run_check(repo).returncode == 0


def test_secret_in_tracked_file_fails_and_says_where(repo: Path) -> None:
    (repo / "config.py").write_text(f"x = 1\naws_access_key_id = '{AWS_KEY}'\n")
    git(repo, "add", "config.py")
    result = run_check(repo)
    assert result.returncode == 1
    assert "config.py:2" in result.stderr
    assert "AWS" in result.stderr


def test_secret_in_generated_task_fails(repo: Path) -> None:
    folder = repo / "generated_tasks" / "simple_add_test_queue"
    folder.mkdir()
    (folder / "app_test_queue.py").write_text(PRIVATE_KEY)
    result = run_check(repo)
    assert result.returncode == 1
    assert "generated_tasks/simple_add_test_queue/app_test_queue.py:1" in result.stderr


def test_password_default_in_code_fails(repo: Path) -> None:
    (repo / "settings.py").write_text("REDIS_PASSWORD = 'hunter2-very-secret'\n")  # pragma: allowlist secret
    git(repo, "add", "settings.py")
    result = run_check(repo)
    assert result.returncode == 1
    assert "settings.py:1" in result.stderr
