"""The main job end to end (mcs.demo): each step's structured result, and nothing of the demo left afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy_mcp.process_runtime import ProcessRuntime
from mcs.core.settings import Settings
from mcs.demo import QUEUE, TASK, run_demo
from Redis.registry import TaskRegistry
from tests.helpers import TEST_LABEL

EXPECTED_TOOLS = [
    "generate_startMain_code",
    "deploy_task",
    "trigger_celery_task",
    "send_celery_task",
    "get_celery_result",
    "get_available_tasks",
    "get_task_details",
    "undeploy_task",
]


def run(settings: Settings, runtime: str, tmp_path: Path) -> dict[str, dict]:
    settings = settings.model_copy(update={"worker_runtime": runtime, "worker_labels": {TEST_LABEL: "1"}})
    lines: list[str] = []
    steps = run_demo(settings, say=lines.append)
    tools = [name for name, _ in steps]
    assert tools[:4] == EXPECTED_TOOLS[:4] and tools[-3:] == EXPECTED_TOOLS[-3:]
    assert set(tools) == set(EXPECTED_TOOLS)
    results = dict(steps)  # the last get_celery_result poll wins
    assert "app_test_queue.py" in results["generate_startMain_code"]["files"]
    deployed = results["deploy_task"]
    assert deployed["worker_status"] == "RUNNING" and deployed["runtime"] == runtime and deployed["success"]
    assert results["trigger_celery_task"]["result"] == 30
    assert results["get_celery_result"]["status"] == "SUCCESS" and results["get_celery_result"]["result"] == 3
    assert TASK in [t["name"] for t in results["get_available_tasks"]["tasks"]]
    assert results["get_task_details"]["task"]["deployment"]["version"] == deployed["version"]
    assert "registry entry" in results["undeploy_task"]["removed"]
    assert any("Demo complete" in line for line in lines)
    assert any(line.startswith("  ... ") for line in lines), "deploy_task reported no progress"
    # Nothing of the demo is left: no registry entry, no folders, no worker.
    assert TaskRegistry(settings).find(TASK) is None
    assert not (settings.deployments_dir / f"{TASK}_{QUEUE}").exists()
    assert not (settings.generated_tasks_dir / f"{TASK}_{QUEUE}").exists()
    return results


@pytest.mark.integration
def test_demo_with_the_process_runtime(settings: Settings, tmp_path: Path) -> None:
    run(settings, "process", tmp_path)
    assert ProcessRuntime(settings).workers() == []


@pytest.mark.docker
def test_demo_with_docker(settings: Settings, tmp_path: Path, docker_client) -> None:
    results = run(settings, "docker", tmp_path)
    assert results["deploy_task"]["docker_image"] == f"mcs-{TASK}:{results['deploy_task']['version']}"
    assert docker_client.containers.list(all=True, filters={"label": f"mcs.task={TASK}"}) == []
    assert docker_client.images.list(name=f"mcs-{TASK}") == []
