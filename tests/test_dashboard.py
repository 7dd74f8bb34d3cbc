"""The dashboard's parts: templates that escape everything, who may act (token, session, CSRF), health from replicas,
Prometheus metrics fed by events and the audit log; and the served app against a real Redis (the browser test,
tests/test_dashboard_browser.py, drives it over a real deploy)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from mcs.core.audit import AuditEntry
from mcs.core.errors import Unauthorized
from mcs.core.settings import Settings
from mcs.dashboard import actions
from mcs.dashboard.app import environment
from mcs.dashboard.events import Call, task_of
from mcs.dashboard.metrics import LiveCollector, Metrics
from mcs.dashboard.snapshot import Snapshot, Snapshotter, TaskDetail, TaskRow, _health
from mcs.services import Services
from tests.dashboard_helpers import get, metrics, post, running_dashboard
from tests.helpers import make_settings

TOKEN = "unit-test-token-2b9c"  # pragma: allowlist secret
HOSTILE = '<script>alert("x")</script>'


def _row(**values: Any) -> TaskRow:
    base = {"name": "t1", "category": "c", "queue": "q", "description": "d", "primary": "t1", "deployed": True}
    return TaskRow(**(base | values))


def _context(**values: Any) -> dict[str, Any]:
    return {
        "snapshot": Snapshot(at=1.0, redis_up=True),
        "refresh_s": 3,
        "logged_in": False,
        "actions_enabled": True,
        "csrf": "",
        "scale_available": True,
        "notice": "",
        "problem": "",
        **values,
    }


# -- templates ----------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_every_value_is_escaped_on_every_page() -> None:
    env = environment()
    row = _row(description=HOSTILE, category=HOSTILE, warnings=[HOSTILE], version="ab" * 32, replicas_running=1)
    call = Call("id-1", "t1", "FAILURE", 1.0, 1.0, 2.0, 1.0, HOSTILE, HOSTILE, HOSTILE, 0)
    entry = AuditEntry(
        at="2026-12-01T00:00:00+00:00", tool="deploy_task", outcome="conflict", message=HOSTILE,
        arguments={"description": HOSTILE + " 两个数字"},
    )  # fmt: skip
    detail = TaskDetail(row=row, calls=[call], versions=[], history=[entry], logs=HOSTILE, logs_error=None)
    snapshot = Snapshot(at=1.0, redis_up=True, tasks=[row], failures=[call], redis_error=HOSTILE)
    pages = [
        env.get_template("index.html").render(_context(snapshot=snapshot, notice=HOSTILE, problem=HOSTILE)),
        env.get_template("task.html").render(_context(snapshot=snapshot, detail=detail)),
        env.get_template("audit.html").render(
            _context(entries=[entry], filters={"task": HOSTILE, "tool": "", "since": ""}, tools=[], audit_problem="")
        ),
        env.get_template("message.html").render(_context(title=HOSTILE, text=HOSTILE)),
    ]
    assert "两个数字" in pages[2]  # arguments are shown as written, escaped
    for html in pages:
        assert HOSTILE not in html and "&lt;script&gt;" in html
        assert len(re.findall(r"<script", html)) == 1  # only the dashboard's own script tag


@pytest.mark.unit
def test_a_task_without_replicas_info_shows_unknown_not_a_guess() -> None:
    html = environment().get_template("_tasks.html").render(_context(snapshot=Snapshot(tasks=[_row()])))
    assert '<td class="replicas">–</td>' in html and "unknown" in html


# -- health and defensive reading of list_deployments -------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("desired", "running", "status", "health"),
    [(1, 1, "RUNNING", "healthy"), (3, 1, "RUNNING", "degraded"), (2, 0, "MISSING", "down"), (0, 0, "PARKED", "parked"),
     (None, None, None, "unknown"), (2, 2, "RUNNING", "healthy")],
)  # fmt: skip
def test_health_comes_from_replicas_running_against_desired(desired, running, status, health) -> None:
    assert _health(_row(replicas_desired=desired, replicas_running=running, worker_status=status))[0] == health


@pytest.mark.unit
def test_an_older_deploy_worker_one_worker_status_and_a_newer_one_replicas_and_workers() -> None:
    old = _row()
    Snapshotter._status_into(old, {"worker_status": "RUNNING", "warnings": ["w"]})
    assert (old.replicas_running, old.warnings) == (1, ["w"])
    new = _row()
    workers = [{"slot": 1, "hostname": "h1", "state": "RUNNING"}, {"slot": 2, "hostname": "h2", "state": "STARTING"}]
    scaling = [{"at": "2026-12-01T00:00:00+00:00", "from_replicas": 1, "to_replicas": 2, "reason": "queue depth"}]
    Snapshotter._status_into(
        new, {"worker_status": "RUNNING", "replicas": 2, "workers": workers, "scaling": scaling, "concurrency": 4}
    )
    assert (new.replicas_desired, new.replicas_running, new.concurrency) == (2, 1, 4)
    assert new.scaling == scaling
    Snapshotter._status_into(new, {"worker_status": "RUNNING", "replicas": 2, "replicas_running": 2})
    assert new.replicas_running == 2


# -- who may act --------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_actions_need_the_token_session_and_csrf_field(tmp_path: Path) -> None:
    readonly = make_settings(tmp_path)
    with pytest.raises(Unauthorized, match="read-only"):
        actions.authorize(readonly, None, None)
    assert actions.session_value(readonly) is None and not actions.token_matches(readonly, "")
    s = make_settings(tmp_path, dashboard_token=TOKEN)
    session, csrf = actions.session_value(s), actions.csrf_value(s)
    assert session and csrf and TOKEN not in session and TOKEN not in csrf
    assert actions.token_matches(s, TOKEN) and not actions.token_matches(s, TOKEN + "x")
    actions.authorize(s, session, csrf)  # both right: allowed
    for cookie, field in ((None, csrf), (session, None), (session, "0" * 32), ("forged", csrf), (TOKEN, csrf)):
        with pytest.raises(Unauthorized, match="needs the dashboard token"):
            actions.authorize(s, cookie, field)


@pytest.mark.unit
def test_scale_says_not_available_when_the_deploy_client_cannot() -> None:
    services = SimpleNamespace(deploy_client=SimpleNamespace(call=None), settings=SimpleNamespace(max_replicas=8))
    assert not actions.scale_available(services)  # type: ignore[arg-type]
    with pytest.raises(actions.NotAvailable, match="not available"):
        actions._send(services, "scale", {"task_name": "t", "replicas": 2})  # type: ignore[arg-type]


# -- metrics ------------------------------------------------------------------------------------------------------


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.mark.unit
def test_task_events_and_audit_entries_become_prometheus_samples() -> None:
    m = Metrics()
    task = SimpleNamespace(name="mcp_app.simple_add", started=100.0)
    m.on_task_event("task-received", {"name": "mcp_app.simple_add"}, task)
    m.on_task_event("task-succeeded", {"runtime": 0.02}, task)
    m.on_task_event("task-received", {}, task)
    m.on_task_event("task-failed", {"timestamp": 100.5}, task)
    m.on_task_event("task-received", {"name": "mcs.deploy.deploy_code_folder"}, SimpleNamespace(name=None))
    m.on_worker_lost("simple_add")
    m.on_audit(AuditEntry(at="x", tool="deploy_task", task_name="simple_add", outcome="ok", duration_ms=1500))
    m.on_audit(AuditEntry(at="x", tool="register_task_info", task_name="simple_add", outcome="ok"))  # not a deploy
    found = _samples(m)
    task_label = (("task", "simple_add"),)
    assert found[("mcs_task_calls_total", task_label)] == 2
    assert found[("mcs_task_failures_total", task_label)] == 1
    assert found[("mcs_task_duration_seconds_count", task_label)] == 2
    assert found[("mcs_task_duration_seconds_sum", task_label)] == pytest.approx(0.52)
    assert found[("mcs_task_duration_seconds_bucket", (("le", "0.025"), ("task", "simple_add")))] == 1
    assert found[("mcs_workers_lost_total", task_label)] == 1
    deploy = (("outcome", "ok"), ("task", "simple_add"), ("tool", "deploy_task"))
    assert found[("mcs_deploys_total", deploy)] == 1
    assert found[("mcs_deploy_duration_seconds_sum", (("outcome", "ok"), ("tool", "deploy_task")))] == 1.5
    assert not any(name == "mcs_deploys_total" and ("tool", "register_task_info") in labels for name, labels in found)
    assert task_of("mcp_app.x") == "x" and task_of("mcs.deploy.x") is None and task_of(None) is None


@pytest.mark.unit
def test_the_live_collector_reads_the_latest_snapshot_at_scrape_time() -> None:
    row = _row(replicas_desired=3, replicas_running=2, serve_queue="q.abc")
    snapshot = Snapshot(at=1.0, redis_up=True, deploy_worker_up=True, tasks=[row])
    fake = SimpleNamespace(latest=lambda: snapshot, queue_depths=lambda snap: [(row, "q.abc", 7)])
    m = Metrics()
    m.registry.register(LiveCollector(fake))  # type: ignore[arg-type]
    found = _samples(m)
    assert found[("mcs_task_replicas", (("task", "t1"),))] == 3
    assert found[("mcs_task_replicas_running", (("task", "t1"),))] == 2
    assert found[("mcs_queue_depth", (("queue", "q.abc"), ("task", "t1")))] == 7
    assert found[("mcs_deploy_worker_up", ())] == 1 and found[("mcs_tasks_registered", ())] == 1


# -- served, against a real Redis ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_served_read_only_to_all_acting_only_with_the_token(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"dashboard_token": SecretStr(TOKEN)})
    services = Services(settings)
    services.registry.register(name="by_hand", description=HOSTILE, parameters=[], queue="hand_q")
    with running_dashboard(settings, tmp_path / "dashboard.log") as base:
        for path in ("/", "/fragments/tasks", "/tasks/by_hand", "/fragments/tasks/by_hand", "/audit", "/login"):
            status, html = get(base + path)
            assert status == 200, (path, html[:300])
            assert HOSTILE not in html
        assert "by_hand" in get(base + "/")[1] and "&lt;script&gt;" in get(base + "/tasks/by_hand")[1]
        assert get(base + "/tasks/nobody")[0] == 404 and get(base + "/tasks/..%2Fetc")[0] in (404, 405)
        status, body = get(base + "/audit?since=yesterday")
        assert status == 200 and "invalid since" in body

        # no session: refused; a wrong token: no session
        assert post(f"{base}/tasks/by_hand/undeploy", {"csrf": ""})[0] == 403
        assert post(f"{base}/login", {"token": "nope"})[0] == 403
        status, _, headers = post(f"{base}/login", {"token": TOKEN})
        assert status == 303
        cookie = headers["set-cookie"].split(";")[0]
        assert (
            TOKEN not in cookie and "HttpOnly" in headers["set-cookie"] and "SameSite=strict" in headers["set-cookie"]
        )
        # a session without the form's CSRF field (another site's form) is refused too
        assert post(f"{base}/tasks/by_hand/undeploy", {}, cookie)[0] == 403
        csrf = actions.csrf_value(settings)
        status, body, _ = post(f"{base}/tasks/by_hand/undeploy", {"csrf": csrf or ""}, cookie)
        assert status == 409 and "no deploy worker" in body  # allowed, and it says why it could not

        (entry,) = services.audit_log.read(tool="undeploy_task")
        assert (entry.via, entry.outcome, entry.task_name) == ("dashboard", "service_unavailable", "by_hand")
        labels = (("outcome", "service_unavailable"), ("task", "by_hand"), ("tool", "undeploy_task"))
        found = metrics(base)
        assert found[("mcs_tasks_registered", ())] == 1 and found[("mcs_deploy_worker_up", ())] == 0
        assert found[("mcs_queue_depth", (("queue", "hand_q"), ("task", "by_hand")))] == 0
        assert found.get(("mcs_deploys_total", labels)) == 1 or _eventually(base, labels)
    assert TOKEN not in (tmp_path / "dashboard.log").read_text()


def _eventually(base: str, labels: tuple[tuple[str, str], ...]) -> bool:
    from tests.helpers import wait_for

    return bool(
        wait_for(lambda: metrics(base).get(("mcs_deploys_total", labels)) == 1, 10, "the deploy counter", every_s=0.1)
    )
