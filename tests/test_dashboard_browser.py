"""The dashboard as a person sees it, in a real browser (Debian's chromium driven by Playwright), over a real MCS: a
deploy worker, the MCP server over stdio, a task deployed on the process runtime and on Docker.

A deployed task appears with its version and replicas; a failed call appears with its error and traceback; an action
without the token is refused (and changes nothing); with the token, scaling works from the page; ``/metrics``
parsed with prometheus-client's parser holds the calls, failures and latencies of the known calls; the audit log
holds the deploy, the scale and the undeploy. Screenshots go to $MCS_TEST_ARTIFACTS (or .ci-artifacts/), and with
MCS_UPDATE_DOCS_SCREENSHOT=1 to docs/dashboard.png for the README.

Without chromium or Playwright the tests are skipped with the reason; with MCS_REQUIRE_BROWSER=1 (CI) they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mcs.core.settings import PROJECT_ROOT
from tests.dashboard_helpers import ARTIFACTS, get, metrics, post, running_dashboard
from tests.helpers import wait_for

TASK, QUEUE = "dash_div", "dash_q"
TOKEN = "dashboard-test-token-7f3a"  # pragma: allowlist secret
CHROMIUM = os.environ.get("MCS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
REQUIRE_BROWSER = os.environ.get("MCS_REQUIRE_BROWSER") == "1"
UPDATE_DOCS = os.environ.get("MCS_UPDATE_DOCS_SCREENSHOT") == "1"  # read at import: the tests run without MCS_*
GENERATE = {
    "task_name": TASK,
    "description": "divides a by b (b = 0 raises ValueError)",
    "parameters": [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}],
    "function_body": "if b == 0:\n    raise ValueError('b must not be zero')\nreturn a / b",
    "queue": QUEUE,
    "category": "math",
    "return_type": "float",
    "tests": [{"args": [6.0, 3.0], "expect": 2.0}],
    "overwrite": True,
}


def _browser_or_skip() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "Playwright is not installed (pip install playwright)"
    else:
        if Path(CHROMIUM).exists():
            return sync_playwright
        reason = f"no chromium at {CHROMIUM} (apt-get install -y chromium)"
    if REQUIRE_BROWSER:
        pytest.fail(reason + " [MCS_REQUIRE_BROWSER=1]")
    pytest.skip(reason)


@pytest.fixture(
    scope="module",
    params=[pytest.param("process", marks=pytest.mark.integration), pytest.param("docker", marks=pytest.mark.docker)],
)
def scene(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """MCS with a dashboard, the task deployed, and the browser; the calls are made by the tests in order."""
    sync_playwright = _browser_or_skip()
    from tests.deploy_stage import open_stage

    if request.param == "docker":
        request.getfixturevalue("docker_client")
    with open_stage(tmp_path_factory, worker_runtime=request.param, dashboard_token=TOKEN) as stage:
        log = stage.settings.state_dir / "dashboard.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with running_dashboard(stage.settings, log) as base, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                generated, deployed = _mcp(
                    stage, ("generate_startMain_code", GENERATE), ("deploy_task", {"task_name": TASK, "queue": QUEUE})
                )
                assert generated["success"] and deployed["success"], deployed
                yield {"stage": stage, "base": base, "page": page, "deployed": deployed, "runtime": request.param}
            finally:
                browser.close()


def _mcp(stage: Any, *calls: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls over stdio, from a thread of their own: Playwright's sync API keeps an event loop in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(stage.mcp, *calls).result()


def _shot(page: Any, name: str, runtime: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"dashboard-{runtime}-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_a_deployed_task_appears_with_its_version_and_replicas(scene: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page, deployed = scene["page"], scene["deployed"]
    page.goto(scene["base"] + "/")
    row = page.locator(f'tr[data-task="{TASK}"]')
    expect(row).to_be_visible(timeout=15_000)
    expect(row.locator("code.version")).to_have_text(deployed["version"][:12])
    expect(row.locator("td.replicas")).to_have_text("1/1", timeout=15_000)  # the live refresh brings it
    expect(row.locator(".badge")).to_have_text("healthy")
    expect(row).to_contain_text("math")
    expect(row).to_contain_text(QUEUE)
    isolation = "container" if scene["runtime"] == "docker" else "none"
    expect(row).to_contain_text(f"{isolation}")
    expect(row).to_contain_text("net none")


def test_a_failed_call_appears_with_its_error(scene: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page, stage = scene["page"], scene["stage"]
    page.goto(f"{scene['base']}/tasks/{TASK}")
    # the dashboard hears this task's calls from now on (its receiver consumes on the task's prefix)
    expect(page.locator(".events")).to_have_text("events: listening", timeout=15_000)
    ok, failed = _mcp(
        stage,
        ("trigger_celery_task", {"task_name": TASK, "args": [7.0, 2.0]}),
        ("trigger_celery_task", {"task_name": TASK, "args": [1.0, 0.0]}),
    )
    assert ok.get("result") == 3.5 and failed.get("error") == "task_failed", (ok, failed)
    scene["calls"] = (ok["task_id"], failed["task_id"])
    failure = page.locator("details.failure").first
    expect(failure).to_contain_text("b must not be zero", timeout=15_000)
    expect(failure.locator("pre.traceback")).to_contain_text("ValueError: b must not be zero")
    expect(page.locator(f"#call-{failed['task_id']}")).to_contain_text("FAILURE")
    expect(page.locator(f"#call-{ok['task_id']}")).to_contain_text("SUCCESS")
    expect(page.locator("table.versions")).to_contain_text("1/1 passed")  # the version's test results
    expect(page.locator("table.audit")).to_contain_text("deploy_task")  # its deploy history
    expect(page.locator("#logs pre.log")).to_be_visible(timeout=15_000)  # the worker's log tail
    _shot(page, "task", scene["runtime"])
    page.goto(scene["base"] + "/")
    expect(page.locator(f'tr[data-task="{TASK}"] .fail-count')).to_have_text("1", timeout=15_000)
    path = _shot(page, "overview", scene["runtime"])
    if UPDATE_DOCS and scene["runtime"] == "process":
        (PROJECT_ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(path, PROJECT_ROOT / "docs" / "dashboard.png")
        shutil.copyfile(ARTIFACTS / "dashboard-process-task.png", PROJECT_ROOT / "docs" / "dashboard-task.png")


def test_metrics_count_the_known_calls(scene: dict[str, Any]) -> None:
    labels = (("task", TASK),)

    def counted() -> dict[Any, float] | None:
        found = metrics(scene["base"])
        return found if found.get(("mcs_task_duration_seconds_count", labels)) == 2 else None

    found = wait_for(counted, 15, "the calls in /metrics", every_s=0.1)
    assert found[("mcs_task_calls_total", labels)] == 2
    assert found[("mcs_task_failures_total", labels)] == 1
    assert 0 < found[("mcs_task_duration_seconds_sum", labels)] < 5
    assert found[("mcs_task_duration_seconds_bucket", (("le", "+Inf"), ("task", TASK)))] == 2
    assert (
        found[("mcs_queue_depth", (("queue", scene["deployed"].get("serve_queue") or _serve_queue(scene)), *labels))]
        == 0
    )
    assert found[("mcs_task_replicas", labels)] == 1 and found[("mcs_task_replicas_running", labels)] == 1
    assert found[("mcs_deploy_worker_up", ())] == 1 and found[("mcs_tasks_registered", ())] == 1


def _serve_queue(scene: dict[str, Any]) -> str:
    from Redis.registry import TaskRegistry

    return TaskRegistry(scene["stage"].settings).get(TASK).serve_queue


def test_an_action_without_the_token_is_refused(scene: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page, base = scene["page"], scene["base"]
    page.goto(f"{base}/tasks/{TASK}")
    with page.expect_response(lambda r: r.url.endswith(f"/tasks/{TASK}/undeploy")) as answer:
        page.locator("button.danger", has_text="Undeploy").click()
    assert answer.value.status == 403
    expect(page.locator("p.problem")).to_contain_text("needs the dashboard token")
    _shot(page, "refused", scene["runtime"])
    # a forged post (no session, a guessed CSRF field) is refused just the same, and nothing was undeployed
    status, body, _ = post(f"{base}/tasks/{TASK}/scale", {"replicas": "0", "csrf": "0" * 32})
    assert status == 403 and "needs the dashboard token" in body
    status, body, _ = post(f"{base}/login", {"token": "wrong"})
    assert status == 403 and "not the dashboard token" in body
    (listed,) = _mcp(scene["stage"], ("list_deployments", {}))
    assert [d["task_name"] for d in listed["deployments"]] == [TASK]
    assert TOKEN not in get(f"{base}/tasks/{TASK}")[1] and TOKEN not in get(f"{base}/audit")[1]


def test_with_the_token_the_page_scales_and_the_audit_log_has_deploy_scale_undeploy(scene: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page, base, stage = scene["page"], scene["base"], scene["stage"]
    page.goto(f"{base}/login")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    expect(page.locator(".session")).to_contain_text("actions enabled")
    page.goto(f"{base}/tasks/{TASK}")
    scale_button = page.locator("button", has_text="Scale")
    if scale_button.is_disabled():  # this MCS has no scale operation yet: said on the page, and by the action
        expect(page.locator(".actions")).to_contain_text("scaling: not available")
        scaled_by = None
    else:
        page.fill("input[name=replicas]", "2")
        scale_button.click()
        expect(page.locator("p.notice")).to_be_visible(timeout=120_000)
        expect(page.locator(".value.replicas")).to_have_text("2/2", timeout=60_000)
        _shot(page, "scaled", scene["runtime"])
        scaled_by = "dashboard"
    (undeployed,) = _mcp(stage, ("undeploy_task", {"task_name": TASK}))
    assert undeployed["success"], undeployed
    (log,) = _mcp(stage, ("get_audit_log", {"task_name": TASK}))
    tools = [(e["tool"], e["outcome"], e["via"]) for e in log["entries"]]
    expected = [("undeploy_task", "ok", "mcp")]
    if scaled_by:
        expected.append(("scale_task", "ok", scaled_by))
    expected += [("deploy_task", "ok", "mcp"), ("generate_startMain_code", "ok", "mcp")]
    assert tools == expected, tools
    deploy = next(e for e in log["entries"] if e["tool"] == "deploy_task")
    assert deploy["arguments"] == {"task_name": TASK, "queue": QUEUE} and deploy["duration_ms"] > 0
    generate = next(e for e in log["entries"] if e["tool"] == "generate_startMain_code")
    assert set(generate["arguments"]["function_body"]) == {"digest", "length"}  # the code itself is not kept
    page.goto(f"{base}/audit?task={TASK}")
    expect(page.locator("table.audit")).to_contain_text("undeploy_task")
    undeploys = ("mcs_deploys_total", _deploy_labels("undeploy_task"))
    found = wait_for(lambda: metrics(base).get(undeploys), 15, "metric", every_s=0.1)
    assert found == 1
    page.goto(f"{base}/")
    expect(page.locator(f'tr[data-task="{TASK}"]')).to_have_count(0, timeout=15_000)


def _deploy_labels(tool: str) -> tuple[tuple[str, str], ...]:
    return (("outcome", "ok"), ("task", TASK), ("tool", tool))
