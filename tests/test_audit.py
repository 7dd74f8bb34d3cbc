"""The audit log: what it keeps of arguments (digests, never secrets or contents), its filters and bound, and the
entries the real tools write through the MCP edge (against a real Redis)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from mcp import Client

from mcp_server import build_server
from mcs.auditing import Auditor, entry_for
from mcs.core.audit import (
    CHANGING_TOOLS,
    AuditEntry,
    digest,
    parse_since,
    redact,
    redact_arguments,
)
from mcs.core.errors import Conflict, InvalidInput
from mcs.core.settings import Settings
from mcs.services import Services
from Redis.audit import AuditLog
from Redis.registry import TaskRegistry
from tests.helpers import make_settings
from tests.mcp_clients import data

SECRET = "hunter2-not-a-real-password"  # pragma: allowlist secret
BODY = "return a + b  # " + "x" * 300


# -- what an entry keeps ------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_contents_become_a_digest_with_their_length_and_secrets_only_a_length() -> None:
    kept = redact_arguments(
        {
            "task_name": "simple_add",
            "function_body": "return a + b",
            "additional_files": [{"filename": "util.py", "content": "X = 1\n"}],
            "redis_password": SECRET,
            "api_key": "k",
            "deploy_secret": SECRET,
            "description": "adds two numbers",
            "parameters": [{"name": "a", "type": "int"}],
            "replicas": 3,
            "author": "someone",  # not a secret: "auth" is not a word of it  # pragma: allowlist secret
        }
    )
    assert kept["task_name"] == "simple_add" and kept["replicas"] == 3 and kept["description"] == "adds two numbers"
    expected = "sha256:" + hashlib.sha256(b"return a + b").hexdigest()[:12]
    assert kept["function_body"] == {"digest": expected, "length": len("return a + b")}
    assert kept["additional_files"] == [{"filename": "util.py", "content": {"digest": digest("X = 1\n"), "length": 6}}]
    for name in ("redis_password", "api_key", "deploy_secret"):
        assert set(kept[name]) == {"withheld", "length"}, name  # no digest: a short secret's hash can be guessed
    assert kept["author"] == "someone" and kept["parameters"] == [{"name": "a", "type": "int"}]
    assert SECRET not in json.dumps(kept) and "return a + b" not in json.dumps(kept)


@pytest.mark.unit
def test_long_strings_deep_nesting_and_big_collections_are_bounded() -> None:
    assert redact("y" * 201) == {"digest": digest("y" * 201), "length": 201}
    assert redact("y" * 200) == "y" * 200
    many = redact(list(range(80)))
    assert len(many) == 51 and many[-1] == "... 30 more items"
    deep: Any = "leaf"
    for _ in range(10):
        deep = {"k": deep}
    assert "digest" in json.dumps(redact(deep))
    assert set(redact(object())) == {"digest", "length"}  # an object is never shown as its repr


@pytest.mark.unit
def test_since_takes_an_age_or_an_iso_time() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-12-01T10:00:00Z") == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert parse_since("2026-12-01T10:00:00") == datetime(2026, 12, 1, 10, tzinfo=UTC)  # naive is UTC
    for bad in ("", "yesterday", "-5m", "5 m", "2026-13-01", 5):
        with pytest.raises(InvalidInput) as caught:
            parse_since(bad)
        assert caught.value.field == "since" and "30m" in caught.value.rule


@pytest.mark.unit
def test_an_entry_names_the_task_from_arguments_result_or_error() -> None:
    class Result:
        task_name = "from_result"

    ok = entry_for("cancel_celery_task", {"task_id": "t"}, Result(), 12.34, "mcp")
    assert (ok.task_name, ok.outcome, ok.message, ok.duration_ms) == ("from_result", "ok", None, 12.3)
    refused = entry_for("deploy_task", {"task_name": "a"}, Conflict("busy " * 100, task_name="b"), 1, "dashboard")
    assert refused.task_name == "a" and refused.outcome == "conflict" and len(refused.message) == 300
    odd = entry_for("undeploy_task", {}, RuntimeError("boom"), 1, "mcp")
    assert odd.outcome == "unexpected_error" and odd.message == "RuntimeError: boom" and odd.task_name is None


@pytest.mark.unit
def test_a_log_that_cannot_be_written_never_changes_the_tools_answer(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> AuditLog:
        raise ConnectionError("redis is gone")

    auditor = Auditor(broken)
    assert auditor.call("register_task_info", {"task_name": "a"}, lambda: "answer") == "answer"
    with pytest.raises(Conflict):
        auditor.call("deploy_task", {"task_name": "a"}, lambda: (_ for _ in ()).throw(Conflict("busy")))
    assert "could not record register_task_info" in caplog.text


# -- the stream ---------------------------------------------------------------------------------------------------


def _entry(tool: str, task: str | None, at: datetime | None = None) -> AuditEntry:
    return AuditEntry(at=(at or datetime.now(UTC)).isoformat(), tool=tool, task_name=task, outcome="ok")


@pytest.fixture
def fake_log(tmp_path: Path) -> AuditLog:
    settings = make_settings(tmp_path, audit_max_entries=100)
    return AuditLog(settings, fakeredis.FakeRedis(decode_responses=True))


@pytest.mark.unit
def test_reads_go_newest_first_and_filter_by_task_and_tool(fake_log: AuditLog) -> None:
    for i in range(30):
        fake_log.append(_entry("deploy_task" if i % 2 else "scale_task", f"t{i % 3}"))
    everything = fake_log.read(limit=1000)
    assert len(everything) == 30 and everything[0].id > everything[-1].id
    only = fake_log.read(task_name="t1", tool="deploy_task")
    assert only and all(e.task_name == "t1" and e.tool == "deploy_task" for e in only)
    assert len(fake_log.read(limit=4)) == 4
    assert fake_log.read(task_name="nobody") == []


@pytest.mark.unit
def test_since_reads_only_recent_entries(fake_log: AuditLog) -> None:
    fake_log.append(_entry("deploy_task", "old"))
    cut = datetime.now(UTC) + timedelta(milliseconds=5)
    import time

    time.sleep(0.02)
    fake_log.append(_entry("deploy_task", "new"))
    assert [e.task_name for e in fake_log.read(since=cut)] == ["new"]


@pytest.mark.unit
def test_follow_sees_what_comes_after_an_id(fake_log: AuditLog) -> None:
    fake_log.append(_entry("deploy_task", "before"))
    start = fake_log.last_id()
    fake_log.append(_entry("undeploy_task", "after"))
    assert [e.task_name for e in fake_log.follow(start, block_ms=10)] == ["after"]


@pytest.mark.integration
def test_the_log_is_bounded_by_its_setting(settings: Settings) -> None:
    log = AuditLog(settings.model_copy(update={"audit_max_entries": 100}))
    for i in range(1000):
        log.append(_entry("deploy_task", f"t{i}"))
    assert 100 <= log.length() < 300  # MAXLEN ~: whole macro nodes are trimmed, never below the bound
    assert log.read(limit=1)[0].task_name == "t999"


# -- through the real tools ---------------------------------------------------------------------------------------


def _call(services: Services, *calls: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        async with Client(build_server(services=services)) as client:
            return [data(await client.call_tool(name, args)) for name, args in calls]

    return asyncio.run(run())


@pytest.mark.integration
def test_changing_tools_are_recorded_with_their_outcome_and_readers_are_not(settings: Settings) -> None:
    services = Services(settings)
    generate = {
        "task_name": "audited_add",
        "description": "adds",
        "parameters": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}],
        "function_body": BODY,
        "queue": "audit_q",
        "return_type": "int",
    }
    register = {"task_name": "by_hand", "description": "mine", "parameters": [], "queue": "hand_q"}
    answers = _call(
        services,
        ("generate_startMain_code", generate),
        ("register_task_info", register),
        ("get_available_tasks", {}),
        ("get_task_details", {"task_name": "by_hand"}),
        ("deploy_task", {"task_name": "audited_add", "queue": "audit_q"}),  # no deploy worker: refused
        ("register_task_info", {**register, "queue": "deploy"}),  # the reserved queue: refused
    )
    assert answers[0]["success"] and answers[1]["success"] and answers[4]["error"] == "service_unavailable"
    entries = services.audit_log.read(limit=100)
    tools = ["register_task_info", "deploy_task", "register_task_info", "generate_startMain_code"]
    assert [e.tool for e in entries] == tools
    assert all(e.tool in CHANGING_TOOLS and e.via == "mcp" for e in entries)
    refused, deploy, registered, generated = entries
    assert refused.outcome == "invalid_input" and "reserved" in (refused.message or "")
    assert deploy.outcome == "service_unavailable" and deploy.task_name == "audited_add"
    assert registered.outcome == "ok" and registered.arguments["queue"] == "hand_q"
    assert generated.task_name == "audited_add" and generated.duration_ms > 0
    assert generated.arguments["function_body"] == {"digest": digest(BODY), "length": len(BODY)}
    assert BODY not in services.registry.client.xrange(services.audit_log.keys.audit())[0][1]["entry"]

    # get_audit_log reads them back, filtered
    (everything, by_tool, by_task, recent, nothing) = _call(
        services,
        ("get_audit_log", {}),
        ("get_audit_log", {"tool": "register_task_info"}),
        ("get_audit_log", {"task_name": "audited_add", "limit": 1}),
        ("get_audit_log", {"since": "5m"}),
        ("get_audit_log", {"since": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}),
    )
    assert everything["count"] == 4 and everything["max_entries"] == settings.audit_max_entries
    assert [e["outcome"] for e in by_tool["entries"]] == ["invalid_input", "ok"]
    assert [e["tool"] for e in by_task["entries"]] == ["deploy_task"]
    assert recent["count"] == 4 and nothing["count"] == 0


@pytest.mark.unit
def test_a_tool_server_without_an_auditor_records_nothing(tmp_path: Path) -> None:
    from mcp.server.mcpserver import MCPServer

    from mcs.tools import registry_tools

    services = Services(make_settings(tmp_path))
    services.__dict__["registry"] = TaskRegistry(services.settings, client=fakeredis.FakeRedis(decode_responses=True))
    server = MCPServer(name="plain")  # as the per-module tests build it: no auditor
    registry_tools.register(server, services)

    async def run() -> None:
        async with Client(server) as client:
            await client.call_tool("register_task_info", {"task_name": "t", "description": "d", "parameters": []})

    asyncio.run(run())
    assert services.registry.client.exists(services.audit_log.keys.audit()) == 0
