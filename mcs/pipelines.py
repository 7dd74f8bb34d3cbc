"""Pipelines and maps, run by MCS's trusted side: the MCP server sends each call to its task's queue and waits for
it; no task's worker publishes to another task's queue (each worker's Redis user reaches only its own prefix).

``run_pipeline``: registered tasks one after another, each step's result passed to the next as a named parameter
(``pass_result_as``) or as its first positional argument; a failing step stops the pipeline and is named.
``map_celery_task``: one task over many argument sets, one id for the batch, results in order. Both ids are
followed by ``get_celery_result`` like a task id. A pipeline started with ``wait=false`` runs in a thread of this
server; if the server stops first, following its id says it was interrupted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from mcs.core.errors import InvalidInput, MCSError, TaskFailed, TaskTimeout
from mcs.core.names import validate_identifier
from mcs.core.processes import is_running, start_time
from mcs.core.results import MapResult, PipelineResult, PipelineStep, TaskStatusResult
from mcs.core.settings import Settings
from mcs.invoker import MAX_TIMEOUT_S, TaskInvoker
from Redis.batches import Batches

log = logging.getLogger(__name__)

MAX_STEPS = 20
MAX_ITEMS = 100
STEP_KEYS = {"task_name", "args", "kwargs", "pass_result_as"}


class Pipelines:
    def __init__(self, settings: Settings, invoker: TaskInvoker, batches: Batches) -> None:
        self.settings = settings
        self.invoker = invoker
        self.batches = batches
        self._owner = {"pid": os.getpid(), "started": start_time(os.getpid())}

    # -- run_pipeline ----------------------------------------------------------------------------------------

    def run(self, steps: Any, timeout_s: Any = None, wait: Any = True) -> PipelineResult:
        plan = self._check_steps(steps)
        timeout = self._timeout(timeout_s)
        if not isinstance(wait, bool):
            raise InvalidInput("wait", wait, "true (wait for the final result) or false (return the pipeline id)")
        pipeline_id = str(uuid.uuid4())
        state = self._state(pipeline_id, plan)
        self.batches.save(pipeline_id, state)
        if not wait:
            threading.Thread(target=self._run, args=(state, timeout), name="mcs-pipeline", daemon=True).start()
            return PipelineResult(**_public(state), message=f"pipeline {pipeline_id} started: follow it with "
                                  "get_celery_result(task_id=..., wait_s=...)")  # fmt: skip
        state = self._run(state, timeout)
        if state["status"] != "SUCCESS":
            raise self._failed(state)
        return PipelineResult(**_public(state), message=f"pipeline of {len(plan)} step(s) succeeded")

    def _check_steps(self, steps: Any) -> list[dict[str, Any]]:
        if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
            shown = f"<{len(steps)} steps>" if isinstance(steps, list) else steps
            raise InvalidInput("steps", shown, f"a list of 1 to {MAX_STEPS} steps {{task_name, args, kwargs, "
                               "pass_result_as}")  # fmt: skip
        plan = []
        for index, step in enumerate(steps):
            where = f"steps[{index}]"
            if not isinstance(step, dict) or not set(step) <= STEP_KEYS:
                extra = sorted(set(step) - STEP_KEYS) if isinstance(step, dict) else step
                raise InvalidInput(where, extra, f"an object with {', '.join(sorted(STEP_KEYS))}")
            try:
                record = self.invoker.resolve(step.get("task_name"))
            except InvalidInput as exc:
                raise InvalidInput(f"{where}.{exc.field}", exc.value, exc.rule) from None
            except MCSError as exc:
                exc.details["field"] = f"{where}.task_name"
                exc.message = f"{where}: {exc.message}"
                raise
            args, kwargs = step.get("args") or [], step.get("kwargs") or {}
            if not isinstance(args, list):
                raise InvalidInput(f"{where}.args", args, "a JSON array")
            if not isinstance(kwargs, dict):
                raise InvalidInput(f"{where}.kwargs", kwargs, "a JSON object")
            name = step.get("pass_result_as")
            if name is not None:
                validate_identifier(name, f"{where}.pass_result_as")
                declared = [p.name for p in record.parameters]
                if declared and name not in declared:
                    raise InvalidInput(f"{where}.pass_result_as", name, f"a parameter of {record.name}: "
                                       f"{', '.join(declared)}")  # fmt: skip
                if index == 0:
                    raise InvalidInput(f"{where}.pass_result_as", name, "the first step has no result to receive")
            plan.append({"task_name": record.name, "args": args, "kwargs": kwargs, "pass_result_as": name})
        return plan

    def _state(self, pipeline_id: str, plan: list[dict[str, Any]]) -> dict[str, Any]:
        steps = [{"index": i, "task_name": s["task_name"], "status": "WAITING"} for i, s in enumerate(plan)]
        return {"kind": "pipeline", "pipeline_id": pipeline_id, "status": "RUNNING", "plan": plan, "steps": steps,
                "result": None, "started_at": _now(), "owner": self._owner}  # fmt: skip

    def _run(self, state: dict[str, Any], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        started = time.perf_counter()
        previous: Any = None
        for index, step in enumerate(state["plan"]):
            args, kwargs = list(step["args"]), dict(step["kwargs"])
            if index > 0:
                if step["pass_result_as"]:
                    kwargs[step["pass_result_as"]] = previous
                else:
                    args.insert(0, previous)
            entry = state["steps"][index]
            entry["status"] = "STARTED"
            self._save(state)
            step_started = time.perf_counter()
            try:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TaskTimeout(f"the pipeline's {timeout:g} s ran out before step {index}")
                called = self.invoker.trigger(step["task_name"], args, kwargs, timeout_s=min(remaining, MAX_TIMEOUT_S))
            except MCSError as exc:
                entry.update(status="FAILURE", error=exc.code, message=exc.message[:2000],
                             task_id=exc.details.get("task_id"), elapsed_ms=_ms(step_started))  # fmt: skip
                state.update(status="FAILURE", failed_step=index, elapsed_ms=_ms(started))
                self._save(state)
                return state
            except Exception as exc:  # a step's unexpected failure must end the pipeline, not leave it RUNNING
                log.exception("pipeline step %d", index)
                entry.update(status="FAILURE", error="internal", message=f"{type(exc).__name__}: {exc}"[:2000])
                state.update(status="FAILURE", failed_step=index, elapsed_ms=_ms(started))
                self._save(state)
                return state
            previous = called.result
            entry.update(status="SUCCESS", task_id=called.task_id, elapsed_ms=_ms(step_started))
        state.update(status="SUCCESS", result=previous, elapsed_ms=_ms(started))
        self._save(state)
        return state

    def _save(self, state: dict[str, Any]) -> None:
        try:
            self.batches.save(state["pipeline_id"], state)
        except MCSError:
            log.warning("could not record the state of pipeline %s", state["pipeline_id"])

    def _failed(self, state: dict[str, Any]) -> MCSError:
        index = state.get("failed_step", 0)
        step = state["steps"][index]
        return TaskFailed(
            f"pipeline step {index} ({step['task_name']}) failed: {step.get('message', step.get('error'))}",
            pipeline_id=state["pipeline_id"],
            failed_step=index,
            steps=state["steps"],
        )

    def _timeout(self, timeout_s: Any) -> float:
        if timeout_s is None:
            return self.settings.trigger_timeout_s * 4
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise InvalidInput("timeout_s", timeout_s, f"a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}")
        return float(timeout_s)

    # -- map_celery_task -------------------------------------------------------------------------------------

    def map(self, task_name: Any, items: Any, wait_s: Any = None) -> MapResult:
        record = self.invoker.resolve(task_name)
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
            shown = f"<{len(items)} items>" if isinstance(items, list) else items
            raise InvalidInput("items", shown, f"a list of 1 to {MAX_ITEMS} argument sets {{args, kwargs}}")
        calls = []
        for index, item in enumerate(items):
            if not isinstance(item, dict) or not set(item) <= {"args", "kwargs"}:
                raise InvalidInput(f"items[{index}]", item, "an object with args (a JSON array) and/or kwargs")
            calls.append((item.get("args"), item.get("kwargs")))
        # Every item's arguments are checked (names, types) before the first is sent: all or nothing.
        from mcs.payload import check_call_arguments

        for index, (args, kwargs) in enumerate(calls):
            try:
                check_call_arguments(record, args, kwargs, self.settings.max_payload_bytes)
            except InvalidInput as exc:
                raise InvalidInput(f"items[{index}].{exc.field}", exc.value, exc.rule) from None
        wait = self.invoker._wait_s(wait_s)  # before anything is sent: a refusal sends nothing
        batch_id = str(uuid.uuid4())
        task_ids: list[str] = []
        try:
            for args, kwargs in calls:
                task_ids.append(self.invoker.send(record.name, args, kwargs).task_id)
        except MCSError as exc:  # the calls already sent stay followable: their ids come with the error
            if task_ids:
                self.batches.save(batch_id, {"kind": "map", "task_name": record.name, "task_ids": task_ids})
                exc.details.update(batch_id=batch_id, sent_task_ids=task_ids)
            raise
        self.batches.save(batch_id, {"kind": "map", "task_name": record.name, "task_ids": task_ids})
        status = self.invoker.status(task_ids=task_ids, wait_s=wait) if wait else None
        return MapResult(
            batch_id=batch_id,
            task_name=record.name,
            task_ids=task_ids,
            count=len(task_ids),
            ready=bool(status and status.ready),
            results=status.results if status else None,
            counts=status.counts if status else None,
            message=f"{len(task_ids)} call(s) of {record.name} sent as batch {batch_id}; "
            + ("all finished" if status and status.ready else "follow them with get_celery_result(task_id=batch_id)"),
        )

    # -- get_celery_result of a pipeline or map id -------------------------------------------------------------

    def status(self, batch_id: str, wait_s: float) -> TaskStatusResult | None:
        """The state of a pipeline or map id (None: it is neither)."""
        state = self.batches.find(batch_id)
        if state is None:
            return None
        if state["kind"] == "map":
            found = self.invoker.status(task_ids=state["task_ids"], wait_s=wait_s)
            return found.model_copy(update={"task_id": batch_id, "task_name": state["task_name"],
                                            "status": "SUCCESS" if found.ready and not found.counts.get("failed")
                                            else ("FAILURE" if found.ready else "STARTED")})  # fmt: skip
        deadline = time.monotonic() + wait_s
        while state["status"] == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.05)  # the pipeline's own thread records each step: poll its record briefly, bounded
            state = self.batches.find(batch_id) or state
        if state["status"] == "RUNNING" and not _alive(state.get("owner") or {}):
            state["status"] = "INTERRUPTED"
        if state["status"] == "FAILURE":
            raise self._failed(state)
        ready = state["status"] in ("SUCCESS", "INTERRUPTED")
        return TaskStatusResult(
            task_id=batch_id,
            task_name="pipeline",
            status=state["status"],
            ready=ready,
            result={"result": state.get("result"), "steps": state["steps"]},
            message=f"pipeline {state['status'].lower()}"
            + (": the MCP server that ran it stopped; run it again" if state["status"] == "INTERRUPTED" else ""),
        )


def _public(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "pipeline_id": state["pipeline_id"],
        "status": state["status"],
        "result": state.get("result"),
        "steps": [PipelineStep(**s) for s in state["steps"]],
        "elapsed_ms": state.get("elapsed_ms"),
    }


def _alive(owner: dict[str, Any]) -> bool:
    return bool(owner.get("pid")) and is_running(int(owner["pid"]), owner.get("started"))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
