"""The test cases that gate a deploy: run against the new version only (on its own queue, before any call is routed
there), each compared with what it expects. One failure and the version does not serve."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mcs.core.celery_app import PrefixedApps, celery_task_name
from mcs.core.errors import DeployError
from mcs.core.lifecycle import CaseOutcome, TestCase, TestRun

MAX_SHOWN_CHARS = 2000

#: (key_prefix, queue, task_name, args, kwargs, timeout_s) -> {"state", "result"} or {"state", "error", "message",
#: "traceback"}: one call of a task on one queue, waited for.
CaseCaller = Callable[[str, str, str, list[Any], dict[str, Any], float], dict[str, Any]]


def celery_case_caller(apps: PrefixedApps) -> CaseCaller:
    """The CaseCaller of real workers: a Celery call under the task's prefix, sent with MCS's own credentials."""

    def call(key_prefix: str, queue: str, task: str, args: list[Any], kwargs: dict[str, Any], timeout_s: float):
        from celery.exceptions import TimeoutError as ResultTimeout

        result = apps.get(key_prefix).send_task(celery_task_name(task), args=args, kwargs=kwargs, queue=queue)
        try:
            value = result.get(timeout=timeout_s, propagate=False, disable_sync_subtasks=False)  # in a deploy task
        except ResultTimeout:
            result.revoke()
            return {"state": "TIMEOUT", "error": "Timeout", "message": f"no answer within {timeout_s:g} s"}
        state = result.state
        if state == "SUCCESS":
            return {"state": state, "result": value}
        error = type(value).__name__ if isinstance(value, BaseException) else state
        return {"state": state, "error": error, "message": str(value), "traceback": result.traceback}

    return call


def run_cases(caller: CaseCaller, cases: list[TestCase], key_prefix: str, queue: str) -> TestRun:
    outcomes = [_run_one(caller, case, key_prefix, queue) for case in cases]
    passed = sum(o.passed for o in outcomes)
    return TestRun(ran_at=datetime.now(UTC), total=len(outcomes), passed=passed, failed=len(outcomes) - passed,
                   cases=outcomes)  # fmt: skip


def _run_one(caller: CaseCaller, case: TestCase, key_prefix: str, queue: str) -> CaseOutcome:
    task = case.task or ""
    started = time.perf_counter()
    got = caller(key_prefix, queue, task, case.args, case.kwargs, case.timeout_s)
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    error = got.get("error")
    if case.expects_error:
        passed = error is not None and _same_exception(error, case.expect_error or "")
    else:
        passed = error is None and _same_json(got.get("result"), case.expect)
    return CaseOutcome(
        task=task,
        args=case.args,
        kwargs=case.kwargs,
        passed=passed,
        expected=None if case.expects_error else case.expect,
        expected_error=case.expect_error,
        got=_bounded(got.get("result")) if error is None else None,
        got_error=f"{error}: {got.get('message', '')}"[:MAX_SHOWN_CHARS] if error is not None else None,
        traceback=(got.get("traceback") or None) and str(got["traceback"])[-MAX_SHOWN_CHARS:],
        elapsed_ms=elapsed,
    )


def _same_exception(got: str, expected: str) -> bool:
    """``ValueError`` matches ``ValueError``; a dotted name matches by its class name (Celery sends the class name)."""
    return got == expected or got == expected.rsplit(".", 1)[-1]


def _same_json(got: Any, expected: Any) -> bool:
    """Equal as JSON: a tuple the task returned arrives as a list; 2 and 2.0 are equal."""
    try:
        return json.loads(json.dumps(got)) == json.loads(json.dumps(expected))
    except (TypeError, ValueError):
        return got == expected


def _bounded(value: Any) -> Any:
    text = json.dumps(value, default=str)
    return value if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def tests_failed(run: TestRun, version: str) -> DeployError:
    failing = [c.model_dump(mode="json") for c in run.cases if not c.passed]
    first = failing[0]
    shown = first["got_error"] or json.dumps(first["got"], default=str)[:200]
    return DeployError(
        f"version {version[:12]} failed {run.failed} of its {run.total} test case(s), so it does not serve; the first: "
        f"{first['task']}(args={json.dumps(first['args'])[:200]}, kwargs={json.dumps(first['kwargs'])[:200]}) "
        f"expected {first['expected_error'] or json.dumps(first['expected'], default=str)[:200]}, got {shown}",
        step="tests",
        failures=failing,
        tests={"total": run.total, "passed": run.passed, "failed": run.failed},
    )
