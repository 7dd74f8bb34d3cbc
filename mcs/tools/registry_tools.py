"""Tools over the task registry: find tasks (search, list, details, categories) and register a task's metadata."""

from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from mcs.core.models import TaskRecord
from mcs.core.results import (
    CategoriesResult,
    CategoryTasksResult,
    RegisterResult,
    TaskDetailsResult,
    TaskListResult,
    TaskSummary,
)
from mcs.search import MAX_QUERY_CHARS, query_terms, rank
from mcs.services import Services
from mcs.tools.edge import add_tool
from mcs.tools.params import Category, Description, Parameters, ReturnType, TaskName

Query = Annotated[
    str | None,
    Field(
        max_length=MAX_QUERY_CHARS,
        description="words of what the task should do, e.g. 'resize image thumbnail': ranks the matching tasks",
    ),
]
Detail = Annotated[
    Literal["compact", "full"],
    Field(description="compact (default): what a call needs; full: the whole registry record, deployment included"),
]


def _entry(
    record: TaskRecord, detail: str, score: float | None = None, matched: list[str] | None = None
) -> TaskSummary | TaskRecord:
    return record if detail == "full" else TaskSummary.of(record, score, matched)


def register(server: MCPServer, services: Services) -> None:
    """Add get_available_tasks, get_task_details, register_task_info, get_tasks_by_category_name and
    get_task_categories, in that order."""

    def get_available_tasks(
        query: Query = None,
        category: Annotated[str | None, Field(description="only tasks of this category (optional)")] = None,
        detail: Detail = "compact",
        offset: Annotated[int, Field(ge=0, description="skip this many tasks (paging)")] = 0,
        limit: Annotated[int, Field(ge=1, le=1000, description="at most this many tasks")] = 100,
    ) -> TaskListResult:
        """Find the registered tasks any agent can call: look here before building a new one.

        With `query` (a few words of what you need), the tasks that match are ranked best first by the words of
        their name (weighted most), description, category and parameters, each with its `score` and the `matched`
        words; without it, all tasks by name. Each task comes compact: name, description, parameters, return
        type, queue, category; get_task_details (or detail "full") adds timestamps, retry policy and deployment.
        An unknown category is not_found, naming the categories that exist. Then call it with
        trigger_celery_task or send_celery_task.
        """
        if query is not None:
            query_terms(query)  # a query without a usable word is refused before anything is read
        registry = services.registry
        names = registry.names() if category is None else registry.category_names(category)
        end = offset + limit
        if query is None:
            records = registry.fetch(names[offset:end])
            tasks = [_entry(r, detail) for r in records]
            total = len(names)
            what = "available task(s)"
        else:
            hits = rank(registry.fetch(names), query)
            tasks = [_entry(h.record, detail, h.score, list(h.matched)) for h in hits[offset:end]]
            total = len(hits)
            what = f"task(s) matching {query!r}" + ("" if hits else " (get_available_tasks without query lists all)")
        return TaskListResult(
            tasks=tasks,
            total_count=total,
            offset=offset,
            limit=limit,
            query=query,
            detail=detail,
            message=f"{len(tasks)} of {total} {what}",
        )

    def get_task_details(task_name: TaskName) -> TaskDetailsResult:
        """Get everything the registry knows of one task: description, parameters, return type, category,
        queue, timestamps and deployment details (capacity desired; workers running, as last seen)."""
        record = services.registry.get(task_name)
        seen = services.workers_seen(record.primary) if record.deployment is not None else None
        if seen is None:
            return TaskDetailsResult(task=record, message=f"task {record.name} on queue {record.queue}")
        dep = record.deployment
        return TaskDetailsResult(
            task=record,
            replicas_running=seen["running"],
            workers=seen["workers"],
            workers_seen_at=seen["at"],
            message=f"task {record.name} on queue {record.queue}: {seen['running']} of {dep.desired_replicas} "
            f"worker(s) running",
        )

    def register_task_info(
        task_name: TaskName,
        description: Description,
        parameters: Parameters,
        return_type: ReturnType = "Any",
        category: Category = "general",
        queue: Annotated[str, Field(description="the queue its worker serves")] = "celery",
    ) -> RegisterResult:
        """Register (or update) a task's metadata so agents can discover and call it.

        deploy_task registers automatically; use this to fix a description or parameters, or to register a
        worker you run yourself. An update keeps created_at and moves the task between categories atomically.
        """
        record = services.registry.register(
            name=task_name,
            description=description,
            parameters=parameters,
            return_type=return_type,
            category=category,
            queue=queue,
        )
        return RegisterResult(task_name=record.name, task=record, message=f"task {record.name} registered")

    def get_tasks_by_category_name(category: Category, detail: Detail = "compact") -> CategoryTasksResult:
        """List the registered tasks of one category, compact (name, description, parameters, return type, queue)
        unless detail is "full". An unknown category is not_found, naming the categories that exist (see
        get_task_categories)."""
        registry = services.registry
        tasks = [_entry(r, detail) for r in registry.fetch(registry.category_names(category))]
        return CategoryTasksResult(
            category=category,
            tasks=tasks,
            count=len(tasks),
            detail=detail,
            message=f"{len(tasks)} task(s) in {category}",
        )

    def get_task_categories() -> CategoriesResult:
        """List the categories that have registered tasks, with the number of tasks in each."""
        counts = services.registry.categories()
        return CategoriesResult(
            categories=list(counts), counts=counts, count=len(counts), message=f"{len(counts)} categories"
        )

    add_tool(server, get_available_tasks, read_only=True, idempotent=True, title="List tasks")
    add_tool(server, get_task_details, read_only=True, idempotent=True, title="Task details")
    add_tool(server, register_task_info, read_only=False, idempotent=True, title="Register task metadata")
    add_tool(server, get_tasks_by_category_name, read_only=True, idempotent=True, title="Tasks of a category")
    add_tool(server, get_task_categories, read_only=True, idempotent=True, title="Task categories")
