"""MCS's MCP tools, grouped by concern; ``mcp_server.build_server`` registers them in a fixed order.

- ``edge``: the MCP edge (``MCSServer``, ``add_tool``): turns plain functions that return result models into tools.
- ``params``: the shared ``Annotated`` parameter types (TaskName, Args, Kwargs, Queue, ...).
- ``deploy_tools``: generate_startMain_code, deploy_task, undeploy_task, list_deployments, get_task_logs.
- ``task_calls``: trigger_celery_task, send_celery_task, get_celery_result.
- ``registry_tools``: get_available_tasks, get_task_details, register_task_info, get_tasks_by_category_name,
  get_task_categories.
- ``audit_tools``: get_audit_log (the calls of changing tools, which ``edge`` records).

Each tool module has ``register(server, services)``; a tool is a thin adapter: its signature validates the input,
it calls one plain function of ``services`` and returns a pydantic result model.
"""
