"""The seed's quick start, for real: an agent's whole workflow through the MCP server over stdio.

    python -m mcs.demo [--keep] [--runtime auto|docker|process]      (make demo)

It uses the configured Redis, or one on localhost, or starts an embedded one; starts the deploy worker; spawns
``mcp_server.py`` exactly as Claude Desktop does and, as the agent would, calls generate_startMain_code (with a test
case) -> deploy_task(task_name, queue) (the manifest carries the rest) -> trigger_celery_task (10 + 20) ->
send_celery_task + get_celery_result (wait_s) -> get_available_tasks and get_task_details -> undeploy_task (unless
--keep). Every step prints what the agent sees. Everything the demo
started is stopped at the end, whatever happened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from mcs.core.errors import MCSError
from mcs.core.settings import Settings, load_settings
from mcs.stack import SERVER_SCRIPT, Stack, child_env, run_dir

TASK, QUEUE = "simple_add", "test_queue"
PARAMETERS = [
    {"name": "a", "type": "int", "required": True, "description": "第一个数"},
    {"name": "b", "type": "int", "required": True, "description": "第二个数"},
]
DESCRIPTION = "接收两个数字并返回它们的和 (adds two numbers)"
Say = Callable[[str], None]


class DemoFailed(MCSError):
    code = "demo_failed"


def run_demo(settings: Settings, *, keep: bool = False, say: Say = print) -> list[tuple[str, dict[str, Any]]]:
    """Run the walkthrough; returns each tool call with its structured result. Raises DemoFailed on a failed step."""
    stack = Stack(settings, say=say)
    try:
        say("MCS demo: the seed's quick start (simple_add on test_queue), through the MCP server over stdio")
        stack.start_redis()
        say(f"  Redis: {stack.redis_note}")
        stack.choose_runtime(process_without_docker=True)
        say(f"  worker runtime: {stack.runtime_note}")
        pid = stack.start_deploy_worker(run_dir(settings) / "demo_deploy_worker.log")
        say(f"  deploy worker: started (pid {pid})")
        return asyncio.run(_walkthrough(stack.settings, keep, say))
    finally:
        stack.stop()
        say("  stopped what the demo started (deploy worker" + (", embedded Redis)" if stack.redis_note.startswith(
            "embedded") else ")"))  # fmt: skip


async def _walkthrough(settings: Settings, keep: bool, say: Say) -> list[tuple[str, dict[str, Any]]]:
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(SERVER_SCRIPT)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **child_env(settings, MCS_LOG_LEVEL="WARNING")},
    )
    steps: list[tuple[str, dict[str, Any]]] = []
    async with Client(params, read_timeout_seconds=settings.deploy_timeout_s + 60) as client:

        async def call(tool: str, args: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            say(f"\n> {tool}({_short(args)})")
            result: CallToolResult = await client.call_tool(tool, args, **kwargs)
            body = result.structured_content or {}
            steps.append((tool, body))
            if result.is_error:
                say(f"  FAILED: {body.get('message')}")
                for key in ("step", "log_tail"):
                    if body.get(key):
                        say(f"  {key}: {str(body[key])[-1500:]}")
                raise DemoFailed(f"{tool} failed: {body.get('message')}", step=tool)
            return body

        async def progress(done: float, total: float | None, message: str | None) -> None:
            say(f"  ... {message}")

        generated = await call("generate_startMain_code", {
            "task_name": TASK, "description": DESCRIPTION, "parameters": PARAMETERS,
            "function_body": "return a + b", "queue": QUEUE, "return_type": "int", "overwrite": True,
            "category": "arithmetic", "tests": [{"args": [2, 3], "expect": 5}],
        })  # fmt: skip
        say(f"  wrote {generated['folder']}: {', '.join(generated['files'])}")
        started = time.perf_counter()
        # The folder's manifest (mcs.json) carries the rest: description, parameters, category, the test case.
        deployed = await call("deploy_task", {"task_name": TASK, "queue": QUEUE}, progress_callback=progress)
        say(f"  version {deployed['version']} on {deployed['runtime']}: worker {deployed['worker_status']} "
            f"(image {deployed['docker_image']}, {time.perf_counter() - started:.1f} s)")  # fmt: skip
        tests = deployed.get("tests") or {}
        say(f"  tested before serving: {tests.get('passed', 0)}/{tests.get('total', 0)} case(s) passed; "
            f"confinement: isolation {deployed['isolation']}, network {deployed['network']}")  # fmt: skip
        for warning in deployed.get("warnings", []):
            say(f"  WARNING: {warning}")
        try:
            await _use(call, say)
        finally:
            if keep:
                say(f"\n(kept: {TASK} stays deployed; `make up` serves it to Claude Desktop, undeploy_task removes it)")
            else:  # also after a failed step: the task's worker must not outlive the demo
                removed = await call("undeploy_task", {"task_name": TASK})
                say("  removed " + ", ".join(removed["removed"]))
                shutil.rmtree(generated["folder"], ignore_errors=True)
    say("\nDemo complete: generate -> deploy -> test -> register -> call, all through MCP.")
    return steps


async def _use(call, say: Say) -> None:
    """Test the deployed task and discover it, as any agent would."""
    triggered = await call("trigger_celery_task", {"task_name": TASK, "kwargs": {"a": 10, "b": 20}})
    say(f"  10 + 20 = {triggered['result']} ({triggered['status']}, {triggered['elapsed_ms']:.1f} ms)")
    if triggered["result"] != 30:
        raise DemoFailed(f"expected 30, got {triggered['result']!r}")
    sent = await call("send_celery_task", {"task_name": TASK, "args": [1, 2]})
    say(f"  queued as {sent['task_id']} ({sent['status']})")
    status = await call("get_celery_result", {"task_id": sent["task_id"], "wait_s": 30})  # a long-poll, no loop
    say(f"  {status['status']}: 1 + 2 = {status['result']}")
    if status["status"] != "SUCCESS" or status["result"] != 3:
        raise DemoFailed(f"expected SUCCESS with 3, got {status['status']} with {status['result']!r}")
    listed = await call("get_available_tasks", {})
    say(f"  {listed['total_count']} task(s): {', '.join(t['name'] for t in listed['tasks'])}")
    details = await call("get_task_details", {"task_name": TASK})
    task = details["task"]
    say(f"  {task['name']}: {task['description']} | category {task['category']}, queue {task['queue']}, "
        f"returns {task['return_type']}, deployed {task['deployment']['deployed_at']}, Redis user "
        f"{task['deployment'].get('acl_user') or 'shared credentials'}")  # fmt: skip


def _short(args: dict[str, Any], limit: int = 110) -> str:
    text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcs.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave simple_add deployed at the end")
    parser.add_argument(
        "--runtime",
        choices=("auto", "docker", "process"),
        default=None,
        help="worker runtime (default: MCS_WORKER_RUNTIME, else auto: Docker when a daemon answers)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    overrides = {"worker_runtime": args.runtime} if args.runtime else {}
    try:
        run_demo(load_settings(**overrides), keep=args.keep, say=lambda m: print(m, flush=True))
    except MCSError as exc:
        print(f"\ndemo failed: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
