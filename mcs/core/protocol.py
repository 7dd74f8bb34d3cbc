"""The deploy worker's Celery task names and message kinds, shared by the MCP server and the worker.

These names are outside the ``mcp_app.`` namespace that trigger/send_celery_task can reach, and they are served
only on the deploy queue, which no registered task may use.
"""

DEPLOY = "mcs.deploy.deploy_code_folder"
UNDEPLOY = "mcs.deploy.undeploy_task"
LIST_DEPLOYMENTS = "mcs.deploy.list_deployments"
TASK_LOGS = "mcs.deploy.task_logs"
LIST_VERSIONS = "mcs.deploy.list_versions"
ROLLBACK = "mcs.deploy.rollback"
PROMOTE = "mcs.deploy.promote"
SCALE = "mcs.deploy.scale"
WAKE = "mcs.deploy.wake"

# The signature covers the kind, so a message signed for one operation cannot be replayed as another.
KINDS = {
    DEPLOY: "deploy",
    UNDEPLOY: "undeploy",
    LIST_DEPLOYMENTS: "list",
    TASK_LOGS: "logs",
    LIST_VERSIONS: "versions",
    ROLLBACK: "rollback",
    PROMOTE: "promote",
    SCALE: "scale",
    WAKE: "wake",
}

ALIVE_TTL_S = 15
ALIVE_EVERY_S = 5

#: What a deployed worker may reach besides Redis: nothing (none), or the network it asked for (egress).
NETWORKS = ("none", "egress")
#: The container runtime of a worker: runc (a hardened container) or gvisor (runsc, a user-space kernel).
SANDBOXES = ("runc", "gvisor")
