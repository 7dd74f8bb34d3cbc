"""The life cycle with real workers, through the MCP server over stdio, on the process runtime and on Docker: a
folder's manifest deploys with task_name and queue alone, every task of the folder answers after one deploy and goes
with one undeploy, a version failing its test cases never serves, a redeploy's calls are each answered by exactly
one version with none lost, versions are listed and rolled back without a build, a transient exception is retried,
and a gradual release splits the calls until it is promoted.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from mcs.services import Services

TASK, QUEUE = "life_add", "life_q"
ADD_PARAMS = [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]
FLAKY_BODY = """import os
path = "/tmp/flaky-" + key
tries = int(open(path).read()) + 1 if os.path.exists(path) else 1
with open(path, "w") as f:
    f.write(str(tries))
if tries < 3:
    raise ConnectionError(f"try {tries}: not yet")
return tries"""


def folder(version: str, add_body: str = "return a + b") -> dict:
    """generate_startMain_code's arguments for one version of the three-task folder."""
    return {
        "task_name": TASK,
        "description": "adds two numbers",
        "parameters": ADD_PARAMS,
        "function_body": add_body,
        "queue": QUEUE,
        "category": "lifecycle",
        "return_type": "int",
        "tests": [{"args": [2, 3], "expect": 5}, {"args": [2, "x"], "expect_error": "TypeError"}],
        "overwrite": True,
        "tasks": [
            {"task_name": "life_version", "description": "which version answers", "parameters": [],
             "function_body": f"return {version!r}", "tests": [{"expect": version}]},
            {"task_name": "life_flaky", "description": "fails twice, then answers",
             "parameters": [{"name": "key", "type": "str"}], "function_body": FLAKY_BODY, "return_type": "int",
             "retry": {"on": ["ConnectionError"], "max_retries": 3, "backoff_s": 0.1}},
        ],
    }  # fmt: skip


@pytest.fixture(
    scope="module",
    params=[pytest.param("process", marks=pytest.mark.integration), pytest.param("docker", marks=pytest.mark.docker)],
)
def stage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    from tests.deploy_stage import open_stage

    if request.param == "docker":
        request.getfixturevalue("docker_client")
    with open_stage(tmp_path_factory, worker_runtime=request.param, keep_versions=3) as opened:
        yield opened


def deploy_bare(stage) -> dict:
    return stage.one("deploy_task", task_name=TASK, queue=QUEUE)


def calls_during(stage, action, every_s: float = 0.02) -> tuple[dict, list[str]]:
    """Run ``action`` while a thread sends life_version every ``every_s``; wait for every call; their answers in
    the order they were sent."""
    services = Services(stage.settings)
    stop = threading.Event()
    sent: list[str] = []

    def send() -> None:
        while not stop.is_set():
            sent.append(services.invoker.send("life_version").task_id)
            time.sleep(every_s)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        outcome = action()
        time.sleep(0.5)  # calls keep coming after the switch
    finally:
        stop.set()
        sender.join()
    answers = []
    deadline = time.monotonic() + 120
    for task_id in sent:
        while not (status := services.invoker.status(task_id)).ready:
            assert time.monotonic() < deadline, f"call {task_id} was lost: {status.message}"
            time.sleep(0.05)
        answers.append(status.result)
    return outcome, answers


def test_the_life_cycle(stage) -> None:
    assert stage.one("generate_startMain_code", **folder("v1"))["manifest"] == "mcs.json"
    first = deploy_bare(stage)
    assert first["success"], first
    assert first["tasks"] == [TASK, "life_version", "life_flaky"]
    assert first["sources"]["description"] == "manifest" and first["tests"]["passed"] == 3
    answers = stage.mcp(
        ("trigger_celery_task", {"task_name": TASK, "kwargs": {"a": 2, "b": 3}}),
        ("trigger_celery_task", {"task_name": "life_version"}),
        ("trigger_celery_task", {"task_name": "life_flaky", "kwargs": {"key": uuid.uuid4().hex}, "timeout_s": 60}),
        ("get_task_details", {"task_name": "life_flaky"}),
    )
    assert [a.get("result") for a in answers[:3]] == [5, "v1", 3]  # the flaky task: retried to success
    flaky = answers[3]["task"]
    assert flaky["retry"]["max_retries"] == 3 and flaky["deployment"]["primary"] == TASK
    assert flaky["deployment"]["version"] == first["version"]

    # A version failing a test case never serves: the old one answers, the failure is listed.
    stage.one("generate_startMain_code", **folder("v2", "return a + b + 1"))
    refused = deploy_bare(stage)
    assert not refused["success"] and refused["step"] == "tests", refused
    [failure] = refused["failures"]
    assert failure["args"] == [2, 3] and failure["expected"] == 5 and failure["got"] == 6
    assert stage.one("trigger_celery_task", task_name=TASK, kwargs={"a": 2, "b": 3})["result"] == 5

    # A redeploy while calls come in: each is answered by exactly one version, none lost, never alternating.
    stage.one("generate_startMain_code", **folder("v3"))
    third, answered = calls_during(stage, lambda: deploy_bare(stage))
    assert third["success"], third
    assert set(answered) == {"v1", "v3"}, answered
    switch = answered.index("v3")
    assert answered == ["v1"] * switch + ["v3"] * (len(answered) - switch), answered

    listing = stage.one("list_task_versions", task_name=TASK)
    statuses = [(v["version"], v["status"]) for v in listing["versions"]]
    assert statuses[0] == (third["version"], "serving")
    assert dict(statuses)[first["version"]] in ("draining", "kept")  # retiring in the background, or done
    assert any(status == "refused" for _, status in statuses)

    # Roll back to v1: no build, its tests run again, every call then goes to v1.
    back, answered = calls_during(stage, lambda: stage.one("rollback_task", task_name=TASK, version=first["version"]))
    assert back["success"] and back["version"] == first["version"] and "build" not in back["timings_ms"], back
    assert back["tests"]["passed"] == 3
    assert back["timings_ms"]["total"] < 5000, back["timings_ms"]
    switch = answered.index("v1")
    assert answered == ["v3"] * switch + ["v1"] * (len(answered) - switch), answered

    # A gradual release: half the calls to v4, counted per version, until it is promoted.
    stage.one("generate_startMain_code", **folder("v4"))
    canary = stage.one("deploy_task", task_name=TASK, queue=QUEUE, canary_percent=50)
    assert canary["success"] and "50%" in canary["message"], canary
    invoker = Services(stage.settings).invoker
    answered = [invoker.trigger("life_version", timeout_s=30).result for _ in range(40)]
    assert set(answered) == {"v1", "v4"}, answered
    listing = stage.one("list_task_versions", task_name=TASK)
    split = {v["version"]: (v["traffic_percent"], v["calls"]) for v in listing["versions"] if v["calls"]}
    assert split[canary["version"]][0] == 50 and split[first["version"]][0] == 50, listing
    assert {k: sum(c[k] for _, c in split.values()) for k in ("sent", "succeeded", "failed")} == {
        "sent": 40, "succeeded": 40, "failed": 0,
    }  # fmt: skip
    assert split[canary["version"]][1]["succeeded"] == answered.count("v4")
    promoted = stage.one("promote_task", task_name=TASK)
    assert promoted["success"] and promoted["version"] == canary["version"], promoted
    assert {invoker.trigger("life_version", timeout_s=30).result for _ in range(10)} == {"v4"}

    # The folder's tasks go together.
    refused_undeploy = stage.one("undeploy_task", task_name="life_version")
    assert refused_undeploy["error"] == "conflict" and "life_add" in refused_undeploy["message"]
    assert stage.one("undeploy_task", task_name=TASK)["success"]
    gone = stage.mcp(*[("get_task_details", {"task_name": name}) for name in (TASK, "life_version", "life_flaky")])
    assert [g["error"] for g in gone] == ["not_found"] * 3


def test_a_redeploy_answers_while_the_previous_version_finishes_its_calls(stage) -> None:
    def sleeper(marker: str) -> dict:
        return {"task_name": "life_sleep", "description": "sleeps, then says which version answered",
                "parameters": [{"name": "seconds", "type": "float"}], "queue": "life_s", "overwrite": True,
                "function_body": f"import time\ntime.sleep(seconds)\nreturn {marker!r}"}  # fmt: skip

    stage.one("generate_startMain_code", **sleeper("old"))
    assert stage.one("deploy_task", task_name="life_sleep", queue="life_s")["success"]
    invoker = Services(stage.settings).invoker
    running = invoker.send("life_sleep", kwargs={"seconds": 8})
    waiting = invoker.send("life_sleep", kwargs={"seconds": 0})  # queued behind it on the old version
    deadline = time.monotonic() + 30
    while invoker.status(running.task_id).status != "STARTED":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    stage.one("generate_startMain_code", **sleeper("new"))
    started = time.monotonic()
    deployed, listing = stage.mcp(("deploy_task", {"task_name": "life_sleep", "queue": "life_s"}),
                                  ("list_deployments", {}))  # fmt: skip
    answered_after = time.monotonic() - started
    assert deployed["success"], deployed
    [status] = [d for d in listing["deployments"] if d["task_name"] == "life_sleep"]
    assert [r["status"] for r in status["retiring"]] == ["draining"], status  # the old one still finishes its call
    assert invoker.status(running.task_id).ready is False
    results = {}
    deadline = time.monotonic() + 60
    for sent in (running, waiting):
        while not (answer := invoker.status(sent.task_id)).ready:
            assert time.monotonic() < deadline, answer.message
            time.sleep(0.1)
        results[sent.task_id] = answer.result
    assert results[running.task_id] == "old"  # finished by the version that took it
    assert results[waiting.task_id] in ("old", "new")  # answered once, by whichever took it
    assert answered_after < 8, answered_after  # the deploy did not wait for the old version's call
    deadline = time.monotonic() + 30
    while stage.one("list_deployments")["deployments"][0]["retiring"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert stage.one("undeploy_task", task_name="life_sleep")["success"]
