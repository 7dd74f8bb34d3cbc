"""make up / make down (mcs.stack) and the environment that carries settings to child processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mcs.core.settings import PROJECT_ROOT, Settings
from mcs.stack import Stack, child_env, port_is_free, process_env, redis_answers
from Redis.registry import TaskRegistry
from tests.helpers import make_settings


@pytest.mark.unit
def test_child_env_carries_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password = "pw/@:x"  # pragma: allowlist secret
    original = make_settings(
        tmp_path, redis_port=7777, redis_password=password, metadata_db=5, worker_labels={"a": "b"},
        worker_runtime="process", deploy_roots=[tmp_path / "a", tmp_path / "b"], allow_custom_dockerfile=True,
        worker_network="none", deploy_queue="deploy2", deploy_secret="s" * 40,
    )  # fmt: skip
    for name, value in child_env(original).items():
        monkeypatch.setenv(name, value)
    rebuilt = Settings()
    for field in Settings.model_fields:  # every setting, whichever source it came from
        assert getattr(rebuilt, field) == getattr(original, field), field


@pytest.mark.integration
def test_embedded_redis_when_none_is_configured(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, state_dir=tmp_path / "state")  # nothing configured: 127.0.0.1:6379
    stack = Stack(settings, say=lambda m: None)
    already_there = redis_answers(settings)
    default_port_free = port_is_free(6379)
    try:
        used = stack.start_redis()
        if already_there:
            assert "found on localhost" in stack.redis_note and used.redis_port == 6379
        else:
            assert stack.redis_note.startswith("embedded") and stack.redis_server is not None
            assert redis_answers(used) and (tmp_path / "state" / "redis").is_dir()
            assert (used.redis_port == 6379) is default_port_free  # the default port when it is free
    finally:
        stack.stop()


@pytest.mark.integration
def test_configured_redis_that_does_not_answer_is_an_error(tmp_path: Path) -> None:
    from mcs.core.errors import ServiceUnavailable
    from Redis.server import free_port

    settings = make_settings(tmp_path, redis_port=free_port())  # explicitly configured
    with pytest.raises(ServiceUnavailable, match="configured but does not answer"):
        Stack(settings, say=lambda m: None).start_redis()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_command(settings: Settings, command: str) -> subprocess.CompletedProcess[str]:
    env = process_env(settings)
    return subprocess.run([sys.executable, "-m", "mcs.stack", command], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.integration
def test_up_prints_the_claude_block_and_down_stops_what_up_started(settings: Settings) -> None:
    settings = settings.model_copy(update={"worker_runtime": "process", "dashboard_port": free_port()})
    registry = TaskRegistry(settings)
    up = stack_command(settings, "up")
    assert up.returncode == 0, up.stderr
    state = json.loads((settings.state_dir / "run" / "stack.json").read_text())
    try:
        block = json.loads(up.stdout)["mcpServers"]["mcs"]
        assert block["command"] == sys.executable and block["args"] == [str(PROJECT_ROOT / "mcp_server.py")]
        assert block["env"]["REDIS_PORT"] == str(settings.redis_port) and "REDIS_PASSWORD" not in block["env"]
        assert registry.client.exists(registry.keys.deploy_worker_alive())
        os.kill(state["deploy_worker"]["pid"], 0)  # running
        dashboard = f"http://127.0.0.1:{settings.dashboard_port}/"
        assert f"dashboard: {dashboard}" in up.stderr and state["dashboard"]["url"] == dashboard
        with urllib.request.urlopen(dashboard + "healthz", timeout=5) as answer:  # noqa: S310 (loopback)
            assert answer.status == 200
        again = stack_command(settings, "up")  # a second up changes nothing
        assert again.returncode == 0 and json.loads(again.stdout) == json.loads(up.stdout)
    finally:
        down = stack_command(settings, "down")
    assert down.returncode == 0 and "deploy_worker: stopped" in down.stderr and "dashboard: stopped" in down.stderr
    assert not (settings.state_dir / "run" / "stack.json").exists()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(state["deploy_worker"]["pid"], 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the deploy worker still runs after make down")


@pytest.mark.integration
def test_a_stale_state_file_is_neither_trusted_nor_used_to_kill(settings: Settings) -> None:
    settings = settings.model_copy(update={"worker_runtime": "process", "dashboard_port": free_port()})
    gone = subprocess.Popen(["true"])
    gone.wait()
    run = settings.state_dir / "run"
    run.mkdir(parents=True)
    stale = {"deploy_worker": {"pid": gone.pid, "started": 1}, "redis": None, "claude": {"mcpServers": {}}}
    (run / "stack.json").write_text(json.dumps(stale))
    up = stack_command(settings, "up")
    try:
        assert up.returncode == 0, up.stderr
        assert "stale" in up.stderr and json.loads(up.stdout)["mcpServers"]["mcs"]
        state = json.loads((run / "stack.json").read_text())
        assert state["deploy_worker"]["pid"] != gone.pid
    finally:
        down = stack_command(settings, "down")
    assert down.returncode == 0 and "deploy_worker: stopped" in down.stderr
