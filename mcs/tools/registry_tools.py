"""Tools over the task registry: discover tasks (list, details, categories) and register a task's metadata."""

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from mcs.core.results import (
    CategoriesResult,
    CategoryTasksResult,
    RegisterResult,
    TaskDetailsResult,
    TaskListResult,
)
from mcs.services import Services
from mcs.tools.edge import add_tool
from mcs.tools.params import Category, Description, Parameters, ReturnType, TaskName


def register(server: MCPServer, services: Services) -> None:
    """Add get_available_tasks, get_task_details, register_task_info, get_tasks_by_category_name and
    get_task_categories, in that order."""

    def get_available_tasks(
        category: Annotated[str | None, Field(description="only tasks of this category (optional)")] = None,
        offset: Annotated[int, Field(ge=0, description="skip this many tasks (paging)")] = 0,
        limit: Annotated[int, Field(ge=1, le=1000, description="at most this many tasks")] = 100,
    ) -> TaskListResult:
        """List the registered tasks any agent can call, sorted by name, with their parameters and queues.

        Use it to discover capabilities before calling trigger_celery_task or send_celery_task.
        """
        registry = services.registry
        names = registry.names(category)
        tasks = registry.list(category, offset, limit)
        return TaskListResult(
            tasks=tasks,
            total_count=len(names),
            offset=offset,
            limit=limit,
            message=f"{len(tasks)} of {len(names)} available task(s)",
        )

    def get_task_details(task_name: TaskName) -> TaskDetailsResult:
        """Get everything the registry knows of one task: description, parameters, return type, category,
        queue, timestamps and deployment details."""
        record = services.registry.get(task_name)
        return TaskDetailsResult(task=record, message=f"task {record.name} on queue {record.queue}")

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

    def get_tasks_by_category_name(category: Category) -> CategoryTasksResult:
        """List the registered tasks of one category (see get_task_categories for the categories)."""
        tasks = services.registry.list(category)
        return CategoryTasksResult(
            category=category, tasks=tasks, count=len(tasks), message=f"{len(tasks)} task(s) in {category}"
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
