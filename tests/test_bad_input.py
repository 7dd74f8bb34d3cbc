"""Bad input over every tool, table-driven: each call is refused with ``invalid_input`` naming the field and the rule,
within a second, and nothing is written anywhere (no folder, no registry key, no file outside the roots)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from mcp import Client

from mcp_server import build_server
from mcs.core.audit import CHANGING_TOOLS
from mcs.services import Services
from Redis.registry import TaskRegistry
from tests.helpers import make_settings
from tests.mcp_clients import data
from tests.test_mcp_server_unit import TOOLS, NoCelery

pytestmark = pytest.mark.unit

PARAMS = [{"name": "a", "type": "int"}]
GEN = {"task_name": "good_task", "description": "d", "parameters": PARAMS, "function_body": "return a", "queue": "gq"}
DEPLOY = {"task_name": "good_task", "description": "d", "parameters": PARAMS, "queue": "gq"}
REGISTER = {"task_name": "good_task", "description": "d", "parameters": PARAMS, "queue": "rq"}
CALL = {"task_name": "echo_task"}

BAD_NAMES = ["", "A", "1abc", "a-b", "../x", "$(id)", "a b", "ａｂ", "__init__", "class", "x" * 64, "a\x00b"]
RESERVED = ["list", "sum", "app"]  # refused where a task is created or called, the same in every such tool
BAD_QUEUES = ["", "Q", "unacked", "a/b", "x" * 64, "class", "$q", "ü"]
BAD_PARAMETERS: list[Any] = [
    "a",
    [{"name": "1a"}],
    [{"name": "a", "type": "os.system"}],
    [{"name": "a", "type": "__import__('os')"}],
    [{"name": "a", "required": "yes"}],
    [{"name": "a"}, {"name": "a"}],
    [{"name": "a", "bogus": 1}],
    [{"name": "class"}],
    [{"name": f"p{i}"} for i in range(65)],
    [{"name": "a", "type": "int" * 100}],
]
BAD_RETURN_TYPES = ["os.system", "", "int(", "x" * 201]
BAD_CATEGORIES = ["", "A", "a b", "x" * 65, "../x"]

CASES: list[tuple[str, dict[str, Any], str]] = []
for tool, base in (
    ("generate_startMain_code", GEN),
    ("deploy_task", DEPLOY),
    ("register_task_info", REGISTER),
    ("trigger_celery_task", CALL),
    ("send_celery_task", CALL),
):
    CASES += [(tool, {**base, "task_name": name}, "task_name") for name in BAD_NAMES + RESERVED]
for tool in ("get_task_details", "undeploy_task", "get_task_logs", "list_task_versions", "promote_task"):
    CASES += [(tool, {"task_name": name}, "task_name") for name in BAD_NAMES]
for tool, base in (("generate_startMain_code", GEN), ("deploy_task", DEPLOY), ("register_task_info", REGISTER)):
    CASES += [(tool, {**base, "queue": queue}, "queue") for queue in BAD_QUEUES]
    CASES += [(tool, {**base, "parameters": params}, "parameters") for params in BAD_PARAMETERS]
    CASES += [(tool, {**base, "return_type": rt}, "return_type") for rt in BAD_RETURN_TYPES]
    CASES += [(tool, {**base, "description": d}, "description") for d in ("x" * 2001, 5)]
for tool, base in (("trigger_celery_task", CALL), ("send_celery_task", CALL)):
    CASES += [(tool, {**base, "queue": queue}, "queue") for queue in BAD_QUEUES]
    CASES += [
        (tool, {**base, "args": "x"}, "args"),
        (tool, {**base, "args": {"a": 1}}, "args"),
        (tool, {**base, "kwargs": [1]}, "kwargs"),
        (tool, {**base, "kwargs": {"nope": 1}}, "kwargs"),
        (tool, {**base, "kwargs": {}}, "kwargs"),
        (tool, {**base, "args": [1, 2]}, "args"),
        (tool, {**base, "kwargs": {"value": "x" * 2000}}, "args/kwargs"),
        (tool, {**base, "kwargs": {"value": 5}}, "kwargs.value"),  # declared str
        (tool, {**base, "args": [True]}, "args[0]"),
        (tool, {**base, "args": [["x"]]}, "args[0]"),
    ]
CASES += [("trigger_celery_task", {**CALL, "timeout_s": t}, "timeout_s") for t in (0, -1, 1e9, "x", True)]
CASES += [("get_celery_result", {"task_id": t}, "task_id") for t in ("", "abc", "../x", 123, "x" * 100)]
A_TASK_ID = "0b5a3c1e-5a0e-4b8e-9a55-3a6f8f7f2d11"
CASES += [("get_celery_result", args, field) for args, field in (
    ({}, "task_id"), ({"task_id": A_TASK_ID, "task_ids": [A_TASK_ID]}, "task_ids"), ({"task_ids": []}, "task_ids"),
    ({"task_ids": [A_TASK_ID] * 101}, "task_ids"), ({"task_ids": [A_TASK_ID, "abc"]}, "task_ids[1]"),
    ({"task_ids": "abc"}, "task_ids"), ({"task_ids": [1]}, "task_ids"),
    ({"task_id": A_TASK_ID, "wait_s": -1}, "wait_s"), ({"task_id": A_TASK_ID, "wait_s": 61}, "wait_s"),
    ({"task_id": A_TASK_ID, "wait_s": "x"}, "wait_s"), ({"task_id": A_TASK_ID, "wait_s": True}, "wait_s"),
)]  # fmt: skip
CASES += [("cancel_celery_task", {"task_id": t}, "task_id") for t in ("", "abc", "../x", 123, "x" * 100)]
CASES += [("cancel_celery_task", {}, "task_id")]
CASES += [("run_pipeline", {"steps": s}, f) for s, f in (
    ([], "steps"), ("x", "steps"), ([{"task_name": "../x"}], "steps[0].task_name"),
    ([{"task_name": "echo_task", "pass_result_as": "value"}], "steps[0].pass_result_as"),
    ([{"task_name": "echo_task", "kwargs": [1]}], "steps[0].kwargs"),
)]  # fmt: skip
CASES += [("run_pipeline", {"steps": [{"task_name": "echo_task"}], "timeout_s": t}, "timeout_s") for t in (0, -1, "x")]
CASES += [("map_celery_task", {"task_name": "echo_task", "items": i}, f) for i, f in (
    ([], "items"), ("x", "items"), ([{"args": [1], "x": 2}], "items[0]"),
    ([{"kwargs": {"nope": 1}}], "items[0].kwargs"),
)]  # fmt: skip
CASES += [("map_celery_task", {"task_name": name, "items": [{}]}, "task_name") for name in BAD_NAMES]
CASES += [("cancel_celery_task", {"task_id": A_TASK_ID, "terminate": t}, "terminate") for t in ("yes", 1, None)]
CASES += [("get_task_logs", {"task_name": "echo_task", "tail_lines": n}, "tail_lines") for n in (0, 501, -1, "x")]
CASES += [("get_tasks_by_category_name", {"category": c}, "category") for c in BAD_CATEGORIES]
CASES += [("register_task_info", {**REGISTER, "category": c}, "category") for c in BAD_CATEGORIES]
CASES += [("get_available_tasks", args, field) for args, field in (
    ({"offset": -1}, "offset"), ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": "x"}, "limit"),
    ({"offset": 1.5}, "offset"),
)]  # fmt: skip
CASES += [("get_available_tasks", {"query": q}, "query") for q in ("x" * 501, 5, ["a"], "", "!!!", "the of")]
CASES += [("get_available_tasks", {"category": c}, "category") for c in BAD_CATEGORIES]
CASES += [("get_available_tasks", {"detail": d}, "detail") for d in ("verbose", "", 1, None)]
CASES += [("get_tasks_by_category_name", {"category": "x", "detail": d}, "detail") for d in ("verbose", True)]
CASES += [("deploy_task", {**DEPLOY, "code_folder_path": p}, "code_folder_path") for p in (
    "/etc", "../../etc", "generated_tasks/../../etc", "a\x00b", "x" * 300, "/proc/self",
)]  # fmt: skip
CASES += [("deploy_task", {**DEPLOY, "network": n}, "network") for n in ("bridge", "host", "container:x")]
CASES += [("deploy_task", {**DEPLOY, "sandbox": n}, "sandbox") for n in ("kata", "runsc")]
CASES += [("generate_startMain_code", {**GEN, "function_body": b}, "function_body") for b in (
    "", "x = 1\x0cimport os", "return (", "yield 1", "x" * 100_001, "return a\x00",
)]  # fmt: skip
CASES += [("generate_startMain_code", {**GEN, "additional_files": f}, "additional_files") for f in (
    [{"filename": "../x.py", "content": ""}], [{"filename": "/abs.py", "content": ""}],
    [{"filename": "os.py", "content": ""}], [{"filename": "Dockerfile", "content": ""}],
    [{"filename": "a.exe", "content": ""}], "notalist",
)]  # fmt: skip
CASES += [("generate_startMain_code", {**GEN, "requirements": r}, "requirements") for r in (
    ["-e x"], ["x"], ["x>=1"], ["celery==5.0"], "notalist", ["a==1", "a==2"],
)]  # fmt: skip
CASES += [("generate_startMain_code", {**GEN, "overwrite": v}, "overwrite") for v in ("yes", 1)]
BAD_TESTS: list[Any] = [
    [{"args": [1]}],
    [{"args": [1], "expect": 1, "expect_error": "E"}],
    [{"args": "x", "expect": 1}],
    [{"expect_error": "not a name"}],
    [{"expect": 1, "timeout_s": 0}],
    [{"expect": 1, "bogus": 1}],
]
BAD_RETRIES: list[Any] = [
    {"on": []},
    {"on": ["a b"]},
    {"on": ["E"], "max_retries": 0},
    {"on": ["E"], "backoff_s": -1},
    {"on": ["E"], "max_retries": 99},
    {"on": ["E"], "extra": 1},
]
for tool, base in (("generate_startMain_code", GEN), ("deploy_task", DEPLOY)):
    CASES += [(tool, {**base, "tests": t}, "tests") for t in BAD_TESTS]
    CASES += [(tool, {**base, "retry": r}, "retry") for r in BAD_RETRIES]
CASES += [("rollback_task", {"task_name": name, "version": "abcdef"}, "task_name") for name in BAD_NAMES]
CASES += [("deploy_task", {**DEPLOY, "canary_percent": c}, "canary_percent") for c in (0, 100, -5, "half", 1.5)]
CASES += [("deploy_task", {**DEPLOY, "concurrency": c}, "concurrency") for c in (0, -1, 65, "four", 1.5)]
CASES += [("deploy_task", {**DEPLOY, "replicas": r}, "replicas") for r in (-1, 257, "two", 0.5)]
CASES += [("deploy_task", {**DEPLOY, "replicas": 9}, "replicas")]  # above MCS_MAX_REPLICAS (8)
CASES += [("deploy_task", {**DEPLOY, "concurrency": 9}, "concurrency")]  # above MCS_MAX_CONCURRENCY (8)
CASES += [("deploy_task", {**DEPLOY, "min_replicas": 1}, "max_replicas")]  # a range needs both ends
CASES += [("deploy_task", {**DEPLOY, "min_replicas": 3, "max_replicas": 2}, "min_replicas")]
CASES += [("deploy_task", {**DEPLOY, "min_replicas": 1, "max_replicas": 3, "replicas": 5}, "replicas")]
CASES += [("scale_task", {"task_name": name, "replicas": 1}, "task_name") for name in BAD_NAMES]
CASES += [("scale_task", {"task_name": "good_task", "replicas": r}, "replicas") for r in (-1, 9, "one", None, 1.5)]
CASES += [("scale_task", {"task_name": "good_task", "replicas": 1, "min_replicas": 2}, "max_replicas")]
CASES += [("rollback_task", {"task_name": "echo_task", "version": v}, "version") for v in ("", "abc", "xyz123", "../x")]
CASES += [("get_audit_log", {"task_name": t}, "task_name") for t in ("", "Bad", "../x", 5)]
CASES += [("get_audit_log", {"tool": t}, "tool") for t in ("", "deploy task", "x" * 80, "../x")]
CASES += [("get_audit_log", {"since": t}, "since") for t in ("", "yesterday", "5 minutes", "2026-13-45", "-5m")]
CASES += [("get_audit_log", {"limit": n}, "limit") for n in (0, -1, 1001, "ten")]


def test_the_table_has_at_least_200_cases_over_every_tool() -> None:
    assert len(CASES) >= 200
    assert {tool for tool, _, _ in CASES} | {"list_deployments", "get_task_categories"} == TOOLS  # those take no input


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bad-input")
    services = Services(make_settings(root, max_payload_bytes=1000))
    services.__dict__["registry"] = TaskRegistry(services.settings, client=fakeredis.FakeRedis(decode_responses=True))
    services.__dict__["celery_app"] = NoCelery()
    services.registry.register(name="echo_task", parameters=[{"name": "value", "type": "str"}], queue="eq")
    return root, services


@pytest.mark.parametrize(("tool", "args", "field"), CASES, ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(CASES)])
def test_bad_input_is_refused_naming_field_and_rule(server, tool: str, args: dict[str, Any], field: str) -> None:
    root, services = server
    files_before = _snapshot(root)
    keys_before = set(services.registry.client.keys("*"))

    async def run() -> dict[str, Any]:
        async with Client(build_server(services=services)) as client:
            started = time.monotonic()
            answer = data(await client.call_tool(tool, args))
            answer["elapsed_s"] = time.monotonic() - started
            return answer

    answer = asyncio.run(run())
    assert answer["success"] is False and answer["error"] == "invalid_input", answer
    assert field in answer["field"] and answer["rule"], answer
    assert len(answer["message"]) < 2000 and answer["elapsed_s"] < 1.0
    audit = services.audit_log.keys.audit()  # a refused call of a changing tool is recorded, and nothing else
    assert _snapshot(root) == files_before
    assert set(services.registry.client.keys("*")) - {audit} == keys_before - {audit}
    if tool in CHANGING_TOOLS:
        (last,) = services.audit_log.read(tool=tool, limit=1)
        assert last.outcome == "invalid_input"
