#!/usr/bin/env bash
# Start the deploy worker: a Celery worker on the deploy queue (MCS_DEPLOY_QUEUE, default "deploy") that builds and
# runs task workers. Works from any directory, needs no sudo (only access to the Docker socket), and reads the same
# settings as the MCP server (environment, .env, Redis/redis_config.py). Stop it with Ctrl-C or by its pid.
#   MCS_DEPLOY_CONCURRENCY   deploys run in parallel (different tasks), default 4
#   MCS_PYTHON               interpreter, default the project's .venv
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${MCS_PYTHON:-$root/.venv/bin/python}"
if [[ ! -x "$python" ]]; then
  echo "start_deploy_worker: $python not found: run 'make venv' in $root first (or set MCS_PYTHON)" >&2
  exit 2
fi
exec "$python" -m deploy_mcp
