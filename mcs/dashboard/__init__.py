"""The MCS dashboard: a web page a person reads instead of querying MCP, and ``/metrics`` for Prometheus.

``python -m mcs.dashboard`` (``make dashboard``; ``make up`` starts it too) serves on ``MCS_DASHBOARD_HOST`` and
``MCS_DASHBOARD_PORT`` (loopback, 8765): every task with its category, queue, version, replicas, confinement and
health; per task its recent calls, failures with their traceback, the worker's log tail, versions with their test
results and the deploy history; the audit log. Read-only without ``MCS_DASHBOARD_TOKEN``.

- ``app``: the Starlette app and its routes; ``templates/`` (Jinja2, autoescaped) and ``static/`` (CSS, a small script
  that refreshes the live parts).
- ``snapshot``: what the pages show, refreshed in the background; ``events``: Celery events received per key prefix;
  ``follow``: the audit log followed as it grows; ``metrics``: prometheus-client's registry and collectors;
  ``actions``: scale, roll back, undeploy, and the token that allows them.
"""
