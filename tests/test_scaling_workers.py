"""Scaling through MCP with the real deploy worker and Docker: scale_task, the autoscaler on queue depth with its
cooldown, parking at zero (no container at all) and the first call waking the task."""

from __future__ import annotations

import time

import pytest

from deploy_mcp.runtime import LABEL_TASK
from tests.helpers import wait_for

pytestmark = pytest.mark.docker

PARAMS = [{"name": "seconds", "type": "float"}]
BODY = "import socket, time\ntime.sleep(seconds)\nreturn socket.gethostname()"


@pytest.fixture(scope="module")
def stage(docker_client, tmp_path_factory: pytest.TempPathFactory):
    from tests.deploy_stage import open_stage

    with open_stage(tmp_path_factory, watch_every_s=1.0, autoscale_every_s=0.5, autoscale_cooldown_s=5.0) as opened:
        yield opened


def deployment(stage, task: str) -> dict:
    (found,) = [d for d in stage.one("list_deployments")["deployments"] if d["task_name"] == task]
    return found


def containers(docker_client, task: str) -> list:
    return docker_client.containers.list(filters={"label": f"{LABEL_TASK}={task}"})


def test_scale_task_up_and_down(stage, docker_client) -> None:
    generated, deployed = stage.mcp(
        ("generate_startMain_code", {"task_name": "steady", "description": "sleeps", "parameters": PARAMS,
                                     "function_body": BODY, "queue": "steady_q", "return_type": "str",
                                     "overwrite": True}),
        ("deploy_task", {"task_name": "steady", "queue": "steady_q"}),
    )  # fmt: skip
    assert generated["success"] and deployed["success"] and deployed["replicas"] == 1, deployed
    up = stage.one("scale_task", task_name="steady", replicas=3)
    assert up["success"] and (up["previous"], up["replicas"], up["replicas_running"]) == (1, 3, 3), up
    assert [w["slot"] for w in up["workers"]] == [1, 2, 3] and len(containers(docker_client, "steady")) == 3
    seen = wait_for(
        lambda: (d := stage.one("get_task_details", task_name="steady")).get("replicas_running") == 3 and d,
        90,
        "get_task_details shows 3 running",
    )
    assert seen["task"]["deployment"]["replicas"] == 3 and [w["state"] for w in seen["workers"]] == ["RUNNING"] * 3
    down = stage.one("scale_task", task_name="steady", replicas=1)
    assert down["success"] and down["replicas"] == 1, down
    wait_for(lambda: len(containers(docker_client, "steady")) == 1, 90, "the extra workers stop")
    listed = deployment(stage, "steady")
    assert [(e["from_replicas"], e["to_replicas"]) for e in listed["scaling"]][:2] == [(3, 1), (1, 3)]
    refused = stage.one("scale_task", task_name="steady", replicas=99)
    assert refused["success"] is False and refused["error"] == "invalid_input" and "replicas" in refused["message"]
    assert stage.one("undeploy_task", task_name="steady")["success"]


def test_autoscaling_parks_at_zero_scales_on_depth_and_wakes_on_a_call(stage, docker_client) -> None:
    generated, deployed = stage.mcp(
        ("generate_startMain_code", {"task_name": "elastic", "description": "sleeps", "parameters": PARAMS,
                                     "function_body": BODY, "queue": "elastic_q", "return_type": "str",
                                     "overwrite": True}),
        ("deploy_task", {"task_name": "elastic", "queue": "elastic_q", "min_replicas": 0, "max_replicas": 2}),
    )  # fmt: skip
    assert generated["success"] and deployed["success"], deployed
    assert (deployed["min_replicas"], deployed["max_replicas"], deployed["replicas"]) == (0, 2, 1)
    # Idle for the cooldown: parked, no container at all.
    wait_for(
        lambda: deployment(stage, "elastic")["replicas"] == 0 and not containers(docker_client, "elastic"), 90, "parked"
    )
    assert deployment(stage, "elastic")["worker_status"] == "PARKED"

    # Four 6 s calls through one MCP session (send returns without waiting for a worker): the first wakes the
    # task, the queue's depth scales it to two workers, which serve them.
    calls = [("send_celery_task", {"task_name": "elastic", "kwargs": {"seconds": 6}})] * 4
    sent = stage.mcp(*calls)
    assert all(s["success"] for s in sent), sent
    ids = [s["task_id"] for s in sent]
    deadline = time.monotonic() + 120
    while (done := stage.one("get_celery_result", task_ids=ids, wait_s=30))["counts"]["ready"] != 4:
        assert done["success"] and time.monotonic() < deadline, done
    assert len({r["result"] for r in done["results"]}) >= 2  # more than one worker (container hostname) served them
    events = deployment(stage, "elastic")["scaling"]
    assert any(e["to_replicas"] == 2 and e["reason"].startswith("autoscaler") for e in events), events

    # Idle again: back to zero; then a trigger waits for the cold start and is answered.
    wait_for(lambda: deployment(stage, "elastic")["replicas"] == 0, 90, "parked again")
    wait_for(lambda: not containers(docker_client, "elastic"), 90, "no container")
    answered = stage.one("trigger_celery_task", task_name="elastic", kwargs={"seconds": 0}, timeout_s=60)
    assert answered["success"] and answered["status"] == "SUCCESS", answered
    assert deployment(stage, "elastic")["replicas"] >= 1
    assert stage.one("undeploy_task", task_name="elastic")["success"]
    assert not containers(docker_client, "elastic")
