"""Tools that run several calls on MCS's trusted side: run_pipeline (steps one after another, each result passed
on) and map_celery_task (one task over many argument sets). Both ids are followed with get_celery_result."""

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field, StrictBool

from mcs.core.results import MapResult, PipelineResult
from mcs.services import Services
from mcs.tools.edge import add_tool
from mcs.tools.params import TaskName


def register(server: MCPServer, services: Services) -> None:
    """Add run_pipeline and map_celery_task, in that order."""

    def run_pipeline(
        steps: Annotated[
            list[dict[str, Any]],
            Field(
                description='registered tasks run in order: [{"task_name": "extract", "kwargs": {"n": 20}}, '
                '{"task_name": "clean", "pass_result_as": "records"}, {"task_name": "stats"}]; each step gets the '
                "previous step's result as the parameter pass_result_as names, or else as its first argument"
            ),
        ],
        timeout_s: Annotated[
            float | None, Field(description="for the whole pipeline (default 4 x MCS_TRIGGER_TIMEOUT_S)")
        ] = None,
        wait: Annotated[
            StrictBool, Field(description="true: wait for the final result; false: return the pipeline id at once")
        ] = True,
    ) -> PipelineResult:
        """Run registered tasks one after another on the server side, each step's result passed to the next, and
        return the final result with each step's status and time. A failing step stops the pipeline and is named
        (task_failed with failed_step and steps). With wait=false, follow pipeline_id with get_celery_result."""
        return services.pipelines.run(steps, timeout_s, wait)

    def map_celery_task(
        task_name: TaskName,
        items: Annotated[
            list[dict[str, Any]],
            Field(description='one call per item, in order: [{"args": [1, 2]}, {"kwargs": {"a": 3, "b": 4}}]'),
        ],
        wait_s: Annotated[
            float | None, Field(description="wait up to this long for every call (default 0: return the ids now)")
        ] = None,
    ) -> MapResult:
        """Run one task over many argument sets in parallel (as many as its workers take at once): every item is
        checked before the first is sent; one batch id follows them all, results in order (get_celery_result)."""
        return services.pipelines.map(task_name, items, wait_s)

    add_tool(server, run_pipeline, read_only=False, open_world=True, title="Run a pipeline", waits=True)
    add_tool(server, map_celery_task, read_only=False, open_world=True, title="Map a task over items", waits=True)
