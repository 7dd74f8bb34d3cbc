"""run_pipeline and map_celery_task over a real stdio client, a real Redis and a real Celery worker: results passed
from step to step on MCS's side, a failing step named, a pipeline followed by its id, a map's results in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mcs.core.settings import Settings
from tests.mcp_clients import data, stdio_client
from tests.test_task_calls_stdio import calls_worker, registry  # noqa: F401 - the worker and registered tasks

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("registry")]


def session(settings: Settings, *calls: tuple[str, dict[str, Any]]) -> list[tuple[bool, dict[str, Any]]]:
    async def run():
        async with stdio_client(settings) as client:
            answers = []
            for name, args in calls:
                result = await client.call_tool(name, args, read_timeout_seconds=120)
                answers.append((result.is_error, data(result)))
            return answers

    return asyncio.run(run())


def test_a_pipeline_passes_each_result_on(settings: Settings) -> None:
    steps = [
        {"task_name": "test_add", "kwargs": {"a": 2, "b": 3}},
        {"task_name": "test_add", "kwargs": {"b": 10}, "pass_result_as": "a"},
        {"task_name": "test_echo"},  # the previous result as its first argument
    ]
    [(error, answer)] = session(settings, ("run_pipeline", {"steps": steps}))
    assert not error and answer["status"] == "SUCCESS" and answer["result"] == 15, answer
    assert [s["status"] for s in answer["steps"]] == ["SUCCESS"] * 3
    assert all(s["task_id"] and s["elapsed_ms"] >= 0 for s in answer["steps"])


def test_a_failing_step_stops_the_pipeline_and_is_named(settings: Settings) -> None:
    steps = [
        {"task_name": "test_echo", "kwargs": {"value": "boom in step 1"}},
        {"task_name": "test_fail", "pass_result_as": "message"},
        {"task_name": "test_echo"},
    ]
    [(error, answer)] = session(settings, ("run_pipeline", {"steps": steps}))
    assert error and answer["error"] == "task_failed" and answer["failed_step"] == 1, answer
    assert "step 1 (test_fail)" in answer["message"] and "boom in step 1" in answer["message"]
    assert [s["status"] for s in answer["steps"]] == ["SUCCESS", "FAILURE", "WAITING"]


def test_a_pipeline_without_waiting_is_followed_by_its_id(settings: Settings) -> None:
    steps = [{"task_name": "test_slow", "kwargs": {"seconds": 0.3}}, {"task_name": "test_echo"}]
    [(_, started)] = session(settings, ("run_pipeline", {"steps": steps, "wait": False}))
    assert started["status"] == "RUNNING", started
    # The thread that runs it lives in that server process; a second session sees it through Redis.
    [(_, followed)] = session(settings, ("get_celery_result", {"task_id": started["pipeline_id"], "wait_s": 10}))
    assert followed["status"] in ("SUCCESS", "INTERRUPTED"), followed


def test_a_pipeline_followed_in_its_own_session(settings: Settings) -> None:
    async def run():
        async with stdio_client(settings) as client:
            steps = [{"task_name": "test_slow", "kwargs": {"seconds": 0.3}}, {"task_name": "test_echo"}]
            started = data(await client.call_tool("run_pipeline", {"steps": steps, "wait": False}))
            args = {"task_id": started["pipeline_id"], "wait_s": 10}
            return data(await client.call_tool("get_celery_result", args))

    followed = asyncio.run(run())
    assert followed["status"] == "SUCCESS" and followed["result"]["result"] == {"slept": 0.3}, followed


def test_map_runs_one_task_over_many_items_in_order(settings: Settings) -> None:
    items = [{"kwargs": {"a": i, "b": 100}} for i in range(6)]
    [(error, mapped)] = session(settings, ("map_celery_task", {"task_name": "test_add", "items": items, "wait_s": 20}))
    assert not error and mapped["ready"] and mapped["count"] == 6, mapped
    assert [r["result"] for r in mapped["results"]] == [100 + i for i in range(6)]
    [(_, followed)] = session(settings, ("get_celery_result", {"task_id": mapped["batch_id"], "wait_s": 5}))
    assert followed["status"] == "SUCCESS" and [r["result"] for r in followed["results"]] == [100 + i for i in range(6)]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"steps": []}, "steps"),
        ({"steps": [{"task_name": "test_add", "pass_result_as": "a"}]}, "steps[0].pass_result_as"),
        ({"steps": [{"task_name": "test_add"}, {"task_name": "test_add", "pass_result_as": "zz"}]},
         "steps[1].pass_result_as"),
        ({"steps": [{"task_name": "test_add", "bogus": 1}]}, "steps[0]"),
        ({"steps": [{"task_name": "test_add", "args": "x"}]}, "steps[0].args"),
    ],
)  # fmt: skip
def test_bad_pipelines_are_refused_naming_the_step(settings: Settings, arguments, field) -> None:
    [(error, answer)] = session(settings, ("run_pipeline", arguments))
    assert error and answer["error"] == "invalid_input" and answer["field"] == field, answer


def test_map_checks_every_item_before_sending(settings: Settings) -> None:
    items = [{"kwargs": {"a": 1, "b": 2}}, {"kwargs": {"a": "x", "b": 2}}]
    [(error, answer)] = session(settings, ("map_celery_task", {"task_name": "test_add", "items": items}))
    assert error and answer["field"].startswith("items[1]"), answer
