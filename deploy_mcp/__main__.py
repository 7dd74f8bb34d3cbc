"""``python -m deploy_mcp``: the deploy worker (as ``mcs-deploy-worker`` and ``start_deploy_worker.sh`` run it)."""

from deploy_mcp.deploy_worker import main

main()
